#!/usr/bin/python3
# Debian's interpreter: it drives python3-libtorrent through bench/lt_utp.py.
"""uTP (BEP 29) benchmark: Lodestone against libtorrent-rasterbar and
against its own TCP, same run. Four parts (--parts, default ABCD):

  bench/utp.py [--parts ABCD] [--runs 3] [--size 256M] [--size-c 1G] [--size-d 16M]
               [--rtt-ms 300] [--loss 0.01] [--timeout 600] [--lodestone BIN] [--no-build]

A  leechers: a Lodestone uTP leecher (`get --no-tcp`) and a libtorrent
   uTP-only leecher, alternating, each downloading --size from the same
   libtorrent uTP-only seeder (one seeder process for the whole part).
B  seeders: a Lodestone uTP seeder (`seed --no-tcp`) and a libtorrent
   uTP-only seeder, alternating, each serving --size to a libtorrent
   uTP-only leecher; a fresh seeder per run, from its own resume data.
C  Lodestone to Lodestone, --size-c: over uTP (`--no-tcp` on both) and
   over TCP (`--no-utp` on both), alternating; ratio uTP/TCP (goal >= 0.5)
   and each process's CPU per GiB, user and system apart, and by thread.
D  a far, lossy peer, --size-d: between leecher and seeder a userspace
   relay on loopback (bench/far_peer.py) holds every datagram for
   RTT/2 each way and drops each one with probability --loss (both ways).
   Lodestone to Lodestone over uTP, libtorrent to libtorrent over uTP
   (uTP-only both), and Lodestone to Lodestone over TCP through
   far_peer.py's TCP proxy with the same delay: a byte-stream proxy
   cannot drop packets, so the TCP row has the delay and NOT the loss (it
   is a reference, not a like-for-like). Goal: Lodestone uTP >= 1.3x
   libtorrent uTP. The relay's drop decisions come from a generator
   seeded with the run's number, so every client of a run meets the same
   sequence of drop decisions. The relay also drops datagrams that would
   not fit a --mtu link (default 1500: a far path is not loopback, whose
   65,536-byte MTU lets uTP's path-MTU probing settle on 16 KiB packets);
   they are counted as "over the MTU".

libtorrent runs through bench/lt_utp.py: tests/interop/lt_peer.py's
seed/leech roles (high_performance_seed preset, --perf; the leecher
--lean --no-verify) with TCP off and uTP on, in and out. Lodestone runs
the release binary with --json --no-dht --no-lpd. Only 127.0.0.1 is
used; payloads and downloads are in tmpfs (/dev/shm).

What is counted, the same way for every leecher: its own time to
complete, in its own process, from adding the torrent (libtorrent: just
before add_torrent; Lodestone: the engine's start) to every piece
verified. Process start-up is NOT in it. The first payload byte is shown
too, and the rate from there ("data"). CPU of a leecher: from that start
to completion (libtorrent: its process minus the Python thread that
polls it; Lodestone: the whole process, /proc, 10 ms ticks, read when
its "started" and "completed" lines arrive). CPU of a seeder: its
process (libtorrent's without its Python thread) from the leecher's
spawn to the leecher's exit. Seeders start from the same state: before a
part, each kind of seeder starts once and checks every piece (not timed,
printed as "prepared"), then every measured start resumes from its own
resume data, checked (a start that did not resume is a FAILED run).
Runs alternate (A/B/C: the order flips every run; D: the three rotate).
A run that does not complete is printed as FAILED, left out of the
medians (each says how many runs it holds) and the script exits 1.
Also shown per run: the kernel's UDP receive/send buffer errors
(/proc/net/snmp, machine-wide) during it: a datagram the kernel dropped
is a loss neither client chose.

Fewer than 3 runs is allowed for a sanity check; the output then says
that its "medians" are of fewer than 3 runs.
"""
import argparse
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time

import benchlib
import far_peer
from benchlib import MIB, data_rate, median, parse_size, rate

ROOT = benchlib.ROOT
# Benchmarks stay on this machine: no public DHT, no LPD on real interfaces.
os.environ["LODESTONE_LOCAL_ONLY"] = "1"
PY = "/usr/bin/python3"
LT_UTP = os.path.join(ROOT, "bench", "lt_utp.py")
TICK = benchlib.TICK
GIB = 1 << 30
WORK = "/dev/shm/lodestone-bench-utp"
LODESTONE = None  # set in main
COMMANDS = {}  # role -> first command line used for it


def free_port():
    """A port free for both TCP and UDP on 127.0.0.1 (uTP and the DHT bind
    the UDP side of a --listen port)."""
    for _ in range(100):
        p = benchlib.free_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
    raise RuntimeError("no port free for both TCP and UDP")


def cpu_split(pid, without_main=False):
    """(user, system) CPU seconds of a live process (all threads), or None;
    with without_main, minus its main thread's."""
    def ticks(path):
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])
    try:
        u, s = ticks(f"/proc/{pid}/stat")
        if without_main:
            mu, ms = ticks(f"/proc/{pid}/task/{pid}/stat")
            u, s = u - mu, s - ms
        return u / TICK, s / TICK
    except (OSError, IndexError, ValueError):
        return None


def thread_cpu(pid):
    """CPU seconds (user+system) of a live process's threads, summed by
    thread name (the live threads only)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
            name = head.split("(", 1)[1]
            fields = rest.split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError, ValueError):
            pass
    return out


def snap(pid, without_main=False):
    return {"cpu": cpu_split(pid, without_main), "threads": thread_cpu(pid)}


def diff(a, b):
    """What a process spent between two snaps: user, system, by thread."""
    if not a or not b or a["cpu"] is None or b["cpu"] is None:
        return None
    threads = {k: v - a["threads"].get(k, 0.0) for k, v in b["threads"].items()}
    return {"user": b["cpu"][0] - a["cpu"][0], "sys": b["cpu"][1] - a["cpu"][1],
            "threads": {k: v for k, v in threads.items() if v > 0}}


def udp_errors():
    """Machine-wide (RcvbufErrors, SndbufErrors) of UDP, from /proc/net/snmp."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [l.split() for l in f if l.startswith("Udp:")]
        d = dict(zip(rows[0][1:], (int(x) for x in rows[1][1:])))
        return d.get("RcvbufErrors", 0), d.get("SndbufErrors", 0)
    except (OSError, IndexError, ValueError):
        return None


def note_cmd(role, cmd):
    COMMANDS.setdefault(role, " ".join(cmd))


class Lines:
    """A child's stdout, read by a thread into a queue (so waiting for a
    line is bounded in time), the moment of `marks` snapped from /proc."""

    def __init__(self, p, marks=(), without_main=False):
        self.q, self.lines, self.at = queue.Queue(), [], {}
        self.p = p

        def read():
            for line in p.stdout:
                for m in marks:
                    if m in line and m not in self.at:
                        self.at[m] = snap(p.pid, without_main)
                self.lines.append(line)
                self.q.put(line)
            self.q.put(None)
        self.t = threading.Thread(target=read, daemon=True)
        self.t.start()

    def wait_for(self, text, timeout):
        """The first line holding `text`, or None (child exited or timeout)."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            if text in line:
                return line


def lodestone_transport(transport):
    return ["--no-tcp"] if transport == "utp" else ["--no-utp"]


def start_seeder(kind, transport, torrent, content, port, lt_resume, role):
    """A seeder on 127.0.0.1:port; returns (process, Lines, seconds to
    ready, resumed?). libtorrent: uTP only (transport must be utp)."""
    t0 = time.monotonic()
    if kind == "lt":
        assert transport == "utp"
        cmd = [PY, LT_UTP, "seed", "--perf", "--duration", "3600", "--resume", lt_resume,
               "--torrent", torrent, "--content-dir", content, "--listen", f"127.0.0.1:{port}"]
        ready = '"seeding"'
    else:
        cmd = [LODESTONE, "seed", "--json", "--no-dht", "--no-lpd", *lodestone_transport(transport),
               "--listen", f"127.0.0.1:{port}", torrent, content]
        ready = '"started"'
    note_cmd(role, cmd)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = Lines(p)
    line = out.wait_for(ready, 600)
    resumed = None
    if line:
        e = json.loads(line)
        resumed = e.get("resumed") if kind == "lt" else e.get("resume") == "resumed"
    return p, out, time.monotonic() - t0, resumed if line else None


def stop(p):
    benchlib.stop(p, 15, 30)


def prepare_seeders(kinds, torrent, content, lt_resume, data):
    """Each kind of seeder checks every piece once (not timed) and saves
    its resume data, so every measured start is the same: a resume."""
    # Lodestone vouches only for a file modified over 2 s ago.
    time.sleep(max(0.0, 3 - (time.time() - os.path.getmtime(data))))
    for kind, transport in kinds:
        p, _, up, _ = start_seeder(kind, transport, torrent, content, free_port(), lt_resume,
                                   f"{kind} {transport} seeder (prepare)")
        stop(p)
        print(f"prepared: {kind} seeder checked every piece and saved resume data ({up:.2f} s)", flush=True)


def leech(kind, transport, torrent, save, port, timeout, role):
    """One download; returns a result dict (ok, transfer_s, first_byte_s,
    cpu_s, cpu user/sys/threads for Lodestone, rc, wall_s, lines)."""
    shutil.rmtree(save, ignore_errors=True)
    os.makedirs(save)
    if kind == "lt":
        assert transport == "utp"
        cmd = [PY, LT_UTP, "leech", "--perf", "--no-verify", "--lean", "--timeout", str(timeout),
               "--torrent", torrent, "--save", save, "--listen", f"127.0.0.1:{free_port()}",
               "--peer", f"127.0.0.1:{port}"]
        marks = ()
    else:
        cmd = [LODESTONE, "get", "--json", "--no-dht", "--no-lpd", *lodestone_transport(transport),
               "--listen", f"127.0.0.1:{free_port()}", "-o", save, "--peer", f"127.0.0.1:{port}", torrent]
        marks = ('"event":"started"', '"event":"completed"')
    note_cmd(role, cmd)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = Lines(p, marks)
    deadline = t0 + timeout + 30
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.02)
    out.t.join(10)
    r = {"lines": out.lines, "wall_s": time.monotonic() - t0, "rc": os.waitstatus_to_exitcode(status),
         "process_cpu_s": ru.ru_utime + ru.ru_stime, "leecher_cpu": None}
    benchlib.leecher_result(r, kind)
    if kind != "lt":
        d = diff(out.at.get(marks[0]), out.at.get(marks[1]))
        r["leecher_cpu"] = d
        r["cpu_s"] = d["user"] + d["sys"] if d else None
    r["ok"] = r["ok"] and bool(r["transfer_s"])
    shutil.rmtree(save, ignore_errors=True)
    return r


def make_payload(name, size, piece):
    content = os.path.join(WORK, name, "content")
    os.makedirs(content)
    data = os.path.join(content, "payload.bin")
    with open(data, "wb") as f:
        left = size
        while left:
            n = min(left, MIB)
            f.write(os.urandom(n))
            left -= n
    torrent = os.path.join(WORK, name, "payload.torrent")
    subprocess.run([LODESTONE, "create", "--no-date", "--piece-size", piece, "-o", torrent, data],
                   check=True, stdout=subprocess.DEVNULL)
    return content, data, torrent


def fmt(x, f):
    return f % x if x is not None else "?"


def measured(label, i, r, size, extra=""):
    """Prints one run; returns r."""
    udp = r.get("udp_errors")
    udp_s = f"  kernel udp buf errors rcv {udp[0]} snd {udp[1]}" if udp else ""
    if not r["ok"]:
        last = r["lines"][-1].strip() if r["lines"] else "none"
        print(f"run {i + 1} {label:34s} FAILED (rc {r['rc']}, wall {r['wall_s']:.1f} s, "
              f"last line: {last[:300]}){extra}{udp_s}", flush=True)
        return r
    print(f"run {i + 1} {label:34s} {r['transfer_s']:7.2f} s {rate(r, size):7.2f} MiB/s  first byte "
          f"{fmt(r['first_byte_s'], '%.2f')} s, data {fmt(data_rate(r, size), '%.2f')} MiB/s  "
          f"leecher cpu {fmt(r['cpu_s'], '%.2f')} s{extra}{udp_s}", flush=True)
    return r


def with_udp(fn):
    """Runs fn(); the kernel's UDP buffer errors during it go in its result."""
    a = udp_errors()
    r = fn()
    b = udp_errors()
    r["udp_errors"] = (b[0] - a[0], b[1] - a[1]) if a and b else None
    return r


def seeded_run(kind, transport, leecher, torrent, content, lt_resume, size, timeout, save, via=None,
               seeder_role=None, leecher_role=None):
    """A fresh seeder (from its resume data), one leecher to it (through
    `via(port) -> port` when given), the seeder stopped; the seeder's CPU
    over the leecher's life goes in the result."""
    port = free_port()
    p, _, up, resumed = start_seeder(kind, transport, torrent, content, port, lt_resume, seeder_role)
    try:
        s0 = snap(p.pid, without_main=kind == "lt")
        target = via(port) if via else port
        r = with_udp(lambda: leech(leecher, transport, torrent, save, target, timeout, leecher_role))
        s1 = snap(p.pid, without_main=kind == "lt")
    finally:
        stop(p)
    r["seeder_cpu"] = diff(s0, s1)
    r["seeder_up_s"], r["seeder_resumed"] = up, resumed
    if not resumed:
        r["ok"] = False
        print(f"{kind} seeder did NOT start from its resume data (or not at all): run counted as FAILED")
    return r


def cpu_total(c):
    return c["user"] + c["sys"] if c else None


def table(title, rows, size, base_key, base_name, ratio_name):
    """rows: [(key, label, [results])]; prints medians and ratios to base_key."""
    print(f"\n{title}")
    print(f"  {'':34s} {'runs ok':>7s} {'time s':>8s} {'MiB/s':>8s} {'data MiB/s':>10s} "
          f"{'first byte s':>12s} {'leecher cpu s':>13s} {'seeder cpu s':>12s}")
    med = {}
    for key, label, rs in rows:
        ok = [r for r in rs if r["ok"]]
        m = med[key] = {
            "time": median(r["transfer_s"] for r in ok),
            "rate": median(rate(r, size) for r in ok),
            "data": median(data_rate(r, size) for r in ok),
            "fb": median(r["first_byte_s"] for r in ok),
            "lcpu": median(r["cpu_s"] for r in ok),
            "scpu": median(cpu_total(r.get("seeder_cpu")) for r in ok),
        }
        few = "" if len(ok) >= 3 else "  (median of < 3 runs: sanity only)"
        print(f"  {label:34s} {f'{len(ok)}/{len(rs)}':>7s} {fmt(m['time'], '%8.2f')} {fmt(m['rate'], '%8.2f')} "
              f"{fmt(m['data'], '%10.2f')} {fmt(m['fb'], '%12.2f')} {fmt(m['lcpu'], '%13.2f')} "
              f"{fmt(m['scpu'], '%12.2f')}{few}")
    b = med.get(base_key)
    for key, label, _ in rows:
        if key == base_key:
            continue
        m = med[key]
        goal = ratio_name.get(key) if isinstance(ratio_name, dict) else ratio_name
        if b and b["rate"] and m["rate"]:
            d = f"{m['data'] / b['data']:.2f}x" if m["data"] and b["data"] else "?"
            print(f"  ratio {label} / {base_name}: {m['rate'] / b['rate']:.2f}x (from the first byte {d})"
                  + (f"  [{goal}]" if goal else ""))
        else:
            print(f"  ratio {label} / {base_name}: none (a side has no completed run)")
    return med


def alternate(i, order):
    return order if i % 2 == 0 else order[::-1]


def part_a(a):
    print(f"\n== A: leechers over uTP from one libtorrent uTP-only seeder, {a.size // MIB} MiB, 1 MiB pieces")
    content, data, torrent = make_payload("a", a.size, "1M")
    lt_resume = os.path.join(WORK, "a", "lt.resume")
    prepare_seeders([("lt", "utp")], torrent, content, lt_resume, data)
    port = free_port()
    seeder, _, up, resumed = start_seeder("lt", "utp", torrent, content, port, lt_resume, "A seeder: libtorrent uTP")
    print(f"libtorrent uTP seeder up in {up:.2f} s, resumed: {resumed}", flush=True)
    res = {"lodestone": [], "lt": []}
    try:
        if not resumed:
            print("A: the seeder did not start from its resume data: part FAILED")
            return {"lodestone": [], "lt": []}, 1
        for i in range(a.runs):
            for kind in alternate(i, ["lt", "lodestone"]):
                s0 = snap(seeder.pid, True)
                r = with_udp(lambda: leech(kind, "utp", torrent, os.path.join(WORK, "a", "dl"), port, a.timeout,
                                           f"A leecher: {kind} uTP"))
                r["seeder_cpu"] = diff(s0, snap(seeder.pid, True))
                res[kind].append(measured(f"{kind} uTP leecher", i, r, a.size,
                                          f"  seeder cpu {fmt(cpu_total(r['seeder_cpu']), '%.2f')} s"))
    finally:
        stop(seeder)
        shutil.rmtree(os.path.join(WORK, "a"), ignore_errors=True)
    table(f"A  leechers, each from a libtorrent uTP-only seeder ({a.size // MIB} MiB)",
          [("lt", "libtorrent uTP leecher", res["lt"]), ("lodestone", "Lodestone uTP leecher", res["lodestone"])],
          a.size, "lt", "libtorrent", "")
    return res, 0


def part_b(a):
    print(f"\n== B: seeders over uTP, each to a libtorrent uTP-only leecher, {a.size // MIB} MiB, 1 MiB pieces")
    content, data, torrent = make_payload("b", a.size, "1M")
    lt_resume = os.path.join(WORK, "b", "lt.resume")
    prepare_seeders([("lt", "utp"), ("lodestone", "utp")], torrent, content, lt_resume, data)
    res = {"lodestone": [], "lt": []}
    try:
        for i in range(a.runs):
            for kind in alternate(i, ["lt", "lodestone"]):
                r = seeded_run(kind, "utp", "lt", torrent, content, lt_resume, a.size, a.timeout,
                               os.path.join(WORK, "b", "dl"), seeder_role=f"B seeder: {kind} uTP",
                               leecher_role="B leecher: libtorrent uTP")
                res[kind].append(measured(f"{kind} uTP seeder -> lt uTP", i, r, a.size,
                                          f"  seeder cpu {fmt(cpu_total(r['seeder_cpu']), '%.2f')} s"
                                          f" (up in {r['seeder_up_s']:.2f} s)"))
    finally:
        shutil.rmtree(os.path.join(WORK, "b"), ignore_errors=True)
    table(f"B  seeders over uTP, each to a libtorrent uTP-only leecher ({a.size // MIB} MiB)",
          [("lt", "libtorrent uTP seeder", res["lt"]), ("lodestone", "Lodestone uTP seeder", res["lodestone"])],
          a.size, "lt", "libtorrent", "")
    return res, 0


def per_gib(x, size):
    return x / (size / GIB) if x is not None else None


def part_c(a):
    size = a.size_c
    print(f"\n== C: Lodestone -> Lodestone, uTP (--no-tcp both) vs TCP (--no-utp both), {size // MIB} MiB, 1 MiB pieces")
    content, data, torrent = make_payload("c", size, "1M")
    lt_resume = os.path.join(WORK, "c", "lt.resume")  # unused: Lodestone only
    prepare_seeders([("lodestone", "utp")], torrent, content, lt_resume, data)
    res = {"utp": [], "tcp": []}
    try:
        for i in range(a.runs):
            for tr in alternate(i, ["tcp", "utp"]):
                r = seeded_run("lodestone", tr, "lodestone", torrent, content, lt_resume, size, a.timeout,
                               os.path.join(WORK, "c", "dl"), seeder_role=f"C seeder: Lodestone {tr}",
                               leecher_role=f"C leecher: Lodestone {tr}")
                lc, sc = r["leecher_cpu"], r["seeder_cpu"]
                res[tr].append(measured(
                    f"Lodestone -> Lodestone {tr}", i, r, size,
                    f" (user {fmt(lc and lc['user'], '%.2f')} sys {fmt(lc and lc['sys'], '%.2f')})"
                    f"  seeder cpu {fmt(cpu_total(sc), '%.2f')} s (user {fmt(sc and sc['user'], '%.2f')} "
                    f"sys {fmt(sc and sc['sys'], '%.2f')})"))
    finally:
        shutil.rmtree(os.path.join(WORK, "c"), ignore_errors=True)
    med = table(f"C  Lodestone -> Lodestone over uTP and over TCP ({size // MIB} MiB)",
                [("tcp", "Lodestone TCP", res["tcp"]), ("utp", "Lodestone uTP", res["utp"])],
                size, "tcp", "Lodestone TCP", "goal >= 0.5")
    print(f"\n  CPU per GiB moved (medians; leecher: started -> completed, seeder: the leecher's life)")
    print(f"  {'':16s} {'leecher user':>12s} {'leecher sys':>11s} {'leecher all':>11s} "
          f"{'seeder user':>11s} {'seeder sys':>10s} {'seeder all':>10s}")
    for tr in ("tcp", "utp"):
        ok = [r for r in res[tr] if r["ok"]]

        def m(who, k):
            vals = [r[who][k] if k != "all" else cpu_total(r[who]) for r in ok if r.get(who)]
            return per_gib(median(vals), size)
        print(f"  Lodestone {tr:6s} {fmt(m('leecher_cpu', 'user'), '%12.2f')} {fmt(m('leecher_cpu', 'sys'), '%11.2f')} "
              f"{fmt(m('leecher_cpu', 'all'), '%11.2f')} {fmt(m('seeder_cpu', 'user'), '%11.2f')} "
              f"{fmt(m('seeder_cpu', 'sys'), '%10.2f')} {fmt(m('seeder_cpu', 'all'), '%10.2f')}")
    print("\n  CPU s per GiB by thread name (medians of the runs that completed; threads alive at the end)")
    for tr in ("tcp", "utp"):
        ok = [r for r in res[tr] if r["ok"]]
        for who in ("leecher_cpu", "seeder_cpu"):
            names = sorted({n for r in ok if r.get(who) for n in r[who]["threads"]})
            parts = []
            for n in names:
                v = per_gib(median(r[who]["threads"].get(n, 0.0) for r in ok if r.get(who)), size)
                if v and v >= 0.01:
                    parts.append((v, n))
            parts.sort(reverse=True)
            print(f"  {tr} {who.split('_')[0]:7s}: " + (", ".join(f"{n} {v:.2f}" for v, n in parts) or "?"))
    return res, 0


def part_d(a):
    size = a.size_d
    one_way = a.rtt_ms / 2000
    print(f"\n== D: through a relay adding {a.rtt_ms} ms of round trip and {a.loss * 100:g}% loss each way "
          f"(TCP: the delay only), link MTU {a.mtu or 'unlimited'} on the relay, {size // MIB} MiB, 256 KiB pieces")
    content, data, torrent = make_payload("d", size, "256K")
    lt_resume = os.path.join(WORK, "d", "lt.resume")
    prepare_seeders([("lt", "utp"), ("lodestone", "utp")], torrent, content, lt_resume, data)
    udp_port, tcp_port = free_port(), free_port()
    target = {"port": 0}
    udp = far_peer.UdpProxy(udp_port, 0, one_way, a.loss, 0, mtu=a.mtu)
    far_peer.run_proxy(tcp_port, lambda: target["port"], one_way)
    configs = [("lodestone", "utp"), ("lt", "utp"), ("lodestone", "tcp")]
    res = {c: [] for c in configs}
    names = {("lodestone", "utp"): "Lodestone uTP", ("lt", "utp"): "libtorrent uTP",
             ("lodestone", "tcp"): "Lodestone TCP (no loss)"}

    def via_udp(port):
        udp.target = port
        return udp_port

    def via_tcp(port):
        target["port"] = port
        return tcp_port
    try:
        for i in range(a.runs):
            order = configs[i % 3:] + configs[:i % 3]
            for kind, tr in (order if i % 2 == 0 else order[::-1]):
                udp.reset(seed=i)
                r = seeded_run(kind, tr, kind, torrent, content, lt_resume, size, a.timeout,
                               os.path.join(WORK, "d", "dl"), via=via_udp if tr == "utp" else via_tcp,
                               seeder_role=f"D seeder: {names[(kind, tr)]}",
                               leecher_role=f"D leecher: {names[(kind, tr)]}")
                extra = ""
                if tr == "utp":
                    st = {d: dict(v) for d, v in udp.stats.items()}
                    extra = (f"  relay up {st['up']['datagrams']} dgrams ({st['up']['dropped']} dropped), "
                             f"down {st['down']['datagrams']} ({st['down']['dropped']} dropped, "
                             f"{st['down']['bytes'] / MIB:.1f} MiB), over the MTU {st['up']['oversize'] + st['down']['oversize']}, "
                             f"refused {st['up']['refused'] + st['down']['refused']}")
                    r["relay"] = st
                res[(kind, tr)].append(measured(names[(kind, tr)], i, r, size, extra))
    finally:
        udp.close()
        shutil.rmtree(os.path.join(WORK, "d"), ignore_errors=True)
    table(f"D  far and lossy: {a.rtt_ms} ms RTT, {a.loss * 100:g}% loss each way on uTP ({size // MIB} MiB)",
          [(("lt", "utp"), "libtorrent uTP", res[("lt", "utp")]),
           (("lodestone", "utp"), "Lodestone uTP", res[("lodestone", "utp")]),
           (("lodestone", "tcp"), "Lodestone TCP (delay, no loss)", res[("lodestone", "tcp")])],
          size, ("lt", "utp"), "libtorrent uTP", {("lodestone", "utp"): "goal >= 1.3",
                                                  ("lodestone", "tcp"): "a reference: no loss on TCP"})
    return res, 0


def main():
    global LODESTONE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="ABCD", help="which parts to run, e.g. AB or C")
    ap.add_argument("--runs", type=int, default=3, help="runs per client (at least 3 for a benchmark)")
    ap.add_argument("--size", type=parse_size, default=256 * MIB, help="A and B payload (default 256M)")
    ap.add_argument("--size-c", type=parse_size, default=GIB, help="C payload (default 1G)")
    ap.add_argument("--size-d", type=parse_size, default=16 * MIB,
                    help="D payload (default 16M: libtorrent moves ~70 KiB/s at 300 ms and 1%% loss)")
    ap.add_argument("--rtt-ms", type=int, default=300, help="D: round trip the relay adds")
    ap.add_argument("--loss", type=float, default=0.01, help="D: drop probability per datagram, each way")
    ap.add_argument("--mtu", type=int, default=1500,
                    help="D: the relay drops UDP datagrams that would not fit this link MTU (0: no limit)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds a download may take before it FAILS")
    ap.add_argument("--lodestone", help="this binary instead of the release build")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build first")
    a = ap.parse_args()
    parts = a.parts.upper()
    if not parts or set(parts) - set("ABCD"):
        ap.error("--parts takes letters from ABCD")
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    if not 0 <= a.loss < 1:
        ap.error("--loss is a probability in [0, 1)")
    if not a.no_build and not a.lodestone:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "lodestone"], cwd=ROOT, check=True)
    target_dir = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    LODESTONE = a.lodestone or os.path.join(target_dir, "release", "lodestone")
    print(f"utp.py: parts {parts}, {a.runs} run(s) each; load average before: {benchlib.loadavg()}; "
          f"{os.cpu_count()} cpus; binary {LODESTONE}")
    if a.runs < 3:
        print("fewer than 3 runs: a sanity check, not a benchmark")
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    results, bad = {}, 0
    try:
        for part, fn in (("A", part_a), ("B", part_b), ("C", part_c), ("D", part_d)):
            if part in parts:
                results[part], b = fn(a)
                bad += b
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    print("\ncommand lines (first use of each role; ports and folders change per run):")
    for role, cmd in COMMANDS.items():
        print(f"  {role}: LODESTONE_LOCAL_ONLY=1 {cmd}")
    print(f"load average after: {benchlib.loadavg()}")
    runs = [r for res in results.values() for rs in res.values() for r in rs]
    failed = sum(1 for r in runs if not r["ok"]) + bad
    if failed:
        print(f"FAILED: {failed} of {len(runs)} runs did not complete")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
