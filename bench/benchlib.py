"""What the benchmark scripts share: sizes, ports, /proc readings of a
child process, stopping it, medians. Imported by scripts in this folder
(run as ./bench/NAME.py, which puts this folder on sys.path)."""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LODESTONE = os.path.join(ROOT, "target", "release", "lodestone")
TICK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20


def parse_size(s):
    s = s.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    n = int(s[:-1] if s[-1:] in "KMG" else s) * mult
    if n <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return n


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg():
    return " ".join("%.2f" % x for x in os.getloadavg())


def proc_cpu(pid):
    """utime+stime of a live process in seconds (all threads), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def proc_mem(pid):
    """VmRSS, RssAnon, RssFile, RssShmem, VmHWM (MiB) and Threads of a live process."""
    out = {}
    keys = {"VmRSS:": "vmrss_mib", "RssAnon:": "rss_anon_mib", "RssFile:": "rss_file_mib",
            "RssShmem:": "rss_shmem_mib", "VmHWM:": "vmhwm_mib", "Threads:": "threads"}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k = line.split(None, 1)[0] if line.strip() else ""
                if k in keys:
                    v = int(line.split()[1])
                    out[keys[k]] = v if k == "Threads:" else v / 1024
    except OSError:
        pass
    return out


def stop(p, sig, grace):
    """Signal our child and wait; SIGKILL after `grace` s. Returns a note or ''."""
    if p.poll() is not None:
        return f"had already exited (rc {p.returncode})"
    p.send_signal(sig)
    try:
        p.wait(grace)
        return ""
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return f"did not exit within {grace} s of {signal.Signals(sig).name}: killed"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def g(r, path):
    """r["a"]["b"] for path "a.b"; None where a step is missing."""
    for k in path.split("."):
        r = r.get(k) if isinstance(r, dict) else None
    return r


def leecher_result(r, kind):
    """Reads a leecher's JSON lines (r["lines"], exit code r["rc"]) into r:
    transfer_s and first_byte_s from its last event, ok (libtorrent's
    lt_peer.py result says ok, Lodestone's summary says complete, exit 0)
    and, for libtorrent, cpu_s from the start of the transfer to its end
    (lt_peer.py's process CPU minus its main thread's). Returns the last
    event for what else the caller reads from it."""
    events = []
    for line in r["lines"]:
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    last = events[-1] if events else {}
    r["transfer_s"] = last.get("time_to_complete_s")
    r["first_byte_s"] = last.get("first_byte_s")
    if kind == "lt":
        r["ok"] = last.get("ok") is True and r["rc"] == 0
        done, main = last.get("cpu_to_done_s"), last.get("cpu_main_to_done_s")
        r["cpu_s"] = done - main if done is not None and main is not None else None
    else:
        r["ok"] = last.get("complete") is True and r["rc"] == 0
    return last


def rate(r, size):
    """MiB/s over the whole transfer of a run that completed."""
    return size / MIB / r["transfer_s"] if r["ok"] else None


def data_rate(r, size):
    """MiB/s from the leecher's first payload byte to its completion."""
    fb = r.get("first_byte_s")
    if not (r["ok"] and fb is not None and r["transfer_s"] > fb):
        return None
    return size / MIB / (r["transfer_s"] - fb)
