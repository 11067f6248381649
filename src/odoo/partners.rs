//! The partner sync: copies Odoo's partners (name, phone, mobile, archived or not, company
//! or person) into walua's index (`store::partners`) as they change, by `write_date` like a
//! write hook, so that a WhatsApp contact finds its partner without calling Odoo.
//!
//! `write_date > cursor` re-reads the partners of the cursor's last second (Odoo compares
//! microseconds, see `odoo`'s notes): applying a partner twice changes nothing. Archived
//! partners are read too (`active in [true, false]`), to take them out of the matching.
//! A partner deleted in Odoo stays in the index until walua's store is reset: Odoo keeps no
//! trace of deletions to follow (archiving is the usual way and is followed).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{OdooClient, OdooError};
use crate::store::Store;
use crate::store::partners::{PARTNER_CURSOR, PartnerRecord};

/// Partners read per call.
const PAGE: usize = 500;
/// The cursor of a first sync.
const EPOCH: &str = "1970-01-01 00:00:00";

/// Fields read from `res.partner`.
pub const FIELDS: [&str; 8] = [
    "id",
    "name",
    "phone",
    "mobile",
    "active",
    "is_company",
    "parent_id",
    "write_date",
];

/// Follows `res.partner` into the index.
#[derive(Clone)]
pub struct PartnerSync {
    /// The index.
    pub store: Store,
    /// Odoo.
    pub odoo: Arc<OdooClient>,
    /// Region of numbers written without a country code (`[whatsapp] default_country`).
    pub default_country: Option<String>,
    /// How far back each sync reads again (`odoo.rescan_window`: late commits).
    pub rescan: Duration,
    /// The last failure, for `/healthz` (cleared by the next good sync).
    pub failure: Arc<std::sync::Mutex<Option<String>>>,
}

/// A partner's number as the index keeps it, or `None` when it does not read as one.
fn number(v: &Value, region: Option<&str>) -> Option<String> {
    let text = v.as_str()?.trim();
    if text.is_empty() {
        return None;
    }
    crate::phone::normalize(text, region).ok()
}

/// A partner from Odoo's answer.
pub fn record(v: &Value, region: Option<&str>) -> Option<PartnerRecord> {
    Some(PartnerRecord {
        id: v.get("id")?.as_i64()?,
        name: v.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
        phone: number(v.get("phone").unwrap_or(&Value::Null), region),
        mobile: number(v.get("mobile").unwrap_or(&Value::Null), region),
        active: v.get("active").and_then(Value::as_bool).unwrap_or(true),
        is_company: v.get("is_company").and_then(Value::as_bool).unwrap_or(false),
        // Many2one: [id, "name"] or false.
        parent_id: v.get("parent_id").and_then(|p| p.get(0)).and_then(Value::as_i64),
        write_date: v.get("write_date").and_then(Value::as_str).unwrap_or(EPOCH).to_string(),
    })
}

impl PartnerSync {
    /// Syncs every `interval` until shutdown.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            match self.sync().await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(partners = n, "partners synced from Odoo");
                    }
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                Err(e) => {
                    let was = self
                        .failure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .replace(format!("partner sync: {e}"));
                    if was.is_none() {
                        tracing::warn!(error = %e, "partner sync failed; retrying every {interval:?}");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Reads the partners changed since the cursor and applies them, page by page. Returns
    /// how many were read.
    pub async fn sync(&self) -> Result<usize, OdooError> {
        let store = self.store.clone();
        let cursor: String = store
            .blocking(|s| s.state_get(PARTNER_CURSOR))
            .await
            .ok()
            .flatten()
            .and_then(|v| v.get("write_date").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| EPOCH.to_string());
        let mut total = 0;
        let mut offset = 0;
        let mut newest = cursor.clone();
        // Late commits carry an earlier write_date: read the last `rescan` again.
        let cursor = chrono::NaiveDateTime::parse_from_str(&cursor, "%Y-%m-%d %H:%M:%S")
            .ok()
            .map(|t| {
                (t - chrono::Duration::from_std(self.rescan).unwrap_or_default())
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or(cursor);
        loop {
            let rows = self
                .odoo
                .search_read(
                    "res.partner",
                    json!([["active", "in", [true, false]], ["write_date", ">", cursor]]),
                    &FIELDS,
                    json!({"order": "write_date, id", "limit": PAGE, "offset": offset}),
                )
                .await?;
            let n = rows.len();
            let partners: Vec<PartnerRecord> = rows
                .iter()
                .filter_map(|r| record(r, self.default_country.as_deref()))
                .collect();
            for p in &partners {
                if p.write_date > newest {
                    newest = p.write_date.clone();
                }
            }
            let next = json!({ "write_date": newest.clone() });
            let store = self.store.clone();
            let applied = partners.clone();
            store
                .blocking(move |s| s.partners_apply(&applied, &next))
                .await
                .map_err(|e| OdooError::Protocol(format!("cannot keep the partners: {e}")))?;
            total += n;
            if n < PAGE {
                break;
            }
            offset += n;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_from_odoo_keeps_its_numbers_normalised() {
        let p = record(
            &json!({"id": 7, "name": "Awa Diop", "phone": "+221 77 123 45 67", "mobile": "77 765 43 21",
                    "active": true, "is_company": false, "parent_id": [3, "Boutique Diop"],
                    "write_date": "2026-11-30 10:00:01"}),
            Some("SN"),
        )
        .unwrap();
        assert_eq!(p.phone.as_deref(), Some("221771234567"));
        assert_eq!(p.mobile.as_deref(), Some("221777654321"));
        assert_eq!(p.parent_id, Some(3));
        let q = record(
            &json!({"id": 8, "name": "X", "phone": false, "mobile": "n/a", "parent_id": false}),
            None,
        )
        .unwrap();
        assert_eq!((q.phone, q.mobile, q.parent_id), (None, None, None));
    }
}
