//! walua's index of Odoo's partners by normalised phone number.
//!
//! Odoo 16 stores phone numbers as typed (`+221 77 123 45 67`, `77 123 45 67`…), so a domain
//! cannot find a partner by a WhatsApp number, and one Odoo call per message would be too
//! many. The partner sync (`odoo::partners`) copies each partner's name, numbers and state
//! here as they change in Odoo (by `write_date`, like a write hook); a contact is linked to
//! its partner by a local lookup.
//!
//! **Which partner, when several match** (the rule the README documents): archived partners
//! are ignored; then an individual wins over a company (the person who writes is the
//! contact; the company is their commercial partner); then a number found in `mobile` wins
//! over one in `phone`; then the oldest record (lowest id). The others are reported as
//! `partner_ambiguous`.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Result, STATE, Store, decode, encode};

/// Partners walua knows: Odoo id → JSON [`PartnerRecord`].
pub(super) const PARTNERS: TableDefinition<i64, &[u8]> = TableDefinition::new("partners");
/// (normalised number, partner id) → 1 when the number is the partner's `mobile`, 0 for
/// `phone`.
pub(super) const PARTNER_NUMBERS: TableDefinition<(&str, i64), u8> = TableDefinition::new("partner_numbers");
/// `STATE` key of the sync's cursor.
pub const PARTNER_CURSOR: &str = "partners:cursor";

/// One partner as the index keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartnerRecord {
    /// Odoo's id.
    pub id: i64,
    /// Its display name.
    pub name: String,
    /// `phone`, normalised (`wa_id` digits), when it reads as a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// `mobile`, normalised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    /// Archived partners are kept (to notice their return) but never matched.
    pub active: bool,
    /// A company (not a person).
    pub is_company: bool,
    /// The company a contact belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<i64>,
    /// Odoo's `write_date` of this version.
    pub write_date: String,
}

/// A contact's partner.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartnerMatch {
    /// The chosen partner's id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The other active partners with the same number (empty when the match is unique).
    pub ambiguous: Vec<i64>,
}

impl Store {
    /// Applies a page of partners from Odoo and moves the sync's cursor, in one transaction.
    pub fn partners_apply(&self, partners: &[PartnerRecord], cursor: &serde_json::Value) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut table = txn.open_table(PARTNERS)?;
            let mut numbers = txn.open_table(PARTNER_NUMBERS)?;
            for p in partners {
                let old = match table.get(p.id)? {
                    Some(v) => Some(decode::<PartnerRecord>("partners", v.value())?),
                    None => None,
                };
                if let Some(old) = old {
                    for n in [old.phone.as_deref(), old.mobile.as_deref()].into_iter().flatten() {
                        numbers.remove((n, p.id))?;
                    }
                }
                if let Some(n) = &p.phone {
                    numbers.insert((n.as_str(), p.id), 0)?;
                }
                if let Some(n) = &p.mobile {
                    numbers.insert((n.as_str(), p.id), 1)?;
                }
                table.insert(p.id, encode(p).as_slice())?;
            }
            txn.open_table(STATE)?
                .insert(PARTNER_CURSOR, encode(cursor).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// How many partners the index holds.
    pub fn partners_count(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        let txn = self.db()?.begin_read()?;
        Ok(txn.open_table(PARTNERS)?.len()?)
    }

    /// The number to send to Odoo partner `id`: its mobile, else its phone (`None` when the
    /// partner is unknown, archived or has no number).
    pub fn partner_number(&self, id: i64) -> Result<Option<String>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(PARTNERS)?;
        let row = table.get(id)?;
        let p: Option<PartnerRecord> = row.map(|v| decode("partners", v.value())).transpose()?;
        Ok(p.filter(|p| p.active).and_then(|p| p.mobile.or(p.phone)))
    }

    /// The partner of phone number `number` (`wa_id` digits) by the rule of this module.
    pub fn partner_for_number(&self, number: &str) -> Result<Option<PartnerMatch>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(PARTNERS)?;
        let numbers = txn.open_table(PARTNER_NUMBERS)?;
        partner_match(&table, &numbers, number)
    }

    /// The partner of a conversation: through its phone number, the one seen earlier for a
    /// contact now known by its BSUID.
    pub fn partner_for_contact(&self, conv: &super::Conversation) -> Result<Option<PartnerMatch>> {
        match conv.wa_id.as_deref() {
            Some(n) => self.partner_for_number(n),
            None => Ok(None),
        }
    }
}

impl super::Tables<'_> {
    /// Queues the chatter note of inbound message `id` on its contact's partner, if linked.
    pub(super) fn note_inbound_for_partner(&mut self, txn: &redb::WriteTransaction, id: u64) -> Result<()> {
        let Some(m) = self.get_message(id)? else {
            return Ok(());
        };
        let Some(number) = self.get_conversation(&m.contact)?.and_then(|c| c.wa_id) else {
            return Ok(());
        };
        let found = partner_match(&txn.open_table(PARTNERS)?, &txn.open_table(PARTNER_NUMBERS)?, &number)?;
        if let Some(p) = found {
            let text = format!(
                "Message WhatsApp reçu de {} :\n{}",
                super::readable_contact(&number),
                m.content
                    .get("text")
                    .and_then(|t| t.get("body").or(Some(t)))
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(&m.summary)
            );
            let record = super::chatter::RecordRef {
                model: "res.partner".into(),
                id: p.id,
            };
            self.queue_chatter(super::chatter::ChatterNote::new(record, text, None))?;
        }
        Ok(())
    }
}

/// The rule, on open tables.
pub(super) fn partner_match(
    table: &impl ReadableTable<i64, &'static [u8]>,
    numbers: &impl ReadableTable<(&'static str, i64), u8>,
    number: &str,
) -> Result<Option<PartnerMatch>> {
    let mut candidates: Vec<(PartnerRecord, bool)> = Vec::new();
    for row in numbers.range((number, i64::MIN)..=(number, i64::MAX))? {
        let (k, mobile) = row?;
        let id = k.value().1;
        if let Some(v) = table.get(id)? {
            let p: PartnerRecord = decode("partners", v.value())?;
            if p.active {
                candidates.push((p, mobile.value() == 1));
            }
        }
    }
    candidates.sort_by_key(|(p, mobile)| (p.is_company, !*mobile, p.id));
    candidates.dedup_by_key(|(p, _)| p.id);
    let mut it = candidates.into_iter();
    Ok(it.next().map(|(p, _)| PartnerMatch {
        id: p.id,
        name: p.name,
        ambiguous: it.map(|(p, _)| p.id).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partner(id: i64, name: &str, phone: Option<&str>, mobile: Option<&str>, company: bool) -> PartnerRecord {
        PartnerRecord {
            id,
            name: name.into(),
            phone: phone.map(str::to_string),
            mobile: mobile.map(str::to_string),
            active: true,
            is_company: company,
            parent_id: None,
            write_date: "2026-11-30 10:00:00".into(),
        }
    }

    #[test]
    fn the_contact_wins_over_its_company_and_the_rest_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut awa = partner(12, "Awa Diop", Some("221771234567"), None, false);
        awa.parent_id = Some(7);
        store
            .partners_apply(
                &[
                    partner(7, "Boutique Diop SARL", Some("221771234567"), None, true),
                    awa,
                    partner(30, "Awa (ancien)", None, Some("221771234567"), false),
                ],
                &serde_json::json!({}),
            )
            .unwrap();
        let m = store.partner_for_number("221771234567").unwrap().unwrap();
        // 30 has it as mobile: an individual with the number in `mobile` comes first.
        assert_eq!(m.id, 30);
        assert_eq!(m.ambiguous, vec![12, 7]);
        // Archived, it no longer matches; a changed number moves the index.
        let mut gone = partner(30, "Awa (ancien)", None, Some("221771234567"), false);
        gone.active = false;
        let mut moved = partner(12, "Awa Diop", Some("221770000000"), None, false);
        moved.parent_id = Some(7);
        store.partners_apply(&[gone, moved], &serde_json::json!({})).unwrap();
        let m = store.partner_for_number("221771234567").unwrap().unwrap();
        assert_eq!((m.id, m.ambiguous.clone()), (7, vec![]));
        assert_eq!(store.partner_for_number("221770000000").unwrap().unwrap().id, 12);
        assert!(store.partner_for_number("221779999999").unwrap().is_none());
    }
}
