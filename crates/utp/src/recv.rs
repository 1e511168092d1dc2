//! The receive side: bytes in order for the reader, packets that came early
//! kept by sequence number, the advertised window, and the selective ack
//! that tells the sender which early packets arrived. Memory is bounded by
//! the buffer capacity and by how far ahead a packet may be.

use crate::packet::MAX_SACK_BYTES;
use crate::seq::Seq;
use std::collections::VecDeque;

/// How far past `ack_nr` a packet may be and still be kept: as far as a
/// selective ack can describe: its bit 0 is `ack_nr + 2`, its last bit
/// `ack_nr + 1 + MAX_SACK_BYTES * 8`.
pub const MAX_AHEAD: usize = 1 + MAX_SACK_BYTES * 8;

#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// New bytes were appended for the reader (the packet and any early
    /// ones it made contiguous).
    InOrder,
    /// Kept until the gap before it fills.
    Early,
    /// Already had it: ack again so the sender stops resending.
    Duplicate,
    /// Beyond the window or too far ahead: dropped, not acked.
    Dropped,
}

#[derive(Debug)]
pub struct RecvQueue {
    /// The last packet delivered in order.
    ack_nr: Seq,
    ready: VecDeque<u8>,
    /// `early[i]` holds packet `ack_nr + 2 + i`.
    early: VecDeque<Option<Vec<u8>>>,
    early_bytes: usize,
    capacity: usize,
    /// The sequence number of the peer's FIN.
    eof: Option<Seq>,
}

impl RecvQueue {
    pub fn new(ack_nr: Seq, capacity: usize) -> Self {
        RecvQueue {
            ack_nr,
            ready: VecDeque::new(),
            early: VecDeque::new(),
            early_bytes: 0,
            capacity,
            eof: None,
        }
    }

    pub fn ack_nr(&self) -> Seq {
        self.ack_nr
    }

    /// Bytes the sender may still have in flight toward us.
    pub fn window(&self) -> usize {
        self.capacity
            .saturating_sub(self.ready.len() + self.early_bytes)
    }

    pub fn readable(&self) -> usize {
        self.ready.len()
    }

    /// The peer's FIN arrived and everything before it was read.
    pub fn at_eof(&self) -> bool {
        self.eof == Some(self.ack_nr) && self.ready.is_empty()
    }

    /// Every packet up to the FIN is here (the reader may still have bytes).
    pub fn complete(&self) -> bool {
        self.eof == Some(self.ack_nr)
    }

    /// A DATA (or FIN, `fin` true) packet with sequence number `seq`.
    pub fn arrive(&mut self, seq: Seq, payload: &[u8], fin: bool) -> Arrival {
        let ahead = seq.since(self.ack_nr);
        if ahead <= 0 {
            return Arrival::Duplicate;
        }
        if let Some(eof) = self.eof {
            if seq.after(eof) {
                return Arrival::Dropped;
            }
        }
        let ahead = ahead as usize;
        if ahead > MAX_AHEAD || payload.len() > self.window() {
            return Arrival::Dropped;
        }
        if fin {
            self.eof = Some(seq);
            // Nothing comes after a FIN: forget anything held beyond it.
            let keep = ahead.saturating_sub(1);
            while self.early.len() > keep {
                if let Some(Some(bytes)) = self.early.pop_back() {
                    self.early_bytes -= bytes.len();
                }
            }
        }
        if ahead == 1 {
            self.ready.extend(payload);
            self.ack_nr = seq;
            while let Some(Some(_)) = self.early.front() {
                if let Some(Some(bytes)) = self.early.pop_front() {
                    self.early_bytes -= bytes.len();
                    self.ready.extend(&bytes);
                    self.ack_nr = self.ack_nr.next();
                }
            }
            if let Some(None) = self.early.front() {
                // The slot for the next expected packet is never used.
                self.early.pop_front();
            }
            return Arrival::InOrder;
        }
        let slot = ahead - 2;
        if self.early.len() <= slot {
            self.early.resize(slot + 1, None);
        }
        match &mut self.early[slot] {
            Some(_) => Arrival::Duplicate,
            empty => {
                self.early_bytes += payload.len();
                *empty = Some(payload.to_vec());
                Arrival::Early
            }
        }
    }

    /// Copies up to `buf.len()` bytes out for the reader.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.ready.len());
        let (a, b) = self.ready.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.ready.drain(..n);
        if self.ready.is_empty() && self.ready.capacity() > 64 * 1024 {
            self.ready.shrink_to(64 * 1024);
        }
        n
    }

    /// The selective-ack bitmask for the packets held early, written into
    /// `out`; returns its length (0 when nothing is held).
    pub fn sack(&self, out: &mut [u8; MAX_SACK_BYTES]) -> usize {
        let Some(last) = self.early.iter().rposition(Option::is_some) else {
            return 0;
        };
        let bytes = (last / 8 + 1).div_ceil(4) * 4;
        out[..bytes].fill(0);
        for (i, slot) in self.early.iter().enumerate().take(bytes * 8) {
            if slot.is_some() {
                out[i / 8] |= 1 << (i % 8);
            }
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reorders_and_acks_selectively() {
        let mut r = RecvQueue::new(Seq(65534), 1000);
        assert_eq!(r.arrive(Seq(1), b"c", false), Arrival::Early);
        assert_eq!(r.arrive(Seq(1), b"c", false), Arrival::Duplicate);
        let mut mask = [0u8; MAX_SACK_BYTES];
        // ack_nr 65534: bit 0 is 0, bit 1 is 1 (packet 1 = 65534 + 3).
        assert_eq!(r.sack(&mut mask), 4);
        assert_eq!(mask[..4], [0b10, 0, 0, 0]);
        assert_eq!(r.arrive(Seq(65535), b"a", false), Arrival::InOrder);
        assert_eq!(r.arrive(Seq(0), b"b", false), Arrival::InOrder);
        assert_eq!(r.ack_nr(), Seq(1), "the early packet joined the stream");
        assert_eq!(r.sack(&mut mask), 0);
        assert_eq!(r.arrive(Seq(4), b"e", false), Arrival::Early);
        assert_eq!(r.arrive(Seq(2), b"d", true), Arrival::InOrder);
        assert!(r.complete(), "the FIN at 2 drops what was held beyond it");
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf), 4);
        assert_eq!(&buf[..4], b"abcd");
        assert!(r.at_eof());
    }

    #[test]
    fn window_bounds_memory() {
        let mut r = RecvQueue::new(Seq(0), 10);
        assert_eq!(r.arrive(Seq(3), &[0; 6], false), Arrival::Early);
        assert_eq!(r.window(), 4);
        assert_eq!(r.arrive(Seq(2), &[0; 6], false), Arrival::Dropped);
        assert_eq!(r.arrive(Seq(5000), &[0; 1], false), Arrival::Dropped);
        assert_eq!(r.arrive(Seq(1), &[0; 4], true), Arrival::InOrder);
        assert_eq!(r.ack_nr(), Seq(1));
        assert_eq!(
            r.arrive(Seq(2), &[0; 0], false),
            Arrival::Dropped,
            "after the FIN"
        );
    }

    #[test]
    fn the_farthest_packet_kept_fits_in_a_selective_ack() {
        // A packet one past what the mask can describe was kept, and
        // building the mask then sliced 132 bytes out of 128: a panic any
        // peer could trigger with one datagram.
        let mut r = RecvQueue::new(Seq(100), 1 << 20);
        let last = Seq(100).plus(MAX_AHEAD as u16);
        assert_eq!(r.arrive(last, b"x", false), Arrival::Early);
        assert_eq!(r.arrive(last.next(), b"y", false), Arrival::Dropped);
        let mut mask = [0u8; MAX_SACK_BYTES];
        assert_eq!(r.sack(&mut mask), MAX_SACK_BYTES);
        assert_eq!(
            mask[MAX_SACK_BYTES - 1],
            0x80,
            "the last bit is the last packet"
        );
    }

    proptest! {
        /// Whatever order (and duplication) packets arrive in, the reader
        /// gets the stream once, in order.
        #[test]
        fn any_arrival_order_yields_the_stream(
            start in any::<u16>(),
            order in proptest::collection::vec(0usize..40, 0..200),
        ) {
            let n = 40usize;
            let mut r = RecvQueue::new(Seq(start), 1 << 20);
            for i in order.iter().copied().chain(0..n) {
                let seq = Seq(start).plus(i as u16 + 1);
                r.arrive(seq, &[i as u8; 3], i == n - 1);
            }
            let mut out = vec![0u8; 4 * n];
            let got = r.read(&mut out);
            prop_assert_eq!(got, 3 * n);
            for i in 0..n {
                prop_assert_eq!(&out[3 * i..3 * i + 3], &[i as u8; 3]);
            }
            prop_assert!(r.at_eof());
        }
    }
}
