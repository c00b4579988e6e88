// The machine user's start page: GET /start/. The agent opens /start/#t=<token> when its user
// asks for a chat (`natter-agent chat`). The token is posted once for a short login (a cookie);
// the page then lists the operators the user may reach, refreshed every few seconds, and a click
// starts a chat with one of them and goes to that chat's window (/m/<session>/).
import { byId, el } from './dom.js';
import { getJSON, postJSON, sleep } from './api.js';

const REFRESH_MS = 3000;
let starting = false;

async function login() {
  const token = new URLSearchParams(location.hash.slice(1)).get('t');
  if (token) {
    // The token is a secret that works once: keep it out of the address bar and history.
    history.replaceState(null, '', location.pathname + location.search);
    try {
      return await postJSON('/start/api/login', { token });
    } catch (e) {
      if (e.status !== 401) throw e; // a used link: the cookie of its first use may still work
    }
  }
  return getJSON('/start/api/operators');
}

function showError(message) {
  const p = byId('start-error');
  p.textContent = message;
  p.hidden = !message;
}

function render(page) {
  byId('start-who').textContent = `Signed in as ${page.user} on ${page.machine}.`;
  byId('start-list').hidden = false;
  const list = byId('operators');
  list.replaceChildren(...page.operators.map((op) => {
    const li = el('li');
    const b = el('button', 'primary', op.name);
    b.type = 'button';
    b.dataset.operator = op.id;
    b.addEventListener('click', () => start(op));
    li.append(b);
    return li;
  }));
  byId('no-operators').hidden = page.operators.length > 0;
}

async function start(op) {
  if (starting) return;
  starting = true;
  showError('');
  try {
    const started = await postJSON('/start/api/chats', { operator: op.id });
    location.assign(started.url);
  } catch (e) {
    starting = false;
    showError(e.status === 401 ? expired : e.message);
  }
}

const expired = 'This page has expired. Ask for a chat again (natter-agent chat, or your tray menu).';

async function main() {
  let page;
  try {
    page = await login();
  } catch (e) {
    byId('start-who').textContent = '';
    showError(e.status === 401 ? 'This start link is not valid any more. Ask for a chat again (natter-agent chat, or your tray menu).' : e.message);
    return;
  }
  render(page);
  for (;;) {
    await sleep(REFRESH_MS);
    if (starting) continue;
    try {
      render(await getJSON('/start/api/operators'));
      showError('');
    } catch (e) {
      if (e.status === 401) {
        byId('start-list').hidden = true;
        showError(expired);
        return;
      }
      showError(e.message); // a network hiccup: try again at the next refresh
    }
  }
}

main();
