//! Peers announced to us (BEP 5 announce_peer), bounded in every direction:
//! how many torrents, peers per torrent, and how long a peer stays (30 min).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lodestone_core::InfoHash;
use sha1::{Digest, Sha1};

pub const PEER_TTL: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub max_torrents: usize,
    pub max_peers_per_torrent: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_torrents: 2000,
            max_peers_per_torrent: 200,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Stored {
    addr: SocketAddr,
    seed: bool,
    expires: Instant,
}

#[derive(Debug, Default)]
pub struct PeerStore {
    limits: StoreLimits,
    // Ordered, so eviction and sampling replay exactly in the simulator.
    torrents: BTreeMap<InfoHash, Vec<Stored>>,
}

impl PeerStore {
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            torrents: BTreeMap::new(),
        }
    }

    pub fn num_torrents(&self) -> usize {
        self.torrents.len()
    }

    pub fn announce(&mut self, ih: InfoHash, addr: SocketAddr, seed: bool, now: Instant) {
        if !self.torrents.contains_key(&ih) && self.torrents.len() >= self.limits.max_torrents {
            self.expire(now);
            if self.torrents.len() >= self.limits.max_torrents {
                // Drop the torrent whose freshest peer is oldest.
                let victim = self
                    .torrents
                    .iter()
                    .min_by_key(|(_, ps)| ps.iter().map(|p| p.expires).max())
                    .map(|(k, _)| *k);
                if let Some(v) = victim {
                    self.torrents.remove(&v);
                }
            }
        }
        let peers = self.torrents.entry(ih).or_default();
        let expires = now + PEER_TTL;
        if let Some(p) = peers.iter_mut().find(|p| p.addr == addr) {
            p.expires = expires;
            p.seed = seed;
            return;
        }
        if peers.len() >= self.limits.max_peers_per_torrent {
            if let Some((i, _)) = peers.iter().enumerate().min_by_key(|(_, p)| p.expires) {
                peers.swap_remove(i);
            }
        }
        peers.push(Stored {
            addr,
            seed,
            expires,
        });
    }

    /// Up to `max` live peers of `ih`, of the family of `v6`, picked with
    /// the caller's random `start` so repeated queries see different peers.
    pub fn peers(
        &self,
        ih: &InfoHash,
        max: usize,
        v6: bool,
        now: Instant,
        start: usize,
    ) -> Vec<SocketAddr> {
        let Some(peers) = self.torrents.get(ih) else {
            return Vec::new();
        };
        let live: Vec<SocketAddr> = peers
            .iter()
            .filter(|p| p.expires > now && p.addr.is_ipv6() == v6)
            .map(|p| p.addr)
            .collect();
        if live.is_empty() {
            return live;
        }
        let n = live.len();
        (0..n.min(max)).map(|i| live[(start + i) % n]).collect()
    }

    /// BEP 33 bloom filters of the seeds and the downloaders of `ih`.
    pub fn scrape(&self, ih: &InfoHash, now: Instant) -> Option<([u8; 256], [u8; 256])> {
        let peers = self.torrents.get(ih)?;
        let (mut seeds, mut downloaders) = ([0u8; 256], [0u8; 256]);
        for p in peers.iter().filter(|p| p.expires > now) {
            bloom_insert(
                if p.seed { &mut seeds } else { &mut downloaders },
                p.addr.ip(),
            );
        }
        Some((seeds, downloaders))
    }

    /// Up to `n` stored info hashes, starting at a caller-chosen offset
    /// (BEP 51 sample_infohashes).
    pub fn sample(&self, n: usize, start: usize) -> Vec<InfoHash> {
        let len = self.torrents.len();
        if len == 0 {
            return Vec::new();
        }
        let skip = start % len;
        self.torrents
            .keys()
            .cycle()
            .skip(skip)
            .take(n.min(len))
            .copied()
            .collect()
    }

    pub fn expire(&mut self, now: Instant) {
        self.torrents.retain(|_, ps| {
            ps.retain(|p| p.expires > now);
            !ps.is_empty()
        });
    }
}

/// BEP 33: two 11-bit indices from the SHA-1 of the IP.
pub fn bloom_insert(bloom: &mut [u8; 256], ip: IpAddr) {
    let h = match ip {
        IpAddr::V4(a) => Sha1::digest(a.octets()),
        IpAddr::V6(a) => Sha1::digest(a.octets()),
    };
    for idx in [
        usize::from(h[0]) | usize::from(h[1]) << 8,
        usize::from(h[2]) | usize::from(h[3]) << 8,
    ] {
        let bit = idx % 2048;
        bloom[bit / 8] |= 1 << (bit % 8);
    }
}

/// BEP 33 size estimate from a bloom filter.
pub fn bloom_estimate(bloom: &[u8; 256]) -> f64 {
    let zeros = bloom.iter().map(|b| b.count_zeros()).sum::<u32>().min(2047) as f64;
    let m = 2048.0f64;
    let k = 2.0f64;
    (zeros / m).ln() / (k * (1.0 - 1.0 / m).ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 6881))
    }

    #[test]
    fn bounded_and_expiring() {
        let t0 = Instant::now();
        let mut s = PeerStore::new(StoreLimits {
            max_torrents: 2,
            max_peers_per_torrent: 3,
        });
        let ih = InfoHash([1; 20]);
        for i in 0..10 {
            s.announce(ih, a(i), false, t0);
        }
        assert_eq!(s.peers(&ih, 100, false, t0, 0).len(), 3);
        s.announce(InfoHash([2; 20]), a(1), true, t0);
        s.announce(InfoHash([3; 20]), a(1), true, t0 + Duration::from_secs(1));
        assert_eq!(s.num_torrents(), 2);
        assert!(s.peers(&ih, 10, false, t0 + PEER_TTL, 0).is_empty());
        s.expire(t0 + PEER_TTL + Duration::from_secs(5));
        assert_eq!(s.num_torrents(), 0);
    }

    #[test]
    fn bep33_test_vector() {
        let mut bloom = [0u8; 256];
        for i in 0..=255u8 {
            bloom_insert(&mut bloom, IpAddr::from([192, 0, 2, i]));
        }
        for i in 0..=0x3e7u16 {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            o[14..].copy_from_slice(&i.to_be_bytes());
            bloom_insert(&mut bloom, IpAddr::from(o));
        }
        let want = "F6C3F5EAA07FFD91BDE89F777F26FB2BFF37BDB8FB2BBAA2FD3DDDE7BACFFF75EE7CCBAE\
                    FE5EEDB1FBFAFF67F6ABFF5E43DDBCA3FD9B9FFDF4FFD3E9DFF12D1BDF59DB53DBE9FA5B\
                    7FF3B8FDFCDE1AFB8BEDD7BE2F3EE71EBBBFE93BCDEEFE148246C2BC5DBFF7E7EFDCF24F\
                    D8DC7ADFFD8FFFDFDDFFF7A4BBEEDF5CB95CE81FC7FCFF1FF4FFFFDFE5F7FDCBB7FD79B3\
                    FA1FC77BFE07FFF905B7B7FFC7FEFEFFE0B8370BB0CD3F5B7F2BD93FEB4386CFDD6F7FD5\
                    BFAF2E9EBFFFFEECD67ADBF7C67F17EFD5D75EBA6FFEBA7FFF47A91EB1BFBB53E8ABFB57\
                    62ABE8FF237279BFEFBFEEF5FFC5FEBFDFE5ADFFADFEE1FB737FFFFBFD9F6AEFFEEE76B6\
                    FD8F72EF";
        let got: String = bloom.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(got, want.replace(' ', ""));
        let est = bloom_estimate(&bloom);
        assert!((est - 1224.9308).abs() < 0.001, "{est}");
    }
}
