//! Runs that failed and are not lost: a hook event, a cron run or a customer's message whose
//! scripts met a transient failure (Odoo unreachable, Graph 5xx…) is retried with backoff;
//! one that keeps failing, or fails definitely (a Lua error, an Odoo `UserError`), is parked
//! here for the operator (`GET /api/parked`, `walua parked list|replay`).
//!
//! Entries are written in the same transaction as the run's effects (see
//! [`super::ScriptCommit::failed`]), so a run that succeeds on retry removes its entry
//! atomically with what it sent.

use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Result, Store, decode, encode};

/// Failed runs: id (`hook:NAME:RECORD`, `cron:NAME`, `message:ID`) → JSON [`FailedRun`].
pub(super) const FAILED_RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("failed_runs");

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// An Odoo hook's run for one record.
    Hook,
    /// A cron job's run for one tick.
    Cron,
    /// The scripts of a customer's inbound message (a tap, a text…).
    Message,
    /// A note for an Odoo record's chatter that could not be posted.
    Chatter,
}

/// A run that failed: being retried (`next_attempt_ms` set) or parked (`None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedRun {
    /// Its id in the API: `hook:invoice_posted:42`, `cron:unpaid_invoice_reminders`,
    /// `message:17`. One entry per hook record, cron job or message.
    pub id: String,
    /// Hook, cron or message.
    pub kind: RunKind,
    /// The hook or cron script's name; for a message, the contact.
    pub name: String,
    /// The Odoo record a hook ran for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<i64>,
    /// The inbound message whose scripts failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<u64>,
    /// A hook's watched values when the run failed: the poller leaves the record to the
    /// retries while they stay the same, and runs it afresh once the record changed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Value>,
    /// The cron tick (unix ms) the run was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_ms: Option<i64>,
    /// The last error, with the script's file:line.
    pub error: String,
    /// Whether the last failure was transient (retried) or definite (parked at once).
    pub transient: bool,
    /// Runs that failed so far.
    pub attempts: u32,
    /// When it first failed (unix ms).
    pub first_failed_ms: i64,
    /// When it last failed (unix ms).
    pub last_failed_ms: i64,
    /// When the next retry is due (unix ms); `None` once parked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_ms: Option<i64>,
    /// A parked customer message cannot be replayed after this (unix ms): an answer days
    /// later would be worse than none (`scripts.reply_expiry`, the 24 h window by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
}

/// How failed runs are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry's delay, doubled per attempt.
    pub first: std::time::Duration,
    /// The longest delay between two attempts.
    pub max: std::time::Duration,
    /// How long after the first failure a run is still retried (`scripts.retry_for`).
    pub retry_for: std::time::Duration,
}

impl FailedRun {
    /// Parked: waiting for the operator, not retried by walua.
    pub fn parked(&self) -> bool {
        self.next_attempt_ms.is_none()
    }

    /// A new entry for a run that just failed for the first time.
    pub fn new(id: String, kind: RunKind, name: &str, error: String, transient: bool, now_ms: i64) -> FailedRun {
        FailedRun {
            id,
            kind,
            name: name.to_string(),
            record_id: None,
            message_id: None,
            values: None,
            tick_ms: None,
            error,
            transient,
            attempts: 0,
            first_failed_ms: now_ms,
            last_failed_ms: now_ms,
            next_attempt_ms: None,
            expires_ms: None,
        }
    }

    /// Records one more failure: a transient one is retried after a backoff (`policy.first`,
    /// doubled per attempt, at most `policy.max`) until `policy.retry_for` has passed since the
    /// first failure, then parked; a definite one is parked at once. Returns whether it is
    /// now parked.
    pub fn failed_again(&mut self, error: String, transient: bool, now_ms: i64, policy: &RetryPolicy) -> bool {
        self.attempts += 1;
        self.error = error;
        self.transient = transient;
        self.last_failed_ms = now_ms;
        let delay = policy
            .first
            .saturating_mul(1u32 << self.attempts.saturating_sub(1).min(20))
            .min(policy.max);
        let next = now_ms + delay.as_millis() as i64;
        self.next_attempt_ms = if transient && next - self.first_failed_ms <= policy.retry_for.as_millis() as i64 {
            Some(next)
        } else {
            None
        };
        self.parked()
    }
}

impl Store {
    /// One failed run.
    pub fn failed_run(&self, id: &str) -> Result<Option<FailedRun>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(FAILED_RUNS)?;
        let row = table.get(id)?;
        row.map(|v| decode("failed_runs", v.value())).transpose()
    }

    /// Every failed run whose id starts with `prefix` (`""`: all), in id order.
    pub fn failed_runs(&self, prefix: &str) -> Result<Vec<FailedRun>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(FAILED_RUNS)?;
        let mut out = Vec::new();
        for row in table.range(prefix..)? {
            let (k, v) = row?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push(decode("failed_runs", v.value())?);
        }
        Ok(out)
    }

    /// Writes (`Some`) or removes (`None`) a failed run on its own.
    pub fn failed_run_set(&self, id: &str, run: Option<&FailedRun>) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut table = txn.open_table(FAILED_RUNS)?;
            match run {
                Some(r) => table.insert(id, encode(r).as_slice())?,
                None => table.remove(id)?,
            };
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const POLICY: RetryPolicy = RetryPolicy {
        first: Duration::from_secs(10),
        max: Duration::from_secs(60),
        retry_for: Duration::from_secs(300),
    };

    #[test]
    fn transient_failures_back_off_then_park_and_definite_ones_park_at_once() {
        let mut f = FailedRun::new("hook:h:1".into(), RunKind::Hook, "h", String::new(), true, 0);
        let mut waits = Vec::new();
        let mut now = 0;
        while !f.failed_again("Odoo down".into(), true, now, &POLICY) {
            let next = f.next_attempt_ms.unwrap();
            waits.push((next - now) / 1000);
            now = next;
        }
        assert_eq!(
            waits,
            vec![10, 20, 40, 60, 60, 60],
            "doubling, capped, within retry_for"
        );
        assert!(f.parked() && f.attempts == 7 && f.transient);
        let mut g = FailedRun::new("cron:c:1".into(), RunKind::Cron, "c", String::new(), true, 0);
        assert!(g.failed_again("attempt to index a nil value".into(), false, 0, &POLICY));
        assert_eq!((g.attempts, g.transient, g.next_attempt_ms), (1, false, None));
    }

    #[test]
    fn entries_are_listed_by_prefix_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        for id in ["cron:a:1", "hook:h:1", "hook:h:2", "hook:hx:1"] {
            let f = FailedRun::new(id.into(), RunKind::Hook, "h", "e".into(), true, 0);
            store.failed_run_set(id, Some(&f)).unwrap();
        }
        let ids = |p: &str| -> Vec<String> { store.failed_runs(p).unwrap().into_iter().map(|f| f.id).collect() };
        assert_eq!(ids("hook:h:"), vec!["hook:h:1", "hook:h:2"]);
        assert_eq!(ids("").len(), 4);
        store.failed_run_set("hook:h:1", None).unwrap();
        assert_eq!(ids("hook:h:"), vec!["hook:h:2"]);
        assert!(store.failed_run("hook:h:1").unwrap().is_none());
    }
}
