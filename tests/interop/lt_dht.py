#!/usr/bin/python3
# Debian's interpreter on purpose: python3-libtorrent only imports there.
"""libtorrent DHT roles for Lodestone's interop tests (127.0.0.1, or ::1
with --ipv6 for the swarm).

  lt_dht.py swarm --n N --base-port P [--seed-torrent T --content D --seed-port Q] [--duration S]
      N DHT-only sessions on 127.0.0.1:P..P+N-1 bootstrapped from each other,
      and optionally a seeder (TCP and DHT on Q) that announces T every 2 s;
      with --seed-utp-only the seeder takes peers over uTP (BEP 29) only, on
      the UDP port its DHT uses, with TCP off both ways.
      Prints READY when all nodes but one have DHT nodes (--ready-nodes K:
      at least K; and the seeder seeds), and every 2 s a JSON line with each node's routing table size.
  lt_dht.py lookup --info-hash H --bootstrap IP:PORT [--timeout S] [--port P]
      One session; dht_get_peers(H) until a peer appears; prints
      {"event":"result","peers":[...]}. Exit 0 if any peer was found.
  lt_dht.py item --bootstrap IP:PORT (--put-immutable TEXT | --get-immutable HEX
                 | --put-mutable TEXT --secret HEX128 --public HEX64 [--salt S]
                 | --get-mutable HEX64 [--salt S]) [--timeout S]
      BEP 44 through libtorrent's own dht_put_*/dht_get_* calls; prints one
      JSON line with what libtorrent reported. Exit 0 on success (put: at
      least one node stored it; get: an item was returned).
"""
import argparse
import warnings
import json
import os
import signal
import sys
import time

START = time.monotonic()  # before libtorrent loads
import libtorrent as lt

warnings.filterwarnings("ignore", category=DeprecationWarning)

STOP = False


def on_signal(_s, _f):
    global STOP
    STOP = True


IP = "127.0.0.1"


def host_port(ip, port):
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def settings(port, bootstrap):
    return {
        "listen_interfaces": host_port(IP, port),
        "outgoing_interfaces": IP,
        "enable_upnp": False, "enable_natpmp": False, "enable_lsd": False,
        "enable_dht": True, "dht_bootstrap_nodes": bootstrap,
        "enable_ip_notifier": False,
        "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
        "dht_prefer_verified_node_ids": False, "dht_enforce_node_id": False,
        "dht_ignore_dark_internet": False, "dht_block_ratelimit": 1000000,
        "dht_announce_interval": 10, "dht_max_fail_count": 100,
        "allow_multiple_connections_per_ip": True,
        "enable_incoming_utp": False, "enable_outgoing_utp": False,
        "alert_mask": lt.alert.category_t.dht_notification | lt.alert.category_t.status_notification
        | lt.alert.category_t.dht_operation_notification,
    }


def swarm(a):
    global IP
    if a.ipv6:
        IP = "::1"
    boot = host_port(IP, a.base_port)
    sessions = []
    for i in range(a.n):
        s = lt.session(settings(a.base_port + i, boot if i else host_port(IP, a.base_port + 1)))
        sessions.append(s)
    for i, s in enumerate(sessions):
        s.add_dht_node((IP, a.base_port + (1 if i == 0 else 0)))
    seeder = h = None
    if a.seed_torrent:
        st = settings(a.seed_port, boot)
        if a.seed_utp_only:
            st.update({"enable_incoming_utp": True, "enable_outgoing_utp": True,
                       "enable_incoming_tcp": False, "enable_outgoing_tcp": False})
        seeder = lt.session(st)
        seeder.add_dht_node((IP, a.base_port))
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(a.seed_torrent)
        atp.save_path = a.content
        h = seeder.add_torrent(atp)
    ready = False
    last = 0.0
    end = time.monotonic() + a.duration
    known = set()
    while not STOP and time.monotonic() < end:
        for s in sessions + ([seeder] if seeder else []):
            for al in s.pop_alerts():
                if type(al).__name__ == "dht_live_nodes_alert":
                    for n in al.nodes:
                        ip, port = n["endpoint"]
                        known.add(f"{ip}:{port}")
        time.sleep(0.05)
        now = time.monotonic()
        if h and now - last > 2 and h.status().is_seeding:
            h.force_dht_announce()
        if now - last > 2:
            last = now
            if a.dump:
                # What the libtorrent nodes hold in their routing tables.
                with open(a.dump + ".tmp", "w") as f:
                    json.dump({"nodes": sorted(known)}, f)
                os.replace(a.dump + ".tmp", a.dump)
                known = set()
                for s in sessions:
                    nid = s.dht_state().get(b"node-id", [b""])[0][:20]
                    if len(nid) == 20:
                        s.dht_live_nodes(lt.sha1_hash(nid))
            sizes = [s.status().dht_nodes for s in sessions]
            # libtorrent's second node sometimes reports an empty table for
            # a while; the swarm is usable once most nodes know others.
            if not ready and sum(1 for n in sizes if n >= a.ready_nodes) >= len(sizes) - 1 \
                    and (not h or h.status().is_seeding):
                ready = True
                print("READY", flush=True)
            print(json.dumps({"event": "tables", "sizes": sizes}), flush=True)


def lookup(a):
    global IP
    if a.repeat:
        return lookup_repeat(a)
    host, port = a.bootstrap.rsplit(":", 1)
    if host.startswith("["):
        host = IP = host.strip("[]")  # an IPv6 bootstrap: run on ::1
    s = lt.session(settings(a.port, a.bootstrap))
    s.add_dht_node((host, int(port)))
    ih = lt.sha1_hash(bytes.fromhex(a.info_hash))
    t0 = time.monotonic()
    peers = set()
    while not s.is_dht_running() and time.monotonic() - t0 < a.timeout:
        s.pop_alerts()
        time.sleep(0.05)
    last_query = 0.0
    while not STOP and time.monotonic() - t0 < a.timeout and not peers:
        now = time.monotonic()
        if now - last_query > 2:
            s.dht_get_peers(ih)
            last_query = now
        s.wait_for_alert(100)
        for al in s.pop_alerts():
            if isinstance(al, lt.dht_get_peers_reply_alert):
                for p in al.peers():
                    peers.add(f"{p[0]}:{p[1]}")
    print(json.dumps({"event": "result", "peers": sorted(peers), "t": round(time.monotonic() - t0, 3)}), flush=True)
    return 0 if peers else 1


def lookup_repeat(a):
    """Warm lookups on one session: time from dht_get_peers to the first reply holding a peer."""
    s = lt.session(settings(a.port, a.bootstrap))
    host, port = a.bootstrap.rsplit(":", 1)
    s.add_dht_node((host, int(port)))
    ih = lt.sha1_hash(bytes.fromhex(a.info_hash))
    t0 = time.monotonic()
    while not s.is_dht_running() and time.monotonic() - t0 < a.timeout:
        s.pop_alerts()
        time.sleep(0.05)
    times = []
    for i in range(a.repeat):
        start = time.monotonic()
        s.dht_get_peers(ih)
        got = None
        while got is None and time.monotonic() - start < 10:
            s.wait_for_alert(5)
            for al in s.pop_alerts():
                if isinstance(al, lt.dht_get_peers_reply_alert) and al.num_peers() > 0 and got is None:
                    got = time.monotonic() - start
        print(json.dumps({"event": "lookup", "n": i, "first_peer_ms": round(got * 1000, 3) if got else None}), flush=True)
        if i > 0 and got:
            times.append(got)
        time.sleep(0.05)
    times.sort()
    if times:
        print(json.dumps({"event": "summary", "warm_lookups": len(times),
                          "median_first_peer_ms": round(times[len(times) // 2] * 1000, 3)}), flush=True)
    return 0 if times else 1


def metadata(a):
    """Time to verified metadata for a magnet (DHT only): since_start_s from
    this process's start (Python's start-up is before it; `import
    libtorrent` is in it), since_session_s from just before the session is
    made (its DHT start included), since_add_s from add_torrent."""
    t_session = time.monotonic()
    s = lt.session(settings(a.port, a.bootstrap))
    host, port = a.bootstrap.rsplit(":", 1)
    s.add_dht_node((host, int(port)))
    atp = lt.parse_magnet_uri(a.magnet)
    atp.save_path = a.save
    atp.flags |= lt.torrent_flags.upload_mode  # metadata only, no payload
    t_add = time.monotonic()
    s.add_torrent(atp)
    t = None
    end = time.monotonic() + a.timeout
    while t is None and time.monotonic() < end:
        s.wait_for_alert(10)
        for al in s.pop_alerts():
            if isinstance(al, lt.metadata_received_alert):
                t = time.monotonic()
    print(json.dumps({"event": "metadata", "ok": t is not None,
                      "since_start_s": round(t - START, 4) if t else None,
                      "since_session_s": round(t - t_session, 4) if t else None,
                      "since_add_s": round(t - t_add, 4) if t else None}), flush=True)
    return 0 if t else 1


def wait_for_dht(s, t0, timeout):
    """Give libtorrent's table a moment to fill (its dht_nodes count lags)."""
    while time.monotonic() - t0 < timeout and not STOP:
        s.pop_alerts()
        if s.is_dht_running() and s.status().dht_nodes >= 3:
            return
        time.sleep(0.05)


def text(entry):
    if isinstance(entry, bytes):
        return entry.decode("utf-8", "replace")
    return entry if isinstance(entry, str) else repr(entry)


def item(a):
    s = lt.session(settings(a.port, a.bootstrap))
    # dht_put_alert and the item alerts are not all in the default mask.
    s.apply_settings({"alert_mask": lt.alert.category_t.all_categories})
    host, port = a.bootstrap.rsplit(":", 1)
    s.add_dht_node((host, int(port)))
    t0 = time.monotonic()
    wait_for_dht(s, t0, min(a.timeout, 3))
    salt = a.salt.encode()
    if a.put_immutable is not None:
        target = s.dht_put_immutable_item(a.put_immutable.encode())
        out = {"event": "put", "target": str(target)}
    elif a.get_immutable:
        s.dht_get_immutable_item(lt.sha1_hash(bytes.fromhex(a.get_immutable)))
        out = {"event": "get", "target": a.get_immutable}
    elif a.put_mutable is not None:
        s.dht_put_mutable_item(bytes.fromhex(a.secret), bytes.fromhex(a.public), a.put_mutable.encode(), salt)
        out = {"event": "put"}
    else:
        s.dht_get_mutable_item(bytes.fromhex(a.get_mutable), salt)
        out = {"event": "get"}
    ok = False
    done = False
    while not done and not STOP and time.monotonic() - t0 < a.timeout:
        s.wait_for_alert(100)
        for al in s.pop_alerts():
            if isinstance(al, lt.dht_put_alert):
                out.update(num_success=al.num_success, seq=al.seq)
                ok = al.num_success > 0
                done = True
            elif isinstance(al, lt.dht_immutable_item_alert):
                out.update(value=text(al.item), found=al.item is not None)
                ok = al.item is not None and al.item != b""
                done = True
            elif isinstance(al, lt.dht_mutable_item_alert):
                # The first alert may come before the lookup ends; the
                # authoritative one is the newest version found.
                # This binding hands the item over as a dict.
                got = al.item if isinstance(al.item, dict) else {}
                out.update(value=text(got.get("value", b"")), seq=al.seq, key=bytes(al.key).hex(),
                           authoritative=al.authoritative)
                ok = al.seq > 0
                done = al.authoritative
    out["ok"] = ok
    out["t"] = round(time.monotonic() - t0, 3)
    print(json.dumps(out), flush=True)
    return 0 if ok else 1


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("swarm")
    s.add_argument("--n", type=int, default=8)
    s.add_argument("--base-port", type=int, required=True)
    s.add_argument("--seed-torrent")
    s.add_argument("--content")
    s.add_argument("--seed-port", type=int, default=0)
    s.add_argument("--seed-utp-only", action="store_true", help="the seeder: uTP only, TCP off both ways")
    s.add_argument("--duration", type=float, default=120)
    s.add_argument("--ipv6", action="store_true", help="run on [::1] (BEP 32 nodes6)")
    s.add_argument("--ready-nodes", type=int, default=1,
                   help="print READY once all nodes but one hold this many nodes")
    s.add_argument("--dump", help="write the nodes in the routing tables to this JSON file every 2 s")
    l = sub.add_parser("lookup")
    l.add_argument("--info-hash", required=True)
    l.add_argument("--bootstrap", required=True)
    l.add_argument("--port", type=int, default=0)
    l.add_argument("--timeout", type=float, default=30)
    l.add_argument("--repeat", type=int, default=0, help="warm lookups on one session")
    m = sub.add_parser("metadata")
    m.add_argument("--magnet", required=True)
    m.add_argument("--bootstrap", required=True)
    m.add_argument("--save", required=True)
    m.add_argument("--port", type=int, default=0)
    m.add_argument("--timeout", type=float, default=60)
    it = sub.add_parser("item")
    it.add_argument("--bootstrap", required=True)
    it.add_argument("--port", type=int, default=0)
    it.add_argument("--timeout", type=float, default=30)
    it.add_argument("--salt", default="")
    it.add_argument("--secret", help="libtorrent's 64-byte expanded ed25519 secret key, hex")
    it.add_argument("--public", help="ed25519 public key, hex")
    g = it.add_mutually_exclusive_group(required=True)
    g.add_argument("--put-immutable")
    g.add_argument("--get-immutable")
    g.add_argument("--put-mutable")
    g.add_argument("--get-mutable")
    a = ap.parse_args()
    if a.cmd == "swarm":
        return swarm(a) or 0
    if a.cmd == "item":
        return item(a)
    return lookup(a) if a.cmd == "lookup" else metadata(a)


if __name__ == "__main__":
    sys.exit(main())
