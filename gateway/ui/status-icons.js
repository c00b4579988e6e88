// Check-in status icons (F10): one inline SVG per state, distinct in shape and not only in colour,
// always with a text label for screen readers. Colours come from app.css (.st-<status>); every
// shape is drawn in `currentColor`. Built with DOM calls, never from HTML strings.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** The 8 states in the help page's order of importance (F10 in docs/features.md), with its wording and a short name. */
export const STATUSES = [
  { key: 'never_checked_in', short: 'Never checked in', label: 'Agent has never checked in' },
  { key: 'waiting_first_audit', short: 'Waiting for first audit', label: 'Online but waiting for first audit to complete' },
  { key: 'online', short: 'Online', label: 'Agent online' },
  { key: 'user', short: 'User logged on', label: 'Agent online and user currently logged on' },
  { key: 'idle', short: 'User idle', label: 'Agent online and user currently logged on, but user not active for 10 minutes' },
  { key: 'offline', short: 'Offline', label: 'Agent is currently offline' },
  { key: 'remote_disabled', short: 'Remote control disabled', label: 'Agent is online but remote control has been disabled' },
  { key: 'suspended', short: 'Suspended', label: 'The agent has been suspended' },
];
const BY_KEY = new Map(STATUSES.map((s) => [s.key, s]));

const STROKE = { fill: 'none', stroke: 'currentColor', 'stroke-width': '1.6', 'stroke-linecap': 'round', 'stroke-linejoin': 'round' };
const FILL = { fill: 'currentColor' };

// Shapes on a 16×16 grid: [tag, attributes].
const SHAPES = {
  // hollow circle: provisioned, nothing heard yet
  never_checked_in: [
    ['circle', { cx: '8', cy: '8', r: '5.5', ...STROKE }],
  ],
  // hourglass: online, the first audit is still running
  waiting_first_audit: [
    ['path', { d: 'M3.5 1.8h9M3.5 14.2h9', ...STROKE }],
    ['path', { d: 'M4.8 2.6h6.4L8 8zM8 8l3.2 5.4H4.8z', ...FILL }],
  ],
  // filled circle: online
  online: [
    ['circle', { cx: '8', cy: '8', r: '6', ...FILL }],
  ],
  // a person: a user is logged on
  user: [
    ['circle', { cx: '8', cy: '4.6', r: '3', ...FILL }],
    ['path', { d: 'M2.2 15c0-3.6 2.6-6 5.8-6s5.8 2.4 5.8 6z', ...FILL }],
  ],
  // a person with "z": logged on but idle
  idle: [
    ['circle', { cx: '6', cy: '6.4', r: '2.5', ...FILL }],
    ['path', { d: 'M1 15c0-3 2.2-5 5-5s5 2 5 5z', ...FILL }],
    ['path', { d: 'M10.2 1.5h4.3l-4.3 4.6h4.3', ...STROKE, 'stroke-width': '1.4' }],
  ],
  // a cross: offline
  offline: [
    ['path', { d: 'M3.8 3.8l8.4 8.4M12.2 3.8l-8.4 8.4', ...STROKE, 'stroke-width': '2.2' }],
  ],
  // a monitor with a slash: remote control disabled
  remote_disabled: [
    ['rect', { x: '1.5', y: '2.5', width: '13', height: '8.5', rx: '1', ...STROKE, 'stroke-width': '1.4' }],
    ['path', { d: 'M5.5 14.5h5M8 11v3.5', ...STROKE, 'stroke-width': '1.4' }],
    ['path', { d: 'M1.5 15L14.5 1', ...STROKE, 'stroke-width': '1.8' }],
  ],
  // a pause sign in a ring: suspended by an admin
  suspended: [
    ['circle', { cx: '8', cy: '8', r: '6.6', ...STROKE, 'stroke-width': '1.5' }],
    ['rect', { x: '5.4', y: '4.8', width: '1.9', height: '6.4', rx: '.4', ...FILL }],
    ['rect', { x: '8.7', y: '4.8', width: '1.9', height: '6.4', rx: '.4', ...FILL }],
  ],
};
// Anything a newer server might send that this page does not know yet.
const UNKNOWN = [
  ['circle', { cx: '8', cy: '8', r: '5.5', ...STROKE, 'stroke-dasharray': '2 2' }],
];

/** The help page's wording for a status ("Unknown status (x)" for one this page does not know). */
export function statusLabel(status) {
  const s = BY_KEY.get(status);
  return s ? s.label : `Unknown status (${status || 'none'})`;
}

/** A short name for a status, for the Quick View. */
export function statusShort(status) {
  const s = BY_KEY.get(status);
  return s ? s.short : String(status || 'unknown');
}

/** The decorative SVG for a status (aria-hidden: the label is given next to it). */
export function statusSvg(status) {
  const known = Object.hasOwn(SHAPES, status);
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('class', 'st-icon st-' + (known ? status : 'unknown'));
  svg.setAttribute('width', '16');
  svg.setAttribute('height', '16');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  for (const [tag, attrs] of known ? SHAPES[status] : UNKNOWN) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    svg.append(node);
  }
  return svg;
}

/**
 * The status icon of a row: focusable (it opens the Quick View), `role="img"` with the label as
 * its accessible name, and the label again as visually hidden text.
 */
export function statusIcon(status) {
  const wrap = document.createElement('span');
  wrap.className = 'status';
  wrap.setAttribute('role', 'img');
  wrap.tabIndex = 0;
  const text = document.createElement('span');
  text.className = 'visually-hidden';
  wrap.append(statusSvg(status), text);
  setStatusIcon(wrap, status);
  return wrap;
}

/** Point an existing icon at a (new) status, in place (keeps focus and the Quick View anchor). */
export function setStatusIcon(wrap, status) {
  if (wrap.dataset.status === status) return;
  const label = statusLabel(status);
  wrap.dataset.status = status;
  wrap.setAttribute('aria-label', label);
  wrap.querySelector('svg').replaceWith(statusSvg(status));
  wrap.querySelector('.visually-hidden').textContent = label;
}

/** Fill a list element with the legend: every icon with the help page's wording. */
export function renderLegend(list) {
  list.replaceChildren(...STATUSES.map((s) => {
    const li = document.createElement('li');
    li.dataset.status = s.key;
    const text = document.createElement('span');
    text.textContent = s.label;
    li.append(statusSvg(s.key), text);
    return li;
  }));
}
