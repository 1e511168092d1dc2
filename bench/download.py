#!/usr/bin/python3
# Debian's interpreter: it drives python3-libtorrent through tests/interop/lt_peer.py.
"""Download benchmark: Lodestone against libtorrent-rasterbar, same run.

  bench/download.py [--size-mib 1024] [--runs 3] [--reverse [--leecher lodestone]]

Makes SIZE MiB of random content in tmpfs (/dev/shm), a v1 torrent with
1 MiB pieces, and a libtorrent seeder (high_performance_seed preset) on
loopback TCP. Then it alternates a libtorrent leecher (same preset, through
tests/interop/lt_peer.py leech --lean) and a Lodestone leecher (`get
--json`), RUNS times each (at least 3), writing into tmpfs.

With --reverse it compares seeders instead: a Lodestone seeder and a
libtorrent seeder, each serving a libtorrent leecher (high-performance).
--leecher lodestone serves a Lodestone leecher instead: what each seeder
can deliver when a libtorrent leecher is not the bottleneck.

What is counted, the same way for both clients:
- Time: each leecher's own time to complete, from adding the torrent
  (libtorrent: just before add_torrent; Lodestone: the engine's start) to
  every piece verified (torrent_finished_alert / Lodestone's completion).
  Process start-up (Python, `import libtorrent`, the session; Lodestone's
  exec) is NOT in it. Also shown: the first payload byte and the rate from
  there (a libtorrent leecher dials a given peer on its 500 ms tick, so
  about half a second of its time is start-up whoever seeds).
- CPU of a leecher, from that same start point to completion:
  libtorrent's threads only (getrusage in its process: the whole process
  minus the Python thread that runs the polling loop; that thread's CPU is
  NOT counted, which favours libtorrent: the status() calls it makes cost
  libtorrent's network thread, and that IS counted). Lodestone: the whole
  process (/proc/PID/stat, 10 ms ticks) between its "started" and
  "completed" events. The whole-process figure from spawn to exit (wait4,
  Python start and the polling included for libtorrent) is shown as
  "process cpu", not used in the ratio.
- Memory: peak anonymous RSS (RssAnon, sampled every 5 ms from outside,
  the same for both). libtorrent 2.x maps the files it writes (tmpfs pages
  of the payload land in its RSS as shared memory), so max RSS (VmHWM) is
  ~1 GiB for it; that is shown but NOT compared. From libtorrent's peak
  the anon RSS of Python with libtorrent imported, before the session, is
  subtracted (shown as "base"); nothing is subtracted from Lodestone.
- Seeders (--reverse): both have the same state on disk: before the runs
  each seeder starts once and checks every piece (not timed: shown as
  "prepared"), then every measured start resumes from its own resume data
  (libtorrent: its write_resume_data/read_resume_data through lt_peer.py
  --resume; Lodestone: its resume file), so neither hashes 1 GiB per run;
  the script checks that each start resumed. The seeder's CPU is its
  process's CPU (/proc, 10 ms ticks) from the leecher's spawn to its exit,
  libtorrent's without its Python thread.
- Failures: a run that does not complete is printed as FAILED, left out
  of the medians (each median says how many runs it holds), and the
  script exits 1.

Both leechers run with MSE/PE as they come (libtorrent tries MSE first;
Lodestone answers it); --lt-no-encryption makes libtorrent skip its MSE
attempt. Only 127.0.0.1 is used.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

import benchlib
from benchlib import data_rate, rate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Benchmarks stay on this machine: no public DHT, no LPD on real interfaces.
os.environ["LODESTONE_LOCAL_ONLY"] = "1"
LT_PEER = os.path.join(ROOT, "tests", "interop", "lt_peer.py")
LODESTONE = os.path.join(ROOT, "target", "release", "lodestone")
LT_EXTRA = []
TICK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid, without_main=False):
    """CPU seconds of a live process (all its threads, dead ones included),
    from /proc; with without_main, minus its main thread's."""
    def ticks(path):
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    try:
        t = ticks(f"/proc/{pid}/stat")
        if without_main:
            t -= ticks(f"/proc/{pid}/task/{pid}/stat")
        return t / TICK
    except (OSError, IndexError, ValueError):
        return None


def rss_anon_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_child(cmd, timeout, marks=()):
    """Runs cmd; a reader thread takes its stdout line by line and, the
    moment a line holds one of `marks`, samples the process's CPU from
    /proc; the main thread samples its anonymous RSS every 5 ms."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines, at = [], {}

    def read():
        for line in p.stdout:
            for m in marks:
                if m in line and m not in at:
                    at[m] = proc_cpu(p.pid)
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak = 0.0
    deadline = t0 + timeout
    while True:
        a = rss_anon_mib(p.pid)
        if a is not None:
            peak = max(peak, a)
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.005)
    reader.join(10)
    return {
        "lines": lines,
        "marks": at,
        "wall_s": time.monotonic() - t0,
        "process_cpu_s": ru.ru_utime + ru.ru_stime,
        "max_rss_mib": ru.ru_maxrss / 1024,
        "anon_peak_mib": peak,
        "rc": os.waitstatus_to_exitcode(status),
    }


def start_seeder(kind, torrent, content_dir, port, resume):
    """A seeder; returns (process, seconds to ready, resumed?)."""
    t0 = time.monotonic()
    if kind == "lt":
        cmd = ["/usr/bin/python3", LT_PEER, "seed", "--perf", "--duration", "3600", "--resume", resume,
               "--torrent", torrent, "--content-dir", content_dir, "--listen", f"127.0.0.1:{port}"]
        ready = '"seeding"'
    else:
        cmd = [LODESTONE, "seed", "--json", "--listen", f"127.0.0.1:{port}", torrent, content_dir]
        ready = '"started"'
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    resumed = None
    for line in p.stdout:
        if ready in line:
            e = json.loads(line)
            resumed = e.get("resumed") if kind == "lt" else e.get("resume") == "resumed"
            break
    up = time.monotonic() - t0
    # keep draining so the seeder never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p, up, resumed


def stop(p):
    p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def leech(kind, torrent, save, seed_port):
    shutil.rmtree(save, ignore_errors=True)
    os.makedirs(save)
    if kind == "lt":
        cmd = ["/usr/bin/python3", LT_PEER, "leech", "--perf", "--no-verify", "--lean", *LT_EXTRA,
               "--timeout", "300", "--torrent", torrent, "--save", save,
               "--listen", f"127.0.0.1:{free_port()}", "--peer", f"127.0.0.1:{seed_port}"]
        r = run_child(cmd, 400)
    else:
        cmd = [LODESTONE, "get", "--json", "-o", save, "--peer", f"127.0.0.1:{seed_port}", torrent]
        r = run_child(cmd, 400, marks=('"event":"started"', '"event":"completed"'))
    last = benchlib.leecher_result(r, kind)
    if kind == "lt":
        base = last.get("rss_anon_kib_before_session")
        r["anon_base_mib"] = base / 1024 if base is not None else None
    else:
        a, b = r["marks"].get('"event":"started"'), r["marks"].get('"event":"completed"')
        r["cpu_s"] = b - a if a is not None and b is not None else None
        r["anon_base_mib"] = 0.0
    r["ok"] = r["ok"] and bool(r["transfer_s"])
    r["anon_own_mib"] = r["anon_peak_mib"] - (r["anon_base_mib"] or 0.0)
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
                    help="libtorrent leechers skip their MSE/PE attempt and speak plain BitTorrent")
    a = ap.parse_args()
    if a.runs < 3:
        ap.error("--runs must be at least 3 (a median of fewer is not one)")
    global LT_EXTRA
    LT_EXTRA = ["--no-encryption"] if a.lt_no_encryption else []

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "lodestone"], cwd=ROOT, check=True)
    work = "/dev/shm/lodestone-bench"
    shutil.rmtree(work, ignore_errors=True)
    content = os.path.join(work, "content")
    os.makedirs(content)
    data = os.path.join(content, "payload.bin")
    with open(data, "wb") as f:
        for _ in range(a.size_mib):
            f.write(os.urandom(MIB))
    torrent = os.path.join(work, "payload.torrent")
    subprocess.run([LODESTONE, "create", "--no-date", "--piece-size", "1M", "-o", torrent, data],
                   check=True, stdout=subprocess.DEVNULL)
    size = a.size_mib * MIB
    print(f"load average before: {' '.join('%.2f' % x for x in os.getloadavg())}; "
          f"{a.size_mib} MiB, 1 MiB pieces, loopback TCP, tmpfs")

    results = {}
    order = ["lt", "lodestone"]
    try:
        if not a.reverse:
            port = free_port()
            seeder, _, _ = start_seeder("lt", torrent, content, port, os.path.join(work, "lt.resume"))
            try:
                for i in range(a.runs):
                    for kind in (order if i % 2 == 0 else order[::-1]):
                        r = leech(kind, torrent, os.path.join(work, f"dl-{kind}"), port)
                        results.setdefault(kind, []).append(r)
                        report(kind + " leecher", i, r, size)
            finally:
                stop(seeder)
            summarize(results, size, "leecher", "libtorrent seeder")
        else:
            lt_resume = os.path.join(work, "lt.resume")
            # Lodestone vouches only for a file modified over 2 s ago.
            time.sleep(max(0.0, 3 - (time.time() - os.path.getmtime(data))))
            # Same state on disk for both: each checks everything once here
            # (not timed) and resumes from its own resume data in every run.
            for kind in order:
                p, up, _ = start_seeder(kind, torrent, content, free_port(), lt_resume)
                stop(p)
                print(f"prepared: {kind} seeder checked every piece and saved resume data ({up:.2f} s)")
            for i in range(a.runs):
                for kind in (order if i % 2 == 0 else order[::-1]):
                    port = free_port()
                    seeder, up, resumed = start_seeder(kind, torrent, content, port, lt_resume)
                    try:
                        c0 = proc_cpu(seeder.pid, without_main=kind == "lt")
                        r = leech(a.leecher, torrent, os.path.join(work, "dl"), port)
                        c1 = proc_cpu(seeder.pid, without_main=kind == "lt")
                    finally:
                        stop(seeder)
                    r["seeder_cpu_s"] = c1 - c0 if c0 is not None and c1 is not None else None
                    r["seeder_up_s"], r["seeder_resumed"] = up, resumed
                    if not resumed:
                        r["ok"] = False
                        print(f"run {i + 1} {kind} seeder did NOT start from its resume data: run counted as FAILED")
                    results.setdefault(kind, []).append(r)
                    report(f"{kind} seeder -> {a.leecher} leecher", i, r, size)
            who = "libtorrent" if a.leecher == "lt" else "Lodestone"
            summarize(results, size, "seeder", f"{who} leecher")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = sum(1 for rs in results.values() for r in rs if not r["ok"])
    if failed:
        print(f"FAILED: {failed} of {sum(len(rs) for rs in results.values())} runs did not complete")
        return 1
    return 0


def f(x, fmt):
    return fmt % x if x is not None else "?"


def report(label, i, r, size):
    if not r["ok"]:
        print(f"run {i + 1} {label:32s} FAILED (rc {r['rc']}, wall {r['wall_s']:.1f} s, "
              f"last line: {r['lines'][-1].strip() if r['lines'] else 'none'})", flush=True)
        return
    extra = ""
    if "seeder_cpu_s" in r:
        extra = f"  seeder cpu {f(r['seeder_cpu_s'], '%.2f')} s (up in {r['seeder_up_s']:.2f} s, resumed)"
    d = data_rate(r, size)
    print(f"run {i + 1} {label:32s} {r['transfer_s']:5.2f} s {rate(r, size):6.1f} MiB/s  "
          f"first byte {f(r['first_byte_s'], '%.2f')} s, from there {f(d, '%6.1f')} MiB/s  "
          f"cpu {f(r['cpu_s'], '%.2f')} s (process {r['process_cpu_s']:.2f})  "
          f"anon rss {r['anon_own_mib']:5.1f} MiB (peak {r['anon_peak_mib']:.1f} - base "
          f"{f(r['anon_base_mib'], '%.1f')}; max rss {r['max_rss_mib']:.1f}){extra}", flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(results, size, role, other):
    med = {}
    for kind, rs in results.items():
        ok = [r for r in rs if r["ok"]]
        m = med[kind] = {
            "rate": median(rate(r, size) for r in ok),
            "data": median(data_rate(r, size) for r in ok),
            "cpu": median(r["cpu_s"] for r in ok),
            "anon": median(r["anon_own_mib"] for r in ok),
            "seeder_cpu": median(r.get("seeder_cpu_s") for r in ok),
        }
        extra = f", seeder cpu {f(m['seeder_cpu'], '%.2f')} s" if role == "seeder" else ""
        whose = "" if role == "leecher" else other + " "
        print(f"median {kind:10s} {role} ({len(ok)}/{len(rs)} runs ok): {f(m['rate'], '%.1f')} MiB/s, "
              f"from the first byte {f(m['data'], '%.1f')} MiB/s, {whose}cpu {f(m['cpu'], '%.2f')} s"
              f", {whose}anon rss {f(m['anon'], '%.1f')} MiB{extra}")
    l, t = med.get("lodestone"), med.get("lt")
    if not (l and t and l["rate"] and t["rate"]):
        print("no ratio: a side has no completed run")
        return

    def ratio(k):
        return f"{l[k] / t[k]:.2f}x" if l[k] and t[k] else "?"
    who = "leechers'" if role == "leecher" else f"the {other}'s"
    print(f"ratio lodestone/libtorrent ({role}s, with a {other}): rate {ratio('rate')}, "
          f"from the first byte {ratio('data')}; cpu {ratio('cpu')}, anon rss {ratio('anon')} [{who}]"
          + (f"; seeder cpu {ratio('seeder_cpu')}" if role == "seeder" else ""))


if __name__ == "__main__":
    sys.exit(main())
