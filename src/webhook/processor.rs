//! The delivery processor: journaled deliveries → parsed → stored, exactly once.
//!
//! It runs after the 200 was sent. Each batch is parsed and applied in one write
//! transaction that also removes the deliveries from the journal, so a crash at any point
//! either leaves a delivery in the journal (processed again on restart) or fully applied.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::payload::Delivery;
use crate::store::{ApplyReport, Store};

/// Deliveries applied per transaction.
pub const BATCH: usize = 256;

/// What the processor needs.
pub struct DeliveryProcessor {
    /// The store.
    pub store: Store,
    /// Notified by the journal writer after each commit.
    pub journaled: Arc<Notify>,
    /// Each notified after an applied batch that stored new inbound messages.
    pub processed: Vec<Arc<Notify>>,
    /// Explains Meta error codes for the operator.
    pub explain: fn(i64) -> String,
    /// Stops the loop (the current batch finishes first).
    pub shutdown: CancellationToken,
    /// Queue inbound media for download (a Graph client exists and this is not a dry run).
    pub queue_media: bool,
    /// Counts new inbound messages by type.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl DeliveryProcessor {
    /// Processes until shutdown: first whatever the journal holds (a restart resumes every
    /// unprocessed delivery), then each new batch as it is journaled.
    pub async fn run(self) {
        loop {
            match self.drain().await {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %e, "processing journaled deliveries failed; retrying in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                        _ = self.shutdown.cancelled() => break,
                    }
                }
            }
            tokio::select! {
                _ = self.journaled.notified() => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        tracing::debug!("delivery processor stopped");
    }

    async fn drain(&self) -> Result<(), crate::store::StoreError> {
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let explain = self.explain;
            let queue_media = self.queue_media;
            let (report, kinds) = self
                .store
                .blocking(move |s| {
                    let report = process_batch(s, BATCH, &explain, queue_media)?;
                    let kinds: Vec<String> = report
                        .new_messages
                        .iter()
                        .filter_map(|id| s.message(*id).ok().flatten().map(|m| m.kind))
                        .collect();
                    Ok((report, kinds))
                })
                .await?;
            for kind in &kinds {
                self.metrics.message_in(kind);
            }
            if report.deliveries == 0 {
                return Ok(());
            }
            tracing::debug!(
                deliveries = report.deliveries,
                new = report.new_messages.len(),
                duplicates = report.duplicates,
                statuses = report.statuses_applied,
                orphaned = report.statuses_orphaned,
                events = report.events,
                "deliveries processed"
            );
            if !report.new_messages.is_empty() {
                self.processed.iter().for_each(|n| n.notify_one());
            }
        }
    }
}

/// Parses and applies up to `limit` journaled deliveries in one transaction.
pub fn process_batch(
    store: &Store,
    limit: usize,
    explain: &dyn Fn(i64) -> String,
    queue_media: bool,
) -> Result<ApplyReport, crate::store::StoreError> {
    let pending = store.journal_pending(limit)?;
    if pending.is_empty() {
        return Ok(ApplyReport::default());
    }
    let batch: Vec<(u64, Delivery)> = pending
        .into_iter()
        .map(|(id, body)| {
            let value = super::parse_body(&body).unwrap_or_else(|e| {
                tracing::warn!(delivery = id, error = %e, "journaled delivery is not JSON; kept as an empty delivery");
                serde_json::Value::Null
            });
            (id, Delivery::parse(&value))
        })
        .collect();
    if tracing::enabled!(tracing::Level::DEBUG) {
        for (id, d) in &batch {
            for change in &d.changes {
                if let super::payload::Change::Messages(v) = change {
                    for m in &v.messages {
                        tracing::debug!(delivery = id, wamid = %m.id, kind = %m.kind, "inbound message");
                    }
                }
            }
        }
    }
    // Not fsynced on its own: see `Store::apply_deliveries_deferred`.
    store.apply_deliveries_deferred(&batch, explain, queue_media)
}
