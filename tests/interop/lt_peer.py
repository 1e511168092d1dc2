#!/usr/bin/python3
# Debian's interpreter on purpose: python3-libtorrent only imports there.
"""A libtorrent-rasterbar peer for Lodestone's interop tests and benchmarks.

Local-only settings: no DHT, LSD, UPnP or NAT-PMP; it binds one loopback
address and dials from it.

  lt_peer.py seed  --torrent T --content-dir D --listen IP:PORT [--duration S] [--perf] [--force-rc4]
                   [--resume FILE] [--utp | --utp-only]
      Prints one line 'READY' when it seeds, runs until SIGTERM or the
      duration, then prints a JSON line {"event":"exit","uploaded":N,
      "transports":{..}} ("transports" as for leech below). Each
      connection, once handshaken, is also announced as it comes:
      {"event":"peer","addr":"IP:PORT","transport":"utp"|"tcp"}.
      With --resume, FILE (libtorrent's own resume data) is read if it
      exists, so the files are trusted as a resumed client trusts them,
      and written once it seeds; after READY a line
      {"event":"seeding","after_s":..,"resumed":..} says how long the start
      took and whether the resume data was taken (no full check).
  lt_peer.py leech (--torrent T | --magnet M) --save D --listen IP:PORT [--peer IP:PORT]...
                   [--timeout S] [--perf] [--seed-after S] [--utp | --utp-only]
      Prints a JSON line {"event":"result","ok":..,"time_to_complete_s":..,
      "downloaded":..,"cpu_s":..,"crypto":{..}} and exits 0 when the download completed
      and libtorrent's own hash check of every piece passed (skipped with
      --no-verify, for benchmarks). "crypto" is libtorrent's own word on each
      handshaken connection: {"IP:PORT": {"crypto": [...], "downloaded": N}},
      crypto "rc4" (MSE/PE, RC4 stream), "mse_plaintext" (MSE/PE handshake,
      plain stream) or "none" (plain BitTorrent); N is the most payload that
      connection was seen to deliver. "transports" is libtorrent's word on
      whether each connection was a uTP socket: {"IP:PORT": {"transport":
      ["utp"] or ["tcp"], "downloaded": N, "uploaded": N}}.
      uTP (BEP 29) is off unless asked for: --utp turns it on beside TCP,
      --utp-only turns TCP off both ways (enable_outgoing_tcp and
      enable_incoming_tcp), so every connection is uTP.
      For benchmarks: --lean drops the per-peer polling ("peers" and
      "crypto" stay empty) and polls the status only until the first
      payload byte; and the result also holds, measured in this process
      from just before add_torrent: cpu_to_done_s (the whole process, up
      to torrent_finished_alert), cpu_main_to_done_s (of that, this
      script's own thread: Python and its polling loop, so libtorrent's
      threads are the difference) and rss_anon_kib_before_session
      (anonymous RSS of Python with libtorrent imported, before the
      session exists: the baseline to subtract).
"""
import argparse
import json
import os
import resource
import signal
import sys
import time

import libtorrent as lt

STOP = False


def on_signal(_sig, _frm):
    global STOP
    STOP = True


# libtorrent's peer_info::utp_socket (bit 17), which the Python binding
# does not export.
UTP_SOCKET = int(getattr(lt.peer_info, "utp_socket", 1 << 17))


def settings(listen, perf, encryption=True, lsd=False, force_rc4=False, utp="off"):
    s = {}
    if perf:
        s.update(lt.high_performance_seed())
    host = listen.rsplit(":", 1)[0].strip("[]")  # an IPv6 listen: [addr]:port
    s.update({
        "listen_interfaces": listen,
        "outgoing_interfaces": host,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_lsd": False,
        "enable_dht": False,
        "dht_bootstrap_nodes": "",
        "enable_ip_notifier": False,
        "allow_multiple_connections_per_ip": True,
        "enable_incoming_utp": utp != "off",
        "enable_outgoing_utp": utp != "off",
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
    })
    if lsd:
        # BEP 14 on the netns link; re-announce often so tests are quick.
        s["enable_lsd"] = True
        s["local_service_announce_interval"] = 5
    if utp == "only":
        # uTP (BEP 29) only: TCP is neither dialled nor accepted (libtorrent
        # still listens on TCP but closes what comes in).
        s["enable_outgoing_tcp"] = False
        s["enable_incoming_tcp"] = False
    if force_rc4:
        # MSE only, and RC4 for the whole stream (no plain-text fallback).
        # (allowed_enc_level 1 is pe_plaintext: MSE then a plain stream.)
        s["out_enc_policy"] = int(lt.enc_policy.pe_forced)
        s["in_enc_policy"] = int(lt.enc_policy.pe_forced)
        s["allowed_enc_level"] = int(lt.enc_level.pe_rc4)
    if not encryption:
        # Plain BitTorrent only: no MSE/PE handshake attempt first.
        s["out_enc_policy"] = int(lt.enc_policy.pe_disabled)
        s["in_enc_policy"] = int(lt.enc_policy.pe_disabled)
    return s


def ep(s):
    h, p = s.rsplit(":", 1)
    return h.strip("[]"), int(p)


def emit(**kw):
    print(json.dumps(kw), flush=True)


def cpu_s(who=resource.RUSAGE_SELF):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def rss_anon_kib():
    """This process's anonymous resident memory (no file or tmpfs pages)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return None


def read_resume(path, atp):
    """libtorrent's own resume data from `path` into a new add_torrent_params
    (keeping ti and save_path); the old one when there is none."""
    if not path or not os.path.exists(path):
        return atp, False
    with open(path, "rb") as f:
        r = lt.read_resume_data(f.read())
    r.ti = atp.ti
    r.save_path = atp.save_path
    return r, True


def write_resume(ses, h, path):
    """Ask for resume data and write it to `path` (bounded wait)."""
    h.save_resume_data(lt.torrent_handle.save_info_dict)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        ses.wait_for_alert(100)
        for al in ses.pop_alerts():
            if isinstance(al, lt.save_resume_data_alert):
                with open(path + ".tmp", "wb") as f:
                    f.write(lt.write_resume_data_buf(al.params))
                os.replace(path + ".tmp", path)
                return True
            if isinstance(al, lt.save_resume_data_failed_alert):
                print(f"RESUME SAVE FAILED {al.message()}", file=sys.stderr, flush=True)
                return False
    return False


def seed(a):
    st = settings(a.listen, a.perf, lsd=a.lsd, force_rc4=a.force_rc4, utp=utp_mode(a))
    if a.no_outgoing:  # accept peers, never dial them
        st["enable_outgoing_tcp"] = False
        st["enable_outgoing_utp"] = False
    ses = lt.session(st)
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(a.torrent)
    atp.save_path = a.content_dir
    atp, resumed = read_resume(a.resume, atp)
    t_add = time.monotonic()
    h = ses.add_torrent(atp)
    for p in a.peer or []:
        h.connect_peer(ep(p))
    deadline = time.monotonic() + a.duration
    ready = False
    checked = False
    conns = {}
    while not STOP and time.monotonic() < deadline:
        # 20 ms: a fast leecher on loopback is gone within 100 ms.
        ses.wait_for_alert(20)
        for key, c in watch_transports(h, conns):
            emit(event="peer", addr=key, transport=c["transport"][-1])
        for al in ses.pop_alerts():
            if isinstance(al, lt.torrent_error_alert):
                print(f"TORRENT ERROR {al.message()}", file=sys.stderr, flush=True)
        st = h.status()
        if st.state == lt.torrent_status.checking_files:
            checked = True  # a full check, whatever resume data said
        if not ready and st.is_seeding:
            ready = True
            print("READY", flush=True)
            if a.resume:
                after = time.monotonic() - t_add
                if not resumed or checked:
                    write_resume(ses, h, a.resume)
                emit(event="seeding", after_s=round(after, 4), resumed=resumed and not checked)
        if ready and a.peer and st.num_peers == 0:
            for p in a.peer:
                h.connect_peer(ep(p))
    watch_transports(h, conns)
    emit(event="exit", uploaded=h.status().total_payload_upload, cpu_s=round(cpu_s(), 3),
         transports=transports_json(conns))


def utp_mode(a):
    return "only" if a.utp_only else "on" if a.utp else "off"


def watch_transports(h, conns):
    """libtorrent's own word on each handshaken connection of `h`: over uTP
    or TCP (peer_info's utp_socket flag), and the most payload seen each
    way, into `conns` keyed by the remote IP:PORT. Returns the connections
    (or transports) seen for the first time."""
    new = []
    for p in h.get_peer_info():
        if p.flags & (lt.peer_info.connecting | lt.peer_info.handshake):
            continue
        key = f"{p.ip[0]}:{p.ip[1]}"
        kind = "utp" if p.flags & UTP_SOCKET else "tcp"
        c = conns.setdefault(key, {"transport": [], "downloaded": 0, "uploaded": 0})
        if kind not in c["transport"]:
            c["transport"].append(kind)
            new.append((key, c))
        c["downloaded"] = max(c["downloaded"], p.total_download)
        c["uploaded"] = max(c["uploaded"], p.total_upload)
    return new


def transports_json(conns):
    return {k: {"transport": sorted(c["transport"]), "downloaded": c["downloaded"],
                "uploaded": c["uploaded"]} for k, c in conns.items()}


def crypto_of(flags):
    """What libtorrent says a handshaken connection runs over."""
    if flags & lt.peer_info.rc4_encrypted:
        return "rc4"
    if flags & lt.peer_info.plaintext_encrypted:
        return "mse_plaintext"
    return "none"


def leech(a):
    rss_base = rss_anon_kib()
    ses = lt.session(settings(a.listen, a.perf, encryption=not a.no_encryption, lsd=a.lsd,
                              force_rc4=a.force_rc4, utp=utp_mode(a)))
    if a.download_limit:
        # Local peers are exempt from the global limit; a per-torrent one applies.
        ses.set_peer_class_filter(lt.ip_filter())
    if a.dht:
        # Peers only from this (private) DHT; libtorrent's loopback filters off.
        ses.apply_settings({
            "enable_dht": True, "dht_bootstrap_nodes": a.dht,
            "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
            "dht_prefer_verified_node_ids": False, "dht_enforce_node_id": False,
            "dht_ignore_dark_internet": False, "dht_block_ratelimit": 1000000,
            "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification
            | lt.alert.category_t.dht_notification,
        })
        host, port = a.dht.rsplit(":", 1)
        ses.add_dht_node((host, int(port)))
    if a.magnet:
        atp = lt.parse_magnet_uri(a.magnet)
    else:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(a.torrent)
    atp.save_path = a.save
    os.makedirs(a.save, exist_ok=True)
    t0 = time.monotonic()
    cpu0 = cpu_s()
    main0 = cpu_s(resource.RUSAGE_THREAD)
    cpu_done = main_done = None
    h = ses.add_torrent(atp)
    if a.download_limit:
        h.set_download_limit(a.download_limit)
    for p in a.peer or []:
        h.connect_peer(ep(p))
    print("READY", flush=True)
    done = None
    first_byte = None
    last_dht_ask = t0
    deadline = t0 + a.timeout
    seen = {}
    crypto = {}
    conns = {}
    while not STOP and time.monotonic() < deadline:
        if not a.lean:
            watch_transports(h, conns)
        for p in ([] if a.lean else h.get_peer_info()):
            key = f"{p.ip[0]}:{p.ip[1]}"
            src = [n for bit, n in ((1, "tracker"), (2, "dht"), (4, "pex"), (8, "lsd"), (32, "incoming"))
                   if p.source & bit]
            seen.setdefault(key, set()).update(src)
            if not p.flags & (lt.peer_info.connecting | lt.peer_info.handshake):
                c = crypto.setdefault(key, {"crypto": set(), "downloaded": 0})
                c["crypto"].add(crypto_of(p.flags))
                c["downloaded"] = max(c["downloaded"], p.total_download)
        # --lean: status polled every 5 ms only until the first payload
        # byte, then nothing but alerts (each status() call is work for
        # libtorrent's network thread).
        ses.wait_for_alert(20 if not a.lean else 5 if first_byte is None else 100)
        if first_byte is None and h.status().total_payload_download > 0:
            # libtorrent connects on its 500 ms tick: this is where data starts.
            first_byte = time.monotonic() - t0
        for al in ses.pop_alerts():
            if isinstance(al, lt.torrent_finished_alert) and done is None:
                done = time.monotonic() - t0
                cpu_done, main_done = cpu_s() - cpu0, cpu_s(resource.RUSAGE_THREAD) - main0
            elif isinstance(al, lt.torrent_error_alert):
                print(f"TORRENT ERROR {al.message()}", file=sys.stderr, flush=True)
        if done is not None and time.monotonic() - t0 - done >= a.seed_after:
            break
        if a.lean and first_byte is not None:
            continue
        if done is None and a.dht and h.status().num_peers == 0 \
                and time.monotonic() - last_dht_ask >= 5:
            # libtorrent asks the DHT again only every 15 min: a lookup that
            # ran before the seeder's announce landed would end the test.
            h.force_dht_announce()
            last_dht_ask = time.monotonic()
        if done is None and a.peer and h.status().num_peers == 0 and time.monotonic() - t0 > 1:
            for p in a.peer:
                h.connect_peer(ep(p))
    cpu = cpu_s() - cpu0
    before = h.status()
    ok = done is not None
    if ok and not a.no_verify:
        # libtorrent's own verdict on what is on disk.
        h.force_recheck()
        end = time.monotonic() + 120
        while time.monotonic() < end:
            ses.wait_for_alert(100)
            ses.pop_alerts()
            st = h.status()
            if st.state not in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data) \
                    and st.progress >= 1.0:
                break
        ok = h.status().progress >= 1.0
    emit(event="result", ok=ok, time_to_complete_s=done, first_byte_s=first_byte, downloaded=before.total_payload_download,
         uploaded=before.total_payload_upload, cpu_s=round(cpu, 3),
         cpu_to_done_s=None if cpu_done is None else round(cpu_done, 4),
         cpu_main_to_done_s=None if main_done is None else round(main_done, 4),
         rss_anon_kib_before_session=rss_base,
         peers={k: sorted(v) for k, v in seen.items()},
         crypto={k: {"crypto": sorted(v["crypto"]), "downloaded": v["downloaded"]} for k, v in crypto.items()},
         transports=transports_json(conns))
    return 0 if ok else 1


def add_utp_args(p):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--utp", action="store_true", help="uTP (BEP 29) on as well as TCP (default: TCP only)")
    g.add_argument("--utp-only", action="store_true", help="uTP only: TCP neither dialled nor accepted")


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--torrent", required=True)
    s.add_argument("--content-dir", required=True)
    s.add_argument("--listen", required=True)
    s.add_argument("--peer", action="append")
    s.add_argument("--duration", type=float, default=120)
    s.add_argument("--perf", action="store_true")
    s.add_argument("--lsd", action="store_true", help="Local Service Discovery (BEP 14)")
    s.add_argument("--no-outgoing", action="store_true", help="never dial peers (incoming only)")
    s.add_argument("--force-rc4", action="store_true", help="MSE with RC4 only: plain peers are refused")
    s.add_argument("--resume", metavar="FILE", help="libtorrent resume data: read if present, written once seeding")
    add_utp_args(s)
    l = sub.add_parser("leech")
    g = l.add_mutually_exclusive_group(required=True)
    g.add_argument("--torrent")
    g.add_argument("--magnet")
    l.add_argument("--save", required=True)
    l.add_argument("--listen", required=True)
    l.add_argument("--peer", action="append")
    l.add_argument("--timeout", type=float, default=120)
    l.add_argument("--seed-after", type=float, default=0)
    l.add_argument("--perf", action="store_true")
    l.add_argument("--lsd", action="store_true", help="Local Service Discovery (BEP 14)")
    l.add_argument("--dht", metavar="IP:PORT", help="find peers in the DHT through this node")
    l.add_argument("--no-verify", action="store_true", help="skip the final recheck (benchmarks)")
    l.add_argument("--lean", action="store_true",
                   help="benchmarks: no per-peer polling, status polled only until the first byte")
    l.add_argument("--no-encryption", action="store_true", help="do not try MSE/PE before plain BitTorrent")
    l.add_argument("--force-rc4", action="store_true", help="MSE/PE with RC4 only, never plain text")
    l.add_argument("--download-limit", type=int, default=0, help="bytes/s (stay a leecher for a while)")
    add_utp_args(l)
    a = ap.parse_args()
    return seed(a) if a.cmd == "seed" else leech(a)


if __name__ == "__main__":
    sys.exit(main())
