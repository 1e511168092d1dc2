//! Where the bytes of each piece live: the mapping between the torrent's
//! flat byte space and its files.

use std::ops::Range;

use crate::PieceIndex;

/// One contiguous run of bytes inside one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSlice {
    pub file_index: usize,
    pub offset_in_file: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("piece length must be greater than zero")]
    ZeroPieceLength,
    #[error("total size overflows")]
    TooLarge,
    #[error("file {0} starts before the previous file ends")]
    Overlap(usize),
    #[error("torrent has {0} pieces, more than the 2^32-1 a piece index can hold")]
    TooManyPieces(u64),
}

/// Files laid out in the torrent's byte space. In v1 torrents files follow
/// each other; in v2 torrents each file starts on a piece boundary, leaving
/// gaps that belong to no file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    piece_length: u32,
    /// Byte range of each file in torrent space, in file order.
    files: Vec<Range<u64>>,
    end: u64,
    contiguous: bool,
    num_pieces: u32,
}

impl Layout {
    /// Files one after another (v1, and hybrid torrents with their pad files).
    pub fn contiguous(
        piece_length: u32,
        lengths: impl IntoIterator<Item = u64>,
    ) -> Result<Self, LayoutError> {
        let mut offset = 0u64;
        let mut files = Vec::new();
        for len in lengths {
            let end = offset.checked_add(len).ok_or(LayoutError::TooLarge)?;
            files.push(offset..end);
            offset = end;
        }
        Self::build(piece_length, files, true)
    }

    /// Each file starts on a piece boundary (BEP 52, v2-only torrents).
    pub fn piece_aligned(
        piece_length: u32,
        lengths: impl IntoIterator<Item = u64>,
    ) -> Result<Self, LayoutError> {
        if piece_length == 0 {
            return Err(LayoutError::ZeroPieceLength);
        }
        let pl = u64::from(piece_length);
        let mut offset = 0u64;
        let mut files = Vec::new();
        for len in lengths {
            let end = offset.checked_add(len).ok_or(LayoutError::TooLarge)?;
            files.push(offset..end);
            offset = end
                .checked_next_multiple_of(pl)
                .ok_or(LayoutError::TooLarge)?;
        }
        Self::build(piece_length, files, false)
    }

    fn build(
        piece_length: u32,
        files: Vec<Range<u64>>,
        contiguous: bool,
    ) -> Result<Self, LayoutError> {
        if piece_length == 0 {
            return Err(LayoutError::ZeroPieceLength);
        }
        let end = files.last().map_or(0, |r| r.end);
        if end > i64::MAX as u64 {
            return Err(LayoutError::TooLarge);
        }
        for (i, w) in files.windows(2).enumerate() {
            if w[1].start < w[0].end {
                return Err(LayoutError::Overlap(i + 1));
            }
        }
        let pieces = end.div_ceil(u64::from(piece_length));
        let num_pieces = u32::try_from(pieces).map_err(|_| LayoutError::TooManyPieces(pieces))?;
        Ok(Self {
            piece_length,
            files,
            end,
            contiguous,
            num_pieces,
        })
    }

    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    pub fn num_pieces(&self) -> u32 {
        self.num_pieces
    }

    pub fn num_files(&self) -> usize {
        self.files.len()
    }

    /// Bytes held in files (gaps of a piece-aligned layout excluded).
    pub fn total_length(&self) -> u64 {
        if self.contiguous {
            self.end
        } else {
            self.files.iter().map(|r| r.end - r.start).sum()
        }
    }

    /// Where file `i` lies in torrent space.
    pub fn file_range(&self, i: usize) -> Option<Range<u64>> {
        self.files.get(i).cloned()
    }

    pub fn piece_range(&self, piece: PieceIndex) -> Option<Range<u64>> {
        if piece.0 >= self.num_pieces {
            return None;
        }
        let start = u64::from(piece.0) * u64::from(self.piece_length);
        Some(start..(start + u64::from(self.piece_length)).min(self.end))
    }

    /// Bytes of data in the piece: the piece length, except for the last piece
    /// (and, in a piece-aligned layout, the last piece of each file).
    pub fn piece_len(&self, piece: PieceIndex) -> Option<u32> {
        let r = self.piece_range(piece)?;
        let len = if self.contiguous {
            r.end - r.start
        } else {
            self.slices(r).map(|s| s.len).sum()
        };
        // At most `piece_length`, which is a u32.
        u32::try_from(len).ok()
    }

    /// The file slices that make up the byte range `range` of torrent
    /// space, in order. Zero-length files and gaps produce nothing.
    pub fn slices(&self, range: Range<u64>) -> impl Iterator<Item = FileSlice> + '_ {
        // First file whose end is past the start of the range.
        let first = self.files.partition_point(|f| f.end <= range.start);
        self.files[first..]
            .iter()
            .enumerate()
            .take_while(move |(_, f)| f.start < range.end)
            .filter_map(move |(i, f)| {
                let start = f.start.max(range.start);
                let end = f.end.min(range.end);
                (start < end).then(|| FileSlice {
                    file_index: first + i,
                    offset_in_file: start - f.start,
                    len: end - start,
                })
            })
    }

    pub fn piece_slices(&self, piece: PieceIndex) -> impl Iterator<Item = FileSlice> + '_ {
        self.slices(self.piece_range(piece).unwrap_or(0..0))
    }

    /// The pieces holding any byte of file `i` (empty for an empty file).
    pub fn file_pieces(&self, i: usize) -> Range<u32> {
        match self.files.get(i) {
            Some(f) if f.end > f.start => {
                let pl = u64::from(self.piece_length);
                // Both bounds are at most num_pieces, a u32.
                (f.start / pl) as u32..f.end.div_ceil(pl) as u32
            }
            _ => 0..0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(file_index: usize, offset_in_file: u64, len: u64) -> FileSlice {
        FileSlice {
            file_index,
            offset_in_file,
            len,
        }
    }

    #[test]
    fn single_file_short_last_piece() {
        let l = Layout::contiguous(16, [40]).unwrap();
        assert_eq!(l.num_pieces(), 3);
        assert_eq!(l.piece_len(PieceIndex(0)), Some(16));
        assert_eq!(l.piece_len(PieceIndex(2)), Some(8));
        assert_eq!(l.piece_len(PieceIndex(3)), None);
        assert_eq!(
            l.piece_slices(PieceIndex(2)).collect::<Vec<_>>(),
            [s(0, 32, 8)]
        );
    }

    #[test]
    fn exact_multiple_has_no_short_piece() {
        let l = Layout::contiguous(16, [32]).unwrap();
        assert_eq!(l.num_pieces(), 2);
        assert_eq!(l.piece_len(PieceIndex(1)), Some(16));
    }

    #[test]
    fn piece_spanning_files_with_empty_files_between() {
        // files: 10 bytes, empty, 3 bytes, empty, 20 bytes
        let l = Layout::contiguous(16, [10, 0, 3, 0, 20]).unwrap();
        assert_eq!(l.num_pieces(), 3);
        assert_eq!(
            l.piece_slices(PieceIndex(0)).collect::<Vec<_>>(),
            [s(0, 0, 10), s(2, 0, 3), s(4, 0, 3)]
        );
        assert_eq!(
            l.piece_slices(PieceIndex(2)).collect::<Vec<_>>(),
            [s(4, 19, 1)]
        );
        assert_eq!(l.file_pieces(1), 0..0);
        assert_eq!(l.file_pieces(4), 0..3);
        assert_eq!(l.file_pieces(2), 0..1);
    }

    #[test]
    fn file_boundary_inside_a_block() {
        // A 16 KiB block of piece 1 that straddles two files.
        let l = Layout::contiguous(32768, [40000, 30000]).unwrap();
        let block = 32768u64..32768 + 16384;
        assert_eq!(
            l.slices(block).collect::<Vec<_>>(),
            [s(0, 32768, 40000 - 32768), s(1, 0, 49152 - 40000)]
        );
        assert_eq!(l.total_length(), 70000);
        assert_eq!(l.piece_len(PieceIndex(2)), Some(70000 - 65536));
    }

    #[test]
    fn all_empty_files_means_no_pieces() {
        let l = Layout::contiguous(16, [0, 0]).unwrap();
        assert_eq!(l.num_pieces(), 0);
        assert_eq!(l.piece_slices(PieceIndex(0)).count(), 0);
    }

    #[test]
    fn piece_aligned_v2_layout() {
        let l = Layout::piece_aligned(16, [20, 0, 5]).unwrap();
        assert_eq!(l.file_range(0), Some(0..20));
        assert_eq!(l.file_range(1), Some(32..32));
        assert_eq!(l.file_range(2), Some(32..37));
        assert_eq!(l.num_pieces(), 3);
        assert_eq!(l.piece_len(PieceIndex(1)), Some(4));
        assert_eq!(l.piece_len(PieceIndex(2)), Some(5));
        assert_eq!(l.total_length(), 25);
    }

    #[test]
    fn rejects_overflow_and_zero() {
        assert_eq!(
            Layout::contiguous(16, [u64::MAX, 1]),
            Err(LayoutError::TooLarge)
        );
        assert_eq!(
            Layout::contiguous(0, [1]),
            Err(LayoutError::ZeroPieceLength)
        );
        assert!(matches!(
            Layout::contiguous(1, [1 << 40]),
            Err(LayoutError::TooManyPieces(_))
        ));
    }
}
