//! Sequence and ack numbers: 16 bits that wrap, compared by distance.

use std::cmp::Ordering;
use std::fmt;

/// A packet sequence number (uTP counts packets, not bytes). Arithmetic
/// wraps at 2^16; ordering is by signed distance, so 0 comes after 65535.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seq(pub u16);

impl Seq {
    pub fn next(self) -> Seq {
        Seq(self.0.wrapping_add(1))
    }

    pub fn prev(self) -> Seq {
        Seq(self.0.wrapping_sub(1))
    }

    pub fn plus(self, n: u16) -> Seq {
        Seq(self.0.wrapping_add(n))
    }

    /// How far `self` is ahead of `earlier` (negative when behind), valid
    /// while the two are within 2^15 of each other.
    pub fn since(self, earlier: Seq) -> i16 {
        self.0.wrapping_sub(earlier.0) as i16
    }

    pub fn after(self, other: Seq) -> bool {
        self.since(other) > 0
    }
}

impl PartialOrd for Seq {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.since(*other).cmp(&0))
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_survives_wrap_around() {
        assert!(Seq(0).after(Seq(65535)));
        assert!(Seq(65535) < Seq(0));
        assert_eq!(Seq(3).since(Seq(65534)), 5);
        assert_eq!(Seq(65534).since(Seq(3)), -5);
        assert_eq!(Seq(65535).next(), Seq(0));
        assert_eq!(Seq(0).prev(), Seq(65535));
    }
}
