// The Chat page's live stream: GET /api/machines/events?filter=…&offset=…&limit=… (filtered and
// paged by the server, within the operator's scopes), reopened when the filter or the page
// changes, retried when it fails. No polling. It carries one page of the machine list (and only
// its machines' changes), the operators online for that filter and incoming chats.
import { getJSON, parseJSON } from './api.js';
import { normFilter } from './machine-filter.js';

const FILTER_KEY = 'natter.filter';
const FILTER_DELAY = 250; // ms of quiet typing before the stream is reopened with the filter
const RETRY_MAX = 30000;  // ms, longest wait before reopening a failed stream
export const PAGE_SIZE = 200; // machines a page shows

const LIVE_TEXT = { live: 'live', connecting: 'connecting…', reconnecting: 'reconnecting…', error: 'not live' };
const LIVE_TITLE = {
  live: 'Check-in status changes show up here as they happen.',
  connecting: 'Connecting to the server…',
  reconnecting: 'The connection to the server was lost; reconnecting…',
  error: 'Not receiving status changes.',
};

export class MachineStream {
  /**
   * @param {object} ui
   * @param {HTMLInputElement} ui.filter  the Machine ID / Group ID filter (remembered)
   * @param {HTMLElement} ui.live         the "live" indicator
   * @param {HTMLElement} ui.pager        the page buttons' container
   * @param {HTMLButtonElement} ui.prev   previous page
   * @param {HTMLButtonElement} ui.next   next page
   * @param {import('./machine-list.js').MachineList} list  receives what the stream sends
   * @param {import('./page-error.js').PageError} errors
   * @param {() => void} loggedOut        the login is gone
   * @param {object} [on]                 the stream's other events (docs/api.md)
   * @param {(ops: object[]) => void} [on.operators]   the whole list of operators online
   * @param {() => void} [on.resync]                   (re)connected: every waiting chat follows
   * @param {(inc: object) => void} [on.incoming]      a chat waiting for this operator
   * @param {(session: string) => void} [on.incomingGone]  ... no longer waiting
   */
  constructor(ui, list, errors, loggedOut, on = {}) {
    Object.assign(this, { ui, list, errors, loggedOut });
    this.on = { operators() {}, resync() {}, incoming() {}, incomingGone() {}, ...on };
    this.es = null;           // the EventSource of the machine list
    this.streamFilter = null; // the filter `es` was opened with
    this.retryTimer = 0;
    this.retryDelay = 1000;
    this.filterTimer = 0;
    this.offset = 0;          // the first machine of the page shown (0: the first page)
    ui.prev.addEventListener('click', () => this.goTo(this.offset - PAGE_SIZE));
    ui.next.addEventListener('click', () => this.goTo(this.offset + PAGE_SIZE));
    const filter = ui.filter;
    filter.value = localStorage.getItem(FILTER_KEY) || '';
    filter.addEventListener('input', () => {
      localStorage.setItem(FILTER_KEY, filter.value);
      list.render(); // instant preview from what we have
      clearTimeout(this.filterTimer);
      this.filterTimer = setTimeout(() => {
        if (!this.es || normFilter(filter.value) !== this.streamFilter) {
          this.offset = 0; // a new filter starts at its first page
          this.connect();
        }
      }, FILTER_DELAY);
    });
  }

  setLive(state) {
    const el = this.ui.live;
    el.dataset.state = state;
    el.textContent = LIVE_TEXT[state];
    el.title = LIVE_TITLE[state];
  }

  /** Show the page that starts at `offset`. */
  goTo(offset) {
    this.offset = Math.max(0, offset);
    this.ui.prev.disabled = this.ui.next.disabled = true; // until the page arrives
    this.connect();
  }

  /** The page buttons for what the server sent. */
  showPager(page) {
    const { pager, prev, next } = this.ui;
    pager.hidden = !page || page.total <= page.limit && page.offset === 0;
    if (!page) return;
    prev.disabled = page.offset === 0;
    next.disabled = page.offset + page.limit >= page.total;
  }

  url(f) {
    return `/api/machines/events?filter=${encodeURIComponent(f)}&offset=${this.offset}&limit=${PAGE_SIZE}`;
  }

  disconnect() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.filterTimer);
    if (this.es) this.es.close();
    this.es = null;
  }

  /** (Re)open the machine stream with the current filter. */
  connect() {
    this.disconnect();
    const f = normFilter(this.ui.filter.value);
    this.streamFilter = f;
    const src = new EventSource(this.url(f));
    this.es = src;
    const dataFilter = this.list.dataFilter;
    this.setLive(dataFilter === null || dataFilter !== f ? 'connecting' : 'reconnecting');
    const mine = () => this.es === src;
    // The first `machines` of each connection (also the browser's own reconnects) is followed
    // by every chat waiting now; a later one (the server fell behind) is not.
    let connected = true;
    src.addEventListener('open', () => {
      connected = true;
      if (mine()) this.setLive('live');
    });
    src.addEventListener('machines', (e) => {
      if (!mine()) return;
      const page = parseJSON(e.data);
      if (!page || !Array.isArray(page.machines)) return;
      this.retryDelay = 1000;
      this.setLive('live');
      if (page.offset > 0 && page.offset >= page.total) {
        // Past the end (machines went, or the filter matches fewer): the last page instead.
        return this.goTo(Math.floor(Math.max(page.total - 1, 0) / PAGE_SIZE) * PAGE_SIZE);
      }
      this.replace(page.machines, f, page);
      if (connected) this.on.resync();
      connected = false;
    });
    src.addEventListener('total', (e) => {
      if (!mine() || this.list.dataFilter !== f) return;
      const t = parseJSON(e.data);
      if (t && typeof t.total === 'number') {
        this.list.setTotal(t.total);
        this.showPager(this.list.page);
      }
    });
    src.addEventListener('operators', (e) => {
      if (!mine()) return;
      const ops = parseJSON(e.data);
      if (Array.isArray(ops)) this.on.operators(ops);
    });
    src.addEventListener('incoming', (e) => {
      if (!mine()) return;
      const inc = parseJSON(e.data);
      if (inc && typeof inc.session === 'string') this.on.incoming(inc);
    });
    src.addEventListener('incoming_gone', (e) => {
      if (!mine()) return;
      const gone = parseJSON(e.data);
      if (gone && typeof gone.session === 'string') this.on.incomingGone(gone.session);
    });
    src.addEventListener('machine', (e) => {
      if (!mine() || this.list.dataFilter !== f) return;
      const m = parseJSON(e.data);
      if (m && typeof m.id === 'string') this.list.upsert(m);
    });
    src.addEventListener('error', (e) => { if (mine()) this.failed(src, e, f); });
  }

  failed(src, e, f) {
    if (typeof e.data === 'string') { // the server's own `event: error`; the stream ends
      const d = parseJSON(e.data) || {};
      src.close();
      this.es = null;
      if (d.error === 'unauthenticated') return this.loggedOut();
      this.showError(d.message || 'The server stopped sending machine updates.');
      this.setLive('reconnecting');
      this.retryLater();
    } else if (src.readyState === EventSource.CLOSED) { // an HTTP error: find out which
      this.es = null;
      this.setLive('reconnecting');
      this.probe(f);
    } else {
      this.setLive('reconnecting'); // the browser reconnects by itself; the full list comes again
    }
  }

  /** The server's page for `f`: it ends an error the stream showed. */
  replace(list, f, page) {
    this.errors.clear('stream');
    this.list.replace(list, f, page);
    this.showPager(page);
  }

  showError(text) {
    this.errors.show(text, 'stream');
  }

  retryLater() {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), this.retryDelay);
    this.retryDelay = Math.min(this.retryDelay * 2, RETRY_MAX);
  }

  /** The stream was refused: ask the plain list why (401, a bad filter, …), show what it has. */
  async probe(f) {
    const stale = () => this.es || this.streamFilter !== f;
    try {
      const page = await getJSON(`/api/machines?filter=${encodeURIComponent(f)}&offset=${this.offset}&limit=${PAGE_SIZE}`);
      if (stale()) return;
      if (page && Array.isArray(page.machines)) this.replace(page.machines, f, page);
      this.retryLater();
    } catch (e) {
      if (stale()) return;
      if (e.status === 401) return this.loggedOut();
      if (e.status === 400) { // a bad filter: nothing matches it; wait for the next one
        this.replace([], f, null);
        this.showError(e.message);
        return this.setLive('error');
      }
      this.showError(e.message);
      this.retryLater();
    }
  }
}
