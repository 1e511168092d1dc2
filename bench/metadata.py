#!/usr/bin/python3
# Debian's interpreter: the libtorrent roles come from tests/interop/lt_dht.py.
"""Magnet -> verified metadata through a private DHT, Lodestone against
libtorrent (and rqbit), same run.

  bench/metadata.py [--runs 5] [--nodes 8] [--rqbit PATH] [--timeout 60]

Starts N libtorrent DHT nodes and one libtorrent seeder on 127.0.0.1, then
alternates a Lodestone leecher (`lodestone get MAGNET --bootstrap ...`), a
libtorrent leecher (lt_dht.py metadata) and, when its binary is found
(--rqbit, $RQBIT, or `rqbit` on PATH; build it with `cargo install rqbit`),
an rqbit leecher, each given only the bare magnet and one DHT node, RUNS
times each (at least 3; the order flips every run).

What is counted, two figures per run:
- "from client start" (the one the medians and the first ratio use): from
  the moment the client itself starts to verified metadata, its DHT
  start-up included. libtorrent: in its process, from just before
  lt.session() (so Python's start and `import libtorrent` are NOT
  counted) to metadata_received_alert. Lodestone: from spawning the
  process (exec and its whole start-up counted) to its `metadata` event
  line read here, which also counts the pipe (so this side is measured
  slightly against Lodestone). rqbit: from spawn to its log line.
- "from add magnet": libtorrent from add_torrent to the alert, Lodestone
  its own `metadata` event time; both in-process. rqbit: not measured.
  Lodestone's clock for its events starts just AFTER it has spawned the
  fetch task (cmd/get.rs `fetch`), so its work can begin before t=0 (runs
  show "first peers found at 0.00 ms"): this column flatters Lodestone by
  up to a millisecond or so, which is why the medians lead with "from
  client start".
- libtorrent "from spawn" (Python and the import included) is shown for
  reference only; it was this benchmark's figure before and flattered us.
- Failures: a run without metadata within --timeout is printed as FAILED
  and counted in the medians as the timeout; the script then exits 1.
rqbit is kept on loopback: no public routers (its bootstrap list is
replaced), no LSD, UPnP, trackers or DHT persistence, bound to `lo`.
Prints every run (Lodestone's with where the time went), the medians and
the ratios.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Benchmarks stay on this machine: no public DHT, no LPD on real interfaces.
os.environ["LODESTONE_LOCAL_ONLY"] = "1"
LT_DHT = os.path.join(ROOT, "tests", "interop", "lt_dht.py")
LODESTONE = os.path.join(ROOT, "target", "release", "lodestone")


def free_block(n):
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as t:
                    try:
                        t.bind(("127.0.0.1", p))
                    except OSError:
                        ok = False
        if ok:
            return base
    raise SystemExit("no free port block")


def make_torrent(work, name, size):
    """Random content of `size` bytes in work/content/name and its .torrent;
    returns (content dir, torrent path, v1 info hash)."""
    content = os.path.join(work, "content")
    os.makedirs(content)
    with open(os.path.join(content, name), "wb") as f:
        f.write(os.urandom(size))
    torrent = os.path.join(work, name + ".torrent")
    subprocess.run([LODESTONE, "create", "--no-date", "-o", torrent, os.path.join(content, name)],
                   check=True, stdout=subprocess.DEVNULL)
    ih = json.loads(subprocess.run([LODESTONE, "info", "--json", torrent], capture_output=True,
                                   check=True).stdout)["info_hash_v1"]
    return content, torrent, ih


def start_lt_swarm(nodes, base, torrent, content):
    """`nodes` libtorrent DHT nodes on base.. and a libtorrent seeder on
    base+nodes that announces `torrent`; returns once they are up and the
    seeder's announce had 3 s to land. Its output is drained in the
    background so it never blocks on a full pipe."""
    swarm = subprocess.Popen(["/usr/bin/python3", LT_DHT, "swarm", "--n", str(nodes), "--base-port", str(base),
                              "--seed-port", str(base + nodes), "--seed-torrent", torrent, "--content", content,
                              "--duration", "600"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in swarm.stdout:
        if "READY" in line:
            break
    threading.Thread(target=lambda: [None for _ in swarm.stdout], daemon=True).start()
    time.sleep(3)
    return swarm


def timed(cmd, marker, timeout=60, stderr=False, lines=None):
    """(seconds from spawn to the first output line matching `marker` (a
    regular expression), that line); (None, None) if none came within
    `timeout`. The lines before it go to `lines` if given."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT if stderr else subprocess.DEVNULL, text=True,
                         env=dict(os.environ, NO_COLOR="1"))
    found = hit = None
    pattern = re.compile(marker)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        for line in p.stdout:
            if lines is not None:
                lines.append(line)
            if pattern.search(line):
                found = time.monotonic() - t0
                hit = line
                break
    finally:
        timer.cancel()
        p.kill()
        p.wait()
    return found, hit


def lodestone_phases(lines):
    """Where Lodestone's time went, from its --json events (seconds since
    its start): first DHT peers, first metadata peer connected, verified."""
    out = {}
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        ev = e.get("event")
        if ev == "peers_found" and "found" not in out:
            out["found"] = e.get("t")
        elif ev == "metadata_peer" and "peer_ready" not in out:
            out["peer_ready"] = e.get("t")
            out["peer_source"] = e.get("source")
        elif ev == "metadata":
            out["verified"] = e.get("t")
    return out


def rqbit_cmd(rqbit, out, boot, magnet, port):
    return [rqbit, "-v", "info", "--ipv4-only", "--listen-ip", "127.0.0.1", "--listen-port", str(port),
            "--bind-device", "lo", "--disable-upnp-port-forward", "--disable-lsd", "--disable-trackers",
            "--disable-dht-persistence", "--dht-bootstrap-addrs", boot,
            "download", "--disable-http-api", "-o", out, "--list", magnet]


def fmt(t):
    return f"{t:.4f} s" if t is not None else "   -    "


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=60, help="seconds a run may take; a failed run counts as this")
    ap.add_argument("--rqbit", default=os.environ.get("RQBIT") or shutil.which("rqbit"),
                    help="rqbit binary (default: $RQBIT, or rqbit on PATH)")
    a = ap.parse_args()
    if a.runs < 3:
        ap.error("--runs must be at least 3 (a median of fewer is not one)")
    clients = ["lodestone", "libtorrent"]
    if a.rqbit and os.path.exists(a.rqbit):
        clients.append("rqbit")
    else:
        print("rqbit not found (give --rqbit PATH or build it: cargo install rqbit); comparing with libtorrent only")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "lodestone"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="lodestone-meta-", dir="/dev/shm")
    failed = 0
    swarm = None
    try:
        content, torrent, ih = make_torrent(work, "payload.bin", 16 << 20)
        magnet = f"magnet:?xt=urn:btih:{ih}"
        base = free_block(a.nodes + 2)
        swarm = start_lt_swarm(a.nodes, base, torrent, content)
        boot = f"127.0.0.1:{base + 3}"
        print(f"{a.nodes} libtorrent DHT nodes + 1 libtorrent seeder on 127.0.0.1; bootstrap {boot}; "
              f"load average {' '.join('%.2f' % x for x in os.getloadavg())}")
        start = {c: [] for c in clients}  # from client start
        add = {c: [] for c in clients}    # from add magnet
        for i in range(a.runs):
            order = clients if i % 2 == 0 else list(reversed(clients))
            for who in order:
                out = os.path.join(work, f"dl-{who}-{i}")
                detail = ""
                t_start = t_add = None
                if who == "lodestone":
                    cmd = [LODESTONE, "get", "--json", magnet, "-o", out, "--bootstrap", boot,
                           "--listen", "127.0.0.1:0"]
                    lines = []
                    t, hit = timed(cmd, '"event":"metadata"', timeout=a.timeout, lines=lines)
                    if t is not None:
                        t_start, t_add = t, json.loads(hit).get("t")
                        ph = lodestone_phases(lines)
                        ms = lambda k: f"{ph[k] * 1000:.2f} ms" if ph.get(k) is not None else "?"  # noqa: E731
                        detail = (f"  (since the fetch began: first peers found at {ms('found')},"
                                  f" metadata peer ready at {ms('peer_ready')} via {ph.get('peer_source')},"
                                  f" verified at {ms('verified')})")
                elif who == "libtorrent":
                    cmd = ["/usr/bin/python3", LT_DHT, "metadata", "--magnet", magnet, "--bootstrap", boot,
                           "--save", out, "--timeout", str(a.timeout)]
                    t, hit = timed(cmd, '"ok": true', timeout=a.timeout + 10)
                    if t is not None:
                        e = json.loads(hit)
                        t_start, t_add = e.get("since_session_s"), e.get("since_add_s")
                        detail = (f"  (from spawn, Python and `import libtorrent` included: {t:.4f} s;"
                                  f" from the import: {e.get('since_start_s'):.4f} s)")
                else:
                    # --list prints the files once the metadata is verified.
                    cmd = rqbit_cmd(a.rqbit, out, boot, magnet, base + a.nodes + 1)
                    t_start, _ = timed(cmd, r"\bFile \S|added torrent", timeout=a.timeout, stderr=True)
                shutil.rmtree(out, ignore_errors=True)
                if t_start is None:
                    failed += 1
                    print(f"run {i + 1} {who:10s} FAILED: no metadata within {a.timeout:g} s "
                          f"(counted as {a.timeout:g} s)", flush=True)
                    t_start = a.timeout
                    t_add = a.timeout if who != "rqbit" else None
                else:
                    print(f"run {i + 1} {who:10s} from client start {fmt(t_start)}, from add magnet {fmt(t_add)}"
                          f"{detail}", flush=True)
                start[who].append(t_start)
                add[who].append(t_add)
        med_s = {k: statistics.median(v) for k, v in start.items()}
        med_a = {k: statistics.median([x for x in v if x is not None]) if any(x is not None for x in v) else None
                 for k, v in add.items()}
        for k in clients:
            bad = sum(1 for x in start[k] if x >= a.timeout)
            print(f"median {k:10s} from client start {fmt(med_s[k])}, from add magnet {fmt(med_a[k])}"
                  f"  ({len(start[k]) - bad}/{len(start[k])} succeeded)")
        for other in clients[1:]:
            r_add = f"{med_a['lodestone'] / med_a[other]:.3f}" if med_a.get(other) else "-"
            print(f"ratio lodestone/{other}: from client start {med_s['lodestone'] / med_s[other]:.3f}, "
                  f"from add magnet {r_add}")
    finally:
        if swarm:
            swarm.terminate()
            swarm.wait()
        shutil.rmtree(work, ignore_errors=True)
    if failed:
        print(f"FAILED: {failed} runs got no metadata")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
