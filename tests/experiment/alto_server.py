#!/usr/bin/python3
"""A minimal standard ALTO server (RFC 7285) for the locality experiment's standard-ALTO mode.

It publishes only what RFC 7285 requires of a map service, as an ISP's off-the-shelf ALTO
server would: an information resource directory (IRD), one network map and one `routingcost`
cost map for it. No `priv:` properties, no property map, nothing of ours: a tracker pointed at
it learns the PIDs and their costs, and nothing else.

    /usr/bin/python3 alto_server.py --pid isp-a=127.1.0.0/16,127.3.0.0/16 \
        --pid isp-b=127.2.0.0/16,127.4.0.0/16 [--group isp-a=a ...] [--cost-mode numerical|ordinal]
        [--intra-cost 0] [--group-cost 10] [--inter-cost 100] [--default-cost 100]
        [--bind 127.0.0.1] [--port 0] [--ready-file PATH]

PIDs: every `--pid NAME=PREFIX,...` plus a PID `default` holding 0.0.0.0/0 and ::/0 (the rest
of the Internet). Costs (routingcost, from the row PID to the column PID): the same PID
`--intra-cost`; two PIDs of one `--group` (an ISP, when one ISP has several PIDs)
`--group-cost`; two PIDs of different groups `--inter-cost`; to or from `default`
`--default-cost`. In ordinal mode each row's costs are replaced by their ranks (1 = cheapest,
equal costs share a rank), as RFC 7285 section 6.1.2 defines.

Resources:
    GET /directory                 application/alto-directory+json
    GET /networkmap                application/alto-networkmap+json   (ETag, If-None-Match)
    GET /costmap/routingcost       application/alto-costmap+json      (ETag, If-None-Match)
Anything else: 404 (or 405 for other methods) with an application/alto-error+json body.

Only the standard library; binds the loopback address it is given (refuses any other), and
writes its port to `--ready-file` once it listens (port 0 picks a free one).
`--dump DIR` writes the three messages to DIR as files and exits (no socket).
"""

import argparse
import hashlib
import ipaddress
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIRECTORY = "application/alto-directory+json"
NETWORK_MAP = "application/alto-networkmap+json"
COST_MAP = "application/alto-costmap+json"
ERROR = "application/alto-error+json"
NETWORK_MAP_ID = "default-network-map"
COST_MAP_ID = "routingcost-map"
DEFAULT_PID = "default"


def parse_pids(specs):
    """`NAME=PFX,PFX` -> {name: {"ipv4": [...], "ipv6": [...]}} (checked, normalized)."""
    pids = {}
    for spec in specs:
        name, sep, prefixes = spec.partition("=")
        if not sep or not name or not prefixes:
            raise SystemExit(f"--pid {spec!r}: expected NAME=PREFIX[,PREFIX...]")
        if name == DEFAULT_PID or name in pids:
            raise SystemExit(f"--pid {name}: duplicate or reserved name")
        entry = {}
        for p in prefixes.split(","):
            net = ipaddress.ip_network(p.strip(), strict=True)
            entry.setdefault("ipv4" if net.version == 4 else "ipv6", []).append(str(net))
        pids[name] = entry
    pids[DEFAULT_PID] = {"ipv4": ["0.0.0.0/0"], "ipv6": ["::/0"]}
    return pids


def parse_groups(specs, pids):
    groups = {name: name for name in pids}  # by default, every PID is its own group
    for spec in specs:
        name, sep, group = spec.partition("=")
        if not sep or name not in pids or name == DEFAULT_PID:
            raise SystemExit(f"--group {spec!r}: expected PID=GROUP for a PID given with --pid")
        groups[name] = group
    return groups


def costs(pids, groups, args):
    """The routingcost matrix, numerical; ordinal ranks are derived per row in `cost_map`."""
    out = {}
    for s in pids:
        row = {}
        for d in pids:
            if s == d:
                c = args.intra_cost
            elif DEFAULT_PID in (s, d):
                c = args.default_cost
            elif groups[s] == groups[d]:
                c = args.group_cost
            else:
                c = args.inter_cost
            row[d] = int(c) if float(c).is_integer() else c
        out[s] = row
    return out


def ordinal(row):
    ranks = {c: i + 1 for i, c in enumerate(sorted(set(row.values())))}
    return {d: ranks[c] for d, c in row.items()}


def tag_of(obj):
    """A vtag/ETag from the content: changes exactly when the message does."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:32]


def messages(args):
    """(IRD, network map, cost map) as Python objects."""
    pids = parse_pids(args.pid)
    groups = parse_groups(args.group, pids)
    vtag = tag_of(pids)
    network_map = {"meta": {"vtag": {"resource-id": NETWORK_MAP_ID, "tag": vtag}}, "network-map": pids}
    matrix = costs(pids, groups, args)
    if args.cost_mode == "ordinal":
        matrix = {s: ordinal(row) for s, row in matrix.items()}
    cost_type = {"cost-mode": args.cost_mode, "cost-metric": "routingcost"}
    cost_map = {"meta": {"dependent-vtags": [{"resource-id": NETWORK_MAP_ID, "tag": vtag}],
                         "cost-type": cost_type},
                "cost-map": matrix}
    type_name = f"{args.cost_mode[:3]}-routingcost"
    ird = {"meta": {"cost-types": {type_name: cost_type}, "default-alto-network-map": NETWORK_MAP_ID},
           "resources": {
               NETWORK_MAP_ID: {"uri": "/networkmap", "media-type": NETWORK_MAP},
               COST_MAP_ID: {"uri": "/costmap/routingcost", "media-type": COST_MAP,
                             "capabilities": {"cost-type-names": [type_name]},
                             "uses": [NETWORK_MAP_ID]},
           }}
    return ird, network_map, cost_map


def make_handler(resources):
    """resources: path -> (media type, body bytes, etag)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "p4p-experiment-alto/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # quiet; the experiment keeps stderr for errors
            pass

        def _error(self, status, code, field=None):
            meta = {"code": code}
            if field:
                meta["field"] = field
            body = json.dumps({"meta": meta}).encode()
            self.send_response(status)
            self.send_header("Content-Type", ERROR)
            self.send_header("Content-Length", str(len(body)))
            if status == 405:
                self.send_header("Allow", "GET, HEAD")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _get(self):
            path = self.path.split("?", 1)[0]
            if path not in resources:
                return self._error(404, "E_INVALID_FIELD_VALUE", "uri")
            media, body, etag = resources[path]
            quoted = f'"{etag}"'
            inm = self.headers.get("If-None-Match")
            if inm and quoted in [t.strip() for t in inm.split(",")]:
                self.send_response(304)
                self.send_header("ETag", quoted)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", quoted)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = _get
        do_HEAD = _get

        def _not_allowed(self):
            n = int(self.headers.get("Content-Length") or 0)
            if 0 < n <= 65536:
                self.rfile.read(n)
            self._error(405, "E_INVALID_FIELD_VALUE", "method")

        do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", action="append", default=[], help="NAME=PREFIX[,PREFIX...] (repeatable)")
    ap.add_argument("--group", action="append", default=[], help="PID=GROUP: PIDs of one ISP (repeatable)")
    ap.add_argument("--cost-mode", choices=["numerical", "ordinal"], default="numerical")
    ap.add_argument("--intra-cost", type=float, default=0.0, help="cost inside a PID")
    ap.add_argument("--group-cost", type=float, default=10.0, help="between PIDs of one group")
    ap.add_argument("--inter-cost", type=float, default=100.0, help="between PIDs of different groups")
    ap.add_argument("--default-cost", type=float, default=100.0, help="to or from the default PID")
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready-file", help="written with the port once the server listens")
    ap.add_argument("--dump", help="write directory.json, networkmap.json, costmap.json here and exit")
    args = ap.parse_args()
    if not args.pid:
        raise SystemExit("at least one --pid is needed")
    ird, nm, cm = messages(args)
    if args.dump:
        os.makedirs(args.dump, exist_ok=True)
        for name, obj in (("directory", ird), ("networkmap", nm), ("costmap", cm)):
            with open(os.path.join(args.dump, f"{name}.json"), "w") as f:
                json.dump(obj, f, indent=1)
        return 0
    if not ipaddress.ip_address(args.bind).is_loopback:
        raise SystemExit(f"--bind {args.bind}: only loopback addresses")
    resources = {}
    for path, media, obj in (("/directory", DIRECTORY, ird), ("/networkmap", NETWORK_MAP, nm),
                             ("/costmap/routingcost", COST_MAP, cm)):
        body = json.dumps(obj, indent=1).encode()
        resources[path] = (media, body, hashlib.sha256(body).hexdigest()[:32])
    server = ThreadingHTTPServer((args.bind, args.port), make_handler(resources))
    server.daemon_threads = True
    port = server.server_address[1]
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(args.ready_file + ".tmp", args.ready_file)
    print(f"ALTO server on http://{args.bind}:{port}/directory", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
