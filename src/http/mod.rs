//! The HTTP edge: one hyper server, one router, errors mapped to statuses here.
//!
//! Routes: `GET|POST /webhook` (Meta), `GET /healthz`, `GET /metrics` (Prometheus text),
//! and the admin API under `/api/` (bearer admin token; see [`admin`]).

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
        (&Method::GET, "/metrics") => metrics(&app).await,
        (_, "/webhook") | (_, "/healthz") | (_, "/metrics") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        (_, p) if p.starts_with("/api/") => admin::route(&app, peer, req).await,
        (&Method::POST, p) if p.starts_with("/hooks/odoo/") => admin::odoo_push(&app, peer, req).await,
        _ => error(StatusCode::NOT_FOUND, format!("no route for {method} {path}")),
    }
}

/// A queued send whose due time passed this long ago means the outbox is not being worked.
pub const OUTBOX_STUCK_AFTER: Duration = Duration::from_secs(600);

/// The three health states (DESIGN.md, "Health has three states").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Everything works.
    Ok,
    /// walua works, but something it depends on does not (Odoo, a script, the outbox):
    /// `/healthz` still answers 200.
    Degraded,
    /// walua cannot do its job (the store or the journal cannot write, a Lua worker is
    /// wedged): `/healthz` answers 503. A full disk is failing until space is back, and walua
    /// recovers from it by itself.
    Failing,
}

impl HealthState {
    /// `ok`, `degraded` or `failing`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Ok => "ok",
            HealthState::Degraded => "degraded",
            HealthState::Failing => "failing",
        }
    }
}

/// What `/healthz` found.
#[derive(Debug, serde::Serialize)]
pub struct Health {
    /// `ok`, `degraded` or `failing`.
    pub status: HealthState,
    /// Why it is not ok: what makes it failing first, then what degrades it.
    pub problems: Vec<String>,
    /// `writable`, or the store's error.
    pub store: String,
    /// `writable`, or why the journal's last write failed.
    pub journal: String,
    /// Deliveries journaled but not processed yet.
    pub journal_backlog: Option<u64>,
    /// Send jobs in the outbox.
    pub outbox_depth: Option<u64>,
    /// Scripts loaded, and scripts whose last load failed.
    pub scripts: serde_json::Value,
    /// Lua workers running (extra ones included) and abandoned threads still running.
    pub lua_workers: serde_json::Value,
}

/// Checks the store (a durable write), the journal (its last write), the Lua workers, the
/// outbox (no queued job overdue by more than [`OUTBOX_STUCK_AFTER`]), the scripts and Odoo.
pub async fn check_health(app: &App) -> Health {
    let (mut failing, mut degraded) = (Vec::new(), Vec::new());
    let journal = app.journal_files.clone();
    let probe = app
        .store
        .blocking(move |s| {
            // Read back below through `failure()`: cleared here if space is back.
            journal.recheck();
            s.probe_writable()?;
            let backlog = journal.backlog(s.journal_applied()?);
            let depth = s.outbox_len()?;
            let cutoff = crate::store::now_ms() - OUTBOX_STUCK_AFTER.as_millis() as i64;
            let (overdue, _) = s.outbox_due(
                cutoff,
                crate::store::outbox::DueLimits::shared_by(1, 1),
                &Default::default(),
            )?;
            Ok((backlog, depth, overdue.into_iter().next()))
        })
        .await;
    let (store, journal_backlog, outbox_depth) = match probe {
        Ok((backlog, depth, overdue)) => {
            if let Some(job) = overdue {
                let late = (crate::store::now_ms() - job.next_attempt_ms) / 1000;
                degraded.push(format!(
                    "outbox stuck: message {} to {} was due {late}s ago and is still queued (is the outbox worker running? dry_run = true leaves earlier jobs unsent)",
                    job.message_id, job.recipient
                ));
            }
            ("writable".to_string(), Some(backlog), Some(depth))
        }
        Err(e) => {
            failing.push(format!("store cannot write: {e}"));
            (e.to_string(), None, None)
        }
    };
    let journal = match app.journal_files.failure() {
        Some(e) => {
            failing.push(format!("journal cannot write (deliveries are refused with 503): {e}"));
            e
        }
        None => "writable".to_string(),
    };
    let stuck = app.scripts.runtime.stuck_workers();
    if !stuck.is_empty() {
        let names: Vec<String> = stuck
            .iter()
            .map(|(n, age)| format!("{n} for {} s", age.as_secs()))
            .collect();
        failing.push(format!(
            "a Lua worker is wedged (replaced; its thread still runs: {})",
            names.join(", ")
        ));
    }
    if let Some(p) = crate::stuck_worker_problem(&app.scripts) {
        failing.push(p);
    }
    let scripts = {
        let reg = app.scripts.registry.read().expect("not poisoned");
        let errors: Vec<String> = reg.errors().map(|e| e.message.clone()).collect();
        if !errors.is_empty() {
            degraded.push(format!(
                "{} script(s) failed to load: {}",
                errors.len(),
                errors.join("; ")
            ));
        }
        serde_json::json!({ "loaded": reg.all().count(), "errors": errors.len(), "last_errors": errors })
    };
    if let Some(hooks) = &app.hooks {
        if let Some(e) = hooks.odoo.unavailable() {
            degraded.push(format!("Odoo unreachable or refusing the credentials: {e}"));
        }
        if let Some(e) = hooks.poll_failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            degraded.push(e);
        }
    }
    let status = if !failing.is_empty() {
        HealthState::Failing
    } else if !degraded.is_empty() {
        HealthState::Degraded
    } else {
        HealthState::Ok
    };
    app.metrics.health(status);
    failing.extend(degraded);
    Health {
        status,
        problems: failing,
        store,
        journal,
        journal_backlog,
        outbox_depth,
        scripts,
        lua_workers: serde_json::json!({
            "live": app.scripts.runtime.live_workers(),
            "abandoned_running": stuck.len(),
        }),
    }
}

async fn health(app: &App) -> HttpResponse {
    let h = check_health(app).await;
    let status = if h.status == HealthState::Failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, &h)
}

async fn metrics(app: &App) -> HttpResponse {
    if let Ok(depth) = app.store.blocking(|s| s.outbox_len()).await {
        app.metrics.outbox_depth.set(depth as i64);
    }
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", crate::metrics::CONTENT_TYPE)
        .body(Full::new(Bytes::from(app.metrics.encode())))
        .expect("static response parts are valid")
}
