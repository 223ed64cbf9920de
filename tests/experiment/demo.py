#!/usr/bin/env python3
"""See the effect in seconds: simulated announcers, no data transfer.

    python3 tests/experiment/demo.py [--peers 2000] [--numwant 50] [--in-process]

Starts two iTrackers (`p4p-itracker`, ISP A = topology-data/loopback.toml, ISP B =
loopback-isp-b.toml) and two trackers on them (`--policy random` and `--policy p4p`, both
`--alto` on the two iTrackers), all on free 127.0.0.1 ports; then thousands of simulated peers
spread over the PIDs a1 (127.1/16), a2 (127.3/16), b1 (127.2/16) and b2 (127.4/16), each from
its own loopback source address, announce one torrent to both trackers. It prints, per policy,
where the returned peers are (same PID, other PID of the same ISP, other ISP) and the mean
p-distance per returned peer, i.e. the cost a swarm built from those answers would pay.

Everything is on 127.0.0.0/8 of this host (Linux routes all of it to lo: no root, no setup).
The number of requests is fixed (2 per peer) and every request has a 5 s timeout.
With --in-process the trackers read the topology files themselves (no iTracker needed).
"""

import argparse
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from topology import load_topology  # noqa: E402

PIDS = [("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")]


def find_bin(name, explicit):
    for c in (explicit, os.environ.get(f"P4P_{name.split('-')[1].upper()}_BIN"),
              os.path.join(REPO, "target/release", name), os.path.join(REPO, "target/debug", name)):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    sys.exit(f"{name} not found: cargo build --release -p {name} (or pass --{name.split('-')[1]})")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url, what, proc, deadline_s=20):
    end = time.time() + deadline_s
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not answer at {url}")


def bdecode(b, i=0):
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c in (b"l", b"d"):
        i += 1
        items = []
        while b[i:i + 1] != b"e":
            v, i = bdecode(b, i)
            items.append(v)
        return (dict(zip(items[::2], items[1::2])) if c == b"d" else items), i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


def announce(base, src_ip, info_hash, peer_id, left, numwant):
    """One HTTP announce from `src_ip` (a loopback address); returns the peers' IPs."""
    q = urllib.parse.urlencode({"info_hash": info_hash, "peer_id": peer_id, "port": 6881, "uploaded": 0,
                                "downloaded": 0, "left": left, "compact": 1, "numwant": numwant,
                                "event": "started"})
    host, port = base
    s = socket.create_connection((host, port), timeout=5, source_address=(src_ip, 0))
    try:
        s.sendall(f"GET /announce?{q} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    body = data.split(b"\r\n\r\n", 1)[1]
    d, _ = bdecode(body)
    if b"failure reason" in d:
        raise RuntimeError(d[b"failure reason"].decode())
    peers = d.get(b"peers", b"")
    return [socket.inet_ntoa(peers[k:k + 4]) for k in range(0, len(peers) - len(peers) % 6, 6)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", type=int, default=2000)
    ap.add_argument("--numwant", type=int, default=50)
    ap.add_argument("--seed-share", type=float, default=0.1, help="share of peers that are seeders")
    ap.add_argument("--tracker", help="p4p-tracker binary")
    ap.add_argument("--itracker", help="p4p-itracker binary")
    ap.add_argument("--in-process", action="store_true", help="trackers read topology-data/loopback.toml themselves")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if not 1 <= args.peers <= 60000:
        sys.exit("--peers must be in 1..60000")
    tracker = find_bin("p4p-tracker", args.tracker)
    topo = load_topology(os.path.join(REPO, "topology-data/loopback.toml"),
                         os.path.join(REPO, "topology-data/loopback-isp-b.toml"), "a1,a2", "b1,b2")
    procs = []
    logdir = tempfile.mkdtemp(prefix="p4p-demo-")
    try:
        alto = []
        if not args.in_process:
            itracker = find_bin("p4p-itracker", args.itracker)
            for name in ("loopback.toml", "loopback-isp-b.toml"):
                port = free_port()
                p = subprocess.Popen([itracker, "--bind", f"127.0.0.1:{port}", "--topology",
                                      os.path.join(REPO, "topology-data", name)],
                                     stdout=open(os.path.join(logdir, f"itracker-{name}.log"), "w"),
                                     stderr=subprocess.STDOUT)
                procs.append(p)
                url = f"http://127.0.0.1:{port}/directory"
                wait_http(url, f"p4p-itracker ({name})", p)
                alto.append(url)
        trackers = {}
        for policy in ("random", "p4p"):
            port = free_port()
            cmd = [tracker, "--http-bind", f"127.0.0.1:{port}", "--no-udp", "--policy", policy,
                   "--max-numwant", str(max(args.numwant, 1))]
            cmd += sum((["--alto", u] for u in alto), []) if alto else ["--topology", topo["file"]]
            p = subprocess.Popen(cmd, stdout=open(os.path.join(logdir, f"tracker-{policy}.log"), "w"),
                                 stderr=subprocess.STDOUT)
            procs.append(p)
            wait_http(f"http://127.0.0.1:{port}/health", f"p4p-tracker ({policy})", p)
            trackers[policy] = ("127.0.0.1", port)
        for base in trackers.values():  # wait for the first ALTO fetch (bounded)
            end = time.time() + 15
            while time.time() < end:
                try:
                    with urllib.request.urlopen(f"http://{base[0]}:{base[1]}/topology", timeout=1) as r:
                        if b'"loaded": true' in r.read():
                            break
                except OSError:
                    pass
                time.sleep(0.1)

        rng = random.Random(args.seed)
        peers = []
        for i in range(args.peers):
            pid, isp = PIDS[i % len(PIDS)]
            base = topo["pids"][pid]["base"]
            n = i // len(PIDS) + 1
            peers.append(dict(ip=f"{base}.{n // 250}.{n % 250 + 1}", pid=pid, isp=isp,
                              seed=rng.random() < args.seed_share,
                              peer_id=b"-DEMO01-" + rng.randbytes(12)))
        info_hash = rng.randbytes(20)

        def pid_of(ip):
            for name, info in topo["pids"].items():
                if ip.startswith(info["base"] + "."):
                    return name
            return None

        print(f"{args.peers} simulated peers over PIDs a1, a2 (ISP A) and b1, b2 (ISP B), "
              f"{args.seed_share:.0%} seeders, numwant {args.numwant}; "
              f"{'in-process topology' if args.in_process else 'two iTrackers over ALTO'}")
        results = {}
        for policy, base in trackers.items():
            counts = {"same_pid": 0, "same_isp": 0, "other_isp": 0}
            cost = [0.0]
            lock = threading.Lock()
            errors = []

            def one(p):
                try:
                    got = announce(base, p["ip"], info_hash, p["peer_id"], 0 if p["seed"] else 1 << 24, args.numwant)
                except (OSError, RuntimeError, IndexError, ValueError) as e:
                    errors.append(str(e))
                    return
                with lock:
                    for ip in got:
                        q = pid_of(ip)
                        if q is None:
                            continue
                        k = "same_pid" if q == p["pid"] else ("same_isp" if topo["pids"][q]["isp"] == p["isp"] else "other_isp")
                        counts[k] += 1
                        cost[0] += topo["pdistance"](q, p["pid"])  # bytes flow from the returned peer

            t = time.time()
            with ThreadPoolExecutor(max_workers=8) as ex:
                list(ex.map(one, peers))
            n = sum(counts.values())
            results[policy] = dict(counts, n=n, cost=cost[0] / max(1, n), secs=time.time() - t, errors=len(errors))
            if errors:
                print(f"  {policy}: {len(errors)} announces failed, e.g. {errors[0]}")
        print()
        print(f"{'policy':8} {'peers returned':>15} {'same PID':>9} {'same ISP':>9} {'other ISP':>10} {'p-distance/peer':>16} {'time':>6}")
        for policy, r in results.items():
            n = max(1, r["n"])
            print(f"{policy:8} {r['n']:>15} {r['same_pid'] / n:>9.1%} {r['same_isp'] / n:>9.1%} "
                  f"{r['other_isp'] / n:>10.1%} {r['cost']:>16.1f} {r['secs']:>5.1f}s")
        if results["random"]["cost"] > 0:
            saved = 1 - results["p4p"]["cost"] / results["random"]["cost"]
            ro = results["random"]["other_isp"] / max(1, results["random"]["n"])
            po = results["p4p"]["other_isp"] / max(1, results["p4p"]["n"])
            print()
            print(f"p4p: {saved:.0%} less cost (bandwidth-distance product) per returned peer than random; "
                  f"inter-ISP share {ro:.0%} -> {po:.0%}"
                  + (f" ({ro / po:.1f}x fewer)" if po > 0 else ""))
            print("(p-distances: same PID {same}, other PID of the ISP {isp}, other ISP {far}, from the topology "
                  "files' [defaults])".format(same=topo["pdistance"]("a1", "a1"), isp=topo["pdistance"]("a1", "a2"),
                                              far=topo["pdistance"]("a1", "b1")))
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
