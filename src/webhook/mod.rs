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
    /// The journal could not store the delivery (503: Meta will redeliver).
    #[error("could not journal the delivery: {0}")]
    Journal(String),
    /// Reading the request body failed (400).
    #[error("could not read the body: {0}")]
    Body(String),
    /// The body did not arrive within `server.body_read_timeout` (408).
    #[error("the body was not received within {0:?} (server.body_read_timeout)")]
    BodyTimeout(std::time::Duration),
}

impl WebhookError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> hyper::StatusCode {
        use hyper::StatusCode as S;
        match self {
            WebhookError::TooLarge { .. } => S::PAYLOAD_TOO_LARGE,
            WebhookError::MissingSignature | WebhookError::BadSignature => S::FORBIDDEN,
            WebhookError::InvalidJson(_) | WebhookError::Body(_) => S::BAD_REQUEST,
            // Meta redelivers on any non-200; 503 says it is temporary (a full disk).
            WebhookError::Journal(_) => S::SERVICE_UNAVAILABLE,
            WebhookError::BodyTimeout(_) => S::REQUEST_TIMEOUT,
        }
    }
}

/// Checks a delivery body before it is journaled: it must be a JSON object.
pub fn check_json(body: &Bytes) -> Result<(), WebhookError> {
    // A delivery is acknowledged only if the processor will be able to read it, so this
    // accepts exactly what [`parse_body`] parses. A skip-only check (serde's IgnoredAny) let
    // through invalid UTF-8 and out-of-range numbers such as `1e555`, which were then
    // acknowledged but unreadable (found by cargo-fuzz). [`Validated`] reads every value as
    // `Value` would (strings decoded, numbers converted) without building it; a body it
    // refuses takes the full path, which also repairs lone surrogate escapes.
    if let Err(e) = std::str::from_utf8(body) {
        return Err(WebhookError::InvalidJson(format!("not UTF-8: {e}")));
    }
    if serde_json::from_slice::<Validated>(body).is_ok_and(|v| v.object) {
        return Ok(());
    }
    match parse_body(body) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(WebhookError::InvalidJson("expected an object".into())),
        Err(e) => Err(WebhookError::InvalidJson(e.to_string())),
    }
}

/// A JSON document read through without being built: deserializing it checks what
/// deserializing a `serde_json::Value` checks. `object` says whether it is an object.
struct Validated {
    object: bool,
}

impl<'de> serde::Deserialize<'de> for Validated {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValidatedVisitor)
    }
}

struct ValidatedVisitor;

impl<'de> serde::de::Visitor<'de> for ValidatedVisitor {
    type Value = Validated;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Validated, E> {
        Ok(Validated { object: false })
    }
    fn visit_i64<E>(self, _: i64) -> Result<Validated, E> {
        Ok(Validated { object: false })
    }
    fn visit_u64<E>(self, _: u64) -> Result<Validated, E> {
        Ok(Validated { object: false })
    }
    fn visit_f64<E>(self, _: f64) -> Result<Validated, E> {
        Ok(Validated { object: false })
    }
    fn visit_str<E>(self, _: &str) -> Result<Validated, E> {
        Ok(Validated { object: false })
    }
    fn visit_unit<E>(self) -> Result<Validated, E> {
        Ok(Validated { object: false })
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Validated, A::Error> {
        while seq.next_element::<Validated>()?.is_some() {}
        Ok(Validated { object: false })
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Validated, A::Error> {
        while map.next_key::<Validated>()?.is_some() {
            map.next_value::<Validated>()?;
        }
        Ok(Validated { object: true })
    }
}

/// Parses a journaled delivery body into JSON, as the processor does.
///
/// serde_json's strict `Value` parser refuses escaped lone UTF-16 surrogates (`"\ud83d"`
/// alone, e.g. an emoji cut in half), which Meta's JSON encoder can produce: such a
/// delivery is accepted, each lone surrogate escape replaced with U+FFFD. (Found by the
/// `parse_delivery` fuzz target.)
pub fn parse_body(body: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(e) => {
            // Bodies journaled before check_json validated UTF-8 are read lossily.
            let text = String::from_utf8_lossy(body);
            let fixed = replace_lone_surrogates(text.as_bytes());
            match (fixed, text) {
                (Some(fixed), _) => serde_json::from_slice(&fixed),
                (None, std::borrow::Cow::Owned(t)) => serde_json::from_str(&t),
                (None, std::borrow::Cow::Borrowed(_)) => Err(e),
            }
        }
    }
}

/// `body` with every `\uXXXX` escape of a lone surrogate replaced by `\ufffd`; `None` when
/// there is none.
fn replace_lone_surrogates(body: &[u8]) -> Option<Vec<u8>> {
    fn hex4(b: &[u8]) -> Option<u16> {
        let s = std::str::from_utf8(b.get(..4)?).ok()?;
        u16::from_str_radix(s, 16).ok()
    }
    let mut out = Vec::with_capacity(body.len());
    let mut changed = false;
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'\\' {
            out.push(body[i]);
            i += 1;
            continue;
        }
        match body.get(i + 1) {
            Some(b'u') => match hex4(&body[i + 2..]) {
                Some(0xD800..=0xDBFF) => {
                    let low = (body.get(i + 6) == Some(&b'\\') && body.get(i + 7) == Some(&b'u'))
                        .then(|| hex4(&body[i + 8..]))
                        .flatten();
                    if matches!(low, Some(0xDC00..=0xDFFF)) {
                        out.extend_from_slice(&body[i..i + 12]);
                        i += 12;
                    } else {
                        out.extend_from_slice(b"\\ufffd");
                        changed = true;
                        i += 6;
                    }
                }
                Some(0xDC00..=0xDFFF) => {
                    out.extend_from_slice(b"\\ufffd");
                    changed = true;
                    i += 6;
                }
                _ => {
                    out.extend_from_slice(&body[i..(i + 2).min(body.len())]);
                    i += 2;
                }
            },
            Some(_) => {
                out.extend_from_slice(&body[i..i + 2]);
                i += 2;
            }
            None => {
                out.push(b'\\');
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_are_accepted_and_replaced() {
        let body = br#"{"a":"x\ud83d y","b":"\ude00","c":"\ud83d\ude00","d":"\\ud800"}"#;
        assert!(check_json(&Bytes::from_static(body)).is_ok());
        let v = parse_body(body).unwrap();
        assert_eq!(v["a"], "x\u{fffd} y");
        assert_eq!(v["b"], "\u{fffd}");
        assert_eq!(v["c"], "😀");
        assert_eq!(v["d"], "\\ud800");
        assert!(parse_body(b"{nope").is_err());
        assert!(check_json(&Bytes::from_static(b"{\"objey\": [-65555e55555]}")).is_err());
        assert!(check_json(&Bytes::from_static(b"{\"a\":\"\xff\"}")).is_err());
        assert_eq!(parse_body(b"{\"a\":\"\xff\"}").unwrap()["a"], "\u{fffd}");
    }
}
