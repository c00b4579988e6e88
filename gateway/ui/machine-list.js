// The page of machines the server sent for the current filter, and the table that shows them.
import { getJSON } from './api.js';
import { machineFilter, normFilter } from './machine-filter.js';
import { buildRow, fillRow } from './machine-row.js';

const MAX_ROWS = 2000; // rows drawn at most (the server's largest page)

// The server's order (by ID, byte by byte), so that pages follow each other without overlap.
const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export class MachineList {
  /**
   * @param {object} ui
   * @param {HTMLTableSectionElement} ui.tbody
   * @param {HTMLElement} ui.count        "N machines"
   * @param {HTMLInputElement} ui.filter  the filter the operator is typing
   * @param {import('./machine-row.js').RowActions} actions
   */
  constructor(ui, actions) {
    this.ui = ui;
    this.actions = actions;
    this.machines = new Map(); // id -> MachineView, as the server sent them for `dataFilter`
    this.dataFilter = null;    // the (normalised) filter `machines` was sent for; null: nothing yet
    this.page = null;          // {total, offset, limit} of what the server sent; null: the whole list
    this.rows = new Map();     // id -> <tr>
    this.onMachine = () => {}; // a machine's data changed
    this.onRender = () => {};  // rows may have come or gone
    const td = document.createElement('td');
    td.colSpan = 4;
    td.className = 'muted';
    this.emptyRow = document.createElement('tr');
    this.emptyRow.append(td);
  }

  get(id) {
    return this.machines.get(id);
  }

  /** Forget everything (logged out). */
  clear() {
    this.machines = new Map();
    this.dataFilter = null;
    this.page = null;
    this.rows.clear();
    this.ui.tbody.replaceChildren();
  }

  /**
   * The server's list for filter `f` (it replaces everything): a page of it when `page`
   * ({total, offset, limit}) is given, else the whole list.
   */
  replace(list, f, page = null) {
    this.machines = new Map();
    for (const m of list) if (m && typeof m.id === 'string') this.machines.set(m.id, m);
    this.dataFilter = f;
    this.page = page;
    this.render();
    for (const m of this.machines.values()) this.onMachine(m);
  }

  /** How many machines match in all (the server's `total` event). */
  setTotal(total) {
    if (!this.page) return;
    this.page = { ...this.page, total };
    this.ui.count.textContent = this.countText(this.machines.size, this.machines.size);
    this.onRender();
  }

  /** One changed machine: update its row in place (or add / remove it). */
  upsert(m) {
    const known = this.machines.has(m.id);
    if (m.removed === true || m.deleted === true) this.machines.delete(m.id);
    else this.machines.set(m.id, m);
    const tr = this.rows.get(m.id);
    const gone = !this.machines.has(m.id);
    if (tr && !gone) {
      fillRow(tr, m, this.actions);
    } else if (!known || gone) {
      this.render(); // a row comes or goes: the rest stay as they are
    } // else: a known machine without a row (filtered out by the preview, or beyond MAX_ROWS)
    if (!gone) this.onMachine(m);
  }

  /** Fetch one machine after starting a chat with it, so Join Session shows at once. */
  async refresh(id) {
    try {
      const m = await getJSON('/api/machines/' + encodeURIComponent(id));
      if (m && m.id === id && this.machines.has(id)) this.upsert(m);
    } catch (_) { /* the stream brings it */ }
  }

  /** True while the filter text differs from the one the server answered for. */
  previewing() {
    return this.dataFilter !== null && normFilter(this.ui.filter.value) !== this.dataFilter;
  }

  /**
   * Bring the table in line with `machines` (narrowed by the filter preview while the server has
   * not answered for the current text). Rows are kept and updated in place, never rebuilt, so
   * focus and the Quick View stay where they are.
   */
  render() {
    const { tbody, filter } = this.ui;
    const match = this.previewing() ? machineFilter(filter.value) : () => true;
    const all = [...this.machines.values()].filter((m) => match(m.id)).sort(byId);
    const list = all.length > MAX_ROWS ? all.slice(0, MAX_ROWS) : all;
    const keep = new Set(list.map((m) => m.id));
    for (const [id, tr] of this.rows) {
      if (!keep.has(id)) { tr.remove(); this.rows.delete(id); }
    }
    this.emptyRow.remove();
    let next = tbody.firstElementChild; // the kept rows are already in id order
    for (const m of list) {
      let tr = this.rows.get(m.id);
      if (tr) fillRow(tr, m, this.actions);
      else { tr = buildRow(m, this.actions); this.rows.set(m.id, tr); }
      if (tr === next) next = next.nextElementSibling;
      else tbody.insertBefore(tr, next);
    }
    if (!list.length && this.dataFilter !== null) {
      this.emptyRow.cells[0].textContent = filter.value.trim() ? 'No machine matches the filter.' : 'No machines.';
      tbody.append(this.emptyRow);
    }
    this.ui.count.textContent = this.countText(all.length, list.length);
    this.onRender();
  }

  countText(matching, drawn) {
    if (this.dataFilter === null) return 'Loading machines…';
    if (this.page && !this.previewing()) {
      const { total, offset } = this.page;
      const n = (x) => x.toLocaleString();
      const all = `${n(total)} machine${total === 1 ? '' : 's'}`;
      if (!drawn) return offset && total ? `None here of ${all}` : all;
      if (offset === 0 && drawn === total) return all;
      return `${n(offset + 1)}–${n(offset + drawn)} of ${all}`;
    }
    let count = `${matching.toLocaleString()} machine${matching === 1 ? '' : 's'}`;
    if (drawn < matching) count += ` (the first ${drawn.toLocaleString()} shown; narrow the filter to see the others)`;
    return this.previewing() ? `${count} so far — filtering…` : count;
  }
}
