//! X-Hub-Signature-256: HMAC-SHA256 of the raw body keyed with the app secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::WebhookError;

/// Verifies `header` (`sha256=<hex>`) against `body`, in constant time.
pub fn verify(app_secret: &[u8], body: &[u8], header: Option<&[u8]>) -> Result<(), WebhookError> {
    verify_any([app_secret], body, header)
}

/// Verifies `header` against `body` with each of `app_secrets` in turn (one per Meta app
/// when walua serves numbers of several apps); each comparison is in constant time.
pub fn verify_any<'a>(
    app_secrets: impl IntoIterator<Item = &'a [u8]>,
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let hex_part = header.strip_prefix(b"sha256=").ok_or(WebhookError::BadSignature)?;
    let expected = hex::decode(hex_part.trim_ascii()).map_err(|_| WebhookError::BadSignature)?;
    let signed_by = |secret: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    };
    if app_secrets.into_iter().any(signed_by) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

/// Computes the header value Meta would send for `body` (tests, load generator, replay).
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_bad_and_missing() {
        let h = sign(b"k", b"{}");
        assert!(verify(b"k", b"{}", Some(h.as_bytes())).is_ok());
        assert!(matches!(
            verify(b"other", b"{}", Some(h.as_bytes())),
            Err(WebhookError::BadSignature)
        ));
        assert!(matches!(
            verify(b"k", b"{ }", Some(h.as_bytes())),
            Err(WebhookError::BadSignature)
        ));
        let (a, b): (&[u8], &[u8]) = (b"app-a", b"k");
        assert!(
            verify_any([a, b], b"{}", Some(h.as_bytes())).is_ok(),
            "any app's secret"
        );
        assert!(matches!(
            verify_any([a], b"{}", Some(h.as_bytes())),
            Err(WebhookError::BadSignature)
        ));
        assert!(matches!(
            verify(b"k", b"{}", Some(b"sha1=00")),
            Err(WebhookError::BadSignature)
        ));
        assert!(matches!(
            verify(b"k", b"{}", Some(b"sha256=zz")),
            Err(WebhookError::BadSignature)
        ));
        assert!(matches!(verify(b"k", b"{}", None), Err(WebhookError::MissingSignature)));
    }
}
