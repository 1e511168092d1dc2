use crate::error::{DecodeError, DecodeErrorKind as Kind};
use crate::value::{Dict, Value, ValueKind};

/// Limits and strictness of a decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Deepest nesting of lists and dictionaries accepted.
    pub max_depth: usize,
    /// Most values (of any type, counted over the whole input) accepted.
    pub max_values: usize,
    /// Require dictionary keys to be sorted and unique. Integers must be
    /// canonical in either mode: a non-canonical integer would make a
    /// re-encoding differ from the input.
    pub strict: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_depth: 64,
            max_values: 1_000_000,
            strict: true,
        }
    }
}

impl DecodeOptions {
    /// Accept unsorted or duplicate dictionary keys (seen in old torrents).
    pub fn lenient() -> Self {
        Self {
            strict: false,
            ..Self::default()
        }
    }
}

/// Decode exactly one value that spans the whole input, with default options.
pub fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
    Decoder::new(input, DecodeOptions::default()).decode_all()
}

/// Decode one value at the start of `input` and return it with the number of
/// bytes it used. BEP 9 metadata messages put raw data after a dictionary.
pub fn decode_prefix(input: &[u8]) -> Result<(Value<'_>, usize), DecodeError> {
    Decoder::new(input, DecodeOptions::default()).decode_prefix()
}

/// A cursor over one input buffer.
pub struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    values: usize,
    opts: DecodeOptions,
}

impl<'a> Decoder<'a> {
    pub fn new(input: &'a [u8], opts: DecodeOptions) -> Self {
        Self {
            input,
            pos: 0,
            values: 0,
            opts,
        }
    }

    /// Decode one value at the start of the input and return it with the
    /// number of bytes it used (the rest is the caller's: BEP 9 data).
    pub fn decode_prefix(mut self) -> Result<(Value<'a>, usize), DecodeError> {
        let v = self.value(0)?;
        Ok((v, self.pos))
    }

    /// Decode one value; anything after it is an error.
    pub fn decode_all(mut self) -> Result<Value<'a>, DecodeError> {
        let v = self.value(0)?;
        if self.pos != self.input.len() {
            return Err(self.err(Kind::TrailingBytes));
        }
        Ok(v)
    }

    fn err(&self, kind: Kind) -> DecodeError {
        DecodeError::new(self.pos, kind)
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.err(Kind::UnexpectedEnd))
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, DecodeError> {
        self.values += 1;
        if self.values > self.opts.max_values {
            return Err(self.err(Kind::TooManyValues {
                limit: self.opts.max_values,
            }));
        }
        let start = self.pos;
        let kind = match self.peek()? {
            b'i' => {
                self.pos += 1;
                ValueKind::Int(self.integer(b'e')?)
            }
            b'0'..=b'9' => ValueKind::Bytes(self.bytes()?),
            b'l' => {
                self.enter(depth)?;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                ValueKind::List(items)
            }
            b'd' => {
                self.enter(depth)?;
                ValueKind::Dict(self.dict(depth)?)
            }
            other => return Err(self.err(Kind::UnexpectedByte(other))),
        };
        let span = start..self.pos;
        Ok(Value::new(kind, &self.input[span.clone()], span))
    }

    fn enter(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth >= self.opts.max_depth {
            return Err(self.err(Kind::TooDeep {
                limit: self.opts.max_depth,
            }));
        }
        self.pos += 1;
        Ok(())
    }

    fn dict(&mut self, depth: usize) -> Result<Dict<'a>, DecodeError> {
        let mut entries: Vec<(&'a [u8], Value<'a>)> = Vec::new();
        while self.peek()? != b'e' {
            let key_at = self.pos;
            if !self.peek()?.is_ascii_digit() {
                return Err(self.err(Kind::KeyNotString));
            }
            // A key counts as a value for the limit, like any other string.
            self.values += 1;
            if self.values > self.opts.max_values {
                return Err(self.err(Kind::TooManyValues {
                    limit: self.opts.max_values,
                }));
            }
            let key = self.bytes()?;
            if self.opts.strict {
                if let Some((prev, _)) = entries.last() {
                    match (*prev).cmp(key) {
                        std::cmp::Ordering::Less => {}
                        std::cmp::Ordering::Equal => {
                            return Err(DecodeError::new(key_at, Kind::DuplicateKey))
                        }
                        std::cmp::Ordering::Greater => {
                            return Err(DecodeError::new(key_at, Kind::UnsortedKeys))
                        }
                    }
                }
            }
            let value = self.value(depth + 1)?;
            entries.push((key, value));
        }
        self.pos += 1;
        Ok(Dict::from_entries(entries))
    }

    /// `<len>:<bytes>`; the length is checked against what remains before slicing.
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len_at = self.pos;
        let len = self.unsigned(b':')?;
        let available = self.input.len() - self.pos;
        if len > available as u64 {
            return Err(DecodeError::new(
                len_at,
                Kind::LengthBeyondInput {
                    declared: len,
                    available,
                },
            ));
        }
        // `len <= available <= usize::MAX`, so the cast is lossless.
        let end = self.pos + len as usize;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Digits up to `term` (consumed), canonical, no sign.
    fn unsigned(&mut self, term: u8) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut n: u64 = 0;
        loop {
            let b = self.peek()?;
            if b == term {
                break;
            }
            if !b.is_ascii_digit() {
                return Err(self.err(Kind::UnexpectedByte(b)));
            }
            if self.pos > start && self.input[start] == b'0' {
                return Err(DecodeError::new(start, Kind::LeadingZero));
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .ok_or_else(|| DecodeError::new(start, Kind::IntegerOverflow))?;
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err(Kind::EmptyInteger));
        }
        self.pos += 1;
        Ok(n)
    }

    /// The body of `i<digits>e`, after the `i`.
    fn integer(&mut self, term: u8) -> Result<i64, DecodeError> {
        let start = self.pos;
        let negative = self.peek()? == b'-';
        if negative {
            self.pos += 1;
            if self.peek()? == b'0' {
                return Err(DecodeError::new(start, Kind::NegativeZero));
            }
        }
        let magnitude = self.unsigned(term)?;
        if negative {
            // i64::MIN has a magnitude one larger than i64::MAX.
            if magnitude > i64::MAX as u64 + 1 {
                return Err(DecodeError::new(start, Kind::IntegerOverflow));
            }
            Ok((magnitude as i128).wrapping_neg() as i64)
        } else {
            i64::try_from(magnitude).map_err(|_| DecodeError::new(start, Kind::IntegerOverflow))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(input: &[u8]) -> DecodeError {
        decode(input).unwrap_err()
    }

    #[test]
    fn scalars() {
        assert_eq!(decode(b"i42e").unwrap().as_int(), Some(42));
        assert_eq!(decode(b"i-7e").unwrap().as_int(), Some(-7));
        assert_eq!(decode(b"i0e").unwrap().as_int(), Some(0));
        assert_eq!(
            decode(b"i-9223372036854775808e").unwrap().as_int(),
            Some(i64::MIN)
        );
        assert_eq!(
            decode(b"i9223372036854775807e").unwrap().as_int(),
            Some(i64::MAX)
        );
        assert_eq!(decode(b"4:spam").unwrap().as_bytes(), Some(&b"spam"[..]));
        assert_eq!(decode(b"0:").unwrap().as_bytes(), Some(&b""[..]));
    }

    #[test]
    fn spans_are_exact() {
        let input = b"d4:infod6:lengthi5ee3:zzzli1eee";
        let v = decode(input).unwrap();
        let info = v.as_dict().unwrap().get(b"info").unwrap();
        assert_eq!(info.raw(), b"d6:lengthi5ee");
        assert_eq!(info.span(), 7..20);
        let list = v.as_dict().unwrap().get(b"zzz").unwrap();
        assert_eq!(list.as_list().unwrap()[0].raw(), b"i1e");
    }

    #[test]
    fn rejects_non_canonical_integers() {
        assert_eq!(err(b"i03e").kind, Kind::LeadingZero);
        assert_eq!(err(b"i-0e").kind, Kind::NegativeZero);
        assert_eq!(err(b"ie").kind, Kind::EmptyInteger);
        assert_eq!(err(b"i-e").kind, Kind::EmptyInteger);
        assert_eq!(err(b"i1x").kind, Kind::UnexpectedByte(b'x'));
        assert_eq!(err(b"03:abc").kind, Kind::LeadingZero);
        assert_eq!(err(b"i9223372036854775808e").kind, Kind::IntegerOverflow);
        assert_eq!(err(b"i-9223372036854775809e").kind, Kind::IntegerOverflow);
        assert_eq!(
            err(b"i99999999999999999999999e").kind,
            Kind::IntegerOverflow
        );
    }

    #[test]
    fn giant_length_prefix_is_refused_without_allocating() {
        let e = err(b"18446744073709551615:x");
        assert_eq!(
            e,
            DecodeError::new(
                0,
                Kind::LengthBeyondInput {
                    declared: u64::MAX,
                    available: 1
                }
            )
        );
        assert_eq!(
            err(b"99999999999999999999999:x").kind,
            Kind::IntegerOverflow
        );
        assert_eq!(err(b"5:abc").offset, 0);
    }

    #[test]
    fn truncated_inputs() {
        for input in [
            &b""[..],
            b"i",
            b"i12",
            b"l",
            b"li1e",
            b"d",
            b"d3:abc",
            b"4:",
            b"12",
        ] {
            let e = err(input);
            assert!(
                matches!(e.kind, Kind::UnexpectedEnd | Kind::LengthBeyondInput { .. }),
                "{input:?}: {e}"
            );
        }
    }

    #[test]
    fn strict_dictionaries() {
        assert_eq!(
            err(b"d1:bi1e1:ai2ee"),
            DecodeError::new(7, Kind::UnsortedKeys)
        );
        assert_eq!(
            err(b"d1:ai1e1:ai2ee"),
            DecodeError::new(7, Kind::DuplicateKey)
        );
        assert_eq!(err(b"di1ei2ee"), DecodeError::new(1, Kind::KeyNotString));
        let lenient = Decoder::new(b"d1:bi1e1:ai2ee", DecodeOptions::lenient())
            .decode_all()
            .unwrap();
        assert_eq!(
            lenient.as_dict().unwrap().get(b"a").unwrap().as_int(),
            Some(2)
        );
    }

    #[test]
    fn depth_limit() {
        let deep = [vec![b'l'; 100], vec![b'e'; 100]].concat();
        assert_eq!(
            err(&deep),
            DecodeError::new(64, Kind::TooDeep { limit: 64 })
        );
        let ok = [vec![b'l'; 64], vec![b'e'; 64]].concat();
        assert!(decode(&ok).is_ok());
        // A huge nesting must fail fast, not overflow the stack.
        let huge = vec![b'l'; 10_000_000];
        assert_eq!(err(&huge).kind, Kind::TooDeep { limit: 64 });
    }

    #[test]
    fn value_limit() {
        let opts = DecodeOptions {
            max_values: 10,
            ..DecodeOptions::default()
        };
        let mut input = b"l".to_vec();
        for _ in 0..20 {
            input.extend_from_slice(b"i1e");
        }
        input.push(b'e');
        let e = Decoder::new(&input, opts).decode_all().unwrap_err();
        assert_eq!(e.kind, Kind::TooManyValues { limit: 10 });
    }

    #[test]
    fn trailing_bytes() {
        assert_eq!(err(b"i1ei2e"), DecodeError::new(3, Kind::TrailingBytes));
        let (v, used) = decode_prefix(b"d1:ai1eeXYZ").unwrap();
        assert_eq!(used, 8);
        assert_eq!(v.raw(), b"d1:ai1ee");
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            err(b"d1:ai1e1:ai2ee").to_string(),
            "bencode error at byte 7: duplicate dictionary key"
        );
        assert_eq!(
            err(b"100:ab").to_string(),
            "bencode error at byte 0: string declares 100 bytes but only 2 remain"
        );
    }
}
