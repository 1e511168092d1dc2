#!/usr/bin/env python3
"""Upload-limit sharing benchmark: one Lodestone seeder with --upload-limit,
two Lodestone leechers started together; how evenly the limit is shared.

  bench/upload_share.py [--runs 3] [--size-mib 2] [--limit 1M] [--lodestone BIN]

What is counted: each leecher's own time_to_complete_s from its --json
summary (from its process start to its last piece verified), and the ratio
fast/slow of the two (1.0: both finished together; the limit shared in
turn). Each run has fresh folders and a fresh seeder, which has hashed its
content before the leechers start (its start-up is not counted). The two
leechers are spawned back to back; the gap between their spawns is printed
(it is in neither time). No PEX, no DHT, no LPD: the seeder is the only
source, so the limit is all there is to share.

Not counted: process start-up before a leecher's clock starts, the
seeder's hashing. A failed run (a leecher that exits non-zero, is
incomplete, times out, or has bytes that differ from the original) is
printed, left out of the medians, and makes the script exit 1.

This was the test `an_upload_limit_is_shared_between_leechers`, which
asserted the two within 15%: a measurement, so it lives here. The test
keeps what cannot flake (both finish, right bytes, the limit's floor).

Only 127.0.0.1 is used; content goes under /dev/shm when it exists.
"""
import argparse
import filecmp
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
os.environ["LODESTONE_LOCAL_ONLY"] = "1"
LODESTONE = os.path.join(ROOT, "target", "release", "lodestone")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_started(proc, timeout):
    """Read the seeder's --json lines until 'started' (bounded); keep
    draining afterwards so its pipe never fills."""
    found = threading.Event()

    def read():
        for line in proc.stdout:
            try:
                if json.loads(line).get("event") == "started":
                    found.set()
            except ValueError:
                pass

    threading.Thread(target=read, daemon=True).start()
    return found.wait(timeout)


def one_run(binary, size, limit, timeout):
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    work = tempfile.mkdtemp(prefix="upload_share.", dir=base)
    seeder = None
    leechers = []
    try:
        src = os.path.join(work, "src")
        os.makedirs(src)
        content = os.path.join(src, "one.bin")
        with open(content, "wb") as f:
            f.write(os.urandom(size))
        torrent = os.path.join(work, "one.torrent")
        subprocess.run(
            [binary, "create", "--no-date", "--force", "--piece-size", "256K", "-o", torrent, content],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        port = free_port()
        seeder = subprocess.Popen(
            [binary, "seed", "--json", "--no-pex", "--seed-time", str(int(timeout) + 60),
             "--upload-limit", limit, "--listen", f"127.0.0.1:{port}", torrent, src],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        if not wait_started(seeder, 60):
            return {"error": "seeder did not start within 60 s"}
        spawned = []
        for name in ("a", "b"):
            spawned.append(time.monotonic())
            leechers.append(subprocess.Popen(
                [binary, "get", "--json", "--no-pex", "--peer", f"127.0.0.1:{port}",
                 "-o", os.path.join(work, name), torrent],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ))
        times = []
        for name, p in zip(("a", "b"), leechers):
            try:
                out, err = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
                last = [l for l in out.splitlines() if '"progress"' in l][-1:]
                return {"error": f"leecher {name} still running after {timeout} s; last: {last}"}
            if p.returncode != 0:
                return {"error": f"leecher {name} exited {p.returncode}: {err.strip()[-300:]}"}
            summary = json.loads(out.strip().splitlines()[-1])
            if not summary.get("complete") or summary.get("time_to_complete_s") is None:
                return {"error": f"leecher {name} incomplete: {summary}"}
            if not filecmp.cmp(content, os.path.join(work, name, "one.bin"), shallow=False):
                return {"error": f"leecher {name}: bytes differ from the original"}
            times.append(summary["time_to_complete_s"])
        return {"a": times[0], "b": times[1], "spawn_gap": spawned[1] - spawned[0]}
    finally:
        for p in leechers + ([seeder] if seeder else []):
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=2, help="content size (each leecher gets all of it)")
    ap.add_argument("--limit", default="1M", help="the seeder's --upload-limit")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per leecher")
    ap.add_argument("--lodestone", default=None, help="binary (default: target/release/lodestone, built)")
    a = ap.parse_args()
    if a.runs < 3:
        ap.error("--runs must be at least 3 (medians)")
    binary = a.lodestone
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "lodestone"], cwd=ROOT, check=True)
        binary = LODESTONE
    print(f"# {a.size_mib} MiB to each of two leechers through one --upload-limit {a.limit}; {binary}")
    print(f"{'run':>4} {'a (s)':>8} {'b (s)':>8} {'fast/slow':>10} {'spawn gap (ms)':>15}")
    ok, failed = [], 0
    for i in range(1, a.runs + 1):
        r = one_run(binary, a.size_mib << 20, a.limit, a.timeout)
        if "error" in r:
            failed += 1
            print(f"{i:>4} FAILED: {r['error']}")
            continue
        fast, slow = min(r["a"], r["b"]), max(r["a"], r["b"])
        r["ratio"] = fast / slow
        ok.append(r)
        print(f"{i:>4} {r['a']:>8.2f} {r['b']:>8.2f} {r['ratio']:>10.3f} {r['spawn_gap'] * 1000:>15.1f}")
    if ok:
        med = lambda k: statistics.median(k(r) for r in ok)
        print(f"median over {len(ok)} runs: fast {med(lambda r: min(r['a'], r['b'])):.2f} s, "
              f"slow {med(lambda r: max(r['a'], r['b'])):.2f} s, fast/slow {med(lambda r: r['ratio']):.3f}")
    print(f"failed runs: {failed} of {a.runs}")
    sys.exit(1 if failed or not ok else 0)


if __name__ == "__main__":
    main()
