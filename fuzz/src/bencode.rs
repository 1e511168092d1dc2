//! Decode arbitrary bytes; whatever strict decoding accepts must re-encode
//! to exactly the input, and every span must point at its raw bytes.

use lodestone_bencode::{decode, encode_to, DecodeOptions, Decoder, Value, ValueKind};

fn check(input: &[u8], v: &Value<'_>) {
    assert_eq!(&input[v.span()], v.raw());
    match v.kind() {
        ValueKind::List(items) => items.iter().for_each(|i| check(input, i)),
        ValueKind::Dict(d) => d.iter().for_each(|(_, i)| check(input, i)),
        _ => {}
    }
}

pub fn bencode(data: &[u8]) {
    if let Ok(v) = decode(data) {
        let mut out = Vec::new();
        encode_to(&v, &mut out);
        assert_eq!(out, data, "strict decode accepted a non-canonical document");
        check(data, &v);
    }
    if let Ok(v) = Decoder::new(data, DecodeOptions::lenient()).decode_all() {
        check(data, &v);
    }
}
