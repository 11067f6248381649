//! Campaigns in the store: the campaign, its recipients, its counters, and who received a
//! campaign lately (for replies and opt-outs).
//!
//! A recipient is handed to the outbox in the same transaction that records its message and
//! its send job and moves the campaign's cursor past it ([`Store::campaign_feed`]), so a
//! crash at any point sends nobody twice and forgets nobody. The counters follow every change
//! of a campaign message's status in the transaction that makes it ([`Tables::campaign_tally`],
//! called by `put_message`), so the report is exact without reading 100,000 messages.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::outbox::{NewOutbound, OUTBOX, OutboxJob};
use super::{MessageRecord, Result, SEQUENCES, Store, StoreError, Tables, decode, encode, next_ids, now_ms};

/// Campaign id → JSON [`Campaign`].
pub(super) const CAMPAIGNS: TableDefinition<u64, &[u8]> = TableDefinition::new("campaigns");
/// (campaign id, recipient index) → JSON [`CampaignRecipient`].
pub(super) const CAMPAIGN_RECIPIENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("campaign_recipients");
/// Campaign id → JSON [`CampaignCounts`].
pub(super) const CAMPAIGN_COUNTS: TableDefinition<u64, &[u8]> = TableDefinition::new("campaign_counts");
/// Conversation key → JSON [`RecentCampaign`]: the last campaign that reached a contact.
pub(super) const CAMPAIGN_RECENT: TableDefinition<&str, &[u8]> = TableDefinition::new("campaign_recent");

/// How long after a campaign message a contact's message counts as a reply to it, and their
/// opt-out as caused by it.
pub const ATTRIBUTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// The origin of a campaign's messages: `campaign:ID`.
pub fn campaign_origin(id: u64) -> String {
    format!("campaign:{id}")
}

/// The campaign a message origin names, if it is a campaign's.
pub fn campaign_of(origin: &str) -> Option<u64> {
    origin.strip_prefix("campaign:")?.parse().ok()
}

/// Where a campaign stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    /// Created, not started: its audience can be looked at.
    Draft,
    /// Starts by itself at `at_ms`.
    Scheduled,
    /// Handing its recipients to the outbox.
    Running,
    /// Paused by an operator.
    Paused,
    /// Paused by walua because Meta paused its template; resumes when Meta unpauses it.
    Held,
    /// Cancelled: nobody else receives it.
    Cancelled,
    /// Every recipient was handed to the outbox and every send ended.
    Done,
}

impl CampaignStatus {
    /// Its name in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Draft => "draft",
            CampaignStatus::Scheduled => "scheduled",
            CampaignStatus::Running => "running",
            CampaignStatus::Paused => "paused",
            CampaignStatus::Held => "held",
            CampaignStatus::Cancelled => "cancelled",
            CampaignStatus::Done => "done",
        }
    }

    /// Whether nothing will change its audience's sends any more.
    pub fn is_final(self) -> bool {
        matches!(self, CampaignStatus::Cancelled | CampaignStatus::Done)
    }
}

/// A template sent to an audience.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Campaign {
    /// walua's id (a sequence).
    pub id: u64,
    /// The operator's name for it.
    pub name: String,
    /// The template sent.
    pub template: String,
    /// Its language.
    pub lang: String,
    /// The business number it goes out from (phone number id), `None` in a dry run without
    /// a number.
    pub phone_number_id: Option<String>,
    /// Where it stands.
    pub status: CampaignStatus,
    /// When a scheduled campaign starts (unix ms).
    pub at_ms: Option<i64>,
    /// When it was created (unix ms).
    pub created_at_ms: i64,
    /// When it first ran (unix ms).
    pub started_at_ms: Option<i64>,
    /// When it ended: done or cancelled (unix ms).
    pub finished_at_ms: Option<i64>,
    /// Recipients, skipped ones included.
    pub total: u64,
    /// The index of the next recipient to hand to the outbox (all before it were handed or
    /// skipped).
    pub cursor: u64,
    /// Why it is paused or held, or who cancelled it.
    pub reason: Option<String>,
    /// Where its audience came from: `list`, `csv` or `odoo`.
    pub source: String,
    /// Who created it (`api`, `console:NAME`).
    pub created_by: String,
}

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientState {
    /// Not handed to the outbox yet.
    Pending,
    /// Its message was recorded (see the message for its status).
    Queued,
    /// Not sent: `reason` says why.
    Skipped,
    /// Not sent: the campaign was cancelled first.
    Cancelled,
}

/// One recipient of a campaign.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CampaignRecipient {
    /// As given (phone, BSUID), or as read from the CSV / Odoo.
    pub to: String,
    /// The template parameters: a list, or a table keyed by parameter name.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
    /// Where it stands.
    pub state: RecipientState,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The kind of reason (`invalid`, `duplicate`, `opted_out`, `refused`), for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<String>,
    /// Its message, once queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<u64>,
    /// Where it came from: the CSV line or the Odoo partner id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl CampaignRecipient {
    /// A recipient still to be sent to.
    pub fn pending(to: String, params: Value, source: Option<String>) -> CampaignRecipient {
        CampaignRecipient {
            to,
            params,
            state: RecipientState::Pending,
            reason: None,
            skip: None,
            message_id: None,
            source,
        }
    }

    /// A recipient who will not be sent to, for `reason` of kind `skip`.
    pub fn skipped(to: String, skip: &str, reason: String, source: Option<String>) -> CampaignRecipient {
        CampaignRecipient {
            to,
            params: Value::Null,
            state: RecipientState::Skipped,
            reason: Some(reason),
            skip: Some(skip.to_string()),
            message_id: None,
            source,
        }
    }
}

/// A campaign's counters, kept exact in the transactions that change them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CampaignCounts {
    /// Its messages by current status (`queued`, `sent`, `delivered`, `read`, `failed`, …).
    #[serde(default)]
    pub by_status: BTreeMap<String, u64>,
    /// Its failed messages by Meta's error code (`0`: walua's own refusal).
    #[serde(default)]
    pub failed_codes: BTreeMap<String, u64>,
    /// Skipped recipients by kind of reason.
    #[serde(default)]
    pub skipped: BTreeMap<String, u64>,
    /// Recipients who wrote after receiving it (within [`ATTRIBUTION_MS`]).
    #[serde(default)]
    pub replied: u64,
    /// Recipients who opted out after receiving it (within [`ATTRIBUTION_MS`]).
    #[serde(default)]
    pub opted_out: u64,
    /// Recipients not sent to because the campaign was cancelled.
    #[serde(default)]
    pub cancelled: u64,
}

impl CampaignCounts {
    /// Messages of this campaign with status `status`.
    pub fn status(&self, status: &str) -> u64 {
        self.by_status.get(status).copied().unwrap_or(0)
    }

    /// Skipped recipients, every reason.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

/// The last campaign that reached a contact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RecentCampaign {
    campaign: u64,
    at_ms: i64,
    #[serde(default)]
    replied: bool,
    #[serde(default)]
    opted_out: bool,
}

/// Why a campaign could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum CampaignChangeError {
    /// No campaign has this id (404).
    #[error("no campaign {0}")]
    Missing(u64),
    /// The change does not apply in its current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<redb::TransactionError> for CampaignChangeError {
    fn from(e: redb::TransactionError) -> Self {
        CampaignChangeError::Store(e.into())
    }
}

impl From<redb::TableError> for CampaignChangeError {
    fn from(e: redb::TableError) -> Self {
        CampaignChangeError::Store(e.into())
    }
}

impl From<redb::StorageError> for CampaignChangeError {
    fn from(e: redb::StorageError) -> Self {
        CampaignChangeError::Store(e.into())
    }
}

impl From<redb::CommitError> for CampaignChangeError {
    fn from(e: redb::CommitError) -> Self {
        CampaignChangeError::Store(e.into())
    }
}

/// One recipient handed to [`Store::campaign_feed`]: its index, and its prepared message or
/// why it is skipped (kind, reason).
pub type FeedItem = (u64, std::result::Result<NewOutbound, (String, String)>);

/// What a feed did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fed {
    /// Messages queued.
    pub queued: usize,
    /// Recipients skipped.
    pub skipped: usize,
    /// The campaign was no longer running (paused, cancelled): nothing was done.
    pub stopped: bool,
}

fn get_campaign(t: &impl ReadableTable<u64, &'static [u8]>, id: u64) -> Result<Option<Campaign>> {
    t.get(id)?.map(|v| decode("campaigns", v.value())).transpose()
}

fn get_counts(t: &impl ReadableTable<u64, &'static [u8]>, id: u64) -> Result<CampaignCounts> {
    Ok(t.get(id)?
        .map(|v| decode("campaign_counts", v.value()))
        .transpose()?
        .unwrap_or_default())
}

impl Store {
    /// Records a new campaign and its recipients (skipped ones with their reasons) in one
    /// transaction, and gives it its id. `campaign.id`, `total` and `cursor` are set here.
    pub fn campaign_create(&self, mut campaign: Campaign, recipients: &[CampaignRecipient]) -> Result<Campaign> {
        let txn = self.db()?.begin_write()?;
        {
            let mut seq = txn.open_table(SEQUENCES)?;
            campaign.id = next_ids(&mut seq, "campaign", 1)?;
            campaign.total = recipients.len() as u64;
            campaign.cursor = 0;
            let mut counts = CampaignCounts::default();
            let mut rows = txn.open_table(CAMPAIGN_RECIPIENTS)?;
            for (i, r) in recipients.iter().enumerate() {
                if r.state == RecipientState::Skipped {
                    *counts
                        .skipped
                        .entry(r.skip.clone().unwrap_or_else(|| "refused".into()))
                        .or_default() += 1;
                }
                rows.insert((campaign.id, i as u64), encode(r).as_slice())?;
            }
            txn.open_table(CAMPAIGNS)?
                .insert(campaign.id, encode(&campaign).as_slice())?;
            txn.open_table(CAMPAIGN_COUNTS)?
                .insert(campaign.id, encode(&counts).as_slice())?;
        }
        txn.commit()?;
        Ok(campaign)
    }

    /// Every campaign with its counters, newest first.
    pub fn campaigns(&self) -> Result<Vec<(Campaign, CampaignCounts)>> {
        let txn = self.db()?.begin_read()?;
        let campaigns = txn.open_table(CAMPAIGNS)?;
        let counts = txn.open_table(CAMPAIGN_COUNTS)?;
        let mut out = Vec::new();
        for row in campaigns.iter()?.rev() {
            let (k, v) = row?;
            out.push((decode("campaigns", v.value())?, get_counts(&counts, k.value())?));
        }
        Ok(out)
    }

    /// The campaigns that may still send (scheduled, running or held), oldest first.
    pub fn campaigns_active(&self) -> Result<Vec<(Campaign, CampaignCounts)>> {
        let mut all = self.campaigns()?;
        all.retain(|(c, _)| {
            matches!(
                c.status,
                CampaignStatus::Scheduled | CampaignStatus::Running | CampaignStatus::Held
            )
        });
        all.reverse();
        Ok(all)
    }

    /// One campaign with its counters.
    pub fn campaign(&self, id: u64) -> Result<Option<(Campaign, CampaignCounts)>> {
        let txn = self.db()?.begin_read()?;
        let Some(c) = get_campaign(&txn.open_table(CAMPAIGNS)?, id)? else {
            return Ok(None);
        };
        Ok(Some((c, get_counts(&txn.open_table(CAMPAIGN_COUNTS)?, id)?)))
    }

    /// Up to `limit` recipients of campaign `id` from index `from`, in a given state or any.
    pub fn campaign_recipients(
        &self,
        id: u64,
        from: u64,
        state: Option<RecipientState>,
        limit: usize,
    ) -> Result<Vec<(u64, CampaignRecipient)>> {
        let txn = self.db()?.begin_read()?;
        let rows = txn.open_table(CAMPAIGN_RECIPIENTS)?;
        let mut out = Vec::new();
        for row in rows.range((id, from)..=(id, u64::MAX))? {
            let (k, v) = row?;
            let r: CampaignRecipient = decode("campaign_recipients", v.value())?;
            if state.is_none_or(|s| s == r.state) {
                out.push((k.value().1, r));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Changes a campaign in one transaction: `change` sees it and its counters, and refuses
    /// with a reason (409) or edits it. Returns it as stored.
    pub fn campaign_change(
        &self,
        id: u64,
        change: impl FnOnce(&mut Campaign, &CampaignCounts) -> std::result::Result<(), String>,
    ) -> std::result::Result<Campaign, CampaignChangeError> {
        let txn = self.db()?.begin_write()?;
        let campaign = {
            let mut table = txn.open_table(CAMPAIGNS)?;
            let Some(mut c) = get_campaign(&table, id)? else {
                return Err(CampaignChangeError::Missing(id));
            };
            let counts = get_counts(&txn.open_table(CAMPAIGN_COUNTS)?, id)?;
            change(&mut c, &counts).map_err(CampaignChangeError::Conflict)?;
            table.insert(id, encode(&c).as_slice())?;
            c
        };
        txn.commit()?;
        Ok(campaign)
    }

    /// Hands recipients of a running campaign to the outbox: each prepared message is recorded
    /// with its send job, each refusal marks its recipient skipped, and the cursor moves to
    /// `cursor`, all in one transaction. Nothing is done if the campaign stopped running.
    pub fn campaign_feed(&self, id: u64, items: Vec<FeedItem>, cursor: u64) -> Result<Fed> {
        let txn = self.db()?.begin_write()?;
        let mut fed = Fed::default();
        {
            let mut campaigns = txn.open_table(CAMPAIGNS)?;
            let Some(mut campaign) = get_campaign(&campaigns, id)? else {
                return Ok(Fed {
                    stopped: true,
                    ..Fed::default()
                });
            };
            if campaign.status != CampaignStatus::Running {
                return Ok(Fed {
                    stopped: true,
                    ..Fed::default()
                });
            }
            let mut t = Tables::open(&txn, &self.message_ids)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            let mut rows = txn.open_table(CAMPAIGN_RECIPIENTS)?;
            let mut skipped: Vec<String> = Vec::new();
            let now = now_ms();
            for (index, item) in items {
                let Some(mut r) = rows
                    .get((id, index))?
                    .map(|v| decode::<CampaignRecipient>("campaign_recipients", v.value()))
                    .transpose()?
                else {
                    continue;
                };
                if r.state != RecipientState::Pending {
                    continue;
                }
                match item {
                    Ok(new) => {
                        let record = t.insert_outbound(&mut outbox, &new)?;
                        r.state = RecipientState::Queued;
                        r.message_id = Some(record.id);
                        let recent = RecentCampaign {
                            campaign: id,
                            at_ms: now,
                            replied: false,
                            opted_out: false,
                        };
                        t.campaign_recent
                            .insert(record.contact.as_str(), encode(&recent).as_slice())?;
                        fed.queued += 1;
                    }
                    Err((kind, reason)) => {
                        r.state = RecipientState::Skipped;
                        r.reason = Some(reason);
                        r.skip = Some(kind.clone());
                        skipped.push(kind);
                        fed.skipped += 1;
                    }
                }
                rows.insert((id, index), encode(&r).as_slice())?;
            }
            if !skipped.is_empty() {
                let mut counts = get_counts(&t.campaign_counts, id)?;
                for kind in skipped {
                    *counts.skipped.entry(kind).or_default() += 1;
                }
                t.campaign_counts.insert(id, encode(&counts).as_slice())?;
            }
            campaign.cursor = campaign.cursor.max(cursor);
            campaigns.insert(id, encode(&campaign).as_slice())?;
        }
        txn.commit()?;
        Ok(fed)
    }

    /// Holds (`hold`) or releases the queued send jobs of campaign `id` (a pause by the
    /// operator stops even the sends already handed to the outbox). Returns how many.
    pub fn campaign_hold_jobs(&self, id: u64, hold: bool) -> Result<usize> {
        let txn = self.db()?.begin_write()?;
        let mut changed = 0;
        {
            let mut outbox = txn.open_table(OUTBOX)?;
            let mut jobs: Vec<(u64, OutboxJob)> = Vec::new();
            for row in outbox.iter()? {
                let (k, v) = row?;
                let job: OutboxJob = decode("outbox", v.value())?;
                if job.campaign == Some(id) && job.state == super::outbox::JobState::Queued {
                    jobs.push((k.value(), job));
                }
            }
            let now = now_ms();
            for (key, mut job) in jobs {
                if hold {
                    job.next_attempt_ms = i64::MAX;
                    job.last_error = Some(format!("{}campaign {id} paused", super::outbox::HELD_PREFIX));
                } else if job.next_attempt_ms == i64::MAX {
                    job.next_attempt_ms = now;
                    job.last_error = None;
                } else {
                    continue;
                }
                outbox.insert(key, encode(&job).as_slice())?;
                changed += 1;
            }
        }
        txn.commit()?;
        Ok(changed)
    }

    /// Cancels campaign `id`: its queued send jobs are removed (their messages `cancelled`)
    /// and its recipients not handed to the outbox yet are marked cancelled, with the
    /// campaign itself, in one transaction. Sends already in flight end as they will.
    pub fn campaign_cancel(&self, id: u64, by: &str) -> std::result::Result<Campaign, CampaignChangeError> {
        let txn = self.db()?.begin_write()?;
        let campaign = {
            let mut campaigns = txn.open_table(CAMPAIGNS)?;
            let Some(mut campaign) = get_campaign(&campaigns, id)? else {
                return Err(CampaignChangeError::Missing(id));
            };
            if campaign.status.is_final() {
                return Err(CampaignChangeError::Conflict(format!(
                    "campaign {id} is already {}",
                    campaign.status.as_str()
                )));
            }
            let mut t = Tables::open(&txn, &self.message_ids)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            let mut queued: Vec<u64> = Vec::new();
            for row in outbox.iter()? {
                let (k, v) = row?;
                let job: OutboxJob = decode("outbox", v.value())?;
                if job.campaign == Some(id) && job.state == super::outbox::JobState::Queued {
                    queued.push(k.value());
                }
            }
            for message in queued {
                t.cancel_job(&mut outbox, message, by)?;
            }
            let mut rows = txn.open_table(CAMPAIGN_RECIPIENTS)?;
            let mut pending: Vec<(u64, CampaignRecipient)> = Vec::new();
            for row in rows.range((id, campaign.cursor)..=(id, u64::MAX))? {
                let (k, v) = row?;
                let r: CampaignRecipient = decode("campaign_recipients", v.value())?;
                if r.state == RecipientState::Pending {
                    pending.push((k.value().1, r));
                }
            }
            let mut counts = get_counts(&t.campaign_counts, id)?;
            counts.cancelled += pending.len() as u64;
            for (index, mut r) in pending {
                r.state = RecipientState::Cancelled;
                rows.insert((id, index), encode(&r).as_slice())?;
            }
            t.campaign_counts.insert(id, encode(&counts).as_slice())?;
            campaign.status = CampaignStatus::Cancelled;
            campaign.reason = Some(format!("cancelled by {by}"));
            campaign.finished_at_ms = Some(now_ms());
            campaign.cursor = campaign.total;
            campaigns.insert(id, encode(&campaign).as_slice())?;
            campaign
        };
        txn.commit()?;
        Ok(campaign)
    }
}

/// What the tally needs of a message as stored before a change.
#[derive(Deserialize)]
struct TallyBefore {
    status: String,
    #[serde(default)]
    error: Option<CodeOnly>,
}

#[derive(Deserialize)]
struct CodeOnly {
    code: i64,
}

impl Tables<'_> {
    /// Keeps campaign `id`'s counters in step with a change of one of its messages, about to
    /// be written as `m` (called by `put_message`, before the write).
    pub(super) fn campaign_tally(&mut self, id: u64, m: &MessageRecord) -> Result<()> {
        let before: Option<TallyBefore> = self
            .messages
            .get(m.id)?
            .map(|v| decode("messages", v.value()))
            .transpose()?;
        let new_code = m.error.as_ref().map_or(0, |e| e.code);
        if let Some(b) = &before
            && b.status == m.status
            && (m.status != "failed" || b.error.as_ref().map_or(0, |e| e.code) == new_code)
        {
            return Ok(());
        }
        let mut counts = get_counts(&self.campaign_counts, id)?;
        if let Some(b) = before {
            if let Some(n) = counts.by_status.get_mut(&b.status) {
                *n = n.saturating_sub(1);
            }
            if b.status == "failed" {
                let code = b.error.map_or(0, |e| e.code).to_string();
                if let Some(n) = counts.failed_codes.get_mut(&code) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        *counts.by_status.entry(m.status.clone()).or_default() += 1;
        if m.status == "failed" {
            *counts.failed_codes.entry(new_code.to_string()).or_default() += 1;
        }
        counts.by_status.retain(|_, n| *n > 0);
        counts.failed_codes.retain(|_, n| *n > 0);
        self.campaign_counts.insert(id, encode(&counts).as_slice())?;
        Ok(())
    }

    /// A contact wrote at `timestamp` (unix s): a reply to the last campaign that reached
    /// them, if it did lately and they had not replied yet.
    pub(super) fn campaign_replied(&mut self, contact: &str, timestamp: i64) -> Result<()> {
        self.campaign_attribute(contact, timestamp.saturating_mul(1000), |r, c| {
            (!r.replied).then(|| {
                r.replied = true;
                c.replied += 1;
            })
        })
    }

    /// A contact opted out now: counted against the last campaign that reached them lately.
    pub(super) fn campaign_opted_out(&mut self, contact: &str) -> Result<()> {
        self.campaign_attribute(contact, now_ms(), |r, c| {
            (!r.opted_out).then(|| {
                r.opted_out = true;
                c.opted_out += 1;
            })
        })
    }

    fn campaign_attribute(
        &mut self,
        contact: &str,
        at_ms: i64,
        count: impl FnOnce(&mut RecentCampaign, &mut CampaignCounts) -> Option<()>,
    ) -> Result<()> {
        let Some(mut recent) = self
            .campaign_recent
            .get(contact)?
            .map(|v| decode::<RecentCampaign>("campaign_recent", v.value()))
            .transpose()?
        else {
            return Ok(());
        };
        // Meta's timestamps are whole seconds: a reply in the same second as the send counts.
        if at_ms + 1000 < recent.at_ms || at_ms - recent.at_ms > ATTRIBUTION_MS {
            return Ok(());
        }
        let mut counts = get_counts(&self.campaign_counts, recent.campaign)?;
        if count(&mut recent, &mut counts).is_some() {
            self.campaign_counts
                .insert(recent.campaign, encode(&counts).as_slice())?;
            self.campaign_recent.insert(contact, encode(&recent).as_slice())?;
        }
        Ok(())
    }
}
