// Times as people read them.

// A page's first use of Intl loads the browser's locale data: 20–60 ms of a fresh renderer's
// main thread, on the way to a chat window's first screen. So the times shown in lists are
// formatted here, and Intl is used only for a tooltip, when it is first wanted.

/** "09:05": a time of day on the 24-hour clock, local time (as in chat apps and logs). */
export function clockTime(d) {
  const h = d.getHours(), m = d.getMinutes();
  return (h < 10 ? '0' : '') + h + ':' + (m < 10 ? '0' : '') + m;
}

let longFormat = null;
/** A full date and time in the reader's language, e.g. for a tooltip. */
export function longTime(d) {
  longFormat ||= new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  return longFormat.format(d);
}

/** "12 s ago", "5 min ago", "3 h ago", "2 d ago". */
export function ago(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

/** "45 s", "12 min", "1 h 5 min". */
export function duration(secs) {
  const s = Math.max(0, Math.floor(secs));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}
