//! Property tests: encode(decode(x)) == x for canonical documents, and the
//! decoder never panics on arbitrary bytes.
use lodestone_bencode::{decode, encode_to, DecodeOptions, Decoder, OwnedValue, ValueKind};
use proptest::prelude::*;

fn owned() -> impl Strategy<Value = OwnedValue> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(OwnedValue::Int),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(OwnedValue::Bytes),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(OwnedValue::List),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..8),
                inner,
                0..8
            )
            .prop_map(OwnedValue::Dict),
        ]
    })
}

/// Every sub-value's span must re-encode to exactly its raw bytes.
fn check_spans(input: &[u8], v: &lodestone_bencode::Value<'_>) {
    assert_eq!(&input[v.span()], v.raw());
    let mut out = Vec::new();
    encode_to(v, &mut out);
    assert_eq!(out, v.raw());
    match v.kind() {
        ValueKind::List(items) => items.iter().for_each(|i| check_spans(input, i)),
        ValueKind::Dict(d) => d.iter().for_each(|(_, i)| check_spans(input, i)),
        _ => {}
    }
}

proptest! {
    #[test]
    fn roundtrip(v in owned()) {
        let bytes = v.encode();
        let decoded = decode(&bytes).expect("canonical encoding decodes");
        prop_assert_eq!(OwnedValue::from(&decoded), v);
        check_spans(&bytes, &decoded);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        let _ = Decoder::new(&bytes, DecodeOptions::lenient()).decode_all();
    }

    #[test]
    fn mutations_of_valid_documents_never_panic(v in owned(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = v.encode();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(d) = decode(&bytes) {
            // Whatever strict decoding accepts is canonical.
            let mut out = Vec::new();
            encode_to(&d, &mut out);
            prop_assert_eq!(out, bytes);
        }
    }
}
