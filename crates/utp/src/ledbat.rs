//! LEDBAT congestion control as BEP 29 gives it: the one-way queuing delay
//! (the peer's timestamp difference minus the lowest seen lately) steers
//! the window toward a 100 ms target; a loss halves it.
//!
//! "Lately" is 13 minutes, as in libutp (uTorrent's own implementation),
//! not the BEP's two: while LEDBAT holds the queue at its target the queue
//! never drains, so a two-minute minimum learns the standing queue as the
//! base and the queue grows by the target every two minutes (the simulator
//! measured 100, 200, 300, 400 ms at 60, 180, 300, 400 s).
//!
//! Two additions that libtorrent also makes: slow start (the window doubles
//! per round trip until the delay nears the target or a packet is lost, so
//! a fast path is filled in milliseconds, not minutes) and growing only
//! while the window is the limit (an idle connection does not bank window).

use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct LedbatConfig {
    /// The queuing delay LEDBAT aims for (BEP 29: 100 ms).
    pub target: Duration,
    /// Bytes the window grows per round trip at zero delay (BEP 29's
    /// MAX_CWND_INCREASE_BYTES_PER_RTT, 3,000).
    pub gain: u32,
    /// The window never goes below this, so one packet can always go out.
    pub min_window: u32,
    /// Nor above this.
    pub max_window: u32,
}

impl Default for LedbatConfig {
    fn default() -> Self {
        LedbatConfig {
            target: Duration::from_millis(100),
            gain: 3000,
            min_window: 2 * 1452,
            max_window: 8 << 20,
        }
    }
}

/// Minutes of timestamp differences the base delay is the minimum of.
const BASE_HISTORY_MINUTES: usize = 13;

/// The sliding minimum of the timestamp differences: one minimum per
/// minute, the base is the lowest of the last [`BASE_HISTORY_MINUTES`].
#[derive(Clone, Debug, Default)]
struct BaseDelay {
    /// This minute's first, then older ones.
    minutes: [Option<u32>; BASE_HISTORY_MINUTES],
    minute_started: Option<Instant>,
}

/// Timestamps wrap at 2^32 µs: compare by signed distance.
fn lower(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl BaseDelay {
    fn add(&mut self, now: Instant, sample: u32) {
        let started = *self.minute_started.get_or_insert(now);
        if now.saturating_duration_since(started) >= Duration::from_secs(60) {
            self.minutes.rotate_right(1);
            self.minutes[0] = None;
            self.minute_started = Some(now);
        }
        match self.minutes[0] {
            Some(m) if !lower(sample, m) => {}
            _ => self.minutes[0] = Some(sample),
        }
    }

    fn base(&self) -> Option<u32> {
        self.minutes
            .iter()
            .flatten()
            .copied()
            .reduce(|a, b| if lower(b, a) { b } else { a })
    }
}

#[derive(Clone, Debug)]
pub struct Ledbat {
    cfg: LedbatConfig,
    /// The congestion window in bytes (`max_window` in the BEP).
    window: f64,
    slow_start: bool,
    base: BaseDelay,
    /// The last three queuing-delay samples; their minimum filters noise.
    recent: [u32; 3],
    recent_len: usize,
    recent_at: usize,
}

impl Ledbat {
    pub fn new(cfg: LedbatConfig, initial: u32) -> Self {
        let window = initial.clamp(cfg.min_window, cfg.max_window) as f64;
        Ledbat {
            cfg,
            window,
            slow_start: true,
            base: BaseDelay::default(),
            recent: [0; 3],
            recent_len: 0,
            recent_at: 0,
        }
    }

    pub fn window(&self) -> u32 {
        self.window as u32
    }

    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// The current queuing-delay estimate, if the peer has sent any.
    pub fn queuing_delay(&self) -> Option<Duration> {
        (self.recent_len > 0).then(|| {
            let min = self.recent[..self.recent_len]
                .iter()
                .copied()
                .min()
                .unwrap_or(0);
            Duration::from_micros(min as u64)
        })
    }

    /// A timestamp difference from the peer (its view of our one-way delay
    /// to it). Zero means "no sample yet" (BEP 29) and is skipped.
    pub fn delay_sample(&mut self, now: Instant, timestamp_diff_us: u32) {
        if timestamp_diff_us == 0 {
            return;
        }
        self.base.add(now, timestamp_diff_us);
        let base = self.base.base().unwrap_or(timestamp_diff_us);
        let queuing = timestamp_diff_us.wrapping_sub(base);
        // A huge value means the base moved under us; call it no queue.
        let queuing = if queuing > i32::MAX as u32 {
            0
        } else {
            queuing
        };
        self.recent[self.recent_at] = queuing;
        self.recent_at = (self.recent_at + 1) % self.recent.len();
        self.recent_len = (self.recent_len + 1).min(self.recent.len());
    }

    /// `acked` bytes left the window. `window_limited` says whether the
    /// sender had data it could not send because of the window.
    pub fn on_ack(&mut self, acked: u32, window_limited: bool) {
        if acked == 0 || !window_limited {
            return;
        }
        let target = self.cfg.target.as_micros() as f64;
        let delay = self
            .queuing_delay()
            .map(|d| d.as_micros() as f64)
            .unwrap_or(0.0);
        if self.slow_start {
            if delay > target * 0.9 {
                self.slow_start = false;
            } else {
                self.window += acked as f64;
            }
        }
        if !self.slow_start {
            let delay_factor = (target - delay) / target;
            let window_factor = acked as f64 / self.window.max(1.0);
            self.window += self.cfg.gain as f64 * delay_factor * window_factor;
        }
        self.clamp();
    }

    /// A packet was lost: halve the window (BEP 29 since 2012: 0.5) and
    /// leave slow start.
    pub fn on_loss(&mut self) {
        self.window *= 0.5;
        self.slow_start = false;
        self.clamp();
    }

    /// The retransmission timer fired: back to one packet's worth of
    /// window, and slow start back up to half of what it was.
    pub fn on_timeout(&mut self) {
        self.window = self.cfg.min_window as f64;
        self.slow_start = true;
    }

    fn clamp(&mut self) {
        self.window = self
            .window
            .clamp(self.cfg.min_window as f64, self.cfg.max_window as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn grows_below_target_and_shrinks_above_it() {
        let t0 = Instant::now();
        let mut l = Ledbat::new(LedbatConfig::default(), 20_000);
        l.delay_sample(t0, 1_000_000);
        l.on_ack(10_000, true);
        assert_eq!(l.window(), 30_000, "slow start adds what was acked");
        // 200 ms of queue: over 90% of target, so slow start ends and the
        // window shrinks by gain * (100 - 200) / 100 * acked / window.
        for i in 0..3 {
            l.delay_sample(at(t0, i), 1_200_000);
        }
        l.on_ack(30_000, true);
        assert!(!l.in_slow_start());
        assert_eq!(l.window(), 27_000);
        // No queue: grows by at most `gain` per window's worth of acks.
        for i in 0..3 {
            l.delay_sample(at(t0, 10 + i), 1_000_000);
        }
        l.on_ack(27_000, true);
        assert_eq!(l.window(), 30_000);
        // Not limited by the window: no growth.
        l.on_ack(27_000, false);
        assert_eq!(l.window(), 30_000);
        l.on_loss();
        assert_eq!(l.window(), 15_000);
        l.on_timeout();
        assert_eq!(l.window(), LedbatConfig::default().min_window);
    }

    #[test]
    fn base_delay_is_the_minimum_of_13_minutes_and_survives_wrap() {
        let t0 = Instant::now();
        let mut b = BaseDelay::default();
        b.add(t0, u32::MAX - 10);
        b.add(at(t0, 1), 5); // 16 µs later across the wrap: not lower
        assert_eq!(b.base(), Some(u32::MAX - 10));
        b.add(at(t0, 61_000), 100);
        assert_eq!(b.base(), Some(u32::MAX - 10), "last minute still counts");
        for minute in 2..13 {
            b.add(at(t0, minute * 61_000), 200);
        }
        assert_eq!(
            b.base(),
            Some(u32::MAX - 10),
            "12 minutes on it still counts"
        );
        b.add(at(t0, 13 * 61_000), 200);
        assert_eq!(
            b.base(),
            Some(100),
            "13 minutes on the oldest minimum is gone"
        );
    }
}
