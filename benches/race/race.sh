#!/usr/bin/env bash
# The race, in one command: installs the competitors and tools, builds p4p-tracker and our
# load generator, and runs benches/race/race.py (results in results/race/).
#
#   benches/race/race.sh            # full race: 3 rounds x 20 s per tracker and race (~25 min)
#   benches/race/race.sh --quick    # smoke test: 1 round x 10 s, 100 k torrents (~3 min
#                                   # once the tools are installed)
#   benches/race/race.sh --races udp-aquatic --rounds 5 --tag uring-only
#
# Tools go to $RACE_TOOLS (default ~/.cache/p4p-race), outside the repository:
#   aquatic_udp 0.9.0 (crates.io) twice: io_uring and mio. Its default features do not build
#     --locked on current rustc; `--no-default-features --features mimalloc[,io-uring]` does.
#   aquatic_udp_load_test 0.9.0 (crates.io).
#   opentracker and wrk from Debian (apt-get; needs root). Debian's opentracker is built
#     whitelist-only, so it only runs against our own generator, with its info hashes listed.
#   matplotlib (PyPI) in a virtualenv, for the chart.
# Needs 2+ cores: the tracker is pinned to CPU 0, the load generator to CPU 1. Loopback only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tools="${RACE_TOOLS:-$HOME/.cache/p4p-race}"
mkdir -p "$tools"
export RACE_TOOLS="$tools"

log() { printf '[race.sh] %s\n' "$*" >&2; }

install_aquatic() {
  local root="$1" crate="$2" bin="$3"
  shift 3
  if [[ -x "$root/bin/$bin" ]]; then
    return
  fi
  log "cargo install $crate $* (takes several minutes)"
  CARGO_TARGET_DIR="$tools/target" timeout 3600 \
    cargo install --locked --version 0.9.0 --root "$root" "$crate" "$@"
}

install_aquatic "$tools/aquatic-uring" aquatic_udp aquatic_udp \
  --no-default-features --features mimalloc,io-uring
install_aquatic "$tools/aquatic-mio" aquatic_udp aquatic_udp \
  --no-default-features --features mimalloc
install_aquatic "$tools/aquatic-lt" aquatic_udp_load_test aquatic_udp_load_test

missing=()
command -v opentracker >/dev/null || missing+=(opentracker)
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    log "apt-get install ${missing[*]}"
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "${missing[@]}" >/dev/null
    # The Debian package enables a service; the race starts its own instances.
    if command -v systemctl >/dev/null && systemctl is-active --quiet opentracker 2>/dev/null; then
      systemctl stop opentracker || true
    fi
  else
    log "missing ${missing[*]} (run as root to install them): those contenders are skipped"
  fi
fi

python="$tools/venv/bin/python"
if [[ ! -x "$python" ]] || ! "$python" -c 'import matplotlib' 2>/dev/null; then
  log "python venv with matplotlib"
  python3 -m venv "$tools/venv"
  timeout 900 "$tools/venv/bin/pip" install -q matplotlib
fi

log "cargo build --release -p p4p-tracker -p p4p-benches"
(cd "$repo" && timeout 3600 cargo build --release -q -p p4p-tracker -p p4p-benches)

exec "$python" "$here/race.py" --tools "$tools" "$@"
