use std::ops::Range;

/// A decoded value borrowing from the input, with the span it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value<'a> {
    kind: ValueKind<'a>,
    raw: &'a [u8],
    span: Range<usize>,
}

/// The four bencode types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueKind<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    Dict(Dict<'a>),
}

/// A dictionary in input order (which strict decoding guarantees is sorted).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dict<'a> {
    entries: Vec<(&'a [u8], Value<'a>)>,
}

impl<'a> Value<'a> {
    pub(crate) fn new(kind: ValueKind<'a>, raw: &'a [u8], span: Range<usize>) -> Self {
        Self { kind, raw, span }
    }

    pub fn kind(&self) -> &ValueKind<'a> {
        &self.kind
    }

    pub fn into_kind(self) -> ValueKind<'a> {
        self.kind
    }

    /// The exact bytes this value was decoded from.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Where [`Value::raw`] lies in the input given to the decoder.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    pub fn as_int(&self) -> Option<i64> {
        match self.kind {
            ValueKind::Int(i) => Some(i),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self.kind {
            ValueKind::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The string as UTF-8, if it is a byte string holding valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match &self.kind {
            ValueKind::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&Dict<'a>> {
        match &self.kind {
            ValueKind::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// A short name of the type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            ValueKind::Int(_) => "integer",
            ValueKind::Bytes(_) => "string",
            ValueKind::List(_) => "list",
            ValueKind::Dict(_) => "dictionary",
        }
    }
}

impl<'a> Dict<'a> {
    pub(crate) fn from_entries(entries: Vec<(&'a [u8], Value<'a>)>) -> Self {
        Self { entries }
    }

    /// The value for `key`. With lenient decoding and a duplicated key, the first wins.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &Value<'a>)> {
        self.entries.iter().map(|(k, v)| (*k, v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
