// A chat window's options (F12 seam). A later issue adds the settings UI and stores these per
// operator; until then they can be set by hand:
// localStorage.setItem('natter.options', '{"playTone":true,"autoClose":true}').
export const DEFAULT_OPTIONS = Object.freeze({
  playTone: false,   // play a tone on each new message
  autoClose: false,  // close the chat window when either party ends the chat
});

export function loadOptions() {
  let stored = {};
  try { stored = JSON.parse(localStorage.getItem('natter.options') || '{}') || {}; } catch (_) { /* ignore */ }
  return { ...DEFAULT_OPTIONS, ...stored };
}
