//! Short byte strings from the wire, stored inline so that a decoded message
//! needs no allocation for them, and valid by construction.

use std::fmt;

use lodestone_bencode::{DecodeOptions, Decoder};

use super::{KrpcError, MAX_VALUE_LEN};

/// At most `N` bytes (`N` < 256) kept inline. Bytes past `len` are zero, so
/// the derived equality and hash only see the used part.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Inline<const N: usize> {
    len: u8,
    buf: [u8; N],
}

impl<const N: usize> Inline<N> {
    fn new(bytes: &[u8]) -> Option<Self> {
        let len = u8::try_from(bytes.len()).ok()?;
        let mut buf = [0u8; N];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Self { len, buf })
    }

    fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// Writes bytes the way `b"..."` literals look: printable ASCII as is, the
/// rest escaped.
fn write_escaped(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_str("b\"")?;
    for b in bytes {
        write!(f, "{}", std::ascii::escape_default(*b))?;
    }
    f.write_str("\"")
}

macro_rules! inline_bytes {
    ($(#[$doc:meta])* $name:ident, $max:expr, $min:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(Inline<$max>);

        impl $name {
            /// Shortest accepted length.
            pub const MIN_LEN: usize = $min;
            /// Longest accepted length.
            pub const MAX_LEN: usize = $max;

            /// `None` unless `MIN_LEN <= bytes.len() <= MAX_LEN`.
            pub fn new(bytes: &[u8]) -> Option<Self> {
                if bytes.len() < Self::MIN_LEN {
                    return None;
                }
                Inline::new(bytes).map(Self)
            }

            pub fn as_bytes(&self) -> &[u8] {
                self.0.as_bytes()
            }

            pub fn len(&self) -> usize {
                self.as_bytes().len()
            }

            pub fn is_empty(&self) -> bool {
                self.as_bytes().is_empty()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "("))?;
                write_escaped(f, self.as_bytes())?;
                f.write_str(")")
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                self.as_bytes()
            }
        }
    };
}

inline_bytes!(
    /// `t`: chosen by the querying node, echoed in the reply. 1 to 16 bytes
    /// (two is usual).
    TransactionId,
    16,
    1
);

inline_bytes!(
    /// A write token (`token`): opaque, 1 to 64 bytes.
    Token,
    64,
    1
);

inline_bytes!(
    /// The top-level `v`: a BEP 20 client code and version, usually 4 bytes.
    Version,
    16,
    1
);

inline_bytes!(
    /// The method name of a query we do not know, cut to 32 bytes.
    MethodName,
    32,
    0
);

impl TransactionId {
    /// The usual two-byte form.
    pub fn from_u16(n: u16) -> Self {
        let mut buf = [0u8; 16];
        let [hi, lo, ..] = &mut buf;
        [*hi, *lo] = n.to_be_bytes();
        Self(Inline { len: 2, buf })
    }

    /// The first two bytes as a big-endian number, when there are exactly two.
    pub fn as_u16(&self) -> Option<u16> {
        match self.as_bytes() {
            [hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }
}

impl MethodName {
    /// The first [`MethodName::MAX_LEN`] bytes of `name`.
    pub fn truncated(name: &[u8]) -> Self {
        let cut = name.get(..Self::MAX_LEN).unwrap_or(name);
        Self::new(cut).unwrap_or(Self(Inline {
            len: 0,
            buf: [0; 32],
        }))
    }
}

impl fmt::Display for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.as_bytes())
    }
}

/// A BEP 44 value (`v` of `put` and of a `get` reply): one complete,
/// canonical bencoded value of at most [`MAX_VALUE_LEN`] bytes, kept as
/// the bytes that are hashed and signed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawValue(Vec<u8>);

impl RawValue {
    /// Checks that `encoded` is one canonical bencoded value (sorted keys,
    /// canonical integers, nothing after it) of at most 1000 bytes.
    pub fn new(encoded: &[u8]) -> Result<Self, KrpcError> {
        check_value(encoded)?;
        Ok(Self(encoded.to_vec()))
    }

    /// A byte string value (`<len>:<bytes>`); `None` if the encoding would
    /// exceed 1000 bytes.
    pub fn from_string(s: &[u8]) -> Option<Self> {
        let mut out = Vec::with_capacity(s.len() + 5);
        super::encode::write_bytes(&mut out, s);
        (out.len() <= MAX_VALUE_LEN).then_some(Self(out))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawValue(")?;
        write_escaped(f, &self.0)?;
        f.write_str(")")
    }
}

impl AsRef<[u8]> for RawValue {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Nesting allowed inside a BEP 44 value (the message around it uses two
/// levels of the decoder's budget).
const VALUE_DEPTH: usize = super::MAX_DEPTH - 2;

fn check_value(encoded: &[u8]) -> Result<(), KrpcError> {
    if encoded.len() > MAX_VALUE_LEN {
        return Err(KrpcError::BadLength {
            key: "v",
            len: encoded.len(),
        });
    }
    let opts = DecodeOptions {
        max_depth: VALUE_DEPTH,
        max_values: super::MAX_BENCODE_VALUES,
        strict: true,
    };
    Decoder::new(encoded, opts)
        .decode_all()
        .map(|_| ())
        .map_err(|_| KrpcError::BadValue { key: "v" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_enforced() {
        assert!(TransactionId::new(b"").is_none());
        assert!(TransactionId::new(&[0; 17]).is_none());
        assert_eq!(TransactionId::new(&[9; 16]).unwrap().len(), 16);
        assert!(Token::new(b"").is_none());
        assert!(Token::new(&[1; 65]).is_none());
        assert_eq!(Token::new(&[1; 64]).unwrap().as_bytes(), &[1; 64][..]);
        assert_eq!(MethodName::truncated(&[b'x'; 100]).len(), 32);
        assert_eq!(MethodName::truncated(b"").len(), 0);
    }

    #[test]
    fn equality_ignores_spare_bytes() {
        assert_eq!(
            TransactionId::from_u16(0x6161),
            TransactionId::new(b"aa").unwrap()
        );
        assert_ne!(
            TransactionId::new(b"a").unwrap(),
            TransactionId::new(b"a\0").unwrap()
        );
        assert_eq!(TransactionId::from_u16(0x0102).as_u16(), Some(0x0102));
        assert_eq!(TransactionId::new(b"abc").unwrap().as_u16(), None);
    }

    #[test]
    fn debug_is_readable() {
        assert_eq!(
            format!("{:?}", TransactionId::new(b"a\x01").unwrap()),
            r#"TransactionId(b"a\x01")"#
        );
        assert_eq!(MethodName::truncated(b"vote").to_string(), r#"b"vote""#);
    }

    #[test]
    fn raw_values() {
        assert!(RawValue::new(b"12:Hello World!").is_ok());
        assert!(RawValue::new(b"d1:ai1e1:bi2ee").is_ok());
        assert_eq!(
            RawValue::new(b"d1:bi1e1:ai2ee"),
            Err(KrpcError::BadValue { key: "v" })
        );
        assert_eq!(
            RawValue::new(b"i1ei2e"),
            Err(KrpcError::BadValue { key: "v" })
        );
        assert_eq!(RawValue::new(b""), Err(KrpcError::BadValue { key: "v" }));
        let big = [b"996:".as_slice(), &[b'x'; 996]].concat();
        assert_eq!(RawValue::new(&big).unwrap().as_bytes().len(), 1000);
        let too_big = [b"997:".as_slice(), &[b'x'; 997]].concat();
        assert_eq!(
            RawValue::new(&too_big),
            Err(KrpcError::BadLength {
                key: "v",
                len: 1001
            })
        );
        assert_eq!(
            RawValue::from_string(b"Hello World!").unwrap().as_bytes(),
            b"12:Hello World!"
        );
        assert!(RawValue::from_string(&[0; 996]).is_some());
        assert!(RawValue::from_string(&[0; 997]).is_none());
    }
}
