#!/usr/bin/env python3
"""The race: p4p-tracker against aquatic_udp and opentracker, side by side.

Run through race.sh (it installs the tools first). Every tracker runs in turn, alternating, for
several rounds, pinned with taskset to one core while the load generator is pinned to the
other; everything is on loopback and every process is bounded by a timeout.

Three races:
  udp-aquatic  aquatic_udp_load_test, the aquatic bencher's mix (announce 100 : scrape 1 :
               connect 0, 1 M torrents, 2 M peers, 30 peers per answer): p4p-tracker (p4p),
               aquatic_udp (io_uring and mio). Debian's opentracker is whitelist-only and the
               tester's info hashes are unknown, so opentracker is not in this race.
  udp-own      our generator (benches/src/bin/udp_load.rs), many source addresses over the
               loopback PIDs, whitelisted info hashes: p4p-tracker (p4p), p4p-tracker (random),
               opentracker (Debian, whitelist) and aquatic_udp (io_uring).
  http         wrk, keep-alive, varying info_hash and port: p4p-tracker and opentracker.

With --topology FILE, the udp-own race adds 'p4p-tracker p4p big-map': the same p4p run with
FILE as its map (the generator classifies its returned peers with FILE too). For an ISP-scale
map whose PIDs hold the generator's source networks (issue 17):
  target/release/synthetic_isp --pids 2000 --prefixes 250000 \
      --loopback-nets 127.1.0,127.3.0,127.2.0,127.4.0,127.5.0 -o /tmp/isp-2000.toml

Measured per run: responses/s over the counted part of the run (after the warmup), the
tracker's own CPU time per answer (utime+stime of the tracker process from /proc over the same
window), peers per announce answer, peak RSS (VmHWM) and, for udp-own, the share of returned
peers in the requester's own PID / ISP.
"""

import argparse
import csv
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
TRACKER_CPU = "0"
LOADGEN_CPU = "1"
HOST = "127.0.0.1"


# ---------------------------------------------------------------- /proc


def proc_cpu_seconds(pid):
    """utime + stime of every thread of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- trackers


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind((HOST, 0))
        port = u.getsockname()[1]
        try:
            t.bind((HOST, port))
        except OSError:
            return free_port()
        return port


def udp_ready(port, timeout=30.0):
    """True once the tracker answers a BEP 15 connect on `port`."""
    deadline = time.time() + timeout
    packet = struct.pack(">QII", 0x41727101980, 0, 12345)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.time() < deadline:
            try:
                s.sendto(packet, (HOST, port))
                data, _ = s.recvfrom(64)
                if len(data) >= 16:
                    return True
            except OSError:
                time.sleep(0.1)
    return False


def tcp_ready(port, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Tracker:
    """One tracker process, pinned to TRACKER_CPU."""

    def __init__(self, name, argv, workdir, log):
        self.name = name
        self.argv = ["taskset", "-c", TRACKER_CPU] + argv
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self):
        return self.proc.pid

    def cpu(self):
        return proc_cpu_seconds(self.pid)

    def peak_rss_mb(self):
        return proc_status_kb(self.pid, "VmHWM") / 1024

    def rss_mb(self):
        return proc_status_kb(self.pid, "VmRSS") / 1024

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def quotas_off(binary):
    """Config lines turning per-source quotas off, for a binary that has them: the load
    generators announce from a few loopback addresses (aquatic's from one), which the default
    quotas would refuse. Older binaries (an A/B baseline) would refuse the unknown fields."""
    printed = subprocess.run([str(binary), "--print-config"], capture_output=True, text=True,
                             timeout=60).stdout
    if "max_peers_per_source" not in printed:
        return ""
    return "[swarm]\nnew_torrents_per_source = 0\nmax_peers_per_source = 0\n"


def start_p4p(cfg, tmp, log, udp_port, http_port, policy, topology, binary=None):
    argv = [
        str(binary or cfg.p4p_tracker),
        "--udp-bind", f"{HOST}:{udp_port}",
        "--http-bind", f"{HOST}:{http_port}",
        "--udp-workers", str(cfg.p4p_udp_workers),
        "--policy", policy,
        "--topology", str(topology),
        "--max-numwant", "30",
    ]
    conf = tmp / "p4p.toml"
    conf.write_text(f"[http]\nworkers = {cfg.p4p_http_workers}\n" + quotas_off(binary or cfg.p4p_tracker))
    argv += ["--config", str(conf)]
    env_log = {"RUST_LOG": "warn"}
    os.environ.update(env_log)
    return Tracker(f"p4p-tracker ({policy})", argv, tmp, log)


def start_aquatic(cfg, tmp, log, udp_port, flavour):
    binary = cfg.aquatic_uring if flavour == "io_uring" else cfg.aquatic_mio
    text = subprocess.run(
        [str(binary), "-p"], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    text = re.sub(r'(?m)^address = ".*"$', f'address = "{HOST}:{udp_port}"', text)
    text = re.sub(r"(?m)^socket_workers = \d+$", "socket_workers = 1", text)
    text = re.sub(r"(?m)^max_response_peers = \d+$", "max_response_peers = 30", text)
    if flavour == "io_uring":
        text = re.sub(r"(?m)^use_io_uring = \w+$", "use_io_uring = true", text)
    conf = tmp / f"aquatic-{flavour}.toml"
    conf.write_text(text)
    return Tracker(f"aquatic_udp ({flavour})", [str(binary), "-c", str(conf)], tmp, log)


def start_opentracker(cfg, tmp, log, udp_port, http_port, whitelist):
    conf = tmp / "opentracker.conf"
    lines = [
        f"listen.udp {HOST}:{udp_port}",
        f"listen.tcp {HOST}:{http_port}",
        f"listen.udp.workers {cfg.opentracker_udp_workers}",
        f"tracker.rootdir {tmp}",
    ]
    if whitelist:
        # opentracker chroots into tracker.rootdir (when root) before it reads the list.
        # It also drops to an unprivileged user: the directory and list must be readable.
        shutil.copy(whitelist, tmp / "whitelist.txt")
        os.chmod(tmp, 0o755)
        os.chmod(tmp / "whitelist.txt", 0o644)
        inside = "/whitelist.txt" if os.geteuid() == 0 else str(tmp / "whitelist.txt")
        lines.append(f"access.whitelist {inside}")
    conf.write_text("\n".join(lines) + "\n")
    return Tracker("opentracker (debian)", [cfg.opentracker, "-f", str(conf)], tmp, log)


# ---------------------------------------------------------------- load generators


class Sampler:
    """Reads a load generator's stdout line by line and samples the tracker's CPU time at
    every interval report, so that CPU and responses cover the same window."""

    def __init__(self, tracker, argv, log, timeout):
        self.tracker = tracker
        self.samples = []  # (time, tracker cpu seconds, line)
        self.lines = []
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            ["timeout", "-k", "5", str(int(timeout)), "taskset", "-c", LOADGEN_CPU] + argv,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )

    def read(self, is_report):
        for line in self.proc.stdout:
            now = time.time()
            cpu = self.tracker.cpu() if self.tracker.alive() else float("nan")
            self.lines.append((now, line.rstrip("\n")))
            self.log.write(f"{now:.3f} {line}")
            if is_report(line):
                self.samples.append((now, cpu, len(self.lines) - 1))
        self.proc.wait()
        self.log.close()
        return self.proc.returncode


def run_aquatic_tester(cfg, tracker, port, tmp, log):
    """Returns (responses/s, cpu us/answer, peers/answer, requests/s) over the counted part."""
    text = subprocess.run(
        [str(cfg.aquatic_load_test), "-p"], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    subs = {
        "server_address": f'"{HOST}:{port}"',
        "workers": str(cfg.tester_workers),
        "duration": str(cfg.duration),
        "summarize_last": "0",
        "announce_peers_wanted": "30",
        "weight_connect": "0",
        "weight_announce": "100",
        "weight_scrape": "1",
        "number_of_torrents": str(cfg.torrents),
        "number_of_peers": str(cfg.peers),
        "extra_statistics": "false",
        "peer_histogram": "false",
        # One socket per worker: the tester asks for every socket's connection id from its
        # first socket, and a tracker that binds connection ids to the source port (as
        # p4p-tracker does) would answer three requests in four with an error.
        "sockets_per_worker": "1",
    }
    for k, v in subs.items():
        text = re.sub(rf"(?m)^{k} = .*$", f"{k} = {v}", text)
    conf = tmp / "load-test.toml"
    conf.write_text(text)
    s = Sampler(
        tracker,
        [str(cfg.aquatic_load_test), "-c", str(conf)],
        log,
        cfg.duration + 60,
    )
    s.read(lambda line: line.startswith("Requests out:"))
    # Each report: "Requests out: X/second", "Responses in: Y/second", ...,
    # "Peers per announce response: Z". The first report after the warmup opens the window.
    reports = []
    for t, cpu, idx in s.samples:
        block = [l for _, l in s.lines[idx : idx + 12]]
        req = float(re.search(r"Requests out: ([\d.]+)", block[0]).group(1))
        resp = next(float(m.group(1)) for l in block if (m := re.search(r"Responses in: ([\d.]+)", l)))
        ann = next(float(m.group(1)) for l in block if (m := re.search(r"Announce responses: ([\d.]+)", l)))
        err = next(float(m.group(1)) for l in block if (m := re.search(r"Error responses: +([\d.]+)", l)))
        peers = next((float(m.group(1)) for l in block if (m := re.search(r"Peers per announce response: ([\d.]+)", l))), float("nan"))
        reports.append(dict(t=t, cpu=cpu, requests=req, responses=resp, announce=ann, error=err, peers=peers))
    return summarize(reports, cfg.warmup)


def summarize(reports, warmup):
    """Reports are interval ends (t, cpu) with per-second rates of the interval just ended."""
    if len(reports) < 2:
        raise RuntimeError(f"only {len(reports)} interval reports: the run was too short")
    t0 = reports[0]["t"] - (reports[1]["t"] - reports[0]["t"])  # start of the first interval
    first = next(
        (i for i, r in enumerate(reports) if r["t"] - t0 >= warmup and i < len(reports) - 1),
        len(reports) - 2,
    )
    window = reports[first + 1 :]
    secs = window[-1]["t"] - reports[first]["t"]
    answers = sum(r["responses"] * (r["t"] - p["t"]) for p, r in zip(reports[first:], window))
    announces = sum(r["announce"] * (r["t"] - p["t"]) for p, r in zip(reports[first:], window))
    errors = sum(r["error"] * (r["t"] - p["t"]) for p, r in zip(reports[first:], window))
    cpu = window[-1]["cpu"] - reports[first]["cpu"]
    peers_w = sum(r["peers"] * r["announce"] for r in window if r["peers"] == r["peers"])
    out = dict(
        responses_per_s=answers / secs,
        requests_per_s=statistics.mean(r["requests"] for r in window),
        cpu_us_per_answer=cpu / answers * 1e6 if answers else float("nan"),
        cpu_share=cpu / secs,
        peers_per_answer=peers_w / max(1e-9, sum(r["announce"] for r in window)),
        counted_secs=secs,
        announces=announces,
        error_share=errors / answers if answers else float("nan"),
    )
    for key in ("same_pid_share", "same_isp_share", "mean_cost"):
        vals = [(r[key], r["announce"]) for r in window if r.get(key) is not None]
        if vals:
            out[key] = sum(v * w for v, w in vals) / max(1e-9, sum(w for _, w in vals))
    return out


def run_own_generator(cfg, tracker, port, log, topology):
    argv = [
        str(cfg.udp_load),
        "--server", f"{HOST}:{port}",
        "--duration", str(cfg.duration),
        "--warmup", str(cfg.warmup),
        "--torrents", str(cfg.torrents),
        "--peers", str(cfg.peers),
        "--topology", str(topology),
        "--seed", "1",
    ]
    s = Sampler(tracker, argv, log, cfg.duration + 60)
    s.read(lambda line: line.startswith('{"kind":"interval"'))
    reports = []
    for t, cpu, idx in s.samples:
        j = json.loads(s.lines[idx][1])
        reports.append(
            dict(
                t=t,
                cpu=cpu,
                requests=j["sent"] / max(1e-9, j["secs"]),
                responses=j["responses_per_s"],
                announce=j["announce"] / max(1e-9, j["secs"]),
                error=j["error"] / max(1e-9, j["secs"]),
                peers=j["peers_per_announce"],
                same_pid_share=j["same_pid_share"],
                same_isp_share=j["same_isp_share"],
                mean_cost=j["mean_cost"],
            )
        )
    return summarize(reports, cfg.warmup)


def run_fill(cfg, tracker, port, log):
    """Announces every one of the race's peers once (our generator, --one-pass), then reads the
    tracker's memory: what holding `cfg.peers` peers over `cfg.torrents` torrents costs."""
    base = tracker.rss_mb()
    argv = [
        str(cfg.udp_load),
        "--server", f"{HOST}:{port}",
        "--duration", str(max(60, cfg.peers // 20_000)),
        "--warmup", "0",
        "--torrents", str(cfg.torrents),
        "--peers", str(cfg.peers),
        "--one-pass",
        "--seed", "1",
    ]
    s = Sampler(tracker, argv, log, max(60, cfg.peers // 20_000) + 60)
    s.read(lambda line: line.startswith('{"kind":"summary"'))
    summary = json.loads(s.lines[s.samples[-1][2]][1]) if s.samples else {}
    time.sleep(1.0)
    rss = tracker.rss_mb()
    announces = summary.get("announce", 0)
    return dict(
        responses_per_s=summary.get("responses_per_s", float("nan")),
        peers_per_answer=summary.get("peers_per_announce", float("nan")),
        fill_announces=announces,
        base_rss_mb=base,
        bytes_per_peer=(rss - base) * 1024 * 1024 / cfg.peers,
    )


def run_wrk(cfg, tracker, port, log, hashes_file):
    """wrk with keep-alive; CPU over the whole wrk run (after a 1 s unmeasured warmup run)."""
    script = HERE / "announce.lua"
    base = ["taskset", "-c", LOADGEN_CPU, cfg.wrk, "-t1", f"-c{cfg.http_connections}", "-s", str(script)]
    url = f"http://{HOST}:{port}/announce"
    env = dict(os.environ, RACE_HASHES=str(hashes_file))
    subprocess.run(["timeout", "30"] + base + ["-d1s", url], env=env, capture_output=True, timeout=40)
    t0, c0 = time.time(), tracker.cpu()
    out = subprocess.run(
        ["timeout", "-k", "5", str(cfg.duration + 30)] + base + [f"-d{cfg.duration}s", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=cfg.duration + 60,
    )
    t1, c1 = time.time(), tracker.cpu()
    Path(log).write_text(out.stdout + out.stderr)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))
    total = int(re.search(r"(\d+) requests in", out.stdout).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    peers = http_peers_probe(port, hashes_file)
    return dict(
        responses_per_s=rps,
        requests_per_s=rps,
        cpu_us_per_answer=(c1 - c0) / total * 1e6 if total else float("nan"),
        cpu_share=(c1 - c0) / (t1 - t0),
        peers_per_answer=peers,
        counted_secs=t1 - t0,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
    )


def http_peers_probe(port, hashes_file, n=50):
    """Mean compact IPv4 peers in answers for the first `n` hashes (the busiest in the wrk mix),
    asked by a fresh peer with numwant=30."""
    import urllib.request

    counts = []
    with open(hashes_file) as f:
        hexes = [next(f).strip() for _ in range(n)]
    for i, h in enumerate(hexes):
        q = "".join("%" + h[k : k + 2] for k in range(0, 40, 2))
        url = (f"http://{HOST}:{port}/announce?info_hash={q}&peer_id=-PROBE-{i:013d}"
               f"&port={60000 + i}&uploaded=0&downloaded=0&left=100&compact=1&numwant=30")
        try:
            body = urllib.request.urlopen(url, timeout=5).read()
        except OSError:
            continue
        m = re.search(rb"5:peers(\d+):", body)
        if m:
            counts.append(int(m.group(1)) / 6)
    return statistics.mean(counts) if counts else float("nan")


# ---------------------------------------------------------------- the race


def contenders(race, cfg):
    """(label, starter) pairs for one race; starters take (tmp, log, udp_port, http_port)."""
    race_topology = HERE / "race-topology.toml"
    loopback = REPO / "topology-data" / "loopback.toml"
    wl = cfg.whitelist
    out = []
    if race == "udp-aquatic":
        out.append(("p4p-tracker p4p", lambda t, l, u, h: start_p4p(cfg, t, l, u, h, "p4p", race_topology)))
        if cfg.aquatic_uring:
            out.append(("aquatic_udp io_uring", lambda t, l, u, h: start_aquatic(cfg, t, l, u, "io_uring")))
        if cfg.aquatic_mio:
            out.append(("aquatic_udp mio", lambda t, l, u, h: start_aquatic(cfg, t, l, u, "mio")))
    elif race == "udp-own":
        out.append(("p4p-tracker p4p", lambda t, l, u, h: start_p4p(cfg, t, l, u, h, "p4p", loopback)))
        if cfg.topology:
            out.append((BIG_MAP, lambda t, l, u, h: start_p4p(cfg, t, l, u, h, "p4p", cfg.topology)))
        out.append(("p4p-tracker random", lambda t, l, u, h: start_p4p(cfg, t, l, u, h, "random", loopback)))
        if cfg.opentracker:
            out.append(("opentracker debian-whitelist", lambda t, l, u, h: start_opentracker(cfg, t, l, u, h, wl)))
        if cfg.aquatic_uring:
            out.append(("aquatic_udp io_uring", lambda t, l, u, h: start_aquatic(cfg, t, l, u, "io_uring")))
    elif race == "memory":
        out.append(("p4p-tracker p4p", lambda t, l, u, h: start_p4p(cfg, t, l, u, h, "p4p", loopback)))
        if cfg.opentracker:
            out.append(("opentracker debian-whitelist", lambda t, l, u, h: start_opentracker(cfg, t, l, u, h, wl)))
        if cfg.aquatic_uring:
            out.append(("aquatic_udp io_uring", lambda t, l, u, h: start_aquatic(cfg, t, l, u, "io_uring")))
    elif race == "http":
        out.append(("p4p-tracker p4p", lambda t, l, u, h: start_p4p(cfg, t, l, u, h, "p4p", loopback)))
        if cfg.opentracker:
            out.append(("opentracker debian-whitelist", lambda t, l, u, h: start_opentracker(cfg, t, l, u, h, wl)))
    if cfg.baseline_bin and race in ("udp-aquatic", "udp-own"):
        # The A/B contender: the same p4p run with another binary, right after p4p-tracker p4p.
        topology = race_topology if race == "udp-aquatic" else loopback
        out.insert(1, ("p4p-tracker baseline p4p", lambda t, l, u, h: start_p4p(
            cfg, t, l, u, h, "p4p", topology, cfg.baseline_bin)))
    return out


def one_run(cfg, race, label, starter, round_no, rawdir):
    tmp = Path(tempfile.mkdtemp(prefix="race-"))
    stem = f"{race}-r{round_no}-{label.replace(' ', '_')}"
    udp_port, http_port = free_port(), free_port()
    tracker = starter(tmp, rawdir / f"{stem}.tracker.log", udp_port, http_port)
    try:
        ready = tcp_ready(http_port) if race == "http" else udp_ready(udp_port)
        if not ready or not tracker.alive():
            raise RuntimeError(f"{label} did not start (see {stem}.tracker.log)")
        gen_log = rawdir / f"{stem}.loadgen.log"
        if race == "udp-aquatic":
            res = run_aquatic_tester(cfg, tracker, udp_port, tmp, gen_log)
        elif race == "udp-own":
            res = run_own_generator(cfg, tracker, udp_port, gen_log, topology_for(label, cfg))
        elif race == "memory":
            res = run_fill(cfg, tracker, udp_port, gen_log)
        else:
            res = run_wrk(cfg, tracker, http_port, gen_log, cfg.whitelist)
        res["peak_rss_mb"] = tracker.peak_rss_mb()
        res["rss_mb"] = tracker.rss_mb()
        if not tracker.alive():
            raise RuntimeError(f"{label} died during the run")
        return res
    finally:
        tracker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


BIG_MAP = "p4p-tracker p4p big-map"


def topology_for(label, cfg=None):
    """The map udp_load classifies returned peers with: the contender's own."""
    if label == BIG_MAP and cfg is not None and cfg.topology:
        return cfg.topology
    return REPO / "topology-data" / "loopback.toml"


def median(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few seconds per run, one round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=20, help="seconds per run")
    ap.add_argument("--warmup", type=int, default=5, help="seconds left out of every run")
    ap.add_argument("--races", default="udp-aquatic,udp-own,memory,http")
    ap.add_argument("--only", default="", help="comma-separated contender labels to keep (substring match)")
    ap.add_argument("--torrents", type=int, default=1_000_000)
    ap.add_argument("--peers", type=int, default=2_000_000)
    ap.add_argument("--tester-workers", type=int, default=2)
    ap.add_argument("--p4p-udp-workers", type=int, default=1)
    ap.add_argument("--p4p-http-workers", type=int, default=1)
    ap.add_argument("--opentracker-udp-workers", type=int, default=1)
    ap.add_argument("--http-connections", type=int, default=32)
    ap.add_argument("--tools", default=os.environ.get("RACE_TOOLS", str(Path.home() / ".cache" / "p4p-race")))
    ap.add_argument("--p4p-bin", default="", help="p4p-tracker binary (default: target/release)")
    ap.add_argument("--baseline-bin", default="",
                    help="another p4p-tracker binary raced as 'p4p-tracker baseline p4p' (A/B of a change)")
    ap.add_argument("--topology", default="",
                    help="a topology file raced as 'p4p-tracker p4p big-map' in udp-own (see above)")
    ap.add_argument("--out", default=str(REPO / "results" / "race"))
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    cfg = ap.parse_args()
    if cfg.quick:
        cfg.rounds, cfg.duration, cfg.warmup = 1, 10, 5
        cfg.torrents, cfg.peers = min(cfg.torrents, 100_000), min(cfg.peers, 200_000)
    tools = Path(cfg.tools)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release"
    cfg.p4p_tracker = Path(cfg.p4p_bin) if cfg.p4p_bin else target / "p4p-tracker"
    cfg.udp_load = target / "udp_load"
    cfg.baseline_bin = Path(cfg.baseline_bin) if cfg.baseline_bin else None
    cfg.topology = Path(cfg.topology).resolve() if cfg.topology else None
    if cfg.topology and not cfg.topology.is_file():
        sys.exit(f"--topology {cfg.topology}: no such file")
    cfg.aquatic_load_test = tools / "aquatic-lt" / "bin" / "aquatic_udp_load_test"
    cfg.aquatic_uring = tools / "aquatic-uring" / "bin" / "aquatic_udp"
    cfg.aquatic_mio = tools / "aquatic-mio" / "bin" / "aquatic_udp"
    cfg.opentracker = shutil.which("opentracker")
    cfg.wrk = shutil.which("wrk")
    for attr in ("aquatic_uring", "aquatic_mio"):
        if not getattr(cfg, attr).exists():
            print(f"warning: {getattr(cfg, attr)} missing, left out", file=sys.stderr)
            setattr(cfg, attr, None)
    out = Path(cfg.out)
    rawdir = out / "raw"
    rawdir.mkdir(parents=True, exist_ok=True)
    cfg.whitelist = rawdir / "whitelist.txt"
    with open(cfg.whitelist, "w") as f:
        subprocess.run([str(cfg.udp_load), "--print-info-hashes", "--torrents", str(cfg.torrents), "--seed", "1"],
                       stdout=f, check=True, timeout=120)
    races = [r for r in cfg.races.split(",") if r]
    if "udp-aquatic" in races and not cfg.aquatic_load_test.exists():
        print("warning: aquatic_udp_load_test missing: udp-aquatic race skipped", file=sys.stderr)
        races.remove("udp-aquatic")
    if "http" in races and not cfg.wrk:
        races.remove("http")
    rows = []
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    for race in races:
        field = contenders(race, cfg)
        if cfg.only:
            keep = cfg.only.split(",")
            field = [c for c in field if any(k in c[0] for k in keep)]
        for rnd in range(1, cfg.rounds + 1):
            # Alternate: rotate the starting tracker every round so drift in the machine's
            # load does not favour whoever runs first.
            k = (rnd - 1) % len(field)
            for label, starter in field[k:] + field[:k]:
                print(f"[{time.strftime('%H:%M:%S')}] {race} round {rnd}: {label}", flush=True)
                try:
                    res = one_run(cfg, race, label, starter, rnd, rawdir)
                except Exception as e:  # one broken tracker must not stop the race
                    print(f"  failed: {e}", flush=True)
                    res = dict(error=str(e))
                res.update(race=race, round=rnd, tracker=label)
                rows.append(res)
                if "error" not in res:
                    print("  " + ", ".join(f"{k}={v:.4g}" for k, v in res.items() if isinstance(v, float)), flush=True)
    write_results(cfg, out, rows, started)


# ---------------------------------------------------------------- results


COLUMNS = [
    "race", "round", "tracker", "responses_per_s", "requests_per_s", "cpu_us_per_answer", "cpu_share",
    "peers_per_answer", "error_share", "peak_rss_mb", "rss_mb", "same_pid_share", "same_isp_share", "mean_cost",
    "counted_secs", "fill_announces", "base_rss_mb", "bytes_per_peer", "ratio_vs_p4p_responses", "ratio_vs_p4p_cpu", "ratio_vs_p4p_rss", "error",
]


def machine():
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = proc_meminfo_gb()
    return f"{os.cpu_count()} x {model}, {mem:.0f} GB RAM, Linux {os.uname().release}"


def proc_meminfo_gb():
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0


def write_results(cfg, out, rows, started):
    # Per-round ratios: p4p-tracker (p4p) divided by each other tracker of the same round.
    for r in rows:
        ref = next((x for x in rows if x["race"] == r["race"] and x["round"] == r["round"]
                    and x["tracker"] == "p4p-tracker p4p" and "error" not in x), None)
        if ref and "error" not in r and r["tracker"] != "p4p-tracker p4p":
            for key, name in (("responses_per_s", "ratio_vs_p4p_responses"),
                              ("cpu_us_per_answer", "ratio_vs_p4p_cpu"),
                              ("rss_mb", "ratio_vs_p4p_rss")):
                if ref.get(key) and r.get(key):
                    r[name] = ref[key] / r[key]
    tag = f"-{cfg.tag}" if cfg.tag else ""
    with open(out / f"runs{tag}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    summary = []
    for race in dict.fromkeys(r["race"] for r in rows):
        for tracker in dict.fromkeys(r["tracker"] for r in rows if r["race"] == race):
            ok = [r for r in rows if r["race"] == race and r["tracker"] == tracker and "error" not in r]
            if not ok:
                summary.append(dict(race=race, tracker=tracker, runs=0))
                continue
            rps = [r["responses_per_s"] for r in ok]
            s = dict(
                race=race, tracker=tracker, runs=len(ok),
                rps_median=median(rps), rps_min=min(rps), rps_max=max(rps),
                cpu_us_median=median([r.get("cpu_us_per_answer", float("nan")) for r in ok]),
                peers_median=median([r["peers_per_answer"] for r in ok]),
                error_share=median([r.get("error_share", float("nan")) for r in ok]),
                peak_rss_mb_max=max(r["peak_rss_mb"] for r in ok),
                rss_mb_median=median([r["rss_mb"] for r in ok]),
                bytes_per_peer=median([r.get("bytes_per_peer", float("nan")) for r in ok]),
                same_pid_share=median([r.get("same_pid_share", float("nan")) for r in ok]),
                ratio_rps=median([r.get("ratio_vs_p4p_responses", float("nan")) for r in ok]),
                ratio_cpu=median([r.get("ratio_vs_p4p_cpu", float("nan")) for r in ok]),
                ratio_rss=median([r.get("ratio_vs_p4p_rss", float("nan")) for r in ok]),
            )
            summary.append(s)
    keys = ["race", "tracker", "runs", "rps_median", "rps_min", "rps_max", "cpu_us_median", "peers_median",
            "error_share", "peak_rss_mb_max", "rss_mb_median", "bytes_per_peer", "same_pid_share", "ratio_rps", "ratio_cpu", "ratio_rss"]
    with open(out / f"summary{tag}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for s in summary:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in s.items()})
    md = markdown(cfg, summary, started)
    (out / f"summary{tag}.md").write_text(md)
    print(md)
    try:
        chart(out / f"race{tag}.png", summary)
    except Exception as e:  # matplotlib missing: the tables still stand
        print(f"no chart: {e}", file=sys.stderr)


def fmt(v, spec):
    return "-" if v is None or v != v else format(v, spec)


def markdown(cfg, summary, started):
    lines = [
        f"Race of {started}, {machine()}; tracker pinned to CPU {TRACKER_CPU}, load generator to CPU "
        f"{LOADGEN_CPU}; {cfg.rounds} round(s) of {cfg.duration} s, first {cfg.warmup} s not counted; "
        f"{cfg.torrents} torrents, {cfg.peers} peers, 30 peers wanted per announce.",
        "",
        "| race | tracker | runs | responses/s median (min-max) | CPU us/answer | peers/answer | error answers | peak RSS MB | same-PID share | p4p/this responses | p4p/this CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        if s["race"] == "memory":
            continue
        if not s.get("runs"):
            lines.append(f"| {s['race']} | {s['tracker']} | 0 | failed | | | | | | | |")
            continue
        lines.append(
            f"| {s['race']} | {s['tracker']} | {s['runs']} | {s['rps_median']/1000:.1f} k "
            f"({s['rps_min']/1000:.1f}-{s['rps_max']/1000:.1f}) | {fmt(s['cpu_us_median'], '.2f')} | "
            f"{fmt(s['peers_median'], '.1f')} | {fmt(s['error_share'] * 100, '.1f')}% | {s['peak_rss_mb_max']:.0f} | {fmt(s['same_pid_share'], '.2f')} | "
            f"{fmt(s['ratio_rps'], '.3f')} | {fmt(s['ratio_cpu'], '.3f')} |"
        )
    mem = [s for s in summary if s["race"] == "memory"]
    if mem:
        lines += [
            "",
            f"Memory: every one of the {cfg.peers} peers announced once (our generator, "
            f"{cfg.torrents} torrents), then the tracker's resident memory.",
            "",
            "| tracker | runs | RSS after fill MB | bytes per peer (RSS growth) | peak RSS MB | p4p/this RSS |",
            "|---|---|---|---|---|---|",
        ]
        for s in mem:
            if not s.get("runs"):
                lines.append(f"| {s['tracker']} | 0 | failed | | | |")
                continue
            lines.append(
                f"| {s['tracker']} | {s['runs']} | {s['rss_mb_median']:.0f} | "
                f"{fmt(s['bytes_per_peer'], '.0f')} | {s['peak_rss_mb_max']:.0f} | {fmt(s['ratio_rss'], '.2f')} |"
            )
    return "\n".join(lines) + "\n"


def chart(path, summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [s for s in summary if s.get("runs") and s["race"] != "memory"]
    mem = [s for s in summary if s.get("runs") and s["race"] == "memory"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 6))
    panels = [
        (ok, "responses/s (k), median, min-max", [s["rps_median"] / 1000 for s in ok],
         [[(s["rps_median"] - s["rps_min"]) / 1000 for s in ok], [(s["rps_max"] - s["rps_median"]) / 1000 for s in ok]]),
        (ok, "tracker CPU us per answer (lower is better)", [s["cpu_us_median"] for s in ok], None),
        (mem, "RSS MB holding all peers (lower is better)", [s["rss_mb_median"] for s in mem], None),
    ]
    for ax, (rows, title, vals, err) in zip(axes, panels):
        if not rows:
            ax.set_title(title + ": not run", fontsize=10)
            ax.axis("off")
            continue
        colors = ["#d95f02" if "baseline" in s["tracker"] else
                  "#1b9e77" if "p4p-tracker" in s["tracker"] else "#7570b3" for s in rows]
        ax.barh(range(len(rows)), vals, xerr=err, color=colors)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{s['race']}\n{s['tracker']}" for s in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
    fig.suptitle("p4p-tracker vs aquatic_udp vs opentracker (2 cores, loopback)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
