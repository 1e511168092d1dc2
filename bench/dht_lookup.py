#!/usr/bin/python3
# Debian's interpreter: the libtorrent roles come from tests/interop/lt_dht.py.
"""Warm DHT lookup latency: Lodestone against libtorrent, same private DHT.

  bench/dht_lookup.py [--runs 3] [--lookups 20] [--nodes 8]

Starts N libtorrent DHT nodes and a libtorrent seeder that announces
itself on 127.0.0.1. Then it alternates, RUNS times each (at least 3; the
order flips every run), a Lodestone node (`lodestone dht get-peers
--repeat`) and a libtorrent session (lt_dht.py lookup --repeat), each a
fresh process that runs LOOKUPS get_peers for the seeder's info hash on
its one node.

What is counted: each lookup is timed inside the client's own process,
from the call (Lodestone: `get_peers` on its DHT; libtorrent:
`dht_get_peers` from Python) to the first reply holding a peer
(Lodestone: the first peers update; libtorrent: the first
dht_get_peers_reply_alert with peers, as its Python loop pops it, so
libtorrent's figure includes the wake-up of Python's alert wait). The
first lookup of every process (cold: its routing table still filling) is
NOT counted; the medians are over all warm lookups of all runs, and each
run's own median is printed too. Not the same on both sides: Lodestone
starts its next lookup once the previous one has finished, libtorrent
50 ms after the previous one's first peer (a lookup here finishes within
about 1.3 ms, so they do not overlap). Process start-up and DHT bootstrap
are NOT counted (libtorrent waits for is_dht_running first). A lookup
that found no peer within 10 s (both helpers' limit), or a run that
printed nothing, is reported as failed and counted as 10 s in the
medians; the script then exits 1.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metadata import LODESTONE, LT_DHT, ROOT, free_block, make_torrent, start_lt_swarm  # noqa: E402

LIMIT_MS = 10_000.0


def run(cmd, lookups):
    """Each warm lookup's milliseconds to the first peer (None: no peer)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60 + lookups * 11).stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    got = {}
    for line in out.splitlines():
        if line.startswith("{"):
            e = json.loads(line)
            if e.get("event") == "lookup":
                got[e["n"]] = e.get("first_peer_ms")
    # A lookup that never printed a line failed too.
    return [got.get(n) for n in range(1, lookups)]


def med(xs):
    return statistics.median([LIMIT_MS if x is None else x for x in xs]) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lookups", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=8)
    a = ap.parse_args()
    if a.runs < 3:
        ap.error("--runs must be at least 3 (a median of fewer is not one)")
    if a.lookups < 2:
        ap.error("--lookups must be at least 2 (the first one is cold and not counted)")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "lodestone"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="lodestone-dht-", dir="/dev/shm")
    swarm = None
    res = {"lodestone": [], "libtorrent": []}
    try:
        content, torrent, ih = make_torrent(work, "x.bin", 1 << 20)
        base = free_block(a.nodes + 3)
        swarm = start_lt_swarm(a.nodes, base, torrent, content)
        boot = f"127.0.0.1:{base + 3}"
        print(f"{a.nodes} libtorrent DHT nodes + 1 libtorrent seeder; {a.runs} runs x {a.lookups} lookups each; "
              f"load average {' '.join('%.2f' % x for x in os.getloadavg())}")
        cmds = {
            "lodestone": [LODESTONE, "dht", "get-peers", ih, "--repeat", str(a.lookups), "--bootstrap", boot,
                          "--listen", f"127.0.0.1:{base + a.nodes + 1}"],
            "libtorrent": ["/usr/bin/python3", LT_DHT, "lookup", "--info-hash", ih, "--bootstrap", boot,
                           "--repeat", str(a.lookups), "--port", str(base + a.nodes + 2)],
        }
        order = ["lodestone", "libtorrent"]
        for i in range(a.runs):
            for who in (order if i % 2 == 0 else order[::-1]):
                ms = run(cmds[who], a.lookups)
                res[who].append(ms)
                bad = sum(1 for x in ms if x is None)
                print(f"run {i + 1} {who:10s} median {med(ms):8.3f} ms over {len(ms)} warm lookups"
                      + (f", {bad} FAILED (no peer, counted as {LIMIT_MS:.0f} ms)" if bad else ""), flush=True)
    finally:
        if swarm:
            swarm.terminate()
            swarm.wait()
        shutil.rmtree(work, ignore_errors=True)
    meds = {}
    failed = 0
    for who, runs in res.items():
        every = [x for r in runs for x in r]
        bad = sum(1 for x in every if x is None)
        failed += bad
        meds[who] = med(every)
        ok = sorted(x for x in every if x is not None)
        p90 = ok[int(len(ok) * 0.9)] if ok else None
        print(f"median {who:10s} {meds[who]:8.3f} ms (p90 of the successful {p90 if p90 is None else round(p90, 3)}"
              f" ms; {len(every) - bad}/{len(every)} warm lookups found the peer)")
    print(f"ratio lodestone/libtorrent: {meds['lodestone'] / meds['libtorrent']:.3f}")
    if failed:
        print(f"FAILED: {failed} lookups found no peer")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
