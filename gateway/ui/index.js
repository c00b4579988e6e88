// The operator's Chat page: GET /.
// Login, the machine list (filtered client-side; the server applies the operator's scopes),
// and starting / joining chats — each chat in a NEW window (F13), never reusing another one.
import { getJSON, postJSON } from './api.js';

const $ = (id) => document.getElementById(id);
const CHAT_FEATURES = 'popup,width=480,height=640';

// Check-in states (F10). The icon stays simple for now: green when online, grey otherwise.
const STATUS_LABELS = {
  never: 'Agent has never checked in',
  waiting_audit: 'Online but waiting for first audit to complete',
  online: 'Agent online',
  user: 'Agent online and user currently logged on',
  idle: 'User logged on but not active for 10 minutes',
  offline: 'Agent is currently offline',
  rc_disabled: 'Agent is online but remote control has been disabled',
  suspended: 'The agent has been suspended',
};
const GREEN = new Set(['online', 'user']);

let machines = [];
const chatWindows = new Map(); // session id -> the window this page opened for it

// ---- login ------------------------------------------------------------------------------
async function start() {
  try {
    showChatPage(await getJSON('/api/me'));
  } catch (e) {
    if (e.status === 401) showLogin();
    else { $('loading').textContent = e.message; }
  }
}

function showLogin() {
  $('loading').hidden = true;
  $('chat-page').hidden = true;
  $('who').hidden = true;
  $('login').hidden = false;
  $('username').focus();
}

async function showChatPage(me) {
  $('loading').hidden = true;
  $('login').hidden = true;
  $('me-name').textContent = me.name || me.id;
  $('who').hidden = false;
  $('chat-page').hidden = false;
  await loadMachines();
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
    await showChatPage(me);
  } catch (ex) {
    err.textContent = ex.message;
    err.hidden = false;
    $('password').select();
  } finally {
    button.disabled = false;
  }
});

$('logout').addEventListener('click', async () => {
  try { await postJSON('/api/logout'); } catch (_) { /* logged out anyway */ }
  machines = [];
  $('machines').replaceChildren();
  showLogin();
});

// ---- machine list -----------------------------------------------------------------------
async function loadMachines() {
  try {
    machines = await getJSON('/api/machines');
    machines.sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
    showError('');
  } catch (e) {
    if (e.status === 401) return showLogin();
    showError(e.message);
  }
  renderMachines();
}

/** `*` is a wildcard matching anything (dots included); without one, a substring match. */
export function machineFilter(text) {
  const f = text.trim().toLowerCase();
  if (!f) return () => true;
  if (!f.includes('*')) return (id) => id.toLowerCase().includes(f);
  const re = new RegExp('^' + f.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$');
  return (id) => re.test(id.toLowerCase());
}

function statusIcon(status) {
  const label = STATUS_LABELS[status] || status || 'Unknown';
  const wrap = document.createElement('span');
  wrap.className = 'status';
  wrap.title = label; // a Quick View comes with F10
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('width', '12');
  svg.setAttribute('height', '12');
  svg.setAttribute('viewBox', '0 0 12 12');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const c = document.createElementNS(ns, 'circle');
  c.setAttribute('cx', '6');
  c.setAttribute('cy', '6');
  c.setAttribute('r', '5');
  c.setAttribute('class', GREEN.has(status) ? 'dot-on' : 'dot-off');
  svg.append(c);
  const text = document.createElement('span');
  text.className = 'visually-hidden';
  text.textContent = label;
  wrap.append(svg, text);
  return wrap;
}

function renderMachines() {
  const match = machineFilter($('filter').value);
  const shown = machines.filter((m) => match(m.id));
  const rows = shown.map((m) => {
    const tr = document.createElement('tr');
    tr.dataset.machine = m.id;
    const cell = () => tr.appendChild(document.createElement('td'));

    cell().append(statusIcon(m.status));

    const idCell = cell();
    idCell.className = 'machine-id';
    if (m.user) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'link machine-link';
      b.textContent = m.id;
      b.title = `Chat with ${m.user} on ${m.id}`;
      b.addEventListener('click', () => openChat(() => postJSON('/api/chats', { machine: m.id }).then((r) => r.session)));
      idCell.append(b);
    } else {
      const s = document.createElement('span');
      s.textContent = m.id;
      const why = document.createElement('span');
      why.className = 'reason';
      why.textContent = ' (no user logged on)';
      idCell.append(s, why);
    }

    const userCell = cell();
    userCell.textContent = m.user || '—';

    const sessionCell = cell();
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
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement('tr');
    const td = tr.appendChild(document.createElement('td'));
    td.colSpan = 4;
    td.className = 'muted';
    td.textContent = machines.length ? 'No machine matches the filter.' : 'No machines.';
    rows.push(tr);
  }
  $('machines').replaceChildren(...rows);
  $('count').textContent = `${shown.length} of ${machines.length} machines`;
}

const filter = $('filter');
filter.value = localStorage.getItem('natter.filter') || '';
filter.addEventListener('input', () => {
  localStorage.setItem('natter.filter', filter.value);
  renderMachines();
});
$('refresh').addEventListener('click', loadMachines);

function showError(text) {
  const p = $('page-error');
  p.textContent = text;
  p.hidden = !text;
}

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
    loadMachines();
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
