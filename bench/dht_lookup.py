#!/usr/bin/python3
# Debian's interpreter: the libtorrent roles come from tests/interop/lt_dht.py.
"""Warm DHT lookup latency: Lodestone against libtorrent, same private DHT.

  bench/dht_lookup.py [--lookups 20] [--nodes 8]

Starts N libtorrent DHT nodes and a libtorrent seeder that announces
itself on 127.0.0.1. Then, one after the other, a Lodestone node
(`lodestone dht get-peers --repeat`) and a libtorrent session
(lt_dht.py lookup --repeat) each run LOOKUPS get_peers for the seeder's
info hash on one warm node, timing each from the command to the first
reply holding a peer. Prints both medians (the first lookup, cold, is
left out) and the ratio.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metadata import LODESTONE, LT_DHT, ROOT, free_block, make_torrent, start_lt_swarm  # noqa: E402


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    summary = [l for l in lines if l.get("event") == "summary"]
    return summary[0]["median_first_peer_ms"] if summary else None, len(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lookups", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=8)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "lodestone"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="lodestone-dht-", dir="/dev/shm")
    try:
        content, torrent, ih = make_torrent(work, "x.bin", 1 << 20)
        base = free_block(a.nodes + 3)
        swarm = start_lt_swarm(a.nodes, base, torrent, content)
        boot = f"127.0.0.1:{base + 3}"
        print(f"{a.nodes} libtorrent DHT nodes + 1 libtorrent seeder; {a.lookups} lookups each; "
              f"load average {os.getloadavg()[0]:.2f}")
        ours, _ = run([LODESTONE, "dht", "get-peers", ih, "--repeat", str(a.lookups), "--bootstrap", boot,
                       "--listen", f"127.0.0.1:{base + a.nodes + 1}"])
        theirs, _ = run(["/usr/bin/python3", LT_DHT, "lookup", "--info-hash", ih, "--bootstrap", boot,
                         "--repeat", str(a.lookups), "--port", str(base + a.nodes + 2)])
        print(f"median warm get_peers, command to first peer: lodestone {ours} ms, libtorrent {theirs} ms")
        if ours and theirs:
            print(f"ratio lodestone/libtorrent: {ours / theirs:.3f}")
        swarm.terminate()
        swarm.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
