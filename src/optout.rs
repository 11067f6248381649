//! Opt-out, as WhatsApp's Business Policy and the law expect: a customer who asks to stop
//! receiving the business's messages is not sent them any more.
//!
//! Two scopes:
//! - **marketing**: "STOP PROMOTIONS", Meta's `user_preferences` webhook (`stop` of
//!   `marketing_messages`) or Meta's error 131050 stop MARKETING templates (and campaigns);
//! - **all**: "STOP", "ARRET", "ARRÊT", "DESABONNER" stop every message the business starts
//!   (templates, Odoo hook and cron notifications); replies to the customer's own messages
//!   inside the 24 h window still go, and `[optout] exceptions` names what goes anyway.
//!
//! A keyword is the whole message, whatever its case and accents ("je veux arrêter la
//! commande" opts nobody out). It is handled before any script (DESIGN.md, "One contact, one
//! order"): the message's scripts do not run, the blocklist entry and the confirmation are
//! committed together. "START" / "ARRET FIN" (configurable) or Meta's `resume` opt back in.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::store::MessageRecord;

/// Meta's error for a marketing template to a user who stopped marketing messages.
pub const META_MARKETING_STOPPED: i64 = 131050;

/// How far an opt-out goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Marketing templates and campaigns.
    Marketing,
    /// Every message the business starts.
    All,
}

impl Scope {
    /// `marketing` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Marketing => "marketing",
            Scope::All => "all",
        }
    }
}

/// A contact's entry in the blocklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOut {
    /// What it stops.
    pub scope: Scope,
    /// When (unix ms).
    pub since_ms: i64,
    /// Where it came from: `keyword:STOP`, `meta:user_preferences`, `meta:131050`.
    pub source: String,
}

/// What an inbound message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Stop, in this scope; the keyword as configured.
    Stop(Scope, String),
    /// Opt back in; the keyword.
    Resume(String),
}

/// The keywords and texts of `[optout]`, ready to match.
#[derive(Debug, Clone)]
pub struct OptOutRules {
    marketing: Vec<(String, String)>,
    all: Vec<(String, String)>,
    resume: Vec<(String, String)>,
    /// Template names and script names (`hooks/invoice_posted`) that go despite an opt-out
    /// of everything.
    pub exceptions: Vec<String>,
    /// The confirmation of a marketing opt-out.
    pub confirm_marketing: String,
    /// The confirmation of an opt-out of everything.
    pub confirm_all: String,
    /// The confirmation of an opt-in.
    pub confirm_resume: String,
}

/// Default confirmation of "STOP PROMOTIONS".
pub const CONFIRM_MARKETING: &str = "C'est noté : vous ne recevrez plus nos promotions. Les messages sur vos commandes et factures continuent. Écrivez START pour les recevoir à nouveau.";
/// Default confirmation of "STOP".
pub const CONFIRM_ALL: &str = "C'est noté : nous ne vous enverrons plus de messages. Vous pouvez toujours nous écrire, nous vous répondrons. Écrivez START pour recevoir à nouveau nos messages.";
/// Default confirmation of "START".
pub const CONFIRM_RESUME: &str = "C'est noté : vous recevrez à nouveau nos messages. Écrivez STOP pour les arrêter.";

/// A text as keywords compare: accents removed, upper case, spaces collapsed, surrounding
/// punctuation dropped ("  Arrêt ! " → "ARRET").
pub fn fold(text: &str) -> String {
    let stripped: String = text
        .nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .collect::<String>()
        .to_uppercase();
    let words: Vec<&str> = stripped.split_whitespace().collect();
    words
        .join(" ")
        .trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace())
        .to_string()
}

impl OptOutRules {
    /// Rules from the configuration's lists.
    pub fn new(cfg: &crate::config::OptOutConfig) -> OptOutRules {
        let folded = |list: &[String]| -> Vec<(String, String)> {
            list.iter()
                .map(|k| (fold(k), k.clone()))
                .filter(|(f, _)| !f.is_empty())
                .collect()
        };
        OptOutRules {
            marketing: folded(&cfg.marketing_keywords),
            all: folded(&cfg.keywords),
            resume: folded(&cfg.resume_keywords),
            exceptions: cfg.exceptions.clone(),
            confirm_marketing: cfg.confirm_marketing.clone(),
            confirm_all: cfg.confirm_all.clone(),
            confirm_resume: cfg.confirm_resume.clone(),
        }
    }

    /// What a text asks for, if it is a keyword.
    pub fn classify_text(&self, text: &str) -> Option<Request> {
        let f = fold(text);
        if f.is_empty() {
            return None;
        }
        let find = |list: &[(String, String)]| list.iter().find(|(k, _)| *k == f).map(|(_, orig)| orig.clone());
        // The longest lists first: "STOP PROMOTIONS" is not "STOP", "ARRET FIN" not "ARRET".
        if let Some(k) = find(&self.resume) {
            return Some(Request::Resume(k));
        }
        if let Some(k) = find(&self.marketing) {
            return Some(Request::Stop(Scope::Marketing, k));
        }
        find(&self.all).map(|k| Request::Stop(Scope::All, k))
    }

    /// What an inbound message asks for: only a typed text counts (a button's title is not a
    /// request).
    pub fn classify(&self, m: &MessageRecord) -> Option<Request> {
        if m.kind != "text" {
            return None;
        }
        let text = m
            .content
            .pointer("/text/body")
            .or_else(|| m.content.get("body"))
            .or_else(|| m.content.get("text"))
            .and_then(serde_json::Value::as_str)
            .or_else(|| m.raw.pointer("/text/body").and_then(serde_json::Value::as_str))?;
        self.classify_text(text)
    }

    /// Whether `name` (a template or a script) is an explicit exception.
    pub fn excepted(&self, name: &str) -> bool {
        self.exceptions.iter().any(|e| e == name)
    }
}

impl Default for OptOutRules {
    fn default() -> Self {
        OptOutRules::new(&crate::config::OptOutConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyword_is_the_whole_message_whatever_its_case_and_accents() {
        let r = OptOutRules::default();
        for t in [
            "STOP",
            "stop",
            " Stop ! ",
            "Arrêt",
            "ARRET",
            "arret.",
            "Désabonner",
            "DESABONNER",
        ] {
            assert!(matches!(r.classify_text(t), Some(Request::Stop(Scope::All, _))), "{t}");
        }
        assert!(matches!(
            r.classify_text("stop  promotions"),
            Some(Request::Stop(Scope::Marketing, _))
        ));
        assert!(matches!(r.classify_text("Start"), Some(Request::Resume(_))));
        assert!(matches!(r.classify_text("arrêt fin"), Some(Request::Resume(_))));
        for t in ["je veux arrêter la commande", "stop ou encore ?", "STOPPER", "", "🙂"] {
            assert_eq!(r.classify_text(t), None, "{t}");
        }
    }
}
