//! Spacing out replication attempts to a peer that cannot be reached.
//!
//! openraft backs off after an `Unreachable` error, but it sleeps *inside the request stream*
//! of the next replication session — and a session whose connection fails never polls that
//! stream. So with a follower down the leader retried it in a tight loop: 2,100 warnings per
//! second, 1.5 MB/s of log, on a three-node `logctl dev` after `kill -9` of one node. The
//! replication stream therefore waits here after each connection failure, doubling from
//! [`FIRST_DELAY`] up to [`MAX_DELAY`], and starts over once the peer answers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The wait after the first failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait: a peer that comes back is replicated to within this (openraft's own
/// backoff caps at the same second).
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// Consecutive connection failures to one peer.
#[derive(Debug, Default)]
pub struct ConnectBackoff {
    failures: AtomicU32,
}

impl ConnectBackoff {
    /// The wait after `failures` earlier consecutive failures.
    pub fn delay(failures: u32) -> Duration {
        FIRST_DELAY
            .saturating_mul(1 << failures.min(16))
            .min(MAX_DELAY)
    }

    /// Waits as long as the failures so far ask for, and counts one more.
    pub async fn after_failure(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Self::delay(failures)).await;
    }

    /// The peer answered: the next failure waits [`FIRST_DELAY`] again.
    pub fn reset(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap() {
        let delays: Vec<u64> = (0..6)
            .map(|n| ConnectBackoff::delay(n).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(ConnectBackoff::delay(u32::MAX), MAX_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn each_failure_waits_longer_until_the_peer_answers() {
        let backoff = ConnectBackoff::default();
        for expected in [100, 200, 400] {
            let started = tokio::time::Instant::now();
            backoff.after_failure().await;
            assert_eq!(started.elapsed(), Duration::from_millis(expected));
        }
        backoff.reset();
        let started = tokio::time::Instant::now();
        backoff.after_failure().await;
        assert_eq!(started.elapsed(), FIRST_DELAY);
    }
}
