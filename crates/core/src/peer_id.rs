use std::fmt;

/// A peer's 20-byte id from the handshake.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(pub [u8; 20]);

impl PeerId {
    /// Azureus-style id: `-LS0100-` then 12 bytes from `random`
    /// (the caller's seeded generator; no global randomness here).
    pub fn generate(random: [u8; 12]) -> Self {
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(b"-LS0100-");
        // Printable, as most clients' ids are.
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        for (dst, r) in id[8..].iter_mut().zip(random) {
            *dst = ALPHABET[usize::from(r) % ALPHABET.len()];
        }
        Self(id)
    }

    /// A readable name of the client, from the common id conventions.
    pub fn client_hint(&self) -> String {
        let id = &self.0;
        if id[0] == b'-' && id[7] == b'-' && id[1..7].iter().all(u8::is_ascii_alphanumeric) {
            String::from_utf8_lossy(&id[1..7]).into_owned()
        } else if let Some(v) = id.strip_prefix(b"A2-").and_then(dashed_version) {
            format!("aria2/{v}")
        } else {
            crate::encoding::to_hex(&id[..4])
        }
    }
}

/// `1-36-0-...` → `1.36.0`: up to three dash-separated numbers at the
/// start (aria2's and Mainline's convention), or `None`.
fn dashed_version(rest: &[u8]) -> Option<String> {
    let parts: Vec<&[u8]> = rest
        .split(|&b| b == b'-')
        .take(3)
        .take_while(|p| !p.is_empty() && p.len() <= 3 && p.iter().all(u8::is_ascii_digit))
        .collect();
    if parts.is_empty() {
        return None;
    }
    let parts: Vec<String> = parts
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    Some(parts.join("."))
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PeerId({})",
            String::from_utf8_lossy(&self.0).escape_debug()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids() {
        let id = PeerId::generate([200; 12]);
        assert!(id.0.starts_with(b"-LS0100-"));
        assert!(id.0.iter().all(u8::is_ascii_graphic));
        assert_eq!(id.client_hint(), "LS0100");
    }

    #[test]
    fn client_hints() {
        let mut id = [b'x'; 20];
        id[..10].copy_from_slice(b"A2-1-36-0-");
        assert_eq!(PeerId(id).client_hint(), "aria2/1.36.0");
        id[..8].copy_from_slice(b"-TR3000-");
        assert_eq!(PeerId(id).client_hint(), "TR3000");
        assert_eq!(PeerId([0xab; 20]).client_hint(), "abababab");
    }
}
