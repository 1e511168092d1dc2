//! [`Message`] to bytes. Hand-written, with every dictionary's keys in
//! sorted order, so the output is canonical bencode with no intermediate
//! tree and no allocation beyond `out`.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use super::{
    cap_str, Body, Message, MutablePut, Query, Response, Want, COMPACT_NODE6_LEN, COMPACT_NODE_LEN,
    MAX_ERROR_MESSAGE_LEN,
};
use crate::id::ID_LEN;

pub(super) fn message(m: &Message, out: &mut Vec<u8>) {
    // Top-level keys in order: a e ip q r ro t v y.
    out.push(b'd');
    if let Body::Query(q) = &m.body {
        write_key(out, b"a");
        query_args(q, out);
    }
    if let Body::Error { code, message } = &m.body {
        write_key(out, b"e");
        out.push(b'l');
        write_int(out, *code);
        write_bytes(out, cap_str(message, MAX_ERROR_MESSAGE_LEN).as_bytes());
        out.push(b'e');
    }
    if let Some(ip) = &m.your_ip {
        write_key(out, b"ip");
        write_addr(out, ip);
    }
    if let Body::Query(q) = &m.body {
        write_key(out, b"q");
        write_bytes(out, q.method().as_bytes());
    }
    if let Body::Response(r) = &m.body {
        write_key(out, b"r");
        response(r, out);
    }
    if m.read_only {
        write_key(out, b"ro");
        write_int(out, 1);
    }
    write_key(out, b"t");
    write_bytes(out, m.transaction_id.as_bytes());
    if let Some(v) = &m.version {
        write_key(out, b"v");
        write_bytes(out, v.as_bytes());
    }
    write_key(out, b"y");
    write_bytes(
        out,
        match m.body {
            Body::Query(_) => b"q",
            Body::Response(_) => b"r",
            Body::Error { .. } => b"e",
        },
    );
    out.push(b'e');
}

fn query_args(q: &Query, out: &mut Vec<u8>) {
    out.push(b'd');
    match q {
        Query::Ping { id } => {
            write_key(out, b"id");
            write_bytes(out, id.as_bytes());
        }
        Query::FindNode { id, target, want } => {
            write_key(out, b"id");
            write_bytes(out, id.as_bytes());
            write_key(out, b"target");
            write_bytes(out, target.as_bytes());
            write_want(out, *want);
        }
        Query::GetPeers {
            id,
            info_hash,
            want,
            scrape,
            no_seed,
        } => {
            write_key(out, b"id");
            write_bytes(out, id.as_bytes());
            write_key(out, b"info_hash");
            write_bytes(out, info_hash.as_bytes());
            write_flag(out, b"noseed", *no_seed);
            write_flag(out, b"scrape", *scrape);
            write_want(out, *want);
        }
        Query::AnnouncePeer {
            id,
            info_hash,
            port,
            implied_port,
            token,
            seed,
        } => {
            write_key(out, b"id");
            write_bytes(out, id.as_bytes());
            write_flag(out, b"implied_port", *implied_port);
            write_key(out, b"info_hash");
            write_bytes(out, info_hash.as_bytes());
            write_key(out, b"port");
            write_int(out, i64::from(*port));
            write_flag(out, b"seed", *seed);
            write_key(out, b"token");
            write_bytes(out, token.as_bytes());
        }
        Query::Get { id, target, seq } => {
            write_key(out, b"id");
            write_bytes(out, id.as_bytes());
            if let Some(seq) = seq {
                write_key(out, b"seq");
                write_int(out, *seq);
            }
            write_key(out, b"target");
            write_bytes(out, target.as_bytes());
        }
        Query::Put {
            id,
            token,
            value,
            mutable,
        } => {
            // Keys in order: cas id k salt seq sig token v.
            let m: Option<&MutablePut> = mutable.as_ref();
            if let Some(cas) = m.and_then(|m| m.cas) {
                write_key(out, b"cas");
                write_int(out, cas);
            }
            write_key(out, b"id");
            write_bytes(out, id.as_bytes());
            if let Some(m) = m {
                write_key(out, b"k");
                write_bytes(out, &m.key);
                if !m.salt.is_empty() {
                    write_key(out, b"salt");
                    write_bytes(out, &m.salt);
                }
                write_key(out, b"seq");
                write_int(out, m.seq);
                write_key(out, b"sig");
                write_bytes(out, &m.signature);
            }
            write_key(out, b"token");
            write_bytes(out, token.as_bytes());
            write_key(out, b"v");
            out.extend_from_slice(value.as_bytes());
        }
        Query::SampleInfohashes { id, target } => {
            write_key(out, b"id");
            write_bytes(out, id.as_bytes());
            write_key(out, b"target");
            write_bytes(out, target.as_bytes());
        }
    }
    out.push(b'e');
}

fn response(r: &Response, out: &mut Vec<u8>) {
    // Keys in order: BFpe BFsd id interval k nodes nodes6 num samples seq
    // sig token v values (upper case sorts first).
    out.push(b'd');
    if let Some(bf) = &r.bf_peers {
        write_key(out, b"BFpe");
        write_bytes(out, &bf[..]);
    }
    if let Some(bf) = &r.bf_seeds {
        write_key(out, b"BFsd");
        write_bytes(out, &bf[..]);
    }
    write_key(out, b"id");
    write_bytes(out, r.id.as_bytes());
    if let Some(i) = r.interval {
        write_key(out, b"interval");
        write_int(out, i);
    }
    if let Some(k) = &r.k {
        write_key(out, b"k");
        write_bytes(out, k);
    }
    if !r.nodes.is_empty() {
        write_key(out, b"nodes");
        write_len(out, r.nodes.len() * COMPACT_NODE_LEN);
        for n in &r.nodes {
            out.extend_from_slice(n.id.as_bytes());
            write_v4(out, &n.addr);
        }
    }
    if !r.nodes6.is_empty() {
        write_key(out, b"nodes6");
        write_len(out, r.nodes6.len() * COMPACT_NODE6_LEN);
        for n in &r.nodes6 {
            out.extend_from_slice(n.id.as_bytes());
            write_v6(out, &n.addr);
        }
    }
    if let Some(n) = r.num {
        write_key(out, b"num");
        write_int(out, n);
    }
    if let Some(samples) = &r.samples {
        write_key(out, b"samples");
        write_len(out, samples.len() * ID_LEN);
        for s in samples {
            out.extend_from_slice(s.as_bytes());
        }
    }
    if let Some(seq) = r.seq {
        write_key(out, b"seq");
        write_int(out, seq);
    }
    if let Some(sig) = &r.sig {
        write_key(out, b"sig");
        write_bytes(out, sig);
    }
    if let Some(t) = &r.token {
        write_key(out, b"token");
        write_bytes(out, t.as_bytes());
    }
    if let Some(v) = &r.v {
        write_key(out, b"v");
        out.extend_from_slice(v.as_bytes());
    }
    if !r.values.is_empty() {
        write_key(out, b"values");
        out.push(b'l');
        for a in &r.values {
            write_addr(out, a);
        }
        out.push(b'e');
    }
    out.push(b'e');
}

fn write_want(out: &mut Vec<u8>, want: Want) {
    if want.is_given() {
        write_key(out, b"want");
        out.push(b'l');
        if want.v4 {
            write_bytes(out, b"n4");
        }
        if want.v6 {
            write_bytes(out, b"n6");
        }
        out.push(b'e');
    }
}

fn write_flag(out: &mut Vec<u8>, key: &[u8], set: bool) {
    if set {
        write_key(out, key);
        write_int(out, 1);
    }
}

/// A compact peer as a bencoded string (6 or 18 bytes).
fn write_addr(out: &mut Vec<u8>, a: &SocketAddr) {
    match a {
        SocketAddr::V4(a) => {
            out.extend_from_slice(b"6:");
            write_v4(out, a);
        }
        SocketAddr::V6(a) => {
            out.extend_from_slice(b"18:");
            write_v6(out, a);
        }
    }
}

fn write_v4(out: &mut Vec<u8>, a: &SocketAddrV4) {
    out.extend_from_slice(&a.ip().octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn write_v6(out: &mut Vec<u8>, a: &SocketAddrV6) {
    out.extend_from_slice(&a.ip().octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn write_key(out: &mut Vec<u8>, key: &[u8]) {
    write_bytes(out, key);
}

pub(super) fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_len(out, b.len());
    out.extend_from_slice(b);
}

/// `<len>:`
fn write_len(out: &mut Vec<u8>, len: usize) {
    write_decimal(out, len as u64);
    out.push(b':');
}

fn write_int(out: &mut Vec<u8>, i: i64) {
    out.push(b'i');
    if i < 0 {
        out.push(b'-');
    }
    write_decimal(out, i.unsigned_abs());
    out.push(b'e');
}

fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    // u64::MAX has 20 digits.
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(start..).unwrap_or(&[]));
}
