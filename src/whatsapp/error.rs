//! Meta's errors: parsing, operator explanations and retry classification.
//!
//! Errors reach us two ways:
//! * synchronously, as the body of a failed Graph API call:
//!   `{"error":{"message","type","code","error_subcode","error_data":{"details"},"error_user_title","fbtrace_id"}}`;
//! * asynchronously, inside a `failed` status webhook:
//!   `{"code","title","message","error_data":{"details"}}`.
//!
//! Both become a [`GraphError`]. [`explain`] turns a code into advice an
//! operator can act on, and [`classify`] decides whether the outbox should
//! retry the send later or give up.

use std::fmt;

use serde_json::Value;

/// An error reported by Meta's Graph API or in a status webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    /// Meta's numeric error code (e.g. `131047`).
    pub code: i64,
    /// The optional `error_subcode`.
    pub subcode: Option<i64>,
    /// Short title (`error_user_title`, or `title` in webhooks).
    pub title: Option<String>,
    /// Meta's error message.
    pub message: String,
    /// Extra details (`error_data.details`, or `error_user_msg`).
    pub details: Option<String>,
    /// Meta's trace id, to quote when contacting Meta support.
    pub fbtrace_id: Option<String>,
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    match v.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn int_field(v: &Value, key: &str) -> Option<i64> {
    match v.get(key) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `error_data` is usually an object with `details`, but older Graph
/// endpoints send it as a JSON-encoded string or a plain string.
fn details_of(v: &Value) -> Option<String> {
    match v.get("error_data") {
        Some(obj @ Value::Object(_)) => str_field(obj, "details"),
        Some(Value::String(s)) if !s.is_empty() => match serde_json::from_str::<Value>(s) {
            Ok(inner @ Value::Object(_)) => str_field(&inner, "details"),
            _ => Some(s.clone()),
        },
        _ => None,
    }
}

impl GraphError {
    /// Parses a Graph API error response body (`{"error":{…}}`).
    ///
    /// Returns `None` when the body is not JSON or has no `error.code`.
    pub fn from_body(body: &[u8]) -> Option<GraphError> {
        let v: Value = serde_json::from_slice(body).ok()?;
        Self::from_error_value(&v)
    }

    /// Parses an already decoded Graph API error response (`{"error":{…}}`).
    pub fn from_error_value(v: &Value) -> Option<GraphError> {
        let e = v.get("error")?;
        let code = int_field(e, "code")?;
        Some(GraphError {
            code,
            subcode: int_field(e, "error_subcode"),
            title: str_field(e, "error_user_title").or_else(|| str_field(e, "title")),
            message: str_field(e, "message").unwrap_or_default(),
            details: details_of(e).or_else(|| str_field(e, "error_user_msg")),
            fbtrace_id: str_field(e, "fbtrace_id"),
        })
    }

    /// Parses one entry of a status webhook's `errors` array
    /// (`{"code","title","message","error_data":{"details"}}`).
    ///
    /// Returns `None` when there is no numeric `code`.
    pub fn from_status_error(v: &Value) -> Option<GraphError> {
        let code = int_field(v, "code")?;
        Some(GraphError {
            code,
            subcode: int_field(v, "error_subcode"),
            title: str_field(v, "title"),
            message: str_field(v, "message")
                .or_else(|| str_field(v, "title"))
                .unwrap_or_default(),
            details: details_of(v),
            fbtrace_id: None,
        })
    }

    /// The operator explanation for this error's code (see [`explain`]).
    pub fn explanation(&self) -> &'static str {
        explain(self.code)
    }

    /// Whether this error code, on its own, indicates a transient condition
    /// (see [`classify`]).
    pub fn is_transient(&self) -> bool {
        is_transient_code(self.code)
    }
}

impl fmt::Display for GraphError {
    /// `Meta error 131047 (Re-engagement message): <message>; details: <…>. <explanation> [fbtrace_id …]`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Meta error {}", self.code)?;
        if let Some(sub) = self.subcode {
            write!(f, "/{sub}")?;
        }
        if let Some(t) = &self.title {
            write!(f, " ({t})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(d) = &self.details
            && Some(d) != self.title.as_ref()
            && *d != self.message
        {
            write!(f, "; details: {d}")?;
        }
        write!(f, ". {}", self.explanation())?;
        if let Some(t) = &self.fbtrace_id {
            write!(f, " [fbtrace_id {t}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for GraphError {}

/// Explains a Meta error code to an operator: what happened and what to do.
///
/// Unknown codes get a generic explanation pointing at Meta's error-code
/// reference.
pub fn explain(code: i64) -> &'static str {
    match code {
        0 => {
            "Authentication failed (AuthException): the access token could not be validated. Check the configured token, or generate a new permanent system-user token in Business Manager."
        }
        1 => {
            "Meta reported an unknown API error; this is usually temporary. The send will be retried; if it persists, check Meta's platform status."
        }
        2 => "Meta's API service is temporarily unavailable. The send will be retried later.",
        3 => {
            "The app lacks the capability for this API call. Check that the app has the WhatsApp product added and the whatsapp_business_messaging permission."
        }
        4 => "The app hit Meta's API call rate limit. Slow down; the send will be retried later.",
        10 => {
            "Permission denied: the token lacks a required permission or it was revoked. Grant whatsapp_business_messaging / whatsapp_business_management to the system user and regenerate the token."
        }
        100 => {
            "Invalid parameter: the request contained an unsupported, misspelled or wrongly formatted field (or an unknown phone number id). Check the message fields and the configured phone_number_id."
        }
        190 => {
            "The access token is invalid or expired (temporary tokens last 24 hours). Generate a new permanent system-user token in Meta Business Manager and update the daemon configuration."
        }
        200..=299 => {
            "API permission error: the token lacks a permission for this WhatsApp Business Account or phone number. Check the system user's assigned assets and permissions, then regenerate the token."
        }
        368 => {
            "The business account is temporarily blocked for policy violations. Review the account quality and policy notices in WhatsApp Manager; sending will fail until the block ends."
        }
        80007 => {
            "The WhatsApp Business Account reached its API rate limit. The send will be retried later; reduce the sending rate if this keeps happening."
        }
        130429 => {
            "Cloud API throughput limit reached (too many messages per second for this phone number). The send will be retried later; spread out bulk sends."
        }
        130472 => {
            "The recipient's number is part of a Meta experiment and did not receive this marketing message. Nothing to fix; do not retry now."
        }
        131000 => {
            "Meta reported a generic 'something went wrong' error. Retry later if it came with a server error; if it repeats, contact Meta support with the fbtrace_id."
        }
        131005 => {
            "Access denied: the token's permissions were revoked or do not cover this phone number. Check the system user permissions and regenerate the token."
        }
        131008 => {
            "A required parameter is missing from the request. Check the message content (Meta's details name the missing field)."
        }
        131009 => {
            "A parameter value is invalid (wrong format, unknown media id, bad URL, or a phone number not on WhatsApp). Check the details and fix the message."
        }
        131016 => {
            "A Meta service is temporarily unavailable. The send will be retried later; check Meta's platform status if it persists."
        }
        131021 => "The recipient is the sending business number itself. Send to a different number.",
        131026 => {
            "Message undeliverable: the recipient is not on WhatsApp, has not accepted the latest terms, uses an old app version, blocked you, or cannot receive this message now (e.g. outside the 24-hour window). Confirm the number is on WhatsApp, or send an approved template instead."
        }
        131030 => {
            "The recipient is not in the allowed list of a test number (the Odoo module's \"mode test\"): while the business number is a test number, Meta only delivers to up to 5 numbers added in the app's WhatsApp > API Setup. Add this number there, or send from a production number."
        }
        131050 => {
            "The recipient chose to stop receiving marketing messages from your business on WhatsApp. walua records it as an opt-out of marketing (see `opted_out`); send them utility messages only. They can opt back in from WhatsApp."
        }
        131031 => {
            "The WhatsApp Business Account is locked or restricted (policy or integrity issue, or the phone number PIN check failed). Check WhatsApp Manager and account quality; messages cannot be sent until resolved."
        }
        131037 => {
            "The business phone number needs an approved display name before it can send. Get the display name approved in WhatsApp Manager."
        }
        131042 => {
            "Business eligibility / payment issue: there is no valid payment method, the credit line is exceeded, or the account is not eligible. Fix billing in Business Manager."
        }
        131045 => {
            "The phone number is not properly registered (certificate error). Re-register the business phone number with the Cloud API."
        }
        131047 => {
            "Re-engagement message: more than 24 hours have passed since the customer last wrote, so free-form messages are not allowed. Send an approved template message instead."
        }
        131048 => {
            "Spam rate limit hit: too many of this business's messages were blocked or reported by users, so sending is restricted. Review message quality in WhatsApp Manager and slow down; do not retry immediately."
        }
        131049 => {
            "Meta chose not to deliver this marketing message to keep the user's experience healthy (per-user marketing limit). Do not retry immediately; try again later or with a different template."
        }
        131051 => "Unsupported message type. Check the message type and its fields.",
        131052 => "Meta could not download the media the user sent. Ask the user to send it again.",
        131053 => {
            "Media upload error: Meta could not fetch or process the media (URL not publicly reachable, e.g. localhost or a private network, wrong content type, or unsupported format/size). Upload the file to Meta first and send it by media id, or use a public https URL."
        }
        131056 => {
            "Pair rate limit hit: too many messages were sent to this same recipient in a short time. The send will be retried later; space out messages to the same user."
        }
        131057 => {
            "The business account is in maintenance mode (e.g. throughput upgrade in progress). The send will be retried later."
        }
        132000 => {
            "Template parameter count mismatch: the number of variables sent does not match the template definition. Check the components/parameters against the approved template."
        }
        132001 => {
            "The template does not exist in that language (or is not approved yet). Check the template name and language code in WhatsApp Manager."
        }
        132005 => "The template text is too long once the parameters are filled in. Shorten the parameter values.",
        132007 => {
            "The template content violates WhatsApp's character or format policy. Fix the template or parameter values (no newlines, tabs or more than 4 consecutive spaces in parameters)."
        }
        132012 => {
            "A template parameter has the wrong format for its type (e.g. currency, date_time, media, or URL button). Check each parameter against the template definition."
        }
        132015 => "The template is paused because of low quality ratings. Edit it or use another template.",
        132016 => "The template was disabled after repeated pauses for low quality. Create a new template.",
        133004 => "Meta's server is temporarily unavailable. The send will be retried later.",
        133010 => {
            "The business phone number is not registered with the Cloud API. Register the number (POST /{phone-number-id}/register) before sending."
        }
        135000 => {
            "Generic user error reported by Meta, often caused by an unusual parameter. Check the message content; contact Meta support with the fbtrace_id if it persists."
        }
        _ => {
            "Unrecognised Meta error code. See Meta's WhatsApp Cloud API error-code reference; the message and details above describe the problem."
        }
    }
}

/// What to do with a send that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// The failure is transient: try again later (with backoff).
    Retry,
    /// The failure is permanent for this message: give up and report it.
    Fail,
}

/// Meta codes that signal a temporary condition on Meta's side or a rate
/// limit that clears on its own:
///
/// * `1` unknown API error, `2` API service unavailable;
/// * `4` app-level call rate limit, `80007` WABA rate limit,
///   `130429` Cloud API throughput limit;
/// * `131016` service unavailable, `133004` server temporarily unavailable,
///   `131057` business account in maintenance mode;
/// * `131056` pair rate limit (too many messages to the same user).
///
/// Deliberately *not* transient: `131000` (generic; retried only when it
/// comes with an HTTP 5xx), `131048` spam rate limit (retrying makes the
/// quality problem worse) and `131049` (per-user marketing limit).
fn is_transient_code(code: i64) -> bool {
    matches!(code, 1 | 2 | 4 | 80007 | 130429 | 131016 | 131056 | 131057 | 133004)
}

/// Decides whether a failed send should be retried.
///
/// * `http_status == None` means the request never got a response
///   (connection refused, DNS, TLS, timeout): [`Disposition::Retry`]. Note a
///   timeout may hide a send Meta actually accepted; idempotency is the
///   outbox's concern.
/// * HTTP 429 (rate limited), 408 (request timeout) and any 5xx are
///   [`Disposition::Retry`] whatever the code, since Meta's servers did not
///   complete the request.
/// * A Meta code listed as transient (rate limits, service unavailable,
///   maintenance) is [`Disposition::Retry`] even on HTTP 400.
/// * Everything else — a 4xx with a definite code such as an expired token,
///   a closed 24h window or an invalid parameter, or an unexpected status —
///   is [`Disposition::Fail`]: resending the same request cannot succeed.
pub fn classify(http_status: Option<u16>, err: Option<&GraphError>) -> Disposition {
    let Some(status) = http_status else {
        return Disposition::Retry;
    };
    if err.is_some_and(GraphError::is_transient) {
        return Disposition::Retry;
    }
    if status == 429 || status == 408 || (500..=599).contains(&status) {
        return Disposition::Retry;
    }
    Disposition::Fail
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_graph_error_body() {
        let body = br#"{"error":{"message":"(#131047) Re-engagement message","type":"OAuthException","code":131047,"error_subcode":2494010,"error_data":{"messaging_product":"whatsapp","details":"Message failed to send because more than 24 hours have passed"},"error_user_title":"Re-engagement","fbtrace_id":"AbC123"}}"#;
        let e = GraphError::from_body(body).unwrap();
        assert_eq!(e.code, 131047);
        assert_eq!(e.subcode, Some(2494010));
        assert_eq!(e.title.as_deref(), Some("Re-engagement"));
        assert_eq!(e.message, "(#131047) Re-engagement message");
        assert_eq!(
            e.details.as_deref(),
            Some("Message failed to send because more than 24 hours have passed")
        );
        assert_eq!(e.fbtrace_id.as_deref(), Some("AbC123"));
        let s = e.to_string();
        assert!(s.contains("131047") && s.contains("template"), "{s}");
        assert!(s.contains("AbC123"));
    }

    #[test]
    fn parses_string_error_data_and_rejects_garbage() {
        let body = br#"{"error":{"message":"Invalid parameter","code":100,"error_data":"{\"details\":\"bad to\"}"}}"#;
        let e = GraphError::from_body(body).unwrap();
        assert_eq!(e.details.as_deref(), Some("bad to"));
        assert!(GraphError::from_body(b"<html>502</html>").is_none());
        assert!(GraphError::from_body(br#"{"error":{"message":"x"}}"#).is_none());
        assert!(GraphError::from_body(br#"{"ok":true}"#).is_none());
    }

    #[test]
    fn parses_status_error() {
        let v = json!({"code":131026,"title":"Message undeliverable","message":"Message undeliverable","error_data":{"details":"Message Undeliverable."}});
        let e = GraphError::from_status_error(&v).unwrap();
        assert_eq!(e.code, 131026);
        assert_eq!(e.title.as_deref(), Some("Message undeliverable"));
        assert_eq!(e.details.as_deref(), Some("Message Undeliverable."));
        assert!(e.fbtrace_id.is_none());
        assert!(GraphError::from_status_error(&json!({"title":"x"})).is_none());
    }

    #[test]
    fn explanations_cover_required_codes() {
        let generic = explain(987654321);
        for code in [
            0, 3, 4, 10, 100, 190, 200, 250, 299, 368, 130429, 130472, 131000, 131005, 131008, 131009, 131016, 131021,
            131026, 131031, 131037, 131042, 131045, 131047, 131048, 131049, 131051, 131052, 131053, 131056, 131057,
            132000, 132001, 132005, 132007, 132012, 132015, 132016, 133010, 135000,
        ] {
            assert_ne!(explain(code), generic, "code {code} has no explanation");
        }
        assert!(explain(131026).contains("24-hour") && explain(131026).contains("template"));
        assert!(explain(131047).contains("template"));
        assert!(explain(190).contains("system-user token"));
        assert!(explain(131053).contains("localhost") && explain(131053).contains("Upload"));
        assert!(explain(131030).contains("test number") && explain(131030).contains("allowed list"));
        assert!(explain(131050).contains("marketing") && explain(131050).contains("opt-out"));
        assert!(
            explain(131031).contains("locked"),
            "131031 is a locked account, whatever the seed says"
        );
        assert!(explain(132001).contains("language"));
        assert!(explain(132000).contains("parameter"));
    }

    fn code(c: i64) -> GraphError {
        GraphError {
            code: c,
            subcode: None,
            title: None,
            message: String::new(),
            details: None,
            fbtrace_id: None,
        }
    }

    #[test]
    fn classification() {
        use Disposition::*;
        assert_eq!(classify(None, None), Retry);
        assert_eq!(classify(Some(429), None), Retry);
        assert_eq!(classify(Some(500), None), Retry);
        assert_eq!(classify(Some(503), Some(&code(131000))), Retry);
        assert_eq!(classify(Some(400), Some(&code(131000))), Fail);
        assert_eq!(classify(Some(400), Some(&code(130429))), Retry);
        assert_eq!(classify(Some(400), Some(&code(131056))), Retry);
        assert_eq!(classify(Some(400), Some(&code(133004))), Retry);
        assert_eq!(classify(Some(400), Some(&code(80007))), Retry);
        assert_eq!(classify(Some(400), Some(&code(4))), Retry);
        assert_eq!(classify(Some(400), Some(&code(131047))), Fail);
        assert_eq!(classify(Some(401), Some(&code(190))), Fail);
        assert_eq!(classify(Some(400), Some(&code(131048))), Fail);
        assert_eq!(classify(Some(404), None), Fail);
        assert_eq!(classify(Some(400), None), Fail);
    }
}
