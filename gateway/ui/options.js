// The operator's options (F12), saved on the server per operator (GET/PUT /api/me/options, see
// docs/api.md) and applied in every window: the Chat page saves them and tells its open chat
// windows at once on a BroadcastChannel; a chat window loads them when it opens.
import { getJSON, putJSON } from './api.js';

export const DEFAULT_OPTIONS = Object.freeze({
  play_tone: false,               // play a tone on each new message sent or received
  auto_close: false,              // close the chat window when either party ends the chat
  hide_from_operators: false,     // leave me out of other operators' lists (used by a later item)
  hide_from_machine_users: false, // leave me out of machine users' lists (used by a later item)
});

const CHANNEL = 'natter-options';

/** The logged-in operator's options; the defaults if they cannot be read. */
export async function loadOptions() {
  try {
    return { ...DEFAULT_OPTIONS, ...(await getJSON('/api/me/options')) };
  } catch (_) {
    return { ...DEFAULT_OPTIONS };
  }
}

/** Saves `options` and tells this browser's other windows; resolves to what the server stored. */
export async function saveOptions(options) {
  const saved = await putJSON('/api/me/options', options);
  try {
    const ch = new BroadcastChannel(CHANNEL);
    ch.postMessage(saved);
    ch.close();
  } catch (_) { /* no BroadcastChannel: windows pick the change up when they open */ }
  return saved;
}

/** Calls `fn(options)` whenever another window of this browser saves options. */
export function onOptionsChanged(fn) {
  try {
    new BroadcastChannel(CHANNEL).onmessage = (e) => fn({ ...DEFAULT_OPTIONS, ...e.data });
  } catch (_) { /* ignore */ }
}
