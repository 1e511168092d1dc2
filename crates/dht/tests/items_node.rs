//! A requesting node checks every BEP 44 value it is given: a value that
//! does not hash to the target, or a mutable item with a bad signature or
//! another key, is dropped (and counted), and the lookup goes on.

use std::net::SocketAddr;
use std::time::Instant;

use lodestone_dht::items::{self, Item, MutableItem};
use lodestone_dht::{
    Body, CompactNode, Config, Event, Message, Node, NodeId, Query, RawValue, Response,
};

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 6881))
}

/// The next query the node sends: its destination, transaction and body.
fn next_query(node: &mut Node) -> (SocketAddr, Message) {
    let t = node.poll_transmit().expect("a query was sent");
    let m = Message::decode(&t.payload).expect("our own query decodes");
    assert!(matches!(m.body, Body::Query(Query::Get { .. })), "{m:?}");
    (t.to, m)
}

fn answer(node: &mut Node, now: Instant, to: &Message, from: SocketAddr, r: Response) {
    let reply = Message::response(to.transaction_id, r);
    node.handle_datagram(now, from, &reply.to_bytes());
}

fn events(node: &mut Node) -> Vec<Event> {
    std::iter::from_fn(|| node.poll_event()).collect()
}

#[test]
fn immutable_value_that_does_not_hash_to_the_target_is_dropped() {
    let now = Instant::now();
    let cfg = Config {
        bootstrap: vec![addr(1)],
        ..Config::default()
    };
    let mut node = Node::new(cfg, NodeId([1; 20]), [0; 32], now);
    let good = RawValue::new(b"5:hello").unwrap();
    let target = items::immutable_target(&good);
    node.get_immutable(now, target);

    // The router answers with a value that is not the one asked for, and
    // names a second node.
    let (to, q) = next_query(&mut node);
    assert_eq!(to, addr(1));
    let mut liar = Response::new(NodeId([2; 20]));
    liar.v = Some(RawValue::new(b"5:hellp").unwrap());
    liar.nodes = vec![CompactNode {
        id: NodeId([3; 20]),
        addr: match addr(2) {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        },
    }];
    answer(&mut node, now, &q, addr(1), liar);
    assert!(!events(&mut node)
        .iter()
        .any(|e| matches!(e, Event::Item { .. })));

    // The second node has the real value: reported, and the lookup ends.
    let (to, q) = next_query(&mut node);
    assert_eq!(to, addr(2));
    let mut honest = Response::new(NodeId([3; 20]));
    honest.v = Some(good.clone());
    answer(&mut node, now, &q, addr(2), honest);
    let evs = events(&mut node);
    assert!(evs.contains(&Event::Item {
        lookup: lodestone_dht::LookupId(0),
        item: Item::Immutable(good),
        from: addr(2),
    }));
    let done = evs.iter().find_map(|e| match e {
        Event::LookupDone { stats, .. } => Some(stats.clone()),
        _ => None,
    });
    assert_eq!(done.map(|s| s.bad_items), Some(1));
}

#[test]
fn mutable_item_with_bad_signature_or_foreign_key_is_dropped() {
    let now = Instant::now();
    let cfg = Config {
        bootstrap: vec![addr(1)],
        ..Config::default()
    };
    let mut node = Node::new(cfg, NodeId([1; 20]), [0; 32], now);
    let secret = [5u8; 32];
    let key = items::public_key(&secret);
    let value = RawValue::from_string(b"v").unwrap();
    node.get_mutable(now, &key, b"salt", None);
    let (_, q) = next_query(&mut node);

    // Signed by someone else (their key, so the target does not match).
    let foreign = MutableItem::sign(&[6; 32], b"salt", 9, value.clone()).unwrap();
    let mut r = Response::new(NodeId([2; 20]));
    r.k = Some(foreign.key);
    r.sig = Some(foreign.signature);
    r.seq = Some(foreign.seq);
    r.v = Some(foreign.value.clone());
    r.nodes = (2..5u8)
        .map(|i| CompactNode {
            id: NodeId([i + 1; 20]),
            addr: match addr(i) {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(_) => unreachable!(),
            },
        })
        .collect();
    answer(&mut node, now, &q, addr(1), r);

    let real = MutableItem::sign(&secret, b"salt", 4, value.clone()).unwrap();
    let mut queries: Vec<(SocketAddr, Message)> = std::iter::from_fn(|| node.poll_transmit())
        .map(|t| (t.to, Message::decode(&t.payload).unwrap()))
        .collect();
    assert_eq!(queries.len(), 3);
    // Our key, but the signature covers another seq.
    let (a, q) = queries.remove(0);
    let mut r = Response::new(NodeId([9; 20]));
    r.k = Some(real.key);
    r.sig = Some(real.signature);
    r.seq = Some(5);
    r.v = Some(real.value.clone());
    answer(&mut node, now, &q, a, r);
    // The real thing.
    let (a, q) = queries.remove(0);
    let mut r = Response::new(NodeId([10; 20]));
    r.k = Some(real.key);
    r.sig = Some(real.signature);
    r.seq = Some(real.seq);
    r.v = Some(real.value.clone());
    answer(&mut node, now, &q, a, r);

    let items: Vec<Item> = events(&mut node)
        .into_iter()
        .filter_map(|e| match e {
            Event::Item { item, .. } => Some(item),
            _ => None,
        })
        .collect();
    assert_eq!(items, vec![Item::Mutable(real)]);
}
