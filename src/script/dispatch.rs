//! The dispatcher: runs the scripts for every stored inbound message, exactly once.
//!
//! The processor puts each new inbound message in the dispatch queue in the same transaction
//! that stores it. The dispatcher takes a batch from the queue, runs it on the Lua pool
//! (split by contact over the workers, so one contact's messages run in order on one
//! worker), and commits every effect with the removal from the queue in one transaction.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::runtime::{Effects, ScriptRuntime};
use crate::outbox::Outbox;
use crate::store::{ScriptOutcome, Store};

/// The shortest time between two wake-ups of the dispatcher under load (`crate::pace`).
pub const DISPATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

/// Messages dispatched per batch.
pub const BATCH: usize = 128;

/// Runs until shutdown.
pub struct Dispatcher {
    /// The store.
    pub store: Store,
    /// The Lua pool.
    pub runtime: Arc<ScriptRuntime>,
    /// Logs and wakes the outbox for committed sends.
    pub outbox: Outbox,
    /// Notified when the processor stored new inbound messages.
    pub wake: Arc<Notify>,
    /// Stops the loop after the current batch.
    pub shutdown: CancellationToken,
    /// Lua workers (batches are split across them by contact).
    pub workers: usize,
    /// Counts script runs and errors for metrics.
    pub on_outcome: Arc<dyn Fn(&ScriptOutcome) + Send + Sync>,
}

impl Dispatcher {
    /// Dispatches whatever waits (after a restart too), then each new batch.
    pub async fn run(self) {
        crate::pace::BatchPacer::new(DISPATCH_INTERVAL)
            .drain_on_wake("script dispatch", &self.wake, &self.shutdown, || self.drain())
            .await;
        tracing::debug!("dispatcher stopped");
    }

    async fn drain(&self) -> Result<(), String> {
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            // Each pending message read once, in one read transaction.
            let records = self
                .store
                .blocking(|s| s.dispatch_pending_messages(BATCH))
                .await
                .map_err(|e| e.to_string())?;
            if records.is_empty() {
                return Ok(());
            }
            tracing::debug!(messages = records.len(), "dispatching a batch");
            // Split by contact so that each contact's messages run in order on one worker.
            let records = records.into_iter().map(|(id, r)| (id, r.map_err(|e| e.to_string())));
            let n = self.workers.max(1);
            let mut parts: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
            for (id, record) in records {
                let contact = match &record {
                    Ok(Some(p)) => p.message.contact.as_str(),
                    _ => "",
                };
                let h = contact
                    .bytes()
                    .fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(b as usize));
                parts[h % n].push((id, record));
            }
            let mut runs = Vec::new();
            for part in parts.into_iter().filter(|p| !p.is_empty()) {
                let runtime = self.runtime.clone();
                runs.push(tokio::spawn(async move {
                    runtime.exec(move |w| w.dispatch_records(part)).await
                }));
            }
            let mut effects = Effects::default();
            let mut outcomes = Vec::new();
            for r in runs {
                let (e, o) = r.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
                effects.sends.extend(e.sends);
                effects.kv.extend(e.kv);
                effects.scenarios.extend(e.scenarios);
                outcomes.extend(o);
            }
            for (id, o) in &outcomes {
                (self.on_outcome)(o);
                if o.scripts.is_empty() {
                    tracing::debug!(message_id = id, "no script for this message");
                } else {
                    tracing::info!(message_id = id, scripts = ?o.scripts, sent = o.sent.len(), error = ?o.error, "scripts ran");
                }
            }
            let commit = effects.into_commit(outcomes);
            let recorded = self
                .store
                .blocking(move |s| s.commit_script_runs_deferred(&commit))
                .await
                .map_err(|e| e.to_string())?;
            for m in &recorded {
                self.outbox.recorded(m, m.origin.as_deref().unwrap_or("script"));
            }
        }
    }
}
