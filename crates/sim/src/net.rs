//! The network model: how long a datagram takes between two nodes and
//! whether it arrives.

use std::time::Duration;

use lodestone_dht::rng::Rng;

#[derive(Debug, Clone)]
pub struct NetModel {
    /// Median round-trip time between two nodes.
    pub median_rtt: Duration,
    /// Spread of the log-normal RTT distribution (sigma of ln RTT).
    pub rtt_sigma: f64,
    /// Probability that any one datagram is lost.
    pub loss: f64,
    seed: u64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl NetModel {
    pub fn new(median_rtt: Duration, rtt_sigma: f64, loss: f64, seed: u64) -> Self {
        Self {
            median_rtt,
            rtt_sigma,
            loss,
            seed,
        }
    }

    /// The fixed one-way delay between nodes `a` and `b` (symmetric): half
    /// a log-normal RTT drawn from the pair's own seed.
    pub fn one_way(&self, a: usize, b: usize) -> Duration {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let h = splitmix(self.seed ^ splitmix((lo as u64) << 32 | hi as u64));
        // Box-Muller from two 26-bit uniforms of the pair hash.
        let u1 = ((h >> 38) as f64 + 1.0) / ((1u64 << 26) as f64 + 1.0);
        let u2 = ((h >> 12) & ((1 << 26) - 1)) as f64 / (1u64 << 26) as f64;
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let rtt = self.median_rtt.as_secs_f64() * (self.rtt_sigma * z).exp();
        Duration::from_secs_f64((rtt / 2.0).clamp(0.000_5, 5.0))
    }

    pub fn lost(&self, rng: &mut Rng) -> bool {
        self.loss > 0.0 && rng.unit() < self.loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_symmetry() {
        let m = NetModel::new(Duration::from_millis(80), 0.6, 0.0, 7);
        let mut rtts: Vec<f64> = (0..2000)
            .map(|i| m.one_way(i, i + 1).as_secs_f64() * 2.0)
            .collect();
        rtts.sort_by(f64::total_cmp);
        let median = rtts[rtts.len() / 2];
        assert!((median - 0.080).abs() < 0.01, "median rtt {median}");
        assert_eq!(m.one_way(3, 9), m.one_way(9, 3));
    }
}
