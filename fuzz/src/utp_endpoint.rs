//! A uTP endpoint driven by the input: datagrams from a few addresses
//! (some built around a real connection's ids and numbers, some raw),
//! interleaved with time steps, connects, writes, reads and closes. It must
//! never panic and never hold more connections than its limit; its
//! deadline must never lie in the past once `handle_timeout` ran and the
//! output was drained.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_utp::packet::{Header, Kind, Packet};
use lodestone_utp::seq::Seq;
use lodestone_utp::{Config, ConnectionId, Endpoint, Event};

const PEERS: [&str; 4] = [
    "10.0.0.2:6881",
    "10.0.0.3:51413",
    "127.0.0.1:6882",
    "[2001:db8::7]:6881",
];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes([
            self.byte()?,
            self.byte()?,
            self.byte()?,
            self.byte()?,
        ]))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

pub fn utp_endpoint(data: &[u8]) {
    let cfg = Config {
        max_connections: 8,
        max_half_open: 3,
        ..Config::default()
    };
    let start = Instant::now();
    let mut now = start;
    let mut ep = Endpoint::new(cfg.clone(), 7, now);
    let peers: Vec<SocketAddr> = PEERS
        .iter()
        .map(|p| p.parse().expect("an address"))
        .collect();
    let mut ids: Vec<ConnectionId> = Vec::new();
    // The last header the endpoint sent to each peer: the input may answer
    // it with plausible numbers.
    let mut last: Vec<Option<Header>> = vec![None; peers.len()];
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut input = Input(data);
    let mut ops = 0;
    while let Some(op) = input.byte() {
        let mut stepped = false;
        ops += 1;
        if ops > 2000 {
            break;
        }
        let peer_i = (op >> 4) as usize % peers.len();
        let peer = peers[peer_i];
        match op & 0x0f {
            // Raw bytes.
            0 => {
                let n = input.byte().unwrap_or(0) as usize;
                let d = input.bytes(n).to_vec();
                ep.handle_datagram(now, peer, &d);
            }
            // A packet built from the input, answering the last header we
            // sent to this peer when there was one.
            1..=4 => {
                let (Some(k), Some(dseq), Some(dack), Some(wnd), Some(ts)) = (
                    input.byte(),
                    input.u16(),
                    input.u16(),
                    input.u32(),
                    input.u32(),
                ) else {
                    break;
                };
                let kind =
                    [Kind::Data, Kind::Fin, Kind::State, Kind::Reset, Kind::Syn][k as usize % 5];
                let (conn_id, seq, ack) = match last[peer_i] {
                    Some(h) if op & 0x0f != 4 => {
                        let id = if h.kind == Kind::Syn {
                            h.conn_id
                        } else {
                            h.conn_id.wrapping_sub((k >> 4) as u16 & 1)
                        };
                        (
                            id,
                            h.ack_nr.plus(dseq % 64),
                            Seq(h.seq_nr.0.wrapping_sub(dack % 64)),
                        )
                    }
                    _ => (dseq, Seq(dack), Seq(dseq ^ dack)),
                };
                let header = Header {
                    kind,
                    conn_id,
                    timestamp_us: ts,
                    timestamp_diff_us: ts.rotate_left(7),
                    wnd_size: wnd,
                    seq_nr: seq,
                    ack_nr: ack,
                };
                let sack_len = (k as usize & 0x0c) * 8;
                let sack = input.bytes(sack_len).to_vec();
                let sack = (sack.len() == sack_len && sack_len > 0).then_some(&sack[..]);
                header.encode(sack, &mut out);
                if matches!(kind, Kind::Data | Kind::Fin) {
                    let n = input.byte().unwrap_or(0) as usize * 8;
                    out.extend_from_slice(input.bytes(n));
                }
                let d = out.clone();
                ep.handle_datagram(now, peer, &d);
            }
            // Time passes: up to ~65 s, in steps the input picks.
            5 => {
                let ms = input.u16().unwrap_or(1000) as u64;
                now += Duration::from_millis(ms);
                ep.handle_timeout(now);
            }
            // Jump to the endpoint's own deadline.
            6 => {
                if let Some(t) = ep.poll_timeout() {
                    now = now.max(t);
                    ep.handle_timeout(now);
                    stepped = true;
                }
            }
            7 => {
                if let Ok(id) = ep.connect(now, peer) {
                    ids.push(id);
                }
            }
            8 | 9 => {
                if let Some(&id) = pick(&ids, input.byte()) {
                    let n = input.u16().unwrap_or(0) as usize % 20_000;
                    let chunk: Vec<u8> = (0..n).map(|i| i as u8).collect();
                    let _ = ep.write(id, &chunk);
                }
            }
            10 => {
                if let Some(&id) = pick(&ids, input.byte()) {
                    let _ = ep.read(id, &mut buf);
                }
            }
            11 => {
                if let Some(&id) = pick(&ids, input.byte()) {
                    ep.close(id);
                }
            }
            _ => {
                // Drain what the endpoint sends, remembering the headers.
            }
        }
        while let Some(e) = ep.poll_event() {
            if let Event::Incoming(id, _) = e {
                ids.push(id);
            }
            if let Event::Connected(id) | Event::Readable(id) = e {
                let _ = ep.stats(id);
                let _ = ep.read(id, &mut buf);
            }
        }
        let mut sent = 0;
        while let Some(to) = ep.poll_transmit(now, &mut out).map(|t| t.destination) {
            sent += 1;
            assert!(sent < 100_000, "poll_transmit never runs dry");
            let p = Packet::parse(&out).expect("the endpoint sends packets it can parse");
            if let Some(i) = peers.iter().position(|&a| a == to) {
                last[i] = Some(p.header);
            }
        }
        if stepped {
            // Timeouts handled and output drained: the next deadline is in
            // the future, or a driver would spin.
            if let Some(t) = ep.poll_timeout() {
                assert!(t > now, "a deadline left in the past");
            }
        }
        assert!(
            ep.connection_count() <= cfg.max_connections,
            "{} connections",
            ep.connection_count()
        );
        let c = ep.counters();
        assert!(c.malformed <= c.datagrams && c.strays <= c.datagrams);
    }
}

fn pick(ids: &[ConnectionId], b: Option<u8>) -> Option<&ConnectionId> {
    if ids.is_empty() {
        return None;
    }
    ids.get(b.unwrap_or(0) as usize % ids.len())
}
