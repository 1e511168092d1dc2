use std::fmt;

/// What went wrong while decoding, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bencode error at byte {offset}: {kind}")]
pub struct DecodeError {
    /// Offset into the input of the byte that could not be accepted.
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    pub(crate) fn new(offset: usize, kind: DecodeErrorKind) -> Self {
        Self { offset, kind }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The input ended inside a value.
    UnexpectedEnd,
    /// A byte that cannot start or continue a value here.
    UnexpectedByte(u8),
    /// An integer written with a leading zero (`i03e`, `03:abc`).
    LeadingZero,
    /// `i-0e` is not canonical.
    NegativeZero,
    /// `ie` or `i-e`.
    EmptyInteger,
    /// An integer that does not fit in an `i64`, or a length that does not fit in `usize`.
    IntegerOverflow,
    /// A string whose declared length runs past the end of the input.
    LengthBeyondInput { declared: u64, available: usize },
    /// A dictionary key that is not a byte string.
    KeyNotString,
    /// Dictionary keys not in strictly increasing byte order.
    UnsortedKeys,
    /// The same key twice in one dictionary.
    DuplicateKey,
    /// Lists and dictionaries nested deeper than the limit.
    TooDeep { limit: usize },
    /// More values in the whole document than the limit.
    TooManyValues { limit: usize },
    /// Bytes left after a complete top-level value.
    TrailingBytes,
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedEnd => f.write_str("input ends inside a value"),
            Self::UnexpectedByte(b) => {
                if b.is_ascii_graphic() {
                    write!(f, "unexpected byte '{}'", *b as char)
                } else {
                    write!(f, "unexpected byte 0x{b:02x}")
                }
            }
            Self::LeadingZero => f.write_str("number has a leading zero"),
            Self::NegativeZero => f.write_str("negative zero is not allowed"),
            Self::EmptyInteger => f.write_str("integer has no digits"),
            Self::IntegerOverflow => f.write_str("number is too large"),
            Self::LengthBeyondInput {
                declared,
                available,
            } => write!(
                f,
                "string declares {declared} bytes but only {available} remain"
            ),
            Self::KeyNotString => f.write_str("dictionary key is not a byte string"),
            Self::UnsortedKeys => f.write_str("dictionary keys are not sorted"),
            Self::DuplicateKey => f.write_str("duplicate dictionary key"),
            Self::TooDeep { limit } => write!(f, "nesting deeper than {limit} levels"),
            Self::TooManyValues { limit } => write!(f, "more than {limit} values"),
            Self::TrailingBytes => f.write_str("trailing bytes after the value"),
        }
    }
}
