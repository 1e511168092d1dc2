#!/usr/bin/python3
# Debian's interpreter: it drives python3-libtorrent through tests/interop/lt_peer.py.
"""Download benchmark: Lodestone against libtorrent-rasterbar, same run.

  bench/download.py [--size-mib 1024] [--runs 3] [--reverse [--leecher lodestone]]

Makes SIZE MiB of random content in tmpfs (/dev/shm), a v1 torrent with
1 MiB pieces, and a libtorrent seeder (high_performance_seed preset) on
loopback TCP. Then it alternates a libtorrent leecher (same preset) and a
Lodestone leecher, RUNS times each, writing into tmpfs, and prints MiB/s,
CPU seconds and max RSS of each leecher process, the medians and the ratio.

With --reverse it compares seeders instead: a Lodestone seeder and a
libtorrent seeder, each serving a libtorrent leecher (high-performance).
The libtorrent leecher tops out near 500 MiB/s here whoever seeds, so
--leecher lodestone serves a Lodestone leecher instead: what each seeder
can deliver when the leecher is not the bottleneck.

Only 127.0.0.1 is used.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Benchmarks stay on this machine: no public DHT, no LPD on real interfaces.
os.environ["LODESTONE_LOCAL_ONLY"] = "1"
LT_PEER = os.path.join(ROOT, "tests", "interop", "lt_peer.py")
LODESTONE = os.path.join(ROOT, "target", "release", "lodestone")
LT_EXTRA = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_child(cmd, timeout):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = t0 + timeout
    out = b""
    os.set_blocking(p.stdout.fileno(), False)
    while True:
        try:
            chunk = p.stdout.read()
            if chunk:
                out += chunk
        except BlockingIOError:
            pass
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.005)
    try:
        rest = p.stdout.read()
        if rest:
            out += rest
    except BlockingIOError:
        pass
    wall = time.monotonic() - t0
    return {
        "out": out.decode(errors="replace"),
        "wall_s": wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "rss_mib": ru.ru_maxrss / 1024,
        "rc": os.waitstatus_to_exitcode(status),
    }


def start_seeder(kind, torrent, content_dir, port):
    if kind == "lt":
        cmd = ["/usr/bin/python3", LT_PEER, "seed", "--perf", "--duration", "3600",
               "--torrent", torrent, "--content-dir", content_dir, "--listen", f"127.0.0.1:{port}"]
        ready = "READY"
    else:
        cmd = [LODESTONE, "seed", "--json", "--listen", f"127.0.0.1:{port}", torrent, content_dir]
        ready = '"started"'
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if ready in line:
            break
    # keep draining so the seeder never blocks on a full pipe
    import threading
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p


def leech(kind, torrent, save, seed_port):
    shutil.rmtree(save, ignore_errors=True)
    os.makedirs(save)
    if kind == "lt":
        cmd = ["/usr/bin/python3", LT_PEER, "leech", "--perf", "--no-verify", *LT_EXTRA, "--timeout", "300", "--torrent", torrent,
               "--save", save, "--listen", f"127.0.0.1:{free_port()}", "--peer", f"127.0.0.1:{seed_port}"]
    else:
        cmd = [LODESTONE, "get", "--json", "-o", save, "--peer", f"127.0.0.1:{seed_port}", torrent]
    r = run_child(cmd, 400)
    lines = [json.loads(l) for l in r["out"].splitlines() if l.startswith("{")]
    last = lines[-1] if lines else {}
    if kind == "lt":
        ok = last.get("ok") is True
        t = last.get("time_to_complete_s")
        r["first_byte_s"] = last.get("first_byte_s")
    else:
        ok = last.get("complete") is True and r["rc"] == 0
        t = last.get("time_to_complete_s")
        r["first_byte_s"] = last.get("first_byte_s")
    r.update(ok=ok, transfer_s=t)
    shutil.rmtree(save, ignore_errors=True)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reverse", action="store_true")
    ap.add_argument("--leecher", choices=["lt", "lodestone"], default="lt",
                    help="with --reverse: who downloads from the two seeders")
    ap.add_argument("--lt-no-encryption", action="store_true",
                    help="libtorrent leechers skip their MSE/PE attempt (Lodestone has no MSE yet)")
    a = ap.parse_args()
    global LT_EXTRA
    LT_EXTRA = ["--no-encryption"] if a.lt_no_encryption else []

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "lodestone"], cwd=ROOT, check=True)
    work = "/dev/shm/lodestone-bench"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "content"))
    data = os.path.join(work, "content", "payload.bin")
    with open(data, "wb") as f:
        for _ in range(a.size_mib):
            f.write(os.urandom(1 << 20))
    torrent = os.path.join(work, "payload.torrent")
    subprocess.run([LODESTONE, "create", "--no-date", "--piece-size", "1M", "-o", torrent, data],
                   check=True, stdout=subprocess.DEVNULL)
    size = a.size_mib * (1 << 20)
    print(f"load average before: {os.getloadavg()[0]:.2f}; {a.size_mib} MiB, 1 MiB pieces, loopback TCP, tmpfs")

    results = {}
    if not a.reverse:
        port = free_port()
        seeder = start_seeder("lt", torrent, os.path.join(work, "content"), port)
        order = ["lt", "lodestone"]
        try:
            for i in range(a.runs):
                for kind in (order if i % 2 == 0 else order[::-1]):
                    r = leech(kind, torrent, os.path.join(work, f"dl-{kind}"), port)
                    results.setdefault(kind, []).append(r)
                    report(kind + " leecher", i, r, size)
        finally:
            seeder.terminate()
            seeder.wait()
        summarize(results, size, "leecher", "libtorrent seeder")
    else:
        order = ["lt", "lodestone"]
        for i in range(a.runs):
            for kind in (order if i % 2 == 0 else order[::-1]):
                port = free_port()
                seeder = start_seeder(kind, torrent, os.path.join(work, "content"), port)
                try:
                    r = leech(a.leecher, torrent, os.path.join(work, "dl"), port)
                finally:
                    seeder.terminate()
                    _, _, ru = os.wait4(seeder.pid, 0)
                r["seeder_cpu_s"] = ru.ru_utime + ru.ru_stime
                results.setdefault(kind, []).append(r)
                report(f"{kind} seeder -> {a.leecher} leecher", i, r, size)
        who = "libtorrent" if a.leecher == "lt" else "Lodestone"
        summarize(results, size, "seeder", f"{who} leecher")
    shutil.rmtree(work, ignore_errors=True)


def rate(r, size):
    return size / (1 << 20) / r["transfer_s"] if r["ok"] and r["transfer_s"] else 0.0


def data_rate(r, size):
    """MiB/s from the leecher's first payload byte to its completion: the
    transfer without the leecher's start-up (libtorrent connects on its
    500 ms tick; Lodestone dials at once)."""
    fb = r.get("first_byte_s")
    if not (r["ok"] and r["transfer_s"] and fb is not None and r["transfer_s"] > fb):
        return None
    return size / (1 << 20) / (r["transfer_s"] - fb)


def report(label, i, r, size):
    seeder = f"  seeder cpu {r['seeder_cpu_s']:5.2f} s" if "seeder_cpu_s" in r else ""
    d = data_rate(r, size)
    if d is not None:
        seeder += f"  first byte {r['first_byte_s']:.2f} s, from there {d:6.1f} MiB/s"
    print(f"run {i + 1} {label:34s} ok={r['ok']!s:5} transfer {r['transfer_s'] or 0:6.2f} s "
          f"{rate(r, size):7.1f} MiB/s  wall {r['wall_s']:6.2f} s  cpu {r['cpu_s']:5.2f} s  "
          f"max rss {r['rss_mib']:7.1f} MiB{seeder}", flush=True)


def summarize(results, size, role, other):
    med = {}
    for kind, rs in results.items():
        med[kind] = {
            "rate": statistics.median(rate(r, size) for r in rs),
            "cpu": statistics.median(r["cpu_s"] for r in rs),
            "rss": statistics.median(r["rss_mib"] for r in rs),
            "seeder_cpu": statistics.median(r.get("seeder_cpu_s", 0.0) for r in rs),
        }
        data = [data_rate(r, size) for r in rs]
        med[kind]["data"] = statistics.median(data) if None not in data else None
        m = med[kind]
        extra = f", seeder process cpu {m['seeder_cpu']:.2f} s" if role == "seeder" else ""
        print(f"median {kind:10s} {role}: {m['rate']:7.1f} MiB/s, cpu {m['cpu']:.2f} s "
              f"({m['cpu'] / (size / (1 << 30)):.2f} s/GiB), max rss {m['rss']:.1f} MiB{extra}")
    if "lt" in med and "lodestone" in med and med["lt"]["rate"] > 0:
        l, t = med["lodestone"], med["lt"]
        note = "CPU/RSS are the leecher processes'" if role == "leecher" else f"CPU/RSS are the {other}'s"
        print(f"ratio lodestone/libtorrent ({role}s, with a {other}): rate {l['rate'] / t['rate']:.2f}x, "
              f"cpu {l['cpu'] / t['cpu']:.2f}x, rss {l['rss'] / max(t['rss'], 1e-9):.2f}x  [{note}]")
        if l["data"] and t["data"]:
            print(f"ratio from the first byte (median {l['data']:.1f} vs {t['data']:.1f} MiB/s): "
                  f"{l['data'] / t['data']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
