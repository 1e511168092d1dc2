#!/usr/bin/python3
"""1,000 torrents in one session: Lodestone against transmission-daemon 3.00,
same run, same files (issue 11, "Performance and scale").

  bench/session_scale.py [--n 1000] [--size 4M] [--piece-size 256K] [--rounds 1]
                         [--idle 60] [--out DIR] [--work DIR] [--timeout 900]
                         [--lodestone-only | --transmission-only] [--no-build]

Makes N torrents of SIZE bytes each (random content from --seed, so every run
makes the same bytes; 256 KiB pieces; no trackers): the content in
WORK/data/<name>, the torrents in WORK/torrents/<name>.torrent, written by
`lodestone create --no-date` (or, with --creator python or without the
binary, by this script with hashlib: same info dict, same info hash).
WORK defaults to a new folder in /dev/shm (tmpfs, so neither side waits on
a disk) and is deleted at the end unless --work was given, in which case it
is kept and reused by the next run with the same --n/--size/--piece-size/--seed.

Each side then seeds all N from WORK/data, twice in a row:
- "fresh": nothing known, every piece is hashed.
  Lodestone: its state is deleted first (--lodestone-state, today
  WORK/data/.lodestone, where `seed` keeps its resume files).
  Transmission: a new config dir (its resume files live there).
- "with resume data": the same process started again on the state the fresh
  run left (Lodestone stopped with SIGINT, Transmission with SIGTERM; each
  saves what it wants on the way out; nothing is deleted in between).

Lodestone: ONE process, `lodestone seed --json --listen 127.0.0.1:PORT
--no-dht --no-lpd T1.torrent ... TN.torrent data` (every path on one command
line). Contract of its NDJSON stdout: one {"event":"seeding","infohash":H,"t":s}
per torrent once its files are checked and it seeds, then one
{"event":"all_seeding","torrents":N,"t":s}. A run counts only if every one
of the N info hashes said "seeding" and all_seeding said N. If `seed` exits
with a usage error (today it takes one torrent), the script says that
Lodestone cannot hold several torrents yet, measures nothing for it, and
exits 1; the Transmission half still runs.

Transmission: `transmission-daemon -f -g CONFIG` with a settings.json that
keeps it on 127.0.0.1 (RPC bound to 127.0.0.1 on a free port, no auth,
whitelist 127.0.0.1; peer port on 127.0.0.1; DHT, LPD, PEX, uTP, port
forwarding, blocklist, queues and ratio/idle limits off; download-dir =
WORK/data). The fresh run adds the N torrents through the RPC (torrent-add
with base64 metainfo, as `transmission-remote -a FILE` does), the resume run
adds nothing and checks that all N came back. Every 0.1 s the script asks
torrent-get for [id,status,percentDone,error]; done when all N are status 6
(seeding) with percentDone 1. The polls stop before the idle window.

What is counted, the same way for both:
- time to all seeding: from spawning the process to the moment this script
  learns that all N seed (Lodestone: its all_seeding line read here;
  Transmission: the first torrent-get that shows it, so up to ~0.1 s plus one
  RPC late). Transmission's fresh time includes the N torrent-add calls
  (shown as "adds"); Lodestone's includes reading the N .torrent files.
  Lodestone's own clock (the `t` of all_seeding) is shown beside it.
  Transmission 3.00 checks one torrent at a time and its check thread
  sleeps 100 ms around each one (seen with strace: clock_nanosleep 100 ms
  after opening each file), so about 0.1 s x N of its fresh time is a
  pause, not work; the CPU figure below shows the work.
- CPU to all seeding: utime+stime of the process (/proc/PID/stat, 10 ms
  ticks) at that moment.
- memory once all seed: VmRSS (what the goal uses), RssAnon, VmHWM and
  threads from /proc/PID/status, in both runs.
- idle CPU: after the resume run, utime+stime over --idle seconds (default
  60) with nothing asked of the process (Lodestone's stdout is still read
  and counted: the events it prints while idle are part of its cost), then
  VmRSS again.
- Content files are checked (size, mtime) before and after each run: a side
  that modifies them is reported.
Rounds (--rounds) alternate which side goes first; medians are over the runs
that succeeded (each says how many it holds); every failed run is printed
with its reason, and the script exits 1 if any run failed or a side could
not be measured.

Output: a table (both sides, ratio Lodestone/Transmission, the issue's goals:
Lodestone VmRSS <= 0.5x Transmission's and <= 64 MiB, idle CPU <=
Transmission's, time to all seeding with resume data <= Transmission's) and
OUT/session_scale.json with every run. OUT (default: a new temp dir) also
holds the logs. Only 127.0.0.1 is used; LODESTONE_LOCAL_ONLY=1 is set.
"""
import argparse
import base64
import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import LODESTONE, MIB, ROOT, TICK, free_port, g, loadavg, median, parse_size, proc_cpu, proc_mem
from benchlib import stop as stop_child


def stop(p, sig, grace=60):
    return stop_child(p, sig, grace)

# Benchmarks stay on this machine: no public DHT, no LPD on real interfaces.
os.environ["LODESTONE_LOCAL_ONLY"] = "1"
SEEDING = 6  # Transmission's TR_STATUS_SEED
TR_STATUS = {0: "stopped", 1: "check-wait", 2: "checking", 3: "download-wait", 4: "downloading",
             5: "seed-wait", 6: "seeding"}








# ---------------------------------------------------------------- /proc








# ---------------------------------------------------------------- torrents


def benc(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in x.items())
        return b"d" + b"".join(benc(k) + benc(v) for k, v in items) + b"e"
    if isinstance(x, list):
        return b"l" + b"".join(benc(v) for v in x) + b"e"
    raise TypeError(type(x))


def bskip(buf, i):
    """Index just past the bencoded value starting at buf[i]."""
    c = buf[i:i + 1]
    if c == b"i":
        return buf.index(b"e", i) + 1
    if c in (b"l", b"d"):
        i += 1
        while buf[i:i + 1] != b"e":
            i = bskip(buf, i)
        return i + 1
    colon = buf.index(b":", i)
    return colon + 1 + int(buf[i:colon])


def info_hash(torrent_bytes):
    """SHA-1 of the raw info dict of a .torrent (never a re-encoding)."""
    b, i = torrent_bytes, 1
    if b[:1] != b"d":
        raise ValueError("not a bencoded dict")
    while b[i:i + 1] != b"e":
        colon = b.index(b":", i)
        key_end = colon + 1 + int(b[i:colon])
        key = b[colon + 1:key_end]
        end = bskip(b, key_end)
        if key == b"info":
            return hashlib.sha1(b[key_end:end]).hexdigest()
        i = end
    raise ValueError("no info dict")


def python_torrent(path, name, piece):
    h = []
    with open(path, "rb") as f:
        while True:
            block = f.read(piece)
            if not block:
                break
            h.append(hashlib.sha1(block).digest())
    return benc({"created by": "bench/session_scale.py",
                 "info": {"length": os.path.getsize(path), "name": name, "piece length": piece,
                          "pieces": b"".join(h)}})


def prepare(a, work, lodestone):
    """Content and torrents in work/data and work/torrents; returns
    ([names], {name: info hash}). Reuses them when work/manifest.json matches."""
    data, tdir = os.path.join(work, "data"), os.path.join(work, "torrents")
    names = [f"t{i:05d}" for i in range(a.n)]
    want = {"n": a.n, "size": a.size, "piece": a.piece_size, "seed": a.seed}
    manifest = os.path.join(work, "manifest.json")
    try:
        with open(manifest) as f:
            m = json.load(f)
        if m.get("params") == want and all(
                os.path.getsize(os.path.join(data, n)) == a.size and os.path.exists(os.path.join(tdir, n + ".torrent"))
                for n in names):
            print(f"reusing {a.n} torrents and their content in {work} (made by {m.get('creator')})")
            return names, m["hashes"]
    except (OSError, ValueError, KeyError):
        pass
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(tdir, ignore_errors=True)
    os.makedirs(data)
    os.makedirs(tdir)
    t0 = time.monotonic()
    for i, n in enumerate(names):
        with open(os.path.join(data, n), "wb") as f:
            f.write(random.Random(a.seed * 1_000_003 + i).randbytes(a.size))
    t1 = time.monotonic()
    creator = a.creator
    if creator == "lodestone" and not os.path.exists(lodestone):
        print(f"{lodestone} not found: writing the .torrent files in Python")
        creator = "python"
    piece_arg = f"{a.piece_size // 1024}K"

    def make(n):
        out = os.path.join(tdir, n + ".torrent")
        if creator == "lodestone":
            r = subprocess.run([lodestone, "create", "--no-date", "--threads", "1", "--piece-size", piece_arg,
                                "-f", "-o", out, os.path.join(data, n)], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"lodestone create failed for {n} (rc {r.returncode}): {r.stderr.strip()}")
        else:
            with open(out, "wb") as f:
                f.write(python_torrent(os.path.join(data, n), n, a.piece_size))
        with open(out, "rb") as f:
            return n, info_hash(f.read())

    with concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as ex:
        hashes = dict(ex.map(make, names))
    if creator == "lodestone":  # the Python writer must agree with `create` on the info hash
        with open(os.path.join(tdir, names[0] + ".torrent"), "rb") as f:
            mine = info_hash(python_torrent(os.path.join(data, names[0]), names[0], a.piece_size))
        if mine != hashes[names[0]]:
            raise SystemExit(f"info hash mismatch for {names[0]}: lodestone {hashes[names[0]]}, python {mine}")
    if len(set(hashes.values())) != a.n:
        raise SystemExit("two torrents share an info hash")
    print(f"made {a.n} x {a.size / MIB:g} MiB of content in {t1 - t0:.1f} s and their torrents "
          f"({creator}) in {time.monotonic() - t1:.1f} s, in {work}")
    with open(manifest, "w") as f:
        json.dump({"params": want, "creator": creator, "hashes": hashes}, f)
    return names, hashes


def content_state(data, names):
    st = {}
    for n in names:
        s = os.stat(os.path.join(data, n))
        st[n] = (s.st_size, s.st_mtime_ns)
    return st


# ---------------------------------------------------------------- Lodestone


class Refused(Exception):
    pass


def run_lodestone(ctx, phase, idle):
    a, work = ctx["args"], ctx["work"]
    if phase == "fresh":
        shutil.rmtree(a.lodestone_state or os.path.join(work, "data", ".lodestone"), ignore_errors=True)
    port = free_port()
    torrents = [os.path.join("torrents", n + ".torrent") for n in ctx["names"]]
    cmd = [ctx["lodestone"], "seed", "--json", "--listen", f"127.0.0.1:{port}", "--no-dht", "--no-lpd",
           *torrents, "data"]
    tag = f"lodestone-r{ctx['round']}-{phase}"
    errpath = os.path.join(ctx["out"], tag + ".stderr")
    logpath = os.path.join(ctx["out"], tag + ".events")
    r = {"side": "lodestone", "phase": phase, "round": ctx["round"], "ok": False,
         "command": " ".join(cmd[:8]) + f" ... ({len(torrents)} torrents) data", "cwd": work}
    want = set(ctx["hashes"].values())
    seen, counts, resume_kinds = {}, {}, {}
    done = threading.Event()
    state = {}
    t0 = time.monotonic()
    with open(errpath, "w") as err, open(logpath, "w") as log:
        p = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=err, text=True)

        def read():
            for line in p.stdout:
                at = time.monotonic() - t0
                try:
                    e = json.loads(line)
                except ValueError:
                    counts["(not json)"] = counts.get("(not json)", 0) + 1
                    continue
                ev = e.get("event") if isinstance(e, dict) else None
                counts[ev] = counts.get(ev, 0) + 1
                if ev not in ("progress", "sources"):
                    log.write(f"{at:.4f} {line}")
                if ev == "seeding":
                    ih = str(e.get("infohash", "")).lower()
                    seen.setdefault(ih, at)
                    if "resume" in e:
                        k = str(e["resume"]).split(":")[0]
                        resume_kinds[k] = resume_kinds.get(k, 0) + 1
                elif ev == "all_seeding" and "all" not in state:
                    state["all"] = (at, e, proc_cpu(p.pid), proc_mem(p.pid))
                    done.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = t0 + a.timeout
        while not done.is_set() and p.poll() is None and time.monotonic() < deadline:
            done.wait(0.05)
        if not done.is_set():
            if p.poll() is not None:
                reader.join(5)
                err.flush()
                with open(errpath) as f:
                    stderr = f.read().strip()
                if p.returncode == 2 and ("unexpected argument" in stderr or "Usage:" in stderr):
                    raise Refused(f"`lodestone seed` refused {len(torrents)} torrents in one process "
                                  f"(usage error, rc 2: {stderr.splitlines()[0] if stderr else 'no message'})")
                r["error"] = (f"exited (rc {p.returncode}) before all_seeding; {len(seen)}/{a.n} seeding; "
                              f"stderr: {stderr[-300:] or 'none'}")
            else:
                r["error"] = f"no all_seeding within {a.timeout:g} s ({len(seen)}/{a.n} seeding)"
                stop(p, signal.SIGINT)
            r["events"] = counts
            return r
        at, e, cpu, mem = state["all"]
        r.update({"time_to_all_seeding_s": at, "engine_t_s": e.get("t"), "cpu_to_all_seeding_s": cpu,
                  "mem_all_seeding": mem})
        problems = []
        if e.get("torrents") != a.n:
            problems.append(f"all_seeding says torrents={e.get('torrents')}, expected {a.n}")
        missing, extra = want - set(seen), set(seen) - want
        if missing:
            problems.append(f"{len(missing)} torrents never said seeding (e.g. {sorted(missing)[0]})")
        if extra:
            problems.append(f"{len(extra)} unknown info hashes said seeding (e.g. {sorted(extra)[0]})")
        if seen:
            r["last_seeding_event_s"] = max(seen.values())
        if idle and not problems:
            lines0 = sum(counts.values())
            c0 = proc_cpu(p.pid)
            time.sleep(idle)
            c1 = proc_cpu(p.pid)
            if c0 is None or c1 is None or p.poll() is not None:
                problems.append("exited during the idle window")
            else:
                r["idle_s"], r["idle_cpu_s"] = idle, c1 - c0
                r["idle_stdout_lines"] = sum(counts.values()) - lines0
                r["mem_after_idle"] = proc_mem(p.pid)
        note = stop(p, signal.SIGINT)
        if note:
            r["stop_note"] = note
        reader.join(10)
    r["events"] = counts
    if resume_kinds:
        r["resume_reported"] = resume_kinds
    r["ok"] = not problems
    if problems:
        r["error"] = "; ".join(problems)
    return r


# ---------------------------------------------------------------- Transmission


class Rpc:
    def __init__(self, port):
        self.port, self.sid = port, ""

    def call(self, method, arguments=None, timeout=60):
        body = json.dumps({"method": method, "arguments": arguments or {}}).encode()
        for _ in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                conn.request("POST", "/transmission/rpc", body,
                             {"X-Transmission-Session-Id": self.sid, "Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            if resp.status == 409:
                self.sid = resp.getheader("X-Transmission-Session-Id") or ""
                continue
            if resp.status != 200:
                raise RuntimeError(f"{method}: HTTP {resp.status}: {data[:200]!r}")
            j = json.loads(data)
            if j.get("result") != "success":
                raise RuntimeError(f"{method}: {j.get('result')}")
            return j.get("arguments", {})
        raise RuntimeError(f"{method}: 409 three times")


def tr_settings(rpc_port, peer_port, data):
    return {
        "bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1",
        "rpc-enabled": True, "rpc-bind-address": "127.0.0.1", "rpc-port": rpc_port,
        "rpc-authentication-required": False, "rpc-whitelist-enabled": True, "rpc-whitelist": "127.0.0.1",
        "rpc-host-whitelist-enabled": False,
        "peer-port": peer_port, "peer-port-random-on-start": False, "port-forwarding-enabled": False,
        "dht-enabled": False, "lpd-enabled": False, "pex-enabled": False, "utp-enabled": False,
        "blocklist-enabled": False, "watch-dir-enabled": False, "incomplete-dir-enabled": False,
        "download-dir": data, "start-added-torrents": True, "trash-original-torrent-files": False,
        "download-queue-enabled": False, "seed-queue-enabled": False, "queue-stalled-enabled": False,
        "ratio-limit-enabled": False, "idle-seeding-limit-enabled": False,
        "message-level": 1,
    }


def run_transmission(ctx, phase, idle):
    a, work = ctx["args"], ctx["work"]
    # Its state sits beside Lodestone's (WORK, tmpfs by default): it writes a resume file per torrent
    # as each check ends, so a config dir on a slower disk would be timed instead of Transmission.
    conf = os.path.join(work, f"transmission-r{ctx['round']}-config")
    data = os.path.join(work, "data")
    if phase == "fresh":
        shutil.rmtree(conf, ignore_errors=True)
        os.makedirs(conf)
    rpc_port, peer_port = free_port(), free_port()
    settings = os.path.join(conf, "settings.json")
    s = {}
    if os.path.exists(settings):  # the daemon rewrites it on exit: keep its keys, set ours again
        with open(settings) as f:
            s = json.load(f)
    s.update(tr_settings(rpc_port, peer_port, data))
    with open(settings, "w") as f:
        json.dump(s, f, indent=1)
    tag = f"transmission-r{ctx['round']}-{phase}"
    cmd = [ctx["tr_daemon"], "-f", "-g", conf]
    r = {"side": "transmission", "phase": phase, "round": ctx["round"], "ok": False,
         "command": " ".join(cmd), "rpc_port": rpc_port}
    rpc = Rpc(rpc_port)
    t0 = time.monotonic()
    deadline = t0 + a.timeout
    with open(os.path.join(ctx["out"], tag + ".log"), "w") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            # RPC up?
            while True:
                if p.poll() is not None:
                    r["error"] = f"transmission-daemon exited (rc {p.returncode}) before its RPC answered"
                    return r
                try:
                    rpc.call("session-get", timeout=5)
                    break
                except (OSError, RuntimeError, ValueError):
                    if time.monotonic() > t0 + 60:
                        r["error"] = "RPC did not answer within 60 s"
                        return r
                    time.sleep(0.05)
            r["rpc_up_s"] = time.monotonic() - t0
            if phase == "fresh":
                ta = time.monotonic()
                for n in ctx["names"]:
                    with open(os.path.join(work, "torrents", n + ".torrent"), "rb") as f:
                        meta = base64.b64encode(f.read()).decode()
                    res = rpc.call("torrent-add", {"metainfo": meta, "download-dir": data})
                    if "torrent-added" not in res:
                        r["error"] = f"torrent-add {n}: {res}"
                        return r
                    if time.monotonic() > deadline:
                        r["error"] = f"adding the torrents took over {a.timeout:g} s"
                        return r
                r["adds_s"] = time.monotonic() - ta
            want = set(ctx["hashes"].values())
            next_print = time.monotonic() + 10
            polls = 0
            while True:
                if p.poll() is not None:
                    r["error"] = f"transmission-daemon exited (rc {p.returncode})"
                    return r
                ts = rpc.call("torrent-get", {"fields": ["id", "status", "percentDone", "error"]})["torrents"]
                now = time.monotonic()
                polls += 1
                by = {}
                for t in ts:
                    by[t["status"]] = by.get(t["status"], 0) + 1
                if len(ts) == a.n and all(t["status"] == SEEDING and t["percentDone"] >= 1 for t in ts):
                    r["time_to_all_seeding_s"] = now - t0
                    r["cpu_to_all_seeding_s"] = proc_cpu(p.pid)
                    r["mem_all_seeding"] = proc_mem(p.pid)
                    r["polls"] = polls
                    break
                errs = [t for t in ts if t.get("error")]
                if now > deadline or errs:
                    summary = ", ".join(f"{TR_STATUS.get(k, k)} {v}" for k, v in sorted(by.items()))
                    r["error"] = (f"{len(errs)} torrents in error" if errs else
                                  f"not all seeding within {a.timeout:g} s") + f" ({len(ts)} torrents: {summary})"
                    return r
                if now > next_print:
                    print(f"    transmission {phase}: {now - t0:5.1f} s: "
                          + ", ".join(f"{TR_STATUS.get(k, k)} {v}" for k, v in sorted(by.items())), flush=True)
                    next_print = now + 10
                time.sleep(0.1)
            got = {t["hashString"] for t in rpc.call("torrent-get", {"fields": ["hashString"]})["torrents"]}
            if got != want:
                r["error"] = f"the daemon holds {len(got)} torrents, {len(got & want)} of the {a.n} expected"
                return r
            if idle:
                c0 = proc_cpu(p.pid)
                time.sleep(idle)
                c1 = proc_cpu(p.pid)
                if c0 is None or c1 is None or p.poll() is not None:
                    r["error"] = "exited during the idle window"
                    return r
                r["idle_s"], r["idle_cpu_s"] = idle, c1 - c0
                r["mem_after_idle"] = proc_mem(p.pid)
            r["ok"] = True
            return r
        finally:
            note = stop(p, signal.SIGTERM)
            if note:
                r["stop_note"] = note


# ---------------------------------------------------------------- report






ROWS = [  # label, phase, path in a run, unit
    ("time to all seeding, fresh", "fresh", "time_to_all_seeding_s", "s"),
    ("  CPU to get there", "fresh", "cpu_to_all_seeding_s", "s"),
    ("  VmRSS then", "fresh", "mem_all_seeding.vmrss_mib", "MiB"),
    ("time to all seeding, with resume data", "resume", "time_to_all_seeding_s", "s"),
    ("  CPU to get there", "resume", "cpu_to_all_seeding_s", "s"),
    ("VmRSS once all seed (resume run)", "resume", "mem_all_seeding.vmrss_mib", "MiB"),
    ("  RssAnon", "resume", "mem_all_seeding.rss_anon_mib", "MiB"),
    ("  VmHWM (peak)", "resume", "mem_all_seeding.vmhwm_mib", "MiB"),
    ("  threads", "resume", "mem_all_seeding.threads", ""),
    ("CPU over the idle window", "resume", "idle_cpu_s", "s"),
    ("VmRSS after the idle window", "resume", "mem_after_idle.vmrss_mib", "MiB"),
    ("  RssAnon", "resume", "mem_after_idle.rss_anon_mib", "MiB"),
]


def summarize(runs, sides):
    med = {}
    for side in sides:
        med[side] = {}
        for phase in ("fresh", "resume"):
            rs = [r for r in runs if r["side"] == side and r["phase"] == phase]
            ok = [r for r in rs if r["ok"]]
            med[side][phase] = {"runs": len(rs), "ok": len(ok)}
            for _, ph, path, _ in ROWS:
                if ph == phase:
                    med[side][phase][path] = median(g(r, path) for r in ok)
    return med


def fmt(x, unit):
    if x is None:
        return "-"
    return f"{x:.0f}" if unit == "" else f"{x:.3f}" if unit == "s" and x < 10 else f"{x:.1f}"


def print_table(med, goals, idle):
    lo, tr = med.get("lodestone"), med.get("transmission")
    print()
    print(f"{'':42s} {'Lodestone':>11s} {'Transmission':>13s} {'L/T':>7s}")
    for label, phase, path, unit in ROWS:
        lv = lo[phase].get(path) if lo else None
        tv = tr[phase].get(path) if tr else None
        ratio = f"{lv / tv:.2f}x" if lv is not None and tv else "-"
        u = f" ({unit})" if unit else ""
        if path == "idle_cpu_s":
            u = f" ({idle:g} s, s)"
        print(f"{label + u:42s} {fmt(lv, unit):>11s} {fmt(tv, unit):>13s} {ratio:>7s}")
    for side, m in med.items():
        print(f"  {side}: fresh {m['fresh']['ok']}/{m['fresh']['runs']} runs ok, "
              f"with resume data {m['resume']['ok']}/{m['resume']['runs']} ok (medians of the ok ones)")
    print()
    print("goals (issue 11):")
    for gl in goals:
        print(f"  {gl['goal']:58s} {gl['status']}  {gl['detail']}")


def goals_of(med):
    lo, tr = med.get("lodestone"), med.get("transmission")

    def val(m, phase, path):
        return m[phase].get(path) if m else None
    lr, tr_r = val(lo, "resume", "mem_all_seeding.vmrss_mib"), val(tr, "resume", "mem_all_seeding.vmrss_mib")
    li, ti = val(lo, "resume", "idle_cpu_s"), val(tr, "resume", "idle_cpu_s")
    lt, tt = val(lo, "resume", "time_to_all_seeding_s"), val(tr, "resume", "time_to_all_seeding_s")

    def st(cond, have):
        return "not measured" if not have else ("met" if cond() else "NOT met")
    return [
        {"goal": "Lodestone VmRSS <= 0.5x Transmission's", "status": st(lambda: lr <= 0.5 * tr_r, lr and tr_r),
         "detail": f"{fmt(lr, 'MiB')} vs 0.5 x {fmt(tr_r, 'MiB')} MiB"},
        {"goal": "Lodestone VmRSS <= 64 MiB", "status": st(lambda: lr <= 64, lr),
         "detail": f"{fmt(lr, 'MiB')} MiB"},
        {"goal": "Lodestone idle CPU <= Transmission's", "status": st(lambda: li <= ti, li is not None and ti is not None),
         "detail": f"{fmt(li, 's')} s vs {fmt(ti, 's')} s"},
        {"goal": "time to all seeding with resume data <= Transmission's",
         "status": st(lambda: lt <= tt, lt is not None and tt is not None),
         "detail": f"{fmt(lt, 's')} s vs {fmt(tt, 's')} s"},
    ]


def describe(r):
    if not r["ok"]:
        return f"FAILED: {r.get('error')}"
    bits = [f"all seeding at {r['time_to_all_seeding_s']:.3f} s"]
    if r.get("engine_t_s") is not None:
        bits.append(f"(its own clock {r['engine_t_s']:.3f} s)")
    if r.get("rpc_up_s") is not None:
        adds = f", {r['adds_s']:.2f} s of torrent-add calls" if r.get("adds_s") is not None else ""
        bits.append(f"(RPC answered at {r['rpc_up_s']:.2f} s{adds})")
    bits.append(f"cpu {fmt(r.get('cpu_to_all_seeding_s'), 's')} s")
    m = r.get("mem_all_seeding", {})
    bits.append(f"VmRSS {fmt(m.get('vmrss_mib'), 'MiB')} MiB, RssAnon {fmt(m.get('rss_anon_mib'), 'MiB')} MiB, "
                f"{m.get('threads', '?')} threads")
    if r.get("idle_cpu_s") is not None:
        bits.append(f"idle {r['idle_s']:g} s: cpu {r['idle_cpu_s']:.2f} s, then VmRSS "
                    f"{fmt(g(r, 'mem_after_idle.vmrss_mib'), 'MiB')} MiB")
        if r.get("idle_stdout_lines") is not None:
            bits.append(f"{r['idle_stdout_lines']} stdout lines while idle")
    if r.get("resume_reported"):
        bits.append(f"resume: {r['resume_reported']}")
    if r.get("stop_note"):
        bits.append(f"stop: {r['stop_note']}")
    return ", ".join(bits)


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="number of torrents")
    ap.add_argument("--size", type=parse_size, default=4 * MIB, help="bytes per torrent (suffix K, M, G)")
    ap.add_argument("--piece-size", type=parse_size, default=256 * 1024)
    ap.add_argument("--seed", type=int, default=1, help="seed of the random content")
    ap.add_argument("--rounds", type=int, default=1, help="rounds (each: both sides, fresh then resume)")
    ap.add_argument("--idle", type=float, default=60, help="seconds of idle CPU measured after the resume run")
    ap.add_argument("--timeout", type=float, default=900, help="seconds a run may take to reach all seeding")
    ap.add_argument("--out", help="folder for the JSON and the logs (default: a new temp dir)")
    ap.add_argument("--work", help="folder for content and torrents, kept and reused (default: a temp dir in "
                    "/dev/shm, deleted at the end)")
    ap.add_argument("--creator", choices=["lodestone", "python"], default="lodestone",
                    help="who writes the .torrent files")
    side = ap.add_mutually_exclusive_group()
    side.add_argument("--lodestone-only", action="store_true")
    side.add_argument("--transmission-only", action="store_true")
    ap.add_argument("--lodestone", default=LODESTONE, help="the lodestone binary")
    ap.add_argument("--lodestone-state", help="Lodestone's state, deleted before each fresh run "
                    "(default: WORK/data/.lodestone, where `seed` keeps resume files today)")
    ap.add_argument("--transmission-daemon", default=shutil.which("transmission-daemon") or "transmission-daemon")
    ap.add_argument("--no-build", action="store_true", help="do not run `cargo build --release -p lodestone`")
    a = ap.parse_args()
    if a.n < 1 or a.rounds < 1 or a.idle < 0:
        ap.error("--n and --rounds must be >= 1, --idle >= 0")
    if a.piece_size < 16384 or a.piece_size & (a.piece_size - 1):
        ap.error("--piece-size must be a power of two, at least 16K")

    sides = ["lodestone", "transmission"]
    if a.lodestone_only:
        sides = ["lodestone"]
    if a.transmission_only:
        sides = ["transmission"]
    if "transmission" in sides and not shutil.which(a.transmission_daemon):
        raise SystemExit(f"{a.transmission_daemon} not found: apt-get install transmission-daemon "
                         "(Debian's 3.00), or run with --lodestone-only")
    need_lodestone = "lodestone" in sides or a.creator == "lodestone"
    if need_lodestone and not a.no_build and a.lodestone == LODESTONE:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "lodestone"], cwd=ROOT, check=True)
    if "lodestone" in sides and not os.path.exists(a.lodestone):
        raise SystemExit(f"{a.lodestone} not found (build it: cargo build --release -p lodestone)")

    out = a.out or tempfile.mkdtemp(prefix="lodestone-session-scale-")
    os.makedirs(out, exist_ok=True)
    if a.work:
        work, own_work = os.path.abspath(a.work), False
        os.makedirs(work, exist_ok=True)
    else:
        need = a.n * a.size * 1.2 + 64 * MIB
        st = os.statvfs("/dev/shm")
        base = "/dev/shm" if st.f_bavail * st.f_frsize > 2 * need else None
        work, own_work = tempfile.mkdtemp(prefix="lodestone-session-scale-", dir=base), True

    versions = {}
    if "transmission" in sides:
        v = subprocess.run([a.transmission_daemon, "--version"], capture_output=True, text=True)
        versions["transmission-daemon"] = (v.stdout + v.stderr).strip()
    if os.path.exists(a.lodestone):
        v = subprocess.run([a.lodestone, "--version"], capture_output=True, text=True)
        versions["lodestone"] = v.stdout.strip()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = None
    print(f"{a.n} torrents x {a.size / MIB:g} MiB ({a.piece_size // 1024} KiB pieces), {a.rounds} round(s), "
          f"idle window {a.idle:g} s; sides: {', '.join(sides)}; {os.cpu_count()} cores, "
          f"load average {loadavg()}; {'; '.join(versions.values())}; out: {out}", flush=True)

    runs, refused = [], None
    result = {"params": {k: v for k, v in vars(a).items()}, "work": work, "out": out, "versions": versions,
              "git_head": commit, "cores": os.cpu_count(), "runs": runs}
    try:
        names, hashes = prepare(a, work, a.lodestone)
        data = os.path.join(work, "data")
        # Lodestone vouches for a file from its resume data only when its mtime is over 2 s old.
        newest = max(os.path.getmtime(os.path.join(data, n)) for n in names)
        time.sleep(max(0.0, 3 - (time.time() - newest)))
        before = content_state(data, names)
        ctx = {"args": a, "work": work, "out": out, "names": names, "hashes": hashes, "lodestone": a.lodestone,
               "tr_daemon": a.transmission_daemon}
        for rnd in range(a.rounds):
            ctx["round"] = rnd + 1
            order = sides if rnd % 2 == 0 else sides[::-1]
            for side in order:
                if side == "lodestone" and refused:
                    continue
                for phase in ("fresh", "resume"):
                    print(f"round {rnd + 1} {side:12s} {phase:6s} (load average {loadavg()}) ...", flush=True)
                    try:
                        if side == "lodestone":
                            r = run_lodestone(ctx, phase, a.idle if phase == "resume" else 0)
                        else:
                            r = run_transmission(ctx, phase, a.idle if phase == "resume" else 0)
                    except Refused as e:
                        refused = str(e)
                        print(f"  LODESTONE NOT MEASURED: {refused}", flush=True)
                        break
                    r["load_average_before"] = loadavg()
                    after = content_state(data, names)
                    if after != before:
                        changed = sum(1 for n in names if after[n] != before[n])
                        r["ok"] = False
                        r["error"] = (r.get("error", "") + f"; {changed} content files were modified").lstrip("; ")
                        before = after
                    runs.append(r)
                    print(f"  round {rnd + 1} {side} {phase}: {describe(r)}", flush=True)
                    if not r["ok"] and phase == "fresh":
                        print(f"  (no resume run for {side} in round {rnd + 1}: its fresh run failed)")
                        break
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)

    measured = [s for s in sides if any(r["side"] == s for r in runs)]
    med = summarize(runs, measured)
    goals = goals_of(med)
    result.update({"medians": med, "goals": goals, "lodestone_refused": refused,
                   "ratios_lodestone_over_transmission": {
                       f"{ph}.{path}": (med["lodestone"][ph][path] / med["transmission"][ph][path])
                       for _, ph, path, _ in ROWS
                       if "lodestone" in med and "transmission" in med
                       and med["lodestone"][ph].get(path) is not None and med["transmission"][ph].get(path)}})
    print_table(med, goals, a.idle)
    failed = [r for r in runs if not r["ok"]]
    for r in failed:
        print(f"FAILED run: round {r['round']} {r['side']} {r['phase']}: {r.get('error')}")
    if refused:
        print(f"NOT MEASURED: Lodestone. {refused}. It needs `lodestone seed A.torrent B.torrent ... DIR` "
              f"(issue 11: one session, many torrents).")
    path = os.path.join(out, "session_scale.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"results: {path}")
    return 1 if failed or refused else 0


if __name__ == "__main__":
    sys.exit(main())
