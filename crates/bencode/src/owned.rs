use std::collections::BTreeMap;

use crate::encode::Encoder;
use crate::value::{Value, ValueKind};

/// An owned value for building documents. Dictionaries are `BTreeMap`s, so
/// the encoding always has sorted, unique keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedValue {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<OwnedValue>),
    Dict(BTreeMap<Vec<u8>, OwnedValue>),
}

impl OwnedValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_to(&mut Encoder::new(&mut out));
        out
    }

    pub fn encode_to(&self, e: &mut Encoder<'_>) {
        match self {
            Self::Int(i) => {
                e.int(*i);
            }
            Self::Bytes(b) => {
                e.bytes(b);
            }
            Self::List(items) => {
                e.begin_list();
                for item in items {
                    item.encode_to(e);
                }
                e.end();
            }
            Self::Dict(d) => {
                e.begin_dict();
                for (k, v) in d {
                    e.bytes(k);
                    v.encode_to(e);
                }
                e.end();
            }
        }
    }

    pub fn str(s: &str) -> Self {
        Self::Bytes(s.as_bytes().to_vec())
    }
}

impl From<&Value<'_>> for OwnedValue {
    fn from(v: &Value<'_>) -> Self {
        match v.kind() {
            ValueKind::Int(i) => Self::Int(*i),
            ValueKind::Bytes(b) => Self::Bytes(b.to_vec()),
            ValueKind::List(items) => Self::List(items.iter().map(Self::from).collect()),
            ValueKind::Dict(d) => {
                Self::Dict(d.iter().map(|(k, v)| (k.to_vec(), Self::from(v))).collect())
            }
        }
    }
}
