//! Pieces being received, and the smart ban: blocks of a piece that failed
//! its hash are remembered by digest until the piece passes, and the peers
//! whose blocks differ from the good ones are the liars.

use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use lodestone_peer::picker::BLOCK_SIZE;
use sha1::{Digest, Sha1};

/// A piece being received: its blocks as slices of the buffers they were
/// read into (no copy into a piece buffer; they are hashed and written
/// from there).
#[derive(Debug)]
pub struct PieceBuf {
    /// Block `i` starts at `i * BLOCK_SIZE`; empty until it arrives.
    pub blocks: Vec<Bytes>,
    /// Who sent each block.
    pub sources: Vec<BlockSource>,
    /// When the first block came, and whether the blocks were since
    /// copied out of their read buffers (a slow piece must not keep whole
    /// read buffers alive for one block each).
    pub started: Instant,
    pub compacted: bool,
}

impl PieceBuf {
    pub fn new(piece_len: u32, now: Instant) -> Self {
        Self {
            blocks: vec![Bytes::new(); piece_len.div_ceil(BLOCK_SIZE) as usize],
            sources: Vec::new(),
            started: now,
            compacted: false,
        }
    }

    /// Store a block (the picker only accepts blocks it laid out, so it fits).
    pub fn put(&mut self, begin: u32, data: Bytes, from: IpAddr) {
        let len = data.len() as u32;
        if let Some(slot) = self.blocks.get_mut((begin / BLOCK_SIZE) as usize) {
            *slot = if self.compacted {
                Bytes::copy_from_slice(&data)
            } else {
                data
            };
        }
        self.sources.push(BlockSource {
            begin,
            len,
            ip: from,
        });
    }

    /// Copy the blocks out of their read buffers.
    pub fn compact(&mut self) {
        for b in self.blocks.iter_mut().filter(|b| !b.is_empty()) {
            *b = Bytes::copy_from_slice(b);
        }
        self.compacted = true;
    }
}

/// The block that starts at `begin` and is `len` long, if it is in `blocks`.
pub fn block_at(blocks: &[Bytes], begin: u32, len: u32) -> Option<&[u8]> {
    let b = blocks.get((begin / BLOCK_SIZE) as usize)?;
    (b.len() == len as usize).then_some(&b[..])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSource {
    pub begin: u32,
    pub len: u32,
    pub ip: IpAddr,
}

/// A block of a piece that failed its hash, kept to find the liar once the
/// piece passes (libtorrent calls this "smart ban").
#[derive(Debug, Clone, Copy)]
pub struct Suspect {
    source: BlockSource,
    digest: [u8; 20],
}

/// Remember the digest of every block of a failed piece.
pub fn suspects(blocks: &[Bytes], sources: &[BlockSource]) -> Vec<Suspect> {
    sources
        .iter()
        .filter_map(|s| {
            let block = block_at(blocks, s.begin, s.len)?;
            Some(Suspect {
                source: *s,
                digest: Sha1::digest(block).into(),
            })
        })
        .collect()
}

/// The piece now passed: the senders whose earlier block differs from the
/// good one lied (sorted, each once).
pub fn liars(good: &[Bytes], suspects: &[Suspect]) -> Vec<IpAddr> {
    let mut liars: Vec<IpAddr> = suspects
        .iter()
        .filter(|s| {
            block_at(good, s.source.begin, s.source.len)
                .is_some_and(|b| <[u8; 20]>::from(Sha1::digest(b)) != s.digest)
        })
        .map(|s| s.source.ip)
        .collect();
    liars.sort();
    liars.dedup();
    liars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_of_the_differing_block_is_the_liar() {
        let now = Instant::now();
        let (honest, liar): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let good = [vec![1u8; BLOCK_SIZE as usize], vec![2u8; 100]];
        let mut bad = PieceBuf::new(BLOCK_SIZE + 100, now);
        bad.put(0, Bytes::from(good[0].clone()), honest);
        bad.put(BLOCK_SIZE, Bytes::from(vec![9u8; 100]), liar);
        let s = suspects(&bad.blocks, &bad.sources);
        assert_eq!(s.len(), 2);
        let good: Vec<Bytes> = good.into_iter().map(Bytes::from).collect();
        assert_eq!(liars(&good, &s), vec![liar]);
        // A piece that fails again with the same blocks names nobody.
        assert!(liars(&bad.blocks, &s).is_empty());
    }

    #[test]
    fn compacting_keeps_the_bytes() {
        let mut p = PieceBuf::new(2 * BLOCK_SIZE, Instant::now());
        let big = Bytes::from(vec![5u8; 4 * BLOCK_SIZE as usize]);
        p.put(
            0,
            big.slice(0..BLOCK_SIZE as usize),
            "10.0.0.1".parse().unwrap(),
        );
        p.compact();
        drop(big);
        assert_eq!(
            block_at(&p.blocks, 0, BLOCK_SIZE),
            Some(&[5u8; BLOCK_SIZE as usize][..])
        );
        assert!(block_at(&p.blocks, BLOCK_SIZE, BLOCK_SIZE).is_none());
    }
}
