//! Analytics: what was sent, delivered, read, answered, and what it cost, per day (or week,
//! month) and per template, campaign, script and business number. Served as
//! `GET /api/stats?from=&to=&group_by=`, `walua stats` and the console's `/console/stats`.
//!
//! The figures come from aggregates the store keeps beside the messages (see
//! [`crate::store::stats`] for how, and what it costs); this module reads them for a range of
//! days and turns them into rates, percentiles and tables.
//!
//! # What the figures mean
//!
//! A message counts on the local day (`scripts.timezone`) of its timestamp: Meta's for an
//! inbound message, the time walua queued it for an outbound one. Its later statuses move
//! the figures of *that* day (a message sent on Monday and read on Tuesday is read on
//! Monday's row), so each day's rates describe that day's messages.
//!
//! - `messages_in`, `messages_out`: messages stored (outbound: every message walua recorded,
//!   dry runs and refused sends included; `mark_read` and `typing` are not messages).
//!   `out_by_sender` splits them by who sent them, from their `origin`: `bot` (scripts that
//!   answer messages, `walua:` replies), `human` (`console:USER`), `integration` (`api`: the
//!   admin API's token, which the CLI uses too), `campaign` (`campaign:ID`), `notification`
//!   (hook and cron scripts), `other`.
//! - `attempted`: outbound messages with a definite outcome (accepted by Meta, or failed);
//!   `delivered` and `read`: those Meta reported delivered (or read, played), and read (or
//!   played); `failed`: those that failed, with `failures` by Meta error code (0: walua
//!   refused it itself, e.g. the 24 h window). `delivery_rate` = delivered / attempted,
//!   `failure_rate` = failed / attempted, `read_rate` = read / delivered (as Meta counts it).
//!   A rate is `null` when nothing was attempted (delivered).
//! - `first_response`: for each *wait* — the first inbound message of a conversation after
//!   walua's last outbound message to it (or after an earlier wait ended) — the time until
//!   the next outbound message from the bot, an agent (`human`) or an `integration`, when it
//!   comes within 24 hours (the customer-service window); campaign and notification sends
//!   do not end a wait. Counted on the answer's day, sender, number and script: `count`,
//!   `mean_s` (exact), `median_s` and `p90_s` (nearest rank, rounded down to two
//!   significant digits: 125 s reads 120 s).
//! - `conversations`: a conversation starts with a message that comes 24 hours or more after
//!   the contact's previous message either way (or with its first message); it is
//!   `started_by_customer` when that message is inbound, `started_by_business` when it is
//!   outbound (and did not fail). Outbound messages walua refused before any attempt play no
//!   part in waits and conversations. This is walua's own rule, the same for every number;
//!   Meta's per-message pricing (July 2025) no longer sends conversation objects.
//! - `billable` / `free`: outbound messages by the `category` of the last `pricing` object
//!   of their status webhooks (Meta bills per message): billable when `billable` is true
//!   (or, without it, when `type` is `regular`), free otherwise (`free_customer_service`,
//!   `free_entry_point`). `billable_total` sums the billable ones.
//!
//! Groups: `day` (every day of the range, empty ones included), `week` (weeks starting on
//! Monday, keyed by that Monday), `month` (`YYYY-MM`), and `template` (template sends, by
//! name), `campaign` (by campaign id), `script` (by script), `number` (both directions, by
//! business phone number id; `""` when unknown).

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde_json::{Value, json};

use crate::store::stats::{Counts, ResponseTimes, Sender, day_date, day_number};
use crate::store::{Store, StoreError};

/// The longest range a query may cover, in days.
pub const MAX_DAYS: i64 = 3660;
/// Days covered when `from` is not given: the last 30 days.
pub const DEFAULT_DAYS: i64 = 30;
/// Messages one follower step takes.
pub const FOLLOW_BATCH: usize = 2_000;
/// At most this many changed messages are counted before a query answers (the rest is
/// the follower's, and the answer says `complete: false`).
const CATCH_UP: usize = 4_000;

/// How the figures are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One group per local day.
    Day,
    /// One group per week (Monday to Sunday), keyed by its Monday.
    Week,
    /// One group per month.
    Month,
    /// Per template name (template sends only).
    Template,
    /// Per campaign (`campaign:ID` sends only).
    Campaign,
    /// Per script (`script:NAME` and `walua:` sends only).
    Script,
    /// Per business number.
    Number,
}

impl GroupBy {
    /// Every grouping, by its name in queries.
    pub const ALL: [(&'static str, GroupBy); 7] = [
        ("day", GroupBy::Day),
        ("week", GroupBy::Week),
        ("month", GroupBy::Month),
        ("template", GroupBy::Template),
        ("campaign", GroupBy::Campaign),
        ("script", GroupBy::Script),
        ("number", GroupBy::Number),
    ];

    /// Its name in queries and answers.
    pub fn as_str(self) -> &'static str {
        GroupBy::ALL
            .iter()
            .find(|(_, g)| *g == self)
            .map(|(n, _)| *n)
            .expect("every grouping is listed")
    }

    /// The aggregate dimension it reads (`""`: the totals, by time).
    fn dimension(self) -> &'static str {
        match self {
            GroupBy::Day | GroupBy::Week | GroupBy::Month => "",
            GroupBy::Template => "template",
            GroupBy::Campaign => "campaign",
            GroupBy::Script => "script",
            GroupBy::Number => "number",
        }
    }

    /// Whether its groups are periods of time.
    pub fn is_time(self) -> bool {
        self.dimension().is_empty()
    }

    /// The group a day falls in (time groupings).
    fn period(self, date: NaiveDate) -> String {
        match self {
            GroupBy::Week => {
                let monday = date - chrono::Days::new(date.weekday().num_days_from_monday() as u64);
                monday.to_string()
            }
            GroupBy::Month => format!("{:04}-{:02}", date.year(), date.month()),
            _ => date.to_string(),
        }
    }
}

/// Why a stats query was refused (400) or could not be answered (500).
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// `from` or `to` is not a date.
    #[error("`{field}`: `{value}` is not a date (YYYY-MM-DD)")]
    BadDate {
        /// `from` or `to`.
        field: &'static str,
        /// What was given.
        value: String,
    },
    /// `from` comes after `to`.
    #[error("`from` ({from}) is after `to` ({to})")]
    Reversed {
        /// The first day asked for.
        from: NaiveDate,
        /// The last day asked for.
        to: NaiveDate,
    },
    /// The range is too long.
    #[error("the range covers {0} days; at most {MAX_DAYS}")]
    TooLong(i64),
    /// `group_by` is not a grouping walua knows.
    #[error("`group_by`: `{0}` is not one of day, week, month, template, campaign, script, number")]
    UnknownGroup(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StatsError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> hyper::StatusCode {
        match self {
            StatsError::Store(_) => hyper::StatusCode::INTERNAL_SERVER_ERROR,
            _ => hyper::StatusCode::BAD_REQUEST,
        }
    }
}

/// A stats query: local days `from` to `to` included, grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    /// The first day.
    pub from: NaiveDate,
    /// The last day (included).
    pub to: NaiveDate,
    /// The grouping.
    pub group_by: GroupBy,
}

impl StatsQuery {
    /// Reads `from`, `to` and `group_by` from a query string; `today` is the local date
    /// (defaults: the 30 days to today, by day).
    pub fn parse(query: Option<&str>, today: NaiveDate) -> Result<StatsQuery, StatsError> {
        let param = |name: &str| {
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let date = |field: &'static str| -> Result<Option<NaiveDate>, StatsError> {
            param(field)
                .map(|v| NaiveDate::parse_from_str(&v, "%Y-%m-%d").map_err(|_| StatsError::BadDate { field, value: v }))
                .transpose()
        };
        let (from, to) = (date("from")?, date("to")?);
        let to = to.unwrap_or(today.max(from.unwrap_or(today)));
        let from = from.unwrap_or(to - chrono::Days::new(DEFAULT_DAYS as u64 - 1));
        if from > to {
            return Err(StatsError::Reversed { from, to });
        }
        let days = (to - from).num_days() + 1;
        if days > MAX_DAYS {
            return Err(StatsError::TooLong(days));
        }
        let group_by = match param("group_by") {
            None => GroupBy::Day,
            Some(g) => GroupBy::ALL
                .iter()
                .find(|(n, _)| *n == g)
                .map(|(_, g)| *g)
                .ok_or(StatsError::UnknownGroup(g))?,
        };
        Ok(StatsQuery { from, to, group_by })
    }

    /// The query string that asks for this again.
    pub fn to_query(&self) -> String {
        format!("from={}&to={}&group_by={}", self.from, self.to, self.group_by.as_str())
    }
}

/// The figures for a query.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsReport {
    /// What was asked.
    pub query: StatsQuery,
    /// The time zone of the days.
    pub timezone: String,
    /// How far the aggregates are: message writes not counted yet, and a rebuild in progress.
    pub progress: crate::store::stats::StatsProgress,
    /// Every message of the range.
    pub totals: Counts,
    /// The groups: key and figures (time groups in order, others by volume).
    pub groups: Vec<(String, Counts)>,
}

/// Counts what changed since the follower's last step (at most [`CATCH_UP`] messages; a
/// rebuild is left to the follower), then reads the figures of `q`. Blocking.
pub fn report(store: &Store, tz: chrono_tz::Tz, q: &StatsQuery) -> Result<StatsReport, StoreError> {
    let mut counted = 0;
    while counted < CATCH_UP {
        let progress = store.stats_progress(tz)?;
        if progress.complete() || progress.backfill.is_some() {
            break;
        }
        counted += store.stats_follow(tz, FOLLOW_BATCH)?.taken.max(1);
    }
    let (from, to) = (day_number(q.from), day_number(q.to));
    let totals_rows = store.stats_rows("", from, to)?;
    let mut totals = Counts::default();
    for (_, _, c) in &totals_rows {
        totals.add(c, 1);
    }
    let groups = if q.group_by.is_time() {
        let mut groups: Vec<(String, Counts)> = Vec::new();
        let mut day = q.from;
        while day <= q.to {
            let key = q.group_by.period(day);
            if groups.last().is_none_or(|(k, _)| *k != key) {
                groups.push((key, Counts::default()));
            }
            day = day + chrono::Days::new(1);
        }
        for (d, _, c) in &totals_rows {
            let key = q.group_by.period(day_date(*d));
            if let Some((_, g)) = groups.iter_mut().find(|(k, _)| *k == key) {
                g.add(c, 1);
            }
        }
        groups
    } else {
        let mut by: BTreeMap<String, Counts> = BTreeMap::new();
        for (_, value, c) in store.stats_rows(q.group_by.dimension(), from, to)? {
            by.entry(value).or_default().add(&c, 1);
        }
        let mut groups: Vec<(String, Counts)> = by.into_iter().collect();
        groups.sort_by(|(ka, a), (kb, b)| {
            (b.messages_out + b.messages_in)
                .cmp(&(a.messages_out + a.messages_in))
                .then(ka.cmp(kb))
        });
        groups
    };
    Ok(StatsReport {
        query: q.clone(),
        timezone: tz.name().to_string(),
        progress: store.stats_progress(tz)?,
        totals,
        groups,
    })
}

/// `part / whole`, to four decimals; `None` when `whole` is 0.
pub fn rate(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0)
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 1) of response times kept in buckets.
pub fn percentile(r: &ResponseTimes, p: f64) -> Option<u32> {
    if r.count <= 0 {
        return None;
    }
    let rank = ((p * r.count as f64).ceil() as i64).max(1);
    let mut seen = 0;
    for (bucket, n) in &r.buckets {
        seen += n;
        if seen >= rank {
            return Some(*bucket);
        }
    }
    r.buckets.keys().next_back().copied()
}

/// The responders whose answers are timed, in the order reports show them.
pub const RESPONDERS: [Sender; 3] = [Sender::Bot, Sender::Human, Sender::Integration];

/// One responder's first-response figures: `count`, `mean_s`, `median_s`, `p90_s`.
pub fn response_json(r: Option<&ResponseTimes>) -> Value {
    let empty = ResponseTimes::default();
    let r = r.unwrap_or(&empty);
    json!({
        "count": r.count,
        "mean_s": (r.count > 0).then(|| (r.total_s as f64 / r.count as f64 * 10.0).round() / 10.0),
        "median_s": percentile(r, 0.5),
        "p90_s": percentile(r, 0.9),
    })
}

/// The figures of `c` as the API answers them (see the module docs).
pub fn figures(c: &Counts) -> Value {
    let mut by_sender = serde_json::Map::new();
    for s in Sender::ALL {
        by_sender.insert(
            s.as_str().into(),
            json!(c.out_by_sender.get(s.as_str()).copied().unwrap_or(0)),
        );
    }
    let mut failures: Vec<(i64, i64)> = c.failures.iter().map(|(k, v)| (*k, *v)).collect();
    failures.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut first_response = serde_json::Map::new();
    for s in RESPONDERS {
        first_response.insert(s.as_str().into(), response_json(c.responses.get(s.as_str())));
    }
    json!({
        "messages_in": c.messages_in,
        "messages_out": c.messages_out,
        "out_by_sender": by_sender,
        "attempted": c.attempted,
        "delivered": c.delivered,
        "read": c.read,
        "failed": c.failed,
        "delivery_rate": rate(c.delivered, c.attempted),
        "read_rate": rate(c.read, c.delivered),
        "failure_rate": rate(c.failed, c.attempted),
        "failures": failures.iter().map(|(code, count)| json!({"code": code, "count": count})).collect::<Vec<_>>(),
        "first_response": first_response,
        "conversations": {
            "started_by_customer": c.started_by_customer,
            "started_by_business": c.started_by_business,
        },
        "billable": c.billable,
        "free": c.free,
        "billable_total": c.billable.values().sum::<i64>(),
    })
}

impl StatsReport {
    /// The answer of `GET /api/stats`.
    pub fn to_json(&self) -> Value {
        let groups: Vec<Value> = self
            .groups
            .iter()
            .map(|(key, c)| {
                let mut v = figures(c);
                v["key"] = json!(key);
                v
            })
            .collect();
        json!({
            "from": self.query.from.to_string(),
            "to": self.query.to.to_string(),
            "group_by": self.query.group_by.as_str(),
            "timezone": self.timezone,
            "complete": self.progress.complete(),
            "pending": self.progress.pending,
            "rebuilding": self.progress.backfill.map(|(at, last)| json!({"counted_through": at, "last_message": last})),
            "totals": figures(&self.totals),
            "groups": groups,
        })
    }
}

/// Today in `tz`.
pub fn today(tz: chrono_tz::Tz) -> NaiveDate {
    chrono::Utc::now().with_timezone(&tz).date_naive()
}

/// `GET /api/stats?from=&to=&group_by=`: the figures as JSON; 400 with the reason for a
/// bad query.
pub async fn api(app: &crate::App, query: Option<&str>) -> crate::http::HttpResponse {
    let tz = app.config.scripts.timezone;
    let q = match StatsQuery::parse(query, today(tz)) {
        Ok(q) => q,
        Err(e) => return crate::http::error(e.status(), e),
    };
    match app.store.blocking(move |s| report(s, tz, &q)).await {
        Ok(r) => crate::http::json(hyper::StatusCode::OK, &r.to_json()),
        Err(e) => {
            tracing::error!(error = %e, "stats: store error");
            crate::http::error(hyper::StatusCode::INTERNAL_SERVER_ERROR, e)
        }
    }
}

/// The stats follower: counts changed messages into the aggregates every second (at once
/// while a backlog or a rebuild lasts, 10 ms apart so that other writers get their turn),
/// until `shutdown`; it writes nothing while nothing changed. Logs the start and end of a
/// rebuild.
pub async fn follow(store: Store, tz: chrono_tz::Tz, shutdown: tokio_util::sync::CancellationToken) {
    let mut rebuild_started: Option<std::time::Instant> = None;
    let mut failing = false;
    loop {
        let step = store
            .blocking(move |s| {
                if s.stats_progress(tz)?.complete() {
                    return Ok(crate::store::stats::FollowStep::default());
                }
                s.stats_follow(tz, FOLLOW_BATCH)
            })
            .await;
        let pause = match step {
            Ok(step) => {
                failing = false;
                if step.rebuild_started {
                    let messages = store.blocking(|s| s.message_count()).await.unwrap_or(0);
                    tracing::info!(
                        messages,
                        timezone = tz.name(),
                        "building the statistics from the stored messages"
                    );
                    rebuild_started = Some(std::time::Instant::now());
                }
                if !step.backfilling
                    && let Some(t) = rebuild_started.take()
                {
                    tracing::info!(took_ms = t.elapsed().as_millis() as u64, "statistics built");
                }
                if step.taken == FOLLOW_BATCH {
                    std::time::Duration::from_millis(10)
                } else {
                    std::time::Duration::from_secs(1)
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "stats follower: cannot count messages; trying again");
                }
                failing = true;
                std::time::Duration::from_secs(5)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// `walua stats`: the range and grouping (the daemon's defaults when absent).
#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    /// First day, YYYY-MM-DD (default: 29 days before --to).
    #[arg(long)]
    pub from: Option<String>,
    /// Last day, YYYY-MM-DD, included (default: today).
    #[arg(long)]
    pub to: Option<String>,
    /// day, week, month, template, campaign, script or number.
    #[arg(long, default_value = "day")]
    pub group_by: String,
}

/// Runs `walua stats` against the daemon `config` describes: its tables, as text.
pub async fn cli(config: &crate::Config, args: &StatsArgs) -> Result<String, crate::cli::CliError> {
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut path = format!("/api/stats?group_by={}", enc(&args.group_by));
    for (name, value) in [("from", &args.from), ("to", &args.to)] {
        if let Some(v) = value {
            path.push_str(&format!("&{name}={}", enc(v)));
        }
    }
    let answer = crate::cli::AdminClient::new(config)
        .request(reqwest::Method::GET, &path, None)
        .await?;
    Ok(render(&answer))
}

/// A duration in seconds, readably: `42 s`, `12 min`, `3 h 05`.
pub fn human_secs(secs: f64) -> String {
    let s = secs.round() as i64;
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h {:02}", s / 3600, s % 3600 / 60)
    }
}

fn percent(v: &Value) -> String {
    v.as_f64()
        .map(|r| format!("{:.1} %", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn median(f: &Value, who: &str) -> String {
    f["first_response"][who]["median_s"]
        .as_f64()
        .map(human_secs)
        .unwrap_or_else(|| "-".into())
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// `walua stats`'s text: the totals, a table of the groups, failures by code and billable
/// messages by category.
pub fn render(answer: &Value) -> String {
    let t = &answer["totals"];
    let mut out = format!(
        "{} → {} ({}), by {}\n",
        answer["from"].as_str().unwrap_or("?"),
        answer["to"].as_str().unwrap_or("?"),
        answer["timezone"].as_str().unwrap_or("?"),
        answer["group_by"].as_str().unwrap_or("?")
    );
    if answer["complete"] == false {
        out.push_str(&format!(
            "(still counting: {} message write(s) pending{})\n",
            answer["pending"],
            if answer["rebuilding"].is_null() {
                ""
            } else {
                ", statistics being rebuilt"
            }
        ));
    }
    let senders: Vec<String> = Sender::ALL
        .iter()
        .filter_map(|s| {
            let n = int(&t["out_by_sender"][s.as_str()]);
            (n > 0).then(|| format!("{} {n}", s.as_str()))
        })
        .collect();
    let responses: Vec<String> = RESPONDERS
        .iter()
        .filter_map(|s| {
            let r = &t["first_response"][s.as_str()];
            (int(&r["count"]) > 0).then(|| {
                format!(
                    "{}: {} answer(s), median {}, p90 {}, mean {}",
                    s.as_str(),
                    r["count"],
                    median(t, s.as_str()),
                    r["p90_s"].as_f64().map(human_secs).unwrap_or_default(),
                    r["mean_s"].as_f64().map(human_secs).unwrap_or_default()
                )
            })
        })
        .collect();
    let categories = |v: &Value| -> String {
        let parts: Vec<String> = v
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if parts.is_empty() { "-".into() } else { parts.join(", ") }
    };
    let rows = vec![
        vec!["messages in".into(), t["messages_in"].to_string()],
        vec![
            "messages out".into(),
            if senders.is_empty() {
                t["messages_out"].to_string()
            } else {
                format!("{} ({})", t["messages_out"], senders.join(", "))
            },
        ],
        vec![
            "delivered".into(),
            format!(
                "{} of {} attempted ({})",
                t["delivered"],
                t["attempted"],
                percent(&t["delivery_rate"])
            ),
        ],
        vec![
            "read".into(),
            format!("{} ({} of delivered)", t["read"], percent(&t["read_rate"])),
        ],
        vec![
            "failed".into(),
            format!("{} ({})", t["failed"], percent(&t["failure_rate"])),
        ],
        vec![
            "first response".into(),
            if responses.is_empty() {
                "-".into()
            } else {
                responses.join("; ")
            },
        ],
        vec![
            "conversations".into(),
            format!(
                "started by customers {}, by the business {}",
                t["conversations"]["started_by_customer"], t["conversations"]["started_by_business"]
            ),
        ],
        vec!["billable".into(), categories(&t["billable"])],
        vec!["free".into(), categories(&t["free"])],
    ];
    out.push('\n');
    out.push_str(&crate::cli::table(&["TOTALS", ""], &rows));
    let key = answer["group_by"].as_str().unwrap_or("group").to_uppercase();
    let groups: Vec<Vec<String>> = answer["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            vec![
                g["key"]
                    .as_str()
                    .filter(|k| !k.is_empty())
                    .unwrap_or("(none)")
                    .to_string(),
                g["messages_in"].to_string(),
                g["messages_out"].to_string(),
                percent(&g["delivery_rate"]),
                percent(&g["read_rate"]),
                percent(&g["failure_rate"]),
                median(g, "bot"),
                median(g, "human"),
                median(g, "integration"),
                g["conversations"]["started_by_customer"].to_string(),
                g["conversations"]["started_by_business"].to_string(),
                g["billable_total"].to_string(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&crate::cli::table(
        &[
            key.as_str(),
            "IN",
            "OUT",
            "DELIVERED",
            "READ",
            "FAILED",
            "BOT REPLY",
            "HUMAN REPLY",
            "API REPLY",
            "CONV BY CUSTOMER",
            "CONV BY BUSINESS",
            "BILLABLE",
        ],
        &groups,
    ));
    let failures: Vec<Vec<String>> = t["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let code = int(&f["code"]);
            vec![
                code.to_string(),
                f["count"].to_string(),
                crate::whatsapp::error::explain(code).to_string(),
            ]
        })
        .collect();
    if !failures.is_empty() {
        out.push('\n');
        out.push_str(&crate::cli::table(&["FAILURE CODE", "COUNT", "MEANING"], &failures));
    }
    let mut categories: Vec<&String> = t["billable"]
        .as_object()
        .into_iter()
        .flatten()
        .chain(t["free"].as_object().into_iter().flatten())
        .map(|(k, _)| k)
        .collect();
    categories.sort();
    categories.dedup();
    if !categories.is_empty() {
        let rows: Vec<Vec<String>> = categories
            .iter()
            .map(|c| {
                vec![
                    c.to_string(),
                    int(&t["billable"][c.as_str()]).to_string(),
                    int(&t["free"][c.as_str()]).to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&crate::cli::table(&["PRICING CATEGORY", "BILLABLE", "FREE"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn queries_default_to_the_last_30_days_by_day_and_refuse_what_makes_no_sense() {
        let today = d("2026-03-31");
        let q = StatsQuery::parse(None, today).unwrap();
        assert_eq!((q.from, q.to, q.group_by), (d("2026-03-02"), today, GroupBy::Day));
        let q = StatsQuery::parse(Some("from=2026-01-01&to=2026-01-31&group_by=template"), today).unwrap();
        assert_eq!(
            (q.from, q.to, q.group_by),
            (d("2026-01-01"), d("2026-01-31"), GroupBy::Template)
        );
        let q = StatsQuery::parse(Some("to=2026-02-10"), today).unwrap();
        assert_eq!(q.from, d("2026-01-12"));
        for (query, error) in [
            (
                "from=2026-02-01&to=2026-01-01",
                "`from` (2026-02-01) is after `to` (2026-01-01)",
            ),
            ("from=yesterday", "`from`: `yesterday` is not a date (YYYY-MM-DD)"),
            ("to=2026-02-30", "`to`: `2026-02-30` is not a date (YYYY-MM-DD)"),
            (
                "group_by=hour",
                "`group_by`: `hour` is not one of day, week, month, template, campaign, script, number",
            ),
            (
                "from=2000-01-01&to=2026-01-01",
                "the range covers 9498 days; at most 3660",
            ),
        ] {
            let e = StatsQuery::parse(Some(query), today).unwrap_err();
            assert_eq!(e.to_string(), error, "{query}");
            assert_eq!(e.status(), hyper::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn weeks_start_on_monday_and_months_are_calendar_months() {
        assert_eq!(GroupBy::Week.period(d("2026-03-05")), "2026-03-02");
        assert_eq!(GroupBy::Week.period(d("2026-03-02")), "2026-03-02");
        assert_eq!(GroupBy::Month.period(d("2026-03-31")), "2026-03");
    }

    #[test]
    fn percentiles_are_nearest_rank_over_the_buckets() {
        let mut r = ResponseTimes::default();
        for secs in [121u32, 601, 5, 5, 3700] {
            r.count += 1;
            r.total_s += secs as i64;
            *r.buckets.entry(crate::store::stats::response_bucket(secs)).or_default() += 1;
        }
        assert_eq!(percentile(&r, 0.5), Some(120));
        assert_eq!(percentile(&r, 0.9), Some(3700));
        assert_eq!(percentile(&ResponseTimes::default(), 0.5), None);
        assert_eq!(rate(2, 3), Some(0.6667));
        assert_eq!(rate(1, 0), None);
        assert_eq!(human_secs(42.0), "42 s");
        assert_eq!(human_secs(601.0), "10 min");
        assert_eq!(human_secs(3725.0), "62 min");
        assert_eq!(human_secs(9000.0), "2 h 30");
    }
}
