//! The durable send queue.
//!
//! [`Outbox::enqueue`] validates a message against Meta's limits, checks the 24 h window and
//! records the message and its job in one durable transaction before anything goes on the
//! network. [`OutboxWorker`] sends due jobs: a global token bucket per number
//! (`max_per_second`), a per-recipient bucket (Meta's pair rate: `pair_burst` messages, then
//! one per `pair_interval`), at most one message in flight per recipient (order is kept),
//! retries with exponential backoff and jitter on 429 / 5xx / timeouts / connection errors
//! until `retry_horizon`, and a definite error marks the message failed with Meta's code and
//! an explanation.
//!
//! # Crash between "sending" and Meta's answer
//!
//! A job is marked `sending` durably before the request. If walua dies before Meta's answer
//! is recorded, the job is found in `sending` at start-up and is NOT resent: the message gets
//! status `unknown` with an explanation. Every send carries `biz_opaque_callback_data =
//! "walua:<id>"`, which Meta echoes in status webhooks, so a message that did go out is
//! reconciled (wamid and status) by its first status webhook. An operator can resend an
//! `unknown` or `failed` message with `POST /api/messages/{id}/resend`.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::store::outbox::{NewOutbound, SendOutcome};
use crate::store::{ErrorInfo, MessageRecord, Store, StoreError, normalize_contact, now_ms};
use crate::whatsapp::client::{GraphClient, GraphClients, SendFailure};
use crate::whatsapp::error::{Disposition, explain};
use crate::whatsapp::message::{OutboundContent, Recipient, ValidationError};

/// A send request: the body of `POST /api/messages` and what the Lua send calls build.
#[derive(Debug, Clone, Deserialize)]
pub struct SendRequest {
    /// Phone number, BSUID or username of a known contact, or `partner:ID` (an Odoo partner,
    /// by walua's index of their numbers).
    #[serde(default)]
    pub to: String,
    /// An Odoo partner to send to instead of `to` (DESIGN.md): their mobile, else their
    /// phone, from walua's partner index (`[odoo] partners`).
    #[serde(default)]
    pub partner_id: Option<i64>,
    /// Reply to this wamid (`context.message_id`).
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The business number to send from: an account's `name` or phone number id. Default:
    /// the number the contact last wrote to, else the first account.
    #[serde(default)]
    pub from: Option<String>,
    /// The content, tagged by `type`.
    #[serde(flatten)]
    pub content: OutboundContent,
    /// The Odoo record the message is about (`{"model": "sale.order", "id": 42}`): with
    /// `[odoo] chatter` on, its send and a later failure are noted on the record's chatter.
    #[serde(default)]
    pub record: Option<crate::store::chatter::RecordRef>,
}

/// Why a send request was refused before being queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Meta would refuse it (limits, shapes) or the recipient is unusable (422).
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The enqueue side of the outbox, shared by the admin API and the scripts.
#[derive(Clone)]
pub struct Outbox {
    store: Store,
    wake: Arc<Notify>,
    dry_run: bool,
    allow_outside_window: bool,
    metrics: Arc<crate::metrics::Metrics>,
    /// The numbers messages may be sent from, the default first (empty: no number known,
    /// e.g. a dry run without one; then every message has no sender number).
    senders: Arc<[Sender]>,
    /// The region of numbers written without a country code when no sender says one
    /// (`[whatsapp] default_country`).
    default_country: Option<String>,
    /// The template registry and definitions every template send is checked against.
    templates: Option<Arc<crate::templates::catalog::TemplateCatalog>>,
    /// Tells the console that a message was recorded.
    live: Option<crate::console::live::LiveChanges>,
    /// Sends about an Odoo record are noted on its chatter (`[odoo] chatter`).
    chatter: bool,
    /// Who may not be sent what (`[optout]`).
    optout: Arc<crate::optout::OptOutRules>,
    /// `[whatsapp] allow_private_links`.
    allow_private_links: bool,
}

/// A business number messages may go out from: `[whatsapp]` or one `[[whatsapp.accounts]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The account's name (what `from` says).
    pub name: String,
    /// Its Graph API phone number id.
    pub phone_number_id: String,
    /// The region of numbers written without a country code that it sends to.
    pub default_country: Option<String>,
}

impl Sender {
    /// The senders of a configuration's accounts, the default first (accounts without a
    /// phone number id, as in a dry run, are left out).
    pub fn of(whatsapp: &crate::config::WhatsAppConfig) -> Vec<Sender> {
        whatsapp
            .accounts
            .iter()
            .filter(|a| !a.phone_number_id.is_empty())
            .map(|a| Sender {
                name: a.name.clone(),
                phone_number_id: a.phone_number_id.clone(),
                default_country: a.default_country.clone(),
            })
            .collect()
    }
}

impl Outbox {
    /// An outbox on `store`; `wake` is notified when a job is queued.
    pub fn new(store: Store, wake: Arc<Notify>, dry_run: bool, allow_outside_window: bool) -> Outbox {
        Outbox {
            store,
            wake,
            dry_run,
            allow_outside_window,
            metrics: Arc::default(),
            senders: Arc::new([]),
            default_country: None,
            templates: None,
            live: None,
            chatter: false,
            optout: Arc::default(),
            allow_private_links: false,
        }
    }

    /// Accepts media links to localhost and private addresses (local setups, tests).
    pub fn with_private_links(mut self, allowed: bool) -> Outbox {
        self.allow_private_links = allowed;
        self
    }

    /// The opt-out keywords, texts and exceptions.
    pub fn with_optout(mut self, rules: crate::optout::OptOutRules) -> Outbox {
        self.optout = Arc::new(rules);
        self
    }

    /// The opt-out rules (the dispatcher reads the keywords here).
    pub fn optout_rules(&self) -> &crate::optout::OptOutRules {
        &self.optout
    }

    /// Whether sends about an Odoo record are noted on its chatter (`[odoo] chatter`).
    pub fn chatter_on(&self) -> bool {
        self.chatter
    }

    /// Notes sends that carry a `record` on that Odoo record's chatter.
    pub fn with_chatter(mut self, on: bool) -> Outbox {
        self.chatter = on;
        self
    }

    /// Bumps `live` whenever a message is recorded (the console's live updates).
    pub fn with_live(mut self, live: crate::console::live::LiveChanges) -> Outbox {
        self.live = Some(live);
        self
    }

    /// Checks template sends against `catalog` (registry and definitions) before queueing.
    pub fn with_templates(mut self, catalog: Arc<crate::templates::catalog::TemplateCatalog>) -> Outbox {
        self.templates = Some(catalog);
        self
    }

    /// The template catalog, when template sends are checked.
    pub fn templates(&self) -> Option<&Arc<crate::templates::catalog::TemplateCatalog>> {
        self.templates.as_ref()
    }

    /// The region of numbers without a country code (`[whatsapp] default_country`), for
    /// when no sender account names one.
    pub fn with_default_country(mut self, region: Option<String>) -> Outbox {
        self.default_country = region;
        self
    }

    /// The region a number written without a country code is read in, for a message sent
    /// from the account `from` names (without `from`: the default account).
    pub fn region(&self, from: Option<&str>) -> Option<String> {
        let sender = match from {
            Some(f) => self.senders.iter().find(|s| s.name == f || s.phone_number_id == f),
            None => self.senders.first(),
        };
        sender
            .and_then(|s| s.default_country.clone())
            .or_else(|| self.default_country.clone())
    }

    /// A contact as a person wrote it, in its canonical form: a phone number (any usual
    /// format) as Meta's `wa_id` digits, read in the region of `from`'s account; a BSUID or
    /// username unchanged. An invalid number is refused with the reason.
    pub fn canonical_contact(&self, to: &str, from: Option<&str>) -> Result<String, ValidationError> {
        if crate::phone::looks_like_phone(to) {
            crate::phone::normalize(to, self.region(from).as_deref())
                .map_err(|e| ValidationError::new("to", e.to_string()))
        } else {
            Ok(to.trim().to_string())
        }
    }

    /// The numbers messages may be sent from, the default first.
    pub fn with_senders(mut self, senders: Vec<Sender>) -> Outbox {
        self.senders = senders.into();
        self
    }

    /// Counts recorded messages in `metrics` (`walua_messages_out_total`).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Outbox {
        self.metrics = metrics;
        self
    }

    /// Tells the console's open pages that something they show changed.
    pub fn changed(&self) {
        if let Some(live) = &self.live {
            live.bump();
        }
    }

    /// Wakes the worker (after a job was queued by another path, e.g. a resend).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Validates a request and gives it an id, without recording anything yet (scripts
    /// commit their sends together with their outcome).
    pub fn prepare(&self, req: &SendRequest, origin: &str) -> Result<NewOutbound, SendError> {
        let partner = match (req.partner_id, req.to.strip_prefix("partner:")) {
            (Some(id), _) => Some(id),
            (None, Some(id)) => Some(id.trim().parse::<i64>().map_err(|_| {
                ValidationError::new("to", format!("`{}` is not partner:ID with a numeric id", req.to))
            })?),
            (None, None) => None,
        };
        let given = match partner {
            Some(id) => self.store.partner_number(id)?.ok_or_else(|| {
                ValidationError::new(
                    "partner_id",
                    format!(
                        "Odoo partner {id} has no number walua can send to: it is unknown to walua's partner index, archived, or has neither a mobile nor a phone that reads as a number ([odoo] partners must be on)"
                    ),
                )
            })?,
            None if req.to.trim().is_empty() => {
                return Err(ValidationError::new("to", "give `to` (a phone, BSUID or username) or `partner_id`").into());
            }
            None => req.to.clone(),
        };
        let to = self.canonical_contact(&given, req.from.as_deref())?;
        let recipient = self.resolve_recipient(&to)?;
        let phone_number_id = self.sender(req.from.as_deref(), &to)?;
        self.check_optout(&to, &req.content, phone_number_id.as_deref(), origin)?;
        let checked = self.check_template(&req.content, phone_number_id.as_deref(), origin)?;
        let sent = checked.as_ref().unwrap_or(&req.content);
        let body = sent.graph_body(&recipient, req.reply_to.as_deref())?;
        if !self.allow_private_links {
            for link in crate::media::links_of(&body) {
                if let Some(host) = crate::media::private_link(&link) {
                    return Err(SendError::Invalid(ValidationError::new(
                        "link",
                        format!(
                            "{link} points to {host}, which Meta's servers cannot reach: upload the file instead (POST /api/media, env.whatsapp.upload or `bytes`), or set [whatsapp] allow_private_links = true for a local setup"
                        ),
                    )));
                }
            }
        }
        let content = serde_json::to_value(&req.content).unwrap_or(Value::Null);
        if let Some(r) = &req.record {
            r.check().map_err(|e| ValidationError::new("record", e))?;
        }
        Ok(NewOutbound {
            id: self.store.allocate_message_id(),
            recipient: recipient.as_str().to_string(),
            kind: req.content.kind().to_string(),
            summary: req.content.summary(),
            content,
            body,
            free_form: req.content.is_free_form(),
            allow_outside_window: self.allow_outside_window,
            dry_run: self.dry_run,
            origin: origin.to_string(),
            reply_to: req.reply_to.clone(),
            phone_number_id,
            record: req.record.clone().filter(|_| self.chatter),
            chatter_file: None,
        })
    }

    /// Refuses what a contact opted out of (see [`crate::optout`]): with `all`, templates and
    /// the sends of hook and cron scripts (not replies to the customer), unless
    /// `[optout] exceptions` names the template or the script; with `marketing`, MARKETING
    /// templates.
    fn check_optout(
        &self,
        to: &str,
        content: &OutboundContent,
        phone_number_id: Option<&str>,
        origin: &str,
    ) -> Result<(), SendError> {
        let Some(opt) = self.store.optout_of(to)? else {
            return Ok(());
        };
        let template = match content {
            OutboundContent::Template { name, lang, .. } => Some((name.as_str(), lang.as_str())),
            _ => None,
        };
        let script = origin.strip_prefix("script:");
        let since = chrono::DateTime::from_timestamp_millis(opt.since_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        let refuse = |what: &str| -> Result<(), SendError> {
            Err(SendError::Invalid(ValidationError::new(
                "to",
                format!(
                    "{to} opted out of {} messages on {since} ({}): {what} is not sent (WhatsApp Business Policy). They opt back in by writing START; [optout] exceptions lists what goes anyway",
                    opt.scope.as_str(),
                    opt.source
                ),
            )))
        };
        match opt.scope {
            crate::optout::Scope::All => {
                let business =
                    template.is_some() || script.is_some_and(|s| s.starts_with("hooks/") || s.starts_with("cron/"));
                let excepted = template.is_some_and(|(n, _)| self.optout.excepted(n))
                    || script.is_some_and(|s| self.optout.excepted(s));
                if business && !excepted {
                    return refuse(&match template {
                        Some((n, _)) => format!("template `{n}`"),
                        None => format!("a notification from {}", script.unwrap_or(origin)),
                    });
                }
            }
            crate::optout::Scope::Marketing => {
                if let Some((name, lang)) = template {
                    let category = self
                        .templates
                        .as_ref()
                        .and_then(|c| c.describe(phone_number_id, name, lang))
                        .and_then(|d| d["category"].as_str().map(str::to_string));
                    if category.as_deref() == Some("MARKETING") {
                        return refuse(&format!("the MARKETING template `{name}`"));
                    }
                }
            }
        }
        Ok(())
    }

    /// A template send checked against the registry or its definition, with its components
    /// built from `params`; `None` for any other content.
    fn check_template(
        &self,
        content: &OutboundContent,
        phone_number_id: Option<&str>,
        origin: &str,
    ) -> Result<Option<OutboundContent>, ValidationError> {
        let OutboundContent::Template {
            name,
            lang,
            components,
            params,
        } = content
        else {
            return Ok(None);
        };
        let checked = match &self.templates {
            Some(catalog) => catalog.prepare(phone_number_id, name, lang, params.as_ref(), components.as_ref())?,
            None => crate::templates::catalog::CheckedSend {
                components: match params {
                    Some(p) => Some(crate::templates::catalog::unchecked_components(p)?),
                    None => components.clone(),
                },
                warning: None,
            },
        };
        // A campaign says it once for all its recipients.
        if let Some(w) = checked.warning.as_ref().filter(|_| !origin.starts_with("campaign:")) {
            tracing::warn!(template = %name, language = %lang, origin, "{w}");
        }
        Ok(Some(OutboundContent::Template {
            name: name.clone(),
            // Meta's spelling: en-US and en_us are en_US.
            lang: crate::store::templates::normalize_language(lang),
            components: checked.components,
            params: None,
        }))
    }

    /// The store it records in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The number messages go out from when nothing says which: the first account's.
    pub fn default_sender(&self) -> Option<String> {
        self.senders.first().map(|s| s.phone_number_id.clone())
    }

    /// Whether `phone_number_id` is one of the configured numbers.
    pub fn sends_from(&self, phone_number_id: &str) -> bool {
        self.senders.iter().any(|s| s.phone_number_id == phone_number_id)
    }

    /// The phone number id of the account `from` names (its name, else its phone number id).
    pub fn sender_number(&self, from: &str) -> Result<String, ValidationError> {
        let found = self
            .senders
            .iter()
            .find(|s| s.name == from)
            .or_else(|| self.senders.iter().find(|s| s.phone_number_id == from));
        match found {
            Some(s) => Ok(s.phone_number_id.clone()),
            None => {
                let names: Vec<&str> = self.senders.iter().map(|s| s.name.as_str()).collect();
                Err(ValidationError::new(
                    "from",
                    format!(
                        "`{from}` is not a configured account (configured: {})",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                ))
            }
        }
    }

    /// The phone number id a message to `to` goes out from: the account `from` names; without
    /// `from`, the only account, or (with several) the number the contact last wrote to, else
    /// the first account. `None` when no number is configured (dry run).
    pub fn sender(&self, from: Option<&str>, to: &str) -> Result<Option<String>, ValidationError> {
        if let Some(from) = from {
            return self.sender_number(from).map(Some);
        }
        match &self.senders[..] {
            [] => Ok(None),
            [only] => Ok(Some(only.phone_number_id.clone())),
            [first, ..] => {
                let conv = self
                    .store
                    .conversation(to)
                    .map_err(|e| ValidationError::new("to", format!("cannot look the contact up: {e}")))?;
                let last = conv.as_ref().and_then(|c| c.last_number());
                Ok(Some(
                    last.filter(|n| self.sends_from(n))
                        .unwrap_or(&first.phone_number_id)
                        .to_string(),
                ))
            }
        }
    }

    /// Logs a recorded message and wakes the worker when it was queued.
    pub fn recorded(&self, record: &MessageRecord, origin: &str) {
        let recipient = record.to.as_deref().unwrap_or("?");
        self.metrics
            .message_out(&record.kind, &record.status, record.phone_number_id.as_deref());
        if let Some(live) = &self.live {
            live.bump();
        }
        match record.status.as_str() {
            "queued" => {
                tracing::info!(message_id = record.id, to = %recipient, kind = %record.kind, origin, "outbound message queued");
                self.wake.notify_one();
            }
            "dry_run" => {
                tracing::info!(message_id = record.id, to = %recipient, kind = %record.kind, origin, body = %record.raw, "dry run: message recorded, not sent")
            }
            _ => {
                tracing::warn!(message_id = record.id, to = %recipient, origin, error = ?record.error.as_ref().map(|e| &e.title), "outbound message refused")
            }
        }
    }

    /// Validates and records a message (synchronous: call it off the async runtime).
    pub fn enqueue_blocking(&self, req: &SendRequest, origin: &str) -> Result<MessageRecord, SendError> {
        let new = self.prepare(req, origin)?;
        let record = self.store.enqueue_outbound(new)?;
        self.recorded(&record, origin);
        Ok(record)
    }

    /// Validates and records a message from async code.
    pub async fn enqueue(&self, req: SendRequest, origin: String) -> Result<MessageRecord, SendError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.enqueue_blocking(&req, &origin))
            .await
            .map_err(|e| SendError::Store(StoreError::Join(e.to_string())))?
    }

    /// A phone or BSUID as given, or a known contact's (username) phone, else its BSUID.
    fn resolve_recipient(&self, to: &str) -> Result<Recipient, ValidationError> {
        let normalized = normalize_contact(to);
        if let Ok(r) = Recipient::parse(&normalized) {
            if is_parent_bsuid(&normalized)
                && let Some(c) = self
                    .store
                    .conversation(&normalized)
                    .map_err(|e| ValidationError::new("to", format!("cannot look the contact up: {e}")))?
                && c.parent_user_id.as_deref() == Some(normalized.as_str())
                && let Some(id) = c.wa_id.or(c.user_id)
            {
                // A parent BSUID is not a recipient of its own: the person it belongs to is.
                return Recipient::parse(&id);
            }
            return Ok(r);
        }
        let conv = self
            .store
            .conversation(to)
            .map_err(|e| ValidationError::new("to", format!("cannot look the contact up: {e}")))?;
        match conv {
            Some(c) => match c.wa_id.or(c.user_id) {
                Some(id) => Recipient::parse(&id),
                None => Err(ValidationError::new(
                    "to",
                    format!("contact `{to}` has no phone number nor BSUID"),
                )),
            },
            None => Err(ValidationError::new(
                "to",
                format!("`{to}` is neither a phone number, a BSUID (e.g. SN.1349…) nor a known contact"),
            )),
        }
    }
}

/// A parent BSUID (`SN.ENT.…`, Meta's `parent_user_id`), which stands for a contact's own
/// BSUID or phone.
fn is_parent_bsuid(id: &str) -> bool {
    id.len() > 7 && id.as_bytes()[2] == b'.' && id[3..].starts_with("ENT.")
}

/// The shortest time between two batches' durable `sending` marks (`crate::pace`).
const MARK_INTERVAL: Duration = Duration::from_millis(5);

/// Outbox worker settings, from `[whatsapp]`.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// Messages per second, per business number (phone number id → rate).
    pub max_per_second: Vec<(String, u32)>,
    /// Messages that may go to one recipient back to back.
    pub pair_burst: u32,
    /// Then one message per this interval to the same recipient.
    pub pair_interval: Duration,
    /// First retry delay (doubles each attempt, ±25 % jitter, capped at 10 min).
    pub retry_base: Duration,
    /// Give up retrying after this long since the message was queued.
    pub retry_horizon: Duration,
    /// Sends in flight at once.
    pub max_in_flight: usize,
}

/// The background sender. Owned by the daemon; stops on shutdown after in-flight sends end.
pub struct OutboxWorker {
    /// The store.
    pub store: Store,
    /// The Graph API client of each number; a job goes out through its number's.
    pub clients: Arc<GraphClients>,
    /// Notified when a job is queued.
    pub wake: Arc<Notify>,
    /// Stops the worker.
    pub shutdown: CancellationToken,
    /// Limits and retry policy.
    pub settings: OutboxSettings,
    /// Send time, sent/failed transitions and retries.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The template registry: a send of a template Meta paused is held, not sent.
    pub templates: Option<Arc<crate::templates::catalog::TemplateCatalog>>,
    /// Bumped when a send's outcome is recorded (the console's status ticks).
    pub live: crate::console::live::LiveChanges,
}

/// How often a send held for a paused template looks again (it is released at once when a
/// webhook or a sync says the template is back).
pub const TEMPLATE_HOLD_RECHECK: Duration = Duration::from_secs(600);

type Keyed = RateLimiter<String, governor::state::keyed::DefaultKeyedStateStore<String>, DefaultClock>;

/// How often the per-recipient buckets forget the recipients whose bucket is full again.
const PAIR_PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// Drops the per-recipient buckets that are back to a full burst (a recipient not written
/// to for `pair_interval × pair_burst`): such a bucket is the same as none. Without it the
/// limiter keeps one entry per recipient ever sent to, and a 100,000-recipient campaign
/// grew the daemon by ~7 MB that it never gave back. Returns how many buckets remain.
fn prune_pair_buckets(pair: &Keyed) -> usize {
    pair.retain_recent();
    pair.shrink_to_fit();
    pair.len()
}

impl OutboxWorker {
    /// Recovers interrupted sends, then sends until shutdown.
    pub async fn run(self) {
        match self.store.blocking(|s| s.outbox_recover_interrupted()).await {
            Ok(ids) if !ids.is_empty() => {
                tracing::warn!(?ids, "sends interrupted by the last stop marked `unknown`, not resent")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "could not recover interrupted sends"),
        }
        let s = &self.settings;
        // One bucket per business number (Meta limits each number's throughput).
        let buckets: HashMap<String, NumberBucket> = s
            .max_per_second
            .iter()
            .map(|(number, rate)| (number.clone(), number_bucket(*rate)))
            .collect();
        let default_number = self.clients.default_client().phone_number_id().to_string();
        let due_limits = crate::store::outbox::DueLimits::shared_by(256, buckets.len());
        let pair: Arc<Keyed> = Arc::new(RateLimiter::keyed(
            Quota::with_period(s.pair_interval.max(Duration::from_millis(1)))
                .expect("period is non-zero")
                .allow_burst(NonZeroU32::new(s.pair_burst.max(1)).expect("max(1) is non-zero")),
        ));
        let clock = DefaultClock::default();
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
        let permits = Arc::new(Semaphore::new(s.max_in_flight.max(1)));
        // Campaigns get at most three quarters of the sends in flight: an answer to a customer
        // always finds a free one, however slow the Graph API is under a campaign.
        let campaign_cap = (s.max_in_flight * 3 / 4).max(1);
        let campaign_in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks = tokio_util::task::TaskTracker::new();
        let (outcomes, outcome_rx) = tokio::sync::mpsc::channel::<WriteRequest>(4096);
        let writer = tokio::spawn(outbox_writer(self.store.clone(), outcome_rx));

        let mut pacer = crate::pace::BatchPacer::new(MARK_INTERVAL);
        let mut pair_pruned = tokio::time::Instant::now();
        'outer: loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            if pair_pruned.elapsed() >= PAIR_PRUNE_INTERVAL {
                let left = prune_pair_buckets(&pair);
                tracing::trace!(left, "per-recipient buckets pruned");
                pair_pruned = tokio::time::Instant::now();
            }
            // Each batch's `sending` mark is a durable commit: an fsync, and a write of every
            // page changed since the last durable commit (conversations and per-contact
            // indexes are keyed by contact, so about a page per message). See `crate::pace`.
            if !pacer.next_batch(&self.shutdown).await {
                break;
            }
            let busy = in_flight.lock().expect("not poisoned").clone();
            let store = self.store.clone();
            let due = store.blocking(move |s| s.outbox_due(now_ms(), due_limits, &busy)).await;
            let (due, next_wakeup) = match due {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "outbox read failed; retrying in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = self.shutdown.cancelled() => break,
                    }
                }
            };
            let mut sleep_for = next_wakeup
                .map(|t| Duration::from_millis((t - now_ms()).max(1) as u64))
                .unwrap_or(Duration::from_secs(3600));
            // Take as many due jobs as there are free permits and the rate limits allow, mark
            // them `sending` in one durable transaction, then send them concurrently.
            let mut batch = Vec::new();
            // Numbers whose bucket ran out in this pass: their other jobs wait for the next one
            // (checked before the recipient's bucket, so that no recipient token is wasted).
            let mut full: HashSet<&str> = HashSet::new();
            let mut campaign_batch = 0;
            for job in due {
                let number = job.phone_number_id.as_deref().unwrap_or(&default_number);
                if full.contains(number) {
                    continue;
                }
                if job.campaign.is_some() {
                    if campaign_in_flight.load(std::sync::atomic::Ordering::Relaxed) + campaign_batch >= campaign_cap {
                        continue;
                    }
                    campaign_batch += 1;
                }
                let permit = match permits.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) if !batch.is_empty() => break,
                    Err(_) => tokio::select! {
                        p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
                        _ = self.shutdown.cancelled() => break 'outer,
                    },
                };
                if let Err(not_until) = pair.check_key(&job.recipient) {
                    sleep_for = sleep_for.min(not_until.wait_time_from(clock.now()));
                    continue;
                }
                // The batch goes out at once: take only what the number's bucket allows now.
                // (A job of a number no longer configured has no bucket: it fails when sent.)
                if let Some((key, bucket)) = buckets.get_key_value(number)
                    && bucket.check().is_err()
                {
                    if !batch.is_empty() {
                        full.insert(key.as_str());
                        continue;
                    }
                    tokio::select! {
                        _ = bucket.until_ready() => {}
                        _ = self.shutdown.cancelled() => break 'outer,
                    }
                }
                batch.push((job, permit));
            }
            if !batch.is_empty() {
                tracing::debug!(jobs = batch.len(), "marking a batch as sending");
                let ids: Vec<u64> = batch.iter().map(|(j, _)| j.message_id).collect();
                let (ack, marked) = tokio::sync::oneshot::channel();
                let marked = match outcomes.send(WriteRequest::Mark(ids, ack)).await {
                    Ok(()) => marked.await.unwrap_or_else(|_| Err("outbox writer stopped".into())),
                    Err(_) => Err("outbox writer stopped".into()),
                };
                let marked = match marked {
                    Ok(m) => m.into_iter().collect::<std::collections::HashMap<u64, Value>>(),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot mark messages as sending; will retry");
                        std::collections::HashMap::new()
                    }
                };
                let mut marked = marked;
                for (job, permit) in batch {
                    let Some(body) = marked.remove(&job.message_id) else {
                        continue;
                    };
                    in_flight.lock().expect("not poisoned").insert(job.recipient.clone());
                    let campaign_slot = job.campaign.map(|_| {
                        campaign_in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        CampaignSlot(campaign_in_flight.clone())
                    });
                    let ctx = SendContext {
                        client: self.clients.for_number(job.phone_number_id.as_deref()).cloned(),
                        settings: self.settings.clone(),
                        in_flight: in_flight.clone(),
                        wake: self.wake.clone(),
                        metrics: self.metrics.clone(),
                        outcomes: outcomes.clone(),
                        templates: self.templates.clone(),
                        live: self.live.clone(),
                    };
                    tasks.spawn(async move {
                        ctx.send(job, body).await;
                        drop(permit);
                        drop(campaign_slot);
                    });
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep_for) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        tasks.close();
        tasks.wait().await;
        drop(outcomes);
        let _ = writer.await;
        tracing::debug!("outbox worker stopped");
    }
}

/// A campaign send in flight: counted until dropped.
struct CampaignSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for CampaignSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the outbox writer commits: a send's outcome, or jobs to mark `sending` (answered
/// with their Graph API bodies).
enum WriteRequest {
    Record(SendOutcome, tokio::sync::oneshot::Sender<Result<(), String>>),
    Mark(
        Vec<u64>,
        tokio::sync::oneshot::Sender<Result<Vec<(u64, Value)>, String>>,
    ),
}

/// The outbox's one writer: every request waiting is committed in one transaction (group
/// commit), so the outcomes that came in while a batch was being sent ride with the next
/// batch's durable `sending` mark instead of a transaction of their own.
async fn outbox_writer(store: Store, mut rx: tokio::sync::mpsc::Receiver<WriteRequest>) {
    let mut batch: Vec<WriteRequest> = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut outcomes = Vec::new();
        let mut ids = Vec::new();
        for request in &batch {
            match request {
                WriteRequest::Record(o, _) => outcomes.push(o.clone()),
                WriteRequest::Mark(batch_ids, _) => ids.extend_from_slice(batch_ids),
            }
        }
        let result = store
            .blocking(move |s| s.outbox_record_and_mark(&outcomes, &ids, &crate::explain_error))
            .await
            .map_err(|e| e.to_string());
        for request in batch.drain(..) {
            match request {
                WriteRequest::Record(_, ack) => {
                    let _ = ack.send(result.as_ref().map(drop).map_err(Clone::clone));
                }
                WriteRequest::Mark(_, ack) => {
                    let _ = ack.send(result.clone());
                }
            }
        }
    }
}

/// A business number's send bucket.
type NumberBucket = governor::DefaultDirectRateLimiter;

/// Sends go out in small batches: a burst of a fiftieth of the rate (4 at 200/s), and the
/// steady rate lowered by as much (196/s), so that no one-second window ever holds more than
/// `max_per_second` requests (GCRA: at most burst + rate × 1 s). A long campaign measured
/// 192/s at 200/s (`benches/campaign.rs`): the rest is the pacing of the batches.
fn number_bucket(max_per_second: u32) -> NumberBucket {
    let per_second = NonZeroU32::new(max_per_second.max(1)).expect("max(1) is non-zero");
    let burst = (max_per_second / 50).max(1);
    let steady = NonZeroU32::new(max_per_second.saturating_sub(burst)).unwrap_or(per_second);
    RateLimiter::direct(Quota::per_second(steady).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)))
}

struct SendContext {
    outcomes: tokio::sync::mpsc::Sender<WriteRequest>,
    /// The client of the job's number; `None` when that number is not configured any more.
    client: Option<Arc<GraphClient>>,
    settings: OutboxSettings,
    in_flight: Arc<Mutex<HashSet<String>>>,
    wake: Arc<Notify>,
    metrics: Arc<crate::metrics::Metrics>,
    templates: Option<Arc<crate::templates::catalog::TemplateCatalog>>,
    live: crate::console::live::LiveChanges,
}

impl SendContext {
    /// Why this send must wait: its template is paused at Meta.
    fn held(&self, job: &crate::store::outbox::OutboxJob, body: &Value) -> Option<String> {
        let catalog = self.templates.as_ref()?;
        if body.get("type").and_then(Value::as_str) != Some("template") {
            return None;
        }
        let name = body.pointer("/template/name").and_then(Value::as_str)?;
        let lang = body.pointer("/template/language/code").and_then(Value::as_str)?;
        catalog.paused(job.phone_number_id.as_deref(), name, lang)
    }

    async fn send(self, job: crate::store::outbox::OutboxJob, body: Value) {
        let id = job.message_id;
        if let Some(reason) = self.held(&job, &body) {
            let horizon_end = job.queued_at_ms + self.settings.retry_horizon.as_millis() as i64;
            let next = now_ms() + TEMPLATE_HOLD_RECHECK.as_millis() as i64;
            let outcome = if now_ms() < horizon_end {
                tracing::info!(message_id = id, reason = %reason, "template send held until Meta unpauses the template");
                self.metrics.template_hold();
                SendOutcome::Retry {
                    id,
                    next_attempt_ms: next.min(horizon_end),
                    error: format!(
                        "{}{reason}: held until it is unpaused",
                        crate::store::outbox::HELD_PREFIX
                    ),
                }
            } else {
                tracing::warn!(message_id = id, reason = %reason, "template stayed paused past the retry horizon: send failed");
                SendOutcome::Failed {
                    id,
                    error: ErrorInfo {
                        code: 132015,
                        title: format!(
                            "{reason}: it stayed paused past the retry horizon ({} s), the message was not sent",
                            self.settings.retry_horizon.as_secs()
                        ),
                        details: None,
                        explanation: explain(132015).to_string(),
                    },
                    response: None,
                }
            };
            let (ack, acked) = tokio::sync::oneshot::channel();
            if self.outcomes.send(WriteRequest::Record(outcome, ack)).await.is_ok() {
                let _ = acked.await;
            }
            self.in_flight.lock().expect("not poisoned").remove(&job.recipient);
            self.wake.notify_one();
            return;
        }
        let attempt = job.attempts + 1;
        let started = std::time::Instant::now();
        let result = match &self.client {
            Some(client) => client.send(&body).await,
            None => Err(unconfigured_number(job.phone_number_id.as_deref().unwrap_or("?"))),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        self.metrics.send_time(started.elapsed());
        let kind = body.get("type").and_then(Value::as_str).unwrap_or("status").to_string();
        let outcome_record = match result {
            Ok(ok) => {
                tracing::info!(message_id = id, wamid = %ok.wamid, attempt, elapsed_ms, "sent");
                SendOutcome::Accepted {
                    id,
                    wamid: ok.wamid,
                    response: ok.response,
                }
            }
            Err(failure) => {
                let retry_at = now_ms() + backoff(self.settings.retry_base, attempt).as_millis() as i64;
                let horizon_end = job.queued_at_ms + self.settings.retry_horizon.as_millis() as i64;
                match failure.disposition {
                    Disposition::Retry if retry_at <= horizon_end => {
                        let reason = failure.to_string();
                        tracing::warn!(message_id = id, attempt, error = %reason, retry_in_ms = retry_at - now_ms(), "send failed; will retry");
                        SendOutcome::Retry {
                            id,
                            next_attempt_ms: retry_at,
                            error: reason,
                        }
                    }
                    disposition => {
                        let mut info = error_info(&failure);
                        if disposition == Disposition::Retry {
                            info.title = format!(
                                "gave up after {attempt} attempts over {}s: {}",
                                self.settings.retry_horizon.as_secs(),
                                info.title
                            );
                        }
                        tracing::warn!(message_id = id, attempt, code = info.code, error = %info.title, "send failed for good");
                        SendOutcome::Failed {
                            id,
                            error: info,
                            response: failure.response.clone(),
                        }
                    }
                }
            }
        };
        let outcome = match &outcome_record {
            SendOutcome::Accepted { .. } => "sent",
            SendOutcome::Retry { .. } => "retry",
            SendOutcome::Failed { .. } => "failed",
        };
        let (ack, acked) = tokio::sync::oneshot::channel();
        let record = match self.outcomes.send(WriteRequest::Record(outcome_record, ack)).await {
            Ok(()) => acked.await.unwrap_or_else(|_| Err("outcome writer stopped".into())),
            Err(_) => Err("outcome writer stopped".into()),
        };
        match record {
            // The job stays `sending`: at the next start it is marked `unknown`, never resent blindly.
            Err(e) => tracing::error!(message_id = id, error = %e, "could not record the send outcome"),
            Ok(()) => {
                self.live.bump();
                match outcome {
                    "retry" => self.metrics.outbox_retry(),
                    other => self.metrics.message_out(&kind, other, job.phone_number_id.as_deref()),
                }
            }
        }
        self.in_flight.lock().expect("not poisoned").remove(&job.recipient);
        self.wake.notify_one();
    }
}

/// The operator-facing record of a failed send.
pub fn error_info(f: &SendFailure) -> ErrorInfo {
    match &f.error {
        Some(e) => ErrorInfo {
            code: e.code,
            title: e.message.clone(),
            details: e.details.clone(),
            explanation: explain(e.code).to_string(),
        },
        None if f.http_status.is_none() && f.disposition == Disposition::Fail => ErrorInfo {
            code: 0,
            title: f.transport.clone().unwrap_or_else(|| f.to_string()),
            details: None,
            explanation: "walua did not send it, for the reason above; nothing reached Meta.".into(),
        },
        None => ErrorInfo {
            code: 0,
            title: f.transport.clone().unwrap_or_else(|| f.to_string()),
            details: f.http_status.map(|s| format!("HTTP {s}")),
            explanation: "walua could not get an answer from the Graph API (network error, timeout or server error). Check connectivity to graph.facebook.com; transient errors are retried until whatsapp.retry_horizon.".into(),
        },
    }
}

/// The failure of a job queued from a business number that is no longer configured.
fn unconfigured_number(phone_number_id: &str) -> SendFailure {
    SendFailure::local(
        None,
        format!(
            "business number {phone_number_id} is not configured any more (not in [[whatsapp.accounts]]): add it back and resend, or send the message again from a configured account"
        ),
    )
}

/// Exponential backoff with ±25 % jitter, capped at 10 minutes.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    use rand::Rng;
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(Duration::from_secs(600));
    capped.mul_f64(rand::rng().random_range(0.75..1.25))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let b = Duration::from_secs(2);
        for attempt in 1..6 {
            let d = backoff(b, attempt);
            let nominal = 2.0 * 2f64.powi(attempt as i32 - 1);
            assert!(
                d.as_secs_f64() >= nominal * 0.75 && d.as_secs_f64() <= nominal * 1.25,
                "{attempt}: {d:?}"
            );
        }
        assert!(backoff(b, 40) <= Duration::from_secs(750));
    }

    #[test]
    fn recipients_whose_bucket_is_full_again_are_forgotten_and_the_others_kept() {
        let pair: Keyed = RateLimiter::keyed(
            Quota::with_period(Duration::from_millis(40))
                .unwrap()
                .allow_burst(NonZeroU32::new(2).unwrap()),
        );
        for i in 0..1000 {
            assert!(pair.check_key(&format!("2217710{i:05}")).is_ok());
        }
        assert_eq!(prune_pair_buckets(&pair), 1000, "all of them were just written to");
        // 2 × 40 ms later every bucket is full again, except one written to now.
        std::thread::sleep(Duration::from_millis(150));
        assert!(pair.check_key(&"221770000000".to_string()).is_ok());
        assert_eq!(prune_pair_buckets(&pair), 1);
        // A forgotten recipient starts again with a full burst: the pair rate still holds.
        let awa = "221771000001".to_string();
        assert!(pair.check_key(&awa).is_ok() && pair.check_key(&awa).is_ok());
        assert!(pair.check_key(&awa).is_err());
    }
}
