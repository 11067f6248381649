//! Meta's webhook: payload types, the verification and delivery handlers, the durable
//! journal (group commit) and the processor that turns journaled deliveries into messages.

pub mod journal;
pub mod payload;
pub mod processor;
pub mod signature;

use bytes::Bytes;

/// Why a webhook delivery was refused; each maps to one HTTP status at the edge.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The body is over the configured limit (413).
    #[error("body over the {limit}-byte limit")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// X-Hub-Signature-256 is absent (403).
    #[error("missing X-Hub-Signature-256 header")]
    MissingSignature,
    /// X-Hub-Signature-256 does not match the body (403).
    #[error("X-Hub-Signature-256 does not match the body")]
    BadSignature,
    /// The body is not a JSON object (400).
    #[error("body is not a JSON object: {0}")]
    InvalidJson(String),
    /// The journal could not store the delivery (500: Meta will redeliver).
    #[error("could not journal the delivery: {0}")]
    Journal(String),
    /// Reading the request body failed.
    #[error("could not read the body: {0}")]
    Body(String),
}

impl WebhookError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> hyper::StatusCode {
        use hyper::StatusCode as S;
        match self {
            WebhookError::TooLarge { .. } => S::PAYLOAD_TOO_LARGE,
            WebhookError::MissingSignature | WebhookError::BadSignature => S::FORBIDDEN,
            WebhookError::InvalidJson(_) | WebhookError::Body(_) => S::BAD_REQUEST,
            WebhookError::Journal(_) => S::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Checks a delivery body before it is journaled: it must be a JSON object.
pub fn check_json(body: &Bytes) -> Result<(), WebhookError> {
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => Ok(()),
        Ok(_) => Err(WebhookError::InvalidJson("expected an object".into())),
        Err(e) => Err(WebhookError::InvalidJson(e.to_string())),
    }
}
