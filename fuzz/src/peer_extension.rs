//! The extension paths of a peer session (BEP 10 and 11): after a valid
//! handshake and extension handshake, a hostile peer sends extension
//! messages, each record of the input being `[extension id][u16 length]
//! [payload]`. Every message must be taken (none is long enough to end the
//! connection), each must give exactly the event its payload decodes to or
//! count as a bad extension message, and:
//! - an extension handshake replaces the peer's, re-encodes to itself, and
//!   decides whether (and under which id) we can send it ut_pex;
//! - a ut_pex message holds at most 50 added and 50 dropped peers, none
//!   added on port 0, and re-encodes to itself.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use lodestone_core::{InfoHash, PeerId};
use lodestone_peer::session::{Event, Session, SessionConfig, TorrentShape};
use lodestone_wire::extended::{
    ExtendedHandshake, OUR_UT_METADATA_ID, OUR_UT_PEX_ID, UT_METADATA, UT_PEX,
};
use lodestone_wire::metadata::MetadataMessage;
use lodestone_wire::pex::{PexMessage, MAX_PEX_PEERS};
use lodestone_wire::{decode, Handshake, Limits, Message, Reserved};

const IH: InfoHash = InfoHash([3; 20]);

/// The peer's first extension handshake: ut_metadata and ut_pex under
/// ids of its own.
pub fn first_handshake() -> ExtendedHandshake {
    let mut h = ExtendedHandshake {
        listen_port: Some(51413),
        client: Some("Fuzz 1.0".into()),
        request_queue: Some(250),
        metadata_size: Some(40_000),
        ..Default::default()
    };
    h.extensions.insert(UT_METADATA.into(), 3);
    h.extensions.insert(UT_PEX.into(), 7);
    h
}

/// One extension message as the peer sends it.
pub fn frame(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    Message::Extended {
        id,
        payload: Bytes::copy_from_slice(payload),
    }
    .encode(&mut b);
    b.to_vec()
}

/// One record of the fuzzer's input.
pub fn record(id: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("a record is under 64 KiB");
    let mut r = vec![id];
    r.extend_from_slice(&len.to_be_bytes());
    r.extend_from_slice(payload);
    r
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// The decoded form of a handshake, as our encoder writes it back: the
/// client name is cut to 64 bytes before invalid UTF-8 is replaced, so it
/// may come back longer than 64 bytes; only that may differ.
fn check_handshake(h: &ExtendedHandshake) {
    let client = h.client.as_ref().map_or(0, String::len);
    assert!(client <= 3 * 64, "client name of {client} bytes");
    let mut again = ExtendedHandshake::decode(&h.encode()).expect("our encoding decodes");
    if client > 64 {
        again.client.clone_from(&h.client);
    }
    assert_eq!(&again, h);
}

fn check_pex(m: &PexMessage) {
    assert!(m.added.len() <= MAX_PEX_PEERS && m.dropped.len() <= MAX_PEX_PEERS);
    assert!(
        m.added.iter().all(|(a, _)| a.port() != 0),
        "added on port 0"
    );
    let again = PexMessage::decode(&m.encode()).expect("our encoding decodes");
    assert_eq!(again.added, m.added);
    assert_eq!(again.dropped, m.dropped);
    assert!(!again.truncated);
}

/// After the peer's handshake, can we send it ut_pex, and as which id?
fn check_send(s: &mut Session, now: Instant) {
    let want = s.peer_extensions().and_then(|h| h.id_of(UT_PEX));
    assert_eq!(s.send_extension(UT_PEX, b"de".to_vec()), want.is_some());
    let mut out = BytesMut::new();
    while let Some(b) = s.poll_transmit(now) {
        out.extend_from_slice(&b);
    }
    let mut sent = None;
    while let Some(m) = decode(&mut out, &Limits::default()).expect("we send valid messages") {
        if let Message::Extended { id, payload } = m {
            assert_eq!(payload.as_ref(), b"de");
            sent = Some(id);
        }
    }
    assert_eq!(sent, want);
}

pub fn peer_extension(data: &[u8]) {
    let now = Instant::now();
    let shape = Some(TorrentShape::new(32768, 36 * 32768 + 1000));
    let mut s = Session::new(SessionConfig::new(IH, PeerId([1; 20]), shape), now);
    // Our own handshake goes first.
    while s.poll_transmit(now).is_some() {}
    let hs = Handshake {
        reserved: Reserved::ours(),
        info_hash: IH,
        peer_id: PeerId([2; 20]),
    };
    s.handle_bytes(now, &hs.encode())
        .expect("a valid handshake");
    s.handle_bytes(now, &frame(0, &first_handshake().encode()))
        .expect("a valid extension handshake");
    assert!(
        matches!(&events(&mut s)[..], [Event::Connected { .. }, Event::ExtendedHandshake(h)] if **h == first_handshake())
    );
    check_send(&mut s, now);

    let mut rest = data;
    while let [id, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        let before = s.peer_extensions().cloned();
        let bad_before = s.counters().bad_extension_messages;
        s.handle_bytes(now, &frame(*id, payload))
            .expect("an extension message under 64 KiB is taken");
        let got = events(&mut s);
        let bad = s.counters().bad_extension_messages - bad_before;
        let payload = Bytes::copy_from_slice(payload);
        match *id {
            0 => match ExtendedHandshake::decode(&payload) {
                Ok(h) => {
                    assert_eq!(got, [Event::ExtendedHandshake(Box::new(h.clone()))]);
                    assert_eq!(bad, 0);
                    assert_eq!(s.peer_extensions(), Some(&h));
                    check_handshake(&h);
                }
                Err(_) => {
                    assert!(got.is_empty() && bad == 1);
                    assert_eq!(s.peer_extensions(), before.as_ref());
                }
            },
            OUR_UT_PEX_ID => match PexMessage::decode(&payload) {
                Ok(m) => {
                    assert_eq!((got, bad), (vec![Event::Pex(m.clone())], 0));
                    check_pex(&m);
                }
                Err(_) => assert!(got.is_empty() && bad == 1),
            },
            OUR_UT_METADATA_ID => match MetadataMessage::decode(&payload) {
                Ok(m) => assert_eq!((got, bad), (vec![Event::Metadata(m)], 0)),
                Err(_) => assert!(got.is_empty() && bad == 1),
            },
            _ => assert!(got.is_empty() && bad == 0),
        }
        if *id != 0 {
            assert_eq!(s.peer_extensions(), before.as_ref());
        }
        check_send(&mut s, now);
    }
}
