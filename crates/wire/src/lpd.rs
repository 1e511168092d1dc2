//! Local Service Discovery (BEP 14) messages: HTTP-like announces sent to a
//! multicast group. Parsing is bounded: at most 1400 bytes, a few headers.

use lodestone_core::InfoHash;

pub const GROUP_V4: &str = "239.192.152.143:6771";
pub const GROUP_V6: &str = "[ff15::efc0:988f]:6771";
/// Announces larger than this are not ours to parse (BEP 14 keeps them
/// under the MTU).
pub const MAX_LEN: usize = 1400;
/// Info hashes read from one announce.
pub const MAX_HASHES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub port: u16,
    pub info_hashes: Vec<InfoHash>,
    pub cookie: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LpdError {
    #[error("announce of {0} bytes is too long")]
    TooLong(usize),
    #[error("not a BT-SEARCH announce")]
    NotAnnounce,
    #[error("missing or bad Port header")]
    BadPort,
    #[error("no valid Infohash header")]
    NoInfoHash,
}

impl Announce {
    pub fn encode(&self, host: &str) -> Vec<u8> {
        let mut s = format!(
            "BT-SEARCH * HTTP/1.1\r\nHost: {host}\r\nPort: {}\r\n",
            self.port
        );
        for ih in &self.info_hashes {
            s.push_str(&format!("Infohash: {ih}\r\n"));
        }
        if let Some(c) = &self.cookie {
            s.push_str(&format!("cookie: {c}\r\n"));
        }
        s.push_str("\r\n\r\n");
        s.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, LpdError> {
        if bytes.len() > MAX_LEN {
            return Err(LpdError::TooLong(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| LpdError::NotAnnounce)?;
        let mut lines = text.split("\r\n");
        if lines.next() != Some("BT-SEARCH * HTTP/1.1") {
            return Err(LpdError::NotAnnounce);
        }
        let mut port = None;
        let mut info_hashes = Vec::new();
        let mut cookie = None;
        for line in lines.take(32) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "port" => port = value.parse::<u16>().ok().filter(|&p| p != 0),
                "infohash" if info_hashes.len() < MAX_HASHES => {
                    if let Ok(ih) = value.parse::<InfoHash>() {
                        if value.len() == 40 {
                            info_hashes.push(ih);
                        }
                    }
                }
                "cookie" if value.len() <= 64 => cookie = Some(value.to_owned()),
                _ => {}
            }
        }
        let port = port.ok_or(LpdError::BadPort)?;
        if info_hashes.is_empty() {
            return Err(LpdError::NoInfoHash);
        }
        Ok(Self {
            port,
            info_hashes,
            cookie,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let a = Announce {
            port: 6881,
            info_hashes: vec![InfoHash([0xab; 20]), InfoHash([1; 20])],
            cookie: Some("c00k1e".into()),
        };
        let bytes = a.encode(GROUP_V4);
        assert!(bytes
            .starts_with(b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n"));
        assert_eq!(Announce::decode(&bytes), Ok(a));
    }

    #[test]
    fn libtorrent_style_and_hostile() {
        // libtorrent's form: lowercase cookie, extra headers ignored.
        let lt = b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\nInfohash: 46E9756A2D7332452E3D7726ACE04821E94C2869\r\ncookie: 1a2b\r\nX-Other: y\r\n\r\n\r\n";
        let a = Announce::decode(lt).unwrap();
        assert_eq!(a.port, 6881);
        assert_eq!(
            a.info_hashes[0].to_hex(),
            "46e9756a2d7332452e3d7726ace04821e94c2869"
        );
        assert_eq!(a.cookie.as_deref(), Some("1a2b"));
        assert_eq!(
            Announce::decode(b"GET / HTTP/1.1\r\n\r\n"),
            Err(LpdError::NotAnnounce)
        );
        assert_eq!(
            Announce::decode(b"BT-SEARCH * HTTP/1.1\r\nPort: 0\r\nInfohash: 46e9756a2d7332452e3d7726ace04821e94c2869\r\n\r\n"),
            Err(LpdError::BadPort)
        );
        assert_eq!(
            Announce::decode(b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: zz\r\n\r\n"),
            Err(LpdError::NoInfoHash)
        );
        assert_eq!(
            Announce::decode(&vec![b'x'; 2000]),
            Err(LpdError::TooLong(2000))
        );
        // Base32 (32 chars) is not allowed here: BEP 14 says 40 hex.
        let b32 = format!(
            "BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: {}\r\n\r\n",
            "A".repeat(32)
        );
        assert_eq!(Announce::decode(b32.as_bytes()), Err(LpdError::NoInfoHash));
    }
}
