#!/usr/bin/python3
# Debian's interpreter: the libtorrent roles come from tests/interop/lt_dht.py.
"""Magnet -> verified metadata through a private DHT, timed from process spawn.

  bench/metadata.py [--runs 5] [--nodes 8]

Starts N libtorrent DHT nodes and one libtorrent seeder on 127.0.0.1, then
alternates a Lodestone leecher (`lodestone get MAGNET --bootstrap ...`) and a
libtorrent leecher (lt_dht.py metadata), each given only the bare magnet and
one DHT node. The time is from spawning the process until it reports
verified metadata. Prints every run, the medians and the ratio.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def timed(cmd, marker, timeout=60):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    found = None
    try:
        for line in p.stdout:
            if marker in line:
                found = time.monotonic() - t0
                break
            if time.monotonic() - t0 > timeout:
                break
    finally:
        p.kill()
        p.wait()
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--nodes", type=int, default=8)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "lodestone"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="lodestone-meta-", dir="/dev/shm")
    try:
        content, torrent, ih = make_torrent(work, "payload.bin", 16 << 20)
        magnet = f"magnet:?xt=urn:btih:{ih}"
        base = free_block(a.nodes + 1)
        swarm = start_lt_swarm(a.nodes, base, torrent, content)
        boot = f"127.0.0.1:{base + 3}"
        print(f"{a.nodes} libtorrent DHT nodes + 1 libtorrent seeder on 127.0.0.1; bootstrap {boot}; "
              f"load average {os.getloadavg()[0]:.2f}")
        res = {"lodestone": [], "libtorrent": []}
        for i in range(a.runs):
            order = ["lodestone", "libtorrent"] if i % 2 == 0 else ["libtorrent", "lodestone"]
            for who in order:
                out = os.path.join(work, f"dl-{who}-{i}")
                if who == "lodestone":
                    cmd = [LODESTONE, "get", "--json", magnet, "-o", out, "--bootstrap", boot,
                           "--listen", "127.0.0.1:0"]
                    t = timed(cmd, '"event":"metadata"')
                else:
                    cmd = ["/usr/bin/python3", LT_DHT, "metadata", "--magnet", magnet, "--bootstrap", boot,
                           "--save", out]
                    t = timed(cmd, '"ok": true')
                shutil.rmtree(out, ignore_errors=True)
                res[who].append(t)
                print(f"run {i + 1} {who:10s} {'%.4f s' % t if t else 'FAILED'}", flush=True)
        meds = {k: statistics.median([x for x in v if x is not None] or [float('nan')]) for k, v in res.items()}
        for k, m in meds.items():
            print(f"median {k:10s} {m:.4f} s  ({sum(1 for x in res[k] if x)}/{len(res[k])} succeeded)")
        print(f"ratio lodestone/libtorrent: {meds['lodestone'] / meds['libtorrent']:.3f}")
        swarm.terminate()
        swarm.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
