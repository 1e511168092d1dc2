//! Round-trip time and the retransmission timeout (BEP 29 "timeouts"):
//! `rtt_var += (|rtt - sample| - rtt_var) / 4`, `rtt += (sample - rtt) / 8`,
//! `timeout = max(rtt + 4 * rtt_var, 500 ms)`, 1 s before the first sample,
//! doubled for each consecutive timeout.

use std::time::Duration;

const INITIAL: Duration = Duration::from_millis(1000);
const MIN: Duration = Duration::from_millis(500);
/// A timeout never waits longer than this, however often it backed off.
const MAX: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Default)]
pub struct Rtt {
    /// Smoothed round trip and its mean deviation, in microseconds;
    /// `None` until the first sample.
    smoothed: Option<(u64, u64)>,
    /// Consecutive timeouts since the last packet was acked.
    backoff: u32,
}

impl Rtt {
    /// A sample from a packet that was sent once and then acked (Karn's
    /// rule: a resent packet's ack is ambiguous).
    pub fn sample(&mut self, rtt: Duration) {
        let sample = rtt.as_micros().min(u64::MAX as u128) as u64;
        self.smoothed = Some(match self.smoothed {
            None => (sample, sample / 2),
            Some((srtt, var)) => {
                let delta = srtt.abs_diff(sample);
                let var = (var as i64 + (delta as i64 - var as i64) / 4) as u64;
                let srtt = (srtt as i64 + (sample as i64 - srtt as i64) / 8) as u64;
                (srtt, var)
            }
        });
    }

    /// Something new was acked: the peer is alive, stop backing off.
    pub fn acked(&mut self) {
        self.backoff = 0;
    }

    /// A timeout fired; returns how many have fired in a row.
    pub fn timed_out(&mut self) -> u32 {
        self.backoff = self.backoff.saturating_add(1);
        self.backoff
    }

    pub fn smoothed(&self) -> Option<Duration> {
        self.smoothed.map(|(s, _)| Duration::from_micros(s))
    }

    /// The current retransmission timeout, backoff included.
    pub fn timeout(&self) -> Duration {
        let base = match self.smoothed {
            None => INITIAL,
            Some((srtt, var)) => Duration::from_micros(srtt + 4 * var).max(MIN),
        };
        base.saturating_mul(1 << self.backoff.min(7)).min(MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_bep_formula_and_backs_off() {
        let mut r = Rtt::default();
        assert_eq!(r.timeout(), INITIAL);
        r.sample(Duration::from_millis(200));
        // rtt 200, var 100: 200 + 400 = 600 ms
        assert_eq!(r.timeout(), Duration::from_millis(600));
        r.sample(Duration::from_millis(200));
        // var += (0 - 100) / 4 → 75: 200 + 300 = 500 ms
        assert_eq!(r.timeout(), Duration::from_millis(500));
        for _ in 0..10 {
            r.sample(Duration::from_micros(50));
        }
        assert_eq!(r.timeout(), MIN, "never below half a second");
        assert_eq!(r.timed_out(), 1);
        assert_eq!(r.timeout(), 2 * MIN);
        r.timed_out();
        assert_eq!(r.timeout(), 4 * MIN);
        for _ in 0..20 {
            r.timed_out();
        }
        assert_eq!(r.timeout(), MAX);
        r.acked();
        assert_eq!(r.timeout(), MIN);
    }
}
