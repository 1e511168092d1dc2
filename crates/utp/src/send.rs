//! The send side: bytes the writer gave us (sent or not) and the packets in
//! flight. uTP numbers packets, so a packet keeps its bytes and sequence
//! number until acked; it is resent as it was, never repacked. Packets are
//! windows into one byte queue, so sending allocates nothing.

use crate::packet::HEADER_LEN;
use crate::seq::Seq;
use std::collections::VecDeque;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Sent {
    pub seq: Seq,
    /// Stream offset of the payload's first byte.
    pub offset: u64,
    pub len: u32,
    pub fin: bool,
    /// An MTU probe: its loss is the path's size limit, not congestion.
    pub probe: bool,
    pub sent_at: Instant,
    pub transmissions: u32,
    pub acked: bool,
    /// Counted in the window (sent and neither acked nor declared lost).
    pub in_flight: bool,
}

impl Sent {
    /// What the packet costs in the window: payload plus header.
    pub fn size(&self) -> u32 {
        self.len + HEADER_LEN as u32
    }

    pub fn lost(&self) -> bool {
        !self.acked && !self.in_flight
    }
}

#[derive(Debug)]
pub struct SendQueue {
    bytes: VecDeque<u8>,
    /// Stream offset of `bytes[0]`.
    base: u64,
    /// Stream offset of the first byte not yet in a packet.
    unsent: u64,
    capacity: usize,
    /// Packets from the oldest unacked one to the newest, consecutive
    /// sequence numbers.
    flight: VecDeque<Sent>,
    /// Bytes counted in the window (`cur_window` in BEP 29).
    in_flight: u32,
    /// Packets declared lost and waiting to be resent.
    lost: usize,
}

/// What an ack did to the flight.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Acked {
    /// Window bytes newly acked.
    pub bytes: u32,
    pub packets: u32,
}

impl SendQueue {
    pub fn new(capacity: usize) -> Self {
        SendQueue {
            bytes: VecDeque::new(),
            base: 0,
            unsent: 0,
            capacity,
            flight: VecDeque::new(),
            in_flight: 0,
            lost: 0,
        }
    }

    /// Takes as much of `data` as fits; returns how much.
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data
            .len()
            .min(self.capacity.saturating_sub(self.bytes.len()));
        self.bytes.extend(&data[..n]);
        n
    }

    pub fn unsent(&self) -> usize {
        (self.base + self.bytes.len() as u64 - self.unsent) as usize
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    pub fn has_lost(&self) -> bool {
        self.lost > 0
    }

    /// Nothing is waiting for an ack.
    pub fn all_acked(&self) -> bool {
        self.flight.is_empty()
    }

    /// The oldest packet not yet acked.
    pub fn oldest(&self) -> Option<&Sent> {
        self.flight.front()
    }

    /// The sequence number the next new packet will get, if the flight is
    /// not empty (otherwise the connection's counter decides).
    pub fn newest(&self) -> Option<Seq> {
        self.flight.back().map(|s| s.seq)
    }

    pub fn get(&self, seq: Seq) -> Option<&Sent> {
        let front = self.flight.front()?.seq;
        let i = seq.since(front);
        if i < 0 {
            return None;
        }
        self.flight.get(i as usize)
    }

    /// Puts the next `len` unsent bytes (and a FIN, if `fin`) into packet
    /// `seq`, counted in flight from `now`.
    pub fn push(&mut self, seq: Seq, len: usize, fin: bool, probe: bool, now: Instant) -> &Sent {
        debug_assert!(len <= self.unsent());
        debug_assert!(self.flight.back().is_none_or(|b| b.seq.next() == seq));
        let sent = Sent {
            seq,
            offset: self.unsent,
            len: len as u32,
            fin,
            probe,
            sent_at: now,
            transmissions: 1,
            acked: false,
            in_flight: true,
        };
        self.unsent += len as u64;
        self.in_flight += sent.size();
        self.flight.push_back(sent);
        self.flight.back().expect("just pushed")
    }

    /// The oldest packet declared lost, counted in flight again.
    pub fn resend_next(&mut self, now: Instant) -> Option<&Sent> {
        if self.lost == 0 {
            return None;
        }
        let p = self.flight.iter_mut().find(|p| p.lost())?;
        p.in_flight = true;
        p.transmissions += 1;
        p.sent_at = now;
        // The probe's loss already answered it; the resend goes without
        // Don't Fragment, so its ack says nothing about the path.
        p.probe = false;
        self.lost -= 1;
        self.in_flight += p.size();
        Some(p)
    }

    /// The size of the packet `resend_next` would send.
    pub fn next_lost_size(&self) -> Option<u32> {
        if self.lost == 0 {
            return None;
        }
        self.flight.iter().find(|p| p.lost()).map(Sent::size)
    }

    /// Appends packet `p`'s payload to `out`.
    pub fn payload(&self, p: &Sent, out: &mut Vec<u8>) {
        let start = (p.offset - self.base) as usize;
        let end = start + p.len as usize;
        let (a, b) = self.bytes.as_slices();
        if end <= a.len() {
            out.extend_from_slice(&a[start..end]);
        } else if start >= a.len() {
            out.extend_from_slice(&b[start - a.len()..end - a.len()]);
        } else {
            out.extend_from_slice(&a[start..]);
            out.extend_from_slice(&b[..end - a.len()]);
        }
    }

    /// Marks `seq` acked; `rtt_from` gets the send time of a packet sent
    /// once (Karn's rule).
    pub fn ack(
        &mut self,
        seq: Seq,
        acked: &mut Acked,
        rtt_from: &mut Option<Instant>,
    ) -> Option<&Sent> {
        let front = self.flight.front()?.seq;
        let i = seq.since(front);
        if i < 0 {
            return None;
        }
        let p = self.flight.get_mut(i as usize)?;
        if p.acked {
            return None;
        }
        if p.in_flight {
            self.in_flight -= p.size();
        } else {
            self.lost -= 1;
        }
        p.acked = true;
        p.in_flight = false;
        acked.bytes += p.size();
        acked.packets += 1;
        if p.transmissions == 1 {
            *rtt_from = Some(p.sent_at);
        }
        Some(p)
    }

    /// Drops acked packets from the front and their bytes from the queue.
    pub fn pop_acked(&mut self) {
        while let Some(p) = self.flight.front() {
            if !p.acked {
                break;
            }
            let end = p.offset + p.len as u64;
            self.flight.pop_front();
            let drop = (end - self.base) as usize;
            self.bytes.drain(..drop);
            self.base = end;
        }
        if self.bytes.is_empty() && self.bytes.capacity() > 64 * 1024 {
            self.bytes.shrink_to(64 * 1024);
        }
    }

    /// Declares `seq` lost: out of the window, to be resent.
    pub fn mark_lost(&mut self, seq: Seq) -> Option<&Sent> {
        let front = self.flight.front()?.seq;
        let i = seq.since(front);
        if i < 0 {
            return None;
        }
        let p = self.flight.get_mut(i as usize)?;
        if !p.in_flight {
            return None;
        }
        p.in_flight = false;
        self.in_flight -= p.size();
        self.lost += 1;
        Some(p)
    }

    /// Sequence numbers of packets still in flight, oldest first.
    pub fn in_flight_seqs(&self) -> impl Iterator<Item = (Seq, bool, u32)> + '_ {
        self.flight
            .iter()
            .filter(|p| p.in_flight)
            .map(|p| (p.seq, p.probe, p.len + HEADER_LEN as u32))
    }

    /// Packets (oldest first) with `acked` status, for loss detection.
    pub fn flight(&self) -> &VecDeque<Sent> {
        &self.flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_windows_into_the_byte_queue() {
        let now = Instant::now();
        let mut q = SendQueue::new(10);
        assert_eq!(q.write(b"hello world"), 10);
        let p = q.push(Seq(65535), 4, false, false, now).clone();
        let mut out = Vec::new();
        q.payload(&p, &mut out);
        assert_eq!(out, b"hell");
        q.push(Seq(0), 6, false, false, now);
        assert_eq!(q.in_flight(), 10 + 2 * HEADER_LEN as u32);
        let (mut acked, mut rtt) = (Acked::default(), None);
        q.ack(Seq(0), &mut acked, &mut rtt);
        q.pop_acked();
        assert_eq!(q.flight().len(), 2, "packet 0 waits behind 65535");
        q.mark_lost(Seq(65535));
        assert!(q.has_lost());
        assert_eq!(q.in_flight(), 0);
        let p = q.resend_next(now).unwrap().clone();
        assert_eq!(p.transmissions, 2);
        q.ack(Seq(65535), &mut acked, &mut rtt);
        q.pop_acked();
        assert!(q.all_acked());
        assert_eq!(q.write(b"0123456789"), 10, "acked bytes free the buffer");
        assert_eq!(acked.packets, 2);
    }
}
