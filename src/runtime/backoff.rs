//! Capped exponential backoff with jitter: every retry loop in aioq (clients
//! reconnecting, the cluster storing and pulling, watch-db) waits with it.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()) << 32;
        Self {
            initial,
            max,
            current: initial,
            seed: seed | 1,
        }
    }

    /// The delay before the next attempt: the current step, minus up to a quarter
    /// of it at random (so many clients restarted together do not retry in
    /// lockstep); the step then doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter needs no cryptographic randomness.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = self.current;
        let jitter = step.mul_f64((self.seed % 1000) as f64 / 4000.0);
        self.current = (self.current * 2).min(self.max);
        step - jitter
    }

    /// Called after a successful connection.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut steps = Vec::new();
        for _ in 0..8 {
            steps.push(b.next_delay());
        }
        let nominal = [100u64, 200, 400, 800, 1600, 2000, 2000, 2000];
        for (got, want) in steps.iter().zip(nominal) {
            let want = Duration::from_millis(want);
            assert!(
                *got <= want && *got >= want.mul_f64(0.75),
                "{got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
