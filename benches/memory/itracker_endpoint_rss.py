#!/usr/bin/env python3
"""Peak RSS of p4p-itracker under the largest endpoint cost request it accepts.

    python3 benches/memory/itracker_endpoint_rss.py [--itracker target/release/p4p-itracker]

Starts the real binary on a free loopback port (topology-data/abilene.toml), reads VmRSS and
VmHWM from /proc before and after each request, and prints one line per request: a 1 x 1
request (the baseline in the same run), then `max_endpoint_pairs` (1,000 x 1,000 by default)
three times. The answer is read to its end and dropped (the client keeps nothing). Loopback only.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024.0
    return out


def request(base, n_src, n_dst):
    srcs = [f"ipv4:10.{i // 250}.{i % 250}.1" for i in range(n_src)]
    dsts = [f"ipv4:192.{i // 250 % 250}.{i % 250}.2" for i in range(n_dst)]
    body = json.dumps({
        "cost-type": {"cost-metric": "routingcost", "cost-mode": "numerical"},
        "endpoints": {"srcs": srcs, "dsts": dsts},
    }).encode()
    req = urllib.request.Request(base + "/endpointcost/lookup", data=body, headers={
        "Content-Type": "application/alto-endpointcostparams+json",
        "Accept": "application/alto-endpointcost+json,application/alto-error+json",
    })
    started = time.monotonic()
    got = 0
    with urllib.request.urlopen(req, timeout=120) as resp:
        while True:
            chunk = resp.read(1 << 16)
            if not chunk:
                break
            got += len(chunk)
    return got, time.monotonic() - started


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--itracker", default=os.path.join(ROOT, "target/release/p4p-itracker"))
    ap.add_argument("--topology", default=os.path.join(ROOT, "topology-data/abilene.toml"))
    ap.add_argument("--side", type=int, default=1000, help="sources = destinations (default 1000: 10^6 pairs)")
    args = ap.parse_args()
    port = free_port()
    proc = subprocess.Popen([args.itracker, "--bind", f"127.0.0.1:{port}", "--topology", args.topology],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/directory", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("the iTracker did not start")
        print(f"start: VmRSS {status(proc.pid)['VmRSS']:.1f} MiB, VmHWM {status(proc.pid)['VmHWM']:.1f} MiB")
        for side in [1, args.side, args.side, args.side]:
            got, secs = request(base, side, side)
            s = status(proc.pid)
            print(f"{side} x {side}: answer {got / 1e6:.1f} MB in {secs:.2f} s; "
                  f"after: VmRSS {s['VmRSS']:.1f} MiB, VmHWM (peak so far) {s['VmHWM']:.1f} MiB")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
