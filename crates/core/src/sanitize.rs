//! Turning file names from a torrent (untrusted) into paths that can only
//! ever land inside the download directory, on any platform.

use std::collections::HashSet;
use std::fmt;

/// The longest component most file systems accept, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a name was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fix {
    NotUtf8,
    Separator,
    ControlCharacter,
    DotComponent,
    EmptyComponent,
    WindowsReserved,
    TooLong,
    Duplicate,
    EmptyPath,
}

impl fmt::Display for Fix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotUtf8 => "bytes that are not UTF-8 were replaced",
            Self::Separator => "a path separator inside a name was replaced by '_'",
            Self::ControlCharacter => "a control character was replaced by '_'",
            Self::DotComponent => "a '.' or '..' component was removed",
            Self::EmptyComponent => "an empty component was removed",
            Self::WindowsReserved => "a name reserved on Windows was prefixed with '_'",
            Self::TooLong => "a name longer than 255 bytes was shortened",
            Self::Duplicate => "a path used twice was renamed",
            Self::EmptyPath => "an empty path was replaced by '_'",
        })
    }
}

/// A record of one file path that was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFix {
    pub file_index: usize,
    pub original: String,
    pub sanitized: String,
    pub fixes: Vec<Fix>,
}

impl fmt::Display for PathFix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "file {}: {:?} saved as {:?} (",
            self.file_index, self.original, self.sanitized
        )?;
        for (i, fix) in self.fixes.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{fix}")?;
        }
        f.write_str(")")
    }
}

const WINDOWS_RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Sanitise one path component. Returns `None` if the component should be
/// dropped altogether (`.`, `..`, empty).
pub fn component(raw: &[u8], fixes: &mut Vec<Fix>) -> Option<String> {
    let text = match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            fixes.push(Fix::NotUtf8);
            String::from_utf8_lossy(raw).into_owned()
        }
    };
    if text.is_empty() {
        fixes.push(Fix::EmptyComponent);
        return None;
    }
    if text == "." || text == ".." {
        fixes.push(Fix::DotComponent);
        return None;
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '/' || c == '\\' {
            push_once(fixes, Fix::Separator);
            out.push('_');
        } else if c.is_control() {
            push_once(fixes, Fix::ControlCharacter);
            out.push('_');
        } else {
            out.push(c);
        }
    }
    let stem = out.split('.').next().unwrap_or("");
    if WINDOWS_RESERVED
        .iter()
        .any(|r| r.eq_ignore_ascii_case(stem.trim_end()))
    {
        fixes.push(Fix::WindowsReserved);
        out.insert(0, '_');
    }
    if out.len() > MAX_COMPONENT_BYTES {
        fixes.push(Fix::TooLong);
        out = shorten(&out, MAX_COMPONENT_BYTES);
    }
    Some(out)
}

fn push_once(fixes: &mut Vec<Fix>, fix: Fix) {
    if !fixes.contains(&fix) {
        fixes.push(fix);
    }
}

/// Cut `name` to at most `max` bytes on a char boundary, keeping a short extension.
fn shorten(name: &str, max: usize) -> String {
    let ext = match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= 16 => &name[i..],
        _ => "",
    };
    let mut cut = max - ext.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &name[..cut])
}

/// Sanitise a whole path. Never returns an empty list.
pub fn path<'a>(raw: impl IntoIterator<Item = &'a [u8]>, fixes: &mut Vec<Fix>) -> Vec<String> {
    let mut out: Vec<String> = raw
        .into_iter()
        .filter_map(|c| component(c, fixes))
        .collect();
    if out.is_empty() {
        fixes.push(Fix::EmptyPath);
        out.push("_".to_owned());
    }
    out
}

/// Rename paths that collide with an earlier file, or with a directory that
/// another file needs, by adding `.N` before the extension. `skip` marks
/// entries (pad files) that are never written and so cannot collide.
pub fn dedupe(paths: &mut [Vec<String>], skip: &[bool], fixes: &mut [Vec<Fix>]) {
    let mut dirs: HashSet<Vec<String>> = HashSet::new();
    for (i, p) in paths.iter().enumerate() {
        if !skip.get(i).copied().unwrap_or(false) {
            for n in 1..p.len() {
                dirs.insert(p[..n].to_vec());
            }
        }
    }
    let mut seen: HashSet<Vec<String>> = HashSet::new();
    for (i, p) in paths.iter_mut().enumerate() {
        if skip.get(i).copied().unwrap_or(false) {
            continue;
        }
        if seen.contains(p) || dirs.contains(p) {
            let Some(last) = p.last().cloned() else {
                continue;
            };
            let (stem, ext) = match last.rfind('.') {
                Some(d) if d > 0 => (&last[..d], &last[d..]),
                _ => (last.as_str(), ""),
            };
            // Bounded: each try is a distinct name, and at most `paths.len()` are taken.
            for n in 1..=paths_len_bound(&seen, &dirs) {
                let candidate = format!("{stem}.{n}{ext}");
                if let Some(slot) = p.last_mut() {
                    *slot = candidate;
                }
                if !seen.contains(p) && !dirs.contains(p) {
                    break;
                }
            }
            if let Some(f) = fixes.get_mut(i) {
                f.push(Fix::Duplicate);
            }
        }
        seen.insert(p.clone());
    }
}

fn paths_len_bound(seen: &HashSet<Vec<String>>, dirs: &HashSet<Vec<String>>) -> usize {
    seen.len() + dirs.len() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(parts: &[&[u8]]) -> (Vec<String>, Vec<Fix>) {
        let mut fixes = Vec::new();
        let p = path(parts.iter().copied(), &mut fixes);
        (p, fixes)
    }

    #[test]
    fn traversal_is_removed() {
        let (p, f) = clean(&[b"..", b"..", b"etc", b"passwd"]);
        assert_eq!(p, ["etc", "passwd"]);
        assert_eq!(f, [Fix::DotComponent, Fix::DotComponent]);
        let (p, f) = clean(&[b"/etc/passwd"]);
        assert_eq!(p, ["_etc_passwd"]);
        assert_eq!(f, [Fix::Separator]);
        let (p, _) = clean(&[b"a\\..\\..\\b"]);
        assert_eq!(p, ["a_.._.._b"]);
        let (p, f) = clean(&[b"", b"x"]);
        assert_eq!(p, ["x"]);
        assert_eq!(f, [Fix::EmptyComponent]);
        let (p, f) = clean(&[b".."]);
        assert_eq!(p, ["_"]);
        assert_eq!(f, [Fix::DotComponent, Fix::EmptyPath]);
    }

    #[test]
    fn control_and_reserved() {
        let (p, f) = clean(&[b"a\0b\x1fc"]);
        assert_eq!(p, ["a_b_c"]);
        assert_eq!(f, [Fix::ControlCharacter]);
        let (p, f) = clean(&[b"con.txt", b"Lpt1", b"console"]);
        assert_eq!(p, ["_con.txt", "_Lpt1", "console"]);
        assert_eq!(f, [Fix::WindowsReserved, Fix::WindowsReserved]);
    }

    #[test]
    fn non_utf8_and_long() {
        let (p, f) = clean(&[b"caf\xe9"]);
        assert_eq!(p, ["caf\u{fffd}"]);
        assert_eq!(f, [Fix::NotUtf8]);
        let long = format!("{}.mkv", "é".repeat(200));
        let (p, f) = clean(&[long.as_bytes()]);
        assert!(p[0].len() <= MAX_COMPONENT_BYTES);
        assert!(p[0].ends_with(".mkv"));
        assert_eq!(f, [Fix::TooLong]);
        let (p, _) = clean(&["日本語.txt".as_bytes()]);
        assert_eq!(p, ["日本語.txt"]);
    }

    #[test]
    fn duplicates_and_file_dir_conflicts() {
        let mut paths = vec![
            vec!["a".to_owned()],
            vec!["a".to_owned(), "b.txt".to_owned()],
            vec!["a".to_owned(), "b.txt".to_owned()],
            vec![".pad".to_owned(), "0".to_owned()],
            vec![".pad".to_owned(), "0".to_owned()],
        ];
        let mut fixes = vec![Vec::new(); 5];
        dedupe(&mut paths, &[false, false, false, true, true], &mut fixes);
        assert_eq!(paths[0], ["a.1"]);
        assert_eq!(paths[1], ["a", "b.txt"]);
        assert_eq!(paths[2], ["a", "b.1.txt"]);
        assert_eq!(paths[3], [".pad", "0"]);
        assert_eq!(fixes[0], [Fix::Duplicate]);
        assert!(fixes[1].is_empty());
    }
}
