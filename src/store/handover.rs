//! Human handover: an agent takes a conversation over ("Prendre la main") and the scripts
//! stay quiet for that contact until the agent gives it back or the handover lapses; a
//! script may ask for a human (`env.handover(reason)`), which flags the conversation until an
//! agent takes it over or dismisses the request.
//!
//! Both live on the [`Conversation`] itself (`handover`, `help`), so they move with it when
//! walua merges a phone-keyed conversation into the BSUID one, and the dispatcher reads them
//! with the conversation it already reads for each message.

use std::time::Duration;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{
    CONTACT_ALIASES, CONVERSATIONS, Conversation, Result, Store, decode, normalize_contact, now_ms, resolve_alias,
};

/// An agent holds the conversation: scripts do not answer the contact's messages (button
/// actions run or not, per `[console] handover_buttons`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// The agent who took it over (their console name).
    pub by: String,
    /// When they took it over (unix ms).
    pub since_ms: i64,
    /// When it lapses by itself and the bot answers again (unix ms): `since_ms` plus
    /// `[console] handover_timeout`, so a forgotten conversation does not stay silent.
    pub until_ms: i64,
    /// Why, as the agent wrote it (shown in the console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Handover {
    /// Whether the handover still holds at `now_ms` (it lapses at `until_ms`).
    pub fn active_at(&self, now_ms: i64) -> bool {
        now_ms < self.until_ms
    }
}

/// A script asked for a human (`env.handover(reason)`): the console shows the conversation as
/// waiting for an agent until one takes it over or dismisses the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelpRequest {
    /// Why, as the script put it ("le client demande un humain").
    pub reason: String,
    /// When it was asked (unix ms).
    pub at_ms: i64,
    /// The script that asked (`on_message`, `buttons/validate_order`).
    pub by_script: String,
}

impl Conversation {
    /// The handover that holds at `now_ms`, if any (a lapsed one is ignored).
    pub fn active_handover(&self, now_ms: i64) -> Option<&Handover> {
        self.handover.as_ref().filter(|h| h.active_at(now_ms))
    }

    /// Takes in the handover and help request of `old`, a conversation merged into this one:
    /// the later of each wins.
    pub fn merge_handover(&mut self, old: &Conversation) {
        if let Some(h) = &old.handover
            && self.handover.as_ref().is_none_or(|mine| mine.since_ms < h.since_ms)
        {
            self.handover = Some(h.clone());
        }
        if let Some(r) = &old.help
            && self.help.as_ref().is_none_or(|mine| mine.at_ms < r.at_ms)
        {
            self.help = Some(r.clone());
        }
    }
}

impl Store {
    /// Changes the conversation of `contact` (phone in any format, BSUID or username) in one
    /// write transaction; `None` when there is no such conversation.
    fn update_conversation<T>(
        &self,
        contact: &str,
        change: impl FnOnce(&mut Conversation) -> T,
    ) -> Result<Option<(Conversation, T)>> {
        let txn = self.db()?.begin_write()?;
        let result = {
            let aliases = txn.open_table(CONTACT_ALIASES)?;
            let mut conversations = txn.open_table(CONVERSATIONS)?;
            let key = resolve_alias(&aliases, contact)?.unwrap_or_else(|| normalize_contact(contact));
            let found: Option<Conversation> = conversations
                .get(key.as_str())?
                .map(|v| decode("conversations", v.value()))
                .transpose()?;
            match found {
                None => None,
                Some(mut conv) => {
                    let out = change(&mut conv);
                    let mut idx = super::inbox::ConvIndex::open(&txn)?;
                    super::inbox::write_conversation(&mut conversations, &mut idx, &conv)?;
                    Some((conv, out))
                }
            }
        };
        match result {
            Some(r) => {
                txn.commit()?;
                Ok(Some(r))
            }
            None => {
                txn.abort()?;
                Ok(None)
            }
        }
    }

    /// Agent `by` takes the conversation of `contact` over for `ttl` (renewed when they
    /// already hold it): its help request, if any, is answered and cleared. Returns the
    /// conversation, or `None` when there is no conversation with `contact`.
    pub fn handover_take(
        &self,
        contact: &str,
        by: &str,
        reason: Option<String>,
        ttl: Duration,
    ) -> Result<Option<Conversation>> {
        let now = now_ms();
        let handover = Handover {
            by: by.to_string(),
            since_ms: now,
            until_ms: now.saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64),
            reason,
        };
        Ok(self
            .update_conversation(contact, move |c| {
                c.handover = Some(handover);
                c.help = None;
            })?
            .map(|(c, ())| c))
    }

    /// Gives the conversation of `contact` back to the bot. `Some(true)` when an agent held it
    /// (a lapsed handover counts as not held), `Some(false)` when none did, `None` when there
    /// is no conversation with `contact`.
    pub fn handover_release(&self, contact: &str) -> Result<Option<bool>> {
        let now = now_ms();
        Ok(self
            .update_conversation(contact, move |c| c.handover.take().is_some_and(|h| h.active_at(now)))?
            .map(|(_, held)| held))
    }

    /// The handover of `contact` that holds now; `None` when there is none, it lapsed, or
    /// there is no such conversation.
    pub fn handover_of(&self, contact: &str) -> Result<Option<Handover>> {
        let now = now_ms();
        Ok(self
            .conversation(contact)?
            .and_then(|c| c.active_handover(now).cloned()))
    }

    /// Flags the conversation of `contact` as needing a human, asked by `script`. Returns
    /// whether the conversation exists. Scripts' requests are committed with their run
    /// instead (see [`super::ScriptCommit::help`]).
    pub fn help_request(&self, contact: &str, reason: &str, script: &str) -> Result<bool> {
        let request = HelpRequest {
            reason: reason.to_string(),
            at_ms: now_ms(),
            by_script: script.to_string(),
        };
        Ok(self
            .update_conversation(contact, move |c| c.help = Some(request))?
            .is_some())
    }

    /// Dismisses the help request of `contact` without taking the conversation over.
    /// `Some(true)` when there was one, `Some(false)` when not, `None` when there is no
    /// conversation with `contact`.
    pub fn help_dismiss(&self, contact: &str) -> Result<Option<bool>> {
        Ok(self
            .update_conversation(contact, |c| c.help.take().is_some())?
            .map(|(_, had)| had))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(contact: &str) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("walua.redb")).unwrap();
        // An outbound message creates the conversation, as a first send does.
        let outbox = crate::outbox::Outbox::new(store.clone(), Default::default(), true, false);
        let req: crate::outbox::SendRequest =
            serde_json::from_value(serde_json::json!({ "to": contact, "type": "text", "text": "Bonjour" })).unwrap();
        let new = outbox.prepare(&req, "test").unwrap();
        store
            .commit_script_runs(&super::super::ScriptCommit {
                sends: vec![new],
                ..Default::default()
            })
            .unwrap();
        (dir, store)
    }

    #[test]
    fn an_agent_takes_a_conversation_over_then_gives_it_back() {
        let (_dir, store) = store_with("221771234567");
        assert!(
            store
                .help_request("+221 77 123 45 67", "le client demande un humain", "on_message")
                .unwrap()
        );
        let conv = store
            .handover_take(
                "221771234567",
                "Fatou",
                Some("réclamation".into()),
                Duration::from_secs(3600),
            )
            .unwrap()
            .expect("the conversation exists");
        let h = conv.handover.clone().unwrap();
        assert_eq!(h.by, "Fatou");
        assert_eq!(h.until_ms - h.since_ms, 3_600_000);
        assert_eq!(conv.help, None, "taking over answers the request for help");
        assert_eq!(store.handover_of("+221771234567").unwrap(), Some(h));
        assert_eq!(store.handover_release("221771234567").unwrap(), Some(true));
        assert_eq!(store.handover_of("221771234567").unwrap(), None);
        assert_eq!(store.handover_release("221771234567").unwrap(), Some(false));
    }

    #[test]
    fn a_handover_lapses_by_itself() {
        let (_dir, store) = store_with("221771234567");
        store
            .handover_take("221771234567", "Fatou", None, Duration::ZERO)
            .unwrap()
            .unwrap();
        assert_eq!(store.handover_of("221771234567").unwrap(), None);
        assert_eq!(
            store.handover_release("221771234567").unwrap(),
            Some(false),
            "a lapsed handover is not held"
        );
    }

    #[test]
    fn unknown_contacts_are_told_apart() {
        let (_dir, store) = store_with("221771234567");
        assert!(
            store
                .handover_take("221700000000", "Fatou", None, Duration::from_secs(60))
                .unwrap()
                .is_none()
        );
        assert_eq!(store.handover_release("221700000000").unwrap(), None);
        assert_eq!(store.help_dismiss("221700000000").unwrap(), None);
        assert!(!store.help_request("221700000000", "?", "on_message").unwrap());
        assert_eq!(store.help_dismiss("221771234567").unwrap(), Some(false));
    }

    #[test]
    fn a_merged_conversation_keeps_the_latest_handover_and_help_request() {
        let held = Handover {
            by: "Fatou".into(),
            since_ms: 10,
            until_ms: 100,
            reason: None,
        };
        let old = Conversation {
            handover: Some(held.clone()),
            help: Some(HelpRequest {
                reason: "humain".into(),
                at_ms: 5,
                by_script: "on_message".into(),
            }),
            ..Conversation::default()
        };
        let mut into = Conversation::default();
        into.merge_handover(&old);
        assert_eq!(into.handover, Some(held));
        assert_eq!(into.help.as_ref().map(|h| h.at_ms), Some(5));
        let newer = Conversation {
            handover: Some(Handover {
                by: "Awa".into(),
                since_ms: 20,
                until_ms: 200,
                reason: None,
            }),
            ..Conversation::default()
        };
        into.merge_handover(&newer);
        assert_eq!(into.handover.as_ref().map(|h| h.by.as_str()), Some("Awa"));
        assert!(into.active_handover(199).is_some());
        assert!(into.active_handover(200).is_none());
    }
}
