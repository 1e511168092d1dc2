//! A datagram through uTP's packet parser: never a panic, and what parses
//! encodes back to bytes that parse to the same packet (unknown extensions
//! and a repeated selective ack are not kept, so the bytes may differ).

use lodestone_utp::packet::Packet;

pub fn utp_packet(data: &[u8]) {
    let _ = lodestone_utp::looks_like_utp(data);
    let Ok(p) = Packet::parse(data) else {
        return;
    };
    let mut out = Vec::new();
    p.header.encode(p.sack, &mut out);
    out.extend_from_slice(p.payload);
    let again = Packet::parse(&out).expect("an encoded packet parses");
    assert_eq!(again, p);
    if data[1] == 0 || (data[1] == 1 && data[20] == 0) {
        // No extension, or one selective ack alone: the bytes are ours.
        assert_eq!(out, data);
    }
}
