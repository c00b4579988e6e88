// An event stream (text/event-stream) read with fetch, for the event hub (events-hub.js).
//
// It behaves as EventSource does (the HTML standard's parser and its reconnection: `retry`,
// `Last-Event-ID`, readyState, an HTTP error or a wrong content type ends it for good), with
// one difference that makes a 10k-event history cheap: the events of each chunk read from the
// network are handed over in one call, not dispatched one DOM event at a time.

export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSED = 2;

/** EventSource's reconnection time until the server sends `retry:`. */
const DEFAULT_RETRY_MS = 3000;

/**
 * Opens `url` at once and reads it until `close()`.
 * @param {string} url
 * @param {object} on
 * @param {(events: {type: string, data: string, id: string}[]) => void} on.events the events of
 *   one chunk, in order (`type` is 'message' unless the server named it with `event:`)
 * @param {(failure: {data?: string}) => void} on.error as EventSource's 'error': the stream
 *   dropped (readyState CONNECTING, it reconnects after `retry`) or failed for good (CLOSED)
 */
export class EventStream {
  constructor(url, on) {
    this.url = url;
    this.on = on;
    this.readyState = CONNECTING;
    this.lastEventId = '';
    this.retryMs = DEFAULT_RETRY_MS;
    this.abort = null;
    this.timer = 0;
    this.connect();
  }

  close() {
    this.readyState = CLOSED;
    clearTimeout(this.timer);
    if (this.abort) this.abort.abort();
    this.abort = null;
  }

  async connect() {
    const abort = new AbortController();
    this.abort = abort;
    const headers = { Accept: 'text/event-stream' };
    if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
    let res;
    try {
      res = await fetch(this.url, { headers, cache: 'no-store', credentials: 'same-origin', signal: abort.signal });
    } catch (_) {
      return this.dropped(abort); // a network error: EventSource tries again
    }
    if (abort.signal.aborted) return;
    const type = (res.headers.get('content-type') || '').split(';')[0].trim().toLowerCase();
    if (!res.ok || res.status !== 200 || type !== 'text/event-stream' || !res.body) {
      abort.abort();
      return this.fail();
    }
    this.readyState = OPEN;
    const parser = new Parser(this);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || abort.signal.aborted) break;
        const events = parser.push(value);
        if (events.length && !abort.signal.aborted) this.on.events(events);
      }
    } catch (_) { /* the connection dropped, or close() aborted it */ }
    this.dropped(abort);
  }

  /** The stream ended or broke: reconnect after `retry`, as EventSource does. */
  dropped(abort) {
    if (abort !== this.abort || this.readyState === CLOSED) return;
    this.readyState = CONNECTING;
    this.on.error({});
    if (this.readyState !== CONNECTING) return; // the error handler closed it
    this.timer = setTimeout(() => { if (this.readyState === CONNECTING) this.connect(); }, this.retryMs);
  }

  /** An HTTP error or not an event stream: EventSource gives up. */
  fail() {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    this.abort = null;
    this.on.error({});
  }
}

/** The HTML standard's event stream interpretation, fed with decoded text. */
class Parser {
  constructor(stream) {
    this.stream = stream; // keeps lastEventId and retryMs
    this.rest = '';       // an unfinished line
    this.data = '';
    this.dataSeen = false;
    this.type = '';
    this.idBuffer = stream.lastEventId;
  }

  /** Returns the events completed by `text`. */
  push(text) {
    const out = [];
    let buf = this.rest + text;
    const eol = /\r\n|\r|\n/g;
    let start = 0;
    let m;
    while ((m = eol.exec(buf))) {
      // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
      if (m[0] === '\r' && m.index === buf.length - 1) break;
      this.line(buf.slice(start, m.index), out);
      start = eol.lastIndex;
    }
    this.rest = buf.slice(start);
    buf = '';
    return out;
  }

  line(line, out) {
    if (line === '') return this.dispatch(out);
    if (line.charCodeAt(0) === 58 /* ':' */) return; // a comment (keep-alive)
    const colon = line.indexOf(':');
    let field = line, value = '';
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.charCodeAt(colon + 1) === 32 /* ' ' */ ? line.slice(colon + 2) : line.slice(colon + 1);
    }
    switch (field) {
      case 'data':
        this.data = this.dataSeen ? this.data + '\n' + value : value;
        this.dataSeen = true;
        break;
      case 'event': this.type = value; break;
      case 'id': if (!value.includes('\0')) this.idBuffer = value; break;
      case 'retry': if (/^[0-9]+$/.test(value)) this.stream.retryMs = Number(value); break;
      default: break; // ignored, as the standard says
    }
  }

  dispatch(out) {
    this.stream.lastEventId = this.idBuffer;
    if (this.dataSeen) out.push({ type: this.type || 'message', data: this.data, id: this.idBuffer });
    this.data = '';
    this.dataSeen = false;
    this.type = '';
  }
}
