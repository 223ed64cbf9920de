#!/usr/bin/python3
"""Runs one swarm of real libtorrent clients (many sessions in this one process).

Started by locality.py, inside the network namespace that holds the clients' addresses:

    /usr/bin/python3 swarm.py CONFIG.json

CONFIG.json (written by locality.py) names the tracker, the torrent, the clients (address, ISP,
PID, seed or leecher, join time), the upload cap and the deadline. This process:

- waits for the tracker's /health, then adds each client at its join time (staggered joins);
- every session is bound to its own loopback address (listen_interfaces + outgoing_interfaces),
  TCP only, DHT/LSD/UPnP/NAT-PMP off, no ut_pex, so the tracker is the only source of peers;
- every session's upload is capped, and every address is moved into the global peer class (by
  default libtorrent puts 127/8 and LAN peers in the unthrottled "local" class);
- samples every client's payload counters each second (to check that the cap held);
- when all its leechers are complete (or at the deadline), hashes every leecher's file with
  SHA-256, writes the result JSON, writes `done_file`, keeps seeding until `stop_file` appears
  (other processes in other namespaces may still be downloading from it) and exits.

Only libtorrent and the standard library are used; nothing but the addresses in CONFIG.json is
ever contacted.
"""

import hashlib
import json
import os
import sys
import time
import urllib.request

import libtorrent as lt

LISTEN_PORT = 6881
CAP_WINDOW = 4  # samples (one per second)


def log(msg):
    print(f"[swarm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_session(ip, cfg):
    settings = {
        "listen_interfaces": f"{ip}:{LISTEN_PORT}",
        "outgoing_interfaces": ip,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_tcp": True,
        "enable_outgoing_tcp": True,
        # All clients share one host (127/8): without this, libtorrent keeps one connection per IP.
        "allow_multiple_connections_per_ip": True,
        # libtorrent asks for 200 peers by default; a swarm smaller than the answer gets
        # everyone under any policy.
        "num_want": int(cfg["numwant"]),
        "announce_to_all_tiers": True,
        "announce_to_all_trackers": True,
        # Honour the tracker's short test intervals (libtorrent's floor is 300 s by default).
        "min_announce_interval": 5,
        "upload_rate_limit": int(cfg["upload_cap"]),
        "download_rate_limit": 0,
        "aio_threads": 2,
        "hashing_threads": 1,
        "alert_mask": lt.alert.category_t.error_notification,
        "user_agent": "p4p-locality-experiment",
        "stop_tracker_timeout": 1,
    }
    ses = lt.session(settings)
    # Every IPv4/IPv6 address into the global class only, so the upload cap applies to the
    # loopback peers too (libtorrent's default filter puts 127/8 in the local, unthrottled class).
    flt = lt.ip_filter()
    flt.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    flt.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1 << lt.session.global_peer_class_id)
    ses.set_peer_class_filter(flt)
    return ses


def wait_tracker(url, deadline):
    last = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError as e:  # connection refused while the tracker starts
            last = e
        time.sleep(0.1)
    raise SystemExit(f"tracker not healthy at {url}: {last}")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def main():
    cfg = json.load(open(sys.argv[1]))
    ti = lt.torrent_info(cfg["torrent"])
    t_start = float(cfg["t0"])
    deadline = t_start + float(cfg["deadline_s"])
    wait_tracker(cfg["health_url"], min(deadline, time.time() + 30))

    clients = sorted(cfg["clients"], key=lambda c: c["join_at"])
    for c in clients:
        c["session"] = make_session(c["ip"], cfg)
    log(f"{len(clients)} sessions ready; tracker {cfg['tracker_url']}")
    while time.time() < t_start:
        time.sleep(0.01)

    pending = list(clients)
    active = []
    samples = {c["name"]: [] for c in clients}  # (t, total_payload_upload, total_payload_download)
    # With peer_flows: per client, [t, peer address, payload bytes uploaded to it since the last
    # sample, 1 if this client opened the connection] (libtorrent's per-connection counters; a
    # reconnection restarts them).
    flows = {c["name"]: [] for c in clients}
    last_up = {c["name"]: {} for c in clients}
    peer_flows = bool(cfg.get("peer_flows"))
    next_sample = time.time()
    while time.time() < deadline:
        now = time.time()
        for c in list(active):
            # A leaving client stops its torrent (libtorrent announces `stopped`).
            if c.get("leave_at") is not None and now - t_start >= c["leave_at"]:
                st = c["handle"].status()
                c["final"] = (st.total_payload_upload, st.total_payload_download, st.total_upload, st.total_download)
                c["session"].remove_torrent(c["handle"])
                c["left_at"] = now - t_start
                active.remove(c)
        while pending and now - t_start >= pending[0]["join_at"]:
            c = pending.pop(0)
            if c.get("leave_at") is not None and c["leave_at"] <= c["join_at"]:
                c["left_at"] = c["leave_at"]  # it would leave before joining: it never joins
                continue
            atp = lt.add_torrent_params()
            atp.ti = ti
            atp.trackers = [cfg["tracker_url"]]
            if c["role"] == "seed":
                atp.save_path = cfg["content_dir"]
                atp.flags = lt.torrent_flags.seed_mode
            else:
                atp.save_path = os.path.join(cfg["work_dir"], c["name"])
                atp.flags = 0
            atp.flags |= lt.torrent_flags.disable_pex
            atp.flags &= ~lt.torrent_flags.auto_managed
            c["handle"] = c["session"].add_torrent(atp)
            c["joined"] = time.time()
            c["done_at"] = c["joined"] if c["role"] == "seed" else None
            active.append(c)
        for c in active:
            if c["done_at"] is None and c["handle"].status().is_seeding:
                c["done_at"] = time.time()
        if now >= next_sample:
            for c in active:
                st = c["handle"].status()
                samples[c["name"]].append((round(now - t_start, 3), st.total_payload_upload, st.total_payload_download))
                if peer_flows:
                    seen = last_up[c["name"]]
                    for p in c["handle"].get_peer_info():
                        key = f"{p.ip[0]}:{p.ip[1]}"
                        up = p.total_upload
                        d = up - seen.get(key, 0) if up >= seen.get(key, 0) else up
                        seen[key] = up
                        if d > 0:
                            # 1: this client opened the connection (the peer came in a tracker
                            # answer to this client); 0: the peer connected to it.
                            out = 1 if p.flags & lt.peer_info.local_connection else 0
                            flows[c["name"]].append([round(now - t_start, 1), p.ip[0], d, out])
            next_sample += 1.0
        for c in active:
            for a in c["session"].pop_alerts():
                if isinstance(a, lt.peer_error_alert):
                    continue  # expected noise: peers closing connections
                log(f"{c['name']}: {a.message()}")
        if not pending and all(c["done_at"] is not None for c in active) \
                and not any(c.get("leave_at") is not None and "left_at" not in c and c["done_at"] is None
                            for c in clients):
            break
        time.sleep(0.05)

    expected = cfg["expected_sha256"]
    out = {"clients": [], "t0": t_start}
    for c in clients:
        rec = {k: c[k] for k in ("name", "ip", "isp", "pid", "role", "join_at")}
        rec["joined"] = c.get("joined")
        rec["joined_s"] = (c["joined"] - t_start) if c.get("joined") else None
        rec["left_at"] = c.get("left_at")
        done = c.get("done_at")
        rec["complete"] = done is not None
        rec["done_s"] = (done - t_start) if done is not None else None
        rec["completion_s"] = (done - c["joined"]) if done is not None and c["role"] == "leech" else None
        if "final" in c:
            (rec["client_payload_up"], rec["client_payload_down"], rec["client_total_up"],
             rec["client_total_down"]) = c["final"]
        elif "handle" in c:
            st = c["handle"].status()
            rec["client_payload_up"] = st.total_payload_upload
            rec["client_payload_down"] = st.total_payload_download
            rec["client_total_up"] = st.total_upload
            rec["client_total_down"] = st.total_download
        if peer_flows:
            rec["flows"] = flows[c["name"]]
        if c["role"] == "leech" and rec["left_at"] is None:
            ok = True
            for name, digest in expected.items():
                p = os.path.join(cfg["work_dir"], c["name"], name)
                ok = ok and os.path.exists(p) and sha256_file(p) == digest
            rec["sha256_ok"] = ok
        # Upload rate per client: the largest 4-second average seen (cap check; libtorrent's
        # rate limiter hands out quota per tick, so shorter windows show its bursts).
        s = samples[c["name"]]
        best = 0.0
        for i in range(CAP_WINDOW, len(s)):
            dt = s[i][0] - s[i - CAP_WINDOW][0]
            if dt > 0:
                best = max(best, (s[i][1] - s[i - CAP_WINDOW][1]) / dt)
        rec["max_upload_rate"] = best
        # Token-bucket view of the cap: libtorrent lets a client bank up to 3 s of unused
        # quota, so over any interval T a capped client uploads at most cap * (T + 3 s).
        # burst_s = max over sample pairs of (uploaded - cap * T) / cap, in seconds of quota.
        cap = float(cfg["upload_cap"])
        burst = 0.0
        for i in range(len(s)):
            for j in range(i + 1, len(s)):
                burst = max(burst, ((s[j][1] - s[i][1]) - cap * (s[j][0] - s[i][0])) / cap)
        rec["cap_burst_s"] = burst
        rec["samples"] = s
        out["clients"].append(rec)
    with open(cfg["result_file"] + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(cfg["result_file"] + ".tmp", cfg["result_file"])
    open(cfg["done_file"], "w").close()
    log("leechers done" if all(r["complete"] for r in out["clients"]) else "deadline reached")

    # Keep seeding for the other namespaces until told to stop (bounded by the deadline + 60 s).
    stop_by = max(deadline, time.time()) + 60
    while not os.path.exists(cfg["stop_file"]) and time.time() < stop_by:
        for c in active:
            c["session"].pop_alerts()
        time.sleep(0.1)
    for c in active:
        c["session"].remove_torrent(c["handle"])
    for c in clients:
        c["session"].pause()
    log("exit")


if __name__ == "__main__":
    main()
