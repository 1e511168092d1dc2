//! Parse arbitrary bytes as a .torrent; on success, the layout and the
//! sanitised paths must be consistent.

use lodestone_core::{Metainfo, PieceIndex};

pub fn metainfo(data: &[u8]) {
    let Ok(m) = Metainfo::from_bytes(data) else {
        return;
    };
    let info = &m.info;
    assert_eq!(info.layout.num_files(), info.files.len());
    for f in &info.files {
        assert!(!f.path.is_empty());
        for c in &f.path {
            assert!(!c.is_empty() && c != "." && c != "..");
            assert!(!c.contains('/') && !c.contains('\\') && !c.contains('\0'));
        }
    }
    let n = info.num_pieces();
    for p in [0, n / 2, n.saturating_sub(1)] {
        if p < n {
            let len = info
                .layout
                .piece_len(PieceIndex(p))
                .expect("piece in range");
            let sum: u64 = info.layout.piece_slices(PieceIndex(p)).map(|s| s.len).sum();
            assert_eq!(u64::from(len), sum);
            assert!(len <= info.piece_length);
        }
    }
    let _ = lodestone_core::Magnet::from_metainfo(&m).to_string();
}
