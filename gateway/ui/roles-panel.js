// The "Machine roles" section of the Chat page, for admins only (the API answers 403 to
// everyone else): list roles with their machines, create and delete roles, switch the right
// "may start a chat with operators", and assign a machine to a role (or to none).
import { byId, el } from './dom.js';
import { getJSON, postJSON, putJSON, deleteJSON } from './api.js';

export class RolesPanel {
  constructor(loggedOut) {
    this.loggedOut = loggedOut;
    this.section = byId('roles');
    this.tbody = byId('roles-list');
    this.status = byId('roles-status');
    byId('role-create').addEventListener('submit', (e) => { e.preventDefault(); this.create(e.target); });
    byId('role-assign').addEventListener('submit', (e) => { e.preventDefault(); this.assign(e.target); });
  }

  /** Shows the section (and loads the roles) for an admin; hides it otherwise. */
  show(admin) {
    this.section.hidden = !admin;
    if (admin) this.load();
    else this.tbody.replaceChildren();
  }

  async load() {
    try {
      this.render(await getJSON('/api/roles'));
    } catch (e) {
      this.fail(e);
    }
  }

  render(roles) {
    this.tbody.replaceChildren(...roles.map((r) => this.row(r)));
    byId('roles-empty').hidden = roles.length > 0;
    const select = byId('assign-role');
    // A reload (after any change) keeps the role the admin has picked meanwhile.
    const chosen = select.value;
    const none = el('option', null, '(no role)');
    none.value = '';
    select.replaceChildren(none, ...roles.map((r) => {
      const o = el('option', null, r.name);
      o.value = r.name;
      return o;
    }));
    if (roles.some((r) => r.name === chosen)) select.value = chosen;
  }

  row(role) {
    const tr = el('tr');
    tr.dataset.role = role.name;
    tr.append(el('td', 'role-name', role.name));
    const right = el('input');
    right.type = 'checkbox';
    right.checked = role.may_start_chat;
    right.setAttribute('aria-label', `Role ${role.name} may start a chat`);
    right.addEventListener('change', () => this.act(
      () => putJSON('/api/roles/' + encodeURIComponent(role.name), { may_start_chat: right.checked }),
      `${role.name}: ${right.checked ? 'may' : 'may not'} start a chat`,
    ));
    const rightCell = el('td');
    rightCell.append(right);
    tr.append(rightCell);
    tr.append(el('td', 'role-machines', role.machines.length ? role.machines.join(', ') : '—'));
    const del = el('button', 'danger', 'Delete');
    del.type = 'button';
    del.setAttribute('aria-label', `Delete role ${role.name}`);
    del.addEventListener('click', () => this.act(
      () => deleteJSON('/api/roles/' + encodeURIComponent(role.name)),
      `role ${role.name} deleted`,
    ));
    const delCell = el('td');
    delCell.append(del);
    tr.append(delCell);
    return tr;
  }

  create(form) {
    const name = form.elements.name.value.trim();
    const body = { name, may_start_chat: form.elements.may_start_chat.checked };
    this.act(() => postJSON('/api/roles', body), `role ${name} created`).then((ok) => { if (ok) form.reset(); });
  }

  assign(form) {
    const machine = form.elements.machine.value.trim();
    const role = form.elements.role.value || null;
    this.act(
      () => putJSON('/api/machines/' + encodeURIComponent(machine) + '/role', { role }),
      role ? `${machine}: role ${role}` : `${machine}: no role`,
    ).then((ok) => { if (ok) form.reset(); });
  }

  /** Runs one change, says how it went, and reloads the list; resolves to whether it worked. */
  async act(change, done) {
    try {
      await change();
      this.status.className = 'muted';
      this.status.textContent = done;
      await this.load();
      return true;
    } catch (e) {
      this.fail(e);
      await this.load();
      return false;
    }
  }

  fail(e) {
    if (e.status === 401) return this.loggedOut();
    this.status.className = 'error';
    this.status.textContent = e.message;
  }
}
