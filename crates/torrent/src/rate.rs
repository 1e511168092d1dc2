//! Transfer rates and rate-limit budgets, both advanced by the time the
//! caller says has passed.

use std::time::Duration;

/// Bytes in the current window, smoothed at each tick: fast to rise,
/// smooth to fall.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rate {
    window: u64,
    per_sec: f64,
}

impl Rate {
    pub fn add(&mut self, n: u64) {
        self.window += n;
    }

    pub fn tick(&mut self, dt: Duration) {
        let inst = self.window as f64 / dt.as_secs_f64().max(1e-3);
        self.per_sec = if inst > self.per_sec {
            inst
        } else {
            self.per_sec * 0.7 + inst * 0.3
        };
        self.window = 0;
    }

    pub fn per_sec(&self) -> f64 {
        self.per_sec
    }
}

/// A token bucket: bytes that may still move under a limit.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    limit: Option<u64>,
    left: f64,
}

impl Budget {
    pub fn new(limit: Option<u64>) -> Self {
        Self { limit, left: 0.0 }
    }

    pub fn limited(&self) -> bool {
        self.limit.is_some()
    }

    /// A new limit, at once: what is left is cut to one second at the new
    /// rate (a lower limit must not inherit the old one's burst).
    pub fn set_limit(&mut self, limit: Option<u64>) {
        self.limit = limit;
        if let Some(l) = limit {
            self.left = self.left.min(l as f64);
        }
    }

    /// Refill for `dt`: at most one second of burst, and at least room for
    /// one `largest` unit (else a limit under one block per second would
    /// never allow one).
    pub fn refill(&mut self, dt: Duration, largest: u32) {
        if let Some(limit) = self.limit {
            let limit = limit as f64;
            self.left = (self.left + limit * dt.as_secs_f64()).min(limit.max(f64::from(largest)));
        }
    }

    /// Whether `n` bytes may move now (always, without a limit).
    pub fn allows(&self, n: u32) -> bool {
        self.limit.is_none() || self.left >= f64::from(n)
    }

    /// How many `unit`-sized pieces fit (unbounded without a limit).
    pub fn units(&self, unit: u32) -> usize {
        match self.limit {
            None => usize::MAX,
            Some(_) => (self.left / f64::from(unit)).max(0.0) as usize,
        }
    }

    pub fn spend(&mut self, n: u64) {
        if self.limit.is_some() {
            self.left -= n as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_rises_at_once_and_falls_smoothly() {
        let mut r = Rate::default();
        r.add(1000);
        r.tick(Duration::from_secs(1));
        assert_eq!(r.per_sec(), 1000.0);
        r.tick(Duration::from_secs(1));
        assert!((r.per_sec() - 700.0).abs() < 1e-9);
    }

    #[test]
    fn budget_allows_a_second_of_burst_and_one_unit_at_least() {
        let mut b = Budget::new(Some(1000));
        assert!(!b.allows(1));
        b.refill(Duration::from_secs(10), 16);
        assert!(b.allows(1000) && !b.allows(1001));
        b.spend(1000);
        assert_eq!(b.units(16), 0);
        // A limit below one block still lets one block through.
        let mut tiny = Budget::new(Some(10));
        tiny.refill(Duration::from_secs(5), 16384);
        assert_eq!(tiny.units(16384), 0);
        tiny.refill(Duration::from_secs(5000), 16384);
        assert_eq!(tiny.units(16384), 1);
        let free = Budget::new(None);
        assert!(free.allows(u32::MAX) && free.units(1) == usize::MAX);
    }
}
