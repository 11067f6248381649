//! The opt-out blocklist (see [`crate::optout`]): one entry per conversation, written in the
//! transaction of what caused it (the keyword's dispatch, the status webhook, the webhook of
//! Meta's preferences).

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{CONTACT_ALIASES, Result, Store, Tables, decode, encode, resolve_alias};

use crate::optout::{OptOut, Scope};

/// Conversation key → JSON [`OptOut`].
pub(super) const OPTOUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("optouts");

impl Store {
    /// The opt-out of a contact (any form of its id), if any.
    pub fn optout_of(&self, contact: &str) -> Result<Option<OptOut>> {
        let txn = self.db()?.begin_read()?;
        let key = resolve_alias(&txn.open_table(CONTACT_ALIASES)?, contact)?.unwrap_or_else(|| contact.to_string());
        let table = txn.open_table(OPTOUTS)?;
        let row = table.get(key.as_str())?;
        row.map(|v| decode("optouts", v.value())).transpose()
    }

    /// Every opt-out, by conversation key.
    pub fn optouts(&self) -> Result<Vec<(String, OptOut)>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(OPTOUTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), decode("optouts", v.value())?));
        }
        Ok(out)
    }
}

impl Tables<'_> {
    /// Sets (or clears, `None`) the opt-out of conversation `key`. A marketing opt-out never
    /// narrows an opt-out of everything.
    pub(super) fn optout_set(&mut self, key: &str, entry: Option<OptOut>) -> Result<()> {
        let table = &mut self.optouts;
        let current = match table.get(key)? {
            Some(v) => Some(decode::<OptOut>("optouts", v.value())?),
            None => None,
        };
        match entry {
            Some(e) => {
                if e.scope == Scope::Marketing && current.as_ref().is_some_and(|c| c.scope == Scope::All) {
                    return Ok(());
                }
                table.insert(key, encode(&e).as_slice())?;
                self.campaign_opted_out(key)?;
            }
            None => {
                table.remove(key)?;
            }
        }
        Ok(())
    }

    /// Clears a marketing opt-out only (Meta's `resume` of marketing messages).
    pub(super) fn optout_resume_marketing(&mut self, key: &str) -> Result<()> {
        let table = &mut self.optouts;
        let current = match table.get(key)? {
            Some(v) => Some(decode::<OptOut>("optouts", v.value())?),
            None => None,
        };
        if current.is_some_and(|c| c.scope == Scope::Marketing) {
            table.remove(key)?;
        }
        Ok(())
    }

    /// The conversation key of `contact` (phone or BSUID) as this transaction sees it.
    pub(super) fn key_of(&self, contact: &str) -> Result<Option<String>> {
        resolve_alias(&self.aliases, contact)
    }
}

impl Tables<'_> {
    /// Meta's `user_preferences` webhook: `stop` of `marketing_messages` opts the user out of
    /// marketing, `resume` back in. The user is found by `wa_id`, or through the change's
    /// contacts (BSUID).
    pub(super) fn apply_user_preferences(&mut self, value: &serde_json::Value) -> Result<()> {
        let contacts = value
            .get("contacts")
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default();
        for pref in value
            .get("user_preferences")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
        {
            if pref.get("category").and_then(serde_json::Value::as_str) != Some("marketing_messages") {
                continue;
            }
            let mut ids: Vec<String> = Vec::new();
            if let Some(w) = pref.get("wa_id").and_then(serde_json::Value::as_str) {
                ids.push(w.to_string());
            }
            for c in &contacts {
                for f in ["user_id", "wa_id"] {
                    if let Some(v) = c.get(f).and_then(serde_json::Value::as_str) {
                        ids.push(v.to_string());
                    }
                }
            }
            let mut key = None;
            for id in &ids {
                if let Some(k) = self.key_of(id)? {
                    key = Some(k);
                    break;
                }
            }
            // A user walua never talked to: kept under the number Meta gave, so that a later
            // first contact finds it.
            let Some(key) = key.or_else(|| ids.first().map(|i| super::normalize_contact(i))) else {
                continue;
            };
            let since_ms = pref
                .get("timestamp")
                .and_then(|t| t.as_i64().or_else(|| t.as_str().and_then(|s| s.parse().ok())))
                .map(|t| t * 1000)
                .unwrap_or_else(super::now_ms);
            match pref.get("value").and_then(serde_json::Value::as_str) {
                Some("stop") => {
                    let entry = OptOut {
                        scope: Scope::Marketing,
                        since_ms,
                        source: "meta:user_preferences".into(),
                    };
                    self.optout_set(&key, Some(entry))?;
                    tracing::info!(contact = %key, "Meta: the user stopped marketing messages");
                }
                Some("resume") => {
                    self.optout_resume_marketing(&key)?;
                    tracing::info!(contact = %key, "Meta: the user resumed marketing messages");
                }
                _ => {}
            }
        }
        Ok(())
    }
}
