//! What the operations pages read: the outbox's jobs and troubles, quarantined messages, and
//! the operator's cancel of a queued send.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Deserialize;

use super::outbox::{JobState, OUTBOX, OutboxJob};
use super::{
    Direction, ErrorInfo, MESSAGES, META, MessageReader, MessageRecord, Result, SCRIPT_OUTCOMES, ScriptOutcome,
    StatusEntry, Store, Tables, decode, now_ms,
};

/// Inbound messages taken out of the dispatch queue (quarantined): message id → (). Kept by
/// [`Store::dispatch_quarantine`] and [`Store::dispatch_release`], so the scripts page lists
/// them without reading every script outcome. A handful of rows in a healthy store.
pub(super) const QUARANTINED: TableDefinition<u64, ()> = TableDefinition::new("quarantined");
/// `META` mark: [`QUARANTINED`] holds the quarantines made before it existed.
const QUARANTINE_INDEXED: &str = "quarantine_index_v1";

/// Creates [`QUARANTINED`] and, once, fills it from the stored script outcomes (stores written
/// before the table existed).
pub(super) fn index_quarantined(txn: &WriteTransaction) -> Result<()> {
    let mut index = txn.open_table(QUARANTINED)?;
    let mut meta = txn.open_table(META)?;
    if meta.get(QUARANTINE_INDEXED)?.is_some() {
        return Ok(());
    }
    let outcomes = txn.open_table(SCRIPT_OUTCOMES)?;
    for row in outcomes.iter()? {
        let (k, v) = row?;
        let outcome: ScriptOutcome = decode("script_outcomes", v.value())?;
        if outcome.quarantined {
            index.insert(k.value(), ())?;
        }
    }
    meta.insert(QUARANTINE_INDEXED, now_ms().to_be_bytes().as_slice())?;
    Ok(())
}

/// The fields of a stored message a scan for troubles needs, decoded without the rest.
#[derive(Deserialize)]
struct Peek {
    direction: Direction,
    status: String,
}

/// Outbound statuses the outbox page lists as troubles.
pub const TROUBLE_STATUSES: [&str; 3] = ["failed", "unknown", "cancelled"];

/// A page of outbound messages in trouble, newest first.
#[derive(Debug, Default)]
pub struct Troubles {
    /// The messages found.
    pub messages: Vec<MessageRecord>,
    /// Where the next page starts (the scan stopped before reaching the oldest message).
    pub next_before: Option<u64>,
}

/// What [`Store::outbox_cancel`] did.
#[derive(Debug)]
pub enum Cancel {
    /// The job was dropped; the message is `cancelled`.
    Cancelled(Box<MessageRecord>),
    /// The message is not waiting in the queue: already on its way, sent, or not outbound.
    NotQueued(String),
    /// No such message.
    Missing,
}

impl Store {
    /// Quarantined inbound messages, newest first, at most `limit`.
    pub fn quarantined_messages(&self, limit: usize) -> Result<Vec<MessageRecord>> {
        let txn = self.db()?.begin_read()?;
        let index = txn.open_table(QUARANTINED)?;
        let reader = MessageReader::open(&txn)?;
        let mut out = Vec::new();
        for row in index.iter()?.rev().take(limit) {
            if let Some(m) = reader.get(row?.0.value())? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The send jobs (queued, sending, held), oldest first, with their messages.
    pub fn outbox_jobs(&self, limit: usize) -> Result<Vec<(OutboxJob, Option<MessageRecord>)>> {
        let txn = self.db()?.begin_read()?;
        let jobs = txn.open_table(OUTBOX)?;
        let reader = MessageReader::open(&txn)?;
        let mut out = Vec::new();
        for row in jobs.iter()?.take(limit) {
            let (k, v) = row?;
            let job: OutboxJob = decode("outbox", v.value())?;
            out.push((job, reader.get(k.value())?));
        }
        Ok(out)
    }

    /// Outbound messages whose send failed, is unknown or was cancelled, newest first: at most
    /// `limit`, reading at most `scan` messages back from `before` (exclusive; `None`: the
    /// newest). The scan is bounded so that a long history costs the page a fixed time; the
    /// answer says where to go on.
    pub fn outbound_troubles(&self, before: Option<u64>, scan: usize, limit: usize) -> Result<Troubles> {
        let txn = self.db()?.begin_read()?;
        let messages = txn.open_table(MESSAGES)?;
        let reader = MessageReader::open(&txn)?;
        let mut out = Troubles::default();
        let upper = before.unwrap_or(u64::MAX);
        let mut last = None;
        for (read, row) in messages.range(..upper)?.rev().enumerate() {
            let (k, v) = row?;
            let id = k.value();
            if read >= scan || out.messages.len() >= limit {
                out.next_before = last;
                break;
            }
            last = Some(id);
            let peek: Peek = decode("messages", v.value())?;
            if peek.direction == Direction::Outbound
                && TROUBLE_STATUSES.contains(&peek.status.as_str())
                && let Some(m) = reader.get(id)?
            {
                out.messages.push(m);
            }
        }
        Ok(out)
    }

    /// Cancels a send still waiting in the queue (also one held for a paused template): its
    /// job is dropped and its message becomes `cancelled`, with `by` in the explanation. A
    /// job already handed to the Graph API cannot be called back.
    pub fn outbox_cancel(&self, id: u64, by: &str) -> Result<Cancel> {
        let txn = self.db()?.begin_write()?;
        let outcome = {
            let mut t = Tables::open(&txn, &self.message_ids)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            t.cancel_job(&mut outbox, id, by)?
        };
        txn.commit()?;
        Ok(outcome)
    }
}

impl Tables<'_> {
    /// [`Store::outbox_cancel`] inside a transaction (a campaign's cancel takes many).
    pub(super) fn cancel_job(
        &mut self,
        outbox: &mut redb::Table<'_, u64, &'static [u8]>,
        id: u64,
        by: &str,
    ) -> Result<Cancel> {
        let job = match outbox.get(id)? {
            Some(v) => Some(decode::<OutboxJob>("outbox", v.value())?),
            None => None,
        };
        Ok(match (self.get_message(id)?, job) {
            (None, _) => Cancel::Missing,
            (Some(mut m), Some(job)) if job.state == JobState::Queued => {
                outbox.remove(id)?;
                let now = now_ms();
                m.status = "cancelled".into();
                m.attempts = job.attempts;
                m.statuses.push(StatusEntry::local("cancelled", now / 1000));
                m.error = Some(ErrorInfo {
                    code: 0,
                    title: "Cancelled".into(),
                    details: job.last_error.clone(),
                    explanation: format!(
                        "{by} cancelled this message before it was sent; it can be queued again with resend."
                    ),
                });
                self.put_message(&m)?;
                Cancel::Cancelled(Box::new(m))
            }
            (Some(_), Some(_)) => Cancel::NotQueued("sending".into()),
            (Some(m), None) => Cancel::NotQueued(if m.direction == Direction::Outbound {
                m.status
            } else {
                "inbound".into()
            }),
        })
    }
}

/// A job's message as the outbox page shows it, encoded for the API.
pub fn job_json(job: &OutboxJob, message: Option<&MessageRecord>) -> serde_json::Value {
    serde_json::json!({
        "job": job,
        "message": message,
        "held": job.last_error.as_deref().is_some_and(|e| e.starts_with(super::outbox::HELD_PREFIX)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::*;

    #[test]
    fn encode_roundtrip_of_peek_ignores_the_rest() {
        let m = serde_json::json!({"direction": "outbound", "status": "failed", "raw": {"big": [1, 2, 3]}});
        let peek: Peek = serde_json::from_slice(&encode(&m)).expect("peek decodes");
        assert_eq!(peek.direction, Direction::Outbound);
        assert_eq!(peek.status, "failed");
    }
}
