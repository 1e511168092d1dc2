//! Arbitrary datagrams into the DHT: what decodes must encode to bytes that
//! decode to the same message, and a node fed the datagram (as a query, a
//! response to a pending lookup, or garbage) must not panic and must stay
//! within its bounds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_dht::{Config, Message, Node, NodeId};

pub fn krpc(data: &[u8]) {
    if let Ok(m) = Message::decode(data) {
        let bytes = m.to_bytes();
        let again = Message::decode(&bytes).expect("our own encoding decodes");
        assert_eq!(again, m);
    }
    let now = Instant::now();
    let router = SocketAddr::from(([10, 0, 0, 1], 6881));
    let cfg = Config {
        bootstrap: vec![router],
        ..Config::default()
    };
    let mut node = Node::new(cfg, NodeId([0x80; 20]), [7; 32], now);
    // A lookup in flight, so that the datagram may answer it.
    node.get_immutable(now, NodeId([0x11; 20]));
    while node.poll_transmit().is_some() {}
    node.handle_datagram(now, router, data);
    node.handle_datagram(now, SocketAddr::from(([192, 0, 2, 9], 1234)), data);
    node.handle_timeout(now + Duration::from_secs(3));
    while node.poll_transmit().is_some() {}
    while node.poll_event().is_some() {}
    assert!(node.table().len() <= 8 * 160);
    assert!(node.items().len() <= 1000);
}
