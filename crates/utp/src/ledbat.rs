//! LEDBAT congestion control: BEP 29's, with LEDBAT++'s decrease and
//! slowdowns (draft-irtf-iccrg-ledbat-plus-plus) and a gentler cut for a
//! loss without a queue.
//!
//! As in BEP 29, the one-way queuing delay (the peer's timestamp difference
//! minus the lowest seen lately) steers the window toward a 100 ms target,
//! and below the target the window grows by `gain` (3,000 bytes) per round
//! trip. Where it differs, and why:
//!
//! - **Above the target the decrease is proportional to the window**:
//!   per round trip, `gain - window * (delay / target - 1)`, at most half
//!   the window (LEDBAT++). BEP 29 takes off `gain * (delay / target - 1)`
//!   whatever the window, so increase and decrease are both additive and
//!   nothing pulls two flows' windows together: two flows started together
//!   on a deep buffer kept shares of 0.66 / 0.34 in the simulator. With the
//!   proportional decrease the larger window gives up more and they
//!   converge; the queue settles a little above the target (at
//!   `target * (1 + gain / window)`), and a slow-start overshoot drains in
//!   a few round trips instead of ~20 s.
//! - **Slowdowns** (LEDBAT++): a flow that joins a queue other flows hold
//!   takes their queue for its base delay, pushes the queue a target
//!   higher, and the others fall to their minimum window (a flow 10 s
//!   late took 0.995 of the link). So, two round trips after slow start
//!   first ends and then every nine times the last slowdown's duration,
//!   the window drops to the minimum (two packets) for two round trips,
//!   the queue drains, every flow sees the true base delay, and slow start
//!   takes the window back to what it was. A slowdown costs the link a
//!   few percent (the simulator's utilisation went from 1.00 to ~0.95),
//!   so none is taken while the queuing delay has stayed below a quarter
//!   of the target since the last one: there is no queue of ours to
//!   drain (a far path with random loss and no queue never pays for them).
//! - **A loss without a queue of ours cuts the window by 0.7**
//!   ([`LedbatConfig::loss_factor`], CUBIC's β), not 0.5: below a quarter
//!   of the target the loss is not our queue overflowing, and halving for
//!   random loss holds a far path (300 ms, 1% loss) at ~20 packets in
//!   flight. A loss with a queue still halves the window (a shallow buffer
//!   overflows with its queue full, well above a quarter of the target).
//!   One cut per window of data; a retransmission timeout goes back to
//!   the minimum window.
//! - Not LEDBAT++'s: its 60 ms target and its smaller gain on long base
//!   delays (that would slow far paths further); BEP 29's 100 ms and
//!   3,000 bytes stay.
//!
//! "Lately" is 13 minutes, as in libutp (uTorrent's own implementation),
//! not the BEP's two: without slowdowns the queue held at the target never
//! drained, so a two-minute minimum learned the standing queue as the base
//! and the queue grew by the target every two minutes (the simulator
//! measured 100, 200, 300, 400 ms at 60, 180, 300, 400 s). Slowdowns now
//! drain it every few seconds; the long history stays for flows that are
//! never window-limited long enough to take one.
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
    /// Bytes the window grows per round trip below the target (BEP 29's
    /// MAX_CWND_INCREASE_BYTES_PER_RTT, 3,000). Not reduced for long base
    /// delays as LEDBAT++ does: that would slow far paths further.
    pub gain: u32,
    /// The window never goes below this: two Ethernet-sized packets
    /// (1,472 bytes of UDP payload), the floor LEDBAT++ slows down to.
    pub min_window: u32,
    /// Nor above this.
    pub max_window: u32,
    /// What a loss multiplies the window by while our queuing delay is
    /// below a quarter of the target (0.7, CUBIC's β of RFC 9438): with no
    /// standing queue of ours the loss is not our queue overflowing but
    /// the path's own (a lossy radio, a far relay), and halving for it
    /// holds a far path at a few packets per round trip. A loss with a
    /// queue halves the window whatever this says. 0.5 halves always, as
    /// BEP 29 and libtorrent do.
    pub loss_factor: f64,
}

impl Default for LedbatConfig {
    fn default() -> Self {
        LedbatConfig {
            target: Duration::from_millis(100),
            gain: 3000,
            min_window: 2 * 1472,
            max_window: 8 << 20,
            loss_factor: 0.7,
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

/// Where the controller is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// The window grows by what is acked (doubles per round trip): at the
    /// start and after a retransmission timeout.
    SlowStart,
    /// Steered by the queuing delay.
    Avoidance,
    /// A slowdown: the window held at the minimum until `until` so the
    /// queue drains and the base delay is measured again; `restore` is the
    /// window it had.
    Frozen {
        started: Instant,
        until: Instant,
        restore: f64,
    },
    /// After a slowdown: slow start back up to `restore`.
    Regrow { started: Instant, restore: f64 },
}

#[derive(Clone, Debug)]
pub struct Ledbat {
    cfg: LedbatConfig,
    /// The congestion window in bytes (`max_window` in the BEP).
    window: f64,
    phase: Phase,
    base: BaseDelay,
    /// The last three queuing-delay samples; their minimum filters noise.
    recent: [u32; 3],
    recent_len: usize,
    recent_at: usize,
    /// When the next slowdown is due; `None` until slow start first ends.
    next_slowdown: Option<Instant>,
    /// The queuing delay went above a quarter of the target since the last
    /// slowdown ended: there is a queue of ours for a slowdown to drain.
    queue_seen: bool,
    /// Delay samples before this do not count for `queue_seen`: they are
    /// slow start's bursts, still being acked.
    watch_queue_from: Option<Instant>,
    /// The last smoothed round trip `on_ack` was given.
    rtt: Duration,
}

/// A slowdown holds the window at the minimum for this many round trips.
const SLOWDOWN_RTTS: u32 = 2;
/// The next slowdown comes this many times the last one's duration after
/// its end: slowdowns take at most a tenth of the time.
const SLOWDOWN_SPACING: u32 = 9;

impl Ledbat {
    pub fn new(cfg: LedbatConfig, initial: u32) -> Self {
        let window = initial.clamp(cfg.min_window, cfg.max_window) as f64;
        Ledbat {
            cfg,
            window,
            phase: Phase::SlowStart,
            base: BaseDelay::default(),
            recent: [0; 3],
            recent_len: 0,
            recent_at: 0,
            next_slowdown: None,
            queue_seen: false,
            watch_queue_from: None,
            rtt: Duration::from_secs(1),
        }
    }

    pub fn window(&self) -> u32 {
        self.window as u32
    }

    /// Growing by what is acked: slow start, or back up after a slowdown.
    pub fn in_slow_start(&self) -> bool {
        matches!(self.phase, Phase::SlowStart | Phase::Regrow { .. })
    }

    /// In a slowdown (held at the minimum, or growing back).
    pub fn in_slowdown(&self) -> bool {
        matches!(self.phase, Phase::Frozen { .. } | Phase::Regrow { .. })
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

    /// The queuing delay over the target (1.0: at the target; 0 before
    /// any sample).
    fn delay_ratio(&self) -> f64 {
        let delay = self.queuing_delay().unwrap_or(Duration::ZERO);
        delay.as_secs_f64() / self.cfg.target.as_secs_f64()
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
        if self.delay_ratio() > 0.25 && self.watch_queue_from.is_none_or(|t| now >= t) {
            self.queue_seen = true;
        }
    }

    /// `acked` bytes left the window at `now`; `rtt` is the smoothed round
    /// trip (it times slowdowns). `window_limited` says whether the sender
    /// had data it could not send because of the window: only then does
    /// the window grow (an idle connection does not bank window), while a
    /// delay over the target shrinks it either way.
    pub fn on_ack(
        &mut self,
        now: Instant,
        rtt: Option<Duration>,
        acked: u32,
        window_limited: bool,
    ) {
        if acked == 0 {
            return;
        }
        if let Some(rtt) = rtt {
            self.rtt = rtt;
        }
        let rtt = self.rtt;
        let acked = acked as f64;
        let ratio = self.delay_ratio();
        if let Phase::Frozen {
            started,
            until,
            restore,
        } = self.phase
        {
            if now < until {
                return;
            }
            self.phase = Phase::Regrow { started, restore };
        }
        match self.phase {
            Phase::SlowStart => {
                if ratio > 0.9 {
                    self.leave_slow_start(now);
                } else if window_limited {
                    self.window += acked;
                }
            }
            Phase::Regrow { started, restore } => {
                if ratio > 0.9 || self.window >= restore {
                    self.end_slowdown(now, started);
                } else if window_limited {
                    self.window = (self.window + acked).min(restore);
                }
            }
            Phase::Avoidance | Phase::Frozen { .. } => {}
        }
        if self.phase == Phase::Avoidance {
            self.avoid(acked, ratio, window_limited);
            self.maybe_slow_down(now, rtt);
        }
        self.clamp();
    }

    /// LEDBAT++'s window update: `gain` per round trip below the target;
    /// above it, `gain` less the window times how far over the target the
    /// delay is, but at most half the window per round trip. The decrease
    /// is multiplicative, so of two flows sharing a queue the larger one
    /// gives up more and the windows converge (BEP 29's additive decrease
    /// leaves any split as it is).
    fn avoid(&mut self, acked: f64, ratio: f64, window_limited: bool) {
        let gain = self.cfg.gain as f64;
        let w = self.window.max(1.0);
        let per_rtt = (gain - w * (ratio - 1.0).max(0.0)).max(-w / 2.0);
        if per_rtt > 0.0 && !window_limited {
            return;
        }
        self.window += per_rtt * acked / w;
    }

    /// LEDBAT++'s slowdowns: a flow that joins a queue others hold takes
    /// their queue for its base delay and pushes theirs out. Now and then
    /// each flow drops to the minimum window for two round trips, the
    /// queue drains and every flow measures the true base again. The
    /// first comes two round trips after slow start ends; each next one
    /// nine times the last one's duration after its end. One is skipped
    /// (until a queue shows) while the queuing delay has stayed below a
    /// quarter of the target since the last: there is no queue of ours to
    /// drain, and a far, lossy path with none would only pay for it.
    fn maybe_slow_down(&mut self, now: Instant, rtt: Duration) {
        match self.next_slowdown {
            None => self.next_slowdown = Some(now + SLOWDOWN_RTTS * rtt),
            Some(at) if now >= at && self.queue_seen => {
                self.phase = Phase::Frozen {
                    started: now,
                    until: now + SLOWDOWN_RTTS * rtt,
                    restore: self.window,
                };
                self.window = self.cfg.min_window as f64;
            }
            Some(_) => {}
        }
    }

    /// Slow start's own bursts queue for a moment even on a path without
    /// a standing queue (a far path whose slow start a loss ended): only a
    /// queue seen from a round trip after it calls for a slowdown.
    fn leave_slow_start(&mut self, now: Instant) {
        self.phase = Phase::Avoidance;
        self.queue_seen = false;
        self.watch_queue_from = Some(now + self.rtt);
    }

    fn end_slowdown(&mut self, now: Instant, started: Instant) {
        let took = now.saturating_duration_since(started);
        self.next_slowdown = Some(now + SLOWDOWN_SPACING * took);
        self.queue_seen = false;
        self.phase = Phase::Avoidance;
    }

    /// A packet was lost (one call per window of packets): the window is
    /// cut by [`LedbatConfig::loss_factor`] if the queuing delay is below a
    /// quarter of the target, halved otherwise; slow start ends.
    pub fn on_loss(&mut self, now: Instant) {
        let factor = if self.delay_ratio() < 0.25 {
            self.cfg.loss_factor
        } else {
            0.5
        };
        match self.phase {
            Phase::Frozen {
                started,
                until,
                restore,
            } => {
                // Already at the minimum: grow back to less.
                self.phase = Phase::Frozen {
                    started,
                    until,
                    restore: restore * factor,
                };
            }
            Phase::Regrow { started, .. } => {
                self.window *= factor;
                self.end_slowdown(now, started);
            }
            Phase::SlowStart => {
                self.window *= factor;
                self.leave_slow_start(now);
            }
            Phase::Avoidance => self.window *= factor,
        }
        self.clamp();
    }

    /// The retransmission timer fired: back to the minimum window, and
    /// slow start (until the delay nears the target or a packet is lost).
    pub fn on_timeout(&mut self, now: Instant) {
        if let Phase::Frozen { started, .. } | Phase::Regrow { started, .. } = self.phase {
            self.end_slowdown(now, started);
        }
        self.window = self.cfg.min_window as f64;
        self.phase = Phase::SlowStart;
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

    const BASE: u32 = 1_000_000;
    const RTT: Option<Duration> = Some(Duration::from_millis(100));

    /// A controller with `window` that has seen the base delay once.
    fn fresh(t0: Instant, window: u32) -> Ledbat {
        let mut l = Ledbat::new(LedbatConfig::default(), window);
        l.delay_sample(t0, BASE);
        l
    }

    /// Three samples of `queue_ms` of queuing delay (the filter's length).
    fn queue(l: &mut Ledbat, now: Instant, queue_ms: u32) {
        for _ in 0..3 {
            l.delay_sample(now, BASE + queue_ms * 1000);
        }
    }

    #[test]
    fn grows_below_target_and_shrinks_in_proportion_above_it() {
        let t0 = Instant::now();
        let mut l = fresh(t0, 20_000);
        l.on_ack(t0, RTT, 10_000, true);
        assert_eq!(l.window(), 30_000, "slow start adds what was acked");
        // 200 ms of queue: over 90% of the target, so slow start ends; per
        // round trip the window changes by gain - window * (200/100 - 1),
        // at most -window / 2: -15,000 for a window's worth of acks.
        queue(&mut l, t0, 200);
        l.on_ack(t0, RTT, 30_000, true);
        assert!(!l.in_slow_start());
        assert_eq!(l.window(), 15_000);
        // 150 ms: 3,000 - 15,000 * 0.5 = -4,500, whether or not the window
        // was the limit.
        queue(&mut l, t0, 150);
        l.on_ack(t0, RTT, 15_000, false);
        assert_eq!(l.window(), 10_500);
        // No queue: `gain` per window's worth of acks, only when limited.
        queue(&mut l, t0, 0);
        l.on_ack(t0, RTT, 10_500, true);
        assert_eq!(l.window(), 13_500);
        l.on_ack(t0, RTT, 10_500, false);
        assert_eq!(l.window(), 13_500);
        // A loss without a queue of ours: cut by 0.7; with one, halved.
        l.on_loss(t0);
        assert_eq!(l.window(), 9_450);
        queue(&mut l, t0, 30);
        l.on_loss(t0);
        assert_eq!(l.window(), 4_725);
        l.on_timeout(t0);
        assert_eq!(l.window(), LedbatConfig::default().min_window);
        assert!(l.in_slow_start());
    }

    #[test]
    fn two_windows_over_the_target_converge() {
        // The same 150 ms of queue seen by a small and a large window: the
        // large one gives up more, and the gap between them halves in a
        // round trip (BEP 29's decrease, gain * 0.5 each, keeps the gap).
        let t0 = Instant::now();
        let mut windows = [20_000u32, 60_000].map(|w| {
            let mut l = fresh(t0, w);
            queue(&mut l, t0, 150);
            l.on_ack(t0, RTT, 1, true); // leaves slow start
            l
        });
        let before: Vec<u32> = windows.iter().map(Ledbat::window).collect();
        for l in &mut windows {
            let w = l.window();
            l.on_ack(t0, RTT, w, true);
        }
        let after: Vec<u32> = windows.iter().map(Ledbat::window).collect();
        assert_eq!(after, [13_000, 33_000], "from {before:?}");
    }

    #[test]
    fn slows_down_to_measure_the_base_and_grows_back() {
        let t0 = Instant::now();
        let min = LedbatConfig::default().min_window;
        let mut l = fresh(t0, 60_000);
        // Slow start ends at the target; the first slowdown is due two
        // round trips later, once a queue shows after slow start's bursts.
        queue(&mut l, t0, 100);
        l.on_ack(t0, RTT, 1, true);
        assert!(!l.in_slow_start());
        queue(&mut l, at(t0, 150), 100);
        l.on_ack(at(t0, 150), RTT, 1_000, true);
        assert!(!l.in_slowdown(), "not yet due");
        let before = l.window();
        l.on_ack(at(t0, 200), RTT, 1_000, false);
        assert!(l.in_slowdown());
        assert_eq!(l.window(), min, "down to the minimum");
        // Two round trips at the minimum, whatever is acked; the queue
        // drains meanwhile.
        queue(&mut l, at(t0, 300), 0);
        l.on_ack(at(t0, 399), RTT, 50_000, true);
        assert_eq!(l.window(), min);
        // Then slow start back to the window it had (the ack that gets
        // there grows it as outside a slowdown: by at most `gain`).
        let mut t = 400;
        while l.in_slowdown() {
            let w = l.window();
            l.on_ack(at(t0, t), RTT, w, true);
            assert!(l.window() <= before || !l.in_slowdown());
            t += 100;
        }
        assert!((before..=before + 3_000).contains(&l.window()));
        // The next one comes nine times its duration after its end.
        let ended = t - 100;
        let next = ended + 9 * (ended - 200);
        queue(&mut l, at(t0, ended), 100);
        l.on_ack(at(t0, next - 1), RTT, 1_000, true);
        assert!(!l.in_slowdown());
        l.on_ack(at(t0, next), RTT, 1_000, true);
        assert!(l.in_slowdown());
    }

    #[test]
    fn no_slowdown_without_a_queue_of_ours() {
        // A far, lossy path: a loss ends slow start, the queue stays under
        // a quarter of the target, and the window never drops to the
        // minimum for a slowdown.
        let t0 = Instant::now();
        let mut l = fresh(t0, 100_000);
        queue(&mut l, t0, 40); // slow start's own burst
        l.on_loss(t0);
        let mut t = 0;
        while t < 60_000 {
            queue(&mut l, at(t0, t), 20);
            l.on_ack(at(t0, t), RTT, 10_000, true);
            assert!(!l.in_slowdown(), "at {t} ms");
            t += 100;
        }
        // A queue shows: the slowdown, long overdue, comes at once.
        queue(&mut l, at(t0, t), 30);
        l.on_ack(at(t0, t), RTT, 10_000, true);
        assert!(l.in_slowdown());
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
