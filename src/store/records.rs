//! The records the store keeps, serialized as JSON inside redb values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::handover::{Handover, HelpRequest};
use crate::webhook::payload::MetaError;

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From a customer to the business.
    Inbound,
    /// From the business to a customer.
    Outbound,
}

/// One message, inbound or outbound, with its status history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRecord {
    /// walua's own id (stable, used by the admin API and the outbox).
    pub id: u64,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Meta's message id, once known.
    pub wamid: Option<String>,
    /// The conversation key (BSUID when known, else phone).
    pub contact: String,
    /// Sender (phone or BSUID) of an inbound message.
    pub from: Option<String>,
    /// Recipient (phone or BSUID) of an outbound message.
    pub to: Option<String>,
    /// Message type (`text`, `image`, `interactive`, `template`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short readable summary of the content.
    pub summary: String,
    /// Current status: `received` for inbound; `queued`, `sending`, `sent`, `delivered`,
    /// `read`, `played`, `failed` or `dry_run` for outbound. Never goes backwards.
    pub status: String,
    /// Every status received, in arrival order, with its time.
    pub statuses: Vec<StatusEntry>,
    /// Why the message failed, when it did.
    pub error: Option<ErrorInfo>,
    /// Meta's timestamp (unix seconds) for inbound, creation time for outbound.
    pub timestamp: i64,
    /// When walua stored it (unix milliseconds).
    pub stored_at_ms: i64,
    /// The journaled delivery it came from (inbound).
    pub delivery_id: Option<u64>,
    /// Typed content as JSON (inbound: parsed from Meta; outbound: the send request).
    pub content: Value,
    /// Reply / forward context.
    pub context: Option<Value>,
    /// Raw copy: Meta's message object (inbound) or the Graph API request body (outbound).
    pub raw: Value,
    /// Meta's answer to the send request (outbound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    /// Send attempts made (outbound).
    #[serde(default)]
    pub attempts: u32,
    /// Inbound media saved beside the store (path relative to the store's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_file: Option<String>,
    /// Where this message came from when a script or the API queued it (`api`, `script:NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// What the scripts did with this inbound message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<ScriptOutcome>,
    /// The business number (Graph API phone number id) that received it (inbound) or sends
    /// it (outbound), when known: walua may serve several (`[[whatsapp.accounts]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_id: Option<String>,
    /// The Odoo record an outbound message is about: its send and its failure are noted on
    /// the record's chatter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<super::chatter::RecordRef>,
}

/// The outcome of dispatching an inbound message to the scripts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScriptOutcome {
    /// The scripts that ran, in order (`scenarios/order_validation:ask`, `buttons/validate_order`).
    pub scripts: Vec<String>,
    /// The error of the failing script (file:line), if one failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Outbound messages queued.
    #[serde(default)]
    pub sent: Vec<u64>,
    /// When the dispatch ran (unix ms).
    pub at_ms: i64,
    /// The message was taken out of the dispatch queue without its scripts finishing: it
    /// wedged a Lua worker, or walua died twice while it ran. `error` says which. It is
    /// never run again by itself (`walua replay` or the API puts it back).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
    /// The scripts failed on a transient error (Odoo down): the message stays queued and
    /// runs again; never stored.
    #[serde(skip)]
    pub transient: bool,
}

/// A contact's position in a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioState {
    /// The scenario's script name.
    pub scenario: String,
    /// The current step.
    pub step: String,
    /// Variables carried through the scenario (`env.scenario.start`'s third argument, and
    /// what step code puts in them).
    pub vars: Value,
    /// When the scenario was entered or last moved (unix ms).
    pub updated_ms: i64,
    /// After this (unix ms) the scenario is over and clicks on its buttons are ignored.
    pub expires_ms: i64,
}

/// One entry of a message's status history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEntry {
    /// The status name.
    pub status: String,
    /// Meta's timestamp (unix seconds) or walua's for local transitions.
    pub timestamp: i64,
    /// Errors that came with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<MetaError>,
    /// `conversation` from the status webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Value>,
    /// `pricing` from the status webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Value>,
}

impl StatusEntry {
    /// A transition walua makes itself (`queued`, `failed`, `unknown`…), at `timestamp` (unix
    /// seconds), with no word from Meta.
    pub fn local(status: &str, timestamp: i64) -> StatusEntry {
        StatusEntry {
            status: status.into(),
            timestamp,
            errors: vec![],
            conversation: None,
            pricing: None,
        }
    }
}

/// Why a message failed, for the operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Meta's error code (0 when the failure is walua's own, e.g. validation).
    pub code: i64,
    /// Meta's title or message.
    pub title: String,
    /// Meta's details, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// What it means and what to do.
    pub explanation: String,
}

/// A conversation: everything known about one contact.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Conversation {
    /// The key: BSUID when known, else phone number.
    pub contact: String,
    /// Phone number, when known.
    pub wa_id: Option<String>,
    /// BSUID, when known.
    pub user_id: Option<String>,
    /// Parent BSUID, when known.
    pub parent_user_id: Option<String>,
    /// WhatsApp profile name.
    pub name: Option<String>,
    /// WhatsApp username (2026), when the user has one.
    pub username: Option<String>,
    /// Messages in both directions.
    pub message_count: u64,
    /// Meta timestamp (unix seconds) of the last inbound message: opens the 24 h window.
    pub last_inbound_at: Option<i64>,
    /// Unix seconds of the latest message either way.
    pub last_message_at: i64,
    /// Summary of the latest message.
    pub last_summary: String,
    /// The contact's last message to each business number (phone number id → Meta timestamp):
    /// each number has its own 24 h window. The key `""` holds a time whose number is not
    /// known (kept from before walua recorded numbers), which counts for every number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_inbound_by_number: BTreeMap<String, i64>,
    /// The agent who took the conversation over, while the scripts stay quiet (kept after it
    /// lapses, until the next take or hand-back: see [`Conversation::active_handover`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<Handover>,
    /// A script asked for a human (`env.handover`), and no agent has answered yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<HelpRequest>,
    /// Inbound messages ever stored in this conversation: with the team's seen count
    /// (`console_seen`) it gives the unread count without reading messages. Absent from
    /// records written before the console indexes; the migration at open fills it in.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inbound_total: u64,
    /// The id of the latest outbound message: "the last send failed" is one message read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outbound: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Conversation {
    /// When the contact last wrote to business number `phone_number_id` (any number when it is
    /// unknown, or for conversations stored before walua kept this per number).
    pub fn last_inbound_to(&self, phone_number_id: Option<&str>) -> Option<i64> {
        let by_number = &self.last_inbound_by_number;
        match phone_number_id {
            Some(n) if !n.is_empty() && !by_number.is_empty() => {
                by_number.get(n).copied().max(by_number.get("").copied())
            }
            _ => self.last_inbound_at,
        }
    }

    /// The business number the contact wrote to last, if known.
    pub fn last_number(&self) -> Option<&str> {
        self.last_inbound_by_number
            .iter()
            .filter(|(n, _)| !n.is_empty())
            .max_by_key(|(_, t)| **t)
            .map(|(n, _)| n.as_str())
    }

    /// Counts an inbound message at `timestamp` to business number `phone_number_id`
    /// (`None` or `""`: not known).
    pub fn inbound(&mut self, phone_number_id: Option<&str>, timestamp: i64) {
        // A conversation from before numbers were recorded: its last time is kept as "some
        // number", so that a first message to one number does not close the others' windows.
        if self.last_inbound_by_number.is_empty()
            && let Some(before) = self.last_inbound_at
        {
            self.last_inbound_by_number.insert(String::new(), before);
        }
        self.last_inbound_at = self.last_inbound_at.max(Some(timestamp));
        let t = self
            .last_inbound_by_number
            .entry(phone_number_id.unwrap_or_default().to_string())
            .or_insert(timestamp);
        *t = (*t).max(timestamp);
    }

    /// Takes in the inbound times of `old`, a conversation merged into this one.
    pub fn merge_inbound(&mut self, old: &Conversation) {
        if old.last_inbound_by_number.is_empty() {
            if let Some(t) = old.last_inbound_at {
                self.inbound(None, t);
            }
        } else {
            for (number, t) in &old.last_inbound_by_number {
                self.inbound(Some(number), *t);
            }
        }
    }
}

/// A webhook change that is not about messages, kept raw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    /// walua's id.
    pub id: u64,
    /// The webhook field (`account_update`, `message_template_status_update`, …).
    pub field: String,
    /// The change's value as received.
    pub value: Value,
    /// The delivery it came in.
    pub delivery_id: u64,
    /// When it was stored (unix milliseconds).
    pub stored_at_ms: i64,
}

/// The rank of a status in the lifecycle; a status only replaces a lower one.
pub fn status_rank(status: &str) -> Option<u8> {
    Some(match status {
        "queued" => 0,
        "sending" => 1,
        "unknown" => 2,
        "sent" => 3,
        "delivered" => 4,
        "read" => 5,
        "played" => 6,
        _ => return None,
    })
}

impl MessageRecord {
    /// Applies one status: it always joins the history (once), and becomes the current status
    /// only if it moves forward. `failed` is final.
    pub fn apply_status(&mut self, entry: StatusEntry, explain: impl Fn(i64) -> String) -> bool {
        if self.statuses.contains(&entry) {
            return false;
        }
        let current = self.status.clone();
        self.statuses.push(entry.clone());
        if current == "failed" {
            return false;
        }
        if entry.status == "failed" {
            self.status = "failed".into();
            let e = entry.errors.first();
            self.error = Some(ErrorInfo {
                code: e.map(|e| e.code).unwrap_or(0),
                title: e
                    .and_then(|e| e.title.clone().or(e.message.clone()))
                    .unwrap_or_else(|| "failed".into()),
                details: e.and_then(|e| e.details.clone()),
                explanation: match e {
                    Some(e) => explain(e.code),
                    None => "Meta reported the message as failed without an error code.".into(),
                },
            });
            return true;
        }
        match (status_rank(&current), status_rank(&entry.status)) {
            (Some(old), Some(new)) if new > old => {
                self.status = entry.status;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: &str) -> MessageRecord {
        MessageRecord {
            id: 1,
            direction: Direction::Outbound,
            wamid: Some("w".into()),
            contact: "c".into(),
            from: None,
            to: Some("c".into()),
            kind: "text".into(),
            summary: String::new(),
            status: status.into(),
            statuses: vec![],
            error: None,
            timestamp: 0,
            stored_at_ms: 0,
            delivery_id: None,
            content: Value::Null,
            context: None,
            raw: Value::Null,
            response: None,
            attempts: 0,
            media_file: None,
            origin: None,
            script: None,
            phone_number_id: None,
            record: None,
        }
    }

    #[test]
    fn each_number_has_its_own_window_and_times_from_before_numbers_count_for_all() {
        let mut fresh = Conversation::default();
        fresh.inbound(Some("111"), 100);
        assert_eq!(fresh.last_inbound_to(Some("111")), Some(100));
        assert_eq!(fresh.last_inbound_to(Some("222")), None, "never wrote to 222");
        assert_eq!(fresh.last_inbound_to(None), Some(100), "any number");

        // Stored before walua kept numbers: the customer wrote at 50, to some number.
        let mut legacy = Conversation {
            last_inbound_at: Some(50),
            ..Conversation::default()
        };
        assert_eq!(legacy.last_inbound_to(Some("111")), Some(50));
        legacy.inbound(Some("222"), 80);
        assert_eq!(legacy.last_inbound_to(Some("111")), Some(50), "still open for 111");
        assert_eq!(legacy.last_inbound_to(Some("222")), Some(80));
        assert_eq!(legacy.last_number(), Some("222"));

        // A legacy conversation merged into a recorded one brings its time along.
        let old = Conversation {
            last_inbound_at: Some(90),
            ..Conversation::default()
        };
        fresh.merge_inbound(&old);
        assert_eq!(fresh.last_inbound_to(Some("222")), Some(90));
        assert_eq!(fresh.last_inbound_to(Some("111")), Some(100));
        assert_eq!(fresh.last_number(), Some("111"));
    }

    fn st(s: &str, t: i64) -> StatusEntry {
        StatusEntry {
            status: s.into(),
            timestamp: t,
            errors: vec![],
            conversation: None,
            pricing: None,
        }
    }

    #[test]
    fn statuses_never_go_backwards_and_failed_is_final() {
        let mut r = rec("sent");
        r.apply_status(st("read", 3), |_| String::new());
        r.apply_status(st("delivered", 2), |_| String::new());
        assert_eq!(r.status, "read");
        assert_eq!(r.statuses.len(), 2);
        let mut failed = st("failed", 4);
        failed.errors.push(MetaError {
            code: 131047,
            ..MetaError::default()
        });
        r.apply_status(failed, |code| format!("why {code}"));
        r.apply_status(st("read", 5), |_| String::new());
        assert_eq!(r.status, "failed");
        assert_eq!(r.error.as_ref().unwrap().explanation, "why 131047");
        assert_eq!(r.error.as_ref().unwrap().code, 131047);
        // a redelivered status is recorded once
        assert!(!r.apply_status(st("read", 5), |_| String::new()));
        assert_eq!(r.statuses.len(), 4);
    }
}
