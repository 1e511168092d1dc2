#!/usr/bin/python3
# Debian's interpreter: it drives python3-libtorrent through tests/interop/lt_peer.py.
"""Far-peer benchmark: a download across a long round trip, Lodestone
against libtorrent, same run.

  bench/far_peer.py [--size-mib 32] [--rtt-ms 600] [--runs 3] [--lodestone BIN]

(Its UdpProxy, the same delay plus a chosen loss for UDP, is what
bench/utp.py puts between uTP peers; run_proxy is its TCP counterpart.)

A Lodestone seeder sits behind a TCP proxy on loopback that holds every
byte for RTT/2 in each direction (this machine has no netem). A leecher
that keeps too few requests in flight is limited to queue / RTT, whatever
the link could do; one that sizes its queue to the bandwidth-delay product
is not. Alternates a libtorrent leecher (high-performance preset, through
lt_peer.py leech --lean) and a Lodestone leecher, RUNS times each (at
least 3; the order flips every run), and prints MiB/s, the medians and the
ratio.

What is counted: each leecher's own time to complete, in its own process,
from adding the torrent (libtorrent: just before add_torrent; Lodestone:
the engine's start) to every piece verified; process start-up (Python,
`import libtorrent`, exec) is NOT counted. That time includes the
connection and handshakes through the proxy (several round trips) and, for
libtorrent, its 500 ms connection tick, so the rate from each leecher's
first payload byte is printed too (the ratio of those medians is the
second ratio). A run that does not complete is printed as FAILED, left out
of the medians (each says how many runs it holds) and the script exits 1.

Only 127.0.0.1 is used.
"""
import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["LODESTONE_LOCAL_ONLY"] = "1"
LT_PEER = os.path.join(ROOT, "tests", "interop", "lt_peer.py")
LODESTONE = os.path.join(ROOT, "target", "release", "lodestone")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def pipe(reader, writer, delay):
    """Forward bytes, each chunk released `delay` seconds after it came."""
    queue = asyncio.Queue()

    async def release():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(release())
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            await queue.put((time.monotonic() + delay, data))
    except ConnectionError:
        pass
    await queue.put((0, None))
    await task


def run_proxy(listen_port, target_port, one_way):
    """A TCP proxy on 127.0.0.1:listen_port to target_port (an int, or a
    function giving the port at each new connection) holding every chunk
    for `one_way` s in each direction. (A byte stream cannot lose packets:
    no loss here.)"""
    async def handle(r, w):
        try:
            port = target_port() if callable(target_port) else target_port
            tr, tw = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            w.close()
            return
        await asyncio.gather(pipe(r, tw, one_way), pipe(tr, w, one_way), return_exceptions=True)

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
        async with server:
            await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()


class UdpProxy:
    """A UDP relay on 127.0.0.1:listen_port for uTP: each client address
    gets its own upstream socket to 127.0.0.1:target (set .target between
    runs), and every datagram, either way, is dropped with probability
    `loss` (a seeded generator: the same drop decisions in the same order
    for every run that calls reset() with the same seed) or else released
    `one_way` s after it came. No rate limit and no queue limit: only
    delay and loss. A send the kernel refuses (a full buffer) is counted
    as "refused" (a loss the script did not choose). With `mtu`, a
    datagram whose IPv4 packet would exceed it (UDP payload over mtu - 28)
    is dropped and counted as "oversize", as a link of that MTU would
    (loopback's is 65,536: without this, uTP stacks that probe the path
    MTU send 16 KiB datagrams no far path carries).

    stats: per direction ("up": client to target, "down": back) the
    datagrams seen, dropped on purpose, refused, and payload bytes relayed."""

    def __init__(self, listen_port, target, one_way, loss=0.0, seed=0, mtu=None):
        self.target, self.one_way, self.loss = target, one_way, loss
        self.max_payload = mtu - 28 if mtu else None
        self.rng = random.Random(seed)
        self.stats = self._zero()
        self.clients = {}  # client address -> upstream socket
        self.loop = asyncio.new_event_loop()
        self.front = self._socket(listen_port)
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def _zero():
        return {d: {"datagrams": 0, "dropped": 0, "oversize": 0, "refused": 0, "bytes": 0} for d in ("up", "down")}

    @staticmethod
    def _socket(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            s.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
        s.bind(("127.0.0.1", port))
        s.setblocking(False)
        return s

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.add_reader(self.front.fileno(), self._drain, self.front, None)
        self.loop.run_forever()

    def _drain(self, sock, client):
        """Reads every datagram waiting on `sock` (bounded per wake-up)."""
        for _ in range(1024):
            try:
                data, addr = sock.recvfrom(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error from an earlier send
                continue
            if client is None:  # from a client, to the target
                up = self.clients.get(addr)
                if up is None:
                    up = self.clients[addr] = self._socket(0)
                    self.loop.add_reader(up.fileno(), self._drain, up, addr)
                self._pass("up", up, data, ("127.0.0.1", self.target))
            else:  # from the target, back to its client
                self._pass("down", self.front, data, client)

    def _pass(self, direction, sock, data, to):
        st = self.stats[direction]
        st["datagrams"] += 1
        if self.max_payload is not None and len(data) > self.max_payload:
            st["oversize"] += 1
            return
        if self.loss and self.rng.random() < self.loss:
            st["dropped"] += 1
            return
        self.loop.call_later(self.one_way, self._send, direction, sock, data, to)

    def _send(self, direction, sock, data, to):
        if sock.fileno() < 0:  # a client forgotten by reset() since
            return
        try:
            sock.sendto(data, to)
            self.stats[direction]["bytes"] += len(data)
        except OSError:
            self.stats[direction]["refused"] += 1

    def reset(self, seed=0):
        """Forget the clients (close their upstream sockets), zero the
        stats and reseed the loss; waits for the relay's thread to do it."""
        done = threading.Event()

        def do():
            for s in self.clients.values():
                self.loop.remove_reader(s.fileno())
                s.close()
            self.clients.clear()
            self.stats = self._zero()
            self.rng = random.Random(seed)
            done.set()
        self.loop.call_soon_threadsafe(do)
        done.wait(10)

    def close(self):
        self.reset()
        self.loop.call_soon_threadsafe(self.loop.stop)


def leech(kind, torrent, save, port, lodestone):
    shutil.rmtree(save, ignore_errors=True)
    os.makedirs(save)
    if kind == "lt":
        cmd = ["/usr/bin/python3", LT_PEER, "leech", "--perf", "--no-verify", "--lean", "--timeout", "300",
               "--torrent", torrent, "--save", save, "--listen", f"127.0.0.1:{free_port()}",
               "--peer", f"127.0.0.1:{port}"]
    else:
        cmd = [lodestone, "get", "--json", "-o", save, "--peer", f"127.0.0.1:{port}", torrent]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
        out, rc = p.stdout, p.returncode
    except subprocess.TimeoutExpired:
        out, rc = "", None
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    last = lines[-1] if lines else {}
    ok = rc == 0 and (last.get("ok") is True if kind == "lt" else last.get("complete") is True)
    shutil.rmtree(save, ignore_errors=True)
    t = last.get("time_to_complete_s")
    return ok and bool(t), t, last.get("first_byte_s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=32)
    ap.add_argument("--rtt-ms", type=int, default=600)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lodestone", help="leech with this binary instead of a fresh release build")
    a = ap.parse_args()
    if a.runs < 3:
        ap.error("--runs must be at least 3 (a median of fewer is not one)")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "lodestone"], cwd=ROOT, check=True)
    leecher = a.lodestone or LODESTONE
    work = "/dev/shm/lodestone-far"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "content"))
    with open(os.path.join(work, "content", "payload.bin"), "wb") as f:
        f.write(os.urandom(a.size_mib << 20))
    torrent = os.path.join(work, "payload.torrent")
    subprocess.run([LODESTONE, "create", "--no-date", "--piece-size", "256K", "-o", torrent,
                    os.path.join(work, "content", "payload.bin")], check=True, stdout=subprocess.DEVNULL)
    seed_port, proxy_port = free_port(), free_port()
    seeder = subprocess.Popen([LODESTONE, "seed", "--json", "--listen", f"127.0.0.1:{seed_port}",
                               torrent, os.path.join(work, "content")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in seeder.stdout:
        if '"started"' in line:
            break
    threading.Thread(target=lambda: [None for _ in seeder.stdout], daemon=True).start()
    run_proxy(proxy_port, seed_port, a.rtt_ms / 2000)
    print(f"{a.size_mib} MiB from a Lodestone seeder through a proxy adding {a.rtt_ms} ms of round trip; "
          f"load average {' '.join('%.2f' % x for x in os.getloadavg())}")
    rates, data, runs, failed = {}, {}, {}, 0
    try:
        for i in range(a.runs):
            for kind in (["lt", "lodestone"] if i % 2 == 0 else ["lodestone", "lt"]):
                ok, t, fb = leech(kind, torrent, os.path.join(work, f"dl-{kind}"), proxy_port, leecher)
                runs[kind] = runs.get(kind, 0) + 1
                if not ok:
                    failed += 1
                    print(f"run {i + 1} {kind:10s} leecher FAILED (time to complete: {t})", flush=True)
                    continue
                rates.setdefault(kind, []).append(a.size_mib / t)
                d = a.size_mib / (t - fb) if fb is not None and t > fb else None
                if d is not None:
                    data.setdefault(kind, []).append(d)
                print(f"run {i + 1} {kind:10s} leecher {t:7.2f} s {a.size_mib / t:7.2f} MiB/s  first byte "
                      f"{fb if fb is None else round(fb, 2)} s, from there {d if d is None else round(d, 2)} MiB/s",
                      flush=True)
    finally:
        seeder.terminate()
        seeder.wait()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    dmed = {k: statistics.median(v) for k, v in data.items()}
    for k in runs:
        print(f"median {k:10s} leecher ({len(rates.get(k, []))}/{runs[k]} runs ok): "
              f"{round(med[k], 2) if k in med else None} MiB/s, from the first byte "
              f"{round(dmed[k], 2) if k in dmed else None} MiB/s")
    if med.get("lt") and med.get("lodestone"):
        line = f"ratio lodestone/libtorrent: {med['lodestone'] / med['lt']:.2f}x"
        if dmed.get("lt") and dmed.get("lodestone"):
            line += f", from the first byte {dmed['lodestone'] / dmed['lt']:.2f}x"
        print(line)
    if failed:
        print(f"FAILED: {failed} runs did not complete")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
