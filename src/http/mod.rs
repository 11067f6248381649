//! The HTTP edge: one hyper server, one router, errors mapped to statuses here.
//!
//! Routes: `GET|POST /webhook` (Meta), `GET /healthz`, `GET /metrics` (Prometheus text),
//! and the admin API under `/api/` (bearer admin token; see [`admin`]). `HEAD` works
//! wherever `GET` does. The connection handling (caps, timeouts) is in [`server`].

pub mod admin;
pub mod server;
mod webhook;

pub use server::serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::App;

/// The body of every response: a whole buffer, or a stream (the console's live updates).
pub type ResponseBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// The response type of every handler.
pub type HttpResponse = Response<ResponseBody>;

/// A body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into()).boxed()
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> HttpResponse {
    let body = serde_json::to_vec(value).expect("responses serialize");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body))
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
        .body(full(body))
        .expect("static response parts are valid")
}

/// Routes a request. `HEAD` is answered as `GET` without the body (same status and headers,
/// `Content-Length` included); a `408` closes an HTTP/1 connection (the rest of the body was
/// never read).
async fn route(app: Arc<App>, peer: SocketAddr, mut req: Request<Incoming>) -> HttpResponse {
    let head = req.method() == Method::HEAD;
    if head {
        *req.method_mut() = Method::GET;
    }
    let http1 = req.version() < hyper::Version::HTTP_2;
    let mut response = dispatch(app, peer, req).await;
    if http1 && response.status() == StatusCode::REQUEST_TIMEOUT {
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    if head {
        let (mut parts, body) = response.into_parts();
        if let Some(len) = hyper::body::Body::size_hint(&body).exact() {
            parts
                .headers
                .entry(hyper::header::CONTENT_LENGTH)
                .or_insert_with(|| len.into());
        }
        response = Response::from_parts(parts, full(Bytes::new()));
    }
    response
}

async fn dispatch(app: Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        // `/whatsapp/webhook` is the Odoo module's callback URL: a migration changes nothing at Meta.
        (&Method::GET, "/webhook" | "/whatsapp/webhook") => webhook::verify(&app, &req),
        (&Method::POST, "/webhook" | "/whatsapp/webhook") => webhook::receive(&app, req).await,
        (&Method::GET, "/healthz") => health(&app).await,
        (&Method::GET, "/metrics") => metrics(&app).await,
        (_, "/webhook" | "/whatsapp/webhook") => method_not_allowed("GET, HEAD, POST"),
        (_, "/healthz") | (_, "/metrics") => method_not_allowed("GET, HEAD"),
        (_, p) if p.starts_with("/api/") => admin::route(&app, peer, req).await,
        (&Method::POST, p) if p.starts_with("/hooks/odoo/") => admin::odoo_push(&app, peer, req).await,
        (_, p) if crate::console::pages::is_console_path(p) => crate::console::pages::route(&app, peer, req).await,
        _ => error(StatusCode::NOT_FOUND, format!("no route for {method} {path}")),
    }
}

/// 405 with the `Allow` header.
fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static(allow));
    response
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than allowed (413).
    #[error("body over the {0}-byte limit")]
    TooLarge(usize),
    /// Not received in time (408).
    #[error("the body was not received within {0:?} (server.body_read_timeout)")]
    Timeout(Duration),
    /// The client broke off or sent a malformed body (400).
    #[error("could not read the body: {0}")]
    Read(String),
}

impl BodyError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads a whole request body of at most `limit` bytes within `server.body_read_timeout`
/// (a client trickling its body must not hold a connection for ever).
pub async fn read_body(app: &App, req: Request<Incoming>, limit: usize) -> Result<Bytes, BodyError> {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let timeout = app.config.server.body_read_timeout;
    match tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge(limit)),
        Ok(Err(e)) => Err(BodyError::Read(e.to_string())),
        Err(_) => Err(BodyError::Timeout(timeout)),
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
    /// Messages stored whose words the console's search does not have yet
    /// (`crate::search_index`).
    pub search_backlog: Option<u64>,
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
            let search = s.search_backlog()?;
            let cutoff = crate::store::now_ms() - OUTBOX_STUCK_AFTER.as_millis() as i64;
            let (overdue, _) = s.outbox_due(
                cutoff,
                crate::store::outbox::DueLimits::shared_by(1, 1),
                &Default::default(),
            )?;
            Ok((backlog, depth, search, overdue.into_iter().next()))
        })
        .await;
    let (store, journal_backlog, outbox_depth, search_backlog) = match probe {
        Ok((backlog, depth, search, overdue)) => {
            if let Some(job) = overdue {
                let late = (crate::store::now_ms() - job.next_attempt_ms) / 1000;
                degraded.push(format!(
                    "outbox stuck: message {} to {} was due {late}s ago and is still queued (is the outbox worker running? dry_run = true leaves earlier jobs unsent)",
                    job.message_id, job.recipient
                ));
            }
            ("writable".to_string(), Some(backlog), Some(depth), Some(search))
        }
        Err(e) => {
            failing.push(format!("store cannot write: {e}"));
            (e.to_string(), None, None, None)
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
    // Past STUCK_THREAD_LIMIT the problem names the restart it needs; before, only that a
    // worker was replaced. One line either way.
    if let Some(p) = crate::stuck_worker_problem(&app.scripts) {
        failing.push(p);
    } else if !stuck.is_empty() {
        let names: Vec<String> = stuck
            .iter()
            .map(|(n, age)| format!("{n} for {} s", age.as_secs()))
            .collect();
        failing.push(format!(
            "a Lua worker is wedged (replaced; its thread still runs: {})",
            names.join(", ")
        ));
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
    if let Some(e) = app
        .partner_sync_failure
        .as_ref()
        .and_then(|f| f.lock().unwrap_or_else(|p| p.into_inner()).clone())
    {
        degraded.push(e);
    }
    if let Some(w) = crate::whatsapp::version::check(&app.config.whatsapp.api_base, chrono::Utc::now().date_naive()) {
        degraded.push(w);
    }
    let templates = app.templates.clone();
    if let Ok(problems) = tokio::task::spawn_blocking(move || templates.problems()).await {
        degraded.extend(problems);
    }
    if let Ok(runs) = app.store.blocking(|s| s.failed_runs("")).await {
        let now = crate::store::now_ms();
        let parked: Vec<String> = runs
            .iter()
            .filter(|r| r.parked() && r.expires_ms.is_none_or(|t| t > now))
            .map(|r| r.id.clone())
            .collect();
        if !parked.is_empty() {
            degraded.push(format!(
                "{} run(s) parked after failing (walua parked list): {}",
                parked.len(),
                parked.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ));
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
        search_backlog,
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
    if let Ok(runs) = app.store.blocking(|s| s.failed_runs("")).await {
        let parked = runs.iter().filter(|r| r.parked()).count() as i64;
        let set = |state: &'static str, n: i64| app.metrics.failed_runs.get_or_create(&[("state", state)]).set(n);
        set("parked", parked);
        set("retrying", runs.len() as i64 - parked);
    }
    if let Ok(templates) = app.store.blocking(|s| s.templates()).await {
        let mut counts: std::collections::BTreeMap<(String, String, String), i64> = Default::default();
        for t in &templates {
            *counts
                .entry((t.waba_id.clone(), t.status.clone(), t.quality.clone()))
                .or_default() += 1;
        }
        app.metrics.templates.clear();
        for ((waba, status, quality), n) in counts {
            app.metrics
                .templates
                .get_or_create(&vec![("waba", waba), ("status", status), ("quality", quality)])
                .set(n);
        }
    }
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", crate::metrics::CONTENT_TYPE)
        .body(full(app.metrics.encode()))
        .expect("static response parts are valid")
}
