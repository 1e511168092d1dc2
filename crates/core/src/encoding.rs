//! Hex, base32 (RFC 4648, as used by btih) and URI percent-encoding.

const HEX: &[u8; 16] = b"0123456789abcdef";

pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decode hex of exactly `N` bytes (either case).
pub fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(out)
}

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

pub fn to_base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = buf << 8 | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(B32[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(B32[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decode unpadded base32 of exactly `N` bytes (either case). Leftover bits must be zero.
pub fn from_base32<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != (N * 8).div_ceil(5) {
        return None;
    }
    let mut out = [0u8; N];
    let (mut buf, mut bits, mut n) = (0u32, 0u32, 0usize);
    for c in s.bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buf = (buf << 5 | u32::from(v)) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (buf >> bits) as u8;
            n += 1;
        }
    }
    if n != N || buf & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

/// Percent-decode a URI component; `+` means space (as in form encoding,
/// which magnet links found in the wild use for `dn`).
pub fn percent_decode(s: &str) -> Result<Vec<u8>, usize> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex_digit).ok_or(i)?;
                let lo = b.get(i + 2).copied().and_then(hex_digit).ok_or(i)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Percent-encode everything but RFC 3986 unreserved characters, plus
/// `keep` (e.g. `:/` for readable URLs).
pub fn percent_encode(bytes: &[u8], keep: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &c in bytes {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) || keep.contains(&c) {
            s.push(c as char);
        } else {
            s.push('%');
            s.push(HEX[usize::from(c >> 4)].to_ascii_uppercase() as char);
            s.push(HEX[usize::from(c & 0xf)].to_ascii_uppercase() as char);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&b), "0001abff");
        assert_eq!(from_hex::<4>("0001ABff"), Some(b));
        assert_eq!(from_hex::<4>("0001abf"), None);
        assert_eq!(from_hex::<4>("0001abfg"), None);
    }

    #[test]
    fn base32_rfc4648_vectors() {
        // RFC 4648 section 10, without padding.
        assert_eq!(to_base32(b"fooba"), "MZXW6YTB");
        assert_eq!(to_base32(b"f"), "MY");
        assert_eq!(from_base32::<5>("mzxw6ytb"), Some(*b"fooba"));
        let h = [0x5au8; 20];
        assert_eq!(from_base32::<20>(&to_base32(&h)), Some(h));
        assert_eq!(to_base32(&h).len(), 32);
        assert_eq!(from_base32::<20>("1ZXW6YTBMZXW6YTBMZXW6YTBMZXW6YTB"), None);
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode("a%20b+c%2f").unwrap(), b"a b c/");
        assert_eq!(percent_decode("a%2"), Err(1));
        assert_eq!(percent_decode("%zz"), Err(0));
        assert_eq!(percent_encode(b"a b/:&", b":/"), "a%20b/:%26");
    }
}
