//! Who receives a campaign: a list given through the API, a CSV file, or an Odoo
//! `res.partner` domain; and the checks made when the campaign is created.
//!
//! # CSV
//!
//! A header line, then one recipient per line. The column `to` (or `phone`, `mobile`,
//! `bsuid`, `wa_id`) holds the phone number (any usual format, read in the sending account's
//! country) or the BSUID. Every other column is a template parameter named by its header:
//! `1`, `2`… for numbered body parameters, a parameter's name for named ones, `header` for a
//! header's. Empty cells are left out. Separators `,` and `;` are both understood (a French
//! spreadsheet writes `;`).
//!
//! # Odoo
//!
//! `{"domain": [["category_id.name", "=", "VIP"]], "params": ["name", "ref"]}`: the partners
//! the domain finds (archived ones never), each sent to at its mobile, else its phone (the
//! partner index's rule). `params` maps template parameters to partner fields: a list for
//! positional parameters, or a table `{"customer": "name"}`. A many2one field gives its name.
//!
//! # Checks
//!
//! Each recipient is prepared exactly as its send will be ([`Outbox::prepare`]): an invalid
//! number, an opted-out contact or parameters that do not fit the template skip the recipient
//! with the reason. The same person given twice (the same number in two spellings, or a
//! phone and the BSUID of one conversation) is sent to once. The checks run again when each
//! recipient is sent (a contact may opt out in between).

use serde::Deserialize;
use serde_json::{Value, json};

use crate::outbox::Outbox;
use crate::store::campaigns::{Campaign, CampaignRecipient, RecipientState};

/// The body of `POST /api/campaigns`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    /// The operator's name for the campaign.
    pub name: String,
    /// The template sent.
    pub template: String,
    /// Its language.
    pub lang: String,
    /// The account it goes out from (name or phone number id); default: the first.
    #[serde(default)]
    pub from: Option<String>,
    /// When it starts: RFC 3339, or `YYYY-MM-DD HH:MM` in `[scripts] timezone`.
    #[serde(default)]
    pub at: Option<String>,
    /// Start it now (without `at`): no draft to look at first.
    #[serde(default)]
    pub start: bool,
    /// The audience as a list.
    #[serde(default)]
    pub recipients: Option<Vec<RecipientSpec>>,
    /// The audience as CSV text (see the module documentation).
    #[serde(default)]
    pub csv: Option<String>,
    /// The audience as an Odoo domain.
    #[serde(default)]
    pub odoo: Option<OdooAudience>,
}

/// One recipient given in a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientSpec {
    /// Phone number or BSUID.
    pub to: String,
    /// Template parameters: a list or a table keyed by parameter name.
    #[serde(default)]
    pub params: Value,
}

/// An audience of Odoo partners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdooAudience {
    /// A `res.partner` search domain.
    pub domain: Value,
    /// Partner fields for the template parameters: a list, or a table name → field.
    #[serde(default)]
    pub params: Value,
    /// At most this many partners (Odoo's order: by id).
    #[serde(default)]
    pub limit: Option<u64>,
}

/// A recipient before the checks: who, with what, from where.
#[derive(Debug, Clone, PartialEq)]
pub struct Raw {
    /// Phone or BSUID as given (empty: none was found; `problem` says why).
    pub to: String,
    /// Template parameters.
    pub params: Value,
    /// The CSV line or the Odoo partner.
    pub source: Option<String>,
    /// Why it cannot be sent to, known before any check (no number).
    pub problem: Option<String>,
}

/// The column names that hold the recipient in a CSV file.
const TO_COLUMNS: [&str; 5] = ["to", "phone", "mobile", "bsuid", "wa_id"];

/// Reads a CSV audience. Fails (the whole file) when it has no recipient column or cannot be
/// read; a line without a recipient is kept as a problem.
pub fn from_csv(text: &str) -> Result<Vec<Raw>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.lines().next().unwrap_or("");
    let delimiter = if first.matches(';').count() > first.matches(',').count() {
        b';'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("CSV header line: {e}"))?
        .iter()
        .map(|h| h.to_string())
        .collect();
    let to_col = headers
        .iter()
        .position(|h| TO_COLUMNS.contains(&h.to_lowercase().as_str()))
        .ok_or_else(|| {
            format!(
                "CSV: no recipient column: the header line must name one of {} (found: {})",
                TO_COLUMNS.join(", "),
                headers.join(", ")
            )
        })?;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("CSV: {e}"))?;
        let line = record.position().map_or(0, |p| p.line());
        let to = record.get(to_col).unwrap_or("").to_string();
        let mut params = serde_json::Map::new();
        for (i, cell) in record.iter().enumerate() {
            if i != to_col && !cell.is_empty() {
                let key = headers.get(i).cloned().unwrap_or_else(|| format!("column {}", i + 1));
                params.insert(key, Value::String(cell.to_string()));
            }
        }
        if to.is_empty() && params.is_empty() {
            continue;
        }
        out.push(Raw {
            problem: to.is_empty().then(|| format!("line {line}: no phone number nor BSUID")),
            to,
            params: if params.is_empty() {
                Value::Null
            } else {
                Value::Object(params)
            },
            source: Some(format!("line {line}")),
        });
    }
    Ok(out)
}

/// The fields an Odoo audience reads, and how a partner gives its parameters.
fn odoo_fields(params: &Value) -> Result<Vec<String>, String> {
    let mut fields: Vec<String> = vec!["name".into(), "mobile".into(), "phone".into()];
    let named: Vec<&Value> = match params {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) => o.values().collect(),
        _ => return Err("odoo.params: a list of partner fields, or a table parameter → field".into()),
    };
    for f in named {
        let f = f
            .as_str()
            .filter(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| format!("odoo.params: `{f}` is not a field name"))?;
        if !fields.iter().any(|x| x == f) {
            fields.push(f.to_string());
        }
    }
    Ok(fields)
}

/// A partner field's value as a template parameter: text, a number, a many2one's name;
/// `false` (Odoo's empty) is nothing.
fn odoo_value(v: &Value) -> Value {
    match v {
        Value::Bool(false) | Value::Null => Value::Null,
        Value::Array(a) if a.len() == 2 && a[1].is_string() => a[1].clone(),
        Value::Number(n) => Value::String(n.to_string()),
        other => other.clone(),
    }
}

/// Reads an Odoo audience: the partners of the domain, with their parameters.
pub async fn from_odoo(odoo: &crate::odoo::OdooClient, audience: &OdooAudience) -> Result<Vec<Raw>, AudienceError> {
    if !audience.domain.is_array() {
        return Err(AudienceError::Invalid(
            "odoo.domain must be a list (an Odoo domain)".into(),
        ));
    }
    let fields = odoo_fields(&audience.params).map_err(AudienceError::Invalid)?;
    let field_refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    let mut extra = json!({ "order": "id" });
    if let Some(limit) = audience.limit {
        extra["limit"] = json!(limit);
    }
    let partners = odoo
        .search_read("res.partner", audience.domain.clone(), &field_refs, extra)
        .await
        .map_err(AudienceError::Odoo)?;
    Ok(partners
        .iter()
        .map(|p| {
            let id = p["id"].as_i64().unwrap_or(0);
            let name = p["name"].as_str().unwrap_or("");
            let number = [&p["mobile"], &p["phone"]]
                .into_iter()
                .find_map(|v| v.as_str().filter(|s| !s.trim().is_empty()))
                .unwrap_or("")
                .to_string();
            let params = match &audience.params {
                Value::Array(a) => Value::Array(a.iter().map(|f| odoo_value(&p[f.as_str().unwrap_or("")])).collect()),
                Value::Object(o) => Value::Object(
                    o.iter()
                        .map(|(k, f)| (k.clone(), odoo_value(&p[f.as_str().unwrap_or("")])))
                        .filter(|(_, v)| !v.is_null())
                        .collect(),
                ),
                _ => Value::Null,
            };
            Raw {
                problem: number
                    .is_empty()
                    .then(|| format!("Odoo partner {id} ({name}) has neither a mobile nor a phone")),
                to: number,
                params,
                source: Some(format!("res.partner {id}")),
            }
        })
        .collect())
}

/// Why an audience could not be read or a campaign not created.
#[derive(Debug, thiserror::Error)]
pub enum AudienceError {
    /// The request is wrong: no audience, two audiences, bad CSV, unknown template (422).
    #[error("{0}")]
    Invalid(String),
    /// Odoo did not answer the domain's search (502).
    #[error("Odoo: {0}")]
    Odoo(crate::odoo::OdooError),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Checks each recipient as its send will be (see the module documentation): the recipients
/// to record, skipped ones with their reasons. Fails when the template itself cannot be sent
/// (unknown, rejected, disabled): then no recipient could be.
pub fn check(outbox: &Outbox, campaign: &Campaign, raw: Vec<Raw>) -> Result<Vec<CampaignRecipient>, AudienceError> {
    let store = outbox.store();
    let from = campaign.phone_number_id.as_deref();
    let origin = crate::store::campaigns::campaign_origin(campaign.id);
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        if let Some(problem) = r.problem {
            out.push(CampaignRecipient::skipped(r.to, "invalid", problem, r.source));
            continue;
        }
        let canonical = match outbox.canonical_contact(&r.to, from) {
            Ok(c) => c,
            Err(e) => {
                out.push(CampaignRecipient::skipped(r.to, "invalid", e.to_string(), r.source));
                continue;
            }
        };
        let key = store
            .conversation(&canonical)?
            .map_or_else(|| canonical.clone(), |c| c.contact);
        if let Some(first) = seen.get(&key) {
            let reason = format!("the same contact as recipient {} ({key}): sent once", first + 1);
            out.push(CampaignRecipient::skipped(r.to, "duplicate", reason, r.source));
            continue;
        }
        seen.insert(key, i);
        let mut recipient = CampaignRecipient::pending(canonical, r.params, r.source);
        match outbox.prepare(&super::request(campaign, &recipient), &origin) {
            Ok(_) => {}
            Err(crate::outbox::SendError::Invalid(v)) if v.field == "name" => {
                return Err(AudienceError::Invalid(v.reason));
            }
            Err(e) => {
                let (kind, reason) = super::skip_kind(&e);
                recipient.state = RecipientState::Skipped;
                recipient.skip = Some(kind);
                recipient.reason = Some(reason);
            }
        }
        out.push(recipient);
    }
    Ok(out)
}

/// When a campaign starts: RFC 3339 (`2026-12-01T09:00:00+00:00`), or a local time
/// `YYYY-MM-DD HH:MM[:SS]` (or with `T`) in `tz`. Unix ms.
pub fn parse_at(at: &str, tz: chrono_tz::Tz) -> Result<i64, String> {
    let at = at.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(at) {
        return Ok(t.timestamp_millis());
    }
    let formats = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ];
    let local = formats
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(at, f).ok())
        .ok_or_else(|| {
            format!("at: `{at}` is neither RFC 3339 (2026-12-01T09:00:00Z) nor a local time (2026-12-01 09:00)")
        })?;
    use chrono::TimeZone;
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => Ok(t.timestamp_millis()),
        chrono::LocalResult::Ambiguous(t, _) => Ok(t.timestamp_millis()),
        chrono::LocalResult::None => Err(format!("at: `{at}` does not exist in {tz} (a clock change)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_french_spreadsheet_csv_with_semicolons_and_a_bom_is_read() {
        let text = "\u{feff}Phone;1;2\n77 123 45 67;Awa;S00042\n;;\n;Moussa;S1\n";
        let raw = from_csv(text).unwrap();
        assert_eq!(raw.len(), 2);
        assert_eq!(raw[0].to, "77 123 45 67");
        assert_eq!(raw[0].params, json!({"1": "Awa", "2": "S00042"}));
        assert_eq!(raw[0].source.as_deref(), Some("line 2"));
        assert_eq!(raw[1].problem.as_deref(), Some("line 4: no phone number nor BSUID"));
    }

    #[test]
    fn a_csv_without_a_recipient_column_is_refused_with_the_names_it_wants() {
        let err = from_csv("name,amount\nAwa,3\n").unwrap_err();
        assert!(err.contains("to, phone, mobile, bsuid, wa_id"), "{err}");
    }

    #[test]
    fn local_times_are_read_in_the_timezone() {
        let dakar: chrono_tz::Tz = "Africa/Dakar".parse().unwrap();
        let paris: chrono_tz::Tz = "Europe/Paris".parse().unwrap();
        let utc = parse_at("2026-12-01T09:00:00Z", dakar).unwrap();
        assert_eq!(parse_at("2026-12-01 09:00", dakar).unwrap(), utc);
        assert_eq!(parse_at("2026-12-01 10:00", paris).unwrap(), utc);
        assert!(parse_at("tomorrow", dakar).unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn odoo_values_become_parameters() {
        assert_eq!(odoo_value(&json!(false)), Value::Null);
        assert_eq!(odoo_value(&json!([7, "Dakar"])), json!("Dakar"));
        assert_eq!(odoo_value(&json!(12.5)), json!("12.5"));
        assert!(odoo_fields(&json!(["name; drop"])).is_err());
        assert_eq!(
            odoo_fields(&json!({"1": "ref"})).unwrap(),
            ["name", "mobile", "phone", "ref"]
        );
    }
}
