//! BEP 44 on the simulated network: immutable and mutable items put from
//! one node are found from others; sequence numbers only go up; a stale
//! or forged put is refused by the storing nodes. Every loop is bounded.

use std::time::Duration;

use lodestone_dht::items::{self, Item, MutableItem};
use lodestone_dht::krpc::error_code;
use lodestone_dht::RawValue;
use lodestone_sim::{DhtSim, SimConfig};

const NODES: usize = 300;
const MAX_EVENTS: u64 = 20_000_000;

fn network(seed: u64) -> DhtSim {
    let cfg = SimConfig {
        nodes: NODES,
        seed,
        loss: 0.01,
        unresponsive: 0.05,
        ..SimConfig::default()
    };
    let mut sim = DhtSim::new(&cfg);
    sim.join_all(
        Duration::from_millis(10),
        Duration::from_secs(30),
        MAX_EVENTS,
    );
    sim
}

/// A responsive node other than the router and those in `not`.
fn pick(sim: &mut DhtSim, not: &[usize]) -> usize {
    for _ in 0..1000 {
        let i = 1 + sim.rng().below(NODES as u64 - 1) as usize;
        if sim.is_responsive(i) && !not.contains(&i) {
            return i;
        }
    }
    panic!("no responsive node found in 1000 draws");
}

fn settle(sim: &mut DhtSim) {
    sim.run_for(Duration::from_secs(10), MAX_EVENTS);
}

#[test]
fn immutable_item_put_then_found_elsewhere() {
    let mut sim = network(44);
    let writer = pick(&mut sim, &[]);
    let value = RawValue::new(b"d4:name9:lodestone4:sizei42ee").unwrap();
    let target = items::immutable_target(&value);
    let put = sim.put(writer, Item::Immutable(value.clone()));
    settle(&mut sim);
    let (sent, acked, errors) = sim
        .record_of(writer, put)
        .unwrap()
        .put_acks
        .clone()
        .unwrap();
    assert!(acked >= 5 && acked <= sent, "stored on {acked} of {sent}");
    assert!(errors.is_empty(), "{errors:?}");

    for round in 0..5 {
        let reader = pick(&mut sim, &[writer]);
        let get = sim.get_immutable(reader, target);
        settle(&mut sim);
        let r = sim.record_of(reader, get).unwrap();
        assert_eq!(
            r.items,
            vec![Item::Immutable(value.clone())],
            "round {round}"
        );
        assert!(r.done_at.is_some());
    }

    // Nobody put this one: the lookup ends with nothing, it does not hang.
    let reader = pick(&mut sim, &[writer]);
    let missing = items::immutable_target(&RawValue::new(b"i7e").unwrap());
    let get = sim.get_immutable(reader, missing);
    settle(&mut sim);
    let r = sim.record_of(reader, get).unwrap();
    assert!(r.items.is_empty() && r.done_at.is_some());
}

#[test]
fn mutable_item_versions_only_go_up() {
    let mut sim = network(4444);
    let writer = pick(&mut sim, &[]);
    let secret = [9u8; 32];
    let key = items::public_key(&secret);
    let salt = b"profile";
    let v = |s: &[u8]| RawValue::from_string(s).unwrap();
    let signed = |seq, value| MutableItem::sign(&secret, salt, seq, value).unwrap();

    let one = sim.put(writer, Item::Mutable(signed(1, v(b"first"))));
    settle(&mut sim);
    let (_, acked, _) = sim
        .record_of(writer, one)
        .unwrap()
        .put_acks
        .clone()
        .unwrap();
    assert!(acked >= 5, "seq 1 stored on {acked}");

    let two = sim.put(writer, Item::Mutable(signed(2, v(b"second"))));
    settle(&mut sim);
    let (_, acked, _) = sim
        .record_of(writer, two)
        .unwrap()
        .put_acks
        .clone()
        .unwrap();
    assert!(acked >= 5, "seq 2 stored on {acked}");

    let reader = pick(&mut sim, &[writer]);
    let get = sim.get_mutable(reader, &key, salt);
    settle(&mut sim);
    let r = sim.record_of(reader, get).unwrap();
    let newest = r.items.last().expect("found the item");
    assert_eq!(newest.seq(), Some(2));
    assert_eq!(newest.value(), &v(b"second"));

    // An old version put again (a replay) is refused with 302.
    let replay = sim.put(reader, Item::Mutable(signed(1, v(b"first"))));
    settle(&mut sim);
    let (_, acked, errors) = sim
        .record_of(reader, replay)
        .unwrap()
        .put_acks
        .clone()
        .unwrap();
    assert_eq!(acked, 0, "a stale version was stored");
    assert!(errors.contains(&error_code::SEQUENCE_TOO_LOW), "{errors:?}");

    // A forgery: seq 3 with a signature that does not match, refused with 206.
    let mut forged = signed(3, v(b"evil"));
    forged.value = v(b"evil!");
    let bad = sim.put(reader, Item::Mutable(forged));
    settle(&mut sim);
    let (_, acked, errors) = sim
        .record_of(reader, bad)
        .unwrap()
        .put_acks
        .clone()
        .unwrap();
    assert_eq!(acked, 0, "a forged item was stored");
    assert!(
        errors.contains(&error_code::INVALID_SIGNATURE),
        "{errors:?}"
    );

    // Still version 2 for everyone.
    let other = pick(&mut sim, &[writer, reader]);
    let get = sim.get_mutable(other, &key, salt);
    settle(&mut sim);
    let r = sim.record_of(other, get).unwrap();
    assert_eq!(r.items.last().and_then(Item::seq), Some(2));
    // The same key with another salt is another item: not found.
    let get = sim.get_mutable(other, &key, b"other salt");
    settle(&mut sim);
    assert!(sim.record_of(other, get).unwrap().items.is_empty());
}
