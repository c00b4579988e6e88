// The operator's Chat page: GET /.
// Login, the live machine list (GET /api/machines/events: filtered by the server, within the
// operator's scopes), check-in status icons with a Quick View, and starting / joining chats —
// each chat in a NEW window (F13), never reusing another one. No reloads, no polling.
import { getJSON, postJSON } from './api.js';
import { statusIcon, setStatusIcon, statusSvg, statusLabel, renderLegend } from './status-icons.js';

const $ = (id) => document.getElementById(id);
const CHAT_FEATURES = 'popup,width=480,height=640';
const FILTER_KEY = 'natter.filter';
const FILTER_DELAY = 250;       // ms of quiet typing before the stream is reopened with the filter
const RETRY_MAX = 30000;        // ms, longest wait before reopening a failed stream
const QV_CLOSE_DELAY = 200;     // ms, lets the pointer travel from the icon onto the Quick View
const MAX_ROWS = 2000;          // rows drawn at most; beyond that the operator narrows the filter

// Why a machine's ID is not a chat link. The server allows a chat only with a logged-on user of
// a machine whose state is `user` or `idle`.
const NO_CHAT = {
  suspended: 'agent suspended',
  offline: 'agent offline',
  never_checked_in: 'agent has never checked in',
  waiting_first_audit: 'waiting for first audit',
  remote_disabled: 'remote control disabled',
};

let machines = new Map();  // id -> MachineView, as the server sent them for `dataFilter`
let dataFilter = null;     // the (normalised) filter `machines` was sent for; null: nothing yet
const rows = new Map();    // id -> <tr>
const rowKeys = new Map(); // id -> what the row last showed (skip unchanged rows)
const chatWindows = new Map(); // session id -> the window this page opened for it

// ---- login ------------------------------------------------------------------------------
async function start() {
  renderLegend($('legend-list'));
  try {
    showChatPage(await getJSON('/api/me'));
  } catch (e) {
    if (e.status === 401) showLogin();
    else { $('loading').textContent = e.message; }
  }
}

function showLogin() {
  disconnect();
  closeQuickView();
  machines = new Map();
  dataFilter = null;
  rows.clear();
  rowKeys.clear();
  $('machines').replaceChildren();
  $('loading').hidden = true;
  $('chat-page').hidden = true;
  $('who').hidden = true;
  $('login').hidden = false;
  $('username').focus();
}

function showChatPage(me) {
  $('loading').hidden = true;
  $('login').hidden = true;
  $('me-name').textContent = me.name || me.id;
  showScopes(me);
  if (!Array.isArray(me.scopes) && !me.admin) { // the login answer may not carry the scopes
    getJSON('/api/me').then(showScopes, () => {});
  }
  $('who').hidden = false;
  $('chat-page').hidden = false;
  renderMachines();
  connect();
}

/** "Scope: sales.acme, globex" under the operator's name; admins see all organisations. */
function showScopes(me) {
  const el = $('me-scopes');
  let text = '';
  if (me.admin || (Array.isArray(me.scopes) && me.scopes.includes('*'))) text = 'all organisations';
  else if (Array.isArray(me.scopes)) text = me.scopes.length ? me.scopes.join(', ') : 'no machine groups';
  el.textContent = text ? 'Scope: ' + text : '';
  el.hidden = !text;
}

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const err = $('login-error');
  err.hidden = true;
  const button = e.target.querySelector('button');
  button.disabled = true;
  try {
    const me = await postJSON('/api/login', { username: $('username').value, password: $('password').value });
    $('password').value = '';
    showChatPage(me);
  } catch (ex) {
    err.textContent = ex.message;
    err.hidden = false;
    $('password').select();
  } finally {
    button.disabled = false;
  }
});

$('logout').addEventListener('click', async () => {
  disconnect();
  try { await postJSON('/api/logout'); } catch (_) { /* logged out anyway */ }
  showLogin();
});

// ---- the filter -------------------------------------------------------------------------
const normFilter = (text) => text.trim().toLowerCase();

/**
 * The Machine ID / Group ID filter of docs/api.md, for an instant preview while the server is
 * asked (the server's answer wins): `*` matches any run of characters, dots included; without
 * `*`, the machine ID itself or any ID ending in `.<pattern>` (a group and its subgroups).
 */
export function machineFilter(text) {
  const f = normFilter(text);
  if (!f || f === '*') return () => true;
  if (!f.includes('*')) return (id) => { const x = id.toLowerCase(); return x === f || x.endsWith('.' + f); };
  return (id) => glob(f, id.toLowerCase());
}

/** `*`-only glob with backtracking to the last star (linear in practice, no regex blow-up). */
function glob(p, s) {
  let pi = 0; let si = 0; let starP = -1; let starS = 0;
  while (si < s.length) {
    if (pi < p.length && p[pi] === '*') { starP = pi++; starS = si; }
    else if (pi < p.length && p[pi] === s[si]) { pi++; si++; }
    else if (starP >= 0) { pi = starP + 1; si = ++starS; }
    else return false;
  }
  while (pi < p.length && p[pi] === '*') pi++;
  return pi === p.length;
}

const filter = $('filter');
filter.value = localStorage.getItem(FILTER_KEY) || '';
let filterTimer = 0;
filter.addEventListener('input', () => {
  localStorage.setItem(FILTER_KEY, filter.value);
  renderMachines(); // instant preview from what we have
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    if (!es || normFilter(filter.value) !== streamFilter) connect();
  }, FILTER_DELAY);
});

// ---- the live stream --------------------------------------------------------------------
let es = null;           // the EventSource of the machine list
let streamFilter = null; // the filter `es` was opened with
let retryTimer = 0;
let retryDelay = 1000;
let streamError = false; // the page error shown is the stream's (cleared when it works again)

function setLive(state) {
  const el = $('live');
  el.dataset.state = state;
  el.textContent = { live: 'live', connecting: 'connecting…', reconnecting: 'reconnecting…', error: 'not live' }[state];
  el.title = {
    live: 'Check-in status changes show up here as they happen.',
    connecting: 'Connecting to the server…',
    reconnecting: 'The connection to the server was lost; reconnecting…',
    error: 'Not receiving status changes.',
  }[state];
}

function disconnect() {
  clearTimeout(retryTimer);
  clearTimeout(filterTimer);
  if (es) es.close();
  es = null;
}

/** (Re)open the machine stream with the current filter. */
function connect() {
  disconnect();
  const f = normFilter(filter.value);
  streamFilter = f;
  const src = new EventSource('/api/machines/events?filter=' + encodeURIComponent(f));
  es = src;
  setLive(dataFilter === null || dataFilter !== f ? 'connecting' : 'reconnecting');
  src.addEventListener('open', () => { if (es === src) setLive('live'); });
  src.addEventListener('machines', (e) => {
    if (es !== src) return;
    const list = parseJSON(e.data);
    if (!Array.isArray(list)) return;
    retryDelay = 1000;
    setLive('live');
    replaceMachines(list, f);
  });
  src.addEventListener('machine', (e) => {
    if (es !== src || dataFilter !== f) return;
    const m = parseJSON(e.data);
    if (m && typeof m.id === 'string') upsertMachine(m);
  });
  src.addEventListener('error', (e) => {
    if (es !== src) return;
    if (typeof e.data === 'string') { // the server's own `event: error`; the stream ends
      const d = parseJSON(e.data) || {};
      src.close();
      es = null;
      if (d.error === 'unauthenticated') return showLogin();
      showStreamError(d.message || 'The server stopped sending machine updates.');
      setLive('reconnecting');
      retryLater();
    } else if (src.readyState === EventSource.CLOSED) { // an HTTP error: find out which
      es = null;
      setLive('reconnecting');
      probe(f);
    } else {
      setLive('reconnecting'); // the browser reconnects by itself; the full list comes again
    }
  });
}

function retryLater() {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, retryDelay);
  retryDelay = Math.min(retryDelay * 2, RETRY_MAX);
}

/** The stream was refused: ask the plain list why (401, a bad filter, …), show what it has. */
async function probe(f) {
  try {
    const list = await getJSON('/api/machines?filter=' + encodeURIComponent(f));
    if (es || streamFilter !== f) return;
    if (Array.isArray(list)) replaceMachines(list, f);
    retryLater();
  } catch (e) {
    if (es || streamFilter !== f) return;
    if (e.status === 401) return showLogin();
    showStreamError(e.message);
    if (e.status === 400) { // a bad filter: nothing matches it; wait for the next one
      replaceMachines([], f);
      showStreamError(e.message);
      return setLive('error');
    }
    retryLater();
  }
}

function parseJSON(text) {
  try { return JSON.parse(text); } catch (_) { return null; }
}

function showStreamError(text) {
  showError(text);
  streamError = true;
}

// ---- the machine list -------------------------------------------------------------------
const collator = new Intl.Collator(undefined, { numeric: true });
const byId = (a, b) => collator.compare(a.id, b.id);
const groupOf = (m) => m.group || (m.id.includes('.') ? m.id.slice(m.id.indexOf('.') + 1) : '');
const orgOf = (m) => m.org || groupOf(m).split('.').pop();

/** The server's whole list for filter `f` (it replaces everything). */
function replaceMachines(list, f) {
  machines = new Map();
  for (const m of list) if (m && typeof m.id === 'string') machines.set(m.id, m);
  dataFilter = f;
  if (streamError) { showError(''); streamError = false; }
  renderMachines();
  if (qv.id && machines.has(qv.id)) { qv.view = machines.get(qv.id); renderQuickView(); }
}

/** One changed machine: update its row in place (or add / remove it). */
function upsertMachine(m) {
  const known = machines.has(m.id);
  if (m.removed === true || m.deleted === true) machines.delete(m.id);
  else machines.set(m.id, m);
  const tr = rows.get(m.id);
  const gone = !machines.has(m.id);
  if (tr && !gone) {
    fillRow(tr, m);
  } else if (!known || gone) {
    renderMachines(); // a row comes or goes: the rest stay as they are
  } // else: a known machine without a row (filtered out by the preview, or beyond MAX_ROWS)
  if (qv.id === m.id && !gone) { qv.view = m; renderQuickView(); }
}

/** True while the filter text differs from the one the server answered for. */
function previewing() {
  return dataFilter !== null && normFilter(filter.value) !== dataFilter;
}

const emptyRow = document.createElement('tr');
emptyRow.append(document.createElement('td'));
emptyRow.cells[0].colSpan = 4;
emptyRow.cells[0].className = 'muted';

/**
 * Bring the table in line with `machines` (narrowed by the filter preview while the server has
 * not answered for the current text). Rows are kept and updated in place, never rebuilt, so
 * focus and the Quick View stay where they are.
 */
function renderMachines() {
  const tbody = $('machines');
  const match = previewing() ? machineFilter(filter.value) : () => true;
  const all = [...machines.values()].filter((m) => match(m.id)).sort(byId);
  const list = all.length > MAX_ROWS ? all.slice(0, MAX_ROWS) : all;
  const keep = new Set(list.map((m) => m.id));
  for (const [id, tr] of rows) {
    if (!keep.has(id)) { tr.remove(); rows.delete(id); rowKeys.delete(id); }
  }
  emptyRow.remove();
  let next = tbody.firstElementChild; // the kept rows are already in id order
  for (const m of list) {
    let tr = rows.get(m.id);
    if (tr) fillRow(tr, m);
    else { tr = buildRow(m); rows.set(m.id, tr); }
    if (tr === next) next = next.nextElementSibling;
    else tbody.insertBefore(tr, next);
  }
  if (!list.length && dataFilter !== null) {
    emptyRow.cells[0].textContent = filter.value.trim() ? 'No machine matches the filter.' : 'No machines.';
    tbody.append(emptyRow);
  }
  const n = all.length;
  let count = `${n.toLocaleString()} machine${n === 1 ? '' : 's'}`;
  if (list.length < n) count += ` (the first ${list.length.toLocaleString()} shown; narrow the filter to see the others)`;
  $('count').textContent = dataFilter === null ? 'Loading machines…'
    : previewing() ? `${count} so far — filtering…` : count;
  if (qv.anchor && !qv.anchor.isConnected) closeQuickView();
}

function buildRow(m) {
  const tr = document.createElement('tr');
  tr.dataset.machine = m.id;
  for (let i = 0; i < 4; i++) tr.append(document.createElement('td'));
  tr.cells[0].append(statusIcon(m.status));
  tr.cells[1].className = 'machine-id';
  tr.cells[2].className = 'user';
  fillRow(tr, m);
  return tr;
}

/** Why the machine's ID is no chat link ('' when it is one). */
function noChatReason(m) {
  if (Object.hasOwn(NO_CHAT, m.status)) return NO_CHAT[m.status];
  if (!m.user) return 'no user logged on';
  return '';
}

function fillRow(tr, m) {
  setStatusIcon(tr.cells[0].firstElementChild, m.status);
  const key = JSON.stringify([m.status, m.user, m.session, m.group, m.org]);
  if (rowKeys.get(m.id) === key) return;
  rowKeys.set(m.id, key);
  const [, idCell, userCell, sessionCell] = tr.cells;
  const hadFocus = idCell.contains(document.activeElement) || sessionCell.contains(document.activeElement);

  const name = document.createElement('div');
  name.className = 'machine-name';
  const why = noChatReason(m);
  if (!why) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'link machine-link';
    b.textContent = m.id;
    b.title = `Chat with ${m.user} on ${m.id}`;
    b.addEventListener('click', () => openChat(() => postJSON('/api/chats', { machine: m.id }).then((r) => r.session)));
    name.append(b);
  } else {
    const s = document.createElement('span');
    s.textContent = m.id;
    const r = document.createElement('span');
    r.className = 'reason';
    r.textContent = ` (${why})`;
    name.append(s, r);
  }
  const group = document.createElement('div');
  group.className = 'machine-group';
  const g = groupOf(m);
  const o = orgOf(m);
  group.append(labelled('Group', g));
  if (o && o !== g) group.append(' · ', labelled('Org', o));
  idCell.replaceChildren(name, group);

  userCell.replaceChildren(m.user || '—');
  if (m.user && m.status === 'idle') {
    const idle = document.createElement('span');
    idle.className = 'reason';
    idle.textContent = ' (idle)';
    userCell.append(idle);
  }

  sessionCell.replaceChildren();
  if (m.session) {
    const a = document.createElement('a');
    a.href = '/chat/' + encodeURIComponent(m.session);
    a.className = 'join';
    a.textContent = 'Join Session';
    a.setAttribute('aria-label', `Join Session with ${m.id}`);
    a.addEventListener('click', (e) => {
      e.preventDefault();
      openChat(() => postJSON('/api/sessions/' + encodeURIComponent(m.session) + '/join'));
    });
    sessionCell.append(a);
  }
  if (hadFocus) (idCell.querySelector('button') || sessionCell.querySelector('a') || tr.cells[0].firstElementChild).focus();
}

function labelled(label, value) {
  const span = document.createElement('span');
  const l = document.createElement('span');
  l.className = 'group-label';
  l.textContent = label + ' ';
  span.append(l, value || '—');
  return span;
}

/** Fetch one machine after starting a chat with it, so Join Session shows at once. */
async function refreshMachine(id) {
  try {
    const m = await getJSON('/api/machines/' + encodeURIComponent(id));
    if (m && m.id === id && machines.has(id)) upsertMachine(m);
  } catch (_) { /* the stream brings it */ }
}

function showError(text) {
  const p = $('page-error');
  p.textContent = text;
  p.hidden = !text;
  streamError = false;
}

// ---- Quick View -------------------------------------------------------------------------
// Opens on hovering a status icon or focusing it; stays while the pointer is on it or on the
// Quick View itself; Escape closes it. Shows the row's data at once, then the server's fresh
// details (GET /api/machines/{id}), and follows live updates while open. Text only.
const quickview = $('quickview');
const qv = { id: null, anchor: null, view: null, note: '', token: 0, closeTimer: 0, tick: 0, dismissed: null };

const LONG_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** "12 s ago", "5 min ago", "3 h ago", "2 d ago". */
export function ago(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

/** "45 s", "12 min", "1 h 5 min". */
function duration(secs) {
  const s = Math.max(0, Math.floor(secs));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function openQuickView(icon) {
  const tr = icon.closest('tr');
  const id = tr && tr.dataset.machine;
  const row = id && machines.get(id);
  if (!row) return;
  clearTimeout(qv.closeTimer);
  if (qv.anchor === icon && !quickview.hidden) return;
  if (qv.anchor && qv.anchor !== icon) qv.anchor.removeAttribute('aria-describedby');
  const token = ++qv.token;
  Object.assign(qv, { id, anchor: icon, view: row, note: '', dismissed: null });
  icon.setAttribute('aria-describedby', 'quickview');
  renderQuickView();
  quickview.hidden = false;
  placeQuickView();
  clearInterval(qv.tick);
  qv.tick = setInterval(updateAgo, 1000);
  getJSON('/api/machines/' + encodeURIComponent(id)).then((fresh) => {
    if (qv.token !== token || !fresh || fresh.id !== id) return;
    qv.view = fresh;
    renderQuickView();
  }).catch((e) => {
    if (qv.token !== token) return;
    qv.note = `Live details unavailable (${e.message}); showing the list's data.`;
    renderQuickView();
  });
}

function closeQuickView() {
  clearTimeout(qv.closeTimer);
  clearInterval(qv.tick);
  qv.token++;
  if (qv.anchor) qv.anchor.removeAttribute('aria-describedby');
  qv.id = null;
  qv.anchor = null;
  qv.view = null;
  quickview.hidden = true;
}

function closeQuickViewSoon() {
  clearTimeout(qv.closeTimer);
  qv.closeTimer = setTimeout(() => {
    if (qv.anchor && (qv.anchor.matches(':hover') || quickview.matches(':hover') || document.activeElement === qv.anchor)) return;
    closeQuickView();
  }, QV_CLOSE_DELAY);
}

function renderQuickView() {
  const m = qv.view;
  if (!m) return;
  const head = document.createElement('p');
  head.className = 'qv-head';
  const name = document.createElement('strong');
  name.className = 'qv-id';
  name.textContent = m.id;
  head.append(statusSvg(m.status), name);

  const dl = document.createElement('dl');
  const item = (label, value, cls) => {
    const dt = document.createElement('dt');
    dt.textContent = label;
    const dd = document.createElement('dd');
    if (cls) dd.className = cls;
    dd.append(value);
    dl.append(dt, dd);
  };
  item('Status', statusLabel(m.status));
  const last = document.createElement('time');
  last.className = 'qv-ago';
  if (typeof m.last_checkin === 'number') {
    const d = new Date(m.last_checkin);
    last.dateTime = d.toISOString();
    last.title = LONG_TIME.format(d);
    last.dataset.at = String(m.last_checkin);
    last.textContent = ago(Date.now() - m.last_checkin);
  } else {
    last.textContent = 'never';
  }
  item('Last check-in', last);
  item('User', m.user || 'nobody logged on');
  if (m.user) {
    const idle = Number(m.idle_secs) || 0;
    item('Idle', idle > 0 ? duration(idle) : 'active');
  }
  item('Group', groupOf(m) || '—');
  item('OS', m.os || '—');
  item('Agent version', m.agent_version || '—');
  item('IP address', m.ip || '—', 'qv-ip');

  const parts = [head, dl];
  if (qv.note) {
    const note = document.createElement('p');
    note.className = 'qv-note';
    note.textContent = qv.note;
    parts.push(note);
  }
  quickview.replaceChildren(...parts);
  if (!quickview.hidden) placeQuickView();
}

function updateAgo() {
  const t = quickview.querySelector('.qv-ago[data-at]');
  if (t) t.textContent = ago(Date.now() - Number(t.dataset.at));
}

/** Below the icon (above it when there is no room), inside the viewport horizontally. */
function placeQuickView() {
  if (!qv.anchor) return;
  const r = qv.anchor.getBoundingClientRect();
  const w = quickview.offsetWidth;
  const h = quickview.offsetHeight;
  const vw = document.documentElement.clientWidth;
  const left = Math.max(8, Math.min(r.left - 8, vw - w - 8));
  let top = r.bottom + 6;
  if (top + h > window.innerHeight - 8 && r.top - h - 6 >= 8) top = r.top - h - 6;
  quickview.style.left = `${left + window.scrollX}px`;
  quickview.style.top = `${top + window.scrollY}px`;
}

const iconOf = (node) => (node instanceof Element ? node.closest('#machines .status') : null);
const tbody = $('machines');
tbody.addEventListener('mouseover', (e) => {
  const icon = iconOf(e.target);
  if (!icon || icon.contains(e.relatedTarget)) return; // moving inside the icon
  if (qv.dismissed === icon) return;
  openQuickView(icon);
});
tbody.addEventListener('mouseout', (e) => {
  const icon = iconOf(e.target);
  if (!icon || icon.contains(e.relatedTarget)) return;
  if (qv.dismissed === icon) qv.dismissed = null;
  if (qv.anchor === icon) closeQuickViewSoon();
});
tbody.addEventListener('focusin', (e) => {
  const icon = iconOf(e.target);
  if (icon) openQuickView(icon);
});
tbody.addEventListener('focusout', (e) => {
  const icon = iconOf(e.target);
  if (icon && qv.anchor === icon) closeQuickViewSoon();
});
quickview.addEventListener('mouseenter', () => clearTimeout(qv.closeTimer));
quickview.addEventListener('mouseleave', closeQuickViewSoon);
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && !quickview.hidden) {
    qv.dismissed = qv.anchor;
    closeQuickView();
  }
});
window.addEventListener('resize', () => { if (!quickview.hidden) placeQuickView(); });

// ---- chat windows -----------------------------------------------------------------------
/**
 * Open a chat in a NEW window. The window is opened synchronously inside the click (so popup
 * blockers allow it) and pointed at /chat/{id} once the server answered with the session.
 * @param {() => Promise<{id: string}>} request resolves to a SessionView
 */
function openChat(request) {
  showError('');
  const w = window.open('about:blank', '', CHAT_FEATURES);
  if (w) {
    try { w.document.title = 'Starting chat…'; w.document.body.textContent = 'Starting chat…'; } catch (_) { /* ignore */ }
  }
  request().then((view) => {
    const id = view.id;
    const url = new URL('/chat/' + encodeURIComponent(id), location.href).href;
    const open = chatWindows.get(id);
    if (open && !open.closed) { // this chat already has its window: bring it forward
      if (w) w.close();
      open.focus();
    } else if (w && !w.closed) {
      w.name = 'natter-chat-' + id;
      w.location.href = url;
      chatWindows.set(id, w);
    } else {
      const w2 = window.open(url, 'natter-chat-' + id, CHAT_FEATURES);
      if (w2) chatWindows.set(id, w2);
      else popupBlocked(url, id);
    }
    refreshMachine(view.machine); // show Join Session now, whether or not the stream says so

  }).catch((e) => {
    if (w) w.close();
    if (e.status === 401) return showLogin();
    showError(e.message);
  });
}

function popupBlocked(url, id) {
  const p = $('page-error');
  p.replaceChildren('Your browser blocked the chat window. ');
  const a = document.createElement('a');
  a.href = url;
  a.textContent = 'Open the chat window';
  a.addEventListener('click', (e) => {
    e.preventDefault();
    const w = window.open(url, 'natter-chat-' + id, CHAT_FEATURES);
    if (w) { chatWindows.set(id, w); showError(''); }
  });
  p.append(a);
  p.hidden = false;
}

start();
