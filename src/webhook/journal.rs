//! The delivery journal writer: durable group commit of webhook bodies.
//!
//! Handlers hand a body to [`DeliveryJournal::append`] and wait. One writer task takes every
//! body waiting in its queue, writes them all in one redb write transaction (one fsync) and
//! answers each handler. While a commit is in flight new bodies queue up, so the batch size
//! grows with the load and the cost per delivery falls.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::store::{Store, StoreError};

/// The most deliveries written in one transaction.
pub const MAX_BATCH: usize = 1024;

struct AppendRequest {
    body: Bytes,
    done: oneshot::Sender<Result<u64, String>>,
}

/// Handle to the journal writer; cheap to clone.
#[derive(Clone)]
pub struct DeliveryJournal {
    queue: mpsc::Sender<AppendRequest>,
}

impl DeliveryJournal {
    /// Starts the writer task. `journaled` is notified after each commit so the processor
    /// picks the new deliveries up. The writer stops once every handle is dropped and the
    /// queue is drained.
    pub fn start(store: Store, journaled: Arc<Notify>) -> (DeliveryJournal, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        let task = tokio::spawn(write_loop(store, rx, journaled));
        (DeliveryJournal { queue }, task)
    }

    /// Durably journals one delivery; returns its delivery id once it is on disk.
    pub async fn append(&self, body: Bytes) -> Result<u64, String> {
        let (done, wait) = oneshot::channel();
        self.queue
            .send(AppendRequest { body, done })
            .await
            .map_err(|_| "journal writer stopped".to_string())?;
        wait.await.map_err(|_| "journal writer stopped".to_string())?
    }
}

async fn write_loop(store: Store, mut rx: mpsc::Receiver<AppendRequest>, journaled: Arc<Notify>) {
    let mut batch: Vec<AppendRequest> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let bodies: Vec<Bytes> = batch.iter().map(|r| r.body.clone()).collect();
        let count = bodies.len();
        let result = store
            .blocking(move |s| {
                let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_ref()).collect();
                s.journal_append(&refs)
            })
            .await;
        match result {
            Ok(ids) => {
                tracing::trace!(count, "journal batch committed");
                for (req, id) in batch.drain(..).zip(ids) {
                    let _ = req.done.send(Ok(id));
                }
                journaled.notify_one();
            }
            Err(e) => {
                let e: StoreError = e;
                tracing::error!(error = %e, count, "journal write failed; deliveries refused with 500");
                for req in batch.drain(..) {
                    let _ = req.done.send(Err(e.to_string()));
                }
            }
        }
    }
    tracing::debug!("journal writer stopped");
}
