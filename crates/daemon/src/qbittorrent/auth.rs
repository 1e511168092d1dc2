//! qBittorrent's sessions: `auth/login` gives a cookie `SID`, good until
//! an hour passes without a request (qBittorrent's default session
//! timeout), and five failed logins ban the address for an hour. Time is
//! passed in, so tests can move it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// A session unused this long is gone (qBittorrent's `WebUISessionTimeout`).
pub const SESSION_IDLE: Duration = Duration::from_secs(3600);
/// Sessions kept at most; a new one evicts the least recently used.
pub const MAX_SESSIONS: usize = 256;
/// Failed logins before a ban (qBittorrent's `WebUIMaxAuthFailCount`).
pub const MAX_FAILURES: u32 = 5;
/// How long a ban lasts (qBittorrent's `WebUIBanDuration`).
pub const BAN: Duration = Duration::from_secs(3600);
/// Addresses with failures remembered at most.
pub const MAX_TRACKED_ADDRESSES: usize = 4096;

const SID_LEN: usize = 32;

pub const BANNED: &str =
    "Your IP address has been banned after too many failed authentication attempts.";

struct Session {
    sid: [u8; SID_LEN],
    last_used: Instant,
}

struct Failures {
    count: u32,
    /// Set once banned.
    banned_until: Option<Instant>,
    last: Instant,
}

#[derive(Default)]
struct Inner {
    sessions: Vec<Session>,
    failures: HashMap<IpAddr, Failures>,
}

#[derive(Default)]
pub struct Auth {
    inner: Mutex<Inner>,
}

/// A new session id: 32 characters from the OS's random numbers.
fn new_sid() -> [u8; SID_LEN] {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut raw = [0u8; SID_LEN];
    // No OS randomness would leave a guessable cookie: refuse to run.
    getrandom::fill(&mut raw).expect("the OS random number generator");
    raw.map(|b| ALPHABET[usize::from(b) % ALPHABET.len()])
}

impl Auth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a session; its id is the cookie's value.
    pub fn start(&self, now: Instant) -> String {
        let mut inner = self.lock();
        inner
            .sessions
            .retain(|s| now.saturating_duration_since(s.last_used) < SESSION_IDLE);
        if inner.sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = inner
                .sessions
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(i, _)| i)
            {
                inner.sessions.swap_remove(oldest);
            }
        }
        let sid = new_sid();
        inner.sessions.push(Session {
            sid,
            last_used: now,
        });
        String::from_utf8_lossy(&sid).into_owned()
    }

    /// Whether `sid` is a live session; using it keeps it alive. Every
    /// session is compared, in constant time each.
    pub fn check(&self, sid: &[u8], now: Instant) -> bool {
        let mut inner = self.lock();
        let mut hit = None;
        for (i, s) in inner.sessions.iter().enumerate() {
            let same = sid.len() == SID_LEN && bool::from(s.sid.ct_eq(sid));
            let live = now.saturating_duration_since(s.last_used) < SESSION_IDLE;
            if same && live {
                hit = Some(i);
            }
        }
        match hit {
            Some(i) => {
                inner.sessions[i].last_used = now;
                true
            }
            None => false,
        }
    }

    /// End a session (`auth/logout`).
    pub fn end(&self, sid: &[u8]) {
        self.lock()
            .sessions
            .retain(|s| !(sid.len() == SID_LEN && bool::from(s.sid.ct_eq(sid))));
    }

    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.lock()
            .failures
            .get(&ip)
            .and_then(|f| f.banned_until)
            .is_some_and(|until| now < until)
    }

    /// A failed login from `ip`; the fifth bans it.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut inner = self.lock();
        // Forget bans that ran out, and failures an hour old.
        inner.failures.retain(|_, f| match f.banned_until {
            Some(until) => now < until,
            None => now.saturating_duration_since(f.last) < BAN,
        });
        if inner.failures.len() >= MAX_TRACKED_ADDRESSES && !inner.failures.contains_key(&ip) {
            // Full: drop the address that failed longest ago (never a ban
            // while addresses that are not banned remain).
            let victim = inner
                .failures
                .iter()
                .min_by_key(|(_, f)| (f.banned_until.is_some(), f.last))
                .map(|(ip, _)| *ip);
            if let Some(v) = victim {
                inner.failures.remove(&v);
            }
        }
        let f = inner.failures.entry(ip).or_insert(Failures {
            count: 0,
            banned_until: None,
            last: now,
        });
        f.count += 1;
        f.last = now;
        if f.count >= MAX_FAILURES {
            f.banned_until = Some(now + BAN);
        }
    }

    /// A good login clears the address's failures.
    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().failures.remove(&ip);
    }

    pub fn sessions(&self) -> usize {
        self.lock().sessions.len()
    }
}

/// The value of the `SID` cookie in Cookie header values, whatever else
/// they hold (cross-seed pastes the whole Set-Cookie line, attributes
/// and all). The first `SID` wins.
pub fn sid_from_cookies<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    for value in values {
        for pair in value.split(|&b| b == b';' || b == b',') {
            let pair = trim(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if trim(&pair[..eq]) == b"SID" {
                let v = trim(&pair[eq + 1..]);
                let v = v
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v);
                return Some(v);
            }
        }
    }
    None
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_is_found_among_attributes() {
        let v: &[u8] = b"SID=abc; HttpOnly; SameSite=Lax; path=/";
        assert_eq!(sid_from_cookies([v]), Some(&b"abc"[..]));
        let v: &[u8] = b"theme=dark; QSID=x;  SID = def ";
        assert_eq!(sid_from_cookies([v]), Some(&b"def"[..]));
        let v: &[u8] = b"SIDX=1";
        assert_eq!(sid_from_cookies([v]), None);
    }

    #[test]
    fn sessions_expire_and_end() {
        let auth = Auth::default();
        let t0 = Instant::now();
        let sid = auth.start(t0);
        assert_eq!(sid.len(), SID_LEN);
        assert!(auth.check(sid.as_bytes(), t0 + Duration::from_secs(3000)));
        // Used at 3000 s: alive until 3000 + 3600.
        assert!(auth.check(sid.as_bytes(), t0 + Duration::from_secs(6500)));
        assert!(!auth.check(sid.as_bytes(), t0 + Duration::from_secs(6500 + 3600)));
        let sid = auth.start(t0);
        auth.end(sid.as_bytes());
        assert!(!auth.check(sid.as_bytes(), t0));
        assert!(!auth.check(b"", t0));
    }

    #[test]
    fn sessions_are_bounded() {
        let auth = Auth::default();
        let t0 = Instant::now();
        let first = auth.start(t0);
        for i in 1..=MAX_SESSIONS {
            auth.start(t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(auth.sessions(), MAX_SESSIONS);
        assert!(!auth.check(first.as_bytes(), t0 + Duration::from_secs(1)));
    }

    #[test]
    fn five_failures_ban_for_an_hour() {
        let auth = Auth::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..4 {
            auth.failed(ip, t0);
        }
        assert!(!auth.is_banned(ip, t0));
        auth.failed(ip, t0);
        assert!(auth.is_banned(ip, t0 + Duration::from_secs(3599)));
        assert!(!auth.is_banned(ip, t0 + BAN));
    }

    #[test]
    fn failures_are_bounded() {
        let auth = Auth::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 10) {
            auth.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(auth.lock().failures.len() <= MAX_TRACKED_ADDRESSES);
    }
}
