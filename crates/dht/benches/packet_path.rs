//! The packet path of a DHT node: decode a query, update the routing table,
//! build and encode the answer. One core, no sockets.
//!
//!   cargo bench -p lodestone-dht --bench packet_path

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lodestone_core::InfoHash;
use lodestone_dht::krpc::{Message, Query, TransactionId, Want};
use lodestone_dht::rng::Rng;
use lodestone_dht::{Config, Node, NodeId};

fn setup() -> (Node, Vec<(SocketAddr, Vec<u8>)>, Instant) {
    let now = Instant::now();
    let mut rng = Rng::from_u64(9);
    let mut node = Node::new(Config::default(), NodeId(rng.bytes20()), rng.bytes32(), now);
    // A table of a few hundred nodes, as a long-running node has.
    for i in 0..400u32 {
        let addr = SocketAddr::from(([10, (i >> 8) as u8, i as u8, 1], 6881));
        node.add_node(now, NodeId(rng.bytes20()), addr);
    }
    // A mix of queries from 1 000 different senders.
    let mut packets = Vec::new();
    for i in 0..1000u32 {
        let from = SocketAddr::from(([11, (i >> 8) as u8, i as u8, 2], 6881));
        let id = NodeId(rng.bytes20());
        let q = match i % 4 {
            0 => Query::Ping { id },
            1 => Query::FindNode {
                id,
                target: NodeId(rng.bytes20()),
                want: Want::NONE,
            },
            _ => Query::GetPeers {
                id,
                info_hash: InfoHash(rng.bytes20()),
                want: Want::NONE,
                scrape: false,
                no_seed: false,
            },
        };
        packets.push((
            from,
            Message::query(TransactionId::from_u16(i as u16), q).to_bytes(),
        ));
    }
    (node, packets, now)
}

fn packet_path(c: &mut Criterion) {
    let (mut node, packets, start) = setup();
    let mut g = c.benchmark_group("dht");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    let mut i = 0usize;
    // Time moves forward a microsecond per packet, so the rate limiter and
    // timers behave as under real load.
    let mut now = start;
    g.bench_function("query_to_response", |b| {
        b.iter(|| {
            let (from, bytes) = &packets[i % packets.len()];
            i += 1;
            now += Duration::from_micros(1);
            node.handle_datagram(now, *from, bytes);
            let mut sent = 0;
            while let Some(t) = node.poll_transmit() {
                sent += t.payload.len();
            }
            while node.poll_event().is_some() {}
            sent
        })
    });
    g.finish();
}

criterion_group!(benches, packet_path);
criterion_main!(benches);
