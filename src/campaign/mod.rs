//! Campaigns: one approved template sent to an audience, safely.
//!
//! - [`audience`]: who receives it — a list, a CSV file or an Odoo `res.partner` domain — each
//!   recipient checked at creation: invalid numbers, duplicates and opted-out contacts are
//!   skipped with their reason.
//! - [`CampaignRunner`]: the background task that hands each running campaign's recipients to
//!   the outbox, a window at a time (about one second of the number's rate), so that the
//!   outbox's limits pace it and answers to customers never wait behind it (the worker sends
//!   them first). It starts scheduled campaigns, holds a campaign while Meta pauses its
//!   template and resumes it when Meta unpauses it, and marks it done when every send ended.
//! - [`report`]: the figures of `GET /api/campaigns/{id}`.
//!
//! A crash sends nobody twice: a recipient is handed over in the transaction that records its
//! message and moves the campaign's cursor ([`crate::store::Store::campaign_feed`]), and a
//! message interrupted while being sent follows the outbox's rule (never resent blindly).

pub mod audience;
pub mod cli;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Outbox, SendError, SendRequest};
use crate::store::campaigns::{
    Campaign, CampaignChangeError, CampaignCounts, CampaignRecipient, CampaignStatus, RecipientState, campaign_origin,
};
use crate::store::{Store, now_ms};
use crate::whatsapp::message::OutboundContent;

/// How often a running campaign tops its window up.
pub const FEED_INTERVAL: Duration = Duration::from_millis(100);

/// How often held and scheduled campaigns are looked at when nothing wakes the runner.
pub const IDLE_INTERVAL: Duration = Duration::from_secs(2);

/// The messages a campaign keeps queued in the outbox for a number that sends `rate` per
/// second: about a second's worth, so that pauses take effect at once and answers queue
/// behind few campaign sends.
pub fn window(rate: u32) -> u64 {
    u64::from(rate).max(10)
}

/// Why a recipient is not sent to, for the report: the kind and the reason.
pub fn skip_kind(e: &SendError) -> (String, String) {
    match e {
        SendError::Invalid(v) => {
            let kind = if v.reason.contains("opted out") {
                "opted_out"
            } else if v.field == "to" || v.field == "partner_id" {
                "invalid"
            } else {
                "refused"
            };
            (kind.to_string(), v.to_string())
        }
        SendError::Store(e) => ("refused".to_string(), e.to_string()),
    }
}

/// The send request of one recipient.
pub fn request(campaign: &Campaign, r: &CampaignRecipient) -> SendRequest {
    SendRequest {
        to: r.to.clone(),
        partner_id: None,
        reply_to: None,
        from: campaign.phone_number_id.clone(),
        content: OutboundContent::Template {
            name: campaign.template.clone(),
            lang: campaign.lang.clone(),
            components: None,
            // No value at all is checked as an empty list: "expected 1 value, got 0".
            params: Some(if r.params.is_null() {
                Value::Array(Vec::new())
            } else {
                r.params.clone()
            }),
        },
        record: None,
    }
}

/// Creates a campaign from `spec` as `by`: reads its audience, checks each recipient, and
/// records it as a draft, scheduled (`at`) or running (`start`). Nothing is recorded when the
/// request is wrong, the template cannot be sent, or no recipient could receive it.
pub async fn create(
    app: &crate::App,
    spec: audience::CampaignSpec,
    by: &str,
) -> Result<(Campaign, CampaignCounts), audience::AudienceError> {
    use audience::AudienceError::Invalid;
    let outbox = &app.outbox;
    for (field, value) in [("name", &spec.name), ("template", &spec.template), ("lang", &spec.lang)] {
        if value.trim().is_empty() {
            return Err(Invalid(format!("{field} is required")));
        }
    }
    let sources = [spec.recipients.is_some(), spec.csv.is_some(), spec.odoo.is_some()];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(Invalid(
            "give the audience one way: recipients (a list), csv (the text of a CSV file) or odoo (a res.partner domain)".into(),
        ));
    }
    let phone_number_id = match spec.from.as_deref() {
        Some(from) => Some(outbox.sender_number(from).map_err(|e| Invalid(e.to_string()))?),
        None => outbox.default_sender(),
    };
    let known = outbox
        .templates()
        .and_then(|t| t.describe(phone_number_id.as_deref(), &spec.template, &spec.lang));
    if known.is_none() {
        return Err(Invalid(format!(
            "template `{}` ({}) is unknown: neither Meta's registry nor a definition in templates/ has it (`walua templates list`)",
            spec.template, spec.lang
        )));
    }
    let now = now_ms();
    let at = match spec.at.as_deref() {
        Some(at) => {
            let at = audience::parse_at(at, app.config.scripts.timezone).map_err(Invalid)?;
            if at < now - 60_000 {
                return Err(Invalid(format!(
                    "at: {} is in the past",
                    chrono::DateTime::from_timestamp_millis(at)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                )));
            }
            Some(at)
        }
        None => None,
    };
    let (raw, source) = if let Some(list) = spec.recipients {
        let raw = list
            .into_iter()
            .enumerate()
            .map(|(i, r)| audience::Raw {
                problem: r
                    .to
                    .trim()
                    .is_empty()
                    .then(|| format!("recipient {}: no phone number nor BSUID", i + 1)),
                to: r.to,
                params: r.params,
                source: None,
            })
            .collect();
        (raw, "list")
    } else if let Some(text) = spec.csv {
        (audience::from_csv(&text).map_err(Invalid)?, "csv")
    } else {
        let odoo_audience = spec.odoo.expect("one source is given");
        let Some(hooks) = &app.hooks else {
            return Err(Invalid("an Odoo audience needs [odoo] in the configuration".into()));
        };
        (audience::from_odoo(&hooks.odoo, &odoo_audience).await?, "odoo")
    };
    if raw.is_empty() {
        return Err(Invalid("the audience is empty".into()));
    }
    let status = match (at, spec.start) {
        (Some(_), _) => CampaignStatus::Scheduled,
        (None, true) => CampaignStatus::Running,
        (None, false) => CampaignStatus::Draft,
    };
    let campaign = Campaign {
        id: 0,
        name: spec.name.trim().to_string(),
        template: spec.template.trim().to_string(),
        lang: spec.lang.trim().to_string(),
        phone_number_id,
        status,
        at_ms: at,
        created_at_ms: now,
        started_at_ms: (status == CampaignStatus::Running).then_some(now),
        finished_at_ms: None,
        total: 0,
        cursor: 0,
        reason: None,
        source: source.to_string(),
        created_by: by.to_string(),
    };
    let outbox = outbox.clone();
    let created = tokio::task::spawn_blocking(move || {
        let recipients = audience::check(&outbox, &campaign, raw)?;
        if recipients.iter().all(|r| r.state == RecipientState::Skipped) {
            let mut reasons: Vec<String> = recipients.iter().filter_map(|r| r.reason.clone()).take(3).collect();
            if recipients.len() > 3 {
                reasons.push("…".into());
            }
            return Err(Invalid(format!(
                "no recipient can receive this campaign: {}",
                reasons.join("; ")
            )));
        }
        let created = outbox.store().campaign_create(campaign, &recipients)?;
        let counts = outbox.store().campaign(created.id)?.map(|(_, c)| c).unwrap_or_default();
        Ok((created, counts))
    })
    .await
    .map_err(|e| audience::AudienceError::Store(crate::store::StoreError::Join(e.to_string())))??;
    tracing::info!(
        campaign = created.0.id,
        name = %created.0.name,
        template = %created.0.template,
        total = created.0.total,
        skipped = created.1.skipped_total(),
        status = created.0.status.as_str(),
        by,
        "campaign created"
    );
    app.campaign_wake.notify_one();
    Ok(created)
}

/// A change an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a draft now, or at `at` (unix ms); start a scheduled one now.
    Start(Option<i64>),
    /// Pause: nothing more goes out, even what was handed to the outbox.
    Pause,
    /// Resume a paused campaign.
    Resume,
}

/// Applies `action` to campaign `id`, as `by`; wakes the runner. Refusals say why (409).
pub fn change(store: &Store, id: u64, action: Action, by: &str) -> Result<Campaign, CampaignChangeError> {
    let now = now_ms();
    let campaign = store.campaign_change(id, |c, _| {
        let state = c.status.as_str();
        match (action, c.status) {
            (Action::Start(Some(at)), CampaignStatus::Draft | CampaignStatus::Scheduled) if at > now => {
                c.status = CampaignStatus::Scheduled;
                c.at_ms = Some(at);
            }
            (Action::Start(_), CampaignStatus::Draft | CampaignStatus::Scheduled) => {
                c.status = CampaignStatus::Running;
                c.at_ms = None;
                c.started_at_ms.get_or_insert(now);
            }
            (Action::Pause, CampaignStatus::Running | CampaignStatus::Held | CampaignStatus::Scheduled) => {
                c.status = CampaignStatus::Paused;
                c.reason = Some(format!("paused by {by}"));
            }
            (Action::Resume, CampaignStatus::Paused) => {
                c.status = match c.at_ms {
                    Some(at) if at > now && c.started_at_ms.is_none() => CampaignStatus::Scheduled,
                    _ => CampaignStatus::Running,
                };
                c.reason = None;
                if c.status == CampaignStatus::Running {
                    c.started_at_ms.get_or_insert(now);
                }
            }
            (Action::Start(_), _) => {
                return Err(format!(
                    "campaign {id} is {state}: only a draft or a scheduled campaign can be started"
                ));
            }
            (Action::Pause, _) => {
                return Err(format!(
                    "campaign {id} is {state}: only a running, held or scheduled campaign can be paused"
                ));
            }
            (Action::Resume, _) => {
                return Err(format!(
                    "campaign {id} is {state}: only a paused campaign can be resumed"
                ));
            }
        }
        Ok(())
    })?;
    match action {
        Action::Pause => {
            let held = store.campaign_hold_jobs(id, true)?;
            tracing::info!(campaign = id, by, held, "campaign paused");
        }
        Action::Resume => {
            let released = store.campaign_hold_jobs(id, false)?;
            tracing::info!(
                campaign = id,
                by,
                released,
                status = campaign.status.as_str(),
                "campaign resumed"
            );
        }
        Action::Start(_) => {
            tracing::info!(campaign = id, by, status = campaign.status.as_str(), at_ms = ?campaign.at_ms, "campaign started")
        }
    }
    Ok(campaign)
}

/// The report of a campaign: the API's and the CLI's figures.
///
/// `sent` counts messages Meta accepted (sent, delivered, read or played); `delivered`
/// those delivered or read; `read` those read. `pending` recipients were not handed to the
/// outbox yet; `queued` wait in it.
pub fn report(c: &Campaign, counts: &CampaignCounts, rate: Option<u32>) -> Value {
    let s = |name: &str| counts.status(name);
    let messages: u64 = counts.by_status.values().sum();
    let skipped = counts.skipped_total();
    let pending = c.total.saturating_sub(messages + skipped + counts.cancelled);
    let queued = s("queued");
    let done = c.total - pending - queued;
    let eta = match (c.status, rate) {
        (CampaignStatus::Running, Some(r)) if r > 0 => Some((pending + queued).div_ceil(u64::from(r))),
        _ => None,
    };
    let time = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    json!({
        "id": c.id,
        "name": c.name,
        "template": c.template,
        "lang": c.lang,
        "from": c.phone_number_id,
        "status": c.status.as_str(),
        "reason": c.reason,
        "source": c.source,
        "created_by": c.created_by,
        "at": time(c.at_ms),
        "created_at": time(Some(c.created_at_ms)),
        "started_at": time(c.started_at_ms),
        "finished_at": time(c.finished_at_ms),
        "total": c.total,
        "pending": pending,
        "queued": queued,
        "sent": s("sent") + s("delivered") + s("read") + s("played"),
        "delivered": s("delivered") + s("read") + s("played"),
        "read": s("read") + s("played"),
        "failed": s("failed"),
        "unknown": s("unknown"),
        "cancelled": s("cancelled") + counts.cancelled,
        "dry_run": s("dry_run"),
        "skipped": skipped,
        "replied": counts.replied,
        "opted_out": counts.opted_out,
        "failed_by_code": counts.failed_codes,
        "skipped_by_reason": counts.skipped,
        "progress": if c.total == 0 { 1.0 } else { done as f64 / c.total as f64 },
        "eta_seconds": eta,
    })
}

/// The background task that runs campaigns. Owned by the daemon; stops on shutdown.
pub struct CampaignRunner {
    /// The store.
    pub store: Store,
    /// Prepares each recipient's send exactly as any other (limits, opt-out, template).
    pub outbox: Outbox,
    /// Messages per second of each business number (the window of a campaign).
    pub rates: Vec<(String, u32)>,
    /// Wakes the runner (a campaign created, started or resumed; a template unpaused).
    pub wake: Arc<Notify>,
    /// Stops the runner.
    pub shutdown: CancellationToken,
}

impl CampaignRunner {
    /// The rate of the number a campaign sends from.
    fn rate(&self, c: &Campaign) -> u32 {
        let number = c.phone_number_id.as_deref();
        self.rates
            .iter()
            .find(|(n, _)| Some(n.as_str()) == number)
            .or(self.rates.first())
            .map_or(80, |(_, r)| *r)
    }

    /// Runs campaigns until shutdown.
    pub async fn run(self) {
        let this = Arc::new(self);
        loop {
            let step = {
                let this = this.clone();
                tokio::task::spawn_blocking(move || this.step()).await
            };
            let pause = match step {
                Ok(Ok(busy)) if busy => FEED_INTERVAL,
                Ok(Ok(_)) => IDLE_INTERVAL,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "campaigns: store failed; retrying");
                    IDLE_INTERVAL
                }
                Err(e) => {
                    tracing::error!(error = %e, "campaigns: step panicked; retrying");
                    IDLE_INTERVAL
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = this.wake.notified() => {}
                _ = this.shutdown.cancelled() => break,
            }
        }
        tracing::debug!("campaign runner stopped");
    }

    /// One pass over the active campaigns; true while one is running (look again soon).
    fn step(&self) -> Result<bool, crate::store::StoreError> {
        let mut busy = false;
        let now = now_ms();
        for (c, counts) in self.store.campaigns_active()? {
            let id = c.id;
            let paused = self
                .outbox
                .templates()
                .and_then(|t| t.paused(c.phone_number_id.as_deref(), &c.template, &c.lang));
            let next = match (c.status, &paused) {
                (CampaignStatus::Scheduled, _) if c.at_ms.is_none_or(|at| at <= now) => Some(CampaignStatus::Running),
                (CampaignStatus::Running, Some(_)) => Some(CampaignStatus::Held),
                (CampaignStatus::Held, None) => Some(CampaignStatus::Running),
                _ => None,
            };
            let c = match next {
                Some(to) => match self.store.campaign_change(id, |c, _| {
                    if c.status.is_final() || c.status == CampaignStatus::Paused {
                        return Err("changed meanwhile".into());
                    }
                    c.status = to;
                    c.reason = match to {
                        CampaignStatus::Held => paused
                            .clone()
                            .map(|p| format!("{p}: the campaign waits until Meta unpauses it")),
                        _ => None,
                    };
                    if to == CampaignStatus::Running {
                        c.started_at_ms.get_or_insert(now);
                    }
                    Ok(())
                }) {
                    Ok(c) => {
                        match to {
                            CampaignStatus::Held => {
                                tracing::warn!(campaign = id, reason = ?c.reason, "campaign held: Meta paused its template")
                            }
                            _ => tracing::info!(campaign = id, name = %c.name, "campaign running"),
                        }
                        c
                    }
                    Err(CampaignChangeError::Store(e)) => return Err(e),
                    Err(_) => continue,
                },
                None => c,
            };
            if c.status == CampaignStatus::Running {
                busy |= self.feed(&c, &counts)?;
            }
        }
        Ok(busy)
    }

    /// Tops a running campaign's window up; marks it done when everything ended. True while
    /// it has more to do.
    fn feed(&self, c: &Campaign, counts: &CampaignCounts) -> Result<bool, crate::store::StoreError> {
        let queued = counts.status("queued");
        if c.cursor >= c.total {
            if queued == 0 {
                let done = self.store.campaign_change(c.id, |c, _| {
                    if c.status != CampaignStatus::Running {
                        return Err("changed meanwhile".into());
                    }
                    c.status = CampaignStatus::Done;
                    c.finished_at_ms = Some(now_ms());
                    Ok(())
                });
                match done {
                    Ok(c) => {
                        let (_, counts) = self.store.campaign(c.id)?.unwrap_or((c.clone(), counts.clone()));
                        tracing::info!(campaign = c.id, report = %report(&c, &counts, None), "campaign done");
                        self.outbox.changed();
                    }
                    Err(CampaignChangeError::Store(e)) => return Err(e),
                    Err(_) => {}
                }
                return Ok(false);
            }
            return Ok(true);
        }
        let room = window(self.rate(c)).saturating_sub(queued);
        if room == 0 {
            return Ok(true);
        }
        let rows = self
            .store
            .campaign_recipients(c.id, c.cursor, Some(RecipientState::Pending), room as usize)?;
        let cursor = if (rows.len() as u64) < room {
            c.total
        } else {
            rows.last().map_or(c.total, |(i, _)| i + 1)
        };
        let origin = campaign_origin(c.id);
        let items = rows
            .into_iter()
            .map(|(index, r)| {
                let prepared = self.outbox.prepare(&request(c, &r), &origin).map_err(|e| skip_kind(&e));
                (index, prepared)
            })
            .collect();
        let fed = self.store.campaign_feed(c.id, items, cursor)?;
        if fed.queued > 0 {
            self.outbox.wake();
        }
        if fed.queued + fed.skipped > 0 {
            self.outbox.changed();
            tracing::debug!(
                campaign = c.id,
                queued = fed.queued,
                skipped = fed.skipped,
                cursor,
                "campaign fed"
            );
        }
        Ok(true)
    }
}
