//! "Prendre la main" / "Rendre au bot": an agent takes a conversation over, the scripts stay
//! quiet for that contact (button actions run or not per `[console] handover_buttons`), and
//! the agent gives it back, or it lapses after `[console] handover_timeout`.
//!
//! The state is kept on the conversation (see [`crate::store::handover`]); the dispatcher
//! reads it before any script runs. Odoo hooks and cron jobs do not go through the
//! dispatcher: their sends still reach a handed-over contact.

use serde_json::{Value, json};

use crate::App;
use crate::store::{Conversation, Handover, StoreError, now_ms};

/// Why a handover could not be taken, given back or its help request dismissed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// No conversation with this contact (phone, BSUID or username).
    #[error("no conversation with {0}")]
    UnknownContact(String),
    /// The agent's name is empty: a handover says who holds the conversation.
    #[error("`by` must name the agent who takes the conversation over")]
    NoAgent,
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The conversation key form of `contact` as a person wrote it: a phone number in any usual
/// format becomes Meta's `wa_id` digits; a BSUID or username stays as it is (the store
/// resolves it through its aliases).
fn canonical(app: &App, contact: &str) -> String {
    app.outbox
        .canonical_contact(contact, None)
        .unwrap_or_else(|_| contact.trim().to_string())
}

/// Agent `by` takes the conversation of `contact` over for `[console] handover_timeout`
/// ("Prendre la main"): the scripts stop answering that contact's messages, and its help
/// request, if any, is cleared. Taking it again renews it; taking it from another agent
/// replaces them (the console shows who holds it before offering the button).
pub async fn take_over(app: &App, contact: &str, by: &str, reason: Option<String>) -> Result<Handover, HandoverError> {
    let by = by.trim().to_string();
    if by.is_empty() {
        return Err(HandoverError::NoAgent);
    }
    let key = canonical(app, contact);
    let ttl = app.config.console.handover_timeout;
    let reason = reason.map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
    let (k, agent) = (key.clone(), by.clone());
    let before = app.store.blocking(move |s| s.handover_of(&k)).await?;
    let k = key.clone();
    let conv = app
        .store
        .blocking(move |s| s.handover_take(&k, &agent, reason, ttl))
        .await?
        .ok_or_else(|| HandoverError::UnknownContact(contact.to_string()))?;
    let handover = conv.handover.expect("just taken");
    match before {
        Some(previous) if previous.by != handover.by => {
            tracing::info!(contact = %conv.contact, agent = %handover.by, previous = %previous.by, "conversation taken over from another agent")
        }
        _ => {
            tracing::info!(contact = %conv.contact, agent = %handover.by, until_ms = handover.until_ms, "conversation taken over by an agent: the scripts pause for this contact")
        }
    }
    app.live.bump();
    Ok(handover)
}

/// Gives the conversation of `contact` back to the bot ("Rendre au bot"): the next message
/// runs the scripts again (the messages received meanwhile are not replayed to them).
/// Returns whether an agent held it (a lapsed handover did not).
pub async fn give_back(app: &App, contact: &str) -> Result<bool, HandoverError> {
    let key = canonical(app, contact);
    let held = app
        .store
        .blocking(move |s| s.handover_release(&key))
        .await?
        .ok_or_else(|| HandoverError::UnknownContact(contact.to_string()))?;
    tracing::info!(contact = %contact, held, "conversation given back to the bot");
    app.live.bump();
    Ok(held)
}

/// Dismisses the help request a script made for `contact` (`env.handover`) without taking
/// the conversation over. Returns whether there was one.
pub async fn dismiss_help(app: &App, contact: &str) -> Result<bool, HandoverError> {
    let key = canonical(app, contact);
    let had = app
        .store
        .blocking(move |s| s.help_dismiss(&key))
        .await?
        .ok_or_else(|| HandoverError::UnknownContact(contact.to_string()))?;
    tracing::info!(contact = %contact, had, "help request dismissed");
    app.live.bump();
    Ok(had)
}

/// A conversation as the admin API and the console show it: its stored fields, with
/// `handover` (`null` when none holds at `now_ms`, a lapsed one included) and `help` (`null`
/// when no script asked for a human) always present.
pub fn conversation_json(conv: &Conversation, now_ms: i64) -> Value {
    let mut v = json!(conv);
    v["handover"] = json!(conv.active_handover(now_ms));
    v["help"] = json!(conv.help);
    v
}

/// Adds the contact's Odoo partner to its JSON (DESIGN.md, contacts as JSON): `partner_id`,
/// `partner_name` (null when no partner matches) and `partner_ambiguous` (the other partners
/// with the same number).
pub fn add_partner(v: &mut Value, partner: Option<&crate::store::partners::PartnerMatch>) {
    v["partner_id"] = json!(partner.map(|p| p.id));
    v["partner_name"] = json!(partner.map(|p| p.name.clone()));
    v["partner_ambiguous"] = json!(partner.map(|p| p.ambiguous.clone()).unwrap_or_default());
}

/// Adds the contact's opt-out to its JSON (DESIGN.md, contacts as JSON): `opted_out` is
/// `{scope, since_ms, source}` or null.
pub fn add_optout(v: &mut Value, optout: Option<&crate::optout::OptOut>) {
    v["opted_out"] = json!(optout);
}

/// [`conversation_json`] for every conversation of a list, at the current time.
pub fn conversations_json(convs: &[Conversation]) -> Vec<Value> {
    let now = now_ms();
    convs.iter().map(|c| conversation_json(c, now)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HelpRequest;

    #[test]
    fn a_lapsed_handover_shows_as_null_and_both_fields_are_always_there() {
        let conv = Conversation {
            contact: "221771234567".into(),
            handover: Some(Handover {
                by: "Fatou".into(),
                since_ms: 1_000,
                until_ms: 2_000,
                reason: Some("réclamation".into()),
            }),
            ..Conversation::default()
        };
        let held = conversation_json(&conv, 1_500);
        assert_eq!(held["handover"]["by"], "Fatou");
        assert_eq!(held["handover"]["reason"], "réclamation");
        assert!(held["help"].is_null());
        assert!(held.as_object().unwrap().contains_key("help"));
        let lapsed = conversation_json(&conv, 2_000);
        assert!(lapsed["handover"].is_null());
        assert!(lapsed.as_object().unwrap().contains_key("handover"));

        let asked = Conversation {
            help: Some(HelpRequest {
                reason: "le client demande un humain".into(),
                at_ms: 3,
                by_script: "on_message".into(),
            }),
            ..Conversation::default()
        };
        assert_eq!(conversation_json(&asked, 0)["help"]["by_script"], "on_message");
    }
}
