#!/usr/bin/python3
"""qBittorrent's sync/maindata under 1,000 torrents: `lodestone daemon`
against Debian's qbittorrent-nox (when installed), same torrents, same
requests, same client.

  bench/qbt_maindata.py [--runs 3] [--n 1000] [--samples 10] [--json FILE]
                        [--lodestone-only] [--qbittorrent-nox PATH]

The torrents: N single-file torrents of 1 MiB (256 KiB pieces, no trackers)
made in memory as bench/daemon_rpc.py makes them (same names, same info
hashes); their content is not on disk, so once added each sits downloading
with no peers (DHT, LPD and PEX off).

Each run starts each daemon fresh in a temp dir (/dev/shm when it has
room), then:
1. waits for /api/v2/app/version; logs in (`auth/login`, keeping the
   cookie; qbittorrent-nox runs with its localhost bypass, as its default
   profile has no known password);
2. adds the N torrents with `torrents/add`, one multipart upload each
   (`torrents` file part, `paused=false`, `stopped=false`), then polls
   `torrents/info` until all N are there and none is checking;
3. "full": --samples requests of `sync/maindata?rid=0`;
4. "unchanged": --samples requests, each with the rid of the answer
   before, one second apart (a web page's poll);
5. "one paused": --samples times, stop one more torrent
   (`torrents/stop`, `torrents/pause` for qBittorrent 4.x) then ask
   `sync/maindata` with the rid of the answer before (asked again every
   0.5 s, up to 10 times, until the stopped torrent is in it: qBittorrent
   reports a stop a moment later; the answer that has it is measured);
for each: the response size in bytes and the latency (send to last byte,
time.perf_counter, JSON parsing not included), medians over the samples and
then over the runs. One persistent HTTP/1.1 connection per daemon; only
127.0.0.1; every wait bounded; temp dirs deleted and daemons stopped
(SIGKILL after 30 s) whatever happens.
"""
import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlencode

from benchlib import LODESTONE, free_port, loadavg, median, proc_mem, stop
from daemon_rpc import make_torrents

os.environ["LODESTONE_LOCAL_ONLY"] = "1"

STOP_GRACE = 30
SIDES = ("lodestone", "qbittorrent-nox")


class ApiError(Exception):
    pass


class Api:
    """One persistent connection to /api/v2 with the session cookie."""

    def __init__(self, port, timeout=60):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.cookie = None

    def close(self):
        self.conn.close()

    def request(self, method, path, body=None, ctype=None):
        """(status, body bytes, seconds)."""
        headers = {}
        if self.cookie:
            headers["Cookie"] = self.cookie
        if ctype:
            headers["Content-Type"] = ctype
        for attempt in range(2):
            t0 = time.perf_counter()
            try:
                self.conn.request(method, path, body, headers)
                resp = self.conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionError) as e:
                self.conn.close()
                if attempt:
                    raise ApiError(f"{path}: connection dropped twice: {e!r}")
                continue
            dt = time.perf_counter() - t0
            if resp.status == 200 and path.endswith("auth/login"):
                c = resp.getheader("Set-Cookie")
                if c:
                    self.cookie = c.split(";", 1)[0]
            return resp.status, data, dt
        raise ApiError(f"{path}: no answer")

    def ok(self, method, path, body=None, ctype=None):
        status, data, dt = self.request(method, path, body, ctype)
        if status != 200:
            raise ApiError(f"{method} {path}: HTTP {status}: {data[:200]!r}")
        return data, dt

    def form(self, path, fields):
        return self.ok("POST", path, urlencode(fields).encode(), "application/x-www-form-urlencoded")[0]


def multipart(fields, files):
    b = "----qbtmaindata7e1f"
    out = []
    for k, v in fields.items():
        out.append(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for name, data in files:
        out.append(f'--{b}\r\nContent-Disposition: form-data; name="torrents"; filename="{name}.torrent"\r\n'
                   f"Content-Type: application/x-bittorrent\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{b}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={b}"


def start_lodestone(a, tmp, log):
    state, dl = os.path.join(tmp, "state"), os.path.join(tmp, "download")
    os.makedirs(state)
    os.makedirs(dl)
    port = free_port()
    cmd = [a.lodestone, "daemon", "--config", "/dev/null", "--state-dir", state, "--download-dir", dl,
           "--no-dht", "--no-lpd", "--listen", f"127.0.0.1:{free_port()}", "--rpc-bind", f"127.0.0.1:{port}"]
    return subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL), port, cmd


def start_qbittorrent(a, tmp, log):
    dl = os.path.join(tmp, "download")
    conf = os.path.join(tmp, "qBittorrent", "config")
    os.makedirs(dl)
    os.makedirs(conf)
    port, peer = free_port(), free_port()
    with open(os.path.join(conf, "qBittorrent.conf"), "w") as f:
        f.write(f"""[LegalNotice]
Accepted=true

[BitTorrent]
Session\\DHTEnabled=false
Session\\LSDEnabled=false
Session\\PeXEnabled=false
Session\\Port={peer}
Session\\Interface=lo
Session\\InterfaceName=lo
Session\\DefaultSavePath={dl}
Session\\QueueingSystemEnabled=false
Session\\AnonymousModeEnabled=false

[Preferences]
Connection\\UPnP=false
WebUI\\Address=127.0.0.1
WebUI\\Port={port}
WebUI\\LocalHostAuth=false
WebUI\\CSRFProtection=false
WebUI\\HostHeaderValidation=false
WebUI\\UseUPnP=false
""")
    cmd = [a.qbittorrent_nox, f"--profile={tmp}", f"--webui-port={port}"]
    return subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL), port, cmd


def wait_up(p, api, limit=60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if p.poll() is not None:
            raise ApiError(f"exited (rc {p.returncode}) before serving")
        try:
            status, _, _ = api.request("GET", "/api/v2/app/version")
            if status in (200, 403):
                return time.monotonic() - t0
        except (OSError, ApiError):
            api.close()
        time.sleep(0.1)
    raise ApiError(f"not up within {limit} s")


def maindata(api, rid):
    data, dt = api.ok("GET", f"/api/v2/sync/maindata?rid={rid}")
    return json.loads(data), len(data), dt


def summary(xs):
    sizes = [s for s, _ in xs]
    lat = [t for _, t in xs]
    return {"bytes": median(sizes), "bytes_max": max(sizes), "median_ms": 1000 * median(lat),
            "max_ms": 1000 * max(lat), "samples": len(xs)}


def run_side(side, rnd, a, torrents, base, logdir):
    tmp = tempfile.mkdtemp(prefix=f"{side}-r{rnd}-", dir=base)
    logpath = os.path.join(logdir, f"{side}-r{rnd}.log")
    r = {"side": side, "run": rnd, "ok": False, "load_average_before": loadavg()}
    p = api = None
    try:
        with open(logpath, "w") as log:
            p, port, cmd = (start_lodestone if side == "lodestone" else start_qbittorrent)(a, tmp, log)
        r["command"] = " ".join(cmd)
        api = Api(port)
        r["up_s"] = wait_up(p, api)
        api.form("/api/v2/auth/login", {"username": "admin", "password": "adminadmin"})
        r["version"] = api.ok("GET", "/api/v2/app/version")[0].decode()
        r["webapi"] = api.ok("GET", "/api/v2/app/webapiVersion")[0].decode()
        t0 = time.monotonic()
        for name, _, meta in torrents:
            body, ct = multipart({"paused": "false", "stopped": "false"}, [(name, base64.b64decode(meta))])
            data, _ = api.ok("POST", "/api/v2/torrents/add", body, ct)
            if data.strip() != b"Ok.":
                raise ApiError(f"add {name}: {data[:100]!r}")
        r["add_s"] = time.monotonic() - t0
        deadline = time.monotonic() + a.timeout
        while True:
            info = json.loads(api.ok("GET", "/api/v2/torrents/info")[0])
            states = {}
            for t in info:
                states[t["state"]] = states.get(t["state"], 0) + 1
            if len(info) == len(torrents) and not any(s.startswith("checking") for s in states):
                break
            if time.monotonic() > deadline:
                raise ApiError(f"not settled: {len(info)} torrents, states {states}")
            time.sleep(0.5)
        r["states"] = states
        time.sleep(a.settle)
        r["mem"] = proc_mem(p.pid)
        hashes = [t["hash"] for t in info]

        full = []
        for _ in range(a.samples):
            j, size, dt = maindata(api, 0)
            if not j.get("full_update") or len(j.get("torrents", {})) != len(torrents):
                raise ApiError(f"rid=0 gave {len(j.get('torrents', {}))} torrents, full_update {j.get('full_update')}")
            full.append((size, dt))
        r["full"] = summary(full)
        rid = j["rid"]

        unchanged = []
        for _ in range(a.samples):
            time.sleep(1)
            j, size, dt = maindata(api, rid)
            if j.get("full_update"):
                raise ApiError("an incremental request got a full update")
            unchanged.append((size, dt))
            rid = j["rid"]
        r["unchanged"] = summary(unchanged)
        r["unchanged_example"] = j

        paused = []
        stop_path = "/api/v2/torrents/stop" if not r["version"].startswith("v4") else "/api/v2/torrents/pause"
        for i in range(a.samples):
            api.form(stop_path, {"hashes": hashes[i]})
            time.sleep(a.after_pause)
            for _ in range(10):
                j, size, dt = maindata(api, rid)
                rid = j["rid"]
                if hashes[i] in j.get("torrents", {}):
                    break
                time.sleep(0.5)  # qBittorrent says a stop a moment later
            else:
                raise ApiError(f"the stopped torrent is not in the diff: {json.dumps(j)[:300]}")
            paused.append((size, dt))
            rid = j["rid"]
        r["one_paused"] = summary(paused)
        r["one_paused_example"] = j
        r["ok"] = True
    except (ApiError, OSError, ValueError, KeyError, TypeError) as e:
        r["error"] = f"{type(e).__name__}: {e}"
    finally:
        if api is not None:
            api.close()
        if p is not None:
            note = stop(p, signal.SIGTERM, STOP_GRACE)
            r["exit_code"] = p.returncode
            if note:
                r["stop_note"] = note
        shutil.rmtree(tmp, ignore_errors=True)
    r["log"] = logpath
    return r


ROWS = [
    ("rid=0: response size", "full.bytes", "KiB"),
    ("rid=0: median latency", "full.median_ms", "ms"),
    ("nothing changed: response size", "unchanged.bytes", "B"),
    ("nothing changed: median latency", "unchanged.median_ms", "ms"),
    ("one torrent stopped: response size", "one_paused.bytes", "B"),
    ("one torrent stopped: median latency", "one_paused.median_ms", "ms"),
    ("adding N torrents (one upload each)", "add_s", "s"),
    ("VmRSS after adding", "mem.vmrss_mib", "MiB"),
]


def get(r, path):
    for k in path.split("."):
        r = r.get(k) if isinstance(r, dict) else None
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds between settling and the requests")
    ap.add_argument("--after-pause", type=float, default=1.0, help="seconds between a stop and the request")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--json")
    ap.add_argument("--lodestone", default=LODESTONE)
    ap.add_argument("--qbittorrent-nox", default=shutil.which("qbittorrent-nox"))
    ap.add_argument("--lodestone-only", action="store_true")
    a = ap.parse_args()
    if not os.access(a.lodestone, os.X_OK):
        sys.exit(f"{a.lodestone}: not built (cargo build --release -p lodestone)")
    sides = ["lodestone"]
    if not a.lodestone_only:
        if a.qbittorrent_nox:
            sides.append("qbittorrent-nox")
        else:
            print("qbittorrent-nox not installed: Lodestone only (apt-get install qbittorrent-nox)")
    torrents = make_torrents(a.n, 1 << 20, 256 << 10, "daemon_rpc")
    base = "/dev/shm" if shutil.disk_usage("/dev/shm").free > (512 << 20) else None
    logdir = tempfile.mkdtemp(prefix="qbt-maindata-logs-")
    results = []
    for rnd in range(a.runs):
        order = sides if rnd % 2 == 0 else list(reversed(sides))
        for side in order:
            r = run_side(side, rnd, a, torrents, base, logdir)
            results.append(r)
            state = "ok" if r["ok"] else f"FAILED: {r.get('error')}"
            print(f"run {rnd + 1} {side}: {state}", flush=True)
    print(f"\n{a.n} torrents, {a.samples} samples per kind, medians over {a.runs} runs (load {loadavg()})")
    head = f"{'':40}" + "".join(f"{s:>18}" for s in sides)
    print(head)
    for label, path, unit in ROWS:
        cells = []
        for s in sides:
            v = median([get(r, path) for r in results if r["side"] == s and r["ok"]])
            if v is None:
                cells.append(f"{'-':>18}")
                continue
            if unit == "KiB":
                v = v / 1024
            cells.append(f"{v:>14.1f} {unit:<3}")
        print(f"{label:40}" + "".join(cells))
    for s in sides:
        ok = [r for r in results if r["side"] == s and r["ok"]]
        if ok:
            print(f"{s}: {ok[0].get('version')} (WebAPI {ok[0].get('webapi')}); states {ok[0].get('states')}")
            print(f"  one-stopped answer: {json.dumps(ok[-1].get('one_paused_example'))[:400]}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
