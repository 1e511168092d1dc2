use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use lodestone_bencode::{DecodeErrorKind, OwnedValue};
use lodestone_core::encoding::from_hex;
use lodestone_core::InfoHash;
use proptest::prelude::*;

use super::*;
use crate::id::NodeId;

fn id(s: &[u8; 20]) -> NodeId {
    NodeId(*s)
}

fn tid(s: &[u8]) -> TransactionId {
    TransactionId::new(s).unwrap()
}

fn token(s: &[u8]) -> Token {
    Token::new(s).unwrap()
}

fn decode(b: &[u8]) -> Message {
    Message::decode(b).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(b)))
}

fn err(b: &[u8]) -> KrpcError {
    Message::decode(b).unwrap_err()
}

/// Decodes to `expected` and encodes back to exactly `bytes`.
fn exact(bytes: &[u8], expected: &Message) {
    assert_eq!(&decode(bytes), expected);
    assert_eq!(
        String::from_utf8_lossy(&expected.to_bytes()),
        String::from_utf8_lossy(bytes)
    );
}

fn hex<const N: usize>(s: &str) -> [u8; N] {
    from_hex(s).unwrap()
}

fn v4(a: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(a), port)
}

fn v6(a: [u8; 16], port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(Ipv6Addr::from(a), port, 0, 0)
}

/// `d1:rd2:id20:<id><inner>e1:t2:aa1:y1:re`
fn response_with(inner: &[u8]) -> Vec<u8> {
    [
        b"d1:rd2:id20:abcdefghij0123456789".as_slice(),
        inner,
        b"e1:t2:aa1:y1:re",
    ]
    .concat()
}

/// `d1:ad2:id20:<id><args>e1:q<method>1:t2:aa1:y1:qe`
fn query_with(method: &str, args: &[u8]) -> Vec<u8> {
    [
        b"d1:ad2:id20:abcdefghij0123456789".as_slice(),
        args,
        format!("e1:q{}:{method}1:t2:aa1:y1:qe", method.len()).as_bytes(),
    ]
    .concat()
}

// ---- BEP 5 examples, byte for byte ----

#[test]
fn bep5_ping() {
    exact(
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        &Message::query(
            tid(b"aa"),
            Query::Ping {
                id: id(b"abcdefghij0123456789"),
            },
        ),
    );
    exact(
        b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
        &Message::response(tid(b"aa"), Response::new(id(b"mnopqrstuvwxyz123456"))),
    );
}

#[test]
fn bep5_find_node() {
    exact(
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
        &Message::query(
            tid(b"aa"),
            Query::FindNode {
                id: id(b"abcdefghij0123456789"),
                target: id(b"mnopqrstuvwxyz123456"),
                want: Want::NONE,
            },
        ),
    );
    // The BEP's "def456..." stands for compact node info; as bytes it is 9
    // long, which is no whole number of nodes.
    assert_eq!(
        err(b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:y1:re"),
        KrpcError::BadLength {
            key: "nodes",
            len: 9
        }
    );
    // The same reply with two real nodes.
    let bytes = b"d1:rd2:id20:0123456789abcdefghij5:nodes52:\
        ABCDEFGHIJKLMNOPQRST\x01\x02\x03\x04\x1a\xe1\
        abcdefghijklmnopqrst\xc0\xa8\x00\x01\x00\x50e1:t2:aa1:y1:re";
    let mut r = Response::new(id(b"0123456789abcdefghij"));
    r.nodes = vec![
        CompactNode {
            id: id(b"ABCDEFGHIJKLMNOPQRST"),
            addr: v4([1, 2, 3, 4], 6881),
        },
        CompactNode {
            id: id(b"abcdefghijklmnopqrst"),
            addr: v4([192, 168, 0, 1], 80),
        },
    ];
    exact(bytes, &Message::response(tid(b"aa"), r));
}

#[test]
fn bep5_get_peers() {
    exact(
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
        &Message::query(
            tid(b"aa"),
            Query::GetPeers {
                id: id(b"abcdefghij0123456789"),
                info_hash: InfoHash(*b"mnopqrstuvwxyz123456"),
                want: Want::NONE,
                scrape: false,
                no_seed: false,
            },
        ),
    );
    // "axje.u" and "idhtnm" are 6-byte compact peers.
    let mut r = Response::new(id(b"abcdefghij0123456789"));
    r.token = Some(token(b"aoeusnth"));
    r.values = vec![
        SocketAddr::V4(v4(*b"axje", u16::from_be_bytes(*b".u"))),
        SocketAddr::V4(v4(*b"idht", u16::from_be_bytes(*b"nm"))),
    ];
    exact(
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
        &Message::response(tid(b"aa"), r),
    );
    assert_eq!(
        err(b"d1:rd2:id20:abcdefghij01234567895:nodes9:def456...5:token8:aoeusnthe1:t2:aa1:y1:re"),
        KrpcError::BadLength {
            key: "nodes",
            len: 9
        }
    );
}

#[test]
fn bep5_announce_peer() {
    exact(
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        &Message::query(
            tid(b"aa"),
            Query::AnnouncePeer {
                id: id(b"abcdefghij0123456789"),
                info_hash: InfoHash(*b"mnopqrstuvwxyz123456"),
                port: 6881,
                implied_port: true,
                token: token(b"aoeusnth"),
                seed: false,
            },
        ),
    );
    exact(
        b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
        &Message::response(tid(b"aa"), Response::new(id(b"mnopqrstuvwxyz123456"))),
    );
}

#[test]
fn bep5_error() {
    exact(
        b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
        &Message::error(tid(b"aa"), error_code::GENERIC, "A Generic Error Ocurred"),
    );
}

// ---- BEP 32, 33, 42, 43 ----

#[test]
fn bep32_want_and_nodes6() {
    let q = query_with(
        "find_node",
        b"6:target20:mnopqrstuvwxyz1234564:wantl2:n42:n6e",
    );
    let m = decode(&q);
    assert_eq!(
        m.body,
        Body::Query(Query::FindNode {
            id: id(b"abcdefghij0123456789"),
            target: id(b"mnopqrstuvwxyz123456"),
            want: Want::BOTH,
        })
    );
    assert_eq!(m.to_bytes(), q);
    // Unknown entries (and non-strings) are ignored; order does not matter.
    let m = decode(&query_with(
        "get_peers",
        b"9:info_hash20:mnopqrstuvwxyz1234564:wantl2:n6i1e2:n8e",
    ));
    let Body::Query(Query::GetPeers { want, .. }) = m.body else {
        panic!("{m:?}")
    };
    assert_eq!(
        want,
        Want {
            v4: false,
            v6: true
        }
    );
    assert_eq!(
        err(&query_with(
            "find_node",
            b"6:target20:mnopqrstuvwxyz1234564:want2:n4"
        )),
        KrpcError::WrongType {
            key: "want",
            expected: "list"
        }
    );

    let ip6: [u8; 16] = hex("20010db8000000000000000000000001");
    let reply = response_with(
        &[
            b"6:nodes638:ABCDEFGHIJKLMNOPQRST".as_slice(),
            &ip6,
            b"\x1a\xe1",
            b"6:valuesl6:\x01\x02\x03\x04\x00\x5018:",
            &ip6,
            b"\x00\x51",
            b"e",
        ]
        .concat(),
    );
    let m = decode(&reply);
    let Body::Response(r) = &m.body else {
        panic!("{m:?}")
    };
    assert_eq!(
        r.nodes6,
        vec![CompactNode6 {
            id: id(b"ABCDEFGHIJKLMNOPQRST"),
            addr: v6(ip6, 6881),
        }]
    );
    // BEP 32: a hybrid values list must be understood.
    assert_eq!(
        r.values,
        vec![
            SocketAddr::V4(v4([1, 2, 3, 4], 80)),
            SocketAddr::V6(v6(ip6, 81)),
        ]
    );
    assert_eq!(m.to_bytes(), reply);
    assert_eq!(
        err(&response_with(
            b"6:nodes637:0123456789012345678901234567890123456"
        )),
        KrpcError::BadLength {
            key: "nodes6",
            len: 37
        }
    );
}

#[test]
fn bep33_scrape() {
    let q = query_with(
        "get_peers",
        b"9:info_hash20:mnopqrstuvwxyz1234566:noseedi1e6:scrapei1e",
    );
    let m = decode(&q);
    assert!(matches!(
        m.body,
        Body::Query(Query::GetPeers {
            scrape: true,
            no_seed: true,
            ..
        })
    ));
    assert_eq!(m.to_bytes(), q);

    let q = query_with(
        "announce_peer",
        b"9:info_hash20:mnopqrstuvwxyz1234564:porti1e4:seedi1e5:token1:x",
    );
    let m = decode(&q);
    assert!(matches!(
        m.body,
        Body::Query(Query::AnnouncePeer {
            seed: true,
            implied_port: false,
            port: 1,
            ..
        })
    ));
    assert_eq!(m.to_bytes(), q);

    let bf_s = [0x5a; 256];
    let bf_p = [0xa5; 256];
    let reply = [
        b"d1:rd4:BFpe256:".as_slice(),
        &bf_p,
        b"4:BFsd256:",
        &bf_s,
        b"2:id20:abcdefghij0123456789e1:t2:aa1:y1:re",
    ]
    .concat();
    let m = decode(&reply);
    let Body::Response(r) = &m.body else {
        panic!("{m:?}")
    };
    assert_eq!(r.bf_seeds.as_deref(), Some(&bf_s));
    assert_eq!(r.bf_peers.as_deref(), Some(&bf_p));
    assert_eq!(m.to_bytes(), reply);
    assert_eq!(
        err(&response_with(b"4:BFsd3:abc")),
        KrpcError::BadLength {
            key: "BFsd",
            len: 3
        }
    );
}

#[test]
fn bep42_ip_and_bep43_read_only() {
    let bytes = b"d2:ip6:\x01\x02\x03\x04\x1a\xe11:rd2:id20:mnopqrstuvwxyz123456e2:roi1e1:t2:aa1:v4:LT\x01\x021:y1:re";
    let mut expected = Message::response(tid(b"aa"), Response::new(id(b"mnopqrstuvwxyz123456")));
    expected.your_ip = Some(SocketAddr::V4(v4([1, 2, 3, 4], 6881)));
    expected.read_only = true;
    expected.version = Version::new(b"LT\x01\x02");
    exact(bytes, &expected);

    let ip6: [u8; 16] = hex("20010db8000000000000000000000001");
    let bytes = [
        b"d2:ip18:".as_slice(),
        &ip6,
        b"\x00\x011:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
    ]
    .concat();
    assert_eq!(decode(&bytes).your_ip, Some(SocketAddr::V6(v6(ip6, 1))));
    // Informative keys that are malformed are dropped, not errors.
    let m = decode(b"d2:ip5:abcde1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:vi3e1:y1:re");
    assert_eq!((m.your_ip, m.version), (None, None));
    let m = decode(b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:v0:1:y1:re");
    assert_eq!(m.version, None);
    // ro is a flag: 0 is false, a string is an error naming it.
    assert!(!decode(b"d1:rd2:id20:mnopqrstuvwxyz123456e2:roi0e1:t2:aa1:y1:re").read_only);
    assert_eq!(
        err(b"d1:rd2:id20:mnopqrstuvwxyz123456e2:ro1:11:t2:aa1:y1:re"),
        KrpcError::WrongType {
            key: "ro",
            expected: "integer"
        }
    );
}

// ---- BEP 44 ----

const PUBKEY: &str = "77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548";
const SIG_SALT: &str = "6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17d\
                        df9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08";

#[test]
fn bep44_immutable_put_and_get() {
    let q = query_with("put", b"5:token8:aoeusnth1:v12:Hello World!");
    exact(
        &q,
        &Message::query(
            tid(b"aa"),
            Query::Put {
                id: id(b"abcdefghij0123456789"),
                token: token(b"aoeusnth"),
                value: RawValue::from_string(b"Hello World!").unwrap(),
                mutable: None,
            },
        ),
    );
    // Target of test vector 3.
    let target: [u8; 20] = hex("e5f96f6f38320f0f33959cb4d3d656452117aadb");
    let q = query_with("get", &[b"6:target20:".as_slice(), &target].concat());
    exact(
        &q,
        &Message::query(
            tid(b"aa"),
            Query::Get {
                id: id(b"abcdefghij0123456789"),
                target: NodeId(target),
                seq: None,
            },
        ),
    );
    let reply = response_with(b"5:nodes26:ABCDEFGHIJKLMNOPQRST\x01\x02\x03\x04\x1a\xe15:token8:aoeusnth1:vd1:ai1e1:bl0:ee");
    let m = decode(&reply);
    let Body::Response(r) = &m.body else {
        panic!("{m:?}")
    };
    assert_eq!(r.v.as_ref().unwrap().as_bytes(), b"d1:ai1e1:bl0:ee");
    assert_eq!(r.nodes.len(), 1);
    assert_eq!(m.to_bytes(), reply);
}

#[test]
fn bep44_mutable_put_with_salt() {
    let k: [u8; 32] = hex(PUBKEY);
    let sig: [u8; 64] = hex(SIG_SALT);
    let q = query_with(
        "put",
        &[
            b"1:k32:".as_slice(),
            &k,
            b"4:salt6:foobar3:seqi1e3:sig64:",
            &sig,
            b"5:token8:aoeusnth1:v12:Hello World!",
        ]
        .concat(),
    );
    let put = Query::Put {
        id: id(b"abcdefghij0123456789"),
        token: token(b"aoeusnth"),
        value: RawValue::from_string(b"Hello World!").unwrap(),
        mutable: Some(MutablePut {
            key: k,
            signature: sig,
            seq: 1,
            salt: b"foobar".to_vec(),
            cas: None,
        }),
    };
    exact(&q, &Message::query(tid(b"aa"), put.clone()));

    // cas sorts first, before id.
    let Query::Put {
        id: pid,
        token: t,
        value,
        mutable: Some(mut mp),
    } = put
    else {
        unreachable!()
    };
    mp.cas = Some(-7);
    mp.salt.clear();
    let m = Message::query(
        tid(b"aa"),
        Query::Put {
            id: pid,
            token: t,
            value,
            mutable: Some(mp),
        },
    );
    let bytes = m.to_bytes();
    assert!(bytes.starts_with(b"d1:ad3:casi-7e2:id20:"));
    assert!(!bytes.windows(4).any(|w| w == b"salt"));
    assert_eq!(decode(&bytes), m);

    // Mutable get reply: k, seq, sig, token, v.
    let reply = response_with(
        &[
            b"1:k32:".as_slice(),
            &k,
            b"3:seqi1e3:sig64:",
            &sig,
            b"5:token8:aoeusnth1:v12:Hello World!",
        ]
        .concat(),
    );
    let m = decode(&reply);
    let Body::Response(r) = &m.body else {
        panic!("{m:?}")
    };
    assert_eq!((r.k, r.sig, r.seq), (Some(k), Some(sig), Some(1)));
    assert_eq!(m.to_bytes(), reply);

    let q = query_with("get", b"3:seqi4e6:target20:mnopqrstuvwxyz123456");
    assert!(matches!(
        decode(&q).body,
        Body::Query(Query::Get { seq: Some(4), .. })
    ));
    assert_eq!(decode(&q).to_bytes(), q);
}

#[test]
fn bep44_rejections() {
    // Unsorted keys inside v: the storing node must reject.
    assert_eq!(
        err(&query_with("put", b"5:token1:x1:vd1:bi1e1:ai2ee")),
        KrpcError::BadValue { key: "v" }
    );
    let big = [b"5:token1:x1:v997:".as_slice(), &[b'x'; 997]].concat();
    assert_eq!(
        err(&query_with("put", &big)),
        KrpcError::BadLength {
            key: "v",
            len: 1001
        }
    );
    assert_eq!(
        err(&query_with("put", b"5:token1:x")),
        KrpcError::MissingKey("v")
    );
    let k = [b'k'; 32];
    let sig = [b's'; 64];
    let mutable = |extra: &[u8]| {
        query_with(
            "put",
            &[b"1:k32:".as_slice(), &k, extra, b"5:token1:x1:vi1e"].concat(),
        )
    };
    assert_eq!(err(&mutable(b"3:seqi1e")), KrpcError::MissingKey("sig"));
    assert_eq!(
        err(&mutable(&[b"3:sig64:".as_slice(), &sig].concat())),
        KrpcError::MissingKey("seq")
    );
    let salt = [
        b"4:salt65:".as_slice(),
        &[b'a'; 65],
        b"3:seqi1e3:sig64:",
        &sig,
    ]
    .concat();
    assert_eq!(
        err(&mutable(&salt)),
        KrpcError::BadLength {
            key: "salt",
            len: 65
        }
    );
    assert_eq!(
        err(&query_with("put", b"1:k3:abc5:token1:x1:vi1e")),
        KrpcError::BadLength { key: "k", len: 3 }
    );
    assert_eq!(
        err(&response_with(b"3:sig3:abc")),
        KrpcError::BadLength { key: "sig", len: 3 }
    );
}

// ---- BEP 51 ----

#[test]
fn bep51_sample_infohashes() {
    let q = query_with("sample_infohashes", b"6:target20:mnopqrstuvwxyz123456");
    exact(
        &q,
        &Message::query(
            tid(b"aa"),
            Query::SampleInfohashes {
                id: id(b"abcdefghij0123456789"),
                target: id(b"mnopqrstuvwxyz123456"),
            },
        ),
    );
    let reply = response_with(
        b"8:intervali21600e5:nodes26:ABCDEFGHIJKLMNOPQRST\x01\x02\x03\x04\x1a\xe1\
          3:numi1234e7:samples40:aaaaaaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbbbbb",
    );
    let mut r = Response::new(id(b"abcdefghij0123456789"));
    r.interval = Some(21600);
    r.num = Some(1234);
    r.nodes = vec![CompactNode {
        id: id(b"ABCDEFGHIJKLMNOPQRST"),
        addr: v4([1, 2, 3, 4], 6881),
    }];
    r.samples = Some(vec![InfoHash([b'a'; 20]), InfoHash([b'b'; 20])]);
    exact(&reply, &Message::response(tid(b"aa"), r));
    // An empty sample list is kept apart from an absent one.
    let m = decode(&response_with(b"3:numi0e7:samples0:"));
    let Body::Response(r) = &m.body else {
        panic!("{m:?}")
    };
    assert_eq!(r.samples, Some(vec![]));
    assert_eq!(
        err(&response_with(b"7:samples21:aaaaaaaaaaaaaaaaaaaaa")),
        KrpcError::BadLength {
            key: "samples",
            len: 21
        }
    );
}

// ---- hostile input ----

#[test]
fn every_truncation_fails_cleanly() {
    let samples: [&[u8]; 4] = [
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
        b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz1234564:wantl2:n42:n6ee1:q9:find_node1:t2:aa1:y1:qe",
    ];
    for s in samples {
        for end in 0..s.len() {
            assert!(
                matches!(Message::decode(&s[..end]), Err(KrpcError::Bencode(_))),
                "{}",
                String::from_utf8_lossy(&s[..end])
            );
        }
        assert!(Message::decode(s).is_ok());
    }
}

#[test]
fn nodes_of_27_bytes() {
    let inner = [b"5:nodes27:".as_slice(), &[b'n'; 27]].concat();
    assert_eq!(
        err(&response_with(&inner)),
        KrpcError::BadLength {
            key: "nodes",
            len: 27
        }
    );
    assert_eq!(
        err(&response_with(b"5:nodesi26e")),
        KrpcError::WrongType {
            key: "nodes",
            expected: "string"
        }
    );
}

#[test]
fn token_lengths() {
    let announce = |tok: &[u8]| {
        query_with(
            "announce_peer",
            &[
                b"9:info_hash20:mnopqrstuvwxyz1234564:porti1e5:token".as_slice(),
                format!("{}:", tok.len()).as_bytes(),
                tok,
            ]
            .concat(),
        )
    };
    assert_eq!(
        err(&announce(b"")),
        KrpcError::BadLength {
            key: "token",
            len: 0
        }
    );
    assert_eq!(
        err(&announce(&[7; 65])),
        KrpcError::BadLength {
            key: "token",
            len: 65
        }
    );
    let m = decode(&announce(&[7; 64]));
    assert!(matches!(
        m.body,
        Body::Query(Query::AnnouncePeer { token, .. }) if token.len() == 64
    ));
    assert_eq!(
        err(&response_with(b"5:token0:")),
        KrpcError::BadLength {
            key: "token",
            len: 0
        }
    );
    assert_eq!(
        err(&query_with(
            "announce_peer",
            b"9:info_hash20:mnopqrstuvwxyz1234564:porti1e"
        )),
        KrpcError::MissingKey("token")
    );
}

#[test]
fn transaction_ids() {
    let with_t = |t: &[u8]| {
        [
            b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t".as_slice(),
            format!("{}:", t.len()).as_bytes(),
            t,
            b"1:y1:re",
        ]
        .concat()
    };
    assert_eq!(err(&with_t(b"")), KrpcError::BadTransactionId);
    assert_eq!(err(&with_t(&[1; 17])), KrpcError::BadTransactionId);
    assert_eq!(decode(&with_t(&[1; 16])).transaction_id.len(), 16);
    assert_eq!(decode(&with_t(b"\x00")).transaction_id, tid(b"\x00"));
    assert_eq!(
        err(b"d1:rd2:id20:mnopqrstuvwxyz123456e1:y1:re"),
        KrpcError::MissingKey("t")
    );
    assert_eq!(
        err(b"d1:rd2:id20:mnopqrstuvwxyz123456e1:ti1e1:y1:re"),
        KrpcError::WrongType {
            key: "t",
            expected: "string"
        }
    );
}

#[test]
fn integers_out_of_range() {
    // Past i64: the bencode layer refuses.
    assert!(matches!(
        err(&query_with(
            "announce_peer",
            b"9:info_hash20:mnopqrstuvwxyz1234564:porti99999999999999999999999e5:token1:x"
        )),
        KrpcError::Bencode(e) if e.kind == DecodeErrorKind::IntegerOverflow
    ));
    for port in ["65536", "-1", "9223372036854775807", "-9223372036854775808"] {
        let args = format!("9:info_hash20:mnopqrstuvwxyz1234564:porti{port}e5:token1:x");
        assert_eq!(
            err(&query_with("announce_peer", args.as_bytes())),
            KrpcError::BadValue { key: "port" },
            "{port}"
        );
    }
    // Any i64 is a valid error code or sequence number.
    let m = decode(b"d1:eli-9223372036854775808e0:e1:t2:aa1:y1:ee");
    assert_eq!(
        m.body,
        Body::Error {
            code: i64::MIN,
            message: String::new()
        }
    );
    assert_eq!(
        m.to_bytes(),
        b"d1:eli-9223372036854775808e0:e1:t2:aa1:y1:ee"
    );
    let q = query_with(
        "get",
        b"3:seqi9223372036854775807e6:target20:mnopqrstuvwxyz123456",
    );
    assert_eq!(decode(&q).to_bytes(), q);
}

#[test]
fn implied_port_without_port() {
    let m = decode(&query_with(
        "announce_peer",
        b"12:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234565:token1:x",
    ));
    assert!(matches!(
        m.body,
        Body::Query(Query::AnnouncePeer {
            port: 0,
            implied_port: true,
            ..
        })
    ));
    assert_eq!(
        err(&query_with(
            "announce_peer",
            b"9:info_hash20:mnopqrstuvwxyz1234565:token1:x"
        )),
        KrpcError::MissingKey("port")
    );
}

#[test]
fn wrong_types_and_missing_keys() {
    let cases: &[(&[u8], KrpcError)] = &[
        (b"li1ee", KrpcError::NotDict),
        (b"4:spam", KrpcError::NotDict),
        (b"d1:t2:aae", KrpcError::MissingKey("y")),
        (
            b"d1:t2:aa1:yi1ee",
            KrpcError::WrongType {
                key: "y",
                expected: "string",
            },
        ),
        (b"d1:t2:aa1:y1:xe", KrpcError::BadValue { key: "y" }),
        (b"d1:t2:aa1:y1:re", KrpcError::MissingKey("r")),
        (
            b"d1:rl2:ide1:t2:aa1:y1:re",
            KrpcError::WrongType {
                key: "r",
                expected: "dictionary",
            },
        ),
        (b"d1:rde1:t2:aa1:y1:re", KrpcError::MissingKey("id")),
        (
            b"d1:rd2:idi1ee1:t2:aa1:y1:re",
            KrpcError::WrongType {
                key: "id",
                expected: "string",
            },
        ),
        (
            b"d1:rd2:id19:abcdefghij012345678e1:t2:aa1:y1:re",
            KrpcError::BadLength { key: "id", len: 19 },
        ),
        (b"d1:t2:aa1:y1:qe", KrpcError::MissingKey("q")),
        (b"d1:q4:ping1:t2:aa1:y1:qe", KrpcError::MissingKey("a")),
        (
            b"d1:ali1ee1:q4:ping1:t2:aa1:y1:qe",
            KrpcError::WrongType {
                key: "a",
                expected: "dictionary",
            },
        ),
        (b"d1:t2:aa1:y1:ee", KrpcError::MissingKey("e")),
        (
            b"d1:e3:bad1:t2:aa1:y1:ee",
            KrpcError::WrongType {
                key: "e",
                expected: "list [integer, string]",
            },
        ),
        (
            b"d1:ele1:t2:aa1:y1:ee",
            KrpcError::WrongType {
                key: "e",
                expected: "list [integer, string]",
            },
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(&err(bytes), expected, "{}", String::from_utf8_lossy(bytes));
    }
    assert_eq!(
        err(&query_with("find_node", b"")),
        KrpcError::MissingKey("target")
    );
    assert_eq!(
        err(&query_with("get_peers", b"9:info_hash3:abc")),
        KrpcError::BadLength {
            key: "info_hash",
            len: 3
        }
    );
    assert_eq!(
        err(&query_with(
            "get_peers",
            b"9:info_hash20:mnopqrstuvwxyz1234566:scrape1:1"
        )),
        KrpcError::WrongType {
            key: "scrape",
            expected: "integer"
        }
    );
    assert_eq!(
        err(&response_with(b"6:values6:abcdef")),
        KrpcError::WrongType {
            key: "values",
            expected: "list"
        }
    );
}

#[test]
fn unknown_method_keeps_the_transaction_id() {
    let bytes = b"d1:ad2:id20:abcdefghij0123456789e1:q4:vote1:t2:xy1:y1:qe";
    let e = err(bytes);
    assert_eq!(
        e,
        KrpcError::UnknownMethod {
            transaction_id: tid(b"xy"),
            method: MethodName::truncated(b"vote"),
        }
    );
    assert_eq!(e.error_code(), error_code::METHOD_UNKNOWN);
    assert_eq!(e.to_string(), r#"unknown query method b"vote""#);
    // Even without arguments, and with a huge binary name.
    let mut long = b"d1:q300:".to_vec();
    long.extend_from_slice(&[0xff; 300]);
    long.extend_from_slice(b"1:t1:\x001:y1:qe");
    match err(&long) {
        KrpcError::UnknownMethod {
            transaction_id,
            method,
        } => {
            assert_eq!(transaction_id, tid(b"\x00"));
            assert_eq!(method.as_bytes(), &[0xff; 32][..]);
        }
        other => panic!("{other:?}"),
    }
    // The reply it calls for.
    let reply = Message::error(tid(b"xy"), e.error_code(), "Method Unknown");
    assert_eq!(
        reply.to_bytes(),
        b"d1:eli204e14:Method Unknowne1:t2:xy1:y1:ee"
    );
}

#[test]
fn malformed_query_can_still_be_answered() {
    let bytes = query_with("get_peers", b"9:info_hash3:abc");
    let e = err(&bytes);
    assert_eq!(e.error_code(), error_code::PROTOCOL);
    assert_eq!(query_transaction_id(&bytes), Some(tid(b"aa")));
    // Not for responses or errors, nor for unusable ids.
    assert_eq!(query_transaction_id(&response_with(b"5:nodes1:x")), None);
    assert_eq!(query_transaction_id(b"d1:t0:1:y1:qe"), None);
    assert_eq!(query_transaction_id(b"garbage"), None);
    assert_eq!(query_transaction_id(&[b' '; 3000]), None);
}

#[test]
fn deep_nesting() {
    let mut bytes = b"d1:ad2:id20:abcdefghij01234567895:token1:x1:v".to_vec();
    bytes.extend_from_slice(&[b'l'; 100]);
    bytes.extend_from_slice(&[b'e'; 100]);
    bytes.extend_from_slice(b"e1:q3:put1:t2:aa1:y1:qe");
    assert!(matches!(
        err(&bytes),
        KrpcError::Bencode(e) if e.kind == DecodeErrorKind::TooDeep { limit: MAX_DEPTH }
    ));
    // Six levels inside v are fine.
    let v = [vec![b'l'; 6], vec![b'e'; 6]].concat();
    let q = query_with("put", &[b"5:token1:x1:v".as_slice(), &v].concat());
    assert_eq!(decode(&q).to_bytes(), q);
}

#[test]
fn length_limit() {
    let pad = vec![b'x'; MAX_PACKET_LEN];
    let mut bytes = b"d1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:r1:z".to_vec();
    bytes.extend_from_slice(format!("{}:", pad.len()).as_bytes());
    bytes.extend_from_slice(&pad);
    bytes.push(b'e');
    assert_eq!(err(&bytes), KrpcError::TooLong(bytes.len()));
    // Exactly at the limit is read.
    let fill = MAX_PACKET_LEN - response_with(b"1:z0000:").len();
    let inner = [format!("1:z{fill}:").as_bytes(), &vec![b'x'; fill]].concat();
    let at_limit = response_with(&inner);
    assert_eq!(at_limit.len(), MAX_PACKET_LEN);
    assert!(Message::decode(&at_limit).is_ok());
}

#[test]
fn values_are_lenient_and_capped() {
    // Wrong sizes, non-strings and port 0 are skipped.
    let m = decode(&response_with(
        b"6:valuesl5:abcde6:\x01\x02\x03\x04\x00\x00i1e6:\x01\x02\x03\x04\x00\x01e",
    ));
    let Body::Response(r) = &m.body else {
        panic!("{m:?}")
    };
    assert_eq!(r.values, vec![SocketAddr::V4(v4([1, 2, 3, 4], 1))]);

    let mut inner = b"6:valuesl".to_vec();
    for i in 0..220u8 {
        inner.extend_from_slice(&[b'6', b':', 10, 0, 0, i, 0, 1]);
    }
    inner.push(b'e');
    let m = decode(&response_with(&inner));
    let Body::Response(r) = &m.body else {
        panic!("{m:?}")
    };
    assert_eq!(r.values.len(), MAX_VALUES);
}

#[test]
fn nodes_are_capped_and_port_zero_dropped() {
    let mut nodes = Vec::new();
    for i in 0..65u8 {
        nodes.extend_from_slice(&[i; 20]);
        nodes.extend_from_slice(&[10, 0, 0, i, 0, u8::from(i != 3)]);
    }
    let inner = [format!("5:nodes{}:", nodes.len()).as_bytes(), &nodes].concat();
    let m = decode(&response_with(&inner));
    let Body::Response(r) = &m.body else {
        panic!("{m:?}")
    };
    assert_eq!(r.nodes.len(), MAX_NODES);
    assert!(r.nodes.iter().all(|n| n.addr.port() == 1));
    assert!(!r.nodes.iter().any(|n| n.id == NodeId([3; 20])));
}

#[test]
fn unsorted_and_duplicate_keys_are_accepted() {
    // Real clients send keys out of order; the first of a duplicate wins.
    let m = decode(b"d1:y1:q1:t2:aa1:q4:ping1:ad2:id20:abcdefghij0123456789e1:t2:bbe");
    assert_eq!(m.transaction_id, tid(b"aa"));
    assert_eq!(
        m.to_bytes(),
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
    );
    // Unknown keys are ignored.
    let m = decode(b"d1:ad2:id20:abcdefghij01234567895:extrali1eee1:q4:ping1:t2:aa1:y1:q1:zi9ee");
    assert!(matches!(m.body, Body::Query(Query::Ping { .. })));
}

#[test]
fn error_messages_are_capped() {
    let long = "é".repeat(200); // 400 bytes
    let m = Message::error(tid(b"aa"), 202, &long);
    let Body::Error { message, .. } = &m.body else {
        unreachable!()
    };
    assert_eq!(message.len(), 256);
    let bytes = format!("d1:eli202e{}:{long}e1:t2:aa1:y1:ee", long.len());
    assert_eq!(decode(bytes.as_bytes()), m);
    // Invalid UTF-8 is replaced; a missing message is empty.
    let m = decode(b"d1:eli203e2:\xff\xfee1:t2:aa1:y1:ee");
    assert_eq!(
        m.body,
        Body::Error {
            code: 203,
            message: "\u{fffd}\u{fffd}".into()
        }
    );
    let m = decode(b"d1:eli203ee1:t2:aa1:y1:ee");
    assert_eq!(
        m.body,
        Body::Error {
            code: 203,
            message: String::new()
        }
    );
}

#[test]
fn errors_name_the_key_and_stay_small() {
    assert_eq!(
        KrpcError::BadLength {
            key: "nodes",
            len: 27
        }
        .to_string(),
        "key \"nodes\" has a bad length: 27 bytes"
    );
    assert_eq!(
        KrpcError::MissingKey("info_hash").to_string(),
        "missing key \"info_hash\""
    );
    assert!(std::mem::size_of::<KrpcError>() <= 64);
}

#[test]
fn encode_appends() {
    let m = Message::query(
        tid(b"aa"),
        Query::Ping {
            id: id(b"abcdefghij0123456789"),
        },
    );
    let mut out = b"prefix".to_vec();
    m.encode(&mut out);
    assert!(out.starts_with(b"prefix"));
    assert_eq!(Message::decode(&out[6..]).unwrap(), m);
    assert_eq!(m.sender_id(), Some(id(b"abcdefghij0123456789")));
}

// ---- properties ----

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 20]>().prop_map(NodeId)
}

fn info_hash() -> impl Strategy<Value = InfoHash> {
    any::<[u8; 20]>().prop_map(InfoHash)
}

fn transaction_id() -> impl Strategy<Value = TransactionId> {
    prop::collection::vec(any::<u8>(), 1..=16).prop_map(|v| tid(&v))
}

fn token_s() -> impl Strategy<Value = Token> {
    prop::collection::vec(any::<u8>(), 1..=64).prop_map(|v| token(&v))
}

fn want() -> impl Strategy<Value = Want> {
    (any::<bool>(), any::<bool>()).prop_map(|(v4, v6)| Want { v4, v6 })
}

fn addr_v4() -> impl Strategy<Value = SocketAddrV4> {
    (any::<[u8; 4]>(), 1..=u16::MAX).prop_map(|(a, p)| v4(a, p))
}

fn addr_v6() -> impl Strategy<Value = SocketAddrV6> {
    (any::<[u8; 16]>(), 1..=u16::MAX).prop_map(|(a, p)| v6(a, p))
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        addr_v4().prop_map(SocketAddr::V4),
        addr_v6().prop_map(SocketAddr::V6)
    ]
}

fn owned_value() -> impl Strategy<Value = OwnedValue> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(OwnedValue::Int),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(OwnedValue::Bytes),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(OwnedValue::List),
            prop::collection::btree_map(prop::collection::vec(any::<u8>(), 0..6), inner, 0..4)
                .prop_map(|m: BTreeMap<Vec<u8>, OwnedValue>| OwnedValue::Dict(m)),
        ]
    })
}

fn raw_value() -> impl Strategy<Value = RawValue> {
    owned_value().prop_map(|v| RawValue::new(&v.encode()).unwrap())
}

fn query() -> impl Strategy<Value = Query> {
    let mutable = (
        any::<[u8; 32]>(),
        prop::collection::vec(any::<u8>(), 64),
        any::<i64>(),
        prop::collection::vec(any::<u8>(), 0..=64),
        any::<Option<i64>>(),
    )
        .prop_map(|(key, sig, seq, salt, cas)| MutablePut {
            key,
            signature: <[u8; 64]>::try_from(sig.as_slice()).unwrap(),
            seq,
            salt,
            cas,
        });
    prop_oneof![
        node_id().prop_map(|id| Query::Ping { id }),
        (node_id(), node_id(), want()).prop_map(|(id, target, want)| Query::FindNode {
            id,
            target,
            want
        }),
        (node_id(), info_hash(), want(), any::<bool>(), any::<bool>()).prop_map(
            |(id, info_hash, want, scrape, no_seed)| Query::GetPeers {
                id,
                info_hash,
                want,
                scrape,
                no_seed
            }
        ),
        (
            node_id(),
            info_hash(),
            any::<u16>(),
            any::<bool>(),
            token_s(),
            any::<bool>()
        )
            .prop_map(|(id, info_hash, port, implied_port, token, seed)| {
                Query::AnnouncePeer {
                    id,
                    info_hash,
                    port,
                    implied_port,
                    token,
                    seed,
                }
            }),
        (node_id(), node_id(), any::<Option<i64>>()).prop_map(|(id, target, seq)| Query::Get {
            id,
            target,
            seq
        }),
        (node_id(), token_s(), raw_value(), prop::option::of(mutable)).prop_map(
            |(id, token, value, mutable)| Query::Put {
                id,
                token,
                value,
                mutable
            }
        ),
        (node_id(), node_id()).prop_map(|(id, target)| Query::SampleInfohashes { id, target }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let nodes = prop::collection::vec(
        (node_id(), addr_v4()).prop_map(|(id, addr)| CompactNode { id, addr }),
        0..8,
    );
    let nodes6 = prop::collection::vec(
        (node_id(), addr_v6()).prop_map(|(id, addr)| CompactNode6 { id, addr }),
        0..8,
    );
    let bloom = prop::option::of(any::<u8>().prop_map(|b| Box::new([b; BLOOM_LEN])));
    (
        (
            node_id(),
            nodes,
            nodes6,
            prop::collection::vec(addr(), 0..12),
            prop::option::of(token_s()),
        ),
        (bloom.clone(), bloom),
        (
            prop::option::of(prop::collection::vec(info_hash(), 0..12)),
            any::<Option<i64>>(),
            any::<Option<i64>>(),
        ),
        (
            prop::option::of(raw_value()),
            any::<Option<[u8; 32]>>(),
            prop::option::of(any::<u8>().prop_map(|b| [b; 64])),
            any::<Option<i64>>(),
        ),
    )
        .prop_map(
            |(
                (id, nodes, nodes6, values, token),
                (bf_seeds, bf_peers),
                (samples, num, interval),
                (v, k, sig, seq),
            )| Response {
                id,
                nodes,
                nodes6,
                values,
                token,
                bf_seeds,
                bf_peers,
                samples,
                num,
                interval,
                v,
                k,
                sig,
                seq,
            },
        )
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        query().prop_map(Body::Query),
        response().prop_map(Body::Response),
        (any::<i64>(), "\\PC{0,100}").prop_map(|(code, message)| Body::Error {
            code,
            message: cap_str(&message, MAX_ERROR_MESSAGE_LEN).to_owned(),
        }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        transaction_id(),
        body(),
        prop::option::of(prop::collection::vec(any::<u8>(), 1..=16)),
        any::<bool>(),
        prop::option::of(addr()),
    )
        .prop_map(
            |(transaction_id, body, version, read_only, your_ip)| Message {
                transaction_id,
                body,
                version: version.and_then(|v| Version::new(&v)),
                read_only,
                your_ip,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity(m in message()) {
        let bytes = m.to_bytes();
        // The encoding is canonical: a strict decode accepts it.
        prop_assert!(lodestone_bencode::decode(&bytes).is_ok());
        if bytes.len() <= MAX_PACKET_LEN {
            prop_assert_eq!(Message::decode(&bytes), Ok(m));
        } else {
            prop_assert_eq!(Message::decode(&bytes), Err(KrpcError::TooLong(bytes.len())));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        let _ = Message::decode(&bytes);
        let _ = query_transaction_id(&bytes);
    }

    /// Damaged valid messages: no panic, and whatever is accepted
    /// re-encodes to something that decodes to the same message.
    #[test]
    fn mutated_messages(
        m in message(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let mut bytes = m.to_bytes();
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
        }
        if let Ok(decoded) = Message::decode(&bytes) {
            let again = decoded.to_bytes();
            if again.len() <= MAX_PACKET_LEN {
                prop_assert_eq!(Message::decode(&again), Ok(decoded));
            }
        }
        let _ = query_transaction_id(&bytes);
    }
}
