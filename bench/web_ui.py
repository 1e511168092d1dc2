#!/usr/bin/python3
"""The web page under 5,000 torrents: Lodestone's page on `lodestone daemon`
against Transmission's web client on transmission-daemon 3.00, the same
torrents, the same browser, measured the same way.

  bench/web_ui.py [--runs 3] [--n 5000] [--json FILE]
                  [--lodestone-only | --transmission-only]

Needs tests/web/node_modules (npm ci --prefix tests/web) and Debian's
chromium (/usr/bin/chromium); `cargo build --release -p lodestone` first.

Each daemon is prepared once (as bench/daemon_rpc.py starts them: temp state,
127.0.0.1 only, DHT/LPD/PEX off): the N torrents (bench/daemon_rpc.py's
in-memory single-file torrents, content not on disk) are added **paused**,
the daemon settles (Transmission checks each, about ten a second) and stops.
Every run starts the daemon on a fresh copy of that state and waits until
it lists the N torrents, all stopped. Then bench/web_ui.mjs opens the
daemon's page in a fresh headless chromium (fresh profile, 1280x800) and
measures, in the page's own clock (performance.now(), from navigation start):

- first render: until the page lists the torrents (Lodestone: the row of the
  first torrent is drawn and the page counts N torrents; Transmission: N
  rows `#torrent_list li.torrent` exist, it draws every row);
- update: torrent-start through the RPC (both daemons speak it) on the
  torrent at the top of the page in its default order (Transmission sorts
  by name, Lodestone shows the newest first), from the RPC's answer until that torrent's row
  shows it is no longer stopped. Transmission's client polls every 5 s
  (its default refresh), Lodestone's page is pushed changes by the event
  stream (coalesced to at most one per torrent per second): this figure is
  mostly those two designs, and says so;
- the page's memory after the update: JS heap used (CDP
  Performance.getMetrics JSHeapUsedSize), DOM nodes, and the PSS of the
  browser's renderer processes (/proc/PID/smaps_rollup).

Runs alternate which daemon goes first. Medians over the runs that
succeeded; every failed run is printed with its reason and makes the exit
code 1. Only 127.0.0.1 is used; every wait is bounded.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from benchlib import LODESTONE, MIB, ROOT, free_port, g, loadavg, median, parse_size, proc_mem, stop
from daemon_rpc import Rpc, RpcError, make_torrents, tail, wait_up
from session_scale import tr_settings

os.environ["LODESTONE_LOCAL_ONLY"] = "1"

SIDES = ("lodestone", "transmission")
STOP_GRACE = 30
MJS = os.path.join(ROOT, "bench", "web_ui.mjs")
NODE_MODULES = os.path.join(ROOT, "tests", "web", "node_modules", "playwright-core")

ROWS = [  # label, path, unit
    ("first render", "first_render_ms", "ms"),
    ("update shown after the RPC answered", "update_ms", "ms"),
    ("JS heap used", "js_heap_mib", "MiB"),
    ("DOM nodes", "dom_nodes", ""),
    ("renderer processes PSS", "renderer_pss_mib", "MiB"),
    ("daemon VmRSS after the page loaded", "daemon_mem.vmrss_mib", "MiB"),
]


def start(side, a, tmp, log):
    """Start a daemon on tmp's state (made on first use); (process, RPC port, download dir, command)."""
    state, conf, dl = (os.path.join(tmp, d) for d in ("state", "config", "download"))
    for d in (state, conf, dl):
        os.makedirs(d, exist_ok=True)
    rpc_port = free_port()
    if side == "lodestone":
        cmd = [a.lodestone, "daemon", "--config", "/dev/null", "--state-dir", state, "--download-dir", dl,
               "--no-dht", "--no-lpd", "--listen", f"127.0.0.1:{free_port()}", "--rpc-bind", f"127.0.0.1:{rpc_port}"]
    else:
        settings, s = os.path.join(conf, "settings.json"), {}
        if os.path.exists(settings):  # it rewrites the file on exit: keep its keys, set ours again
            with open(settings) as f:
                s = json.load(f)
        s.update(tr_settings(rpc_port, free_port(), dl))
        with open(settings, "w") as f:
            json.dump(s, f, indent=1)
        cmd = [a.transmission_daemon, "-f", "-g", conf]
    p = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    return p, rpc_port, dl, cmd


def all_stopped(rpc, p, n, deadline, what):
    """Wait until the daemon lists n torrents, all stopped (status 0)."""
    while True:
        ts = rpc.call("torrent-get", {"fields": ["id", "status"]})["torrents"]
        stopped = sum(1 for t in ts if t.get("status") == 0)
        if len(ts) == n and stopped == n:
            return
        if time.monotonic() > deadline or p.poll() is not None:
            raise RpcError(f"{what}: {len(ts)} torrents, {stopped} stopped, of {n}")
        time.sleep(0.5)


def prepare(side, a, torrents, base, logdir):
    """Add the torrents paused once, let the daemon settle (Transmission checks
    each one, about ten a second) and stop it: every run starts from a copy of
    this state. Returns the pristine copy's path."""
    tmp = os.path.join(base, side)
    logpath = os.path.join(logdir, f"{side}-prepare.log")
    with open(logpath, "w") as log:
        p, port, dl, _ = start(side, a, tmp, log)
    rpc = Rpc(port, timeout=60)
    try:
        wait_up(side, p, rpc, logpath)
        deadline = time.monotonic() + a.timeout
        for name, _, meta in torrents:
            res = rpc.call("torrent-add", {"metainfo": meta, "paused": True, "download-dir": dl})
            if not isinstance(res.get("torrent-added"), dict):
                raise RpcError(f"torrent-add {name}: {json.dumps(res)[:200]}")
        all_stopped(rpc, p, len(torrents), deadline, "settling after the adds")
    finally:
        rpc.close()
        note = stop(p, signal.SIGTERM, STOP_GRACE)
    if note or p.returncode != 0:
        raise RpcError(f"{side} did not stop cleanly after preparing: {note or p.returncode}; {tail(logpath)}")
    pristine = tmp + ".pristine"
    shutil.copytree(tmp, pristine, symlinks=True)
    return pristine


def run_side(side, rnd, a, torrents, pristine, logdir):
    tmp = pristine.removesuffix(".pristine")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(pristine, tmp, symlinks=True)
    logpath = os.path.join(logdir, f"{side}-r{rnd}.log")
    r = {"side": side, "run": rnd, "ok": False, "load_average_before": loadavg()}
    p = rpc = None
    try:
        with open(logpath, "w") as log:
            p, port, _, cmd = start(side, a, tmp, log)
        r["command"] = " ".join(cmd)
        rpc = Rpc(port, timeout=60)
        wait_up(side, p, rpc, logpath)
        all_stopped(rpc, p, len(torrents), time.monotonic() + a.timeout, "after the restart")
        rpc.close()
        url = f"http://127.0.0.1:{port}/" if side == "lodestone" else f"http://127.0.0.1:{port}/transmission/web/"
        profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=os.path.dirname(tmp))
        try:
            node = subprocess.run(["node", MJS, side, url, str(port), str(len(torrents)), profile],
                                  capture_output=True, text=True, timeout=a.timeout)
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        if node.returncode != 0:
            raise RpcError(f"web_ui.mjs exit {node.returncode}: {(node.stderr or node.stdout)[-1500:]}")
        r.update(json.loads(node.stdout.strip().splitlines()[-1]))
        r["daemon_mem"] = proc_mem(p.pid)
        r["ok"] = True
    except (RpcError, OSError, ValueError, KeyError, TypeError, subprocess.TimeoutExpired) as e:
        r["error"] = f"{type(e).__name__}: {e}" if not isinstance(e, RpcError) else str(e)
        if p is not None and p.poll() is not None:
            r["error"] += f" (daemon exited rc {p.returncode}; log: {tail(logpath)})"
    finally:
        if rpc is not None:
            rpc.close()
        if p is not None:
            stop(p, signal.SIGTERM, STOP_GRACE)
            r["exit_code"] = p.returncode
        shutil.rmtree(tmp, ignore_errors=True)
    return r


def fmt(x, unit):
    if x is None:
        return "-"
    return f"{x:g}" if unit == "" else f"{x:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=5000, help="torrents (default 5000)")
    ap.add_argument("--size", type=parse_size, default=MIB, help="bytes per torrent (default 1M)")
    ap.add_argument("--piece-size", type=parse_size, default=256 * 1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600, help="seconds for adding, and for the page")
    ap.add_argument("--json", help="write every figure here")
    side = ap.add_mutually_exclusive_group()
    side.add_argument("--lodestone-only", action="store_true")
    side.add_argument("--transmission-only", action="store_true")
    ap.add_argument("--lodestone", default=LODESTONE)
    ap.add_argument("--transmission-daemon", default=shutil.which("transmission-daemon") or "transmission-daemon")
    a = ap.parse_args()
    if a.runs < 1 or a.n < 1:
        ap.error("--runs and --n must be >= 1")
    sides = ["lodestone"] if a.lodestone_only else ["transmission"] if a.transmission_only else list(SIDES)
    if "lodestone" in sides and not os.path.exists(a.lodestone):
        raise SystemExit(f"{a.lodestone} not found (cargo build --release -p lodestone)")
    if "transmission" in sides and not shutil.which(a.transmission_daemon):
        raise SystemExit(f"{a.transmission_daemon} not found (or run with --lodestone-only)")
    if not os.path.isdir(NODE_MODULES):
        raise SystemExit("tests/web/node_modules missing: npm ci --prefix tests/web")
    if not shutil.which("chromium"):
        raise SystemExit("chromium missing: apt-get install chromium")
    versions = {"chromium": subprocess.run(["chromium", "--version"], capture_output=True,
                                           text=True).stdout.strip()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    base = tempfile.mkdtemp(prefix="lodestone-web-ui-")
    logdir = os.path.join(base, "logs")
    os.makedirs(logdir)
    runs = []
    print(f"web_ui: {a.n} torrents (paused), {a.runs} run(s); {os.cpu_count()} cores, load average "
          f"{loadavg()}; {versions['chromium']}; git {commit}", flush=True)
    try:
        torrents = make_torrents(a.n, a.size, a.piece_size, a.seed)
        torrents.sort(key=lambda t: t[0])
        pristine = {}
        for side in sides:
            print(f"preparing {side}: {a.n} torrents added paused, settling ...", flush=True)
            t0 = time.monotonic()
            pristine[side] = prepare(side, a, torrents, base, logdir)
            print(f"  {side} ready in {time.monotonic() - t0:.0f} s", flush=True)
        for rnd in range(1, a.runs + 1):
            for side in (sides if rnd % 2 == 1 else sides[::-1]):
                r = run_side(side, rnd, a, torrents, pristine[side], logdir)
                runs.append(r)
                if r["ok"]:
                    print(f"  run {rnd} {side}: " + ", ".join(
                        f"{label} {fmt(g(r, path), unit)}{(' ' + unit) if unit else ''}"
                        for label, path, unit in ROWS), flush=True)
                else:
                    print(f"  run {rnd} {side}: FAILED: {r['error']}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    med = {}
    for side in sides:
        ok = [r for r in runs if r["side"] == side and r["ok"]]
        med[side] = {"runs": sum(1 for r in runs if r["side"] == side), "ok": len(ok)}
        for _, path, _ in ROWS:
            med[side][path] = median(g(r, path) for r in ok)
    print()
    print(f"{a.n} torrents; medians over the ok runs")
    print(f"{'':44s} {'Lodestone':>10s} {'Transmission':>13s} {'L/T':>7s}")
    for label, path, unit in ROWS:
        lv = med.get("lodestone", {}).get(path)
        tv = med.get("transmission", {}).get(path)
        ratio = f"{lv / tv:.2f}x" if lv is not None and tv else "-"
        print(f"{label + (f' ({unit})' if unit else ''):44s} {fmt(lv, unit):>10s} {fmt(tv, unit):>13s} {ratio:>7s}")
    for side, m in med.items():
        print(f"  {side}: {m['ok']}/{m['runs']} runs ok")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"params": vars(a), "versions": versions, "git_head": commit, "runs": runs,
                       "medians": med}, f, indent=1)
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
