//! A node whose first bootstrap was lost, and that since only heard from
//! nodes querying it, bootstraps again: it must not stay in a corner of
//! the network knowing only those who found it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_dht::{Body, Config, Message, Node, NodeId, Query, TransactionId};

#[test]
fn lost_bootstrap_is_retried_even_when_others_queried_us() {
    let t0 = Instant::now();
    let router = SocketAddr::from(([10, 0, 0, 1], 6881));
    let cfg = Config {
        bootstrap: vec![router],
        ..Config::default()
    };
    let mut node = Node::new(cfg, NodeId([0x80; 20]), [4; 32], t0);
    node.bootstrap(t0, &[router]);
    let first = node.poll_transmit().expect("bootstrap query");
    assert_eq!(first.to, router); // ... and lost: the router was not up yet.

    // Someone else finds us and pings: we answer and remember it.
    let other = SocketAddr::from(([10, 0, 0, 2], 6881));
    let ping = Message::query(
        TransactionId::from_u16(9),
        Query::Ping {
            id: NodeId([0x22; 20]),
        },
    );
    node.handle_datagram(t0 + Duration::from_millis(500), other, &ping.to_bytes());
    while node.poll_transmit().is_some() {}
    assert_eq!(node.table().len(), 1);

    // Within seconds the node asks the router again.
    let mut asked_router_again = false;
    for tenth in 1..=100u64 {
        node.handle_timeout(t0 + Duration::from_millis(100 * tenth));
        while let Some(t) = node.poll_transmit() {
            if t.to == router {
                let m = Message::decode(&t.payload).unwrap();
                assert!(
                    matches!(m.body, Body::Query(Query::FindNode { .. })),
                    "{m:?}"
                );
                asked_router_again = true;
            }
        }
        if asked_router_again {
            break;
        }
    }
    assert!(asked_router_again, "no new bootstrap within 10 s");
}
