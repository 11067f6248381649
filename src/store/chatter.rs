//! Notes for Odoo records' chatter, queued durably with what they report: a send about a
//! record is recorded with its note in one transaction, a failure with its note, an inbound
//! message from a linked partner with its note. The chatter writer (`odoo::chatter`) posts
//! them in order and retries them like hook runs; a send never waits for Odoo.

use base64::Engine as _;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Result, Store, Tables, decode, encode, next_ids, now_ms};

/// Notes waiting to be posted: note id → JSON [`ChatterNote`]. Rows leave when posted; a
/// note that kept failing stays, parked (see `/api/parked`, id `chatter:ID`).
pub(super) const CHATTER: TableDefinition<u64, &[u8]> = TableDefinition::new("chatter");

/// The Odoo record a message is about (`opts.record` in Lua, `record` in the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRef {
    /// The model (`sale.order`, `account.move`, `res.partner`…).
    pub model: String,
    /// The record's id.
    pub id: i64,
}

impl RecordRef {
    /// Checks the model's spelling (Odoo's technical names) and the id.
    pub fn check(&self) -> std::result::Result<(), String> {
        let ok_model = !self.model.is_empty()
            && self.model.len() <= 64
            && self
                .model
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
        if !ok_model {
            return Err(format!(
                "record.model `{}` is not an Odoo model name such as sale.order",
                self.model
            ));
        }
        if self.id <= 0 {
            return Err(format!("record.id must be a positive record id, not {}", self.id));
        }
        Ok(())
    }
}

/// A file attached to a note (an `ir.attachment` on the record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatterFile {
    /// Its name in Odoo.
    pub name: String,
    /// Its MIME type.
    pub mimetype: String,
    /// The bytes, base64 (as Odoo's `datas` takes them).
    pub data_b64: String,
}

impl ChatterFile {
    /// A file from its bytes.
    pub fn new(name: &str, mimetype: &str, bytes: &[u8]) -> ChatterFile {
        ChatterFile {
            name: name.to_string(),
            mimetype: mimetype.to_string(),
            data_b64: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }
}

/// Largest file attached to a note: bigger ones are named in the note, not attached.
pub const MAX_CHATTER_FILE: usize = 10 * 1024 * 1024;

/// A note to post on a record's chatter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatterNote {
    /// Its id (order of posting).
    #[serde(default)]
    pub id: u64,
    /// The record.
    pub record: RecordRef,
    /// The note's text (plain; made HTML when posted).
    pub text: String,
    /// A file to attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<ChatterFile>,
    /// The `ir.attachment` already created for `file` (a retry does not create it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_id: Option<i64>,
    /// Failed posts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not before (unix ms).
    #[serde(default)]
    pub next_attempt_ms: i64,
    /// When it was queued (unix ms).
    pub created_ms: i64,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Given up on (definite error, or retried past `scripts.retry_for`): waits for a replay.
    #[serde(default)]
    pub parked: bool,
}

impl ChatterNote {
    /// A note on `record` saying `text`, due now.
    pub fn new(record: RecordRef, text: String, file: Option<ChatterFile>) -> ChatterNote {
        let now = now_ms();
        ChatterNote {
            id: 0,
            record,
            text,
            file,
            attachment_id: None,
            attempts: 0,
            next_attempt_ms: now,
            created_ms: now,
            last_error: None,
            parked: false,
        }
    }
}

/// The note's id in the parked list.
pub fn failed_id(note: u64) -> String {
    format!("chatter:{note}")
}

impl Tables<'_> {
    /// Queues `note` inside the caller's transaction.
    pub(super) fn queue_chatter(&mut self, mut note: ChatterNote) -> Result<u64> {
        let id = next_ids(&mut self.sequences, "chatter", 1)?;
        note.id = id;
        self.chatter.insert(id, encode(&note).as_slice())?;
        Ok(id)
    }
}

impl Store {
    /// Queues notes in their own transaction (`env.odoo.log` outside a run's commit).
    pub fn chatter_queue(&self, notes: Vec<ChatterNote>) -> Result<Vec<u64>> {
        let txn = self.db()?.begin_write()?;
        let ids = {
            let mut t = Tables::open(&txn, &self.message_ids)?;
            let mut ids = Vec::new();
            for n in notes {
                ids.push(t.queue_chatter(n)?);
            }
            ids
        };
        txn.commit()?;
        Ok(ids)
    }

    /// Notes due at `now_ms` (not parked), in order, at most `limit`.
    pub fn chatter_due(&self, now_ms: i64, limit: usize) -> Result<Vec<ChatterNote>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(CHATTER)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let note: ChatterNote = decode("chatter", row?.1.value())?;
            if !note.parked && note.next_attempt_ms <= now_ms {
                out.push(note);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every queued note (parked ones included), oldest first.
    pub fn chatter_notes(&self) -> Result<Vec<ChatterNote>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(CHATTER)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(decode("chatter", row?.1.value())?);
        }
        Ok(out)
    }

    /// Replaces a note (attempts, attachment id, parking); `None` removes it (posted). The
    /// failed-run entry of the parked list goes with it.
    pub fn chatter_update(
        &self,
        id: u64,
        note: Option<&ChatterNote>,
        failed: Option<super::parked::FailedRun>,
    ) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut table = txn.open_table(CHATTER)?;
            match note {
                Some(n) => {
                    table.insert(id, encode(n).as_slice())?;
                }
                None => {
                    table.remove(id)?;
                }
            }
            let mut runs = txn.open_table(super::parked::FAILED_RUNS)?;
            let key = failed_id(id);
            match failed {
                Some(f) => {
                    runs.insert(key.as_str(), encode(&f).as_slice())?;
                }
                None => {
                    runs.remove(key.as_str())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Rewrites a note alone (its attachment was created).
    pub fn chatter_put(&self, note: &ChatterNote) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        txn.open_table(CHATTER)?.insert(note.id, encode(note).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Puts a parked note back in the queue, due now (`POST /api/parked/chatter:ID/replay`).
    pub fn chatter_replay(&self, id: u64) -> Result<bool> {
        let txn = self.db()?.begin_write()?;
        let found = {
            let mut table = txn.open_table(CHATTER)?;
            let note = match table.get(id)? {
                Some(v) => Some(decode::<ChatterNote>("chatter", v.value())?),
                None => None,
            };
            match note {
                Some(mut n) => {
                    n.parked = false;
                    n.next_attempt_ms = now_ms();
                    table.insert(id, encode(&n).as_slice())?;
                    txn.open_table(super::parked::FAILED_RUNS)?
                        .remove(failed_id(id).as_str())?;
                    true
                }
                None => false,
            }
        };
        txn.commit()?;
        Ok(found)
    }
}
