// The Machine ID / Group ID filter of docs/api.md, for an instant preview while the server is
// asked (the server's answer wins).

/** The filter as the server compares it. */
export const normFilter = (text) => text.trim().toLowerCase();

/**
 * `*` matches any run of characters, dots included; without `*`, the machine ID itself or any
 * ID ending in `.<pattern>` (a group and its subgroups).
 * @returns {(id: string) => boolean}
 */
export function machineFilter(text) {
  const f = normFilter(text);
  if (!f || f === '*') return () => true;
  if (!f.includes('*')) return (id) => { const x = id.toLowerCase(); return x === f || x.endsWith('.' + f); };
  return (id) => glob(f, id.toLowerCase());
}

/** `*`-only glob with backtracking to the last star (linear in practice, no regex blow-up). */
function glob(p, s) {
  let pi = 0; let si = 0; let starP = -1; let starS = 0;
  while (si < s.length) {
    if (pi < p.length && p[pi] === '*') { starP = pi++; starS = si; }
    else if (pi < p.length && p[pi] === s[si]) { pi++; si++; }
    else if (starP >= 0) { pi = starP + 1; si = ++starS; }
    else return false;
  }
  while (pi < p.length && p[pi] === '*') pi++;
  return pi === p.length;
}
