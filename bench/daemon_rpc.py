#!/usr/bin/python3
"""Transmission RPC under 1,000 torrents: `lodestone daemon` against
transmission-daemon 3.00, same torrents, same requests, same client.

  bench/daemon_rpc.py [--runs 3] [--n 1000] [--requests 50] [--warmup 5]
                      [--quiet 65] [--json FILE] [--lodestone-only | --transmission-only]

The torrents: N single-file torrents of --size bytes (default 1 MiB, 256 KiB
pieces, no trackers), made in memory by this script (the same bencoding as
bench/session_scale.py; piece hashes derived from the index, so every run
makes the same info hashes). Their content is NOT on disk: once added, each
sits "downloading" with no peers and no sources (no trackers, DHT and LPD off).

Each run starts each daemon fresh (new state/config dir and download dir in a
temp dir, /dev/shm when it has room) and, for one daemon at a time:
1. waits for its RPC: Lodestone `lodestone daemon --config /dev/null
   --state-dir S --download-dir D --no-dht --no-lpd --listen 127.0.0.1:P
   --rpc-bind 127.0.0.1:R` until it prints "lodestone daemon: RPC on http://";
   Transmission `transmission-daemon -f -g CONFIG` with session_scale.py's
   settings.json (RPC and peers on 127.0.0.1, no auth, DHT/LPD/PEX/uTP/port
   mapping/queues off, download-dir D) until session-get answers;
2. adds the N torrents with `torrent-add {metainfo: <base64>, paused: false,
   download-dir: D}` (one call each, as Sonarr or `transmission-remote -a`);
3. polls `torrent-get [id,status,error,errorString]` until all N are there and
   none is checking or waiting to check; then VmRSS/VmHWM ("after adding");
4. stays quiet (no request) for --quiet seconds (default 65: Transmission
   keeps a torrent in "recently-active" for 60 s after its last change)
   counted from the end of step 3 (Transmission checks the torrents one at a
   time, about 0.1 s each, after the adds: its last changes come then);
5. three request kinds, each --warmup (5) untimed then --requests (50) timed,
   one after another on the same connection:
   - "full":   torrent-get, no ids, Sonarr's poll fields (ecosystem.md §1.4,
               20 fields: FIELDS below);
   - "recent": the same with ids: "recently-active" (Transmissionic's poll;
               the answer also carries `removed`);
   - "table":  the same as "full" with format: "table" (Tremotesf,
               Transmissionic);
   latency = from sending the request to the last byte of the body
   (time.perf_counter, JSON parsing not included); median and p90
   (nearest rank) per kind; response size in bytes (no gzip asked); the
   daemon's CPU (utime+stime) over the timed requests; what came back
   (torrents or rows, `removed`, fields asked for but absent);
6. VmRSS/VmHWM again ("after the requests"); SIGTERM (exit code noted).

All requests of a daemon go over one persistent HTTP/1.1 connection
(http.client), which handles the 409 X-Transmission-Session-Id handshake;
the number of TCP connections opened is reported (1 when keep-alive held).
Runs alternate which daemon goes first (L, T, then T, L, ...). Medians are
over the runs that succeeded; every failed run is printed with its reason
and makes the exit code 1. Only 127.0.0.1 is used; every wait is bounded;
the temp dirs are deleted and both daemons are stopped (SIGKILL after 30 s)
whatever happens.
"""
import argparse
import base64
import hashlib
import http.client
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from benchlib import LODESTONE, MIB, ROOT, free_port, loadavg, median, parse_size, proc_cpu, proc_mem, stop
from session_scale import benc, info_hash, tr_settings

os.environ["LODESTONE_LOCAL_ONLY"] = "1"

FIELDS = ["id", "hashString", "name", "downloadDir", "totalSize", "leftUntilDone", "isFinished", "eta", "status",
          "secondsDownloading", "secondsSeeding", "errorString", "uploadedEver", "downloadedEver",
          "seedRatioLimit", "seedRatioMode", "seedIdleLimit", "seedIdleMode", "file-count", "labels"]
KINDS = {  # name: torrent-get arguments
    "full": {"fields": FIELDS},
    "recent": {"fields": FIELDS, "ids": "recently-active"},
    "table": {"fields": FIELDS, "format": "table"},
}
SIDES = ("lodestone", "transmission")
STOP_GRACE = 30


class RpcError(Exception):
    pass


class CountingConnection(http.client.HTTPConnection):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.opened = 0

    def connect(self):
        self.opened += 1
        super().connect()


class Rpc:
    """One persistent HTTP/1.1 connection to /transmission/rpc with the 409 handshake."""

    def __init__(self, port, timeout=60):
        self.conn = CountingConnection("127.0.0.1", port, timeout=timeout)
        self.sid = ""
        self.handshakes = 0  # 409s answered
        self.retries = 0  # requests sent again after the connection dropped

    def close(self):
        self.conn.close()

    def post(self, body):
        """(HTTP status, body bytes, seconds) of the last attempt; 409s handled here."""
        dropped = 0
        for _ in range(6):
            t0 = time.perf_counter()
            try:
                self.conn.request("POST", "/transmission/rpc", body,
                                  {"X-Transmission-Session-Id": self.sid, "Content-Type": "application/json"})
                resp = self.conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionError) as e:
                self.conn.close()
                dropped += 1
                self.retries += 1
                if dropped > 1:
                    raise RpcError(f"connection dropped twice in a row: {e!r}")
                continue
            dt = time.perf_counter() - t0
            if resp.status == 409:
                sid = resp.getheader("X-Transmission-Session-Id")
                if not sid or sid == self.sid:
                    raise RpcError(f"409 without a new session id (header {sid!r})")
                self.sid = sid
                self.handshakes += 1
                continue
            return resp.status, data, dt
        raise RpcError("no answer after 6 attempts (409s or dropped connections)")

    def call(self, method, arguments=None):
        """Arguments of a successful answer, else RpcError."""
        status, data, _ = self.post(json.dumps({"method": method, "arguments": arguments or {}}).encode())
        if status != 200:
            raise RpcError(f"{method}: HTTP {status}: {data[:200]!r}")
        j = json.loads(data)
        if j.get("result") != "success":
            raise RpcError(f"{method}: result {j.get('result')!r}")
        return j.get("arguments", {})


# ---------------------------------------------------------------- torrents


def make_torrents(n, size, piece, seed):
    """[(name, info hash, base64 metainfo)]; content never written anywhere."""
    out = []
    npieces = (size + piece - 1) // piece
    for i in range(n):
        name = f"t{i:05d}"
        pieces = b"".join(hashlib.sha1(f"{seed}/{i}/{p}".encode()).digest() for p in range(npieces))
        raw = benc({"created by": "bench/daemon_rpc.py",
                    "info": {"length": size, "name": name, "piece length": piece, "pieces": pieces}})
        out.append((name, info_hash(raw), base64.b64encode(raw).decode()))
    if len({h for _, h, _ in out}) != n:
        raise SystemExit("two torrents share an info hash")
    return out


# ---------------------------------------------------------------- daemons


def start_lodestone(a, tmp, log):
    state, dl = os.path.join(tmp, "state"), os.path.join(tmp, "download")
    os.makedirs(state)
    os.makedirs(dl)
    rpc_port = free_port()
    cmd = [a.lodestone, "daemon", "--config", "/dev/null", "--state-dir", state, "--download-dir", dl,
           "--no-dht", "--no-lpd", "--listen", f"127.0.0.1:{free_port()}", "--rpc-bind", f"127.0.0.1:{rpc_port}"]
    p = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    return p, rpc_port, dl, cmd


def start_transmission(a, tmp, log):
    conf, dl = os.path.join(tmp, "config"), os.path.join(tmp, "download")
    os.makedirs(conf)
    os.makedirs(dl)
    rpc_port, peer_port = free_port(), free_port()
    with open(os.path.join(conf, "settings.json"), "w") as f:
        json.dump(tr_settings(rpc_port, peer_port, dl), f, indent=1)
    cmd = [a.transmission_daemon, "-f", "-g", conf]
    p = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    return p, rpc_port, dl, cmd


def wait_up(side, p, rpc, logpath, limit=60):
    """Seconds until the daemon serves its RPC; RpcError if it does not within `limit`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if p.poll() is not None:
            raise RpcError(f"exited (rc {p.returncode}) before serving; log: {tail(logpath)}")
        if side == "lodestone":
            with open(logpath, errors="replace") as f:
                up = "lodestone daemon: RPC on http://" in f.read()
        else:
            try:
                rpc.call("session-get")
                up = True
            except (OSError, RpcError, ValueError):
                rpc.close()
                up = False
        if up:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise RpcError(f"RPC not up within {limit} s; log: {tail(logpath)}")


def tail(path, n=300):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:].strip() or "(empty)"
    except OSError:
        return "(no log)"


def nearest_rank(xs, q):
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def measure_kind(rpc, pid, kind, a):
    args = KINDS[kind]
    body = json.dumps({"method": "torrent-get", "arguments": args}).encode()
    lat, sizes, last = [], [], None
    c0 = None
    for i in range(a.warmup + a.requests):
        if i == a.warmup:
            c0 = proc_cpu(pid)
        status, data, dt = rpc.post(body)
        if status != 200:
            raise RpcError(f"{kind}: HTTP {status}: {data[:200]!r}")
        j = json.loads(data)
        if j.get("result") != "success":
            raise RpcError(f"{kind}: result {j.get('result')!r}")
        if i >= a.warmup:
            lat.append(dt)
            sizes.append(len(data))
        last = j.get("arguments", {})
    c1 = proc_cpu(pid)
    ts = last.get("torrents")
    r = {"latency_s": lat, "median_ms": 1000 * median(lat), "p90_ms": 1000 * nearest_rank(lat, 0.9),
         "min_ms": 1000 * min(lat), "max_ms": 1000 * max(lat),
         "bytes": median(sizes), "bytes_min": min(sizes), "bytes_max": max(sizes),
         "cpu_s": (c1 - c0) if c0 is not None and c1 is not None else None,
         "argument_keys": sorted(last)}
    if not isinstance(ts, list):
        raise RpcError(f"{kind}: no torrents list in the answer (keys {sorted(last)})")
    if kind == "table":
        header = ts[0] if ts else []
        r["count"] = max(0, len(ts) - 1)
        r["header"] = header
        r["missing_fields"] = [f for f in FIELDS if f not in header]
        r["extra_fields"] = [f for f in header if f not in FIELDS]
    else:
        r["count"] = len(ts)
        if ts:
            r["missing_fields"] = [f for f in FIELDS if f not in ts[0]]
            r["extra_fields"] = sorted(k for k in ts[0] if k not in FIELDS)
            r["sample"] = ts[0]
    if "removed" in last:
        r["removed"] = len(last["removed"]) if isinstance(last["removed"], list) else last["removed"]
    return r


def run_side(side, rnd, a, torrents, base, logdir):
    tmp = tempfile.mkdtemp(prefix=f"{side}-r{rnd}-", dir=base)
    logpath = os.path.join(logdir, f"{side}-r{rnd}.log")
    r = {"side": side, "run": rnd, "ok": False, "load_average_before": loadavg()}
    p = rpc = None
    try:
        with open(logpath, "w") as log:
            starter = start_lodestone if side == "lodestone" else start_transmission
            p, port, dl, cmd = starter(a, tmp, log)
        r["command"] = " ".join(cmd)
        r["pid"] = p.pid
        rpc = Rpc(port, timeout=a.request_timeout)
        r["up_s"] = wait_up(side, p, rpc, logpath)
        sid = rpc.sid
        rpc.close()
        rpc = Rpc(port, timeout=a.request_timeout)  # the connection that is measured: opened here
        rpc.sid = sid
        deadline = time.monotonic() + a.timeout

        # add
        ta = time.monotonic()
        adds, ids = [], set()
        for name, ih, meta in torrents:
            t0 = time.perf_counter()
            res = rpc.call("torrent-add", {"metainfo": meta, "paused": False, "download-dir": dl})
            adds.append(time.perf_counter() - t0)
            added = res.get("torrent-added")
            if not isinstance(added, dict):
                raise RpcError(f"torrent-add {name}: no torrent-added in {json.dumps(res)[:200]}")
            if str(added.get("hashString", "")).lower() != ih:
                raise RpcError(f"torrent-add {name}: hashString {added.get('hashString')} != {ih}")
            ids.add(added.get("id"))
            if time.monotonic() > deadline:
                raise RpcError(f"adding took over {a.timeout:g} s")
        last_add = time.monotonic()
        r["add_s"] = last_add - ta
        r["add_median_ms"] = 1000 * median(adds)
        if len(ids) != len(torrents):
            raise RpcError(f"{len(ids)} distinct ids for {len(torrents)} torrents")

        # settle: all there, none checking
        polls = 0
        while True:
            ts = rpc.call("torrent-get", {"fields": ["id", "status", "error", "errorString"]})["torrents"]
            polls += 1
            by = {}
            for t in ts:
                by[t.get("status")] = by.get(t.get("status"), 0) + 1
            if len(ts) == len(torrents) and not (by.get(1) or by.get(2)):
                break
            if time.monotonic() > deadline or p.poll() is not None:
                raise RpcError(f"not settled ({len(ts)} torrents, statuses {by}) "
                               + (f"exited rc {p.returncode}" if p.poll() is not None else f"in {a.timeout:g} s"))
            time.sleep(0.2)
        r["settle_s"] = time.monotonic() - last_add
        r["settle_polls"] = polls
        r["statuses"] = {str(k): v for k, v in sorted(by.items(), key=lambda kv: str(kv[0]))}
        errs = [t for t in ts if t.get("error") or t.get("errorString")]
        r["torrents_in_error"] = len(errs)
        if errs:
            r["error_example"] = errs[0]
        r["mem_after_add"] = proc_mem(p.pid)

        # quiet: nothing asked, from the moment all had settled (the last change we know of)
        settled = time.monotonic()
        time.sleep(a.quiet)
        if p.poll() is not None:
            raise RpcError(f"exited (rc {p.returncode}) during the quiet period")
        r["quiet_s"] = time.monotonic() - settled
        r["since_last_add_s"] = time.monotonic() - last_add
        r["mem_before_requests"] = proc_mem(p.pid)

        # requests
        for kind in KINDS:
            r[kind] = measure_kind(rpc, p.pid, kind, a)
            if time.monotonic() > deadline + a.timeout:
                raise RpcError(f"requests took over {a.timeout:g} s")
        r["mem_after_requests"] = proc_mem(p.pid)
        r["connections_opened"] = rpc.conn.opened
        r["handshakes_409"] = rpc.handshakes
        r["reconnects"] = rpc.retries
        problems = []
        if r["full"]["count"] != len(torrents):
            problems.append(f"full torrent-get returned {r['full']['count']} of {len(torrents)}")
        if r["table"]["count"] != len(torrents):
            problems.append(f"table torrent-get returned {r['table']['count']} rows of {len(torrents)}")
        if p.poll() is not None:
            problems.append(f"exited (rc {p.returncode}) during the requests")
        if problems:
            raise RpcError("; ".join(problems))
        r["ok"] = True
    except (RpcError, OSError, ValueError, KeyError, TypeError) as e:
        r["error"] = f"{type(e).__name__}: {e}" if not isinstance(e, RpcError) else str(e)
        if p is not None and p.poll() is not None:
            r["error"] += f" (daemon exited rc {p.returncode}; log: {tail(logpath)})"
    finally:
        if rpc is not None:
            rpc.close()
        if p is not None:
            alive = p.poll() is None
            note = stop(p, signal.SIGTERM, STOP_GRACE)
            r["exit_code"] = p.returncode
            if note:
                r["stop_note"] = note
            elif alive and p.returncode != 0:
                r["stop_note"] = f"exit code {p.returncode} after SIGTERM"
        shutil.rmtree(tmp, ignore_errors=True)
    r["log"] = logpath
    return r


# ---------------------------------------------------------------- report

ROWS = [  # label, path, unit
    ("RPC up after spawn", "up_s", "s"),
    ("1,000 torrent-add calls, total", "add_s", "s"),
    ("VmRSS after adding", "mem_after_add.vmrss_mib", "MiB"),
    ("VmHWM after adding", "mem_after_add.vmhwm_mib", "MiB"),
    ("full: median latency", "full.median_ms", "ms"),
    ("full: p90 latency", "full.p90_ms", "ms"),
    ("full: response size", "full.bytes", "KiB"),
    ("full: daemon CPU over the timed requests", "full.cpu_s", "s"),
    ("full: torrents returned", "full.count", ""),
    ("recently-active: median latency", "recent.median_ms", "ms"),
    ("recently-active: p90 latency", "recent.p90_ms", "ms"),
    ("recently-active: response size", "recent.bytes", "KiB"),
    ("recently-active: torrents returned", "recent.count", ""),
    ("recently-active: removed returned", "recent.removed", ""),
    ("table: median latency", "table.median_ms", "ms"),
    ("table: p90 latency", "table.p90_ms", "ms"),
    ("table: response size", "table.bytes", "KiB"),
    ("table: daemon CPU over the timed requests", "table.cpu_s", "s"),
    ("table: rows returned", "table.count", ""),
    ("VmRSS after the requests", "mem_after_requests.vmrss_mib", "MiB"),
    ("VmHWM after the requests", "mem_after_requests.vmhwm_mib", "MiB"),
    ("TCP connections opened", "connections_opened", ""),
]


def g(r, path):
    for k in path.split("."):
        r = r.get(k) if isinstance(r, dict) else None
    return r


def fmt(x, unit):
    if x is None:
        return "-"
    if unit == "KiB":
        return f"{x / 1024:.1f}"
    if unit == "":
        return f"{x:g}"
    return f"{x:.3f}" if unit == "s" else f"{x:.2f}" if unit == "ms" else f"{x:.1f}"


def summarize(runs, sides):
    med = {}
    for side in sides:
        ok = [r for r in runs if r["side"] == side and r["ok"]]
        med[side] = {"runs": sum(1 for r in runs if r["side"] == side), "ok": len(ok)}
        for _, path, _ in ROWS:
            med[side][path] = median(g(r, path) for r in ok)
    return med


def print_table(med, a):
    lo, tr = med.get("lodestone"), med.get("transmission")
    print()
    print(f"{a.n} torrents, {a.requests} timed requests per kind after {a.warmup} warm-up; medians over the "
          f"ok runs (per run: median / p90 of its {a.requests})")
    print(f"{'':46s} {'Lodestone':>10s} {'Transmission':>13s} {'L/T':>7s}")
    for label, path, unit in ROWS:
        lv = lo.get(path) if lo else None
        tv = tr.get(path) if tr else None
        ratio = f"{lv / tv:.2f}x" if lv is not None and tv else "-"
        u = f" ({unit})" if unit else ""
        print(f"{label + u:46s} {fmt(lv, unit):>10s} {fmt(tv, unit):>13s} {ratio:>7s}")
    for side, m in med.items():
        print(f"  {side}: {m['ok']}/{m['runs']} runs ok")


def describe(r):
    if not r["ok"]:
        return f"FAILED: {r.get('error')}" + (f" [{r['stop_note']}]" if r.get("stop_note") else "")
    bits = [f"up {r['up_s']:.2f} s", f"adds {r['add_s']:.2f} s", f"settled {r['settle_s']:.2f} s "
            f"(statuses {r['statuses']}, {r['torrents_in_error']} in error)",
            f"VmRSS {fmt(g(r, 'mem_after_add.vmrss_mib'), 'MiB')} -> "
            f"{fmt(g(r, 'mem_after_requests.vmrss_mib'), 'MiB')} MiB"]
    for k in KINDS:
        m = r[k]
        s = f"{k} {m['median_ms']:.2f}/{m['p90_ms']:.2f} ms {m['bytes'] / 1024:.1f} KiB n={m['count']}"
        if "removed" in m:
            s += f" removed={m['removed']}"
        if m.get("missing_fields"):
            s += f" missing {m['missing_fields']}"
        bits.append(s)
    bits.append(f"{r['connections_opened']} connection(s), {r['handshakes_409']} 409(s), exit {r.get('exit_code')}")
    if r.get("stop_note"):
        bits.append(r["stop_note"])
    return "; ".join(bits)


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs, each with fresh daemons (default 3)")
    ap.add_argument("--n", type=int, default=1000, help="torrents (default 1000)")
    ap.add_argument("--size", type=parse_size, default=MIB, help="bytes per torrent (default 1M)")
    ap.add_argument("--piece-size", type=parse_size, default=256 * 1024)
    ap.add_argument("--seed", type=int, default=1, help="seed of the piece hashes")
    ap.add_argument("--requests", type=int, default=50, help="timed requests per kind (default 50)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed requests before them (default 5)")
    ap.add_argument("--quiet", type=float, default=65,
                    help="seconds without requests between all settled and the first measured one (default 65)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds for adding and settling (default 600)")
    ap.add_argument("--request-timeout", type=float, default=60, help="socket timeout of one request")
    ap.add_argument("--json", help="write every figure here")
    side = ap.add_mutually_exclusive_group()
    side.add_argument("--lodestone-only", action="store_true")
    side.add_argument("--transmission-only", action="store_true")
    ap.add_argument("--lodestone", default=LODESTONE, help="the lodestone binary")
    ap.add_argument("--transmission-daemon", default=shutil.which("transmission-daemon") or "transmission-daemon")
    a = ap.parse_args()
    if a.runs < 1 or a.n < 1 or a.requests < 1 or a.warmup < 0 or a.quiet < 0:
        ap.error("--runs, --n, --requests must be >= 1; --warmup, --quiet >= 0")

    sides = list(SIDES)
    if a.lodestone_only:
        sides = ["lodestone"]
    if a.transmission_only:
        sides = ["transmission"]
    if "lodestone" in sides and not os.path.exists(a.lodestone):
        raise SystemExit(f"{a.lodestone} not found (cargo build --release -p lodestone)")
    if "transmission" in sides and not shutil.which(a.transmission_daemon):
        raise SystemExit(f"{a.transmission_daemon} not found (or run with --lodestone-only)")

    versions = {}
    if "lodestone" in sides:
        versions["lodestone"] = subprocess.run([a.lodestone, "--version"], capture_output=True,
                                               text=True).stdout.strip()
    if "transmission" in sides:
        v = subprocess.run([a.transmission_daemon, "--version"], capture_output=True, text=True)
        versions["transmission"] = (v.stdout + v.stderr).strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()

    st = os.statvfs("/dev/shm") if os.path.isdir("/dev/shm") else None
    base = tempfile.mkdtemp(prefix="lodestone-daemon-rpc-",
                            dir="/dev/shm" if st and st.f_bavail * st.f_frsize > 512 * MIB else None)
    logdir = os.path.join(base, "logs")
    os.makedirs(logdir)
    runs = []
    result = {"params": vars(a), "fields": FIELDS, "kinds": KINDS, "versions": versions, "git_head": commit,
              "cores": os.cpu_count(), "runs": runs}
    print(f"daemon_rpc: {a.n} torrents x {a.size / MIB:g} MiB (content not on disk), {a.runs} run(s), "
          f"{a.warmup}+{a.requests} requests per kind, quiet {a.quiet:g} s; {os.cpu_count()} cores, "
          f"load average {loadavg()}; {'; '.join(versions.values())}; git {commit}", flush=True)
    try:
        torrents = make_torrents(a.n, a.size, a.piece_size, a.seed)
        for rnd in range(1, a.runs + 1):
            order = sides if rnd % 2 == 1 else sides[::-1]
            for side in order:
                print(f"run {rnd} {side:12s} (load average {loadavg()}) ...", flush=True)
                r = run_side(side, rnd, a, torrents, base, logdir)
                log = r.pop("log")
                if not r["ok"]:
                    r["log_tail"] = tail(log, 2000)
                runs.append(r)
                print(f"  run {rnd} {side}: {describe(r)}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    med = summarize(runs, sides)
    result["medians"] = med
    if len(sides) == 2:
        result["ratios_lodestone_over_transmission"] = {
            path: med["lodestone"][path] / med["transmission"][path] for _, path, _ in ROWS
            if med["lodestone"].get(path) is not None and med["transmission"].get(path)}
    print_table(med, a)
    for side in sides:
        ok = [r for r in runs if r["side"] == side and r["ok"]]
        if ok:
            for k in KINDS:
                m = ok[-1][k]
                what = f"{m['count']} torrents" + (f", removed {m['removed']}" if "removed" in m else "")
                print(f"  {side} {k}: answer keys {m['argument_keys']}, {what}"
                      + (f"; fields asked for but absent: {m['missing_fields']}" if m.get("missing_fields") else "")
                      + (f"; extra fields: {m['extra_fields']}" if m.get("extra_fields") else ""))
            print(f"  {side} statuses after adding: {ok[-1]['statuses']}, {ok[-1]['torrents_in_error']} in error")
    failed = [r for r in runs if not r["ok"]]
    for r in failed:
        print(f"FAILED run: run {r['run']} {r['side']}: {r.get('error')}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"results: {a.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
