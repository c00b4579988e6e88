// Quick View: an agent's details next to its status icon. Opens on hovering a status icon or
// focusing it; stays while the pointer is on it or on the Quick View itself; Escape closes it.
// Shows the row's data at once, then the server's fresh details (GET /api/machines/{id}), and
// follows live updates while open. Text only.
import { getJSON } from './api.js';
import { el } from './dom.js';
import { statusSvg, statusLabel } from './status-icons.js';
import { groupOf, userList } from './machine-row.js';
import { ago, duration, longTime } from './time-text.js';

const CLOSE_DELAY = 200; // ms, lets the pointer travel from the icon onto the Quick View

export class QuickView {
  /**
   * @param {HTMLElement} panel   the Quick View (#quickview)
   * @param {HTMLElement} tbody   the machine rows, whose `.status` icons open it
   * @param {(id: string) => object | undefined} machineOf  the list's data for a machine
   * @param {import('./machine-row.js').RowActions} [actions]  chat with / join a user of several
   */
  constructor(panel, tbody, machineOf, actions) {
    Object.assign(this, { panel, tbody, machineOf, actions });
    this.id = null;        // the machine shown
    this.anchor = null;    // the icon it belongs to
    this.view = null;      // the machine's data shown
    this.note = '';
    this.token = 0;        // drops answers for a Quick View closed meanwhile
    this.closeTimer = 0;
    this.tick = 0;
    this.dismissed = null; // the icon Escape closed it for, until the pointer leaves it
    this.listen();
  }

  /** New data for a machine (shown if the Quick View is open for it). */
  update(m) {
    if (this.id !== m.id) return;
    this.view = m;
    this.render();
  }

  /** Closes it when its row is gone. */
  closeIfDetached() {
    if (this.anchor && !this.anchor.isConnected) this.close();
  }

  open(icon) {
    const tr = icon.closest('tr');
    const id = tr && tr.dataset.machine;
    const row = id && this.machineOf(id);
    if (!row) return;
    clearTimeout(this.closeTimer);
    if (this.anchor === icon && !this.panel.hidden) return;
    if (this.anchor && this.anchor !== icon) this.anchor.removeAttribute('aria-describedby');
    const token = ++this.token;
    Object.assign(this, { id, anchor: icon, view: row, note: '', dismissed: null });
    icon.setAttribute('aria-describedby', this.panel.id);
    this.render();
    this.panel.hidden = false;
    this.place();
    clearInterval(this.tick);
    this.tick = setInterval(() => this.updateAgo(), 1000);
    getJSON('/api/machines/' + encodeURIComponent(id)).then((fresh) => {
      if (this.token !== token || !fresh || fresh.id !== id) return;
      this.view = fresh;
      this.render();
    }).catch((e) => {
      if (this.token !== token) return;
      this.note = `Live details unavailable (${e.message}); showing the list's data.`;
      this.render();
    });
  }

  close() {
    clearTimeout(this.closeTimer);
    clearInterval(this.tick);
    this.token++;
    if (this.anchor) this.anchor.removeAttribute('aria-describedby');
    this.id = null;
    this.anchor = null;
    this.view = null;
    this.panel.hidden = true;
  }

  closeSoon() {
    clearTimeout(this.closeTimer);
    this.closeTimer = setTimeout(() => {
      const a = this.anchor;
      if (a && (a.matches(':hover') || this.panel.matches(':hover') || document.activeElement === a)) return;
      this.close();
    }, CLOSE_DELAY);
  }

  render() {
    const m = this.view;
    if (!m) return;
    const head = el('p', 'qv-head');
    head.append(statusSvg(m.status), el('strong', 'qv-id', m.id));
    const dl = document.createElement('dl');
    const item = (label, value, cls) => {
      const dd = el('dd', cls);
      dd.append(value);
      dl.append(el('dt', null, label), dd);
    };
    item('Status', statusLabel(m.status));
    item('Last check-in', lastCheckin(m));
    if ((m.users || []).length && this.actions) {
      item('Users', userList(m, this.actions, m.status === 'user' || m.status === 'idle'), 'qv-users');
    } else if ((m.users || []).length) {
      item('Users', m.users.map((u) => `${u.name} (${u.active ? 'active' : 'idle'})`).join(', '), 'qv-users');
    } else item('User', m.user || 'nobody logged on');
    if (m.user && !(m.users || []).length) {
      const idle = Number(m.idle_secs) || 0;
      item('Idle', idle > 0 ? duration(idle) : 'active');
    }
    item('Group', groupOf(m) || '—');
    item('OS', m.os || '—');
    item('Agent version', m.agent_version || '—');
    item('IP address', m.ip || '—', 'qv-ip');
    const parts = [head, dl];
    if (this.note) parts.push(el('p', 'qv-note', this.note));
    this.panel.replaceChildren(...parts);
    if (!this.panel.hidden) this.place();
  }

  updateAgo() {
    const t = this.panel.querySelector('.qv-ago[data-at]');
    if (t) t.textContent = ago(Date.now() - Number(t.dataset.at));
  }

  /** Below the icon (above it when there is no room), inside the viewport horizontally. */
  place() {
    if (!this.anchor) return;
    const r = this.anchor.getBoundingClientRect();
    const w = this.panel.offsetWidth;
    const h = this.panel.offsetHeight;
    const vw = document.documentElement.clientWidth;
    const left = Math.max(8, Math.min(r.left - 8, vw - w - 8));
    let top = r.bottom + 6;
    if (top + h > window.innerHeight - 8 && r.top - h - 6 >= 8) top = r.top - h - 6;
    this.panel.style.left = `${left + window.scrollX}px`;
    this.panel.style.top = `${top + window.scrollY}px`;
  }

  listen() {
    const iconOf = (node) => (node instanceof Element ? node.closest('.status') : null);
    const { tbody, panel } = this;
    tbody.addEventListener('mouseover', (e) => {
      const icon = iconOf(e.target);
      if (!icon || icon.contains(e.relatedTarget)) return; // moving inside the icon
      if (this.dismissed === icon) return;
      this.open(icon);
    });
    tbody.addEventListener('mouseout', (e) => {
      const icon = iconOf(e.target);
      if (!icon || icon.contains(e.relatedTarget)) return;
      if (this.dismissed === icon) this.dismissed = null;
      if (this.anchor === icon) this.closeSoon();
    });
    tbody.addEventListener('focusin', (e) => {
      const icon = iconOf(e.target);
      if (icon) this.open(icon);
    });
    tbody.addEventListener('focusout', (e) => {
      const icon = iconOf(e.target);
      if (icon && this.anchor === icon) this.closeSoon();
    });
    panel.addEventListener('mouseenter', () => clearTimeout(this.closeTimer));
    panel.addEventListener('mouseleave', () => this.closeSoon());
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && !panel.hidden) {
        this.dismissed = this.anchor;
        this.close();
      }
    });
    window.addEventListener('resize', () => { if (!panel.hidden) this.place(); });
  }
}

/** The last check-in as "12 s ago" (kept current by updateAgo), with the full time as title. */
function lastCheckin(m) {
  const last = el('time', 'qv-ago');
  if (typeof m.last_checkin !== 'number') {
    last.textContent = 'never';
    return last;
  }
  const d = new Date(m.last_checkin);
  last.dateTime = d.toISOString();
  last.title = longTime(d);
  last.dataset.at = String(m.last_checkin);
  last.textContent = ago(Date.now() - m.last_checkin);
  return last;
}
