//! The template registry: every template of every WABA as Meta last described it, keyed by
//! Meta's template id, with an index by (WABA, name, language).
//!
//! Kept current by the periodic sync ([`Store::templates_synced`]) and by Meta's template
//! webhooks, applied in the same transaction as the delivery that carried them
//! ([`apply_template_change`]), so a status change is applied exactly once.

use redb::{ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{META, Result, Store, decode, encode, now_ms};

/// Templates: Meta's template id → JSON [`TemplateRecord`].
pub(super) const TEMPLATES: TableDefinition<&str, &[u8]> = TableDefinition::new("templates");
/// `WABA/name/language` → template id: the lookup of a send.
pub(super) const TEMPLATE_KEYS: TableDefinition<&str, &str> = TableDefinition::new("template_keys");
/// `META` key prefix of a WABA's last complete sync (unix ms, i64 BE).
const SYNCED_PREFIX: &str = "templates_synced:";

/// The webhook fields that describe templates.
pub const TEMPLATE_FIELDS: [&str; 4] = [
    "message_template_status_update",
    "message_template_quality_update",
    "message_template_components_update",
    "template_category_update",
];

/// One template in one language of one WABA, as Meta describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    /// Meta's template id (`hsm_id`).
    pub id: String,
    /// The WhatsApp Business Account that owns it.
    pub waba_id: String,
    /// Its name.
    pub name: String,
    /// Its language, normalised (`en-US` → `en_US`).
    pub language: String,
    /// Meta's status: APPROVED, PENDING, REJECTED, PAUSED, DISABLED, …
    pub status: String,
    /// Meta's quality rating: GREEN, YELLOW, RED or UNKNOWN.
    pub quality: String,
    /// UTILITY, MARKETING or AUTHENTICATION.
    pub category: String,
    /// Meta's components (header, body, footer, buttons); `None` while only a webhook has
    /// named the template (no sync yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<Value>>,
    /// Why Meta rejected, paused or disabled it (the webhook's `reason` and its details).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When a sync last read it from Meta (unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at_ms: Option<i64>,
    /// When anything about it last changed (unix ms).
    pub updated_at_ms: i64,
    /// When walua edited it at Meta (unix ms): Meta allows one edit a day and ten in 30 days
    /// of an approved template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edits_ms: Vec<i64>,
    /// When it was deleted (unix ms): Meta does not let its name be used again for 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at_ms: Option<i64>,
}

/// Something that changed about a template (logged, counted, and acted on: a template that
/// becomes sendable again releases the sends held for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateChange {
    /// Meta's template id.
    pub id: String,
    /// Its WABA.
    pub waba_id: String,
    /// Its name.
    pub name: String,
    /// Its language.
    pub language: String,
    /// What changed: `new`, `status`, `quality`, `category`, `components`, `deleted`.
    pub what: &'static str,
    /// The value before (empty for `new`).
    pub from: String,
    /// The value after.
    pub to: String,
    /// Meta's reason, when it gave one.
    pub reason: Option<String>,
}

impl TemplateChange {
    /// A change of `what` in template `t`, from `from` to `to`.
    fn of(t: &TemplateRecord, what: &'static str, from: &str, to: &str, reason: Option<String>) -> TemplateChange {
        TemplateChange {
            id: t.id.clone(),
            waba_id: t.waba_id.clone(),
            name: t.name.clone(),
            language: t.language.clone(),
            what,
            from: from.to_string(),
            to: to.to_string(),
            reason,
        }
    }
}

/// Meta's language codes compare without case and with `-` or `_`: `en-US` is `en_US`.
pub use crate::templates::definition::normalize_language;

/// The index key of (WABA, name, language).
fn key(waba_id: &str, name: &str, language: &str) -> String {
    format!("{waba_id}/{name}/{}", normalize_language(language))
}

/// The status a `message_template_status_update` event leaves a template in. Events that
/// undo a state (REINSTATED after a pause or an appeal, UNPAUSED, UNARCHIVED, UNLOCKED) make
/// it APPROVED again; the others are the state itself.
pub fn status_after_event(event: &str) -> String {
    match event {
        "REINSTATED" | "UNPAUSED" | "UNARCHIVED" | "UNLOCKED" | "UNFLAGGED" => "APPROVED".to_string(),
        other => other.to_string(),
    }
}

fn text(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The open tables a template change is applied to.
pub(super) struct TemplateTables<'txn> {
    templates: Table<'txn, &'static str, &'static [u8]>,
    keys: Table<'txn, &'static str, &'static str>,
}

impl<'txn> TemplateTables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        Ok(TemplateTables {
            templates: txn.open_table(TEMPLATES)?,
            keys: txn.open_table(TEMPLATE_KEYS)?,
        })
    }

    fn get(&self, id: &str) -> Result<Option<TemplateRecord>> {
        let row = self.templates.get(id)?;
        row.map(|v| decode("templates", v.value())).transpose()
    }

    fn put(&mut self, t: &TemplateRecord) -> Result<()> {
        self.templates.insert(t.id.as_str(), encode(t).as_slice())?;
        self.keys
            .insert(key(&t.waba_id, &t.name, &t.language).as_str(), t.id.as_str())?;
        Ok(())
    }

    /// Applies one template webhook change of WABA `waba_id`; returns what changed.
    pub(super) fn apply(&mut self, waba_id: &str, field: &str, value: &Value) -> Result<Vec<TemplateChange>> {
        let Some(id) = text(value, "message_template_id") else {
            tracing::warn!(field, "template webhook without message_template_id: kept raw only");
            return Ok(Vec::new());
        };
        let now = now_ms();
        let existing = self.get(&id)?;
        let is_new = existing.is_none();
        let mut t = existing.unwrap_or_else(|| TemplateRecord {
            id: id.clone(),
            waba_id: waba_id.to_string(),
            name: text(value, "message_template_name").unwrap_or_default(),
            language: normalize_language(&text(value, "message_template_language").unwrap_or_default()),
            status: "PENDING".into(),
            quality: "UNKNOWN".into(),
            category: text(value, "message_template_category").unwrap_or_default(),
            components: None,
            reason: None,
            synced_at_ms: None,
            updated_at_ms: now,
            edits_ms: Vec::new(),
            deleted_at_ms: None,
        });
        let mut changes = Vec::new();
        let mut change = |t: &TemplateRecord, what: &'static str, from: String, to: String, reason: Option<String>| {
            changes.push(TemplateChange::of(t, what, &from, &to, reason))
        };
        if is_new {
            change(&t, "new", String::new(), t.status.clone(), None);
        }
        match field {
            "message_template_status_update" => {
                let event = text(value, "event").unwrap_or_default();
                let status = status_after_event(&event);
                let details = value
                    .pointer("/rejection_info/reason")
                    .or_else(|| value.pointer("/other_info/description"))
                    .and_then(Value::as_str);
                let reason = match (text(value, "reason").filter(|r| r != "NONE"), details) {
                    (Some(r), Some(d)) => Some(format!("{r}: {d}")),
                    (Some(r), None) => Some(r),
                    (None, Some(d)) => Some(d.to_string()),
                    (None, None) => None,
                };
                if let Some(c) = text(value, "message_template_category")
                    && !c.is_empty()
                {
                    t.category = c;
                }
                if status != t.status || is_new {
                    let from = std::mem::replace(&mut t.status, status.clone());
                    change(
                        &t,
                        "status",
                        if is_new { String::new() } else { from },
                        status.clone(),
                        reason.clone(),
                    );
                }
                if status == "DELETED" || status == "PENDING_DELETION" {
                    t.deleted_at_ms.get_or_insert(now);
                }
                t.reason = reason;
            }
            "message_template_quality_update" => {
                if let Some(q) = text(value, "new_quality_score") {
                    let from = std::mem::replace(&mut t.quality, q.clone());
                    change(&t, "quality", from, q, None);
                }
            }
            "template_category_update" => {
                if let Some(c) = text(value, "new_category") {
                    let from = std::mem::replace(&mut t.category, c.clone());
                    change(&t, "category", from, c, None);
                }
            }
            "message_template_components_update" => {
                let components = components_from_webhook(value);
                let from = t
                    .components
                    .as_ref()
                    .map(|c| Value::Array(c.clone()).to_string())
                    .unwrap_or_default();
                let to = Value::Array(components.clone()).to_string();
                t.components = Some(components);
                change(&t, "components", from, to, None);
            }
            _ => return Ok(Vec::new()),
        }
        t.updated_at_ms = now;
        self.put(&t)?;
        Ok(changes)
    }
}

/// Meta's components rebuilt from a `message_template_components_update` webhook (title,
/// element, footer, buttons).
fn components_from_webhook(v: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(title) = text(v, "message_template_title") {
        out.push(serde_json::json!({"type": "HEADER", "format": "TEXT", "text": title}));
    }
    if let Some(body) = text(v, "message_template_element") {
        out.push(serde_json::json!({"type": "BODY", "text": body}));
    }
    if let Some(footer) = text(v, "message_template_footer") {
        out.push(serde_json::json!({"type": "FOOTER", "text": footer}));
    }
    if let Some(buttons) = v.get("message_template_buttons").and_then(Value::as_array) {
        let buttons: Vec<Value> = buttons
            .iter()
            .map(|b| {
                let mut o = serde_json::Map::new();
                for (from, to) in [
                    ("message_template_button_type", "type"),
                    ("message_template_button_text", "text"),
                    ("message_template_button_url", "url"),
                    ("message_template_button_phone_number", "phone_number"),
                ] {
                    if let Some(s) = text(b, from) {
                        o.insert(to.into(), Value::String(s));
                    }
                }
                Value::Object(o)
            })
            .collect();
        out.push(serde_json::json!({"type": "BUTTONS", "buttons": buttons}));
    }
    out
}

/// A template as Meta's list API returns it, read into a record of WABA `waba_id`.
pub fn record_from_meta(waba_id: &str, t: &Value, now: i64) -> Option<TemplateRecord> {
    Some(TemplateRecord {
        id: text(t, "id")?,
        waba_id: waba_id.to_string(),
        name: text(t, "name")?,
        language: normalize_language(&text(t, "language")?),
        status: text(t, "status").unwrap_or_else(|| "PENDING".into()),
        quality: t
            .pointer("/quality_score/score")
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN")
            .to_string(),
        category: text(t, "category").unwrap_or_default(),
        components: t.get("components").and_then(Value::as_array).cloned(),
        reason: text(t, "rejected_reason").filter(|r| r != "NONE"),
        synced_at_ms: Some(now),
        updated_at_ms: now,
        edits_ms: Vec::new(),
        deleted_at_ms: None,
    })
}

impl Store {
    /// Every template of every WABA, by WABA, name and language.
    pub fn templates(&self) -> Result<Vec<TemplateRecord>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(TEMPLATES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(decode("templates", row?.1.value())?);
        }
        out.sort_by(|a: &TemplateRecord, b: &TemplateRecord| {
            (&a.waba_id, &a.name, &a.language).cmp(&(&b.waba_id, &b.name, &b.language))
        });
        Ok(out)
    }

    /// The template `name` in `language` of WABA `waba_id`, if the registry knows it.
    pub fn template(&self, waba_id: &str, name: &str, language: &str) -> Result<Option<TemplateRecord>> {
        let txn = self.db()?.begin_read()?;
        let keys = txn.open_table(TEMPLATE_KEYS)?;
        let Some(id) = keys
            .get(key(waba_id, name, language).as_str())?
            .map(|v| v.value().to_string())
        else {
            return Ok(None);
        };
        let table = txn.open_table(TEMPLATES)?;
        let row = table.get(id.as_str())?;
        row.map(|v| decode("templates", v.value())).transpose()
    }

    /// When WABA `waba_id`'s templates were last read completely from Meta (unix ms).
    pub fn templates_synced_at(&self, waba_id: &str) -> Result<Option<i64>> {
        let txn = self.db()?.begin_read()?;
        let meta = txn.open_table(META)?;
        let row = meta.get(format!("{SYNCED_PREFIX}{waba_id}").as_str())?;
        Ok(row.and_then(|v| v.value().try_into().ok().map(i64::from_be_bytes)))
    }

    /// Records a complete read of WABA `waba_id`'s templates: each is inserted or updated
    /// (walua's own edit history kept), a template Meta no longer lists is marked DELETED,
    /// and the WABA counts as synced. Returns what changed.
    pub fn templates_synced(&self, waba_id: &str, listed: Vec<TemplateRecord>) -> Result<Vec<TemplateChange>> {
        let now = now_ms();
        let txn = self.db()?.begin_write()?;
        let mut changes = Vec::new();
        {
            let mut tables = TemplateTables::open(&txn)?;
            let mut known: Vec<TemplateRecord> = Vec::new();
            for row in tables.templates.iter()? {
                let t: TemplateRecord = decode("templates", row?.1.value())?;
                if t.waba_id == waba_id {
                    known.push(t);
                }
            }
            for mut t in listed {
                let before = known.iter().position(|k| k.id == t.id).map(|i| known.swap_remove(i));
                let mut note = |what: &'static str, from: &str, to: &str| {
                    changes.push(TemplateChange::of(&t, what, from, to, t.reason.clone()))
                };
                match &before {
                    None => note("new", "", &t.status),
                    Some(b) => {
                        if b.status != t.status {
                            note("status", &b.status, &t.status);
                        }
                        if b.quality != t.quality {
                            note("quality", &b.quality, &t.quality);
                        }
                        if b.category != t.category {
                            note("category", &b.category, &t.category);
                        }
                        if b.components.is_some() && b.components != t.components {
                            note("components", "", "");
                        }
                    }
                }
                if let Some(b) = before {
                    t.edits_ms = b.edits_ms;
                    if b.status == t.status
                        && b.quality == t.quality
                        && b.category == t.category
                        && b.components == t.components
                    {
                        t.updated_at_ms = b.updated_at_ms;
                    }
                    // A renamed language code leaves its old index entry behind.
                    if b.language != t.language || b.name != t.name {
                        tables.keys.remove(key(&b.waba_id, &b.name, &b.language).as_str())?;
                    }
                }
                tables.put(&t)?;
            }
            for mut gone in known {
                if gone.status != "DELETED" {
                    changes.push(TemplateChange::of(
                        &gone,
                        "deleted",
                        &gone.status,
                        "DELETED",
                        Some("no longer listed by Meta".into()),
                    ));
                    gone.status = "DELETED".into();
                    gone.deleted_at_ms.get_or_insert(now);
                    gone.updated_at_ms = now;
                    tables.put(&gone)?;
                }
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(
                format!("{SYNCED_PREFIX}{waba_id}").as_str(),
                now.to_be_bytes().as_slice(),
            )?;
        }
        txn.commit()?;
        Ok(changes)
    }

    /// Records what walua itself did at Meta: a template created (a new record), edited
    /// (`edited`: its edit time is added) or deleted. `f` changes the record in place.
    pub fn template_update(&self, record: TemplateRecord, edited: bool) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut tables = TemplateTables::open(&txn)?;
            let mut t = match tables.get(&record.id)? {
                Some(mut old) => {
                    let edits = std::mem::take(&mut old.edits_ms);
                    TemplateRecord {
                        edits_ms: edits,
                        ..record
                    }
                }
                None => record,
            };
            let now = now_ms();
            if edited {
                t.edits_ms.push(now);
                t.edits_ms.retain(|e| now - e < 30 * 24 * 3600 * 1000);
            }
            t.updated_at_ms = now;
            tables.put(&t)?;
        }
        txn.commit()?;
        Ok(())
    }
}
