//! The search indexer: writes the words of new messages into the console's message search
//! index, off the transactions that store the messages.
//!
//! Storing a message (an inbound delivery, a send) only appends its searchable text to the
//! `search_pending` queue in the same transaction. This task takes the queue in large
//! transactions ([`Store::index_pending`]), its words sorted, so that the ~7 rows a message
//! adds to `search_messages` share pages instead of each landing on a page of its own in
//! every small delivery transaction (those random inserts were most of what the indexes
//! cost per message).
//!
//! Lag: the processor wakes the task after each batch, and a wake-up every
//! [`INDEX_TICK`] catches what other writers (sends, scripts) queued. An idle task indexes
//! at once; under load its batches are spaced by [`INDEX_INTERVAL`]. So the console's search
//! finds a message well under a second after it is stored; everything else (the thread, the
//! inbox, unread counts) shows it at once. `GET /healthz` reports `search_backlog`.
//!
//! Crashes: the queue row commits with the message, and the indexer's commit removes it
//! with the words, so a crash loses nothing — what is queued at open is indexed as soon as
//! the daemon starts (the task drains the queue first thing). Indexing a message twice (a
//! crash after a non-durable commit) writes the same keys again.
//!
//! The task runs in the daemon's task tracker until shutdown (`crate::run`), like the
//! media downloader.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::store::inbox::INDEX_BATCH;

/// The shortest time between two batches under load (`crate::pace`).
pub const INDEX_INTERVAL: Duration = Duration::from_millis(250);

/// How often the task looks at the queue without being woken (sends and scripts queue
/// texts without waking it).
pub const INDEX_TICK: Duration = Duration::from_secs(1);

/// Indexes queued message texts until shutdown.
pub struct SearchIndexer {
    /// The store.
    pub store: Store,
    /// Notified when the processor stored messages.
    pub wake: Arc<Notify>,
    /// Stops the task (after the batch in progress).
    pub shutdown: CancellationToken,
}

impl SearchIndexer {
    /// Runs until shutdown: drains the queue at start, then whenever woken or every
    /// [`INDEX_TICK`], batches spaced by [`INDEX_INTERVAL`].
    pub async fn run(self) {
        let mut pacer = crate::pace::BatchPacer::new(INDEX_INTERVAL);
        loop {
            if !pacer.next_batch(&self.shutdown).await {
                return;
            }
            if let Err(e) = self.drain().await {
                tracing::error!(error = %e, "search indexing failed; retrying in 1s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = self.shutdown.cancelled() => return,
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(INDEX_TICK) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Indexes everything queued, [`INDEX_BATCH`] messages per transaction.
    async fn drain(&self) -> Result<(), crate::store::StoreError> {
        let mut total = 0;
        loop {
            let n = self.store.blocking(|s| s.index_pending(INDEX_BATCH)).await?;
            total += n;
            if n < INDEX_BATCH || self.shutdown.is_cancelled() {
                break;
            }
        }
        if total >= INDEX_BATCH {
            tracing::info!(messages = total, "search index caught up");
        }
        Ok(())
    }
}
