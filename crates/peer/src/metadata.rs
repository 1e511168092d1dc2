//! The metadata assembler (BEP 9): the info dictionary of a magnet link,
//! fetched 16 KiB at a time from several peers at once, verified against
//! the info hash, with the peer that lied found and banned.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lodestone_core::InfoHashes;
use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::picker::PeerKey;

/// Metadata travels in pieces of this size (the last one shorter).
pub const PIECE: usize = 16 * 1024;
/// Default cap on the info dictionary: larger claims are refused.
pub const DEFAULT_MAX_SIZE: u32 = 32 << 20;

/// Bytes of ut_metadata piece `piece` of `info` (to serve others); `None`
/// past its end.
pub fn piece_of(info: &[u8], piece: u32) -> Option<bytes::Bytes> {
    let start = (piece as usize).checked_mul(PIECE)?;
    if start >= info.len() {
        return None;
    }
    let end = (start + PIECE).min(info.len());
    Some(bytes::Bytes::copy_from_slice(&info[start..end]))
}

/// A request not answered in this time may go to another peer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("peer claims metadata of {size} bytes, more than the {max}-byte limit")]
    TooLarge { size: u64, max: u32 },
    #[error("peer claims metadata of 0 bytes")]
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored; more pieces to come.
    Stored,
    /// Not something we asked this peer for (or a wrong size): ignored.
    Ignored,
    /// Every piece is here and the hash matches: the raw info dictionary,
    /// and any peers whose pieces in an earlier failed attempt differ from
    /// the good copy (they lied).
    Complete { info: Vec<u8>, liars: Vec<PeerKey> },
    /// Every piece is here but the hash does not match. Everything is
    /// dropped and fetched again; `liars` are peers proven to have sent bad
    /// data (a single sender, or a piece that differs from the good copy).
    Mismatch { liars: Vec<PeerKey> },
}

#[derive(Debug, Clone, Default)]
struct Slot {
    data: Option<(Vec<u8>, PeerKey)>,
    requested: Option<(PeerKey, Instant)>,
}

#[derive(Debug, Clone)]
pub struct MetadataAssembler {
    hashes: InfoHashes,
    max_size: u32,
    size: Option<u32>,
    slots: Vec<Slot>,
    /// Pieces of a failed attempt, kept to convict the liar later.
    suspects: Vec<(usize, Vec<u8>, PeerKey)>,
    /// Peers that told us a size different from the one we use.
    peer_sizes: BTreeMap<PeerKey, u32>,
}

impl MetadataAssembler {
    pub fn new(hashes: InfoHashes, max_size: u32) -> Self {
        Self {
            hashes,
            max_size,
            size: None,
            slots: Vec::new(),
            suspects: Vec::new(),
            peer_sizes: BTreeMap::new(),
        }
    }

    pub fn size(&self) -> Option<u32> {
        self.size
    }

    pub fn num_pieces(&self) -> usize {
        self.slots.len()
    }

    pub fn pieces_done(&self) -> usize {
        self.slots.iter().filter(|s| s.data.is_some()).count()
    }

    /// A peer's extension handshake said `metadata_size`. The first valid
    /// size is used; a peer claiming another size is not asked.
    pub fn peer_size(&mut self, peer: PeerKey, size: u64) -> Result<(), MetadataError> {
        if size == 0 {
            return Err(MetadataError::Empty);
        }
        let size = u32::try_from(size)
            .ok()
            .filter(|&s| s <= self.max_size)
            .ok_or(MetadataError::TooLarge {
                size,
                max: self.max_size,
            })?;
        self.peer_sizes.insert(peer, size);
        if self.size.is_none() {
            self.size = Some(size);
            self.slots = vec![Slot::default(); (size as usize).div_ceil(PIECE)];
        }
        Ok(())
    }

    /// Peers that can be asked (they told the size we use).
    pub fn usable_peers(&self) -> usize {
        self.peer_sizes
            .values()
            .filter(|s| Some(**s) == self.size)
            .count()
    }

    fn usable(&self, peer: PeerKey) -> bool {
        self.size.is_some() && self.peer_sizes.get(&peer) == self.size.as_ref()
    }

    fn piece_len(&self, piece: usize) -> usize {
        let size = self.size.unwrap_or(0) as usize;
        (size - piece * PIECE).min(PIECE)
    }

    /// The next piece to ask `peer` for, if any (none in flight to others,
    /// or theirs timed out). Marks it requested.
    pub fn next_request(&mut self, peer: PeerKey, now: Instant) -> Option<u32> {
        if !self.usable(peer) {
            return None;
        }
        let pos = self.slots.iter().position(|s| {
            s.data.is_none()
                && s.requested.is_none_or(|(p, t)| {
                    p != peer && now.saturating_duration_since(t) >= REQUEST_TIMEOUT
                })
        })?;
        self.slots[pos].requested = Some((peer, now));
        u32::try_from(pos).ok()
    }

    /// Pieces currently asked of `peer`.
    pub fn in_flight(&self, peer: PeerKey) -> usize {
        self.slots
            .iter()
            .filter(|s| s.data.is_none() && s.requested.is_some_and(|(p, _)| p == peer))
            .count()
    }

    pub fn on_reject(&mut self, peer: PeerKey, piece: u32) {
        if let Some(s) = self.slots.get_mut(piece as usize) {
            if s.requested.is_some_and(|(p, _)| p == peer) {
                s.requested = None;
            }
        }
    }

    pub fn peer_gone(&mut self, peer: PeerKey) {
        for s in &mut self.slots {
            if s.requested.is_some_and(|(p, _)| p == peer) {
                s.requested = None;
            }
        }
        self.peer_sizes.remove(&peer);
    }

    pub fn on_data(&mut self, peer: PeerKey, piece: u32, total_size: u64, data: &[u8]) -> Outcome {
        let idx = piece as usize;
        let asked = self
            .slots
            .get(idx)
            .is_some_and(|s| s.data.is_none() && s.requested.is_some_and(|(p, _)| p == peer));
        if !asked
            || Some(total_size) != self.size.map(u64::from)
            || data.len() != self.piece_len(idx)
        {
            return Outcome::Ignored;
        }
        self.slots[idx].data = Some((data.to_vec(), peer));
        if self.slots.iter().any(|s| s.data.is_none()) {
            return Outcome::Stored;
        }
        let mut info = Vec::with_capacity(self.size.unwrap_or(0) as usize);
        for s in &self.slots {
            if let Some((d, _)) = &s.data {
                info.extend_from_slice(d);
            }
        }
        if self.matches(&info) {
            // Any earlier failed piece that differs from the good one lied.
            let mut liars: Vec<PeerKey> = self
                .suspects
                .iter()
                .filter(|(i, d, _)| info.get(i * PIECE..i * PIECE + d.len()) != Some(&d[..]))
                .map(|(_, _, p)| *p)
                .collect();
            liars.sort();
            liars.dedup();
            self.suspects.clear();
            return Outcome::Complete { info, liars };
        }
        let senders: Vec<PeerKey> = {
            let mut v: Vec<PeerKey> = self
                .slots
                .iter()
                .filter_map(|s| s.data.as_ref().map(|(_, p)| *p))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        for (i, s) in self.slots.iter_mut().enumerate() {
            if let Some((d, p)) = s.data.take() {
                self.suspects.push((i, d, p));
            }
            s.requested = None;
        }
        let liars = if senders.len() == 1 {
            senders
        } else {
            Vec::new()
        };
        Outcome::Mismatch { liars }
    }

    fn matches(&self, info: &[u8]) -> bool {
        let v1 = self
            .hashes
            .v1()
            .is_none_or(|h| <[u8; 20]>::from(Sha1::digest(info)) == h.0);
        let v2 = self
            .hashes
            .v2()
            .is_none_or(|h| <[u8; 32]>::from(Sha256::digest(info)) == h.0);
        v1 && v2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestone_core::InfoHash;

    fn info(len: usize) -> (Vec<u8>, InfoHashes) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let h = InfoHash(Sha1::digest(&data).into());
        (data, InfoHashes::V1(h))
    }

    #[test]
    fn assembles_from_several_peers() {
        let t = Instant::now();
        let (data, hashes) = info(40_000);
        let mut m = MetadataAssembler::new(hashes, DEFAULT_MAX_SIZE);
        let (a, b) = (PeerKey(1), PeerKey(2));
        m.peer_size(a, 40_000).unwrap();
        m.peer_size(b, 40_000).unwrap();
        assert_eq!(m.num_pieces(), 3);
        let pa = m.next_request(a, t).unwrap();
        let pb = m.next_request(b, t).unwrap();
        let pa2 = m.next_request(a, t).unwrap();
        assert_eq!((pa, pb, pa2), (0, 1, 2));
        assert_eq!(m.next_request(b, t), None, "everything is asked");
        let chunk = |p: u32| &data[p as usize * PIECE..((p as usize + 1) * PIECE).min(data.len())];
        assert_eq!(m.on_data(a, pa, 40_000, chunk(pa)), Outcome::Stored);
        // Data for a piece we asked of someone else is ignored.
        assert_eq!(m.on_data(a, pb, 40_000, chunk(pb)), Outcome::Ignored);
        assert_eq!(m.on_data(b, pb, 40_000, chunk(pb)), Outcome::Stored);
        match m.on_data(a, pa2, 40_000, chunk(pa2)) {
            Outcome::Complete { info, liars } => {
                assert_eq!(info, data);
                assert!(liars.is_empty());
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn refuses_huge_or_empty_sizes() {
        let (_, hashes) = info(10);
        let mut m = MetadataAssembler::new(hashes, DEFAULT_MAX_SIZE);
        assert_eq!(
            m.peer_size(PeerKey(1), 4 << 30),
            Err(MetadataError::TooLarge {
                size: 4 << 30,
                max: DEFAULT_MAX_SIZE
            })
        );
        assert_eq!(m.peer_size(PeerKey(1), 0), Err(MetadataError::Empty));
        assert_eq!(m.num_pieces(), 0, "nothing allocated for a refused size");
    }

    #[test]
    fn a_lying_peer_is_found_and_the_data_fetched_again() {
        let t = Instant::now();
        let (data, hashes) = info(20_000);
        let mut m = MetadataAssembler::new(hashes, DEFAULT_MAX_SIZE);
        let (liar, honest) = (PeerKey(1), PeerKey(2));
        m.peer_size(liar, 20_000).unwrap();
        m.peer_size(honest, 20_000).unwrap();
        let p0 = m.next_request(liar, t).unwrap();
        let p1 = m.next_request(honest, t).unwrap();
        let bad = vec![0u8; PIECE];
        assert_eq!(m.on_data(liar, p0, 20_000, &bad), Outcome::Stored);
        let good1 = &data[PIECE..];
        // Two senders: the mismatch alone cannot say who lied.
        assert_eq!(
            m.on_data(honest, p1, 20_000, good1),
            Outcome::Mismatch { liars: vec![] }
        );
        assert_eq!(m.pieces_done(), 0);
        // Fetched again, all from the honest peer: complete, and the liar named.
        let q0 = m.next_request(honest, t).unwrap();
        let q1 = m.next_request(honest, t).unwrap();
        assert_eq!(
            m.on_data(honest, q0, 20_000, &data[..PIECE]),
            Outcome::Stored
        );
        match m.on_data(honest, q1, 20_000, good1) {
            Outcome::Complete { info, liars } => {
                assert_eq!(info, data);
                assert_eq!(liars, vec![liar]);
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn single_sender_of_bad_metadata_is_named_at_once() {
        let t = Instant::now();
        let (_, hashes) = info(100);
        let mut m = MetadataAssembler::new(hashes, DEFAULT_MAX_SIZE);
        m.peer_size(PeerKey(3), 100).unwrap();
        let p = m.next_request(PeerKey(3), t).unwrap();
        assert_eq!(
            m.on_data(PeerKey(3), p, 100, &[1u8; 100]),
            Outcome::Mismatch {
                liars: vec![PeerKey(3)]
            }
        );
        // Wrong total size or length is ignored, not stored.
        let p = m.next_request(PeerKey(3), t).unwrap();
        assert_eq!(m.on_data(PeerKey(3), p, 101, &[1u8; 100]), Outcome::Ignored);
        assert_eq!(m.on_data(PeerKey(3), p, 100, &[1u8; 99]), Outcome::Ignored);
    }

    #[test]
    fn timed_out_requests_go_to_another_peer() {
        let t = Instant::now();
        let (_, hashes) = info(100);
        let mut m = MetadataAssembler::new(hashes, DEFAULT_MAX_SIZE);
        m.peer_size(PeerKey(1), 100).unwrap();
        m.peer_size(PeerKey(2), 100).unwrap();
        assert_eq!(m.next_request(PeerKey(1), t), Some(0));
        assert_eq!(m.next_request(PeerKey(2), t), None);
        assert_eq!(m.next_request(PeerKey(2), t + REQUEST_TIMEOUT), Some(0));
        m.peer_gone(PeerKey(2));
        assert_eq!(m.next_request(PeerKey(1), t + REQUEST_TIMEOUT), Some(0));
    }
}
