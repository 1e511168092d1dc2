//! BEP 42 in the node: answering nodes' `ip` votes make our id valid for
//! our external address (keeping the routing table), and with
//! `enforce_node_id` a node whose id does not match its IP stays out of
//! the table.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use lodestone_dht::secure_id::{is_valid, secure_id};
use lodestone_dht::{CompactNode, Config, Event, Message, Node, NodeId, Query, Response};

fn public(last: u8) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, last], 6881))
}

#[test]
fn agreeing_votes_make_our_id_valid_for_our_ip() {
    let now = Instant::now();
    let router = public(1);
    let cfg = Config {
        bootstrap: vec![router],
        ..Config::default()
    };
    let mut node = Node::new(cfg, NodeId([0x11; 20]), [2; 32], now);
    let ours: SocketAddr = "198.51.100.7:6881".parse().unwrap();
    assert!(!is_valid(&node.id(), ours.ip()));
    node.find_node(now, NodeId([0x22; 20]));

    // The router names three more nodes; each answer says where we are.
    let mut asked = vec![router];
    let mut answered = 0u8;
    let mut sent = std::collections::HashMap::new();
    while let Some(to) = asked.pop() {
        sent.extend(std::iter::from_fn(|| node.poll_transmit()).map(|t| (t.to, t.payload)));
        let payload = sent.remove(&to).expect("a query to it");
        let q = Message::decode(&payload).unwrap();
        answered += 1;
        let mut r = Response::new(NodeId([answered; 20]));
        if to == router {
            r.nodes = (2..5u8)
                .map(|i| CompactNode {
                    id: NodeId([0x30 + i; 20]),
                    addr: match public(i) {
                        SocketAddr::V4(a) => a,
                        SocketAddr::V6(_) => unreachable!(),
                    },
                })
                .collect();
            asked.extend((2..5u8).map(public));
        }
        let mut m = Message::response(q.transaction_id, r);
        m.your_ip = Some(ours);
        node.handle_datagram(now, to, &m.to_bytes());
    }
    let changed: Vec<(IpAddr, NodeId)> = std::iter::from_fn(|| node.poll_event())
        .filter_map(|e| match e {
            Event::ExternalIp { ip, id } => Some((ip, id)),
            _ => None,
        })
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].0, ours.ip());
    assert_eq!(node.id(), changed[0].1);
    assert!(is_valid(&node.id(), ours.ip()));
    assert_eq!(node.external_ip(), Some(ours.ip()));
    // The nodes we knew are still there after the id change.
    assert_eq!(node.table().len(), 4);
}

#[test]
fn a_lone_or_local_vote_changes_nothing() {
    let now = Instant::now();
    let cfg = Config {
        bootstrap: vec![public(1)],
        ..Config::default()
    };
    let mut node = Node::new(cfg, NodeId([0x11; 20]), [2; 32], now);
    node.ping(now, public(1));
    let t = node.poll_transmit().unwrap();
    let q = Message::decode(&t.payload).unwrap();
    let mut m = Message::response(q.transaction_id, Response::new(NodeId([1; 20])));
    m.your_ip = Some("198.51.100.7:1".parse().unwrap());
    node.handle_datagram(now, public(1), &m.to_bytes());
    assert_eq!(node.id(), NodeId([0x11; 20]));
    assert_eq!(node.external_ip(), None);
}

#[test]
fn enforced_ids_keep_forged_nodes_out_of_the_table() {
    let now = Instant::now();
    let cfg = Config {
        enforce_node_id: true,
        ..Config::default()
    };
    let mut node = Node::new(cfg, NodeId([0x80; 20]), [2; 32], now);
    let ping_from = |node: &mut Node, id: NodeId, from: SocketAddr| {
        let q = Message::query(
            lodestone_dht::TransactionId::from_u16(1),
            Query::Ping { id },
        );
        node.handle_datagram(now, from, &q.to_bytes());
        while node.poll_transmit().is_some() {}
    };
    let forged = NodeId([0x42; 20]);
    ping_from(&mut node, forged, public(9));
    assert!(node.table().get(&forged).is_none());

    let honest = secure_id(public(9).ip(), [0x42; 20]);
    ping_from(&mut node, honest, public(9));
    assert!(node.table().get(&honest).is_some());

    // A LAN address proves nothing and is not held to it.
    let lan = NodeId([0x43; 20]);
    ping_from(&mut node, lan, "192.168.1.20:6881".parse().unwrap());
    assert!(node.table().get(&lan).is_some());
}
