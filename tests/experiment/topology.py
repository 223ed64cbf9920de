"""PIDs, prefixes and p-distances for the locality experiment.

The experiment needs, for each PID that clients live in: its ISP, its IPv4 prefixes, and the
p-distance (P4P cost) between every ordered pair of PIDs, to weight bytes into the P4P
paper's bandwidth-distance product. They are read from the topology files
(topology-data/loopback.toml for ISP A, loopback-isp-b.toml for ISP B) where those parse;
otherwise the loopback layout below is used:

    ISP A: a1 = 127.1.0.0/16, a2 = 127.3.0.0/16
    ISP B: b1 = 127.2.0.0/16, b2 = 127.4.0.0/16
    p-distance: same PID 0, between PIDs of one ISP 10, between ISPs 100 (the tracker's
    default `interdomain_cost`), unless the files say otherwise.
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
DEFAULT_COST = {"same_pid": 0.0, "same_isp": 10.0, "inter_isp": 100.0}


def _walk(node, path=()):
    """Yields every (path, table) in a parsed TOML document."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (i,))


def _read(path):
    """Best-effort extraction of internal PIDs (name -> IPv4 prefixes) and explicit costs
    ((from, to) -> cost) from a topology TOML file. Unknown layouts give ({}, {})."""
    if not tomllib or not path or not os.path.exists(path):
        return {}, {}
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, ValueError):
        return {}, {}
    pids, costs = {}, {}
    for p, t in _walk(doc):
        prefixes = t.get("prefixes") or t.get("ipv4") or t.get("cidrs")
        name = t.get("name") or t.get("pid") or (p[-1] if p and isinstance(p[-1], str) else None)
        if isinstance(prefixes, list) and name and all(isinstance(x, str) for x in prefixes):
            v4 = [x for x in prefixes if ":" not in x]
            if v4 and t.get("internal", True) is not False and t.get("kind", "internal") in ("internal", "pop", "access"):
                pids[str(name)] = v4
        frm, to, cost = t.get("from") or t.get("src"), t.get("to") or t.get("dst"), t.get("cost")
        if isinstance(frm, str) and isinstance(to, str) and isinstance(cost, (int, float)):
            costs[(frm, to)] = float(cost)
    # Cost maps written as nested tables: [costs.a1] a2 = 5
    for key in ("costs", "cost", "cost_map", "pdistance"):
        m = doc.get(key)
        if isinstance(m, dict):
            for frm, row in m.items():
                if isinstance(row, dict):
                    for to, c in row.items():
                        if isinstance(c, (int, float)):
                            costs[(frm, to)] = float(c)
    return pids, costs


def load_topology(file_a, file_b, pids_a, pids_b):
    pids = {k: dict(v) for k, v in DEFAULT_PIDS.items()}
    costs = {}
    for isp, path in (("A", file_a), ("B", file_b)):
        found, c = _read(path)
        for name, prefixes in found.items():
            if name in pids and pids[name]["isp"] == isp:
                pids[name]["prefixes"] = prefixes
        for k, v in c.items():
            costs.setdefault(k, v)
    for info in pids.values():
        info["base"] = ".".join(info["prefixes"][0].split("/")[0].split(".")[:2])

    def pdistance(s, d):
        if (s, d) in costs:
            return costs[(s, d)]
        if s == d:
            return DEFAULT_COST["same_pid"]
        if pids[s]["isp"] == pids[d]["isp"]:
            return DEFAULT_COST["same_isp"]
        return DEFAULT_COST["inter_isp"]

    client_isps = [("A", [p.strip() for p in pids_a.split(",") if p.strip()]),
                   ("B", [p.strip() for p in pids_b.split(",") if p.strip()])]
    for _, ps in client_isps:
        for p in ps:
            if p not in pids:
                raise SystemExit(f"unknown PID {p}; known: {', '.join(pids)}")
    table = {f"{s}>{d}": pdistance(s, d) for s in pids for d in pids}
    return {"pids": pids, "client_isps": client_isps, "pdistance": pdistance, "pdistance_table": table,
            "file": file_a}
