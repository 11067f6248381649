//! Walua's templates against Meta's: the periodic sync of every WABA's registry, and the
//! operator's `walua templates sync | diff | push`.
//!
//! # Meta's limits, respected and explained
//! - An APPROVED template can be edited once in 24 hours and 10 times in 30 days; every edit
//!   sends it back to review (PENDING). REJECTED and PAUSED ones can be edited freely;
//!   PENDING ones not at all.
//! - A template's category cannot be edited: a definition whose category differs is flagged,
//!   never pushed (create it under a new name).
//! - A deleted name cannot be used again for 30 days; a WABA holds at most 250 templates.
//! - Nothing at Meta is deleted unless the operator says `--delete`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::catalog::TemplateCatalog;
use super::definition::{Definition, differences};
use crate::store::Store;
use crate::store::templates::{TemplateChange, TemplateRecord, normalize_language, record_from_meta};
use crate::whatsapp::client::{GraphClient, SendFailure};

/// Most templates Meta keeps per WABA.
pub const MAX_TEMPLATES_PER_WABA: usize = 250;
/// Edits of an APPROVED template allowed in 24 hours.
pub const EDITS_PER_DAY: usize = 1;
/// Edits of an APPROVED template allowed in 30 days.
pub const EDITS_PER_30_DAYS: usize = 10;
/// How long a deleted template's name stays unusable.
pub const NAME_REUSE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);
/// Pages of 100 read per WABA at most (Meta's 250 templates need 3).
const MAX_PAGES: usize = 50;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Why a template operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// No WABA is configured (`[whatsapp] waba_id`), or no access token for it.
    #[error("{0}")]
    NotConfigured(String),
    /// Meta refused or could not be reached.
    #[error("WhatsApp Business Account {waba}: {failure}")]
    Meta {
        /// The WABA.
        waba: String,
        /// Meta's answer, explained.
        failure: Box<SendFailure>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// One WABA walua manages: its id and the client of the first number that belongs to it.
#[derive(Debug, Clone)]
pub struct Waba {
    /// The WhatsApp Business Account id.
    pub id: String,
    /// The Graph API client whose token manages its templates.
    pub client: Arc<GraphClient>,
}

/// The sync and push side of templates. Owned by the daemon (its periodic sync stops on
/// shutdown) and used by the admin API.
pub struct TemplateSync {
    /// The store (registry).
    pub store: Store,
    /// Definitions and the send checks.
    pub catalog: Arc<TemplateCatalog>,
    /// The WABAs to manage (empty in a dry run or without `waba_id`).
    pub wabas: Vec<Waba>,
    /// The Meta app id, for header examples (`[whatsapp] app_id`).
    pub app_id: Option<String>,
    /// How often each WABA is read.
    pub interval: Duration,
    /// Change counters.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Wakes the outbox when a paused template is back.
    pub outbox: crate::outbox::Outbox,
    /// When the daemon started (unix ms): the first sync has one interval before a WABA
    /// never synced counts as a problem.
    pub started_ms: i64,
}

/// What one WABA's sync found.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// The WABA.
    pub waba_id: String,
    /// Templates Meta listed.
    pub templates: usize,
    /// Pages read.
    pub pages: usize,
    /// What changed.
    pub changes: Vec<TemplateChange>,
}

/// One line of `walua templates diff`: a template on disk, at Meta, or both.
#[derive(Debug, Clone, Serialize)]
pub struct DiffRow {
    /// The WABA.
    pub waba_id: String,
    /// The template's name.
    pub name: String,
    /// Its language.
    pub language: String,
    /// The definition file, when there is one.
    pub local: Option<String>,
    /// Meta's status, when Meta has it.
    pub status: Option<String>,
    /// Meta's category, when Meta has it.
    pub category: Option<String>,
    /// What differs between the definition and Meta's copy (customer-visible parts).
    pub differences: Vec<String>,
    /// What push does: `create`, `edit`, `none`, `delete` (only with --delete), `keep`
    /// (at Meta only, no --delete), or `blocked`.
    pub action: String,
    /// Why the action is blocked, or what to know about it.
    pub note: Option<String>,
}

/// One thing push did (or could not do).
#[derive(Debug, Clone, Serialize)]
pub struct PushResult {
    /// The WABA.
    pub waba_id: String,
    /// The template's name.
    pub name: String,
    /// Its language.
    pub language: String,
    /// `created`, `edited`, `deleted`, `unchanged`, `blocked`, `failed`, `kept`.
    pub result: String,
    /// Meta's id, status after the operation, or why it did not happen.
    pub detail: String,
}

impl TemplateSync {
    /// Reads every WABA's templates from Meta into the registry.
    pub async fn sync_all(&self) -> Result<Vec<SyncReport>, TemplateError> {
        if self.wabas.is_empty() {
            return Err(TemplateError::NotConfigured(
                "no WhatsApp Business Account to sync: set [whatsapp] waba_id (and an access token, dry_run = false)"
                    .into(),
            ));
        }
        let mut out = Vec::new();
        for w in &self.wabas {
            out.push(self.sync(w).await?);
        }
        Ok(out)
    }

    /// Reads one WABA's templates, page after page, and records them.
    pub async fn sync(&self, waba: &Waba) -> Result<SyncReport, TemplateError> {
        let mut listed = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        let now = crate::store::now_ms();
        loop {
            let (page, next) = waba
                .client
                .list_templates(&waba.id, after.as_deref())
                .await
                .map_err(|failure| TemplateError::Meta {
                    waba: waba.id.clone(),
                    failure: Box::new(failure),
                })?;
            pages += 1;
            listed.extend(page.iter().filter_map(|t| record_from_meta(&waba.id, t, now)));
            match next {
                Some(n) if pages < MAX_PAGES && after.as_deref() != Some(n.as_str()) => after = Some(n),
                Some(_) => {
                    tracing::warn!(waba = %waba.id, pages, "template list still has pages after {MAX_PAGES}: stopped (is paging looping?)");
                    break;
                }
                None => break,
            }
        }
        let templates = listed.len();
        let waba_id = waba.id.clone();
        let changes = self
            .store
            .blocking(move |s| s.templates_synced(&waba_id, listed))
            .await?;
        self.applied(&changes);
        Ok(SyncReport {
            waba_id: waba.id.clone(),
            templates,
            pages,
            changes,
        })
    }

    /// Logs and counts template changes, and releases the sends held for a template that
    /// can be sent again.
    pub fn applied(&self, changes: &[TemplateChange]) {
        applied(&self.store, &self.metrics, &self.outbox, changes);
    }

    /// Compares the definitions with the registry, WABA by WABA (read it first with
    /// [`TemplateSync::sync_all`] for Meta's latest).
    pub fn diff(&self) -> Result<Vec<DiffRow>, TemplateError> {
        let defs = self.catalog.definitions();
        let registry = self.store.templates()?;
        let now = crate::store::now_ms();
        let mut rows = Vec::new();
        for waba in self.waba_ids() {
            let at_meta: Vec<&TemplateRecord> = registry
                .iter()
                .filter(|t| t.waba_id == waba && t.status != "DELETED" && t.status != "PENDING_DELETION")
                .collect();
            for d in &defs.definitions {
                let remote = at_meta.iter().find(|t| t.name == d.name && t.language == d.language);
                rows.push(diff_row(&waba, Some(d), remote.copied(), &registry, at_meta.len(), now));
            }
            for t in &at_meta {
                if defs.find(&t.name, &t.language).is_none() {
                    rows.push(diff_row(&waba, None, Some(t), &registry, at_meta.len(), now));
                }
            }
        }
        rows.sort_by(|a, b| (&a.waba_id, &a.name, &a.language).cmp(&(&b.waba_id, &b.name, &b.language)));
        Ok(rows)
    }

    fn waba_ids(&self) -> Vec<String> {
        self.wabas.iter().map(|w| w.id.clone()).collect()
    }

    /// Creates at Meta what is missing, edits what differs (within Meta's limits), and with
    /// `delete` deletes what has no definition. Syncs first, so that it works on Meta's latest.
    pub async fn push(&self, delete: bool) -> Result<Vec<PushResult>, TemplateError> {
        self.sync_all().await?;
        let rows = self.diff()?;
        let defs = self.catalog.definitions();
        let mut out = Vec::new();
        for row in rows {
            let waba = self
                .wabas
                .iter()
                .find(|w| w.id == row.waba_id)
                .expect("rows come from these WABAs");
            let result = |result: &str, detail: String| PushResult {
                waba_id: row.waba_id.clone(),
                name: row.name.clone(),
                language: row.language.clone(),
                result: result.to_string(),
                detail,
            };
            let def = defs.find(&row.name, &row.language);
            let done = match (row.action.as_str(), def) {
                ("create", Some(d)) => match self.create(waba, d).await {
                    Ok(detail) => result("created", detail),
                    Err(e) => result("failed", e.to_string()),
                },
                ("edit", Some(d)) => match self.edit(waba, d, &row).await {
                    Ok(detail) => result("edited", detail),
                    Err(e) => result("failed", e.to_string()),
                },
                ("delete", _) if delete => match self.delete(waba, &row).await {
                    Ok(detail) => result("deleted", detail),
                    Err(e) => result("failed", e.to_string()),
                },
                ("delete", _) => result("kept", "at Meta only; `--delete` deletes it".into()),
                ("blocked", _) => result("blocked", row.note.clone().unwrap_or_default()),
                _ => result("unchanged", row.status.clone().unwrap_or_default()),
            };
            tracing::info!(waba = %done.waba_id, template = %done.name, language = %done.language, result = %done.result, detail = %done.detail, "template push");
            out.push(done);
        }
        Ok(out)
    }

    async fn header_handle(&self, waba: &Waba, d: &Definition) -> Result<Option<String>, String> {
        let Some((path, mime)) = d.header_example_file() else {
            return Ok(None);
        };
        let app_id = self.app_id.as_deref().ok_or_else(|| {
            format!(
                "its media header needs an example uploaded with Meta's resumable upload API: set [whatsapp] app_id (the Meta app's id) — {}",
                path.display()
            )
        })?;
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| format!("header example {}: {e}", path.display()))?;
        let filename = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        waba.client
            .upload_template_example(app_id, bytes, mime, &filename)
            .await
            .map(Some)
            .map_err(|f| format!("uploading the header example {}: {f}", path.display()))
    }

    async fn create(&self, waba: &Waba, d: &Definition) -> Result<String, String> {
        let handle = self.header_handle(waba, d).await?;
        let body = d.create_request(handle.as_deref());
        let answer = waba
            .client
            .create_template(&waba.id, &body)
            .await
            .map_err(|f| f.to_string())?;
        let id = answer
            .get("id")
            .and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_i64().map(|n| n.to_string()))
            })
            .ok_or_else(|| format!("Meta's answer has no template id: {answer}"))?;
        let status = answer
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("PENDING")
            .to_string();
        let now = crate::store::now_ms();
        let record = TemplateRecord {
            id: id.clone(),
            waba_id: waba.id.clone(),
            name: d.name.clone(),
            language: d.language.clone(),
            status: status.clone(),
            quality: "UNKNOWN".into(),
            category: answer
                .get("category")
                .and_then(Value::as_str)
                .unwrap_or(d.category.as_str())
                .to_string(),
            components: Some(d.components(handle.as_deref())),
            reason: None,
            synced_at_ms: None,
            updated_at_ms: now,
            edits_ms: Vec::new(),
            deleted_at_ms: None,
        };
        self.store
            .blocking(move |s| s.template_update(record, false))
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!("id {id}, {status}"))
    }

    /// The registry's record of `name` in `language` of `waba` (push found it there).
    async fn registered(&self, waba: &Waba, name: &str, language: &str) -> Result<TemplateRecord, String> {
        let (name, language, waba_id) = (name.to_string(), language.to_string(), waba.id.clone());
        let record = self
            .store
            .blocking(move |s| s.template(&waba_id, &name, &language))
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the template vanished from the registry")?;
        Ok(record)
    }

    async fn edit(&self, waba: &Waba, d: &Definition, row: &DiffRow) -> Result<String, String> {
        let record = self.registered(waba, &d.name, &d.language).await?;
        let handle = self.header_handle(waba, d).await?;
        let components = d.components(handle.as_deref());
        waba.client
            .edit_template(&record.id, &json!({ "components": components }))
            .await
            .map_err(|f| f.to_string())?;
        let was_approved = record.status == "APPROVED";
        let updated = TemplateRecord {
            status: "PENDING".into(),
            components: Some(components),
            ..record.clone()
        };
        self.store
            .blocking(move |s| s.template_update(updated, was_approved))
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "id {}: {} — back in Meta's review (PENDING)",
            record.id,
            row.differences.join("; ")
        ))
    }

    async fn delete(&self, waba: &Waba, row: &DiffRow) -> Result<String, String> {
        let record = self.registered(waba, &row.name, &row.language).await?;
        waba.client
            .delete_template(&waba.id, &record.name, Some(&record.id))
            .await
            .map_err(|f| f.to_string())?;
        let id = record.id.clone();
        let now = crate::store::now_ms();
        let deleted = TemplateRecord {
            status: "DELETED".into(),
            deleted_at_ms: Some(now),
            ..record
        };
        self.store
            .blocking(move |s| s.template_update(deleted, false))
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!("id {id}; the name cannot be used again for 30 days"))
    }

    /// Syncs every WABA now, then every `interval`, until `shutdown`. A failed sync is logged
    /// (once per change of reason) and tried again at the next tick.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if self.wabas.is_empty() {
            return;
        }
        let mut last_error: Option<String> = None;
        loop {
            match self.sync_all().await {
                Ok(reports) => {
                    if last_error.take().is_some() {
                        tracing::info!("template sync works again");
                    }
                    for r in reports {
                        tracing::debug!(waba = %r.waba_id, templates = r.templates, pages = r.pages, changes = r.changes.len(), "templates synced");
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    if last_error.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(error = %reason, every = ?self.interval, "template sync failed; retrying at the next interval");
                    }
                    last_error = Some(reason);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Why template management needs attention, for `/healthz` (degraded): a WABA whose
    /// last sync is older than three intervals (or never happened), and RED templates.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let now = crate::store::now_ms();
        let stale_after = self.interval.as_millis() as i64 * 3;
        for w in &self.wabas {
            match self.store.templates_synced_at(&w.id) {
                Ok(Some(at)) if now - at <= stale_after.max(60_000) => {}
                Ok(Some(at)) => out.push(format!(
                    "template registry of WABA {} is stale: last synced {} min ago",
                    w.id,
                    (now - at) / 60_000
                )),
                // Give the first sync its first interval.
                Ok(None) if now - self.started_ms < self.interval.as_millis() as i64 => {}
                Ok(None) => out.push(format!("template registry of WABA {} was never synced", w.id)),
                Err(e) => out.push(format!("template registry unreadable: {e}")),
            }
        }
        if let Ok(all) = self.store.templates() {
            for t in all
                .iter()
                .filter(|t| t.quality == "RED" && SENDING_STATES.contains(&t.status.as_str()))
            {
                out.push(format!(
                    "template {} ({}) has a RED quality rating: Meta may pause it",
                    t.name, t.language
                ));
            }
        }
        out
    }
}

/// Statuses in which a template's quality matters to the operator.
const SENDING_STATES: [&str; 3] = ["APPROVED", "FLAGGED", "PAUSED"];

/// Logs and counts template changes; a template that can be sent again releases the sends
/// held for it (and wakes the outbox).
pub fn applied(
    store: &Store,
    metrics: &crate::metrics::Metrics,
    outbox: &crate::outbox::Outbox,
    changes: &[TemplateChange],
) {
    let mut released = false;
    for c in changes {
        metrics.template_change(c.what, &c.to);
        match (c.what, c.to.as_str()) {
            ("quality", "RED") | ("status", "PAUSED" | "DISABLED" | "REJECTED") => {
                tracing::warn!(waba = %c.waba_id, template = %c.name, language = %c.language, what = c.what, from = %c.from, to = %c.to, reason = ?c.reason, "template changed at Meta")
            }
            _ => {
                tracing::info!(waba = %c.waba_id, template = %c.name, language = %c.language, what = c.what, from = %c.from, to = %c.to, reason = ?c.reason, "template changed at Meta")
            }
        }
        if c.what == "status" && c.from == "PAUSED" && super::catalog::SENDABLE.contains(&c.to.as_str()) {
            match store.outbox_release_held(&c.name, &c.language) {
                Ok(n) if n > 0 => {
                    tracing::info!(template = %c.name, language = %c.language, sends = n, "template unpaused: its held sends go out");
                    released = true;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "could not release the sends held for an unpaused template; they go at their next check")
                }
            }
        }
    }
    if released {
        outbox.wake();
    }
}

fn diff_row(
    waba: &str,
    local: Option<&Definition>,
    remote: Option<&TemplateRecord>,
    registry: &[TemplateRecord],
    count: usize,
    now: i64,
) -> DiffRow {
    let (name, language) = match (local, remote) {
        (Some(d), _) => (d.name.clone(), d.language.clone()),
        (None, Some(t)) => (t.name.clone(), t.language.clone()),
        (None, None) => unreachable!("a row has a side"),
    };
    let mut row = DiffRow {
        waba_id: waba.to_string(),
        name: name.clone(),
        language: normalize_language(&language),
        local: local.map(|d| d.path.display().to_string()),
        status: remote.map(|t| t.status.clone()),
        category: remote.map(|t| t.category.clone()),
        differences: Vec::new(),
        action: "none".into(),
        note: None,
    };
    match (local, remote) {
        (Some(d), None) => {
            let problems = d.validate();
            let deleted_recently = registry.iter().find(|t| {
                t.waba_id == waba
                    && t.name == name
                    && t.deleted_at_ms
                        .is_some_and(|at| now - at < NAME_REUSE_AFTER.as_millis() as i64)
            });
            if !problems.is_empty() {
                row.action = "blocked".into();
                row.note = Some(format!("breaks Meta's rules: {}", problems.join("; ")));
            } else if let Some(t) = deleted_recently {
                let days = (t.deleted_at_ms.unwrap_or(now) + NAME_REUSE_AFTER.as_millis() as i64 - now) / DAY_MS + 1;
                row.action = "blocked".into();
                row.note = Some(format!(
                    "the name `{name}` was deleted at Meta less than 30 days ago: it can be used again in {days} day(s), or rename the template"
                ));
            } else if count >= MAX_TEMPLATES_PER_WABA {
                row.action = "blocked".into();
                row.note = Some(format!(
                    "the WABA already holds {count} templates, Meta's maximum is {MAX_TEMPLATES_PER_WABA}: delete unused ones first (`walua templates push --delete`)"
                ));
            } else {
                row.action = "create".into();
            }
        }
        (Some(d), Some(t)) => {
            let local_components = d.components(None);
            row.differences = match &t.components {
                Some(c) => differences(&local_components, c),
                None => vec!["Meta's components are not known yet (sync first)".into()],
            };
            if d.category.as_str() != t.category {
                row.differences
                    .push(format!("category: local {} / Meta {}", d.category.as_str(), t.category));
            }
            if row.differences.is_empty() {
                row.action = "none".into();
            } else if d.category.as_str() != t.category {
                row.action = "blocked".into();
                row.note = Some(format!(
                    "Meta does not let a template's category change ({} → {}): create it under a new name",
                    t.category,
                    d.category.as_str()
                ));
            } else if !d.validate().is_empty() {
                row.action = "blocked".into();
                row.note = Some(format!("breaks Meta's rules: {}", d.validate().join("; ")));
            } else {
                match edit_blocked(t, now) {
                    Some(why) => {
                        row.action = "blocked".into();
                        row.note = Some(why);
                    }
                    None => {
                        row.action = "edit".into();
                        if t.status == "APPROVED" {
                            row.note =
                                Some("the edit sends it back to Meta's review (PENDING) until approved again".into());
                        }
                    }
                }
            }
        }
        (None, Some(_)) => {
            row.action = "delete".into();
            row.note = Some("at Meta only: `walua templates push --delete` deletes it".into());
        }
        (None, None) => {}
    }
    row
}

/// Why Meta would refuse to edit `t` now, if it would.
fn edit_blocked(t: &TemplateRecord, now: i64) -> Option<String> {
    match t.status.as_str() {
        "APPROVED" => {
            let last_day = t.edits_ms.iter().filter(|e| now - **e < DAY_MS).count();
            let last_30 = t.edits_ms.iter().filter(|e| now - **e < 30 * DAY_MS).count();
            if last_day >= EDITS_PER_DAY {
                let next = t.edits_ms.iter().max().copied().unwrap_or(now) + DAY_MS;
                Some(format!(
                    "an approved template can be edited once in 24 hours: next edit possible in {} h",
                    ((next - now) / 3_600_000).max(1)
                ))
            } else if last_30 >= EDITS_PER_30_DAYS {
                Some(format!(
                    "an approved template can be edited {EDITS_PER_30_DAYS} times in 30 days: limit reached"
                ))
            } else {
                None
            }
        }
        "REJECTED" | "PAUSED" => None,
        other => Some(format!(
            "Meta edits only APPROVED, REJECTED or PAUSED templates; this one is {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: &str, edits: Vec<i64>) -> TemplateRecord {
        TemplateRecord {
            id: "1".into(),
            waba_id: "9".into(),
            name: "t".into(),
            language: "fr".into(),
            status: status.into(),
            quality: "GREEN".into(),
            category: "UTILITY".into(),
            components: None,
            reason: None,
            synced_at_ms: None,
            updated_at_ms: 0,
            edits_ms: edits,
            deleted_at_ms: None,
        }
    }

    #[test]
    fn meta_edit_limits() {
        let now = 100 * DAY_MS;
        assert_eq!(edit_blocked(&record("APPROVED", vec![]), now), None);
        assert!(
            edit_blocked(&record("APPROVED", vec![now - 3_600_000]), now)
                .unwrap()
                .contains("once in 24 hours")
        );
        let nine: Vec<i64> = (1..=9).map(|d| now - (2 * d + 1) * DAY_MS).collect();
        assert_eq!(
            edit_blocked(&record("APPROVED", nine.clone()), now),
            None,
            "nine edits in 30 days"
        );
        let mut ten = nine;
        ten.push(now - 29 * DAY_MS);
        assert!(
            edit_blocked(&record("APPROVED", ten.clone()), now)
                .unwrap()
                .contains("10 times")
        );
        ten.push(now - 31 * DAY_MS);
        ten.retain(|e| now - e < 30 * DAY_MS);
        assert_eq!(ten.len(), 10);
        assert_eq!(
            edit_blocked(&record("REJECTED", vec![now]), now),
            None,
            "rejected ones edit freely"
        );
        assert!(
            edit_blocked(&record("PENDING", vec![]), now)
                .unwrap()
                .contains("PENDING")
        );
    }
}
