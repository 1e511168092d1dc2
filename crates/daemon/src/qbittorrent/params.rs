//! A request's parameters, as qBittorrent reads them: the query string,
//! then the body, urlencoded or multipart (`multipart/form-data`, where a
//! part with a file name is an uploaded file). Pure and bounded: hostile
//! bytes give an error or fewer parameters, never a panic.
//!
//! The multipart parser is our own (some 80 lines) rather than `multer`:
//! the body is already in memory (the server caps it at 64 MiB), so a
//! streaming parser buys nothing, and a small synchronous one is easy to
//! fuzz and to bound.

/// More fields than this in one request: refused.
pub const MAX_FIELDS: usize = 1024;
/// More uploaded files than this in one request: refused.
pub const MAX_FILES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("more than {MAX_FIELDS} parameters")]
    TooManyFields,
    #[error("more than {MAX_FILES} files")]
    TooManyFiles,
    #[error("multipart body without a boundary")]
    NoBoundary,
    #[error("multipart body cut short")]
    Truncated,
    #[error("multipart part without a name")]
    Unnamed,
}

/// An uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub filename: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    fields: Vec<(String, String)>,
    pub files: Vec<Upload>,
}

impl Params {
    /// The parameters of a request: its query, then its body as its
    /// Content-Type says (a body of another type is not read).
    pub fn parse(
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Self, ParamsError> {
        let mut p = Params::default();
        if let Some(q) = query {
            p.urlencoded(q.as_bytes())?;
        }
        let ct = content_type.unwrap_or("");
        let media = ct.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("multipart/form-data") {
            let boundary = boundary(ct).ok_or(ParamsError::NoBoundary)?;
            p.multipart(boundary.as_bytes(), body)?;
        } else if media.eq_ignore_ascii_case("application/x-www-form-urlencoded")
            || (media.is_empty() && !body.is_empty())
        {
            p.urlencoded(body)?;
        }
        Ok(p)
    }

    fn push(&mut self, name: String, value: String) -> Result<(), ParamsError> {
        if self.fields.len() >= MAX_FIELDS {
            return Err(ParamsError::TooManyFields);
        }
        self.fields.push((name, value));
        Ok(())
    }

    fn urlencoded(&mut self, bytes: &[u8]) -> Result<(), ParamsError> {
        for (k, v) in form_urlencoded::parse(bytes) {
            self.push(k.into_owned(), v.into_owned())?;
        }
        Ok(())
    }

    fn multipart(&mut self, boundary: &[u8], body: &[u8]) -> Result<(), ParamsError> {
        let mut delim = Vec::with_capacity(boundary.len() + 2);
        delim.extend_from_slice(b"--");
        delim.extend_from_slice(boundary);
        // The preamble runs to the first delimiter.
        let mut at = find(body, &delim).ok_or(ParamsError::Truncated)? + delim.len();
        let mut next_delim = Vec::with_capacity(delim.len() + 2);
        next_delim.extend_from_slice(b"\r\n");
        next_delim.extend_from_slice(&delim);
        loop {
            let rest = &body[at..];
            if rest.starts_with(b"--") {
                return Ok(());
            }
            // Anything up to the line's end (transport padding), then CRLF.
            let eol = find(rest, b"\r\n").ok_or(ParamsError::Truncated)?;
            let part_start = at + eol + 2;
            let part = &body[part_start..];
            let head_end = find(part, b"\r\n\r\n")
                .map(|i| (i, i + 4))
                .or_else(|| part.starts_with(b"\r\n").then_some((0, 2)))
                .ok_or(ParamsError::Truncated)?;
            let headers = &part[..head_end.0];
            let content = &part[head_end.1..];
            let end = find(content, &next_delim).ok_or(ParamsError::Truncated)?;
            let value = &content[..end];
            let (name, filename) = disposition(headers);
            match (name, filename) {
                (_, Some(filename)) => {
                    if self.files.len() >= MAX_FILES {
                        return Err(ParamsError::TooManyFiles);
                    }
                    self.files.push(Upload {
                        filename,
                        bytes: value.to_vec(),
                    });
                }
                (Some(name), None) => {
                    self.push(name, String::from_utf8_lossy(value).into_owned())?;
                }
                (None, None) => return Err(ParamsError::Unnamed),
            }
            at = part_start + head_end.1 + end + next_delim.len();
        }
    }

    /// The value of `name` (the last one given wins, as in qBittorrent's map).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every field, in order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A boolean as qBittorrent's `parseBool`: `true`/`false`, any case.
    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name)?.trim() {
            v if v.eq_ignore_ascii_case("true") => Some(true),
            v if v.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name)?.trim().parse().ok()
    }

    pub fn float(&self, name: &str) -> Option<f64> {
        self.get(name)?
            .trim()
            .parse()
            .ok()
            .filter(|f: &f64| f.is_finite())
    }
}

/// The `boundary` parameter of a multipart Content-Type.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        // RFC 2046: 1 to 70 characters.
        (!v.is_empty() && v.len() <= 70).then(|| v.to_owned())
    })
}

/// `name` and `filename` of a part's Content-Disposition.
fn disposition(headers: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(headers);
    let mut name = None;
    let mut filename = None;
    for line in text.split("\r\n") {
        let Some((h, v)) = line.split_once(':') else {
            continue;
        };
        if !h.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        for param in split_params(v) {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            let v = unquote(v.trim());
            match k.trim().to_ascii_lowercase().as_str() {
                "name" => name = Some(v),
                "filename" => filename = Some(v),
                _ => {}
            }
        }
    }
    (name, filename)
}

/// `;`-separated parameters, a `;` inside quotes kept.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_owned(),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_urlencoded_body() {
        let p = Params::parse(
            Some("hash=abc&x=1"),
            Some("application/x-www-form-urlencoded"),
            b"urls=magnet%3A%3Fxt%3Durn&category=tv+sonarr",
        )
        .unwrap();
        assert_eq!(p.get("hash"), Some("abc"));
        assert_eq!(p.get("urls"), Some("magnet:?xt=urn"));
        assert_eq!(p.get("category"), Some("tv sonarr"));
        assert_eq!(p.int("x"), Some(1));
    }

    #[test]
    fn multipart_fields_and_files() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"category\"\r\n\r\ntv\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"torrents\"; filename=\"a;b.torrent\"\r\n\
Content-Type: application/x-bittorrent\r\n\r\nd4:infoe\r\n\r\n--XyZ--\r\n";
        let p = Params::parse(None, Some("multipart/form-data; boundary=XyZ"), body).unwrap();
        assert_eq!(p.get("category"), Some("tv"));
        assert_eq!(p.files.len(), 1);
        assert_eq!(p.files[0].filename, "a;b.torrent");
        assert_eq!(p.files[0].bytes, b"d4:infoe\r\n");
    }

    #[test]
    fn hostile_multipart_is_an_error() {
        for body in [&b""[..], b"--B", b"--B\r\n", b"--B\r\nx\r\n\r\nvalue"] {
            assert!(Params::parse(None, Some("multipart/form-data; boundary=B"), body).is_err());
        }
        assert_eq!(
            Params::parse(None, Some("multipart/form-data"), b"x"),
            Err(ParamsError::NoBoundary)
        );
    }

    #[test]
    fn fields_are_bounded() {
        let body = "a=1&".repeat(MAX_FIELDS + 1);
        assert_eq!(
            Params::parse(
                None,
                Some("application/x-www-form-urlencoded"),
                body.as_bytes()
            ),
            Err(ParamsError::TooManyFields)
        );
    }
}
