//! The delivery processor: journaled deliveries → parsed → stored, exactly once.
//!
//! It runs after the 200 was sent. It reads the journal with a [`JournalCursor`] and
//! applies each batch in one write transaction that also records the batch's last
//! delivery id as the store's checkpoint, so a crash at any point leaves each delivery
//! either applied (and at or below the checkpoint) or processed again on restart.
//! Once a sealed journal segment is fully applied, the processor makes its checkpoint
//! durable and deletes the segment.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::journal::{JournalCursor, JournalFiles};
use super::payload::Delivery;
use crate::store::{ApplyReport, Store, StoreError};

/// The shortest time between two wake-ups of the processor under load (`crate::pace`).
pub const PROCESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

/// Deliveries applied per transaction.
pub const BATCH: usize = 256;

/// Body bytes read per batch, at most (one larger delivery is still read whole).
pub const BATCH_BYTES: usize = 8 * 1024 * 1024;

/// What the processor needs.
pub struct DeliveryProcessor {
    /// The store.
    pub store: Store,
    /// Reads the journal from the store's checkpoint on (shared with the blocking pool,
    /// where each batch is read and applied).
    pub cursor: Arc<Mutex<JournalCursor>>,
    /// Deletes journal segments the store durably covers.
    pub files: JournalFiles,
    /// Notified by the journal writer after each durable batch.
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
    /// Woken when a template webhook unpauses a template (its held sends go out).
    pub outbox: crate::outbox::Outbox,
    /// Bumped after each batch: the console shows new messages and statuses live.
    pub live: crate::console::live::LiveChanges,
}

impl DeliveryProcessor {
    /// Processes until shutdown: first whatever the journal holds after the checkpoint (a
    /// restart resumes every unprocessed delivery), then each new batch as it is journaled.
    pub async fn run(self) {
        crate::pace::BatchPacer::new(PROCESS_INTERVAL)
            .drain_on_wake(
                "processing journaled deliveries",
                &self.journaled,
                &self.shutdown,
                || self.drain(),
            )
            .await;
        tracing::debug!("delivery processor stopped");
    }

    async fn drain(&self) -> Result<(), StoreError> {
        let (explain, queue_media) = (self.explain, self.queue_media);
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let (cursor, files) = (self.cursor.clone(), self.files.clone());
            let report = self
                .store
                .blocking(move |s| {
                    let mut cursor = cursor.lock().expect("cursor lock not poisoned");
                    let report = match process_batch(s, &mut cursor, BATCH, &explain, queue_media) {
                        // A re-opened store is back at its last durable commit: the batches
                        // applied without their own fsync since then are gone with it. Read
                        // again from the checkpoint it has now (redeliveries are idempotent).
                        Err(StoreError::CheckpointMismatch { stored, cursor: at }) => {
                            tracing::warn!(stored, cursor = at, "the store's journal checkpoint is behind the reader (re-opened after an I/O error): reading again from it");
                            *cursor = files.cursor(stored);
                            return Ok(ApplyReport {
                                deliveries: 1,
                                ..Default::default()
                            });
                        }
                        other => other?,
                    };
                    if let Some(applied) = report.applied_through
                        && files.releasable(applied)
                    {
                        // The checkpoint must be durable before the segment goes.
                        s.probe_writable()?;
                        let removed = files
                            .release_through(applied)
                            .map_err(|e| StoreError::Journal(e.to_string()))?;
                        tracing::debug!(removed, applied, "fully applied journal segments deleted");
                    }
                    Ok(report)
                })
                .await?;
            for kind in &report.new_kinds {
                self.metrics.message_in(kind);
            }
            for (status, number) in &report.status_webhooks {
                self.metrics.status_webhook(status, number);
            }
            if !report.template_changes.is_empty() {
                let (store, metrics, outbox, changes) = (
                    self.store.clone(),
                    self.metrics.clone(),
                    self.outbox.clone(),
                    report.template_changes.clone(),
                );
                let _ = tokio::task::spawn_blocking(move || {
                    crate::templates::sync::applied(&store, &metrics, &outbox, &changes)
                })
                .await;
            }
            if report.deliveries == 0 {
                return Ok(());
            }
            self.live.bump();
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

/// Reads up to `limit` journaled deliveries, parses them and applies them in one
/// transaction that moves the store's checkpoint to the last of them.
pub fn process_batch(
    store: &Store,
    cursor: &mut JournalCursor,
    limit: usize,
    explain: &dyn Fn(i64) -> String,
    queue_media: bool,
) -> Result<ApplyReport, StoreError> {
    // The cursor moves only past what was applied: on any error (the store's or the
    // journal's) it goes back, and the same deliveries are read again next time.
    let mark = cursor.mark();
    let pending = match cursor.read(limit, BATCH_BYTES) {
        Ok(p) => p,
        Err(e) => {
            cursor.rewind(mark);
            return Err(StoreError::Journal(e.to_string()));
        }
    };
    if pending.is_empty() {
        return Ok(ApplyReport::default());
    }
    let batch: Vec<(u64, Delivery)> = pending
        .into_iter()
        .map(|(id, body)| parse_delivery(id, &body))
        .collect();
    // Not fsynced on its own: see `Store::apply_deliveries_deferred`.
    let applied = store.apply_deliveries_deferred(cursor_after(&mark), &batch, explain, queue_media);
    match applied {
        Ok(mut report) => {
            report.status_webhooks = status_webhooks(&batch);
            Ok(report)
        }
        Err(e) => {
            cursor.rewind(mark);
            Err(e)
        }
    }
}

/// Every status object of `batch`: (status, the business number it is about).
fn status_webhooks(batch: &[(u64, Delivery)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (_, delivery) in batch {
        for change in &delivery.changes {
            if let crate::webhook::payload::Change::Messages(v) = change {
                let number = v.phone_number_id.clone().unwrap_or_default();
                out.extend(v.statuses.iter().map(|s| (s.status.clone(), number.clone())));
            }
        }
    }
    out
}

fn cursor_after(mark: &super::journal::CursorMark) -> u64 {
    mark.after()
}

/// Parses one journaled body; a body that is somehow not JSON becomes an empty delivery
/// (check_json refused such bodies before they were journaled).
pub fn parse_delivery(id: u64, body: &[u8]) -> (u64, Delivery) {
    let value = super::parse_body(body).unwrap_or_else(|e| {
        tracing::warn!(delivery = id, error = %e, "journaled delivery is not JSON; kept as an empty delivery");
        serde_json::Value::Null
    });
    let delivery = Delivery::parse(&value);
    if tracing::enabled!(tracing::Level::DEBUG) {
        for change in &delivery.changes {
            if let super::payload::Change::Messages(v) = change {
                for m in &v.messages {
                    tracing::debug!(delivery = id, wamid = %m.id, kind = %m.kind, "inbound message");
                }
            }
        }
    }
    (id, delivery)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::journal::DeliveryLog;

    fn text(from: &str, wamid: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{ "id": "1", "changes": [{ "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": { "display_phone_number": "221338000000", "phone_number_id": "1234567890" },
                "contacts": [{ "wa_id": from, "profile": { "name": "Awa" } }],
                "messages": [{ "from": from, "id": wamid, "timestamp": "1700000000", "type": "text",
                               "text": { "body": "bonjour" } }]
            }}]}]
        }))
        .unwrap()
    }

    /// A store error that is not an I/O error (here a corrupt conversation record) leaves the
    /// batch unapplied: the reader goes back, and the same deliveries are applied once the
    /// record is repaired. Before, the reader moved past them, and a later batch would have
    /// moved the checkpoint over deliveries that were never stored.
    #[test]
    fn a_batch_the_store_refuses_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("walua.redb")).unwrap();
        let journal = dir.path().join("journal");
        let mut log = DeliveryLog::open(&journal, 0).unwrap();
        let (a, b) = (text("221770000001", "wamid.A"), text("221770000002", "wamid.B"));
        log.append(&[a.as_slice(), b.as_slice()]).unwrap();
        let mut cursor = log.cursor(0);

        store.put_raw_conversation("221770000002", Some(b"not json")).unwrap();
        let explain = |_: i64| String::new();
        let err = process_batch(&store, &mut cursor, 10, &explain, false).unwrap_err();
        assert!(matches!(err, StoreError::Codec { .. }), "{err}");
        assert_eq!(store.journal_applied().unwrap(), 0);
        assert!(
            store.message_by_wamid("wamid.A").unwrap().is_none(),
            "nothing of the batch applied"
        );

        store.put_raw_conversation("221770000002", None).unwrap();
        let report = process_batch(&store, &mut cursor, 10, &explain, false).unwrap();
        assert_eq!(report.deliveries, 2, "the refused batch is read again");
        assert_eq!(store.journal_applied().unwrap(), 2);
        assert!(store.message_by_wamid("wamid.A").unwrap().is_some());
        assert!(store.message_by_wamid("wamid.B").unwrap().is_some());
    }
}
