#!/usr/bin/env python3
"""One tracker node with replication on against the same binary with the memory store alone.

Alternating rounds, same binary, loopback only, node A under the full `udp_load`:
- `memory`: A alone.
- `cluster`: A with `--cluster` on a redis-server, publishing its deltas, while another node's
  deltas arrive in the stream at `--peer-rate` deltas/s (a stand-in node, this script, appends
  batches in the tracker's wire form every 100 ms), which A applies.
- `two-nodes` (with `--two-nodes`): A and B, both with `--cluster` and each under the full
  `udp_load`: what the pair answers against A alone.
Prints per round A's responses/s and CPU seconds (so responses per CPU second too: on a
machine with fewer cores than busy threads, responses/s measure the scheduler's share as much
as the cost), the ratios of the medians, and Redis CPU per replicated delta (INFO cpu).

    benches/cluster/cluster_bench.py --tracker target/release/p4p-tracker \
        --load target/release/udp_load --rounds 3 --seconds 12
"""

import argparse
import json
import os
import random
import signal
import struct
import threading
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_info(port, section):
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "INFO", section],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout
    info = {}
    for line in out.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            info[k] = v.strip()
    return info


def redis_cpu(port):
    i = redis_info(port, "cpu")
    return float(i["used_cpu_sys"]) + float(i["used_cpu_user"])


def commandstats(port):
    stats = {}
    for k, v in redis_info(port, "commandstats").items():
        fields = dict(f.split("=") for f in v.split(","))
        stats[k.removeprefix("cmdstat_")] = (int(fields["calls"]), int(fields["usec"]))
    return stats


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def stand_in_node(port, rate, stop):
    """Appends another node's batches (wire form of tracker/src/cluster/delta.rs) at `rate`
    deltas/s: random IPv4 peers over 100 k torrents, expiring 30 min after sending."""
    rng = random.Random(7)
    per_batch = max(1, rate // 10)
    hashes = [rng.randbytes(20) for _ in range(100_000)]
    sock = socket.create_connection(("127.0.0.1", port))
    reply = sock.makefile("rb")
    sent = 0
    next_at = time.time()
    while not stop.is_set():
        expires = int(time.time()) + 1800
        body = bytearray(struct.pack("<BQH", 1, 0xB0B, 1))
        body += bytes([7]) + b"default"
        body += struct.pack("<I", per_batch)
        for _ in range(per_batch):
            body += rng.choice(hashes)
            body += bytes([rng.random() < 0.75])
            body += bytes([127, 8, rng.randrange(256), rng.randrange(1, 255)])
            body += struct.pack(">H", rng.randrange(1024, 65535))
            body += struct.pack("<IH", expires, 0)
        sock.sendall(resp("XADD", "p4p:{bench}:deltas", "MINID", "~",
                          (int(time.time()) - 1800) * 1000, "*", "n", 0xB0B, "d", bytes(body)))
        reply.readline()
        sent += per_batch
        next_at += 0.1
        time.sleep(max(0.0, next_at - time.time()))
    sock.close()
    return sent


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_tracker(binary, udp_port, ops_port, cluster):
    args = [binary, "--no-http", "--udp-bind", f"127.0.0.1:{udp_port}", "--udp-workers", "1",
            "--ops-bind", f"127.0.0.1:{ops_port}"]
    if cluster:
        args += ["--cluster", cluster, "--cluster-name", "bench"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", ops_port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if b" 200 " in s.recv(100):
                    return p
        except OSError:
            pass
        time.sleep(0.1)
    p.kill()
    sys.exit(f"tracker on {udp_port} not healthy within 20 s")


def summary(stdout):
    for line in stdout.splitlines():
        if '"kind":"summary"' in line:
            return json.loads(line)
    sys.exit("udp_load printed no summary")


def round_(a, mode, redis_port):
    cluster = f"redis://127.0.0.1:{redis_port}/" if mode != "memory" else None
    subprocess.run(["redis-cli", "-p", str(redis_port), "FLUSHALL"], check=True,
                   capture_output=True, timeout=10)
    ports = [free_port() for _ in range(4)]
    node = start_tracker(a.tracker, ports[0], ports[1], cluster)
    other = start_tracker(a.tracker, ports[2], ports[3], cluster) if mode == "two-nodes" else None
    stop = threading.Event()
    stand_in = None
    if mode == "cluster" and a.peer_rate > 0:
        stand_in = threading.Thread(target=stand_in_node, args=(redis_port, a.peer_rate, stop))
        stand_in.start()
    cpu0, rcpu0, st0 = cpu_seconds(node.pid), redis_cpu(redis_port), commandstats(redis_port)
    common = ["--duration", str(a.seconds), "--warmup", "0"]
    second = None
    if other:
        second = subprocess.Popen(
            [a.load, "--server", f"127.0.0.1:{ports[2]}", "--seed", "2"] + common,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    full = subprocess.run(
        [a.load, "--server", f"127.0.0.1:{ports[0]}"] + common,
        capture_output=True, text=True, timeout=a.seconds + 60)
    cpu1, rcpu1, st1 = cpu_seconds(node.pid), redis_cpu(redis_port), commandstats(redis_port)
    second_rps = summary(second.communicate(timeout=60)[0])["responses_per_s"] if second else 0
    stop.set()
    if stand_in:
        stand_in.join()
    for p in (node, other):
        if p:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=20)
    s = summary(full.stdout)
    rps = s["responses_per_s"]
    replicated = (rps + second_rps + (a.peer_rate if stand_in else 0)) * a.seconds
    return {
        "mode": mode,
        "responses_per_s": rps,
        "other_node_responses_per_s": second_rps,
        "node_cpu_s": cpu1 - cpu0,
        "responses_per_cpu_s": rps * a.seconds / max(cpu1 - cpu0, 1e-9),
        "redis_cpu_us_per_delta": (rcpu1 - rcpu0) / replicated * 1e6 if cluster else None,
        # commandstats: (calls, usec inside Redis) per command during the run
        "commands": {k: (v[0] - st0.get(k, (0, 0))[0], v[1] - st0.get(k, (0, 0))[1])
                     for k, v in st1.items() if k.startswith("x")},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracker", default="target/release/p4p-tracker")
    ap.add_argument("--load", default="target/release/udp_load")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--peer-rate", type=int, default=20000,
                    help="deltas/s of the stand-in other node in `cluster` rounds")
    ap.add_argument("--two-nodes", action="store_true", help="add two-node rounds")
    a = ap.parse_args()
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    modes = ["memory", "cluster"] + (["two-nodes"] if a.two_nodes else [])
    try:
        time.sleep(0.5)
        rows = []
        for r in range(a.rounds):
            order = modes if r % 2 == 0 else list(reversed(modes))
            for mode in order:
                row = round_(a, mode, redis_port)
                row["round"] = r
                print(json.dumps(row), flush=True)
                rows.append(row)

        def med(mode, key):
            return statistics.median(x[key] for x in rows if x["mode"] == mode)

        out = {"kind": "summary", "peer_rate": a.peer_rate}
        for mode in modes:
            out[f"{mode}_responses_per_s"] = med(mode, "responses_per_s")
            out[f"{mode}_responses_per_cpu_s"] = med(mode, "responses_per_cpu_s")
        out["ratio_cluster_over_memory"] = out["cluster_responses_per_s"] / out["memory_responses_per_s"]
        out["ratio_per_cpu_cluster_over_memory"] = (
            out["cluster_responses_per_cpu_s"] / out["memory_responses_per_cpu_s"])
        out["redis_cpu_us_per_delta"] = med("cluster", "redis_cpu_us_per_delta")
        if a.two_nodes:
            pair = statistics.median(x["responses_per_s"] + x["other_node_responses_per_s"]
                                     for x in rows if x["mode"] == "two-nodes")
            out["two_nodes_total_responses_per_s"] = pair
            out["ratio_two_nodes_over_one_memory_node"] = pair / out["memory_responses_per_s"]
        print(json.dumps(out))
    finally:
        redis.kill()
        redis.wait()


if __name__ == "__main__":
    main()
