//! A fixed-length set of pieces, in the wire layout of BEP 3 (high bit of
//! the first byte is piece 0).

use crate::PieceIndex;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    #[error("bitfield is {got} bytes, {want} expected for {pieces} pieces")]
    WrongLength {
        got: usize,
        want: usize,
        pieces: u32,
    },
    #[error("bitfield has bits set past the last piece")]
    SpareBitsSet,
}

impl Bitfield {
    /// All clear.
    pub fn new(len: u32) -> Self {
        Self {
            bytes: vec![0; (len as usize).div_ceil(8)],
            len,
            count: 0,
        }
    }

    /// All set.
    pub fn full(len: u32) -> Self {
        let mut b = Self::new(len);
        b.bytes.fill(0xff);
        b.clear_spare_bits();
        b.count = len;
        b
    }

    /// From the wire: exactly ceil(len/8) bytes, spare bits zero.
    pub fn from_bytes(bytes: &[u8], len: u32) -> Result<Self, BitfieldError> {
        let want = (len as usize).div_ceil(8);
        if bytes.len() != want {
            return Err(BitfieldError::WrongLength {
                got: bytes.len(),
                want,
                pieces: len,
            });
        }
        let mut b = Self {
            bytes: bytes.to_vec(),
            len,
            count: 0,
        };
        let before: u32 = b.bytes.iter().map(|x| x.count_ones()).sum();
        b.clear_spare_bits();
        let after: u32 = b.bytes.iter().map(|x| x.count_ones()).sum();
        if before != after {
            return Err(BitfieldError::SpareBitsSet);
        }
        b.count = after;
        Ok(b)
    }

    fn clear_spare_bits(&mut self) {
        let spare = self.bytes.len() * 8 - self.len as usize;
        if let Some(last) = self.bytes.last_mut() {
            *last &= 0xffu8.checked_shl(spare as u32).unwrap_or(0);
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pieces set.
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_full(&self) -> bool {
        self.count == self.len
    }

    pub fn none(&self) -> bool {
        self.count == 0
    }

    pub fn get(&self, p: PieceIndex) -> bool {
        p.0 < self.len && self.bytes[(p.0 / 8) as usize] & (0x80 >> (p.0 % 8)) != 0
    }

    /// Set a piece; returns whether it changed. Out-of-range pieces are ignored.
    pub fn set(&mut self, p: PieceIndex) -> bool {
        if p.0 >= self.len || self.get(p) {
            return false;
        }
        self.bytes[(p.0 / 8) as usize] |= 0x80 >> (p.0 % 8);
        self.count += 1;
        true
    }

    /// Clear a piece; returns whether it changed.
    pub fn clear(&mut self, p: PieceIndex) -> bool {
        if !self.get(p) {
            return false;
        }
        self.bytes[(p.0 / 8) as usize] &= !(0x80 >> (p.0 % 8));
        self.count -= 1;
        true
    }

    pub fn iter_set(&self) -> impl Iterator<Item = PieceIndex> + '_ {
        (0..self.len).map(PieceIndex).filter(|&p| self.get(p))
    }
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.count, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count() {
        let mut b = Bitfield::new(10);
        assert_eq!(b.as_bytes().len(), 2);
        assert!(b.set(PieceIndex(0)));
        assert!(!b.set(PieceIndex(0)));
        assert!(b.set(PieceIndex(9)));
        assert!(!b.set(PieceIndex(10)));
        assert_eq!(b.as_bytes(), [0x80, 0x40]);
        assert_eq!(b.count(), 2);
        assert!(b.clear(PieceIndex(9)));
        assert_eq!(b.iter_set().collect::<Vec<_>>(), [PieceIndex(0)]);
        let f = Bitfield::full(10);
        assert_eq!(f.as_bytes(), [0xff, 0xc0]);
        assert!(f.is_full());
        assert!(Bitfield::full(0).is_full());
    }

    #[test]
    fn wire_validation() {
        assert_eq!(Bitfield::from_bytes(&[0xff, 0xc0], 10).unwrap().count(), 10);
        assert_eq!(
            Bitfield::from_bytes(&[0xff, 0xe0], 10),
            Err(BitfieldError::SpareBitsSet)
        );
        assert_eq!(
            Bitfield::from_bytes(&[0xff], 10),
            Err(BitfieldError::WrongLength {
                got: 1,
                want: 2,
                pieces: 10
            })
        );
        assert_eq!(Bitfield::from_bytes(&[0xff], 8).unwrap().count(), 8);
    }
}
