// Logging in and out of the Chat page, and who is logged in (name and scopes).
import { getJSON, postJSON } from './api.js';
import { byId } from './dom.js';

export class Login {
  /**
   * @param {{loggedIn: (me: object) => void, loggedOut: () => void}} page
   *   show the machine list / stop everything that needs the login
   */
  constructor(page) {
    this.page = page;
    byId('login-form').addEventListener('submit', (e) => this.submit(e));
    byId('logout').addEventListener('click', async () => {
      page.loggedOut();
      try { await postJSON('/api/logout'); } catch (_) { /* logged out anyway */ }
      this.showLogin();
    });
  }

  /** Shows the Chat page if the browser is logged in, else the login form. */
  async start() {
    try {
      this.showChatPage(await getJSON('/api/me'));
    } catch (e) {
      if (e.status === 401) this.showLogin();
      else byId('loading').textContent = e.message;
    }
  }

  showLogin() {
    this.page.loggedOut();
    byId('loading').hidden = true;
    byId('chat-page').hidden = true;
    byId('who').hidden = true;
    byId('login').hidden = false;
    byId('username').focus();
  }

  showChatPage(me) {
    byId('loading').hidden = true;
    byId('login').hidden = true;
    byId('me-name').textContent = me.name || me.id;
    showScopes(me);
    if (!Array.isArray(me.scopes) && !me.admin) { // the login answer may not carry the scopes
      getJSON('/api/me').then(showScopes, () => {});
    }
    byId('who').hidden = false;
    byId('chat-page').hidden = false;
    this.page.loggedIn(me);
  }

  async submit(e) {
    e.preventDefault();
    const err = byId('login-error');
    err.hidden = true;
    const button = e.target.querySelector('button');
    button.disabled = true;
    try {
      const me = await postJSON('/api/login', { username: byId('username').value, password: byId('password').value });
      byId('password').value = '';
      this.showChatPage(me);
    } catch (ex) {
      err.textContent = ex.message;
      err.hidden = false;
      byId('password').select();
    } finally {
      button.disabled = false;
    }
  }
}

/** "Scope: sales.acme, globex" under the operator's name; admins see all organisations. */
function showScopes(me) {
  const el = byId('me-scopes');
  let text = '';
  if (me.admin || (Array.isArray(me.scopes) && me.scopes.includes('*'))) text = 'all organisations';
  else if (Array.isArray(me.scopes)) text = me.scopes.length ? me.scopes.join(', ') : 'no machine groups';
  el.textContent = text ? 'Scope: ' + text : '';
  el.hidden = !text;
}
