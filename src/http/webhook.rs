//! `GET /webhook` (Meta's subscription check) and `POST /webhook` (deliveries).

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use subtle::ConstantTimeEq;

use super::{BodyError, HttpResponse, error, text};
use crate::App;
use crate::webhook::{WebhookError, check_json, signature};

/// Echoes `hub.challenge` when `hub.mode=subscribe` and `hub.verify_token` matches.
pub fn verify(app: &App, req: &Request<Incoming>) -> HttpResponse {
    let query = req.uri().query().unwrap_or("");
    let (mut mode, mut token, mut challenge) = (None, None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "hub.mode" => mode = Some(v.into_owned()),
            "hub.verify_token" => token = Some(v.into_owned()),
            "hub.challenge" => challenge = Some(v.into_owned()),
            _ => {}
        }
    }
    if app.config.whatsapp.verify_tokens().next().is_none() {
        tracing::warn!("webhook verification refused: whatsapp.verify_token is not configured");
        return error(StatusCode::FORBIDDEN, "verification refused");
    }
    // Any account's app may be subscribing; each comparison is in constant time.
    let token_ok = token.is_some_and(|t| {
        app.config
            .whatsapp
            .verify_tokens()
            .any(|expected| bool::from(t.as_bytes().ct_eq(expected.expose().as_bytes())))
    });
    match (mode.as_deref(), token_ok, challenge) {
        (Some("subscribe"), true, Some(challenge)) => {
            tracing::info!("webhook subscription verified");
            text(StatusCode::OK, challenge)
        }
        _ => {
            tracing::warn!("webhook verification refused: wrong mode or token");
            error(StatusCode::FORBIDDEN, "verification refused")
        }
    }
}

/// Receives a delivery: size limit, signature, JSON check, durable journal, then 200.
pub async fn receive(app: &App, req: Request<Incoming>) -> HttpResponse {
    let started = std::time::Instant::now();
    match accept(app, req).await {
        Ok((id, bytes)) => {
            let elapsed = started.elapsed();
            app.metrics.delivery("accepted", elapsed);
            tracing::info!(
                delivery = id,
                bytes,
                elapsed_us = elapsed.as_micros() as u64,
                "delivery journaled"
            );
            text(StatusCode::OK, "EVENT_RECEIVED")
        }
        Err(e) => {
            app.metrics.delivery(result_label(&e), started.elapsed());
            tracing::warn!(error = %e, status = e.status().as_u16(), "delivery refused");
            error(e.status(), e)
        }
    }
}

/// The `result` label of `walua_webhook_deliveries_total` for a refused delivery.
fn result_label(e: &WebhookError) -> &'static str {
    match e {
        WebhookError::TooLarge { .. } => "too_large",
        WebhookError::MissingSignature | WebhookError::BadSignature => "bad_signature",
        WebhookError::InvalidJson(_) => "invalid_json",
        WebhookError::Journal(_) => "journal_error",
        WebhookError::Body(_) => "body_error",
        WebhookError::BodyTimeout(_) => "body_timeout",
    }
}

async fn accept(app: &App, req: Request<Incoming>) -> Result<(u64, usize), WebhookError> {
    let limit = app.config.server.body_limit;
    let signature = req.headers().get("x-hub-signature-256").map(|v| v.as_bytes().to_vec());
    let body: Bytes = super::read_body(app, req, limit).await.map_err(|e| match e {
        BodyError::TooLarge(limit) => WebhookError::TooLarge { limit },
        BodyError::Timeout(after) => WebhookError::BodyTimeout(after),
        BodyError::Read(e) => WebhookError::Body(e),
    })?;
    check_signature(&app.config.whatsapp, &body, signature.as_deref())?;
    check_json(&body)?;
    let bytes = body.len();
    let id = app.journal.append(body).await.map_err(WebhookError::Journal)?;
    Ok((id, bytes))
}

/// Checks X-Hub-Signature-256 against the app secret of any account (one per Meta app). With
/// no app secret at all (only allowed in a dry run), nothing is checked.
fn check_signature(
    whatsapp: &crate::config::WhatsAppConfig,
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<(), WebhookError> {
    let secrets = whatsapp.app_secrets();
    if secrets.is_empty() {
        return Ok(());
    }
    signature::verify_any(secrets.iter().map(|s| s.expose().as_bytes()), body, header)
}
