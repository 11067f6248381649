//! The outbox tables: outbound messages recorded before any network call, and the jobs that
//! send them.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Conversation, Direction, ErrorInfo, MessageRecord, Result, StatusEntry, Store, Tables, decode, encode,
    normalize_contact, now_ms,
};

/// Send jobs: message id → JSON [`OutboxJob`]. A message is in here until Meta's answer is
/// definite (accepted, or failed) or the retry horizon passes.
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// The prefix of `biz_opaque_callback_data` walua puts on every send; Meta echoes it in
/// status webhooks, which lets walua find a message whose send was interrupted.
pub const CALLBACK_PREFIX: &str = "walua:";

/// Where a send job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its time (`next_attempt_ms`).
    Queued,
    /// Handed to the Graph API; the answer is not recorded yet.
    Sending,
}

/// A durable send job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxJob {
    /// The outbound message it sends.
    pub message_id: u64,
    /// The recipient as sent (phone or BSUID): the key of the per-recipient pacing.
    pub recipient: String,
    /// Queued or sending.
    pub state: JobState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not before this time (unix ms).
    pub next_attempt_ms: i64,
    /// When it was queued (unix ms): the retry horizon counts from here.
    pub queued_at_ms: i64,
    /// The last retryable error, for the operator.
    pub last_error: Option<String>,
    /// The business number it is sent from (phone number id); `None`: the default account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_id: Option<String>,
    /// The campaign it belongs to: the worker sends replies first, and gives campaigns at
    /// most part of the sends in flight, so that a campaign never delays an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<u64>,
}

impl OutboxJob {
    /// A job for message `message_id`, queued at `now_ms` and due at once.
    pub fn queued(message_id: u64, recipient: String, phone_number_id: Option<String>, now_ms: i64) -> OutboxJob {
        OutboxJob {
            message_id,
            recipient,
            state: JobState::Queued,
            attempts: 0,
            next_attempt_ms: now_ms,
            queued_at_ms: now_ms,
            last_error: None,
            phone_number_id,
            campaign: None,
        }
    }
}

/// How much [`Store::outbox_due`] takes and reads.
#[derive(Debug, Clone, Copy)]
pub struct DueLimits {
    /// Jobs returned at most.
    pub total: usize,
    /// Jobs of one business number at most, so that one number's backlog does not hide the
    /// others' jobs (`total` with a single number).
    pub per_number: usize,
    /// Rows read at most (the scan goes past a capped number's jobs up to here).
    pub max_rows: usize,
}

impl DueLimits {
    /// At most `total` jobs, shared fairly by `numbers` business numbers.
    pub fn shared_by(total: usize, numbers: usize) -> DueLimits {
        if numbers <= 1 {
            return DueLimits {
                total,
                per_number: total,
                max_rows: usize::MAX,
            };
        }
        DueLimits {
            total,
            per_number: (total / numbers).max(16),
            max_rows: total * 16,
        }
    }
}

/// An outbound message to record.
#[derive(Debug, Clone)]
pub struct NewOutbound {
    /// Its id, from [`Store::allocate_message_id`].
    pub id: u64,
    /// The recipient as it goes to Meta (phone or BSUID).
    pub recipient: String,
    /// Message type (`text`, `template`, …).
    pub kind: String,
    /// Readable summary.
    pub summary: String,
    /// The request as given (API body or script call).
    pub content: Value,
    /// The exact Graph API body, without `biz_opaque_callback_data` (added here).
    pub body: Value,
    /// Whether the 24 h window applies (free-form content).
    pub free_form: bool,
    /// Send outside the window anyway.
    pub allow_outside_window: bool,
    /// Record only (dry run): status `dry_run`, no job.
    pub dry_run: bool,
    /// Who asked (`api`, `script:NAME`, `cli`).
    pub origin: String,
    /// Reply context (wamid), if any.
    pub reply_to: Option<String>,
    /// The business number to send from (phone number id); `None`: the default account.
    pub phone_number_id: Option<String>,
    /// The Odoo record it is about: the send is noted on the record's chatter (set only when
    /// Odoo's chatter is on).
    pub record: Option<super::chatter::RecordRef>,
    /// The file it carries, attached to that note.
    pub chatter_file: Option<super::chatter::ChatterFile>,
}

/// The start of a job's `last_error` while Meta keeps its template paused: such jobs are
/// released at once when the template is unpaused ([`Store::outbox_release_held`]).
pub const HELD_PREFIX: &str = "held: ";

/// The 24 h customer-service window, in seconds.
pub const WINDOW_SECS: i64 = 24 * 3600;

/// Whether a conversation's 24 h window with business number `phone_number_id` (any number
/// when `None`) is open at `now_secs`.
pub fn window_open(conv: Option<&Conversation>, phone_number_id: Option<&str>, now_secs: i64) -> bool {
    conv.and_then(|c| c.last_inbound_to(phone_number_id))
        .is_some_and(|t| now_secs - t < WINDOW_SECS)
}

/// The explanation given when walua refuses a free-form send outside the window.
pub fn window_closed_error(contact: &str, conv: Option<&Conversation>, phone_number_id: Option<&str>) -> ErrorInfo {
    let why = match conv.and_then(|c| c.last_inbound_to(phone_number_id)) {
        Some(t) => format!(
            "the last message from {contact} was at {} UTC, more than 24 hours ago",
            chrono::DateTime::from_timestamp(t, 0)
                .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default()
        ),
        None => format!("{contact} has never written to this number"),
    };
    ErrorInfo {
        code: 131026,
        title: "Outside the 24-hour customer-service window".into(),
        details: Some(why),
        explanation: format!(
            "{} walua refused it before sending: free-form messages only reach a customer within 24 hours of their last message. Send an approved template instead (or set whatsapp.allow_outside_window = true).",
            crate::whatsapp::error::explain(131026)
        ),
    }
}

impl Store {
    /// Records an outbound message and, unless it is a dry run or refused by the 24 h window,
    /// its send job, in one durable transaction. Returns the message as recorded.
    pub fn enqueue_outbound(&self, new: NewOutbound) -> Result<MessageRecord> {
        let txn = self.db()?.begin_write()?;
        let record = {
            let mut t = Tables::open(&txn, &self.message_ids)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            t.insert_outbound(&mut outbox, &new)?
        };
        txn.commit()?;
        Ok(record)
    }

    /// Jobs due at `now_ms`, oldest first, at most one per recipient (a recipient's later
    /// messages wait for its earlier ones, so order is kept), skipping recipients in `busy`,
    /// within `limits`. Campaign jobs come after all the others: replies go first.
    pub fn outbox_due(
        &self,
        now_ms: i64,
        limits: DueLimits,
        busy: &std::collections::HashSet<String>,
    ) -> Result<(Vec<OutboxJob>, Option<i64>)> {
        // Only what the choice needs is read from each row, borrowing the recipient: most rows
        // of a busy outbox are skipped (in flight, or a recipient already chosen).
        #[derive(Deserialize)]
        struct JobHead<'a> {
            #[serde(borrow)]
            recipient: std::borrow::Cow<'a, str>,
            state: JobState,
            next_attempt_ms: i64,
            #[serde(default, borrow)]
            phone_number_id: Option<std::borrow::Cow<'a, str>>,
            #[serde(default)]
            campaign: Option<u64>,
        }
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(OUTBOX)?;
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut per_number: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let mut due = Vec::new();
        let mut bulk = Vec::new();
        let mut next_wakeup: Option<i64> = None;
        for (scanned, row) in table.iter()?.enumerate() {
            if scanned >= limits.max_rows {
                break;
            }
            let row = row?;
            let bytes = row.1.value();
            let head: JobHead = decode("outbox", bytes)?;
            if seen.contains(head.recipient.as_ref()) || busy.contains(head.recipient.as_ref()) {
                continue;
            }
            if head.state == JobState::Queued && head.next_attempt_ms <= now_ms {
                let number = head.phone_number_id.as_deref().unwrap_or("");
                if per_number.get(number).is_some_and(|n| *n >= limits.per_number) {
                    continue;
                }
                *per_number.entry(number.to_string()).or_default() += 1;
            }
            seen.insert(head.recipient.into_owned());
            if head.state == JobState::Queued {
                if head.next_attempt_ms <= now_ms {
                    let job = decode("outbox", bytes)?;
                    if head.campaign.is_some() {
                        bulk.push(job)
                    } else {
                        due.push(job)
                    }
                    if due.len() + bulk.len() >= limits.total {
                        break;
                    }
                } else {
                    next_wakeup = Some(next_wakeup.map_or(head.next_attempt_ms, |n| n.min(head.next_attempt_ms)));
                }
            }
        }
        due.append(&mut bulk);
        Ok((due, next_wakeup))
    }

    /// Makes the jobs held for paused template `name` (`language`) due now; returns how many.
    pub fn outbox_release_held(&self, name: &str, language: &str) -> Result<usize> {
        let needle = format!(
            "{HELD_PREFIX}template `{name}` ({})",
            crate::store::templates::normalize_language(language)
        );
        let now = now_ms();
        let txn = self.db()?.begin_write()?;
        let mut released = 0;
        {
            let mut outbox = txn.open_table(OUTBOX)?;
            let mut held: Vec<(u64, OutboxJob)> = Vec::new();
            for row in outbox.iter()? {
                let (k, v) = row?;
                let job: OutboxJob = decode("outbox", v.value())?;
                if job.state == JobState::Queued && job.last_error.as_deref().is_some_and(|e| e.starts_with(&needle)) {
                    held.push((k.value(), job));
                }
            }
            for (id, mut job) in held {
                job.next_attempt_ms = now;
                outbox.insert(id, encode(&job).as_slice())?;
                released += 1;
            }
        }
        txn.commit()?;
        Ok(released)
    }

    /// Number of jobs in the outbox (queued or sending).
    pub fn outbox_len(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        let txn = self.db()?.begin_read()?;
        Ok(txn.open_table(OUTBOX)?.len()?)
    }

    /// Marks a job as being sent (durably, before the network call) and returns the Graph
    /// API body to send (see [`Store::outbox_record_and_mark`]).
    pub fn outbox_mark_sending(&self, id: u64) -> Result<Option<Value>> {
        Ok(self
            .outbox_record_and_mark(&[], &[id], &crate::explain_error)?
            .into_iter()
            .next()
            .map(|(_, body)| body))
    }

    /// Records send outcomes (as [`Store::outbox_record`]) and marks jobs `ids` as being sent,
    /// in ONE transaction: the outbox worker's group commit. Durable when it marks a job or
    /// records a retry or a failure. Returns each marked job's Graph API body; jobs no longer
    /// queued are left out.
    ///
    /// A mark writes only the job: the message record keeps its status (`queued`) and gets its
    /// attempt count with Meta's answer; reads show `sending` from the job meanwhile.
    /// Rewriting each whole message in the durable commit on the send path cost about a tenth
    /// of the end-to-end CPU.
    pub fn outbox_record_and_mark(
        &self,
        outcomes: &[SendOutcome],
        ids: &[u64],
        explain: &dyn Fn(i64) -> String,
    ) -> Result<Vec<(u64, Value)>> {
        let mut txn = self.db()?.begin_write()?;
        if ids.is_empty() && outcomes.iter().all(|o| matches!(o, SendOutcome::Accepted { .. })) {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| super::StoreError::Redb(redb::Error::from(e)))?;
        }
        let mut out = Vec::with_capacity(ids.len());
        {
            let mut t = Tables::open(&txn, &self.message_ids)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            for outcome in outcomes {
                t.record_outcome(&mut outbox, outcome, explain)?;
            }
            for &id in ids {
                let job: Option<OutboxJob> = {
                    let row = outbox.get(id)?;
                    row.map(|v| decode("outbox", v.value())).transpose()?
                };
                let (Some(mut job), Some(body)) = (job, t.get_message_raw(id)?) else {
                    continue;
                };
                if job.state != JobState::Queued {
                    continue;
                }
                job.state = JobState::Sending;
                job.attempts += 1;
                outbox.insert(id, encode(&job).as_slice())?;
                out.push((id, body));
            }
        }
        txn.commit()?;
        Ok(out)
    }

    /// Records Meta's acceptance: the wamid is indexed (statuses that came first are applied)
    /// and the job is done.
    pub fn outbox_accepted(
        &self,
        id: u64,
        wamid: &str,
        response: Value,
        explain: &dyn Fn(i64) -> String,
    ) -> Result<()> {
        let outcome = SendOutcome::Accepted {
            id,
            wamid: wamid.to_string(),
            response,
        };
        self.outbox_record(std::slice::from_ref(&outcome), explain)
    }

    /// Puts a job back in the queue after a retryable failure.
    pub fn outbox_retry(&self, id: u64, next_attempt_ms: i64, error: String) -> Result<()> {
        let outcome = SendOutcome::Retry {
            id,
            next_attempt_ms,
            error,
        };
        self.outbox_record(std::slice::from_ref(&outcome), &crate::explain_error)
    }

    /// Marks a message failed for good and drops its job.
    pub fn outbox_failed(&self, id: u64, error: ErrorInfo, response: Option<Value>) -> Result<()> {
        let outcome = SendOutcome::Failed { id, error, response };
        self.outbox_record(std::slice::from_ref(&outcome), &crate::explain_error)
    }

    /// Records the outcomes of several sends in ONE transaction (group commit).
    ///
    /// A batch of accepted sends only is not fsynced on its own (it becomes durable with the
    /// next durable commit, at the latest the next batch's `sending` mark): if walua dies
    /// first, those messages come back as `unknown` and the first status webhook reconciles
    /// them through `biz_opaque_callback_data`, the policy of an interrupted send. A batch
    /// with a retry or a failure is durable, so that a retry is never forgotten.
    pub fn outbox_record(&self, outcomes: &[SendOutcome], explain: &dyn Fn(i64) -> String) -> Result<()> {
        self.outbox_record_and_mark(outcomes, &[], explain).map(drop)
    }

    /// At start-up: jobs left in `sending` were interrupted between the network call and the
    /// record of Meta's answer. They are NOT resent (Meta may have delivered them); their
    /// message gets status `unknown` with an explanation, and a later status webhook carrying
    /// walua's callback data reconciles it. Returns the ids concerned.
    pub fn outbox_recover_interrupted(&self) -> Result<Vec<u64>> {
        let txn = self.db()?.begin_write()?;
        let mut ids = Vec::new();
        {
            let mut t = Tables::open(&txn, &self.message_ids)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            let mut interrupted = Vec::new();
            for row in outbox.iter()? {
                let (k, v) = row?;
                let job: OutboxJob = decode("outbox", v.value())?;
                if job.state == JobState::Sending {
                    interrupted.push((k.value(), job.attempts));
                }
            }
            for (id, attempts) in interrupted {
                outbox.remove(id)?;
                if let Some(mut m) = t.get_message(id)? {
                    m.attempts = attempts;
                    m.status = "unknown".into();
                    m.statuses.push(StatusEntry::local("unknown", now_ms() / 1000));
                    m.error = Some(ErrorInfo {
                        code: 0,
                        title: "Send interrupted".into(),
                        details: None,
                        explanation: "walua stopped while Meta was answering this send, so whether Meta accepted it is unknown. It was NOT resent, to avoid a duplicate. If Meta delivered it, its status webhooks will update this message; otherwise resend it with POST /api/messages/{id}/resend.".into(),
                    });
                    t.put_message(&m)?;
                }
                ids.push(id);
            }
        }
        txn.commit()?;
        Ok(ids)
    }

    /// Queues again a message that failed, was cancelled, or whose send outcome is unknown
    /// (operator action).
    pub fn outbox_resend(&self, id: u64) -> Result<Option<MessageRecord>> {
        let txn = self.db()?.begin_write()?;
        let out = {
            let mut t = Tables::open(&txn, &self.message_ids)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            match t.get_message(id)? {
                Some(mut m)
                    if m.direction == Direction::Outbound
                        && matches!(m.status.as_str(), "failed" | "unknown" | "cancelled")
                        && m.wamid.is_none() =>
                {
                    let now = now_ms();
                    let job = OutboxJob::queued(id, m.to.clone().unwrap_or_default(), m.phone_number_id.clone(), now);
                    outbox.insert(id, encode(&job).as_slice())?;
                    m.status = "queued".into();
                    m.error = None;
                    m.statuses.push(StatusEntry::local("queued", now / 1000));
                    t.put_message(&m)?;
                    Some(m)
                }
                _ => None,
            }
        };
        txn.commit()?;
        Ok(out)
    }
}

impl Tables<'_> {
    /// Meta answered a send to `sent_to` with another `wa_id` (some countries' numbers are
    /// written otherwise at Meta, e.g. Brazil's ninth digit): the conversation moves to
    /// Meta's, which inbound messages will carry, and the number as sent stays an alias.
    fn keep_metas_wa_id(&mut self, sent_to: &str, wa_id: &str) -> Result<()> {
        let mut into = match self.get_conversation(wa_id)? {
            Some(c) => c,
            None => Conversation {
                contact: wa_id.to_string(),
                wa_id: Some(wa_id.to_string()),
                ..Conversation::default()
            },
        };
        self.merge_conversation(sent_to, &mut into)?;
        into.wa_id = Some(wa_id.to_string());
        self.put_conversation(&into)?;
        self.aliases.insert(wa_id, into.contact.as_str())?;
        self.aliases.insert(sent_to, into.contact.as_str())?;
        tracing::info!(
            sent_to,
            wa_id,
            "Meta knows this number as another wa_id: the contact is keyed by Meta's"
        );
        Ok(())
    }

    /// Records an outbound message (and its job unless dry run or refused by the window)
    /// inside the caller's transaction.
    pub(super) fn insert_outbound(
        &mut self,
        outbox: &mut redb::Table<'_, u64, &'static [u8]>,
        new: &NewOutbound,
    ) -> Result<MessageRecord> {
        self.insert_outbound_at(outbox, new, now_ms())
    }

    /// [`Tables::insert_outbound`] at time `now` (unix ms): a generated history's past sends.
    pub(super) fn insert_outbound_at(
        &mut self,
        outbox: &mut redb::Table<'_, u64, &'static [u8]>,
        new: &NewOutbound,
        now: i64,
    ) -> Result<MessageRecord> {
        let alias = normalize_contact(&new.recipient);
        let key = self.aliases.get(alias.as_str())?.map(|v| v.value().to_string());
        let existing = match &key {
            Some(k) => self.get_conversation(k)?,
            None => None,
        };
        let mut conv = existing.clone().unwrap_or_else(|| {
            let bsuid = crate::whatsapp::message::Recipient::parse(&alias)
                .map(|r| matches!(r, crate::whatsapp::message::Recipient::Bsuid(_)))
                .unwrap_or(false);
            Conversation {
                contact: alias.clone(),
                wa_id: (!bsuid).then(|| alias.clone()),
                user_id: bsuid.then(|| alias.clone()),
                ..Conversation::default()
            }
        });
        let id = new.id;
        super::record_id(&mut self.sequences, "message", id)?;
        let mut body = new.body.clone();
        if body.get("status").is_none() {
            body["biz_opaque_callback_data"] = Value::String(format!("{CALLBACK_PREFIX}{id}"));
        }
        let mut record = MessageRecord {
            id,
            direction: Direction::Outbound,
            wamid: None,
            contact: conv.contact.clone(),
            from: None,
            to: Some(new.recipient.clone()),
            kind: new.kind.clone(),
            summary: new.summary.clone(),
            status: "queued".into(),
            statuses: vec![],
            error: None,
            timestamp: now / 1000,
            stored_at_ms: now,
            delivery_id: None,
            content: new.content.clone(),
            context: new.reply_to.as_ref().map(|w| serde_json::json!({ "id": w })),
            raw: body,
            response: None,
            attempts: 0,
            media_file: None,
            origin: Some(new.origin.clone()),
            script: None,
            phone_number_id: new.phone_number_id.clone(),
            record: new.record.clone(),
        };
        let local = |status: &str| StatusEntry::local(status, now / 1000);
        let from = new.phone_number_id.as_deref();
        if new.free_form && !new.allow_outside_window && !window_open(existing.as_ref(), from, now / 1000) {
            record.status = "failed".into();
            record.statuses.push(local("failed"));
            record.error = Some(window_closed_error(&new.recipient, existing.as_ref(), from));
        } else if new.dry_run {
            record.status = "dry_run".into();
            record.statuses.push(local("dry_run"));
        } else {
            record.statuses.push(local("queued"));
            let mut job = OutboxJob::queued(id, new.recipient.clone(), new.phone_number_id.clone(), now);
            job.campaign = super::campaigns::campaign_of(&new.origin);
            outbox.insert(id, encode(&job).as_slice())?;
        }
        self.put_message(&record)?;
        super::inbox::index_message(&mut self.idx, &record)?;
        if let Some(r) = new.record.as_ref().filter(|_| record.status != "failed") {
            let note =
                super::chatter::ChatterNote::new(r.clone(), chatter_sent_text(&record, new), new.chatter_file.clone());
            self.queue_chatter(note)?;
        }
        if record.status != "failed" {
            for button in super::button_ids(&record.raw) {
                self.sent_buttons
                    .insert((conv.contact.as_str(), button.as_str()), now)?;
            }
        }
        self.conversation_messages.insert((conv.contact.as_str(), id), ())?;
        conv.message_count += 1;
        conv.last_outbound = Some(id);
        conv.last_message_at = conv.last_message_at.max(now / 1000);
        conv.last_summary = new.summary.clone();
        self.put_conversation(&conv)?;
        self.aliases.insert(alias.as_str(), conv.contact.as_str())?;
        Ok(record)
    }
}

/// The chatter note of a send about a record: what went, to whom, from which number.
fn chatter_sent_text(m: &MessageRecord, new: &NewOutbound) -> String {
    let to = super::readable_contact(&new.recipient);
    let from = new
        .phone_number_id
        .as_deref()
        .map(|n| format!(" depuis le numéro {n}"))
        .unwrap_or_default();
    let dry = if new.dry_run {
        " (simulation : rien n'a été envoyé)"
    } else {
        ""
    };
    let what = match m.content.get("text").and_then(Value::as_str) {
        Some(text) if m.kind == "text" => text.to_string(),
        _ => m.summary.clone(),
    };
    format!("Message WhatsApp envoyé à {to}{from}{dry} :\n{what}")
}

/// The outcome of one send, recorded by [`Store::outbox_record`].
#[derive(Debug, Clone)]
pub enum SendOutcome {
    /// Meta accepted the message (`wamid` empty for mark-as-read).
    Accepted {
        /// The message.
        id: u64,
        /// Meta's message id.
        wamid: String,
        /// Meta's answer.
        response: Value,
    },
    /// A retryable failure: the job waits until `next_attempt_ms`.
    Retry {
        /// The message.
        id: u64,
        /// When to try again (unix ms).
        next_attempt_ms: i64,
        /// Why, for the operator.
        error: String,
    },
    /// A definite failure.
    Failed {
        /// The message.
        id: u64,
        /// Code, title and explanation.
        error: ErrorInfo,
        /// Meta's answer, when there was one.
        response: Option<Value>,
    },
}

impl Tables<'_> {
    pub(super) fn record_outcome(
        &mut self,
        outbox: &mut redb::Table<'_, u64, &'static [u8]>,
        outcome: &SendOutcome,
        explain: &dyn Fn(i64) -> String,
    ) -> Result<()> {
        let now_s = now_ms() / 1000;
        let entry = |status: &str, errors| StatusEntry {
            status: status.into(),
            timestamp: now_s,
            errors,
            conversation: None,
            pricing: None,
        };
        match outcome {
            SendOutcome::Accepted { id, wamid, response } => {
                let job = take_job(outbox, *id)?;
                if let Some(mut m) = self.get_message(*id)? {
                    if let Some(job) = job {
                        m.attempts = job.attempts;
                    }
                    m.response = Some(response.clone());
                    if m.status == "sending" {
                        m.status = "queued".into();
                    }
                    m.apply_status(entry("sent", vec![]), explain);
                    if !wamid.is_empty() {
                        m.wamid = Some(wamid.clone());
                        self.wamids.insert(wamid.as_str(), *id)?;
                        self.take_orphans(&mut m, explain)?;
                    }
                    let meta_wa_id = response
                        .pointer("/contacts/0/wa_id")
                        .and_then(Value::as_str)
                        .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()));
                    let contact = m.contact.clone();
                    self.put_message(&m)?;
                    if let Some(w) = meta_wa_id
                        && w != contact
                        && contact.bytes().all(|b| b.is_ascii_digit())
                    {
                        self.keep_metas_wa_id(&contact, w)?;
                    }
                }
            }
            SendOutcome::Retry {
                id,
                next_attempt_ms,
                error,
            } => {
                let job: Option<OutboxJob> = {
                    let row = outbox.get(*id)?;
                    row.map(|v| decode("outbox", v.value())).transpose()?
                };
                if let (Some(mut job), Some(mut m)) = (job, self.get_message(*id)?) {
                    job.state = JobState::Queued;
                    job.next_attempt_ms = *next_attempt_ms;
                    job.last_error = Some(error.clone());
                    outbox.insert(*id, encode(&job).as_slice())?;
                    m.attempts = job.attempts;
                    m.status = "queued".into();
                    let why = crate::webhook::payload::MetaError {
                        code: 0,
                        title: Some(error.clone()),
                        ..Default::default()
                    };
                    m.statuses.push(entry("retry", vec![why]));
                    self.put_message(&m)?;
                }
            }
            SendOutcome::Failed { id, error, response } => {
                let job = take_job(outbox, *id)?;
                if let Some(mut m) = self.get_message(*id)? {
                    if let Some(job) = job {
                        m.attempts = job.attempts;
                    }
                    m.status = "failed".into();
                    m.statuses.push(entry("failed", vec![]));
                    m.error = Some(error.clone());
                    if response.is_some() {
                        m.response = response.clone();
                    }
                    self.put_message(&m)?;
                }
            }
        }
        Ok(())
    }
}

/// Removes a job, returning it (`None` if there was none).
fn take_job(outbox: &mut redb::Table<'_, u64, &'static [u8]>, id: u64) -> Result<Option<OutboxJob>> {
    let removed = outbox.remove(id)?;
    removed.map(|v| decode("outbox", v.value())).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_template(store: &Store, to: &str, number: &str) {
        store
            .enqueue_outbound(NewOutbound {
                id: store.allocate_message_id(),
                recipient: to.into(),
                kind: "template".into(),
                summary: String::new(),
                content: Value::Null,
                body: serde_json::json!({"messaging_product": "whatsapp", "to": to, "type": "template"}),
                free_form: false,
                allow_outside_window: false,
                dry_run: false,
                origin: "test".into(),
                reply_to: None,
                phone_number_id: Some(number.into()),
                record: None,
                chatter_file: None,
            })
            .unwrap();
    }

    #[test]
    fn one_numbers_backlog_does_not_hide_the_other_numbers_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("walua.redb")).unwrap();
        for i in 0..40 {
            queue_template(&store, &format!("22177{i:07}"), "111");
        }
        queue_template(&store, "221779999999", "222");
        let count = |due: &[OutboxJob], n: &str| due.iter().filter(|j| j.phone_number_id.as_deref() == Some(n)).count();
        let later = now_ms() + 1000;

        let (due, _) = store
            .outbox_due(later, DueLimits::shared_by(32, 2), &Default::default())
            .unwrap();
        assert_eq!((count(&due, "111"), count(&due, "222")), (16, 1));

        // One number: the oldest jobs, as many as asked.
        let (due, _) = store
            .outbox_due(later, DueLimits::shared_by(32, 1), &Default::default())
            .unwrap();
        assert_eq!((count(&due, "111"), count(&due, "222")), (32, 0));
    }
}
