//! A hostile peer's byte stream, after a valid handshake, fed to a peer
//! session in reads cut where the input says, some split off one buffer
//! (joined without copying) and some in fresh ones (only the cut message
//! is copied). It must never panic, and it must see exactly what a session
//! fed the same bytes in one piece sees: the same events, the same verdict.

use std::time::Instant;

use bytes::BytesMut;
use lodestone_core::{InfoHash, PeerId};
use lodestone_peer::session::{Event, Session, SessionConfig, TorrentShape};
use lodestone_wire::{Handshake, Reserved};

const IH: InfoHash = InfoHash([3; 20]);

fn session(now: Instant) -> Session {
    // 37 pieces of 32 KiB, the last one short.
    let shape = Some(TorrentShape::new(32768, 36 * 32768 + 1000));
    let mut s = Session::new(SessionConfig::new(IH, PeerId([1; 20]), shape), now);
    let hs = Handshake {
        reserved: Reserved::ours(),
        info_hash: IH,
        peer_id: PeerId([2; 20]),
    };
    s.handle_bytes(now, &hs.encode())
        .expect("a valid handshake");
    while s.poll_event().is_some() {}
    s
}

fn drain(s: &mut Session, now: Instant, events: &mut Vec<Event>) {
    while let Some(e) = s.poll_event() {
        events.push(e);
    }
    while s.poll_transmit(now).is_some() {}
}

pub fn peer_session(data: &[u8]) {
    let Some((&cuts_len, rest)) = data.split_first() else {
        return;
    };
    let (cuts, stream) = rest.split_at((cuts_len as usize).min(rest.len()));
    let now = Instant::now();

    let mut whole = session(now);
    let mut want = Vec::new();
    let whole_ok = whole.handle_bytes(now, stream).is_ok();
    drain(&mut whole, now, &mut want);

    let mut chunked = session(now);
    let mut got = Vec::new();
    let mut chunked_ok = true;
    let mut at = 0;
    let mut alloc = BytesMut::new();
    let mut cut = cuts.iter().cycle();
    while at < stream.len() {
        let c = cut.next().copied().unwrap_or(255);
        // Low bit: a fresh buffer or the next slice of the current one.
        let n = ((c as usize >> 1) * 257 + 1).min(stream.len() - at);
        if c & 1 == 1 || alloc.capacity() - alloc.len() < n {
            alloc = BytesMut::with_capacity(n + 1 + (c as usize) * 64);
        }
        alloc.extend_from_slice(&stream[at..at + n]);
        at += n;
        let r = chunked.handle_chunk(now, alloc.split());
        drain(&mut chunked, now, &mut got);
        if r.is_err() {
            chunked_ok = false;
            break;
        }
    }
    assert_eq!(whole_ok, chunked_ok);
    assert_eq!(want, got);
}
