#!/usr/bin/python3
"""Where do the inter-ISP bytes go? Attribution of a locality run's cross-ISP payload.

    python3 tests/experiment/attribution.py results/locality/<folder>/results.json [--policy p4p]

Needs a results.json written with `locality.py --peer-flows` (the flows are kept beside it, in
flows.json.gz): each client's per-second payload
upload to each peer address (libtorrent's per-connection counters). Every byte a client uploads
to a client of the other ISP is attributed to
- the uploader's state at that second: `seed` (an original seed), `leecher` (still
  downloading), `finished` (a leecher that completed and now seeds);
- whether the uploader's own ISP still had a leecher downloading at that second ("local demand
  left") or not (the uploader had nobody near left to serve);
- the receiver's join rank in its ISP (the first two leechers of an ISP are "early joiners":
  when they announce, their ISP has few or no peers yet);
- the second of the run (5 s buckets);
- which side opened the connection (libtorrent's `local_connection` flag): the side that opened
  it got the other in a tracker answer, so this tells whose answer made the crossing.
The flows cover what libtorrent saw; the kernel's inter-ISP count (headers included) is printed
next to it. Output: a markdown report on stdout. Standard library only.
"""

import argparse
import gzip
import json
import os
import statistics
import sys

MIB = 1048576.0


def state(c, t):
    if c["role"] == "seed":
        return "seed"
    done = c.get("done_s")
    return "finished" if done is not None and t >= done else "leecher"


def downloading(c, t):
    """A leecher that joined and has not completed (nor left) at second t."""
    if c["role"] != "leech" or c.get("joined_s") is None or t < c["joined_s"]:
        return False
    if c.get("left_at") is not None and t >= c["left_at"]:
        return False
    return c.get("done_s") is None or t < c["done_s"]


def attribute(run, early=2):
    clients = run["clients"]
    by_ip = {c["ip"]: c for c in clients if c.get("ip")}
    rank = {}
    for isp in {c["isp"] for c in clients}:
        ls = sorted((c for c in clients if c["isp"] == isp and c["role"] == "leech"), key=lambda c: c["join_at"])
        for i, c in enumerate(ls):
            rank[c["name"]] = i
    out = {"total": 0, "by_state": {}, "by_local_demand": {}, "by_receiver": {}, "by_time": {},
           "by_state_demand": {}, "pairs": {}, "by_uploader": {}, "by_opener": {}, "by_receiver_pid": {}, "intra_isp": 0}
    for up in clients:
        for t, ip, b, *rest in up.get("flows") or []:
            rx = by_ip.get(ip)
            if rx is None:
                continue
            if rx["isp"] == up["isp"]:
                out["intra_isp"] += b
                continue
            out["total"] += b
            st = state(up, t)
            demand = any(downloading(c, t) for c in clients if c["isp"] == up["isp"])
            dk = "local demand left" if demand else "no local leecher downloading"
            early_rx = "early joiner (first 2 of its ISP)" if rank.get(rx["name"], 99) < early else "later joiner"
            bucket = f"{int(t // 5) * 5:02d}-{int(t // 5) * 5 + 5:02d} s"
            if rest:
                opener = "the uploader (it got the receiver in an answer)" if rest[0] else \
                    "the receiver (it got the uploader in an answer)"
                k = f"{opener}; uploader {st}"
                out["by_opener"][k] = out["by_opener"].get(k, 0) + b
            for key, k in (("by_state", st), ("by_local_demand", dk), ("by_receiver", early_rx),
                           ("by_time", bucket), ("by_state_demand", f"{st} / {dk}"),
                           ("pairs", f"{up['name']} -> {rx['name']}"), ("by_uploader", up["name"]),
                           ("by_receiver_pid", f"{rx['pid']} ({sum(1 for c in clients if c['pid'] == rx['pid'] and c['role'] == 'seed')} seeds at the start)")):
                out[key][k] = out[key].get(k, 0) + b
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--policy", default="p4p")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    doc = json.load(open(args.results))
    fpath = os.path.join(os.path.dirname(os.path.abspath(args.results)), "flows.json.gz")
    if os.path.exists(fpath):  # locality.py keeps the flows beside results.json
        with gzip.open(fpath, "rt") as f:
            flows = json.load(f)
        for r in doc["runs"]:
            for c in r["clients"]:
                c.setdefault("flows", flows.get(f"{r['run']}-{r['policy']}", {}).get(c["name"]))
    runs = [r for r in doc["runs"] if r["policy"] == args.policy]
    if not runs or not any(c.get("flows") for r in runs for c in r["clients"]):
        print(f"no peer flows for policy {args.policy} in {args.results} (run locality.py with --peer-flows)")
        return 2
    per = [attribute(r) for r in runs]
    kernel = [r["bytes"]["inter_isp"] for r in runs]
    print(f"## Inter-ISP payload attribution, policy `{args.policy}` ({len(runs)} runs)\n")
    print(f"Source: `{args.results}`. Client-seen inter-ISP payload per run (MiB): "
          + ", ".join(f"{p['total'] / MIB:.1f}" for p in per)
          + "; kernel inter-ISP bytes on the wire: " + ", ".join(f"{k / MIB:.1f}" for k in kernel) + ".\n")
    for key, title in (("by_state", "uploader state"), ("by_local_demand", "uploader's ISP at that second"),
                       ("by_state_demand", "uploader state / its ISP"), ("by_receiver", "receiver"),
                       ("by_receiver_pid", "receiver's PID"),
                       ("by_time", "second of the run"), ("by_opener", "connection opened by")):
        cats = sorted({k for p in per for k in p[key]})
        if not cats:
            continue
        print(f"| {title} | median MiB | median share | per run (MiB) |\n|---|---|---|---|")
        for k in cats:
            vals = [p[key].get(k, 0) for p in per]
            shares = [p[key].get(k, 0) / p["total"] for p in per if p["total"]]
            print(f"| {k} | {statistics.median(vals) / MIB:.1f} | "
                  f"{statistics.median(shares) * 100 if shares else 0:.0f}% | "
                  + ", ".join(f"{v / MIB:.1f}" for v in vals) + " |")
        print()
    agg = {}
    for p in per:
        for k, v in p["by_uploader"].items():
            agg[k] = agg.get(k, 0) + v
    tot = sum(p["total"] for p in per) or 1
    print("Largest inter-ISP uploaders, all runs together: " + ", ".join(
        f"{k} {v / MIB:.1f} MiB ({v / tot * 100:.0f}%)" for k, v in sorted(agg.items(), key=lambda x: -x[1])[:args.top])
        + ".\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
