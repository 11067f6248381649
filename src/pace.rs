//! [`BatchPacer`]: spaces a background stage's batches under load.
//!
//! The processor, the dispatcher and the outbox each take whatever has piled up since their
//! last batch and commit it in one redb transaction. Under a steady stream, waking for every
//! notification makes batches of a few items, and each costs a full commit (and, for the
//! outbox, an fsync plus a write of every page changed since the last durable commit). A
//! stage that waits until `interval` has passed since its previous batch takes a larger one
//! instead; a stage that was idle longer than `interval` goes at once, so a lone message
//! waits for nothing.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Remembers when a stage's last batch started.
#[derive(Debug)]
pub struct BatchPacer {
    interval: Duration,
    last: Option<Instant>,
}

impl BatchPacer {
    /// A pacer that keeps `interval` between the starts of two batches.
    pub fn new(interval: Duration) -> BatchPacer {
        BatchPacer { interval, last: None }
    }

    /// Waits until the next batch may start, then counts it as started. Returns `false` if
    /// `shutdown` fired while waiting.
    pub async fn next_batch(&mut self, shutdown: &CancellationToken) -> bool {
        if let Some(next) = self.last.map(|t| t + self.interval)
            && next > Instant::now()
        {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shutdown.cancelled() => return false,
            }
        }
        self.last = Some(Instant::now());
        true
    }

    /// Runs a stage until `shutdown`: `drain` once at start (whatever waits after a restart),
    /// then each time `wake` is notified, batches spaced by this pacer. A failed drain is
    /// logged as "`what` failed" and retried after a second (each `drain` keeps what it has not
    /// committed where it was, so the retry takes it again).
    pub async fn drain_on_wake<E, Fut>(
        mut self,
        what: &str,
        wake: &Notify,
        shutdown: &CancellationToken,
        mut drain: impl FnMut() -> Fut,
    ) where
        E: Display,
        Fut: Future<Output = Result<(), E>>,
    {
        loop {
            if !self.next_batch(shutdown).await {
                return;
            }
            if let Err(e) = drain().await {
                tracing::error!(error = %e, "{what} failed; retrying in 1s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn batches_are_spaced_but_an_idle_stage_goes_at_once() {
        let shutdown = CancellationToken::new();
        let mut pacer = BatchPacer::new(Duration::from_millis(5));
        let t0 = Instant::now();
        assert!(pacer.next_batch(&shutdown).await);
        assert_eq!(t0.elapsed(), Duration::ZERO, "the first batch goes at once");
        assert!(pacer.next_batch(&shutdown).await);
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(5),
            "the second waits out the interval"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t1 = Instant::now();
        assert!(pacer.next_batch(&shutdown).await);
        assert_eq!(t1.elapsed(), Duration::ZERO, "after idling, at once");
        shutdown.cancel();
        assert!(!pacer.next_batch(&shutdown).await, "shutdown ends the wait");
    }
}
