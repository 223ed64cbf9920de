#!/usr/bin/env bash
# Profiles a UDP tracker under aquatic_udp_load_test (the race's mix, 2 workers x 1 socket):
# the tracker pinned to CPU 0, the tester to CPU 1, `perf record -e cpu-clock -g` on the tracker
# for 10 s after an 8 s warmup. Writes NAME.txt (perf report: by DSO, self, with children) and,
# when inferno is installed ($RACE_TOOLS/inferno/bin), NAME.svg (a flamegraph).
#
#   benches/race/profile.sh OUTDIR NAME PORT -- TRACKER ARGV...   (the tracker listens on PORT)
#   benches/race/profile.sh results/race p4p 3900 -- target/release/p4p-tracker \
#       --udp-bind 127.0.0.1:3900 --http-bind 127.0.0.1:3901 --udp-workers 1 \
#       --topology benches/race/race-topology.toml --max-numwant 30
#
# PERF_FREQ (default 2000) and PERF_CG (default -g; e.g. "--call-graph dwarf,16384" for stacks
# through inlined code) change the sampling. PROFILE_TMP=DIR keeps perf.data there.
# Needs perf (Debian: linux-perf) and the race's tools (run race.sh once). Loopback only.
set -euo pipefail
out="$1" name="$2" port="$3"
shift 4
tools="${RACE_TOOLS:-$HOME/.cache/p4p-race}"
tester="$tools/aquatic-lt/bin/aquatic_udp_load_test"
tmp="${PROFILE_TMP:-$(mktemp -d)}"
[[ -n "${PROFILE_TMP:-}" ]] || trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

"$tester" -p | sed \
  -e "s/^server_address = .*/server_address = \"127.0.0.1:$port\"/" \
  -e 's/^workers = .*/workers = 2/' -e 's/^duration = .*/duration = 25/' \
  -e 's/^extra_statistics = .*/extra_statistics = false/' \
  -e 's/^sockets_per_worker = .*/sockets_per_worker = 1/' \
  -e 's/^weight_connect = .*/weight_connect = 0/' \
  -e 's/^weight_announce = .*/weight_announce = 100/' \
  -e 's/^weight_scrape = .*/weight_scrape = 1/' >"$tmp/lt.toml"

taskset -c 0 timeout 60 "$@" >"$tmp/tracker.log" 2>&1 &
runner=$!
sleep 0.5
tracker="$(pgrep -P "$runner")"
sleep 1.5
taskset -c 1 timeout 60 "$tester" -c "$tmp/lt.toml" >"$tmp/tester.log" 2>&1 &
tester_pid=$!
sleep 8
timeout 30 perf record -q -e cpu-clock -F ${PERF_FREQ:-2000} ${PERF_CG:--g} -o "$tmp/perf.data" -p "$tracker" -- sleep 10
wait "$tester_pid" || true
kill "$tracker" 2>/dev/null || true
wait "$runner" 2>/dev/null || true

# `head` closes its pipe early: that is not a failure here.
set +o pipefail
{
  echo "# perf record -e cpu-clock -F ${PERF_FREQ:-2000} ${PERF_CG:--g}, 10 s under aquatic_udp_load_test (2 workers), tracker on CPU 0"
  grep -m1 "Average responses per second" "$tmp/tester.log" || true
  echo "# by DSO:"
  perf report -i "$tmp/perf.data" --stdio --no-children --sort dso 2>/dev/null | grep -E '^ +[0-9]'
  echo "# self time by symbol (top 40):"
  perf report -i "$tmp/perf.data" --stdio --no-children --sort dso,symbol -g none 2>/dev/null |
    grep -E '^ +[0-9]' | head -40 | sed 's/ *$//'
  echo "# with children (top 40):"
  perf report -i "$tmp/perf.data" --stdio --children --sort symbol -g none 2>/dev/null |
    grep -E '^ +[0-9]' | head -40 | sed 's/ *$//'
} >"$out/$name.txt"

if [[ -x "$tools/inferno/bin/inferno-collapse-perf" ]]; then
  perf script -i "$tmp/perf.data" 2>/dev/null |
    "$tools/inferno/bin/inferno-collapse-perf" |
    "$tools/inferno/bin/inferno-flamegraph" --title "$name" >"$out/$name.svg"
fi
echo "wrote $out/$name.txt (and $name.svg when inferno is installed)"
