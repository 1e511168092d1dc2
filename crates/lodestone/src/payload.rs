//! Deterministic test content, byte-identical to the interop harness's
//! `make_payload.py`: chunk *i* (1 MiB) of file *F* is
//! `SHAKE256("btharness:" + seed + ":" + F + ":" + u64le(i))`, truncated at
//! the end of the file. Used by `lodestone demo` and the interop tests.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use sha3::digest::{ExtendableOutput, Update, XofReader};
use sha3::Shake256;

const CHUNK: usize = 1 << 20;

/// Write `size` bytes of file `rel` (its path as the harness names it,
/// e.g. `multi/sub/b.bin`) to `path`.
pub fn write_file(path: &Path, rel: &str, size: u64, seed: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut out = BufWriter::with_capacity(CHUNK, File::create(path)?);
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    let mut i: u64 = 0;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        let mut h = Shake256::default();
        h.update(b"btharness:");
        h.update(seed.as_bytes());
        h.update(b":");
        h.update(rel.as_bytes());
        h.update(b":");
        h.update(&i.to_le_bytes());
        h.finalize_xof().read(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
        i += 1;
    }
    out.flush()
}

/// The harness's multi-file layout for a total of about `total` bytes:
/// file boundaries straddle pieces, with an empty file and a tiny one.
pub fn multi_layout(total: u64, piece: u64) -> Vec<(&'static str, u64)> {
    let big = total
        .saturating_sub(3 * piece + 17)
        .saturating_sub(piece + 1)
        .saturating_sub(100)
        .max(piece);
    vec![
        ("a.bin", piece + 1),
        ("sub/b.bin", 3 * piece + 17),
        ("sub/deeper/empty.bin", 0),
        ("sub/deeper/tiny.txt", 100),
        ("z_big.bin", big),
    ]
}

/// Write the multi-file layout under `root/name`.
pub fn write_multi(root: &Path, name: &str, total: u64, piece: u64, seed: &str) -> io::Result<()> {
    for (rel, size) in multi_layout(total, piece) {
        write_file(
            &root.join(name).join(rel),
            &format!("{name}/{rel}"),
            size,
            seed,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_harness_definition() {
        // First 8 bytes of SHAKE256("btharness:0:x:" + u64le(0)), computed
        // independently with Python's hashlib.shake_256.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        write_file(&p, "x", 8, "0").unwrap();
        let got = fs::read(&p).unwrap();
        let want = [0xdb, 0xb9, 0xc6, 0x10, 0x11, 0x21, 0x6d, 0x40];
        assert_eq!(got, want);
    }
}
