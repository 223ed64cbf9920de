#!/usr/bin/env python3
"""UDP load with the generator's sources spread over 200 PIDs of an ISP-scale map (issue 17).

The race (race.py --topology) puts its five source networks in five PIDs of the big map, so its
swarms span a few PIDs. Here 200 loopback /24s (127.10.0 ... 127.10.199, two sources each) land in
200 access PIDs of a 2,000-PID synthetic ISP, so popular swarms spread over hundreds of PID
buckets and answers come from many PIDs. Contenders, alternating per round, tracker pinned to
CPU 0 and generator to CPU 1, 20,000 torrents, 400,000 peers, numwant 30:
  - NEW on the 2,000-PID map;  - OLD (an earlier build) on the same map;
  - NEW on topology-data/loopback.toml, where every source falls in one PID (the reference).
CPU microseconds per answer: the tracker's utime+stime over the counted window (after the
warmup) divided by the generator's responses in it.

  target/release/synthetic_isp --pids 2000 --prefixes 250000 \\
      --loopback-nets $(python3 -c "print(','.join(f'127.10.{i}' for i in range(200)))") \\
      -o /tmp/isp-spread.toml
  python3 benches/race/spread.py --new target/release/p4p-tracker --old OLD_BINARY \\
      --map /tmp/isp-spread.toml --rounds 3
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NETS = ",".join(f"127.10.{i}" for i in range(200))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def one_run(binary, topology, conf, duration, warmup):
    tracker = subprocess.Popen(
        ["taskset", "-c", "0", str(binary), "--udp-bind", "127.0.0.1:39001",
         "--http-bind", "127.0.0.1:39002", "--policy", "p4p", "--topology", str(topology),
         "--max-numwant", "30", "--config", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        gen = subprocess.Popen(
            ["taskset", "-c", "1", str(REPO / "target/release/udp_load"),
             "--server", "127.0.0.1:39001", "--duration", str(duration), "--warmup", str(warmup),
             "--torrents", "20000", "--peers", "400000", "--nets", NETS, "--ips-per-net", "2",
             "--topology", str(topology), "--seed", "1"],
            stdout=subprocess.PIPE, text=True)
        time.sleep(warmup)
        before = cpu_seconds(tracker.pid)
        time.sleep(duration - warmup)
        after = cpu_seconds(tracker.pid)
        out = gen.communicate(timeout=duration + 60)[0]
    finally:
        tracker.terminate()
        tracker.wait(timeout=30)
    summary = [json.loads(line) for line in out.splitlines() if '"summary"' in line][-1]
    return ((after - before) * 1e6 / max(1, summary["responses"]), summary["responses_per_s"],
            summary["peers_per_announce"], summary["same_pid_share"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new", required=True)
    ap.add_argument("--old", required=True)
    ap.add_argument("--map", required=True, help="the 2,000-PID map (see above)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=14)
    ap.add_argument("--warmup", type=int, default=4)
    a = ap.parse_args()
    conf = Path(tempfile.mkdtemp()) / "quotas-off.toml"
    # One generator announces many peers from each source: per-source quotas off.
    conf.write_text("[swarm]\nnew_torrents_per_source = 0\nmax_peers_per_source = 0\n")
    contenders = [
        ("new, 2,000-PID map, sources in 200 PIDs", a.new, a.map),
        ("old, same map", a.old, a.map),
        ("new, loopback map (sources in one PID)", a.new, REPO / "topology-data/loopback.toml"),
    ]
    results = {label: [] for label, _, _ in contenders}
    for r in range(a.rounds):
        for label, binary, topology in contenders if r % 2 == 0 else contenders[::-1]:
            res = one_run(binary, topology, conf, a.duration, a.warmup)
            results[label].append(res)
            print(f"round {r + 1} {label}: {res[0]:.2f} us/answer, {res[1] / 1e3:.1f} k/s, "
                  f"{res[2]:.1f} peers, same-PID {res[3]:.2f}", flush=True)
    print("| tracker | CPU us/answer (median) | responses/s | peers/answer | same-PID share |")
    print("|---|---|---|---|---|")
    for label, runs in results.items():
        med = [statistics.median(x[i] for x in runs) for i in range(4)]
        print(f"| {label} | {med[0]:.2f} | {med[1] / 1e3:.1f} k | {med[2]:.1f} | {med[3]:.2f} |")


if __name__ == "__main__":
    main()
