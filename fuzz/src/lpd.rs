//! A Local Peer Discovery (BEP 14) datagram from anyone on the link. What
//! decodes stays within the caps (a port, 1 to 16 hashes, a short cookie)
//! and encodes, for either multicast group, to an announce that decodes to
//! the same thing.

use lodestone_wire::lpd::{Announce, GROUP_V4, GROUP_V6, MAX_HASHES, MAX_LEN};

pub fn lpd(data: &[u8]) {
    let Ok(a) = Announce::decode(data) else {
        return;
    };
    assert!(data.len() <= MAX_LEN);
    assert_ne!(a.port, 0);
    assert!((1..=MAX_HASHES).contains(&a.info_hashes.len()));
    if let Some(c) = &a.cookie {
        assert!(c.len() <= 64, "cookie of {} bytes", c.len());
    }
    for group in [GROUP_V4, GROUP_V6] {
        let bytes = a.encode(group);
        assert!(
            bytes.len() <= MAX_LEN,
            "our announce is {} bytes",
            bytes.len()
        );
        assert_eq!(Announce::decode(&bytes).as_ref(), Ok(&a));
    }
}
