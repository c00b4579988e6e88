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
 * @property {(machineId: string) => void} chat  start a chat with the machine's user
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
  const key = JSON.stringify([m.status, m.user, m.session, m.group, m.org]);
  if (shown.get(tr) === key) return;
  shown.set(tr, key);
  const [, idCell, userCell, sessionCell] = tr.cells;
  const hadFocus = idCell.contains(document.activeElement) || sessionCell.contains(document.activeElement);
  idCell.replaceChildren(nameOf(m, actions), groupLine(m));
  userCell.replaceChildren(m.user || '—');
  if (m.user && m.status === 'idle') userCell.append(el('span', 'reason', ' (idle)'));
  sessionCell.replaceChildren();
  if (m.session) sessionCell.append(joinLink(m, actions));
  if (hadFocus) (idCell.querySelector('button') || sessionCell.querySelector('a') || tr.cells[0].firstElementChild).focus();
}

function nameOf(m, actions) {
  const name = el('div', 'machine-name');
  const why = noChatReason(m);
  if (!why) {
    const b = el('button', 'link machine-link', m.id);
    b.type = 'button';
    b.title = `Chat with ${m.user} on ${m.id}`;
    b.addEventListener('click', () => actions.chat(m.id));
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
