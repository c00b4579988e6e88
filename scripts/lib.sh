# shellcheck shell=bash
# Helpers shared by scripts/setup, scripts/test and scripts/run. Source it; it
# only defines variables and functions (and makes sure rustup's cargo is on
# PATH), so sourcing it twice is harmless.

# The repository root, whatever the caller's working directory is.
NATTER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Where scripts/setup installs nats-server when the machine has none that is new
# enough (.tools/ is git-ignored). Kept absolute: the node and the tests may run
# with another working directory.
NATTER_LOCAL_NATS="$NATTER_ROOT/.tools/nats/bin/nats-server"

# Debian's wine64 (not on PATH): the Windows agent's system test runs under it.
NATTER_WINE=/usr/lib/wine/wine64

# JetStream features the broker relies on (per-message TTL, subject-mapping
# partitions, ...) need nats-server 2.11 or later.
NATTER_NATS_MIN_MAJOR=2
NATTER_NATS_MIN_MINOR=11

# rustup puts cargo in ~/.cargo/bin, which a non-login shell (CI's) may lack.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
  PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
  export PATH
fi

natter_log() { printf '%s\n' "$*" >&2; }
natter_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Seconds since the epoch with sub-second precision (bash 5's EPOCHREALTIME).
natter_now() { printf '%s' "${EPOCHREALTIME:-$(date +%s)}"; }
# Elapsed seconds since a natter_now value, e.g. "12.3".
natter_since() { awk -v a="$1" -v b="$(natter_now)" 'BEGIN { printf "%.1f", b - a }'; }

# natter_nats_version BIN: prints "2.15.1" for a nats-server binary, or fails.
# (`nats-server --version` prints "nats-server: v2.15.1".)
natter_nats_version() {
  local out
  out="$("$1" --version 2>/dev/null)" || return 1
  [[ $out =~ v?([0-9]+)\.([0-9]+)\.([0-9]+) ]] || return 1
  printf '%s.%s.%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}"
}

# natter_nats_new_enough BIN: succeeds when BIN runs and is >= 2.11.
natter_nats_new_enough() {
  local v major minor
  v="$(natter_nats_version "$1")" || return 1
  IFS=. read -r major minor _ <<<"$v"
  ((major > NATTER_NATS_MIN_MAJOR || (major == NATTER_NATS_MIN_MAJOR && minor >= NATTER_NATS_MIN_MINOR)))
}

# natter_nats_server: prints the nats-server to use — the one on PATH when it is
# new enough, else the one scripts/setup installs under .tools/ — or fails when
# neither is there (run scripts/setup).
natter_nats_server() {
  local p
  if p="$(command -v nats-server 2>/dev/null)" && natter_nats_new_enough "$p"; then
    printf '%s\n' "$p"
  elif [[ -x $NATTER_LOCAL_NATS ]]; then
    printf '%s\n' "$NATTER_LOCAL_NATS"
  else
    return 1
  fi
}
