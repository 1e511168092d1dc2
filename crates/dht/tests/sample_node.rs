//! BEP 51 on the asking side: samples are reported, and a node that set
//! an `interval` is only asked for nodes (find_node) until it has passed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_core::InfoHash;
use lodestone_dht::{Body, Config, Event, Message, Node, NodeId, Query, Response};

fn answer_sample(node: &mut Node, now: Instant, router: SocketAddr, interval: i64) -> Query {
    let t = node.poll_transmit().expect("a query");
    assert_eq!(t.to, router);
    let q = Message::decode(&t.payload).unwrap();
    let Body::Query(query) = q.body.clone() else {
        panic!("{q:?}")
    };
    let mut r = Response::new(NodeId([1; 20]));
    r.samples = Some(vec![InfoHash([7; 20]), InfoHash([8; 20])]);
    r.num = Some(2);
    r.interval = Some(interval);
    node.handle_datagram(
        now,
        router,
        &Message::response(q.transaction_id, r).to_bytes(),
    );
    query
}

#[test]
fn samples_reported_and_interval_respected() {
    let now = Instant::now();
    let router = SocketAddr::from(([10, 0, 0, 1], 6881));
    let cfg = Config {
        bootstrap: vec![router],
        ..Config::default()
    };
    let mut node = Node::new(cfg, NodeId([0x80; 20]), [3; 32], now);

    node.sample(now, NodeId([5; 20]));
    let q = answer_sample(&mut node, now, router, 60);
    assert!(matches!(q, Query::SampleInfohashes { .. }), "{q:?}");
    let got: Vec<Vec<InfoHash>> = std::iter::from_fn(|| node.poll_event())
        .filter_map(|e| match e {
            Event::Samples { samples, .. } => Some(samples),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![vec![InfoHash([7; 20]), InfoHash([8; 20])]]);

    // Within its 60 s, the same node is asked for nodes only.
    let soon = now + Duration::from_secs(10);
    node.sample(soon, NodeId([6; 20]));
    let t = std::iter::from_fn(|| node.poll_transmit())
        .find(|t| t.to == router)
        .expect("a query to the router");
    let q = Message::decode(&t.payload).unwrap();
    assert!(
        matches!(q.body, Body::Query(Query::FindNode { .. })),
        "{q:?}"
    );

    // After it, sampled again.
    let later = now + Duration::from_secs(61);
    node.handle_timeout(later);
    while node.poll_transmit().is_some() {}
    node.sample(later, NodeId([9; 20]));
    let t = std::iter::from_fn(|| node.poll_transmit())
        .find(|t| t.to == router)
        .expect("a query to the router");
    let q = Message::decode(&t.payload).unwrap();
    assert!(
        matches!(q.body, Body::Query(Query::SampleInfohashes { .. })),
        "{q:?}"
    );
}
