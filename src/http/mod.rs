//! The HTTP edge: one hyper server, one router, errors mapped to statuses here.
//!
//! Routes: `GET|POST /webhook` (Meta), `GET /healthz`, and the admin API under `/api/`
//! (bearer admin token; see [`admin`]).

pub mod admin;
mod webhook;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::App;

/// The response type of every handler.
pub type HttpResponse = Response<Full<Bytes>>;

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> HttpResponse {
    let body = serde_json::to_vec(value).expect("responses serialize");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// A JSON error `{"error": message}`.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

/// Accepts connections until `shutdown` fires, then stops accepting and lets in-flight
/// requests finish for at most `drain` before returning.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: CancellationToken, drain: Duration) {
    let graceful = GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(route(app, peer, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!("all connections closed"),
        _ = tokio::time::sleep(drain) => tracing::warn!(?drain, "connections still open after the drain timeout; closing"),
    }
}

async fn route(app: Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/webhook") => webhook::verify(&app, &req),
        (&Method::POST, "/webhook") => webhook::receive(&app, req).await,
        (&Method::GET, "/healthz") => health(&app).await,
        (_, "/webhook") | (_, "/healthz") => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        (_, p) if p.starts_with("/api/") => admin::route(&app, peer, req).await,
        (&Method::POST, p) if p.starts_with("/hooks/odoo/") => admin::odoo_push(&app, peer, req).await,
        _ => error(StatusCode::NOT_FOUND, format!("no route for {method} {path}")),
    }
}

async fn health(app: &App) -> HttpResponse {
    let probe = app
        .store
        .blocking(|s| {
            s.probe_writable()?;
            s.journal_len()
        })
        .await;
    match probe {
        Ok(backlog) => json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ok", "store": "writable", "journal_backlog": backlog }),
        ),
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "unhealthy", "store": e.to_string() }),
        ),
    }
}
