//! Sharing a session-wide rate limit between its torrents. Each torrent
//! keeps its own token bucket (in its core); once a second the session
//! gives each a share of the global limit, max-min fair on what each
//! showed it wants: a torrent using less than its share keeps what it uses
//! plus some room, the rest is split evenly between those that use all of
//! theirs.

use std::sync::atomic::{AtomicU64, Ordering};

/// The smallest share: a torrent that wakes up can show it wants more.
pub const MIN_SHARE: u64 = 1024;
/// Room over what a torrent used, so that it can show it wants more.
const HEADROOM: u64 = 16 * 1024;

/// A torrent's recent rates, bytes per second, written by its driver.
#[derive(Debug, Default)]
pub struct RateGauge {
    down: AtomicU64,
    up: AtomicU64,
}

impl RateGauge {
    pub fn set(&self, down: f64, up: f64) {
        self.down.store(down as u64, Ordering::Relaxed);
        self.up.store(up as u64, Ordering::Relaxed);
    }

    /// (down, up).
    pub fn get(&self) -> (u64, u64) {
        (
            self.down.load(Ordering::Relaxed),
            self.up.load(Ordering::Relaxed),
        )
    }
}

/// What a torrent wants, judged from its last share and what it used of
/// it: `None` (as much as it can get) when it used most of it.
pub fn demand(used: u64, share: Option<u64>) -> Option<u64> {
    match share {
        Some(s) if used < s - s / 5 => Some(used + used / 4 + HEADROOM),
        _ => None,
    }
}

/// Split `limit` between torrents wanting `demands` (`None`: unbounded):
/// max-min fair, and what nobody wants is spread evenly on top. Each
/// share is at least [`MIN_SHARE`].
pub fn split(limit: u64, demands: &[Option<u64>]) -> Vec<u64> {
    let mut out = vec![0u64; demands.len()];
    let mut left = limit;
    let mut open: Vec<usize> = (0..demands.len()).collect();
    while !open.is_empty() {
        let fair = left / open.len() as u64;
        let (small, big): (Vec<usize>, Vec<usize>) = open
            .iter()
            .partition(|&&i| demands[i].is_some_and(|d| d <= fair));
        if small.is_empty() {
            for &i in &open {
                out[i] = fair;
            }
            left -= fair * open.len() as u64;
            break;
        }
        for i in small {
            let d = demands[i].unwrap_or(0);
            out[i] = d;
            left -= d;
        }
        open = big;
    }
    if !out.is_empty() {
        let extra = left / out.len() as u64;
        for s in &mut out {
            *s = (*s + extra).max(MIN_SHARE);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hungry_split_what_the_modest_leave() {
        // 1000 among one wanting 100 and two wanting all they can get.
        let s = split(1_000_000, &[Some(100_000), None, None]);
        assert_eq!(s, vec![100_000, 450_000, 450_000]);
        // Nobody hungry: the rest is spread on top.
        let s = split(1_000_000, &[Some(100_000), Some(200_000)]);
        assert_eq!(s, vec![450_000, 550_000]);
        // All hungry: even.
        assert_eq!(split(900_000, &[None, None, None]), vec![300_000; 3]);
        assert!(split(1_000_000, &[]).is_empty());
    }

    #[test]
    fn never_more_than_the_limit_in_total() {
        let demands = [
            Some(5_000),
            None,
            Some(300_000),
            None,
            Some(0),
            Some(1_000_000),
        ];
        for limit in [100_000u64, 500_000, 2_000_000, 10_000_000] {
            let s = split(limit, &demands);
            // Over the limit by no more than the floors given.
            let floors = MIN_SHARE * demands.len() as u64;
            assert!(s.iter().sum::<u64>() <= limit + floors, "{limit}: {s:?}");
            // Max-min: a hungry torrent gets at least as much as any other.
            assert!(s[1] >= *s.iter().max().unwrap() - 1, "{limit}: {s:?}");
        }
    }

    #[test]
    fn a_torrent_that_used_its_share_wants_more() {
        assert_eq!(demand(95_000, Some(100_000)), None);
        assert_eq!(
            demand(10_000, Some(100_000)),
            Some(10_000 + 2_500 + HEADROOM)
        );
        assert_eq!(demand(0, None), None);
    }
}
