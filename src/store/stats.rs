//! The analytics aggregates behind `GET /api/stats`, `walua stats` and the console's
//! statistics page (see [`crate::stats`] for the figures and their rules).
//!
//! # Why a follower, and what it costs
//!
//! Every message write ([`super::Tables::put_message`]: a new inbound or outbound message, a
//! status, Meta's answer to a send) adds its message id to [`STATS_CHANGES`], an 8-byte key
//! with no value, in the writer's own transaction. That is all the delivery, dispatch and
//! outbox transactions pay. A *stats follower* ([`Store::stats_follow`]: every second in
//! the background, see [`crate::stats::follow`], and before each query) takes those ids in
//! order, reads each message once (a partial decode, [`StatsView`]), derives what it
//! contributes ([`MessageFacts`]), and moves the aggregates by the difference with what it
//! contributed the last time (kept in [`STATS_FACTS`]). So a message counts once however
//! often it is rewritten, a status moves its figures from "sent" to "delivered" to "read",
//! and a crash loses nothing: the follower's commit removes the ids it took, so an
//! uncommitted step is done again.
//!
//! The aggregates ([`STATS_DAYS`]) are one row per (dimension, local day, value): the
//! totals (`""`), and per `number`, `template`, `campaign` and `script`. A query reads the
//! rows of its days only: a year grouped by day is 365 rows, by template a few thousand,
//! whatever the number of messages.
//!
//! # Conversations and waits
//!
//! Two figures depend on a message's neighbours: whether it opens a conversation, and
//! which inbound message a reply answers. The follower keeps, per conversation, the time of
//! its latest message and of the first inbound message still waiting for an answer
//! ([`STATS_CLOCKS`]), and decides both when it first sees a message (messages are taken in
//! id order, which is the order walua stored them in). Those two facts are then kept with
//! the message. The rules are in [`crate::stats`].
//!
//! # Existing stores and the time zone
//!
//! Days are local days of `scripts.timezone`. The aggregates remember the zone and a
//! version ([`STATS_BUILT_FOR`] in `META`): a store without them (written before this
//! module) or built for another zone is rebuilt by the follower from message 0, in steps,
//! in the background ([`STATS_BACKFILL`] is its cursor); queries say so (`complete: false`).

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Direction, MESSAGES, META, Result, Store, StoreError, decode, encode};
use crate::store::outbox::WINDOW_SECS;

/// Message ids written since the stats follower last looked: message id → ().
pub(super) const STATS_CHANGES: TableDefinition<u64, ()> = TableDefinition::new("stats_changes");
/// What each message contributes to the aggregates now: message id → JSON [`MessageFacts`].
const STATS_FACTS: TableDefinition<u64, &[u8]> = TableDefinition::new("stats_facts");
/// The follower's clock per conversation: conversation key → JSON [`ConversationClock`].
const STATS_CLOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("stats_clocks");
/// The aggregates: (dimension, local day, value) → JSON [`Counts`]. Dimensions: `""` (the
/// totals, value `""`), `number`, `template`, `campaign`, `script`. Days are counted from
/// 1970-01-01 in `scripts.timezone`.
const STATS_DAYS: TableDefinition<(&str, i32, &str), &[u8]> = TableDefinition::new("stats_days");

/// `META` key: what the aggregates were built for, `v1 <time zone>`. Another value (or none)
/// rebuilds them.
const STATS_BUILT_FOR: &str = "stats_built_for";
/// `META` key: while the aggregates are being (re)built from the stored messages, the last
/// message id taken (u64 BE). Absent once they are complete.
const STATS_BACKFILL: &str = "stats_backfill";
/// The version of the facts and aggregates: bump it when their rules change, and every
/// store rebuilds them once.
const STATS_VERSION: &str = "v1";

/// The aggregates' dimensions besides the totals.
pub const DIMENSIONS: [&str; 4] = ["number", "template", "campaign", "script"];

/// Whether message writes mark their id for the follower (benches measure both).
static MARKING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The hook of the write paths: the table of changed message ids, opened with the other
/// tables of a write transaction.
pub(super) struct ChangeMarks<'txn> {
    table: Table<'txn, u64, ()>,
    on: bool,
}

impl<'txn> ChangeMarks<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        Ok(ChangeMarks {
            table: txn.open_table(STATS_CHANGES)?,
            on: MARKING.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Message `id` was written: the follower will look at it again.
    pub(super) fn mark(&mut self, id: u64) -> Result<()> {
        if self.on {
            self.table.insert(id, ())?;
        }
        Ok(())
    }
}

/// Who sent an outbound message, from its `origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sender {
    /// A script answering a customer (`script:buttons/…`, `script:scenarios/…`,
    /// `script:on_message`) or walua itself (`walua:optout`, `walua:fallback_reply`).
    Bot,
    /// An agent in the console (`console:NAME`).
    Human,
    /// The admin API's bearer token (`api`), which the CLI uses too (`cli`).
    Integration,
    /// A campaign (`campaign:ID`).
    Campaign,
    /// A hook or cron script (`script:hooks/…`, `script:cron/…`): business notifications.
    Notification,
    /// Anything else.
    Other,
}

impl Sender {
    /// The sender of a message queued with `origin`.
    pub fn of(origin: Option<&str>) -> Sender {
        match origin.unwrap_or("") {
            "api" | "cli" => Sender::Integration,
            o if o.starts_with("console:") => Sender::Human,
            o if o.starts_with("campaign:") => Sender::Campaign,
            o if o.starts_with("script:cron/") || o.starts_with("script:hooks/") => Sender::Notification,
            o if o.starts_with("script:") || o.starts_with("walua:") => Sender::Bot,
            _ => Sender::Other,
        }
    }

    /// Its name in the figures.
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::Bot => "bot",
            Sender::Human => "human",
            Sender::Integration => "integration",
            Sender::Campaign => "campaign",
            Sender::Notification => "notification",
            Sender::Other => "other",
        }
    }

    /// Every sender, in the order reports list them.
    pub const ALL: [Sender; 6] = [
        Sender::Bot,
        Sender::Human,
        Sender::Integration,
        Sender::Campaign,
        Sender::Notification,
        Sender::Other,
    ];

    /// Whether its messages answer a waiting customer (first-response time): the bot, an
    /// agent, an integration. Campaigns and notifications are not answers.
    pub fn answers(self) -> bool {
        matches!(self, Sender::Bot | Sender::Human | Sender::Integration)
    }
}

/// The response times of one kind of responder, as the aggregates keep them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseTimes {
    /// Answers counted.
    pub count: i64,
    /// Their total, in seconds (the mean is exact).
    pub total_s: i64,
    /// How many answers fell in each bucket (seconds rounded down to two significant
    /// digits, see [`response_bucket`]): the percentiles.
    pub buckets: BTreeMap<u32, i64>,
}

/// Seconds rounded down to two significant digits (59 → 59, 125 → 120, 3 725 → 3 700): a
/// response time's bucket, within 10 % of it.
pub fn response_bucket(secs: u32) -> u32 {
    let mut scale = 1;
    while secs / scale >= 100 {
        scale *= 10;
    }
    secs / scale * scale
}

/// The figures of a set of messages: one aggregate row, or a sum of rows. Every field is a
/// count (signed: the follower adds and subtracts contributions).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Inbound messages.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_in: i64,
    /// Outbound messages (not `mark_read` nor `typing`, which are not messages).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_out: i64,
    /// Outbound messages by [`Sender`] name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub out_by_sender: BTreeMap<String, i64>,
    /// Outbound messages with a definite outcome: accepted by Meta, or failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempted: i64,
    /// Outbound messages Meta delivered (`delivered`, `read` or `played` seen).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delivered: i64,
    /// Outbound messages read (`read` or `played` seen).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub read: i64,
    /// Outbound messages that failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: i64,
    /// Failed messages by Meta error code (0: walua's own refusal).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<i64, i64>,
    /// Messages Meta bills, by pricing category (`marketing`, `utility`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub billable: BTreeMap<String, i64>,
    /// Messages Meta priced as free, by pricing category (`service`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub free: BTreeMap<String, i64>,
    /// Conversations a customer's message opened.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub started_by_customer: i64,
    /// Conversations a business message opened (that message did not fail).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub started_by_business: i64,
    /// First-response times by responder ([`Sender`] name: bot, human, integration).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub responses: BTreeMap<String, ResponseTimes>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn add_map<K: Ord + Clone>(into: &mut BTreeMap<K, i64>, from: &BTreeMap<K, i64>, sign: i64) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_default();
        *e += sign * v;
        if *e == 0 {
            into.remove(k);
        }
    }
}

impl Counts {
    /// Adds `other` (`sign` 1) or takes it away (`sign` -1).
    pub fn add(&mut self, other: &Counts, sign: i64) {
        self.messages_in += sign * other.messages_in;
        self.messages_out += sign * other.messages_out;
        add_map(&mut self.out_by_sender, &other.out_by_sender, sign);
        self.attempted += sign * other.attempted;
        self.delivered += sign * other.delivered;
        self.read += sign * other.read;
        self.failed += sign * other.failed;
        add_map(&mut self.failures, &other.failures, sign);
        add_map(&mut self.billable, &other.billable, sign);
        add_map(&mut self.free, &other.free, sign);
        self.started_by_customer += sign * other.started_by_customer;
        self.started_by_business += sign * other.started_by_business;
        for (who, r) in &other.responses {
            let into = self.responses.entry(who.clone()).or_default();
            into.count += sign * r.count;
            into.total_s += sign * r.total_s;
            add_map(&mut into.buckets, &r.buckets, sign);
            if into.count == 0 && into.total_s == 0 && into.buckets.is_empty() {
                self.responses.remove(who);
            }
        }
    }

    /// Nothing counted.
    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }
}

/// What one message contributes to the aggregates, as the follower last saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageFacts {
    /// Local day (days since 1970-01-01 in `scripts.timezone`) of its timestamp.
    #[serde(rename = "d")]
    pub day: i32,
    /// Its timestamp (unix seconds: Meta's for inbound, queueing time for outbound).
    #[serde(rename = "at")]
    pub at: i64,
    /// Inbound (else outbound).
    #[serde(rename = "i", default, skip_serializing_if = "is_false")]
    pub inbound: bool,
    /// Its conversation key.
    #[serde(rename = "k")]
    pub contact: String,
    /// Who sent it (outbound).
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Sender>,
    /// The business number (phone number id), when known.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// The template's name (a template send).
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The campaign (`campaign:ID` origin).
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// The script (`script:NAME` origin, or `walua:…`).
    #[serde(rename = "sc", default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Accepted by Meta.
    #[serde(rename = "a", default, skip_serializing_if = "is_false")]
    pub accepted: bool,
    /// Delivered.
    #[serde(rename = "dl", default, skip_serializing_if = "is_false")]
    pub delivered: bool,
    /// Read.
    #[serde(rename = "r", default, skip_serializing_if = "is_false")]
    pub read: bool,
    /// Failed, with this code (0 without one).
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,
    /// The pricing category of Meta's last `pricing` object, and whether it bills.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<(String, bool)>,
    /// It opened a conversation (decided when the follower first saw it).
    #[serde(rename = "cs", default, skip_serializing_if = "is_false")]
    pub starts_conversation: bool,
    /// It answered a waiting customer after this many seconds (decided when first seen).
    #[serde(rename = "rt", default, skip_serializing_if = "Option::is_none")]
    pub response_s: Option<u32>,
}

impl MessageFacts {
    /// What it adds to each of its aggregate rows.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        if self.inbound {
            c.messages_in = 1;
            c.started_by_customer = self.starts_conversation as i64;
            return c;
        }
        let sender = self.sender.unwrap_or(Sender::Other);
        c.messages_out = 1;
        c.out_by_sender.insert(sender.as_str().to_string(), 1);
        let attempted = self.accepted || self.failed.is_some();
        c.attempted = attempted as i64;
        c.delivered = self.delivered as i64;
        c.read = self.read as i64;
        if let Some(code) = self.failed {
            c.failed = 1;
            c.failures.insert(code, 1);
        }
        if let Some((category, billable)) = &self.pricing {
            let map = if *billable { &mut c.billable } else { &mut c.free };
            map.insert(category.clone(), 1);
        }
        c.started_by_business = (self.starts_conversation && self.failed.is_none()) as i64;
        if let Some(secs) = self.response_s {
            let mut r = ResponseTimes {
                count: 1,
                total_s: secs as i64,
                ..Default::default()
            };
            r.buckets.insert(response_bucket(secs), 1);
            c.responses.insert(sender.as_str().to_string(), r);
        }
        c
    }

    /// Its aggregate rows for `day`: (dimension, value).
    fn rows(&self) -> Vec<(&'static str, String)> {
        let mut rows = vec![("", String::new()), ("number", self.number.clone().unwrap_or_default())];
        for (dim, value) in [
            ("template", &self.template),
            ("campaign", &self.campaign),
            ("script", &self.script),
        ] {
            if let Some(v) = value {
                rows.push((dim, v.clone()));
            }
        }
        rows
    }
}

/// The local day (days since 1970-01-01 in `tz`) of unix time `ts`.
pub fn local_day(ts: i64, tz: chrono_tz::Tz) -> i32 {
    let date = chrono::DateTime::from_timestamp(ts, 0)
        .map(|t| t.with_timezone(&tz).date_naive())
        .unwrap_or_default();
    day_number(date)
}

/// Days since 1970-01-01 of `date`.
pub fn day_number(date: chrono::NaiveDate) -> i32 {
    (date - chrono::NaiveDate::default()).num_days() as i32
}

/// The date of day number `day`.
pub fn day_date(day: i32) -> chrono::NaiveDate {
    chrono::NaiveDate::default() + chrono::Days::new(day.max(0) as u64)
}

/// What the follower reads of a stored message (the rest of the record is skipped).
#[derive(Deserialize)]
struct StatsView {
    direction: Direction,
    contact: String,
    #[serde(rename = "type")]
    kind: String,
    status: String,
    #[serde(default)]
    statuses: Vec<StatusView>,
    #[serde(default)]
    error: Option<CodeOnly>,
    timestamp: i64,
    #[serde(default)]
    content: TemplateName,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    phone_number_id: Option<String>,
}

#[derive(Deserialize)]
struct CodeOnly {
    #[serde(default)]
    code: i64,
}

#[derive(Deserialize)]
struct StatusView {
    status: String,
    #[serde(default)]
    pricing: Option<Value>,
}

/// The `name` of an object (a template send's content), read without building the rest.
#[derive(Default)]
struct TemplateName(Option<String>);

impl<'de> Deserialize<'de> for TemplateName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = TemplateName;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<TemplateName, A::Error> {
                let mut name = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "name" {
                        name = map.next_value::<Option<String>>().ok().flatten();
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(TemplateName(name))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<TemplateName, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(TemplateName(None))
            }
            fn visit_unit<E>(self) -> std::result::Result<TemplateName, E> {
                Ok(TemplateName(None))
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<TemplateName, E> {
                Ok(TemplateName(None))
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<TemplateName, E> {
                Ok(TemplateName(None))
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<TemplateName, E> {
                Ok(TemplateName(None))
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<TemplateName, E> {
                Ok(TemplateName(None))
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<TemplateName, E> {
                Ok(TemplateName(None))
            }
        }
        d.deserialize_any(Visit)
    }
}

impl StatsView {
    /// Not a message (`mark_read`, `typing`): not counted at all.
    fn is_message(&self) -> bool {
        !matches!(self.kind.as_str(), "mark_read" | "typing")
    }

    /// Refused when it was recorded, before any attempt (the 24 h window rule: failed without
    /// ever being queued): the customer never got it, so it plays no part in conversations
    /// and waits. Known the same way whenever the follower first sees the message.
    fn never_left(&self) -> bool {
        self.direction == Direction::Outbound
            && self.status == "failed"
            && !self.statuses.iter().any(|s| s.status == "queued")
    }

    fn facts(&self, tz: chrono_tz::Tz) -> MessageFacts {
        let inbound = self.direction == Direction::Inbound;
        let mut f = MessageFacts {
            day: local_day(self.timestamp, tz),
            at: self.timestamp,
            inbound,
            contact: self.contact.clone(),
            number: self.phone_number_id.clone().filter(|n| !n.is_empty()),
            ..Default::default()
        };
        if inbound {
            return f;
        }
        let origin = self.origin.as_deref();
        f.sender = Some(Sender::of(origin));
        if self.kind == "template" {
            f.template = self.content.0.clone();
        }
        if let Some(o) = origin {
            if let Some(c) = o.strip_prefix("campaign:") {
                f.campaign = Some(c.to_string());
            } else if let Some(s) = o.strip_prefix("script:") {
                f.script = Some(s.to_string());
            } else if o.starts_with("walua:") {
                f.script = Some(o.to_string());
            }
        }
        let seen = |names: &[&str]| {
            names.contains(&self.status.as_str()) || self.statuses.iter().any(|s| names.contains(&s.status.as_str()))
        };
        f.accepted = seen(&["sent", "delivered", "read", "played"]);
        f.delivered = seen(&["delivered", "read", "played"]);
        f.read = seen(&["read", "played"]);
        if self.status == "failed" {
            f.failed = Some(self.error.as_ref().map_or(0, |e| e.code));
        }
        f.pricing = self.statuses.iter().rev().find_map(|s| {
            let p = s.pricing.as_ref()?.as_object()?;
            let category = p
                .get("category")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string();
            let billable = match p.get("billable").and_then(Value::as_bool) {
                Some(b) => b,
                None => p.get("type").and_then(Value::as_str) == Some("regular"),
            };
            Some((category, billable))
        });
        f
    }
}

/// The follower's clock of one conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ConversationClock {
    /// Time of its latest message (unix seconds).
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    last_at: Option<i64>,
    /// Time of the first inbound message not answered yet.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    waiting_since: Option<i64>,
}

impl ConversationClock {
    /// Takes message `f` in: decides whether it opens a conversation and what it answers.
    fn step(&mut self, f: &mut MessageFacts) {
        let t = f.at;
        f.starts_conversation = self.last_at.is_none_or(|l| t - l >= WINDOW_SECS);
        if f.inbound {
            self.waiting_since = match self.waiting_since {
                Some(w) if t - w <= WINDOW_SECS => Some(w.min(t)),
                _ => Some(t),
            };
        } else if f.sender.is_some_and(Sender::answers)
            && let Some(w) = self.waiting_since
            && t >= w
        {
            if t - w <= WINDOW_SECS {
                f.response_s = Some((t - w).min(u32::MAX as i64) as u32);
            }
            self.waiting_since = None;
        }
        self.last_at = self.last_at.max(Some(t));
    }

    /// Takes in the clock of a conversation merged into this one.
    fn merge(&mut self, other: &ConversationClock) {
        self.last_at = self.last_at.max(other.last_at);
        self.waiting_since = match (self.waiting_since, other.waiting_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// What one step of the follower did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowStep {
    /// Messages looked at.
    pub taken: usize,
    /// The aggregates were (re)built from message 0 during this step, and are not complete.
    pub backfilling: bool,
    /// This step started a rebuild (a store without aggregates, or another time zone).
    pub rebuild_started: bool,
    /// Messages that could not be read (left out of the figures, logged).
    pub unreadable: usize,
}

/// How far the aggregates are, for the answers that use them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsProgress {
    /// Message writes not counted yet.
    pub pending: u64,
    /// While the aggregates are (re)built: the last message id counted, and the highest
    /// stored.
    pub backfill: Option<(u64, u64)>,
}

impl StatsProgress {
    /// Every stored message is counted.
    pub fn complete(&self) -> bool {
        self.pending == 0 && self.backfill.is_none()
    }
}

/// One follower step inside a write transaction.
struct Follower<'txn> {
    tz: chrono_tz::Tz,
    changes: Table<'txn, u64, ()>,
    facts: Table<'txn, u64, &'static [u8]>,
    clocks: Table<'txn, &'static str, &'static [u8]>,
    days: Table<'txn, (&'static str, i32, &'static str), &'static [u8]>,
    /// Clocks read or changed in this step (written once at the end).
    clock_cache: HashMap<String, ConversationClock>,
    /// What this step adds to each aggregate row (written once at the end).
    deltas: HashMap<(&'static str, i32, String), Counts>,
}

impl<'txn> Follower<'txn> {
    fn clock(&mut self, key: &str) -> Result<&mut ConversationClock> {
        if !self.clock_cache.contains_key(key) {
            let c = match self.clocks.get(key)? {
                Some(v) => decode("stats_clocks", v.value())?,
                None => ConversationClock::default(),
            };
            self.clock_cache.insert(key.to_string(), c);
        }
        Ok(self.clock_cache.get_mut(key).expect("just inserted"))
    }

    fn delta(&mut self, f: &MessageFacts, sign: i64) {
        let counts = f.counts();
        for (dim, value) in f.rows() {
            self.deltas.entry((dim, f.day, value)).or_default().add(&counts, sign);
        }
    }

    /// Brings message `id`'s contribution up to date; `bytes` is its stored record (`None`:
    /// gone). Returns false when the record could not be read.
    fn take(&mut self, id: u64, bytes: Option<&[u8]>) -> Result<bool> {
        let old: Option<MessageFacts> = match self.facts.get(id)? {
            Some(v) => Some(decode("stats_facts", v.value())?),
            None => None,
        };
        let view = match bytes.map(serde_json::from_slice::<StatsView>) {
            Some(Ok(v)) if v.is_message() => Some(v),
            Some(Err(e)) => {
                tracing::warn!(message_id = id, error = %e, "stats: message record unreadable, left out of the figures");
                return Ok(false);
            }
            _ => None,
        };
        let Some(view) = view else {
            if let Some(old) = old {
                self.delta(&old, -1);
                self.facts.remove(id)?;
            }
            return Ok(true);
        };
        let mut new = view.facts(self.tz);
        match &old {
            Some(old) => {
                new.starts_conversation = old.starts_conversation;
                new.response_s = old.response_s;
                if old.contact != new.contact {
                    // Merged into another conversation (phone → BSUID): its clock follows.
                    let moved = self.clock(&old.contact)?.clone();
                    self.clock(&new.contact)?.merge(&moved);
                }
            }
            None if view.never_left() => {}
            None => self.clock(&new.contact)?.step(&mut new),
        }
        if old.as_ref() == Some(&new) {
            return Ok(true);
        }
        if let Some(old) = &old {
            self.delta(old, -1);
        }
        self.delta(&new, 1);
        self.facts.insert(id, encode(&new).as_slice())?;
        Ok(true)
    }

    /// Writes the clocks and the aggregate rows this step changed.
    fn finish(mut self) -> Result<()> {
        for (key, clock) in std::mem::take(&mut self.clock_cache) {
            self.clocks.insert(key.as_str(), encode(&clock).as_slice())?;
        }
        for ((dim, day, value), delta) in std::mem::take(&mut self.deltas) {
            if delta.is_empty() {
                continue;
            }
            let key = (dim, day, value.as_str());
            let mut row: Counts = match self.days.get(key)? {
                Some(v) => decode("stats_days", v.value())?,
                None => Counts::default(),
            };
            row.add(&delta, 1);
            if row.is_empty() {
                self.days.remove(key)?;
            } else {
                self.days.insert(key, encode(&row).as_slice())?;
            }
        }
        Ok(())
    }
}

fn read_u64(meta: &impl ReadableTable<&'static str, &'static [u8]>, key: &str) -> Result<Option<u64>> {
    Ok(meta
        .get(key)?
        .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes)))
}

/// Whether message writes mark their id for the stats follower (on by default; benches
/// turn it off to measure what it costs).
#[doc(hidden)]
pub fn set_marking(on: bool) {
    MARKING.store(on, std::sync::atomic::Ordering::Relaxed);
}

impl Store {
    /// One step of the stats follower: counts at most `limit` changed messages (or, while
    /// the aggregates are being built, the next `limit` stored messages) into the aggregates,
    /// in one transaction. Rebuilds from message 0 when the aggregates were built for another
    /// time zone or version, or never (a store from before them). Not fsynced on its own: a
    /// crash before the next durable commit leaves the changes marked, and they are counted
    /// again from the state the aggregates had.
    pub fn stats_follow(&self, tz: chrono_tz::Tz, limit: usize) -> Result<FollowStep> {
        let mut step = FollowStep::default();
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| StoreError::Redb(redb::Error::from(e)))?;
        let built_for = format!("{STATS_VERSION} {}", tz.name());
        let backfill = {
            let mut meta = txn.open_table(META)?;
            let current = meta.get(STATS_BUILT_FOR)?.map(|v| v.value().to_vec());
            if current.as_deref() != Some(built_for.as_bytes()) {
                step.rebuild_started = true;
                meta.insert(STATS_BUILT_FOR, built_for.as_bytes())?;
                meta.insert(STATS_BACKFILL, 0u64.to_be_bytes().as_slice())?;
            }
            read_u64(&meta, STATS_BACKFILL)?
        };
        if step.rebuild_started {
            for name in ["stats_facts", "stats_clocks", "stats_changes"] {
                txn.delete_table(TableDefinition::<u64, ()>::new(name))?;
            }
            txn.delete_table(STATS_DAYS)?;
        }
        {
            let mut f = Follower {
                tz,
                changes: txn.open_table(STATS_CHANGES)?,
                facts: txn.open_table(STATS_FACTS)?,
                clocks: txn.open_table(STATS_CLOCKS)?,
                days: txn.open_table(STATS_DAYS)?,
                clock_cache: HashMap::new(),
                deltas: HashMap::new(),
            };
            let messages = txn.open_table(MESSAGES)?;
            match backfill {
                Some(after) => {
                    step.backfilling = true;
                    let mut last = after;
                    for row in messages.range(after + 1..)?.take(limit) {
                        let (k, v) = row?;
                        last = k.value();
                        step.taken += 1;
                        if !f.take(last, Some(v.value()))? {
                            step.unreadable += 1;
                        }
                    }
                    let mut meta = txn.open_table(META)?;
                    if step.taken < limit {
                        meta.remove(STATS_BACKFILL)?;
                    } else {
                        meta.insert(STATS_BACKFILL, last.to_be_bytes().as_slice())?;
                    }
                }
                None => {
                    let mut ids = Vec::with_capacity(limit.min(4096));
                    for row in f.changes.iter()?.take(limit) {
                        ids.push(row?.0.value());
                    }
                    for id in ids {
                        f.changes.remove(id)?;
                        let record = messages.get(id)?;
                        step.taken += 1;
                        if !f.take(id, record.as_ref().map(|v| v.value()))? {
                            step.unreadable += 1;
                        }
                    }
                }
            }
            f.finish()?;
        }
        txn.commit()?;
        Ok(step)
    }

    /// How far the aggregates for days in `tz` are (aggregates built for another zone are
    /// about to be rebuilt).
    pub fn stats_progress(&self, tz: chrono_tz::Tz) -> Result<StatsProgress> {
        let txn = self.db()?.begin_read()?;
        let pending = match txn.open_table(STATS_CHANGES) {
            Ok(t) => t.len()?,
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(e.into()),
        };
        let meta = txn.open_table(META)?;
        let built_for = format!("{STATS_VERSION} {}", tz.name());
        let built = meta
            .get(STATS_BUILT_FOR)?
            .is_some_and(|v| v.value() == built_for.as_bytes());
        let backfill = match (built, read_u64(&meta, STATS_BACKFILL)?) {
            (true, None) => None,
            (built, at) => {
                let at = if built { at } else { None };
                let messages = txn.open_table(MESSAGES)?;
                let last = messages.last()?.map(|(k, _)| k.value()).unwrap_or(0);
                Some((at.unwrap_or(0), last))
            }
        };
        Ok(StatsProgress { pending, backfill })
    }

    /// The aggregate rows of dimension `dim` (`""` for the totals) from local day `from` to
    /// `to` included: (day, value, counts), by day then value.
    pub fn stats_rows(&self, dim: &str, from: i32, to: i32) -> Result<Vec<(i32, String, Counts)>> {
        let txn = self.db()?.begin_read()?;
        let days = match txn.open_table(STATS_DAYS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in days.range((dim, from, "")..(dim, to.saturating_add(1), ""))? {
            let (k, v) = row?;
            let (_, day, value) = k.value();
            out.push((day, value.to_string(), decode("stats_days", v.value())?));
        }
        Ok(out)
    }

    /// The stats tables' sizes: (table, rows, bytes stored, bytes of pages and fragments).
    #[doc(hidden)]
    pub fn stats_table_sizes(&self) -> Result<Vec<(&'static str, u64, u64, u64)>> {
        let txn = self.db()?.begin_read()?;
        let mut out = Vec::new();
        let mut add = |name: &'static str, len: u64, s: redb::TableStats| {
            out.push((name, len, s.stored_bytes(), s.metadata_bytes() + s.fragmented_bytes()));
        };
        let t = txn.open_table(STATS_CHANGES)?;
        add("stats_changes", t.len()?, t.stats()?);
        let t = txn.open_table(STATS_FACTS)?;
        add("stats_facts", t.len()?, t.stats()?);
        let t = txn.open_table(STATS_CLOCKS)?;
        add("stats_clocks", t.len()?, t.stats()?);
        let t = txn.open_table(STATS_DAYS)?;
        add("stats_days", t.len()?, t.stats()?);
        Ok(out)
    }

    /// Makes the store as a walua from before the aggregates left it: their tables and
    /// `META` keys gone (tests and benches of the rebuild).
    #[doc(hidden)]
    pub fn strip_stats(&self) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        for name in ["stats_facts", "stats_clocks", "stats_changes"] {
            txn.delete_table(TableDefinition::<u64, ()>::new(name))?;
        }
        txn.delete_table(STATS_DAYS)?;
        {
            let mut meta = txn.open_table(META)?;
            meta.remove(STATS_BUILT_FOR)?;
            meta.remove(STATS_BACKFILL)?;
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_buckets_keep_two_significant_digits() {
        for (secs, bucket) in [
            (0, 0),
            (7, 7),
            (99, 99),
            (100, 100),
            (125, 120),
            (601, 600),
            (3725, 3700),
            (86_399, 86_000),
        ] {
            assert_eq!(response_bucket(secs), bucket, "{secs}");
        }
    }

    #[test]
    fn senders_come_from_origins() {
        for (origin, sender) in [
            (Some("api"), Sender::Integration),
            (Some("cli"), Sender::Integration),
            (Some("console:fatou"), Sender::Human),
            (Some("campaign:7"), Sender::Campaign),
            (Some("script:cron/reminders"), Sender::Notification),
            (Some("script:hooks/sale_order_created"), Sender::Notification),
            (Some("script:buttons/validate_order"), Sender::Bot),
            (Some("script:on_message"), Sender::Bot),
            (Some("walua:optout"), Sender::Bot),
            (Some("bench"), Sender::Other),
            (None, Sender::Other),
        ] {
            assert_eq!(Sender::of(origin), sender, "{origin:?}");
        }
    }

    fn out(at: i64, sender: Sender) -> MessageFacts {
        MessageFacts {
            at,
            sender: Some(sender),
            ..Default::default()
        }
    }

    fn inb(at: i64) -> MessageFacts {
        MessageFacts {
            at,
            inbound: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_wait_starts_at_the_first_unanswered_message_and_ends_with_an_answer_within_a_day() {
        let mut clock = ConversationClock::default();
        let mut steps = vec![
            inb(1_000),                                  // opens a conversation and a wait
            inb(1_030),                                  // still the same wait
            out(1_100, Sender::Campaign),                // not an answer
            out(1_120, Sender::Bot),                     // answers after 120 s
            out(1_200, Sender::Human),                   // nothing waits
            inb(2_000),                                  // a new wait
            out(2_000 + WINDOW_SECS + 1, Sender::Human), // too late to count; a new conversation
            inb(2_000 + 3 * WINDOW_SECS),                // a new conversation and wait
        ];
        for f in &mut steps {
            clock.step(f);
        }
        let starts: Vec<bool> = steps.iter().map(|f| f.starts_conversation).collect();
        assert_eq!(starts, [true, false, false, false, false, false, true, true]);
        let answers: Vec<Option<u32>> = steps.iter().map(|f| f.response_s).collect();
        assert_eq!(answers, [None, None, None, Some(120), None, None, None, None]);
        assert_eq!(clock.waiting_since, Some(2_000 + 3 * WINDOW_SECS));
    }

    /// Rounds of history, written as walua would (ids in the order things happen): a
    /// customer writes, the bot or an agent answers, a campaign sends a template; Meta's
    /// statuses for round `i` come with round `i + 1` (or never).
    fn import_rounds(store: &Store, range: std::ops::Range<u64>, day0: i64) {
        for i in range {
            let (inbound, rest) = round(store, i, day0);
            store.import_history(&[inbound]).unwrap();
            store.import_history(&rest(store)).unwrap();
        }
    }

    type Rest = Box<dyn Fn(&Store) -> Vec<crate::store::inbox::HistoryItem>>;

    /// Round `i`: the customer's message, and what follows it (ids allocated when called).
    fn round(_: &Store, i: u64, day0: i64) -> (crate::store::inbox::HistoryItem, Rest) {
        use crate::store::inbox::HistoryItem;
        use crate::store::outbox::NewOutbound;
        use crate::webhook::payload::Delivery;
        let envelope = |fields: Value| {
            let mut value = serde_json::json!({"messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "221338601234", "phone_number_id": "111"}});
            value
                .as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            Delivery::parse(&serde_json::json!({"object": "whatsapp_business_account",
                "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]}))
        };
        let phone = format!("22177000{:04}", i % 7);
        let ts = day0 + i as i64 * 5_000;
        let inbound = HistoryItem::Delivery(
            3 * i + 1,
            envelope(serde_json::json!({
                "contacts": [{"profile": {"name": "C"}, "wa_id": phone}],
                "messages": [{"from": phone, "id": format!("wamid.in.{i}"), "timestamp": ts.to_string(), "type": "text", "text": {"body": "bonjour"}}]
            })),
        );
        let rest = move |store: &Store| {
            let mut items = Vec::new();
            for (k, origin) in [
                (
                    0,
                    if i.is_multiple_of(3) {
                        "console:fatou"
                    } else {
                        "script:on_message"
                    },
                ),
                (1, "campaign:7"),
            ] {
                let template = origin.starts_with("campaign:");
                let body = if template {
                    serde_json::json!({"messaging_product": "whatsapp", "to": phone, "type": "template", "template": {"name": "promo", "language": {"code": "fr"}}})
                } else {
                    serde_json::json!({"messaging_product": "whatsapp", "to": phone, "type": "text", "text": {"body": "ok"}})
                };
                items.push(HistoryItem::Outbound {
                    new: Box::new(NewOutbound {
                        id: store.allocate_message_id(),
                        recipient: phone.clone(),
                        kind: if template { "template" } else { "text" }.into(),
                        summary: String::new(),
                        content: if template {
                            serde_json::json!({"type": "template", "name": "promo", "lang": "fr"})
                        } else {
                            Value::Null
                        },
                        body,
                        free_form: false,
                        allow_outside_window: true,
                        dry_run: false,
                        origin: origin.into(),
                        reply_to: None,
                        phone_number_id: Some("111".into()),
                        record: None,
                        chatter_file: None,
                    }),
                    at_ms: (ts + 30 + k * 600) * 1000,
                    wamid: format!("wamid.out.{i}.{k}"),
                });
            }
            // The statuses of the previous round's messages, a day later for some.
            if i > 0 && i % 4 != 1 {
                let prev = i - 1;
                let statuses: Vec<Value> = (0..2)
                    .flat_map(|k| {
                        let wamid = format!("wamid.out.{prev}.{k}");
                        let pricing = if k == 1 {
                            serde_json::json!({"billable": true, "category": "marketing", "type": "regular"})
                        } else {
                            serde_json::json!({"billable": false, "category": "service", "type": "free_customer_service"})
                        };
                        if (prev + k).is_multiple_of(5) {
                            vec![serde_json::json!({"id": wamid, "status": "failed", "timestamp": ts.to_string(), "recipient_id": "x",
                                                    "errors": [{"code": 131049}]})]
                        } else {
                            vec![
                                serde_json::json!({"id": wamid, "status": "delivered", "timestamp": ts.to_string(), "recipient_id": "x", "pricing": pricing}),
                                serde_json::json!({"id": wamid, "status": "read", "timestamp": (ts + 86_400).to_string(), "recipient_id": "x", "pricing": pricing}),
                            ]
                        }
                    })
                    .collect();
                items.push(HistoryItem::Delivery(
                    3 * i + 2,
                    envelope(serde_json::json!({"statuses": statuses})),
                ));
            }
            items
        };
        (inbound, Box::new(rest))
    }

    type Rows = Vec<(i32, String, Counts)>;

    fn all_rows(store: &Store) -> Vec<(&'static str, Rows)> {
        ["", "number", "template", "campaign", "script"]
            .into_iter()
            .map(|dim| (dim, store.stats_rows(dim, 0, 100_000).unwrap()))
            .collect()
    }

    #[test]
    fn counting_messages_as_they_change_gives_the_figures_of_a_rebuild_from_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.redb")).unwrap();
        let tz = chrono_tz::Africa::Dakar;
        store.stats_follow(tz, 1).unwrap();
        assert!(
            store.stats_progress(tz).unwrap().complete(),
            "a new store starts complete"
        );
        let day0 = 1_767_225_600; // 2026-01-01 00:00 UTC
        for part in 0..3u64 {
            import_rounds(&store, part * 20..part * 20 + 20, day0);
            assert!(!store.stats_progress(tz).unwrap().complete());
            // Small steps: a message's changes fall in different steps.
            while store.stats_follow(tz, 7).unwrap().taken > 0 {}
        }
        assert!(store.stats_progress(tz).unwrap().complete());
        let followed = all_rows(&store);

        let totals: Counts = followed[0].1.iter().fold(Counts::default(), |mut t, (_, _, c)| {
            t.add(c, 1);
            t
        });
        assert_eq!((totals.messages_in, totals.messages_out), (60, 120));
        assert_eq!(totals.out_by_sender["campaign"], 60);
        assert_eq!(totals.out_by_sender["human"], 20);
        assert_eq!(
            totals.responses["bot"].count + totals.responses["human"].count,
            60,
            "every message answered"
        );
        assert_eq!(totals.responses["bot"].total_s, 40 * 30, "the bot answers after 30 s");
        assert!(totals.failures[&131049] > 0 && totals.billable["marketing"] > 0 && totals.free["service"] > 0);
        // A read status a day later counts on the message's own day.
        let day = |ts: i64| local_day(ts, tz);
        let first_day = &followed[0].1[0];
        assert_eq!(first_day.0, day(day0));
        assert!(first_day.2.read > 0, "{first_day:?}");
        let campaign = &followed[3].1;
        assert!(campaign.iter().all(|(_, v, _)| v == "7"));
        assert!(followed[2].1.iter().all(|(_, v, _)| v == "promo"));

        // The same store without its statistics (as before them), rebuilt from scratch.
        store.strip_stats().unwrap();
        assert!(store.stats_progress(tz).unwrap().backfill.is_some());
        let first = store.stats_follow(tz, 50).unwrap();
        assert!(first.rebuild_started && first.backfilling);
        while !store.stats_progress(tz).unwrap().complete() {
            store.stats_follow(tz, 50).unwrap();
        }
        assert_eq!(all_rows(&store), followed);

        // Another time zone rebuilds them for its days.
        let ny = chrono_tz::America::New_York;
        assert!(!store.stats_progress(ny).unwrap().complete());
        while !store.stats_progress(ny).unwrap().complete() {
            store.stats_follow(ny, 1000).unwrap();
        }
        let shifted = all_rows(&store);
        assert_ne!(
            shifted[0].1[0].0, followed[0].1[0].0,
            "New York's first day is the day before"
        );
        let sum = |rows: &[(i32, String, Counts)]| rows.iter().map(|r| r.2.messages_out).sum::<i64>();
        assert_eq!(sum(&shifted[0].1), sum(&followed[0].1));
    }

    #[test]
    fn counts_add_and_take_away_to_nothing() {
        let mut f = out(100, Sender::Bot);
        f.accepted = true;
        f.delivered = true;
        f.failed = Some(131026);
        f.pricing = Some(("utility".into(), true));
        f.starts_conversation = true;
        f.response_s = Some(42);
        let mut c = Counts::default();
        c.add(&f.counts(), 1);
        assert_eq!(c.failures.get(&131026), Some(&1));
        assert_eq!(c.started_by_business, 0, "a failed message opens no conversation");
        assert_eq!(c.responses["bot"].buckets.get(&42), Some(&1));
        c.add(&f.counts(), -1);
        assert!(c.is_empty(), "{c:?}");
    }
}
