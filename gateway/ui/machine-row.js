// One row of the machine list: status icon, machine ID (a chat link, or why it is none), group,
// user and Join Session. Rows are updated in place, never rebuilt, so focus stays put.
import { statusIcon, setStatusIcon } from './status-icons.js';
import { el } from './dom.js';

// Why a machine's ID is not a chat link. The server allows a chat only with a logged-on user of
// a machine whose state is `user` or `idle`.
const NO_CHAT = {
  suspended: 'agent suspended',
  offline: 'agent offline',
  never_checked_in: 'agent has never checked in',
  waiting_first_audit: 'waiting for first audit',
  remote_disabled: 'remote control disabled',
};

export const groupOf = (m) => m.group || (m.id.includes('.') ? m.id.slice(m.id.indexOf('.') + 1) : '');
const orgOf = (m) => m.org || groupOf(m).split('.').pop();

/** What each row last showed, to skip rows that did not change. */
const shown = new WeakMap();

/**
 * @typedef {object} RowActions
 * @property {(machineId: string, userSession?: string) => void} chat  start a chat with the
 *   machine's user (of several: the one in that OS session)
 * @property {(sessionId: string) => void} join  join the machine's session
 */

/** @param {RowActions} actions */
export function buildRow(m, actions) {
  const tr = document.createElement('tr');
  tr.dataset.machine = m.id;
  for (let i = 0; i < 4; i++) tr.append(document.createElement('td'));
  tr.cells[0].append(statusIcon(m.status));
  tr.cells[1].className = 'machine-id';
  tr.cells[2].className = 'user';
  fillRow(tr, m, actions);
  return tr;
}

/** Why the machine's ID is no chat link ('' when it is one). */
function noChatReason(m) {
  if (Object.hasOwn(NO_CHAT, m.status)) return NO_CHAT[m.status];
  if (!m.user) return 'no user logged on';
  return '';
}

/** @param {RowActions} actions */
export function fillRow(tr, m, actions) {
  setStatusIcon(tr.cells[0].firstElementChild, m.status);
  const users = (m.users || []).map((u) => [u.name, u.session, u.active, u.chat]);
  const key = JSON.stringify([m.status, m.user, m.session, m.group, m.org, users]);
  if (shown.get(tr) === key) return;
  shown.set(tr, key);
  const [, idCell, userCell, sessionCell] = tr.cells;
  const hadFocus = idCell.contains(document.activeElement) || sessionCell.contains(document.activeElement);
  idCell.replaceChildren(nameOf(m, actions), groupLine(m));
  const focusedUser = userCell.contains(document.activeElement) && document.activeElement.closest('li');
  const focusedSession = focusedUser ? focusedUser.dataset.userSession : null;
  if ((m.users || []).length) {
    userCell.replaceChildren(userList(m, actions, !noChatReason(m)));
    const again = focusedSession !== null && [...userCell.querySelectorAll('li')].find((li) => li.dataset.userSession === focusedSession);
    if (again) (again.querySelector('button, a') || again).focus();
  } else {
    userCell.replaceChildren(m.user || '—');
    if (m.user && m.status === 'idle') userCell.append(el('span', 'reason', ' (idle)'));
  }
  sessionCell.replaceChildren();
  if (m.session) sessionCell.append(joinLink(m, actions));
  if (hadFocus) (idCell.querySelector('button') || sessionCell.querySelector('a') || tr.cells[0].firstElementChild).focus();
}

/**
 * The users of a machine with several (a terminal server): each with an active / idle mark and
 * "Chat" (or "Join" for the chat in progress with them), when the machine can chat at all.
 */
export function userList(m, actions, canChat) {
  const ul = el('ul', 'machine-users');
  for (const u of m.users) {
    const li = el('li', 'machine-user');
    li.dataset.userSession = u.session;
    const mark = el('span', 'user-mark', u.active ? '●' : '○');
    mark.dataset.active = String(!!u.active);
    mark.title = u.active ? 'active' : 'idle for 10 minutes or more';
    li.append(mark, ' ', el('span', 'user-name', u.name), el('span', 'reason', u.active ? ' (active)' : ' (idle)'), ' ');
    if (u.chat) {
      const a = el('a', 'join user-join', 'Join');
      a.href = '/chat/' + encodeURIComponent(u.chat);
      a.setAttribute('aria-label', `Join the chat with ${u.name} on ${m.id}`);
      a.addEventListener('click', (e) => { e.preventDefault(); actions.join(u.chat); });
      li.append(a);
    } else if (canChat) {
      const b = el('button', 'link user-chat', 'Chat');
      b.type = 'button';
      b.setAttribute('aria-label', `Chat with ${u.name} on ${m.id}`);
      b.title = `Chat with ${u.name} (session ${u.session}) on ${m.id}`;
      b.addEventListener('click', () => actions.chat(m.id, u.session));
      li.append(b);
    }
    ul.append(li);
  }
  return ul;
}

function nameOf(m, actions) {
  const name = el('div', 'machine-name');
  const why = noChatReason(m);
  if (!why) {
    const b = el('button', 'link machine-link', m.id);
    b.type = 'button';
    // Of several users, the machine ID chats with the first (each user has Chat of their own).
    const first = (m.users || [])[0];
    b.title = `Chat with ${first ? first.name : m.user} on ${m.id}`;
    b.addEventListener('click', () => (first ? actions.chat(m.id, first.session) : actions.chat(m.id)));
    name.append(b);
  } else {
    name.append(el('span', null, m.id), el('span', 'reason', ` (${why})`));
  }
  return name;
}

function groupLine(m) {
  const group = el('div', 'machine-group');
  const g = groupOf(m);
  const o = orgOf(m);
  group.append(labelled('Group', g));
  if (o && o !== g) group.append(' · ', labelled('Org', o));
  return group;
}

function labelled(label, value) {
  const span = document.createElement('span');
  span.append(el('span', 'group-label', label + ' '), value || '—');
  return span;
}

function joinLink(m, actions) {
  const a = el('a', 'join', 'Join Session');
  a.href = '/chat/' + encodeURIComponent(m.session);
  a.setAttribute('aria-label', `Join Session with ${m.id}`);
  a.addEventListener('click', (e) => {
    e.preventDefault();
    actions.join(m.session);
  });
  return a;
}
