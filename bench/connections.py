#!/usr/bin/python3
# Debian's interpreter on purpose: the libtorrent seeder (`_lt-seed`, below) imports python3-libtorrent.
"""Connections: one seeding session serving a crowd of simultaneous peer
connections on loopback. Lodestone against libtorrent-rasterbar, same run.

  bench/connections.py [--n-torrents 10] [--peers-per-torrent 50] [--size 16M]
                       [--piece-size 256K] [--runs 3] [--time-limit 120]
                       [--want piece|all] [--served-bytes N] [--pipeline 16]
                       [--hold 5] [--lt-unchoke-slots N] [--lt-connections-limit N]
                       [--lt-local-class] [--same-ip] [--retries 3] [--dial-rate R]
                       [--out DIR] [--work DIR]
                       [--lodestone-only | --libtorrent-only] [--no-build]

The issue's goal: "one session serving 500 simultaneous peer connections on
loopback (a scripted peer crowd requesting blocks): every peer served,
RSS <= 100 MiB".

Content: N torrents of SIZE bytes each (random bytes from --seed, so every
run makes the same bytes; PIECE pieces; no trackers) in WORK/data, the
.torrent files in WORK/torrents, written by `lodestone create --no-date`.
WORK defaults to a new folder in /dev/shm (deleted at the end unless --work
was given; then it is reused by the next run with the same parameters).

Seeders, one process each, on 127.0.0.1, alternated run by run (round r:
Lodestone first when r is odd, libtorrent first when r is even):
- Lodestone: `lodestone seed --json --listen 127.0.0.1:PORT --no-dht
  --no-lpd --no-trackers --state-dir STATE T1.torrent ... TN.torrent data`,
  with a new STATE per run (it hashes the content once, before the crowd).
  `seed` has no flag for the peer cap or the upload slots: it runs with the
  engine's defaults (today max_peers 60 and upload_slots 8, per torrent).
- libtorrent 2.0.8: this script's `_lt-seed` role run by /usr/bin/python3:
  one lt.session with every torrent added (not auto-managed, so none is
  queued), local-only settings (no DHT, LSD, UPnP, NAT-PMP, uTP; listen and
  dial on 127.0.0.1), allow_multiple_connections_per_ip, and
  connections_limit / unchoke_slots_limit raised to the crowd (defaults:
  total peers + 50 and total peers; --lt-unchoke-slots / --lt-connections-
  limit override them, e.g. --lt-unchoke-slots 80 = Lodestone's 8 per
  torrent), listen_queue_size 1024 (Lodestone's listener backlog, tokio's
  default; libtorrent's own default is 5). libtorrent puts loopback and LAN
  peers in its "local" peer class, which is never choked (ignore_unchoke_
  slots) and may have 1.5x connections_limit; with it, every crowd peer
  is unchoked whatever the slots, and the limit check is
  connections >= limit*100/150 + slack (550 gave 376 peers). The crowd
  stands for Internet peers, so by default the session's peer-class filter
  maps every address to the global class only; --lt-local-class keeps
  libtorrent's default.
The crowd starts once the seeder says every torrent seeds (Lodestone: its
all_seeding line; libtorrent: every handle is_seeding).

The crowd (this process, asyncio, the raw BitTorrent wire protocol):
PEERS_PER_TORRENT peers per torrent all dial at once (--dial-rate R: R
per second, in torrent order), each from its own
source address in 127.0.0.0/8 (127.B.C.D, B >= 10; --same-ip: all from
127.0.0.1) and keep their connection for the whole run. Each peer: the
handshake with the extension-protocol and fast-extension bits set; then
have-none (if the seeder also set the fast bit) or an all-zero bitfield;
interested once the seeder shows a piece (bitfield / have-all / have);
while unchoked, PIPELINE requests of 16 KiB in flight, over pieces in a
per-peer random order; every completed piece is checked against its SHA-1
(a mismatch is counted and the piece fetched again). A reject frees its
request; every 0.5 s a peer that is unchoked with nothing in flight asks
again. With --want piece (default) a peer sends not-interested once it
holds --served-bytes (and stays connected, idle, with a keep-alive every
30 s); with --want all it keeps requesting until it holds the whole torrent
(the run still ends once every peer is served: the seeder's slots are then
held by peers that want more, as with real leechers).
A peer whose dial or handshake fails (or that the seeder closes before its
handshake) dials again after 1, 2, 4, 8 s (each x0.5..1.5, seeded, so the
peers that failed together do not come back together), at most --retries
times (default 3). Requests in flight with no block, reject or (un)choke for
20 s are forgotten and asked again ("stalls"); with the fast extension a
choke does not drop requests (BEP 6: each is served or rejected), without
it it does (blocks that still come are kept).

"Served": the peer was unchoked and holds at least --served-bytes of
verified data (default: one piece). The run ends --hold s (default 5)
after every peer is served (the connections stay open meanwhile, so the
memory of a seeder that serves everyone at once is still sampled with the
whole crowd connected), or at --time-limit (default 120 s) from the
crowd's start, or when the seeder exits.

What is counted, the same way for both sides:
- peers connected (handshake answered), served, never unchoked, closed
  by the seeder after the handshake, dial/handshake failures and retries,
  and the peers whose FIRST dial was answered (how a burst is taken);
- time until every peer was served, from the crowd's start (the first
  dial), and the per-peer time to served (median, p90, max);
- blocks and verified bytes the crowd received, hash failures;
- the seeder's memory: /proc/PID/status sampled every 0.5 s during the
  crowd: peak VmRSS (the goal's figure), peak RssAnon, VmHWM at the end
  (it includes the start-up), threads. libtorrent 2.x maps the files it
  serves, so its VmRSS includes the tmpfs pages of the content it read
  (RssFile/RssShmem); RssAnon is the figure to compare for heap. The
  libtorrent process also holds the Python interpreter (its RssAnon before
  the session is in the JSON as lt_base_rss_anon_mib).
- the seeder's CPU seconds (utime+stime from /proc/PID/stat, 10 ms ticks)
  from the crowd's start until every peer was served, over the whole
  crowd (hold included), and until it was ready (hashing), separately;
- the crowd's own CPU (this process), to see whether it was the limit.
Medians are over the runs whose seeder ran to the end (a seeder that does
not start, or exits or crashes during the crowd, is a failed run: printed,
left out, exit status 1). A run in which not every peer was served is not
a failed run: it is a result (the count says how many were not).

Output: per-run lines, a table (medians, both sides), the goals, and
OUT/connections.json with every run and every peer. Only 127.0.0.0/8 is
used; every wait is bounded. LODESTONE_LOCAL_ONLY=1 is set.
"""
import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import LODESTONE, MIB, ROOT, TICK, free_port, g, loadavg, median, parse_size, proc_cpu, proc_mem
from benchlib import stop as stop_child


def stop(p, sig, grace=30):
    return stop_child(p, sig, grace)

os.environ["LODESTONE_LOCAL_ONLY"] = "1"
LT_PYTHON = "/usr/bin/python3"
BLOCK = 16 * 1024
SAMPLE_EVERY = 0.5
KEEPALIVE_EVERY = 30.0
CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
STALL_AFTER = 20.0  # requests in flight with no block, reject or (un)choke for this long are forgotten
START_TIMEOUT = 180.0














def self_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------- torrents


def bdecode(buf, i=0):
    """(value, index after it). Dict keys stay bytes."""
    c = buf[i:i + 1]
    if c == b"i":
        e = buf.index(b"e", i)
        return int(buf[i + 1:e]), e + 1
    if c == b"l":
        i, out = i + 1, []
        while buf[i:i + 1] != b"e":
            v, i = bdecode(buf, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i, out = i + 1, {}
        while buf[i:i + 1] != b"e":
            k, i = bdecode(buf, i)
            v, i = bdecode(buf, i)
            out[k] = v
        return out, i + 1
    colon = buf.index(b":", i)
    n = int(buf[i:colon])
    return buf[colon + 1:colon + 1 + n], colon + 1 + n


def info_span(buf):
    """(start, end) of the raw info dict in a .torrent."""
    i = 1
    while buf[i:i + 1] != b"e":
        k, i = bdecode(buf, i)
        start = i
        _, i = bdecode(buf, i)
        if k == b"info":
            return start, i
    raise ValueError("no info dict")


class Meta:
    """What the crowd needs of one torrent."""

    def __init__(self, path):
        with open(path, "rb") as f:
            raw = f.read()
        s, e = info_span(raw)
        self.info_hash = hashlib.sha1(raw[s:e]).digest()
        info, _ = bdecode(raw[s:e])
        self.name = info[b"name"].decode()
        self.piece_len = info[b"piece length"]
        self.length = info[b"length"]
        p = info[b"pieces"]
        self.hashes = [p[i:i + 20] for i in range(0, len(p), 20)]
        self.num_pieces = len(self.hashes)
        self.path = path

    def plen(self, i):
        return min(self.piece_len, self.length - i * self.piece_len)


def prepare(a, work, lodestone):
    """Content in work/data and torrents in work/torrents (reused when
    work/manifest.json matches). Returns [Meta]."""
    data, tdir = os.path.join(work, "data"), os.path.join(work, "torrents")
    names = [f"c{i:04d}" for i in range(a.n_torrents)]
    want = {"n": a.n_torrents, "size": a.size, "piece": a.piece_size, "seed": a.seed}
    manifest = os.path.join(work, "manifest.json")
    try:
        with open(manifest) as f:
            m = json.load(f)
        if m.get("params") == want and all(
                os.path.getsize(os.path.join(data, n)) == a.size and os.path.exists(os.path.join(tdir, n + ".torrent"))
                for n in names):
            print(f"reusing {a.n_torrents} torrents and their content in {work}")
            return [Meta(os.path.join(tdir, n + ".torrent")) for n in names]
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
        out = os.path.join(tdir, n + ".torrent")
        r = subprocess.run([lodestone, "create", "--no-date", "--threads", "1", "--piece-size",
                            f"{a.piece_size // 1024}K", "-f", "-o", out, os.path.join(data, n)],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise SystemExit(f"lodestone create failed for {n} (rc {r.returncode}): {r.stderr.strip()}")
    metas = [Meta(os.path.join(tdir, n + ".torrent")) for n in names]
    # The crowd checks every piece against these hashes: check them once against the content here.
    for m, n in zip(metas, names):
        with open(os.path.join(data, n), "rb") as f:
            for i, h in enumerate(m.hashes):
                if hashlib.sha1(f.read(m.piece_len)).digest() != h:
                    raise SystemExit(f"{n}: piece {i} of the .torrent does not match the content")
    if len({m.info_hash for m in metas}) != len(metas):
        raise SystemExit("two torrents share an info hash")
    print(f"made {a.n_torrents} x {a.size / MIB:g} MiB of content and their torrents in "
          f"{time.monotonic() - t0:.1f} s, in {work}")
    with open(manifest, "w") as f:
        json.dump({"params": want}, f)
    return metas


# ---------------------------------------------------------------- the crowd

HANDSHAKE_PSTR = b"\x13BitTorrent protocol"
RESERVED = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x04])  # extension protocol (BEP 10), fast extension (BEP 6)
KEEPALIVE = b"\0\0\0\0"
M_CHOKE, M_UNCHOKE, M_INTERESTED, M_NOT_INTERESTED, M_HAVE, M_BITFIELD, M_REQUEST, M_PIECE = range(8)
M_HAVE_ALL, M_HAVE_NONE, M_REJECT = 0x0E, 0x0F, 0x10


def msg(mid, payload=b""):
    return struct.pack(">IB", 1 + len(payload), mid) + payload


def source_ip(g, same_ip):
    if same_ip:
        return "127.0.0.1"
    d = g % 250 + 1
    g //= 250
    c = g % 250 + 1
    g //= 250
    return f"127.{10 + g}.{c}.{d}"


class CrowdPeer:
    def __init__(self, g, t, meta, src, a):
        self.g, self.t, self.meta, self.src = g, t, meta, src
        self.peer_id = b"-CR0001-" + g.to_bytes(6, "big") + os.urandom(6)
        rng = random.Random(a.seed * 7919 + g)
        self.rng = rng
        self.start_delay = g / a.dial_rate if a.dial_rate else 0.0
        self.order = list(range(meta.num_pieces))
        rng.shuffle(self.order)
        self.next_in_order = 0
        self.pipeline = a.pipeline
        self.served_bytes = a.served_bytes or meta.piece_len
        self.want_all = a.want == "all"
        # state
        self.writer = None
        self.open = False
        self.fast = False
        self.choked = True
        self.am_interested = False
        self.active = {}  # piece -> {"blocks": {begin: bytes}, "requested": set(begin)}
        self.done_pieces = set()
        self.in_flight = 0
        self.last_progress = 0.0  # crowd time of the last block, reject or (un)choke
        # figures (seconds from the crowd's start)
        self.attempts = 0
        self.failures = []  # (t, reason) of dials/handshakes that failed
        self.t_tcp = None
        self.t_handshake = None
        self.t_unchoke = None
        self.t_served = None
        self.t_closed = None
        self.closed_reason = None
        self.verified = 0
        self.blocks = 0
        self.dup_blocks = 0
        self.unrequested_blocks = 0
        self.bad_pieces = 0
        self.chokes = 0
        self.unchokes = 0
        self.rejects = 0
        self.stalls = 0
        self.their_requests = 0
        self.other_msgs = {}

    @property
    def served(self):
        return self.t_served is not None

    def wants_more(self):
        if self.want_all:
            return len(self.done_pieces) < self.meta.num_pieces
        return self.verified < self.served_bytes

    def record(self):
        return {k: getattr(self, k) for k in (
            "g", "t", "src", "attempts", "failures", "t_tcp", "t_handshake", "t_unchoke", "t_served", "t_closed",
            "closed_reason", "verified", "blocks", "dup_blocks", "unrequested_blocks", "bad_pieces", "chokes",
            "unchokes", "rejects", "stalls", "their_requests", "other_msgs", "fast")}

    # -- requests

    def _activate(self):
        """Start one more piece when the goal allows it. True if one was started."""
        if not self.want_all:
            planned = self.verified + sum(self.meta.plen(p) for p in self.active)
            if planned >= self.served_bytes:
                return False
        while self.next_in_order < len(self.order):
            p = self.order[self.next_in_order]
            self.next_in_order += 1
            if p not in self.done_pieces and p not in self.active:
                self.active[p] = {"blocks": {}, "requested": set()}
                return True
        # pieces whose check failed go round again
        for p in self.order:
            if p not in self.done_pieces and p not in self.active:
                self.active[p] = {"blocks": {}, "requested": set()}
                return True
        return False

    def fill(self):
        """Keep PIPELINE requests in flight while unchoked and wanting."""
        if not self.open or self.choked or not self.am_interested or not self.wants_more():
            return
        out = []
        was_idle = self.in_flight == 0
        while self.in_flight < self.pipeline:
            picked = None
            for p, st in self.active.items():
                plen = self.meta.plen(p)
                for b in range(0, plen, BLOCK):
                    if b not in st["blocks"] and b not in st["requested"]:
                        picked = (p, b, min(BLOCK, plen - b))
                        break
                if picked:
                    break
            if picked is None:
                if not self._activate():
                    break
                continue
            p, b, ln = picked
            self.active[p]["requested"].add(b)
            self.in_flight += 1
            out.append(msg(M_REQUEST, struct.pack(">III", p, b, ln)))
        if out:
            if was_idle:
                self.last_progress = self.clock()
            self.writer.write(b"".join(out))

    def forget_requests(self):
        for st in self.active.values():
            st["requested"].clear()
        self.in_flight = 0

    def on_block(self, now, p, b, data):
        """Store a block; True when it made this peer served."""
        newly = False
        self.blocks += 1
        st = self.active.get(p)
        if st is None:
            self.unrequested_blocks += 1
            return
        if b in st["requested"]:
            st["requested"].discard(b)
            self.in_flight = max(0, self.in_flight - 1)
        if b in st["blocks"]:
            self.dup_blocks += 1
            return
        st["blocks"][b] = data
        plen = self.meta.plen(p)
        if sum(len(x) for x in st["blocks"].values()) < plen:
            return
        whole = b"".join(st["blocks"][k] for k in sorted(st["blocks"]))
        in_flight_here = len(st["requested"])
        del self.active[p]
        self.in_flight = max(0, self.in_flight - in_flight_here)
        if len(whole) == plen and hashlib.sha1(whole).digest() == self.meta.hashes[p]:
            self.done_pieces.add(p)
            self.verified += plen
            if not self.served and self.t_unchoke is not None and self.verified >= self.served_bytes:
                self.t_served = now
                newly = True
        else:
            self.bad_pieces += 1
        if not self.wants_more() and self.am_interested:
            self.am_interested = False
            self.writer.write(msg(M_NOT_INTERESTED))
            self.forget_requests()
        return newly


class Crowd:
    def __init__(self, metas, a, host, port):
        self.a, self.host, self.port = a, host, port
        self.peers = []
        g = 0
        for t, m in enumerate(metas):
            for _ in range(a.peers_per_torrent):
                self.peers.append(CrowdPeer(g, t, m, source_ip(g, a.same_ip), a))
                self.peers[-1].clock = self.now
                g += 1
        self.t0 = None
        self.n_served = 0
        self.t_all_served = None
        self.all_served_event = None  # made in run(), inside the event loop

    def now(self):
        return time.monotonic() - self.t0

    def count(self):
        c = {"tcp_open": 0, "handshaken": 0, "unchoked_now": 0, "served": 0, "closed": 0, "blocks": 0,
             "verified_mib": 0.0}
        for p in self.peers:
            c["tcp_open"] += p.open
            c["handshaken"] += p.t_handshake is not None
            c["unchoked_now"] += p.open and not p.choked
            c["served"] += p.served
            c["closed"] += p.closed_reason is not None
            c["blocks"] += p.blocks
            c["verified_mib"] += p.verified / MIB
        return c

    async def dial(self, p):
        """Dial with bounded retries; returns (reader, writer) after the handshake, or None."""
        a = self.a
        if p.start_delay:
            await asyncio.sleep(p.start_delay)
        for attempt in range(a.retries + 1):
            if attempt:  # 1, 2, 4, 8 s, each x0.5..1.5 (seeded): the peers that failed together do not retry together
                await asyncio.sleep(min(2 ** (attempt - 1), 8) * (0.5 + p.rng.random()))
            p.attempts += 1
            writer = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, local_addr=(p.src, 0)), CONNECT_TIMEOUT)
                if p.t_tcp is None:
                    p.t_tcp = self.now()
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                writer.write(HANDSHAKE_PSTR + RESERVED + p.meta.info_hash + p.peer_id)
                hs = await asyncio.wait_for(reader.readexactly(68), HANDSHAKE_TIMEOUT)
                if hs[:20] != HANDSHAKE_PSTR:
                    raise ValueError("not a BitTorrent handshake")
                if hs[28:48] != p.meta.info_hash:
                    raise ValueError("handshake for another info hash")
                return reader, writer, hs
            except asyncio.IncompleteReadError as e:
                p.failures.append((round(self.now(), 3), f"closed by the seeder before its handshake "
                                                         f"({len(e.partial)} bytes)"))
            except asyncio.TimeoutError:
                p.failures.append((round(self.now(), 3), "timeout (connect or handshake)"))
            except (OSError, ValueError) as e:
                p.failures.append((round(self.now(), 3), f"{type(e).__name__}: {e}"))
            if writer is not None:
                writer.close()
        return None

    async def run_peer(self, p):
        got = await self.dial(p)
        if got is None:
            return
        reader, writer, hs = got
        p.writer, p.open = writer, True
        p.t_handshake = self.now()
        p.fast = bool(hs[27] & 0x04)
        writer.write(msg(M_HAVE_NONE) if p.fast else msg(M_BITFIELD, bytes((p.meta.num_pieces + 7) // 8)))
        try:
            while True:
                head = await reader.readexactly(4)
                (n,) = struct.unpack(">I", head)
                if n == 0:
                    continue
                if n > BLOCK + 64 and n > (p.meta.num_pieces + 7) // 8 + 1:
                    raise ValueError(f"message of {n} bytes")
                body = await reader.readexactly(n)
                mid = body[0]
                if mid in (M_PIECE, M_REJECT, M_CHOKE, M_UNCHOKE):
                    p.last_progress = self.now()
                if mid == M_PIECE:
                    idx, begin = struct.unpack(">II", body[1:9])
                    if p.on_block(self.now(), idx, begin, body[9:]):
                        self.n_served += 1
                        if self.n_served == len(self.peers):
                            self.all_served_event.set()
                    p.fill()
                elif mid == M_UNCHOKE:
                    p.unchokes += 1
                    p.choked = False
                    if p.t_unchoke is None:
                        p.t_unchoke = self.now()
                    p.fill()
                elif mid == M_CHOKE:
                    p.chokes += 1
                    p.choked = True
                    if not p.fast:  # BEP 3: a choke drops our requests; BEP 6: each is served or rejected
                        p.forget_requests()
                elif mid in (M_BITFIELD, M_HAVE_ALL, M_HAVE):
                    if not p.am_interested and p.wants_more():
                        p.am_interested = True
                        writer.write(msg(M_INTERESTED))
                        p.fill()
                elif mid == M_REJECT:
                    p.rejects += 1
                    idx, begin = struct.unpack(">II", body[1:9])
                    st = p.active.get(idx)
                    if st is not None and begin in st["requested"]:
                        st["requested"].discard(begin)
                        p.in_flight = max(0, p.in_flight - 1)
                    # asked again by the 0.5 s tick, not here: no reject/request ping-pong
                elif mid == M_REQUEST:
                    p.their_requests += 1
                else:
                    p.other_msgs[mid] = p.other_msgs.get(mid, 0) + 1
        except asyncio.IncompleteReadError:
            p.closed_reason = "closed by the seeder"
        except (OSError, ValueError) as e:
            p.closed_reason = f"{type(e).__name__}: {e}"
        finally:
            if p.closed_reason is not None:
                p.t_closed = self.now()
            p.open = False
            writer.close()

    async def run(self, sample, before_close):
        """Run until every peer is served (then --hold s more, connections still
        open), the time limit, or sample() says stop. sample(crowd, t) is called
        every SAMPLE_EVERY s; it returns a reason to stop or None.
        before_close() runs while the connections are still open."""
        a = self.a
        self.t0 = time.monotonic()
        self.all_served_event = asyncio.Event()
        tasks = [asyncio.create_task(self.run_peer(p)) for p in self.peers]
        deadline = self.t0 + a.time_limit
        next_keepalive = self.t0 + KEEPALIVE_EVERY
        why = None
        hold_until = None
        while True:
            try:
                await asyncio.wait_for(self.all_served_event.wait(), SAMPLE_EVERY)
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            if hold_until is None and self.n_served == len(self.peers):
                why = "every peer served"
                hold_until = now + a.hold
                self.t_all_served = now - self.t0
                self.all_served_event = asyncio.Event()  # never set again: the loop ticks every SAMPLE_EVERY
            stop_reason = sample(self, now - self.t0)
            if hold_until is not None and now >= hold_until:
                break
            if stop_reason:
                why = stop_reason
                break
            if now >= deadline and hold_until is None:
                why = f"time limit ({a.time_limit:g} s)"
                break
            if all(t.done() for t in tasks) and hold_until is None:
                why = "every connection ended"
                break
            t = now - self.t0
            for p in self.peers:
                if p.open and p.in_flight and t - p.last_progress > STALL_AFTER:
                    p.stalls += 1  # requests neither served nor rejected: forget them (asked again below)
                    p.forget_requests()
                if p.open and not p.choked and p.in_flight == 0:  # rejected or lost: ask again
                    p.fill()
            if now >= next_keepalive:
                next_keepalive = now + KEEPALIVE_EVERY
                for p in self.peers:
                    if p.open:
                        p.writer.write(KEEPALIVE)
        t_end = self.now()
        before_close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return why, t_end


# ---------------------------------------------------------------- seeders


class Seeder:
    """A seeder process whose stdout is JSON lines; `ready` is set by a line
    with the given event."""

    def __init__(self, side, cmd, out, tag, ready_event, cwd=None):
        self.side = side
        self.err_path = os.path.join(out, tag + ".stderr")
        self.ev_path = os.path.join(out, tag + ".events")
        self.err = open(self.err_path, "w")
        self.evlog = open(self.ev_path, "w")
        self.t_spawn = time.monotonic()
        self.p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.ready = threading.Event()
        self.ready_at = None
        self.events = []
        self.ready_event = ready_event
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            at = time.monotonic() - self.t_spawn
            self.evlog.write(f"{at:.4f} {line}")
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if not isinstance(e, dict):
                continue
            if e.get("event") in ("progress", "sources"):
                continue
            self.events.append(e)
            if e.get("event") == self.ready_event and not self.ready.is_set():
                self.ready_at = at
                self.ready.set()

    def wait_ready(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.ready.wait(0.1):
                return True
            if self.p.poll() is not None:
                return False
        return False

    def stderr_tail(self, n=400):
        self.err.flush()
        try:
            with open(self.err_path) as f:
                return f.read()[-n:].strip()
        except OSError:
            return ""

    def close(self, sig):
        note = stop(self.p, sig)
        self.reader.join(5)
        self.err.close()
        self.evlog.close()
        return note


def lodestone_seeder(ctx, tag, port):
    work = ctx["work"]
    state = os.path.join(work, f"state-{tag}")
    shutil.rmtree(state, ignore_errors=True)
    torrents = [os.path.relpath(m.path, work) for m in ctx["metas"]]
    cmd = [ctx["lodestone"], "seed", "--json", "--listen", f"127.0.0.1:{port}", "--no-dht", "--no-lpd",
           "--no-trackers", "--state-dir", state, *torrents, "data"]
    s = Seeder("lodestone", cmd, ctx["out"], tag, "all_seeding", cwd=work)
    s.command = " ".join(cmd[:11]) + f" ... ({len(torrents)} torrents) data"
    s.cleanup = lambda: shutil.rmtree(state, ignore_errors=True)
    s.stop_signal = signal.SIGINT
    return s


def lt_seeder(ctx, tag, port):
    a = ctx["args"]
    total = a.n_torrents * a.peers_per_torrent
    cmd = [LT_PYTHON, os.path.abspath(__file__), "_lt-seed", "--listen", f"127.0.0.1:{port}",
           "--data", os.path.join(ctx["work"], "data"),
           "--connections-limit", str(a.lt_connections_limit or total + 50),
           "--unchoke-slots", str(a.lt_unchoke_slots if a.lt_unchoke_slots is not None else total),
           "--duration", str(a.time_limit + a.hold + START_TIMEOUT + 120),
           *(["--log-peers"] if a.lt_log_peers else []),
           *(["--local-class"] if a.lt_local_class else []),
           *[m.path for m in ctx["metas"]]]
    s = Seeder("libtorrent", cmd, ctx["out"], tag, "all_seeding")
    s.command = " ".join(cmd[:13]) + f" ... ({len(ctx['metas'])} torrents)"
    s.cleanup = lambda: None
    s.stop_signal = signal.SIGTERM
    return s


def run_side(ctx, side, rnd):
    a = ctx["args"]
    tag = f"{side}-r{rnd}"
    port = free_port()
    r = {"side": side, "round": rnd, "ok": False, "load_average_before": loadavg()}
    s = (lodestone_seeder if side == "lodestone" else lt_seeder)(ctx, tag, port)
    r["command"] = s.command
    try:
        if not s.wait_ready(START_TIMEOUT):
            rc = s.p.poll()
            r["error"] = (f"exited (rc {rc}) before it seeded" if rc is not None else
                          f"not seeding within {START_TIMEOUT:g} s") + f"; stderr: {s.stderr_tail() or 'none'}"
            return r
        r["ready_s"] = s.ready_at
        r["cpu_at_ready_s"] = proc_cpu(s.p.pid)
        r["mem_at_ready"] = proc_mem(s.p.pid)
        if side == "libtorrent":
            base = next((e for e in s.events if e.get("event") == "all_seeding"), {})
            r["lt_base_rss_anon_mib"] = base.get("base_rss_anon_mib")
            r["lt_settings"] = base.get("settings")
        pid = s.p.pid
        peak = {"vmrss_mib": 0.0, "rss_anon_mib": 0.0, "rss_file_mib": 0.0, "rss_shmem_mib": 0.0, "threads": 0}
        timeline = []
        next_print = [10.0]

        def sample(crowd, t):
            if s.p.poll() is not None:
                return f"the seeder exited (rc {s.p.returncode})"
            m = proc_mem(pid)
            if crowd.t_all_served is not None and "cpu_to_all_served_s" not in r:
                c = proc_cpu(pid)
                r["cpu_to_all_served_s"] = c - cpu0 if c is not None and cpu0 is not None else None
            for k in peak:
                if m.get(k) is not None and m[k] > peak[k]:
                    peak[k] = m[k]
            c = crowd.count()
            timeline.append({"t": round(t, 2), "vmrss_mib": round(m.get("vmrss_mib", 0), 1),
                             "cpu_s": proc_cpu(pid), **{k: (round(v, 2) if isinstance(v, float) else v)
                                                      for k, v in c.items()}})
            if t >= next_print[0]:
                next_print[0] += 10
                print(f"    {side} r{rnd} {t:5.1f} s: handshaken {c['handshaken']}, open {c['tcp_open']}, "
                      f"unchoked now {c['unchoked_now']}, served {c['served']}/{len(crowd.peers)}, "
                      f"{c['verified_mib']:.0f} MiB, VmRSS {m.get('vmrss_mib', 0):.1f} MiB", flush=True)
            return None

        crowd = Crowd(ctx["metas"], a, "127.0.0.1", port)
        ends = {}

        def before_close():
            ends["cpu"], ends["self"], ends["mem"] = proc_cpu(pid), self_cpu(), proc_mem(pid)
            if side == "libtorrent" and s.p.poll() is None:
                s.p.send_signal(signal.SIGUSR1)  # a stats line: what libtorrent itself counts, peers still there
                end = time.monotonic() + 5
                while time.monotonic() < end and not any(e.get("event") == "stats" for e in s.events):
                    time.sleep(0.05)
                st = next((e for e in s.events if e.get("event") == "stats"), None)
                if st:
                    r["lt_stats"] = st

        cpu0 = proc_cpu(pid)
        self0 = self_cpu()
        why, t_end = asyncio.run(crowd.run(sample, before_close))
        cpu1, self1, mem_end = ends["cpu"], ends["self"], ends["mem"]
        alive = s.p.poll() is None
        peers = crowd.peers
        served_t = sorted(p.t_served for p in peers if p.served)
        n = len(peers)
        r.update({
            "ended_because": why, "crowd_s": t_end, "peers": n,
            "connected": sum(p.t_handshake is not None for p in peers),
            "served": len(served_t),
            "not_served": n - len(served_t),
            "time_to_all_served_s": served_t[-1] if len(served_t) == n else None,
            "time_to_all_connected_s": (max(p.t_handshake for p in peers)
                                        if all(p.t_handshake is not None for p in peers) else None),
            "served_p50_s": statistics.median(served_t) if served_t else None,
            "served_p90_s": served_t[int(0.9 * (len(served_t) - 1))] if served_t else None,
            "never_connected": sum(p.t_handshake is None for p in peers),
            "never_unchoked": sum(p.t_handshake is not None and p.t_unchoke is None for p in peers),
            "unchoked_not_served": sum(p.t_unchoke is not None and not p.served for p in peers),
            "closed_by_seeder": sum(p.closed_reason is not None for p in peers),
            "first_dial_ok": sum(p.attempts == 1 and p.t_handshake is not None for p in peers),
            "dial_failures": sum(len(p.failures) for p in peers),
            "peers_that_retried": sum(p.attempts > 1 for p in peers),
            "blocks": sum(p.blocks for p in peers),
            "verified_mib": sum(p.verified for p in peers) / MIB,
            "bad_pieces": sum(p.bad_pieces for p in peers),
            "rejects": sum(p.rejects for p in peers),
            "stalls": sum(p.stalls for p in peers),
            "dup_blocks": sum(p.dup_blocks for p in peers),
            "chokes": sum(p.chokes for p in peers),
            "peak_mem_crowd": peak,
            "mem_end": mem_end,
            "cpu_crowd_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
            "crowd_self_cpu_s": self1 - self0,
            "timeline": timeline,
        })
        reasons = {}
        for p in peers:
            for _, why_f in p.failures:
                k = why_f.split(" (")[0]
                reasons[k] = reasons.get(k, 0) + 1
            if p.closed_reason:
                reasons["after handshake: " + p.closed_reason] = reasons.get("after handshake: " + p.closed_reason,
                                                                             0) + 1
        r["failure_reasons"] = reasons
        served_by_torrent = [sum(p.served for p in peers if p.t == t) for t in range(a.n_torrents)]
        r["served_by_torrent"] = served_by_torrent
        r["peer_records"] = [p.record() for p in peers]
        if not alive:
            r["error"] = f"the seeder exited during the crowd (rc {s.p.returncode}); stderr: {s.stderr_tail()}"
            return r
        r["ok"] = True
        return r
    finally:
        note = s.close(s.stop_signal)
        if note:
            r["stop_note"] = note
        s.cleanup()


# ---------------------------------------------------------------- libtorrent seeder role


def lt_seed_main(argv):
    import libtorrent as lt
    ap = argparse.ArgumentParser(prog="connections.py _lt-seed")
    ap.add_argument("--listen", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--connections-limit", type=int, required=True)
    ap.add_argument("--unchoke-slots", type=int, required=True)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--log-peers", action="store_true", help="peer and connect alerts to stderr")
    ap.add_argument("--local-class", action="store_true", help="keep libtorrent's local peer class for loopback")
    ap.add_argument("torrents", nargs="+")
    a = ap.parse_args(argv)
    flags = {"stop": False, "stats": False}
    signal.signal(signal.SIGTERM, lambda *_: flags.__setitem__("stop", True))
    signal.signal(signal.SIGINT, lambda *_: flags.__setitem__("stop", True))
    signal.signal(signal.SIGUSR1, lambda *_: flags.__setitem__("stats", True))

    def anon():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    base = anon()
    host = a.listen.rsplit(":", 1)[0]
    st = {
        "listen_interfaces": a.listen, "outgoing_interfaces": host,
        "enable_upnp": False, "enable_natpmp": False, "enable_lsd": False, "enable_dht": False,
        "dht_bootstrap_nodes": "", "enable_ip_notifier": False,
        "enable_incoming_utp": False, "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "connections_limit": a.connections_limit,
        "unchoke_slots_limit": a.unchoke_slots,
        "listen_queue_size": 1024,
        "active_seeds": -1, "active_limit": -1, "active_downloads": -1,
        "alert_mask": lt.alert.category_t.error_notification | (
            lt.alert.category_t.peer_notification | lt.alert.category_t.connect_notification
            if a.log_peers else 0),
    }
    ses = lt.session(st)
    if not a.local_class:
        # libtorrent puts loopback/LAN peers in its "local" peer class: never choked (ignore_unchoke_slots)
        # and allowed 1.5x connections_limit. The crowd stands for Internet peers: global class only.
        f = lt.ip_filter()
        f.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        f.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1 << lt.session.global_peer_class_id)
        ses.set_peer_class_filter(f)
    handles = []
    for t in a.torrents:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(t)
        atp.save_path = a.data
        atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        handles.append(ses.add_torrent(atp))
    t0 = time.monotonic()
    deadline = t0 + a.duration
    ready = False
    got = ses.get_settings()
    while not flags["stop"] and time.monotonic() < deadline:
        ses.wait_for_alert(100 if not ready else 200)
        for al in ses.pop_alerts():
            print(json.dumps({"event": "alert", "what": al.what(), "message": al.message()}), file=sys.stderr,
                  flush=True)
        if not ready and all(h.status().is_seeding for h in handles):
            ready = True
            print(json.dumps({"event": "all_seeding", "torrents": len(handles), "t": time.monotonic() - t0,
                              "base_rss_anon_mib": base,
                              "local_peer_class": a.local_class,
                              "settings": {k: got.get(k) for k in ("connections_limit", "unchoke_slots_limit",
                                                                   "listen_queue_size", "seed_choking_algorithm",
                                                                   "unchoke_interval",
                                                                   "allow_multiple_connections_per_ip")}}),
                  flush=True)
        if flags["stats"]:
            flags["stats"] = False
            sts = [h.status() for h in handles]
            print(json.dumps({"event": "stats", "peers": [s.num_peers for s in sts],
                              "uploads": [s.num_uploads for s in sts],
                              "uploaded": [s.total_payload_upload for s in sts]}), flush=True)
    print(json.dumps({"event": "exit", "uploaded": sum(h.status().total_payload_upload for h in handles)}),
          flush=True)
    return 0


# ---------------------------------------------------------------- report






ROWS = [  # label, path, unit
    ("peers connected (handshake answered)", "connected", ""),
    ("peers served", "served", ""),
    ("peers not served", "not_served", ""),
    ("  never unchoked", "never_unchoked", ""),
    ("  never connected", "never_connected", ""),
    ("time until every peer served", "time_to_all_served_s", "s"),
    ("per-peer time to served, median", "served_p50_s", "s"),
    ("per-peer time to served, p90", "served_p90_s", "s"),
    ("time until every peer connected", "time_to_all_connected_s", "s"),
    ("peers whose first dial got a handshake", "first_dial_ok", ""),
    ("dial/handshake failures (retried)", "dial_failures", ""),
    ("connections closed by the seeder", "closed_by_seeder", ""),
    ("blocks received", "blocks", ""),
    ("verified", "verified_mib", "MiB"),
    ("hash failures", "bad_pieces", ""),
    ("rejects", "rejects", ""),
    ("chokes", "chokes", ""),
    ("peak VmRSS during the crowd", "peak_mem_crowd.vmrss_mib", "MiB"),
    ("  peak RssAnon", "peak_mem_crowd.rss_anon_mib", "MiB"),
    ("  peak RssFile+RssShmem (file pages)", "peak_file_mib", "MiB"),
    ("  VmHWM at the end (start-up included)", "mem_end.vmhwm_mib", "MiB"),
    ("  threads (peak)", "peak_mem_crowd.threads", ""),
    ("seeder CPU until every peer served", "cpu_to_all_served_s", "s"),
    ("seeder CPU during the crowd (hold included)", "cpu_crowd_s", "s"),
    ("seeder CPU until ready (hashing)", "cpu_at_ready_s", "s"),
    ("crowd's own CPU (this script)", "crowd_self_cpu_s", "s"),
    ("crowd duration", "crowd_s", "s"),
]


def fmt(x, unit):
    if x is None:
        return "-"
    if unit == "":
        return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"
    return f"{x:.2f}" if unit == "s" and x < 100 else f"{x:.1f}"


def summarize(runs, sides):
    med = {}
    for side in sides:
        rs = [r for r in runs if r["side"] == side]
        ok = [r for r in rs if r["ok"]]
        for r in ok:
            pm = r.get("peak_mem_crowd", {})
            r["peak_file_mib"] = (pm.get("rss_file_mib") or 0) + (pm.get("rss_shmem_mib") or 0)
        med[side] = {"runs": len(rs), "ok": len(ok), "all_served_runs": sum(r["not_served"] == 0 for r in ok)}
        for _, path, _ in ROWS:
            med[side][path] = median(g(r, path) for r in ok)
    return med


def describe(r):
    if not r["ok"] and "served" not in r:
        return f"FAILED: {r.get('error')}"
    bits = [f"ready at {r['ready_s']:.2f} s"]
    bits.append(f"connected {r['connected']}/{r['peers']}, served {r['served']}/{r['peers']}")
    if r["time_to_all_served_s"] is not None:
        bits.append(f"every peer served at {r['time_to_all_served_s']:.2f} s")
    else:
        bits.append(f"NOT every peer served ({r['not_served']} not: {r['never_connected']} never connected, "
                    f"{r['never_unchoked']} never unchoked, {r['unchoked_not_served']} unchoked but short)")
    bits.append(f"ended: {r['ended_because']} at {r['crowd_s']:.1f} s")
    bits.append(f"{r['blocks']} blocks, {r['verified_mib']:.1f} MiB verified, {r['bad_pieces']} hash failures")
    pm = r["peak_mem_crowd"]
    bits.append(f"peak VmRSS {pm['vmrss_mib']:.1f} MiB (RssAnon {pm['rss_anon_mib']:.1f}), "
                f"{pm['threads']} threads")
    bits.append(f"CPU {fmt(r.get('cpu_to_all_served_s'), 's')} s until every peer served, "
                f"{fmt(r['cpu_crowd_s'], 's')} s during the crowd, {fmt(r['cpu_at_ready_s'], 's')} s to ready; "
                f"crowd's own CPU {r['crowd_self_cpu_s']:.2f} s")
    bits.append(f"first dial answered for {r['first_dial_ok']}/{r['peers']}")
    if r["dial_failures"]:
        bits.append(f"{r['dial_failures']} dial/handshake failures ({r['peers_that_retried']} peers retried)")
    if r.get("failure_reasons"):
        bits.append("reasons: " + "; ".join(f"{k} x{v}" for k, v in r["failure_reasons"].items()))
    if r.get("lt_stats"):
        st = r["lt_stats"]
        bits.append(f"libtorrent's own count: {sum(st['peers'])} peers, {sum(st['uploads'])} unchoked")
    if r.get("error"):
        bits.append(f"FAILED: {r['error']}")
    if r.get("stop_note"):
        bits.append(f"stop: {r['stop_note']}")
    return ", ".join(bits)


def print_table(med, sides):
    lo, lt_ = med.get("lodestone"), med.get("libtorrent")
    print()
    print(f"{'(medians)':46s} {'Lodestone':>11s} {'libtorrent':>11s} {'L/lt':>7s}")
    for label, path, unit in ROWS:
        lv = lo.get(path) if lo else None
        tv = lt_.get(path) if lt_ else None
        ratio = f"{lv / tv:.2f}x" if unit and lv is not None and tv else "-"
        u = f" ({unit})" if unit else ""
        print(f"{label + u:46s} {fmt(lv, unit):>11s} {fmt(tv, unit):>11s} {ratio:>7s}")
    for side in sides:
        m = med[side]
        print(f"  {side}: {m['ok']}/{m['runs']} runs ok, every peer served in {m['all_served_runs']} of them")


def goals_of(runs, a):
    lo = [r for r in runs if r["side"] == "lodestone"]
    ok = [r for r in lo if r["ok"]]
    if not ok:
        return [{"goal": "Lodestone measured", "status": "NOT met", "detail": "no Lodestone run succeeded"}]
    all_served = [r for r in ok if r["not_served"] == 0]
    rss = [r["peak_mem_crowd"]["vmrss_mib"] for r in ok]
    return [
        {"goal": f"every peer served within {a.time_limit:g} s", "status": "met" if len(all_served) == len(lo)
         else "NOT met", "detail": f"{len(all_served)} of {len(lo)} Lodestone runs; not served per run: "
                                   f"{[r.get('not_served') for r in lo]}"},
        {"goal": "Lodestone peak VmRSS <= 100 MiB", "status": "met" if max(rss) <= 100 else "NOT met",
         "detail": f"max over runs {max(rss):.1f} MiB, median {statistics.median(rss):.1f} MiB"},
    ]


# ---------------------------------------------------------------- main


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_lt-seed":
        return lt_seed_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-torrents", type=int, default=10)
    ap.add_argument("--peers-per-torrent", type=int, default=50)
    ap.add_argument("--size", type=parse_size, default=16 * MIB, help="bytes per torrent (suffix K, M, G)")
    ap.add_argument("--piece-size", type=parse_size, default=256 * 1024)
    ap.add_argument("--seed", type=int, default=1, help="seed of the random content and of the peers' piece order")
    ap.add_argument("--runs", type=int, default=1, help="runs per side, alternating which side goes first")
    ap.add_argument("--time-limit", type=float, default=120, help="seconds the crowd may take (per run)")
    ap.add_argument("--want", choices=["piece", "all"], default="piece",
                    help="piece: a peer stops wanting (not-interested) once served; all: it wants the whole torrent")
    ap.add_argument("--served-bytes", type=parse_size, default=None,
                    help="verified bytes that make a peer served (default: one piece)")
    ap.add_argument("--hold", type=float, default=5,
                    help="seconds the connections stay open once every peer is served (memory sampled)")
    ap.add_argument("--pipeline", type=int, default=16, help="requests in flight per peer")
    ap.add_argument("--retries", type=int, default=3, help="dials again after a failed dial/handshake (bounded)")
    ap.add_argument("--dial-rate", type=float, default=0,
                    help="peers start dialling at this many per second (default 0: all at once)")
    ap.add_argument("--same-ip", action="store_true", help="every peer dials from 127.0.0.1 (per-IP limits)")
    ap.add_argument("--lt-unchoke-slots", type=int, default=None,
                    help="libtorrent unchoke_slots_limit (default: the crowd's size; -1: unlimited)")
    ap.add_argument("--lt-connections-limit", type=int, default=None,
                    help="libtorrent connections_limit (default: the crowd's size + 50)")
    ap.add_argument("--lt-local-class", action="store_true",
                    help="leave libtorrent's 'local' peer class on for loopback peers (it never chokes them and "
                    "allows them 1.5x connections_limit); by default the crowd is in the global class only, "
                    "as Internet peers would be")
    ap.add_argument("--lt-log-peers", action="store_true",
                    help="libtorrent's peer and connect alerts go to its stderr log in OUT (to see why it closes)")
    ap.add_argument("--out", help="folder for the JSON and the logs (default: a new temp dir)")
    ap.add_argument("--work", help="folder for content and torrents, kept and reused (default: a temp dir in "
                    "/dev/shm, deleted at the end)")
    side = ap.add_mutually_exclusive_group()
    side.add_argument("--lodestone-only", action="store_true")
    side.add_argument("--libtorrent-only", action="store_true")
    ap.add_argument("--lodestone", default=LODESTONE, help="the lodestone binary")
    ap.add_argument("--no-build", action="store_true", help="do not run `cargo build --release -p lodestone`")
    a = ap.parse_args()
    if a.n_torrents < 1 or a.peers_per_torrent < 1 or a.runs < 1 or a.time_limit <= 0 or a.pipeline < 1:
        ap.error("--n-torrents, --peers-per-torrent, --runs, --pipeline must be >= 1, --time-limit > 0")
    if a.retries < 0 or a.retries > 10:
        ap.error("--retries must be 0..10")
    if a.piece_size < BLOCK or a.piece_size & (a.piece_size - 1):
        ap.error("--piece-size must be a power of two, at least 16K")

    sides = ["lodestone", "libtorrent"]
    if a.lodestone_only:
        sides = ["lodestone"]
    if a.libtorrent_only:
        sides = ["libtorrent"]
    if not a.no_build and a.lodestone == LODESTONE:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "lodestone"], cwd=ROOT, check=True)
    if not os.path.exists(a.lodestone):
        raise SystemExit(f"{a.lodestone} not found (build it: cargo build --release -p lodestone)")
    if "libtorrent" in sides:
        v = subprocess.run([LT_PYTHON, "-c", "import libtorrent; print(libtorrent.__version__)"],
                           capture_output=True, text=True, timeout=60)
        if v.returncode != 0:
            raise SystemExit(f"{LT_PYTHON} cannot import libtorrent (apt-get install python3-libtorrent), "
                             f"or run with --lodestone-only")
        lt_version = v.stdout.strip()
    total = a.n_torrents * a.peers_per_torrent
    # Each connection is a descriptor here and in the seeder: lift the soft limit (children inherit it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < total + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(total * 2 + 256, soft)), hard))

    out = a.out or tempfile.mkdtemp(prefix="lodestone-connections-")
    os.makedirs(out, exist_ok=True)
    if a.work:
        work, own_work = os.path.abspath(a.work), False
        os.makedirs(work, exist_ok=True)
    else:
        need = a.n_torrents * a.size * 1.2 + 64 * MIB
        st = os.statvfs("/dev/shm")
        base = "/dev/shm" if st.f_bavail * st.f_frsize > 2 * need else None
        work, own_work = tempfile.mkdtemp(prefix="lodestone-connections-", dir=base), True

    versions = {"lodestone": subprocess.run([a.lodestone, "--version"], capture_output=True,
                                            text=True).stdout.strip()}
    if "libtorrent" in sides:
        versions["libtorrent"] = lt_version
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"{a.n_torrents} torrents x {a.size / MIB:g} MiB ({a.piece_size // 1024} KiB pieces), "
          f"{a.peers_per_torrent} peers each = {total} connections, want {a.want}, "
          f"served = {fmt((a.served_bytes or a.piece_size) / 1024, 'KiB')} KiB verified, pipeline {a.pipeline}, "
          f"{'one source IP' if a.same_ip else 'one source IP per peer'}, {a.runs} run(s) per side, "
          f"limit {a.time_limit:g} s; {os.cpu_count()} cores, load average {loadavg()}; "
          f"{'; '.join(f'{k} {v}' for k, v in versions.items())}; git {commit}; out: {out}", flush=True)

    runs = []
    result = {"params": vars(a), "work": work, "out": out, "versions": versions, "git_head": commit,
              "cores": os.cpu_count(), "runs": runs}
    try:
        metas = prepare(a, work, a.lodestone)
        ctx = {"args": a, "work": work, "out": out, "metas": metas, "lodestone": a.lodestone}
        for rnd in range(1, a.runs + 1):
            order = sides if rnd % 2 == 1 else sides[::-1]
            for side in order:
                print(f"run {rnd} {side} (load average {loadavg()}) ...", flush=True)
                r = run_side(ctx, side, rnd)
                runs.append(r)
                print(f"  run {rnd} {side}: {describe(r)}", flush=True)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)

    measured = [s for s in sides if any(r["side"] == s for r in runs)]
    med = summarize(runs, measured)
    goals = goals_of(runs, a) if "lodestone" in measured else []
    result.update({"medians": med, "goals": goals})
    print_table(med, measured)
    if goals:
        print()
        print("goals (issue):")
        for gl in goals:
            print(f"  {gl['goal']:44s} {gl['status']}  {gl['detail']}")
    failed = [r for r in runs if not r["ok"]]
    for r in failed:
        print(f"FAILED run: {r['side']} run {r['round']}: {r.get('error')}")
    path = os.path.join(out, "connections.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"results: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
