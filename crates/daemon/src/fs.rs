//! What the daemon asks of the file system.

use std::path::Path;

/// Bytes free for an unprivileged user, and the size of the file system
/// holding `dir`.
pub fn space(dir: &Path) -> std::io::Result<(u64, u64)> {
    let s = rustix::fs::statvfs(dir)?;
    let unit = s.f_frsize.max(1);
    Ok((
        s.f_bavail.saturating_mul(unit),
        s.f_blocks.saturating_mul(unit),
    ))
}
