//! announce_peer / put tokens (BEP 5): a hash of the querier's IP and a
//! secret that rotates every 5 minutes; the previous secret is still
//! accepted, so a token is good for 5 to 10 minutes.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

pub const ROTATE_EVERY: Duration = Duration::from_secs(5 * 60);
pub const TOKEN_LEN: usize = 8;

#[derive(Debug, Clone)]
pub struct Tokens {
    current: [u8; 16],
    previous: [u8; 16],
    rotated_at: Instant,
}

impl Tokens {
    pub fn new(secret: [u8; 16], now: Instant) -> Self {
        Self {
            current: secret,
            previous: secret,
            rotated_at: now,
        }
    }

    /// Rotate if due; `fresh` is new secret material from the node's seeded generator.
    pub fn maybe_rotate(&mut self, now: Instant, fresh: [u8; 16]) -> bool {
        if now.saturating_duration_since(self.rotated_at) < ROTATE_EVERY {
            return false;
        }
        self.previous = self.current;
        self.current = fresh;
        self.rotated_at = now;
        true
    }

    pub fn next_rotation(&self) -> Instant {
        self.rotated_at + ROTATE_EVERY
    }

    fn make(secret: &[u8; 16], ip: IpAddr) -> [u8; TOKEN_LEN] {
        let mut h = Sha1::new();
        h.update(secret);
        match ip {
            IpAddr::V4(a) => h.update(a.octets()),
            IpAddr::V6(a) => h.update(a.octets()),
        }
        let d = h.finalize();
        let mut t = [0u8; TOKEN_LEN];
        t.copy_from_slice(&d[..TOKEN_LEN]);
        t
    }

    pub fn token_for(&self, ip: IpAddr) -> [u8; TOKEN_LEN] {
        Self::make(&self.current, ip)
    }

    /// A token is valid only for the IP it was given to.
    pub fn verify(&self, ip: IpAddr, token: &[u8]) -> bool {
        token == Self::make(&self.current, ip) || token == Self::make(&self.previous, ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_for_two_periods_and_one_ip() {
        let t0 = Instant::now();
        let mut t = Tokens::new([1; 16], t0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let tok = t.token_for(ip);
        assert!(t.verify(ip, &tok));
        assert!(!t.verify(other, &tok), "a token for another IP");
        assert!(!t.maybe_rotate(t0 + Duration::from_secs(10), [2; 16]));
        assert!(t.maybe_rotate(t0 + ROTATE_EVERY, [2; 16]));
        assert!(t.verify(ip, &tok), "previous secret still accepted");
        assert!(t.maybe_rotate(t0 + ROTATE_EVERY * 2, [3; 16]));
        assert!(!t.verify(ip, &tok), "expired after two rotations");
        assert!(!t.verify(ip, b"short"));
    }
}
