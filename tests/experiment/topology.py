"""PIDs, prefixes and p-distances for the locality experiment.

The experiment needs, for each PID that clients live in: its ISP, its IPv4 prefixes, and the
p-distance (P4P cost) between every ordered pair of PIDs, to weight bytes into the P4P
paper's bandwidth-distance product. They are read from the topology files
(topology-data/loopback.toml for ISP A, loopback-isp-b.toml for ISP B) where those parse;
otherwise the loopback layout below is used:

    ISP A: a1 = 127.1.0.0/16, a2 = 127.3.0.0/16
    ISP B: b1 = 127.2.0.0/16, b2 = 127.4.0.0/16
    p-distance: same PID 1, between PIDs of one ISP 10, between ISPs 65 (the itracker's
    defaults), unless the files' [defaults] say otherwise. Per-link routing is not modelled:
    the experiment's PIDs are each one hop apart, so the defaults are the p-distances.
"""

import os

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

DEFAULT_PIDS = {
    "a1": {"isp": "A", "prefixes": ["127.1.0.0/16"]},
    "a2": {"isp": "A", "prefixes": ["127.3.0.0/16"]},
    "b1": {"isp": "B", "prefixes": ["127.2.0.0/16"]},
    "b2": {"isp": "B", "prefixes": ["127.4.0.0/16"]},
}
DEFAULT_COST = {"same_pid": 1.0, "same_isp": 10.0, "inter_isp": 65.0}


def _read(path):
    """Internal PIDs (name -> IPv4 prefixes) and the [defaults] p-distances of a topology file
    in the p4p-itracker TOML format ([[pid]] name/kind/prefixes, [defaults] intra_pid,
    inter_pid, interdomain). A missing or unreadable file gives ({}, {})."""
    if not tomllib or not path or not os.path.exists(path):
        return {}, {}
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, ValueError):
        return {}, {}
    pids = {}
    for t in doc.get("pid", []):
        if isinstance(t, dict) and t.get("kind", "internal") == "internal" and t.get("name"):
            v4 = [x for x in t.get("prefixes", []) if isinstance(x, str) and ":" not in x]
            if v4:
                pids[t["name"]] = v4
    d = doc.get("defaults", {}) if isinstance(doc.get("defaults"), dict) else {}
    costs = {}
    for ours, theirs in (("same_pid", "intra_pid"), ("same_isp", "inter_pid"), ("inter_isp", "interdomain")):
        if isinstance(d.get(theirs), (int, float)):
            costs[ours] = float(d[theirs])
    return pids, costs


def load_topology(file_a, file_b, pids_a, pids_b):
    pids = {k: dict(v) for k, v in DEFAULT_PIDS.items()}
    cost = dict(DEFAULT_COST)
    for isp, path in (("B", file_b), ("A", file_a)):  # ISP A's file (the tracker's) wins
        found, c = _read(path)
        for name, prefixes in found.items():
            if name in pids and pids[name]["isp"] == isp:
                pids[name]["prefixes"] = prefixes
        cost.update(c)
    for info in pids.values():
        info["base"] = ".".join(info["prefixes"][0].split("/")[0].split(".")[:2])

    def pdistance(s, d):
        if s == d:
            return cost["same_pid"]
        if pids[s]["isp"] == pids[d]["isp"]:
            return cost["same_isp"]
        return cost["inter_isp"]

    client_isps = [("A", [p.strip() for p in pids_a.split(",") if p.strip()]),
                   ("B", [p.strip() for p in pids_b.split(",") if p.strip()])]
    for _, ps in client_isps:
        for p in ps:
            if p not in pids:
                raise SystemExit(f"unknown PID {p}; known: {', '.join(pids)}")
    table = {f"{s}>{d}": pdistance(s, d) for s in pids for d in pids}
    return {"pids": pids, "client_isps": client_isps, "pdistance": pdistance, "pdistance_table": table,
            "file": file_a}
