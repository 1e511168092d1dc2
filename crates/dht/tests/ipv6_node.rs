//! BEP 32 on the serving side: `nodes` and `nodes6` follow `want`, or the
//! family of the query when `want` is absent; a lookup only walks nodes of
//! the family it can reach.

use std::net::SocketAddr;
use std::time::Instant;

use lodestone_dht::{Body, Config, Message, Node, NodeId, Query, Response, TransactionId, Want};

fn node_with_both_families(now: Instant) -> Node {
    let mut node = Node::new(Config::default(), NodeId([0x80; 20]), [1; 32], now);
    for i in 1..=3u8 {
        node.add_node(
            now,
            NodeId([i; 20]),
            SocketAddr::from(([10, 0, 0, i], 6881)),
        );
        let v6 = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i)], 6881));
        node.add_node(now, NodeId([i + 100; 20]), v6);
    }
    node
}

fn ask(node: &mut Node, now: Instant, from: SocketAddr, want: Want) -> Response {
    let mut q = Message::query(
        TransactionId::from_u16(7),
        Query::FindNode {
            id: NodeId([0x42; 20]),
            target: NodeId([3; 20]),
            want,
        },
    );
    // Read-only (BEP 43), so that the asker stays out of the answers.
    q.read_only = true;
    node.handle_datagram(now, from, &q.to_bytes());
    // (A full bucket may make the node ping someone first.)
    let t = std::iter::from_fn(|| node.poll_transmit())
        .find(|t| t.to == from)
        .expect("an answer");
    match Message::decode(&t.payload).unwrap().body {
        Body::Response(r) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn node_lists_follow_want_or_the_query_family() {
    let now = Instant::now();
    let mut node = node_with_both_families(now);
    let from4 = SocketAddr::from(([192, 0, 2, 1], 1000));
    let from6 = SocketAddr::from(([0x2001, 0xdb8, 1, 0, 0, 0, 0, 1], 1000));

    let r = ask(&mut node, now, from4, Want::NONE);
    assert_eq!((r.nodes.len(), r.nodes6.len()), (3, 0));
    let r = ask(&mut node, now, from6, Want::NONE);
    assert_eq!((r.nodes.len(), r.nodes6.len()), (0, 3));
    let only6 = Want {
        v4: false,
        v6: true,
    };
    let r = ask(&mut node, now, from4, only6);
    assert_eq!((r.nodes.len(), r.nodes6.len()), (0, 3));
    let r = ask(&mut node, now, from4, Want::BOTH);
    assert_eq!((r.nodes.len(), r.nodes6.len()), (3, 3));
    // Closest first: the target is [3; 20].
    assert_eq!(r.nodes[0].id, NodeId([3; 20]));
}

#[test]
fn a_lookup_over_ipv6_walks_nodes6_only() {
    let now = Instant::now();
    let router = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 6881));
    let cfg = Config {
        bootstrap: vec![router],
        ..Config::default()
    };
    let mut node = Node::new(cfg, NodeId([0x80; 20]), [1; 32], now);
    node.find_node(now, NodeId([9; 20]));
    let t = node.poll_transmit().unwrap();
    assert_eq!(t.to, router);
    let q = Message::decode(&t.payload).unwrap();
    let mut r = Response::new(NodeId([1; 20]));
    r.nodes6 = vec![lodestone_dht::CompactNode6 {
        id: NodeId([9; 20]),
        addr: "[2001:db8::9]:6881".parse().unwrap(),
    }];
    // An IPv4 node in an answer that came over IPv6 cannot be reached.
    r.nodes = vec![lodestone_dht::CompactNode {
        id: NodeId([8; 20]),
        addr: "192.0.2.8:6881".parse().unwrap(),
    }];
    let reply = Message::response(q.transaction_id, r);
    node.handle_datagram(now, router, &reply.to_bytes());
    let next: Vec<SocketAddr> = std::iter::from_fn(|| node.poll_transmit())
        .map(|t| t.to)
        .collect();
    assert_eq!(
        next,
        vec!["[2001:db8::9]:6881".parse::<SocketAddr>().unwrap()]
    );
}
