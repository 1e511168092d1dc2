use crate::value::{Value, ValueKind};

/// Appends bencode to a buffer. Dictionary keys are written in the order
/// given; [`crate::OwnedValue`] keeps them sorted for callers that need it.
pub struct Encoder<'b> {
    out: &'b mut Vec<u8>,
}

impl<'b> Encoder<'b> {
    pub fn new(out: &'b mut Vec<u8>) -> Self {
        Self { out }
    }

    pub fn int(&mut self, i: i64) -> &mut Self {
        self.out.push(b'i');
        self.out.extend_from_slice(i.to_string().as_bytes());
        self.out.push(b'e');
        self
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b.len().to_string().as_bytes());
        self.out.push(b':');
        self.out.extend_from_slice(b);
        self
    }

    pub fn begin_list(&mut self) -> &mut Self {
        self.out.push(b'l');
        self
    }

    pub fn begin_dict(&mut self) -> &mut Self {
        self.out.push(b'd');
        self
    }

    pub fn end(&mut self) -> &mut Self {
        self.out.push(b'e');
        self
    }

    /// Bytes that are already valid bencode (an info dictionary kept raw).
    pub fn raw(&mut self, encoded: &[u8]) -> &mut Self {
        self.out.extend_from_slice(encoded);
        self
    }
}

/// Re-encode a decoded value (keys in their decoded order).
pub fn encode_to(value: &Value<'_>, out: &mut Vec<u8>) {
    let mut e = Encoder::new(out);
    encode_value(&mut e, value);
}

fn encode_value(e: &mut Encoder<'_>, value: &Value<'_>) {
    match value.kind() {
        ValueKind::Int(i) => {
            e.int(*i);
        }
        ValueKind::Bytes(b) => {
            e.bytes(b);
        }
        ValueKind::List(items) => {
            e.begin_list();
            for item in items {
                encode_value(e, item);
            }
            e.end();
        }
        ValueKind::Dict(d) => {
            e.begin_dict();
            for (k, v) in d.iter() {
                e.bytes(k);
                encode_value(e, v);
            }
            e.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_each_type() {
        let mut out = Vec::new();
        Encoder::new(&mut out)
            .begin_dict()
            .bytes(b"a")
            .int(-3)
            .bytes(b"b")
            .begin_list()
            .bytes(b"xy")
            .int(0)
            .end()
            .end();
        assert_eq!(out, b"d1:ai-3e1:bl2:xyi0eee");
    }

    #[test]
    fn reencoding_a_decoded_value_is_identity() {
        let input = b"d4:infod6:lengthi5e4:name3:abce1:zli-1e0:ee";
        let v = crate::decode(input).unwrap();
        let mut out = Vec::new();
        encode_to(&v, &mut out);
        assert_eq!(out, input);
    }
}
