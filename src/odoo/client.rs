//! The Odoo JSON-RPC client.
//!
//! Secrets (API key, password, web session id, portal access tokens) are never printed by
//! `Debug` and never appear in an [`OdooError`]: reqwest errors are stripped of their URL and
//! every message is scrubbed of the configured secrets.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::config::{OdooConfig, Secret};

/// Transport failures are retried this many times (after the first attempt).
const TRANSPORT_RETRIES: u32 = 3;
/// First retry delay; doubles each retry.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// How much of a non-PDF answer is kept in [`OdooError::NotPdf`].
const SNIPPET_CHARS: usize = 200;

/// Methods that change nothing in Odoo (or only idempotently, like `get_portal_url` creating
/// the access token once). A call of one of these is retried after any transport failure; any
/// other method only when the connection could not be established, since Odoo may have
/// committed a `create` whose answer was lost.
pub const READ_ONLY_METHODS: &[&str] = &[
    "search_read",
    "read",
    "search",
    "search_count",
    "fields_get",
    "name_search",
    "name_get",
    "read_group",
    "default_get",
    "exists",
    "check_access_rights",
    "get_portal_url",
];

/// What went wrong talking to Odoo. No variant ever contains the API key or the password.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OdooError {
    /// Odoo raised an exception (answered with HTTP 200 and a JSON-RPC `error`).
    #[error("Odoo fault {name}: {message}")]
    Fault {
        /// The Python exception, `data.name`, e.g. `odoo.exceptions.UserError`.
        name: String,
        /// The exception's text, `data.message` (or the JSON-RPC `message` without data).
        message: String,
        /// The JSON-RPC error code: 200 for server errors.
        code: i64,
    },
    /// The credentials were refused: `common.login` answered `false` (wrong login, password
    /// or API key, inactive user), or a call raised `odoo.exceptions.AccessDenied`, even after
    /// logging in again.
    #[error("Odoo refused the credentials ({name}): {message}")]
    AccessDenied {
        /// Odoo's exception, `odoo.exceptions.AccessDenied` (login's `false` comes from it too).
        name: String,
        /// Odoo's message or an explanation.
        message: String,
    },
    /// The web session expired (JSON-RPC error code 100, or a redirect to `/web/login`) and
    /// authenticating again did not help.
    #[error("Odoo session expired: {0}")]
    SessionExpired(String),
    /// The request did not complete (connection refused or reset, …), after the retries.
    #[error("cannot reach Odoo: {0}")]
    Transport(String),
    /// No answer within the configured `odoo.timeout`.
    #[error("Odoo did not answer within {after:?}")]
    Timeout {
        /// The configured timeout.
        after: Duration,
    },
    /// A PDF was expected but Odoo answered something else (an HTML page or a JSON error,
    /// with HTTP 200 as Odoo does).
    #[error("Odoo answered {content_type:?} instead of a PDF: {snippet}")]
    NotPdf {
        /// The answer's `Content-Type`.
        content_type: String,
        /// The start of the answer.
        snippet: String,
    },
    /// An HTTP status other than 200 (e.g. 404: wrong URL or Odoo behind a proxy).
    #[error("Odoo answered HTTP {0}")]
    Http(u16),
    /// The answer is not the JSON-RPC Odoo sends, or the configuration is unusable.
    #[error("unexpected answer from Odoo: {0}")]
    Protocol(String),
    /// A report other than an invoice or quotation was asked for with only an API key.
    #[error(
        "report {report_name} needs a web session, and Odoo 16 refuses API keys for \
         /web/session/authenticate (API keys are for RPC only): set odoo.password to print \
         this report (invoices and quotations work with an API key through their portal link)"
    )]
    ReportNeedsPassword {
        /// The report asked for.
        report_name: String,
    },
}

impl OdooError {
    /// Whether trying again later may succeed: Odoo unreachable, timing out, answering a 5xx
    /// (a proxy in front of a restarting Odoo), refusing the credentials (an operator fixes
    /// them) or an expired session. A fault Odoo raised on purpose (`UserError`,
    /// `ValidationError`, `MissingError`, `AccessError`…), a bad answer or a refused report
    /// is definite: the same call would fail the same way.
    pub fn is_transient(&self) -> bool {
        match self {
            OdooError::Transport(_)
            | OdooError::Timeout { .. }
            | OdooError::AccessDenied { .. }
            | OdooError::SessionExpired(_) => true,
            OdooError::Http(status) => *status >= 500 || *status == 429 || *status == 408,
            // A serialization failure (two transactions on one row) is retried by Odoo's
            // own RPC layer a few times; when it still surfaces, it is worth another try.
            OdooError::Fault { name, message, .. } => {
                name.contains("OperationalError") || message.contains("could not serialize access")
            }
            OdooError::NotPdf { .. } | OdooError::Protocol(_) | OdooError::ReportNeedsPassword { .. } => false,
        }
    }

    /// A short name of the failure for scripts (`err.kind`): `unreachable`, `timeout`,
    /// `http`, `access_denied`, `session_expired`, `fault`, `not_pdf`, `protocol`,
    /// `needs_password`.
    pub fn kind(&self) -> &'static str {
        match self {
            OdooError::Transport(_) => "unreachable",
            OdooError::Timeout { .. } => "timeout",
            OdooError::Http(_) => "http",
            OdooError::AccessDenied { .. } => "access_denied",
            OdooError::SessionExpired(_) => "session_expired",
            OdooError::Fault { .. } => "fault",
            OdooError::NotPdf { .. } => "not_pdf",
            OdooError::Protocol(_) => "protocol",
            OdooError::ReportNeedsPassword { .. } => "needs_password",
        }
    }

    /// Whether this is a fault with the given Python exception name.
    pub fn is_fault(&self, exception: &str) -> bool {
        matches!(self, OdooError::Fault { name, .. } if name == exception)
    }
}

/// How a request may be retried after a transport failure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Any transport failure (the request changes nothing).
    Any,
    /// Only when the connection could not be established.
    ConnectOnly,
}

/// An async client of one Odoo database as one user.
pub struct OdooClient {
    http: reqwest::Client,
    base: String,
    db: String,
    login: String,
    api_key: Option<Secret>,
    password: Option<Secret>,
    timeout: Duration,
    uid: Mutex<Option<i64>>,
    session: Mutex<Option<Secret>>,
    next_id: AtomicU64,
    /// Counts calls (set by the daemon).
    metrics: std::sync::OnceLock<std::sync::Arc<crate::metrics::Metrics>>,
    /// Why the last call could not reach Odoo or was refused its credentials (`/healthz`:
    /// degraded); cleared by the next call Odoo answers.
    unavailable: std::sync::Mutex<Option<String>>,
}

impl fmt::Debug for OdooClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OdooClient")
            .field("url", &self.base)
            .field("db", &self.db)
            .field("login", &self.login)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The outcome of one HTTP exchange, before JSON-RPC interpretation.
struct Answer {
    status: u16,
    content_type: String,
    final_path: String,
    set_cookies: Vec<String>,
    body: Vec<u8>,
}

impl OdooClient {
    /// Builds a client from `[odoo]`. Nothing is sent until the first call.
    pub fn new(config: &OdooConfig) -> Result<OdooClient, OdooError> {
        let base = config.url.trim().trim_end_matches('/').to_string();
        match url::Url::parse(&base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err(OdooError::Protocol(format!("odoo.url `{base}` is not an http(s) URL"))),
        }
        if config.api_key.is_none() && config.password.is_none() {
            return Err(OdooError::Protocol("set odoo.api_key (or odoo.password)".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("walua/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OdooError::Protocol(format!("cannot build the HTTP client: {}", e.without_url())))?;
        Ok(OdooClient {
            http,
            base,
            db: config.db.clone(),
            login: config.login.clone(),
            api_key: config.api_key.clone(),
            password: config.password.clone(),
            timeout: config.timeout,
            uid: Mutex::new(None),
            session: Mutex::new(None),
            next_id: AtomicU64::new(1),
            metrics: std::sync::OnceLock::new(),
            unavailable: std::sync::Mutex::new(None),
        })
    }

    /// The server's base URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The database name.
    pub fn db(&self) -> &str {
        &self.db
    }

    /// The secret sent to `/jsonrpc`: the API key when there is one, else the password.
    fn rpc_secret(&self) -> &Secret {
        self.api_key
            .as_ref()
            .or(self.password.as_ref())
            .expect("new() checks that a key or a password is set")
    }

    /// `common.version`: the server's version information (no authentication).
    pub async fn version(&self) -> Result<Value, OdooError> {
        let params = json!({"service": "common", "method": "version", "args": []});
        self.jsonrpc("/jsonrpc", params, None, Retry::Any).await
    }

    /// Logs in with `common.login` (now, even when a uid is cached) and caches the uid.
    pub async fn login(&self) -> Result<i64, OdooError> {
        let mut cached = self.uid.lock().await;
        let uid = self.login_rpc().await?;
        *cached = Some(uid);
        Ok(uid)
    }

    async fn login_rpc(&self) -> Result<i64, OdooError> {
        let params = json!({"service": "common", "method": "login",
                            "args": [self.db, self.login, self.rpc_secret().expose()]});
        match self.jsonrpc("/jsonrpc", params, None, Retry::Any).await? {
            Value::Number(n) if n.as_i64().is_some_and(|uid| uid > 0) => Ok(n.as_i64().unwrap_or_default()),
            Value::Bool(false) => Err(OdooError::AccessDenied {
                name: "odoo.exceptions.AccessDenied".into(),
                message: format!(
                    "common.login of `{}` on database `{}` answered false: wrong login, {} or inactive user",
                    self.login,
                    self.db,
                    if self.api_key.is_some() { "API key" } else { "password" }
                ),
            }),
            other => Err(OdooError::Protocol(format!("common.login answered {}", short(&other)))),
        }
    }

    /// The cached uid, logging in when there is none; `true` when it was just obtained.
    async fn uid(&self) -> Result<(i64, bool), OdooError> {
        let mut cached = self.uid.lock().await;
        if let Some(uid) = *cached {
            return Ok((uid, false));
        }
        let uid = self.login_rpc().await?;
        *cached = Some(uid);
        Ok((uid, true))
    }

    /// Forgets `uid` (unless another call already replaced it).
    async fn forget_uid(&self, uid: i64) {
        let mut cached = self.uid.lock().await;
        if *cached == Some(uid) {
            *cached = None;
        }
    }

    /// `object.execute_kw(db, uid, key, model, method, args, kwargs)`.
    ///
    /// `args` must be a JSON array (the positional arguments, e.g. `[[ids], {values}]`) and
    /// `kwargs` an object (or `null` for none). Logs in first when needed; when a call made
    /// with a cached uid is refused with `AccessDenied`, logs in again and retries once.
    pub async fn call(&self, model: &str, method: &str, args: Value, kwargs: Value) -> Result<Value, OdooError> {
        let started = std::time::Instant::now();
        let result = self.call_once(model, method, args, kwargs).await;
        let reached = !matches!(
            result,
            Err(OdooError::Transport(_) | OdooError::Timeout { .. } | OdooError::Http(500..))
        );
        let refused = matches!(result, Err(OdooError::AccessDenied { .. }));
        if let Some(m) = self.metrics.get() {
            m.odoo_call(model, method, result.is_err(), started.elapsed(), reached);
        }
        *self.unavailable.lock().unwrap_or_else(|p| p.into_inner()) = match &result {
            Err(e) if !reached || refused => Some(e.to_string()),
            _ => None,
        };
        result
    }

    /// Counts calls in the daemon's metrics from now on.
    pub fn set_metrics(&self, metrics: std::sync::Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Why Odoo could not be reached, or refused the credentials, at the last call.
    pub fn unavailable(&self) -> Option<String> {
        self.unavailable.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn call_once(&self, model: &str, method: &str, args: Value, kwargs: Value) -> Result<Value, OdooError> {
        let args = match args {
            Value::Array(_) => args,
            Value::Null => json!([]),
            other => {
                return Err(OdooError::Protocol(format!(
                    "args must be a JSON array, not {}",
                    short(&other)
                )));
            }
        };
        let kwargs = match kwargs {
            Value::Object(_) => kwargs,
            Value::Null => json!({}),
            other => {
                return Err(OdooError::Protocol(format!(
                    "kwargs must be a JSON object, not {}",
                    short(&other)
                )));
            }
        };
        let retry = if READ_ONLY_METHODS.contains(&method) {
            Retry::Any
        } else {
            Retry::ConnectOnly
        };
        let (uid, fresh) = self.uid().await?;
        let result = self.execute_kw(uid, model, method, &args, &kwargs, retry).await;
        match result {
            Err(OdooError::AccessDenied { .. }) if !fresh => {
                tracing::info!(model, method, "Odoo refused the cached uid: logging in again");
                self.forget_uid(uid).await;
                let (uid, _) = self.uid().await?;
                self.execute_kw(uid, model, method, &args, &kwargs, retry).await
            }
            other => other,
        }
    }

    async fn execute_kw(
        &self,
        uid: i64,
        model: &str,
        method: &str,
        args: &Value,
        kwargs: &Value,
        retry: Retry,
    ) -> Result<Value, OdooError> {
        let params = json!({"service": "object", "method": "execute_kw",
                            "args": [self.db, uid, self.rpc_secret().expose(), model, method, args, kwargs]});
        self.jsonrpc("/jsonrpc", params, None, retry).await
    }

    /// `search_read(domain, fields=…)` plus `kwargs_extra` (`limit`, `offset`, `order`,
    /// `context`); returns the records (`[]` when none match).
    pub async fn search_read(
        &self,
        model: &str,
        domain: Value,
        fields: &[&str],
        kwargs_extra: Value,
    ) -> Result<Vec<Value>, OdooError> {
        let mut kwargs = match kwargs_extra {
            Value::Object(m) => m,
            Value::Null => serde_json::Map::new(),
            other => {
                return Err(OdooError::Protocol(format!(
                    "kwargs must be a JSON object, not {}",
                    short(&other)
                )));
            }
        };
        kwargs.insert("fields".into(), json!(fields));
        let result = self
            .call(model, "search_read", json!([domain]), Value::Object(kwargs))
            .await?;
        records(result, "search_read")
    }

    /// `read(ids, fields)`; an empty `fields` reads every field.
    pub async fn read(&self, model: &str, ids: &[i64], fields: &[&str]) -> Result<Vec<Value>, OdooError> {
        let result = self
            .call(model, "read", json!([ids]), json!({"fields": fields}))
            .await?;
        records(result, "read")
    }

    /// `write(ids, values)`; Odoo answers `true`.
    pub async fn write(&self, model: &str, ids: &[i64], values: Value) -> Result<bool, OdooError> {
        match self.call(model, "write", json!([ids, values]), json!({})).await? {
            Value::Bool(b) => Ok(b),
            other => Err(OdooError::Protocol(format!("write answered {}", short(&other)))),
        }
    }

    /// `create(values)`; returns the new record's id.
    pub async fn create(&self, model: &str, values: Value) -> Result<i64, OdooError> {
        match self.call(model, "create", json!([values]), json!({})).await? {
            Value::Number(n) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or_default()),
            // `create` given a list of values answers a list of ids.
            Value::Array(ids) if ids.len() == 1 && ids[0].is_i64() => Ok(ids[0].as_i64().unwrap_or_default()),
            other => Err(OdooError::Protocol(format!("create answered {}", short(&other)))),
        }
    }

    /// The PDF of invoice `move_id` (`account.move`), with an API key or a password.
    ///
    /// Asks `get_portal_url(report_type="pdf", download=True)` over JSON-RPC, then GETs that
    /// portal link (it carries the record's access token; no session is needed).
    pub async fn invoice_pdf(&self, move_id: i64) -> Result<Vec<u8>, OdooError> {
        self.portal_pdf("account.move", move_id).await
    }

    /// The portal PDF of a record of a model with a customer portal (`account.move`,
    /// `sale.order`), through `get_portal_url` as [`invoice_pdf`](Self::invoice_pdf) does.
    pub async fn portal_pdf(&self, model: &str, id: i64) -> Result<Vec<u8>, OdooError> {
        let url = self
            .call(
                model,
                "get_portal_url",
                json!([[id]]),
                json!({"report_type": "pdf", "download": true}),
            )
            .await?;
        let Some(path) = url.as_str() else {
            return Err(OdooError::Protocol(format!("get_portal_url answered {}", short(&url))));
        };
        let full = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        };
        let answer = self.get(&full, None).await?;
        if answer.final_path == "/web/login" {
            // An invalid or revoked access token ends on the login page.
            return Err(not_pdf(&answer));
        }
        pdf(answer)
    }

    /// The PDF of report `report_name` (e.g. `account.report_invoice`,
    /// `sale.report_saleorder`) for record `id`.
    ///
    /// With a password: a web session (`/web/session/authenticate`, session cookie kept and
    /// renewed once when it expired) and `GET /report/pdf/{report_name}/{id}`. With only an
    /// API key, which Odoo 16 refuses for web sessions: invoice reports (`account.report_invoice…`)
    /// and quotation reports (`sale.report_saleorder…`) go through the record's portal link;
    /// other reports fail with [`OdooError::ReportNeedsPassword`].
    pub async fn report_pdf(&self, report_name: &str, id: i64) -> Result<Vec<u8>, OdooError> {
        if self.password.is_none() {
            if report_name.starts_with("account.report_invoice") {
                return self.invoice_pdf(id).await;
            }
            if report_name.starts_with("sale.report_saleorder") {
                return self.portal_pdf("sale.order", id).await;
            }
            return Err(OdooError::ReportNeedsPassword {
                report_name: report_name.to_string(),
            });
        }
        if report_name.is_empty() || report_name.contains(['/', '?', '#']) {
            return Err(OdooError::Protocol(format!("`{report_name}` is not a report name")));
        }
        let url = format!("{}/report/pdf/{report_name}/{id}", self.base);
        let (session, fresh) = self.session().await?;
        let mut answer = self.get(&url, Some(&session)).await?;
        if answer.final_path == "/web/login" && !fresh {
            tracing::info!("Odoo web session expired: authenticating again");
            self.forget_session(&session).await;
            let (session, _) = self.session().await?;
            answer = self.get(&url, Some(&session)).await?;
        }
        if answer.final_path == "/web/login" {
            return Err(OdooError::SessionExpired(
                "Odoo sent the report request to its login page right after authenticating".into(),
            ));
        }
        pdf(answer)
    }

    /// `model.method(*args, **kwargs)` through the web client's `/web/dataset/call_kw` with a
    /// web session (needs a password). An expired session (code 100) is renewed once.
    pub async fn session_call(
        &self,
        model: &str,
        method: &str,
        args: Value,
        kwargs: Value,
    ) -> Result<Value, OdooError> {
        let retry = if READ_ONLY_METHODS.contains(&method) {
            Retry::Any
        } else {
            Retry::ConnectOnly
        };
        let params = json!({"model": model, "method": method, "args": args, "kwargs": kwargs});
        let (session, fresh) = self.session().await?;
        let path = "/web/dataset/call_kw";
        match self.jsonrpc(path, params.clone(), Some(&session), retry).await {
            Err(OdooError::SessionExpired(_)) if !fresh => {
                tracing::info!("Odoo web session expired: authenticating again");
                self.forget_session(&session).await;
                let (session, _) = self.session().await?;
                self.jsonrpc(path, params, Some(&session), retry).await
            }
            other => other,
        }
    }

    /// Authenticates a web session now (password only) and keeps its cookie.
    pub async fn authenticate(&self) -> Result<i64, OdooError> {
        let mut cached = self.session.lock().await;
        let (session, uid) = self.authenticate_rpc().await?;
        *cached = Some(session);
        Ok(uid)
    }

    async fn session(&self) -> Result<(Secret, bool), OdooError> {
        let mut cached = self.session.lock().await;
        if let Some(s) = &*cached {
            return Ok((s.clone(), false));
        }
        let (session, _) = self.authenticate_rpc().await?;
        *cached = Some(session.clone());
        Ok((session, true))
    }

    async fn forget_session(&self, session: &Secret) {
        let mut cached = self.session.lock().await;
        if cached.as_ref() == Some(session) {
            *cached = None;
        }
    }

    async fn authenticate_rpc(&self) -> Result<(Secret, i64), OdooError> {
        let Some(password) = &self.password else {
            return Err(OdooError::AccessDenied {
                name: "odoo.exceptions.AccessDenied".into(),
                message: "a web session needs odoo.password: Odoo 16 refuses API keys for \
                          /web/session/authenticate"
                    .into(),
            });
        };
        let params = json!({"db": self.db, "login": self.login, "password": password.expose()});
        let answer = self
            .post_json("/web/session/authenticate", &params, None, Retry::Any)
            .await?;
        let cookie = answer
            .set_cookies
            .iter()
            .find_map(|c| {
                let first = c.split(';').next()?.trim();
                first.strip_prefix("session_id=").map(str::to_string)
            })
            .filter(|s| !s.is_empty());
        let result = self.interpret(answer)?;
        let uid = result.get("uid").and_then(Value::as_i64);
        match (cookie, uid) {
            (Some(c), Some(uid)) => Ok((Secret::new(c), uid)),
            (None, _) => Err(OdooError::Protocol(
                "/web/session/authenticate set no session_id cookie".into(),
            )),
            (_, None) => Err(OdooError::AccessDenied {
                name: "odoo.exceptions.AccessDenied".into(),
                message: "/web/session/authenticate answered without a uid".into(),
            }),
        }
    }

    /// One JSON-RPC call: POST, then the `result` or the `error` turned into an [`OdooError`].
    async fn jsonrpc(
        &self,
        path: &str,
        params: Value,
        session: Option<&Secret>,
        retry: Retry,
    ) -> Result<Value, OdooError> {
        let answer = self.post_json(path, &params, session, retry).await?;
        self.interpret(answer)
    }

    fn interpret(&self, answer: Answer) -> Result<Value, OdooError> {
        if answer.status != 200 {
            return Err(OdooError::Http(answer.status));
        }
        let body: Value = serde_json::from_slice(&answer.body).map_err(|_| {
            OdooError::Protocol(self.scrub(format!("not JSON ({}): {}", answer.content_type, snippet(&answer.body))))
        })?;
        if let Some(error) = body.get("error") {
            return Err(self.fault(error));
        }
        match body.get("result") {
            Some(r) => Ok(r.clone()),
            // Odoo 16 leaves `result` out when the method returned None (`action_done`,
            // `action_unlock`, `button_draft`, `button_cancel`…): the call succeeded.
            None if body.get("jsonrpc").is_some() => Ok(Value::Null),
            None => Err(OdooError::Protocol(
                self.scrub(format!("neither result nor error: {}", short(&body))),
            )),
        }
    }

    /// A JSON-RPC `error` object → the matching [`OdooError`].
    fn fault(&self, error: &Value) -> OdooError {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or_default();
        let outer = error.get("message").and_then(Value::as_str).unwrap_or("Odoo error");
        let name = error
            .pointer("/data/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let message = self.scrub(
            error
                .pointer("/data/message")
                .and_then(Value::as_str)
                .unwrap_or(outer)
                .to_string(),
        );
        if code == 100 || name == "odoo.http.SessionExpiredException" {
            return OdooError::SessionExpired(message);
        }
        if name == "odoo.exceptions.AccessDenied" {
            return OdooError::AccessDenied { name, message };
        }
        OdooError::Fault { name, message, code }
    }

    async fn post_json(
        &self,
        path: &str,
        params: &Value,
        session: Option<&Secret>,
        retry: Retry,
    ) -> Result<Answer, OdooError> {
        let url = format!("{}{path}", self.base);
        let body = json!({"jsonrpc": "2.0", "method": "call", "params": params,
                          "id": self.next_id.fetch_add(1, Ordering::Relaxed)});
        let body = serde_json::to_vec(&body).map_err(|e| OdooError::Protocol(e.to_string()))?;
        self.with_retries(retry, || {
            let mut req = self
                .http
                .post(&url)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(s) = session {
                req = req.header(COOKIE, format!("session_id={}", s.expose()));
            }
            req
        })
        .await
    }

    async fn get(&self, url: &str, session: Option<&Secret>) -> Result<Answer, OdooError> {
        self.with_retries(Retry::Any, || {
            let mut req = self.http.get(url);
            if let Some(s) = session {
                req = req.header(COOKIE, format!("session_id={}", s.expose()));
            }
            req
        })
        .await
    }

    /// Sends the request `build` makes, retrying transport failures (never answers, never
    /// timeouts) up to [`TRANSPORT_RETRIES`] times with a doubling backoff.
    async fn with_retries(
        &self,
        retry: Retry,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Answer, OdooError> {
        let mut attempt = 0;
        loop {
            match self.exchange(build()).await {
                Ok(answer) => return Ok(answer),
                Err((err, connect)) => {
                    let retryable = matches!(err, OdooError::Transport(_)) && (connect || retry == Retry::Any);
                    if !retryable || attempt >= TRANSPORT_RETRIES {
                        return Err(err);
                    }
                    let delay = RETRY_BACKOFF * 2u32.pow(attempt);
                    tracing::debug!(%err, attempt, ?delay, "Odoo transport failure: retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One HTTP exchange; on failure also tells whether the connection was never made.
    async fn exchange(&self, req: reqwest::RequestBuilder) -> Result<Answer, (OdooError, bool)> {
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let set_cookies = resp
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect();
        let final_path = resp.url().path().to_string();
        let body = resp.bytes().await.map_err(|e| self.transport(e))?.to_vec();
        Ok(Answer {
            status,
            content_type,
            final_path,
            set_cookies,
            body,
        })
    }

    fn transport(&self, e: reqwest::Error) -> (OdooError, bool) {
        if e.is_timeout() {
            return (OdooError::Timeout { after: self.timeout }, false);
        }
        let connect = e.is_connect();
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        (OdooError::Transport(self.scrub(text)), connect)
    }

    /// Removes the configured secrets from a message.
    fn scrub(&self, mut text: String) -> String {
        for secret in [&self.api_key, &self.password].into_iter().flatten() {
            if !secret.expose().is_empty() {
                text = text.replace(secret.expose(), "***");
            }
        }
        text
    }
}

fn records(result: Value, method: &str) -> Result<Vec<Value>, OdooError> {
    match result {
        Value::Array(v) => Ok(v),
        other => Err(OdooError::Protocol(format!("{method} answered {}", short(&other)))),
    }
}

/// Checks that an answer is a PDF.
fn pdf(answer: Answer) -> Result<Vec<u8>, OdooError> {
    if answer.status == 200 && answer.body.starts_with(b"%PDF-") {
        return Ok(answer.body);
    }
    if answer.status != 200 && !answer.content_type.starts_with("text/html") {
        return Err(OdooError::Http(answer.status));
    }
    Err(not_pdf(&answer))
}

fn not_pdf(answer: &Answer) -> OdooError {
    let mut snippet = if answer.content_type.starts_with("text/html") {
        // An operator reads this in the log and `walua parked list`: the page's text, not
        // its markup.
        snippet(
            strip_tags(&String::from_utf8_lossy(
                &answer.body[..answer.body.len().min(64 * 1024)],
            ))
            .as_bytes(),
        )
    } else {
        snippet(&answer.body)
    };
    if answer.final_path == "/web/login" {
        snippet = format!("(the login page: the access token or session was refused) {snippet}");
    }
    if answer.status == 404 {
        snippet = format!(
            "(HTTP 404: a wrong odoo.url, or an Odoo whose --db-filter matches several databases, which it cannot pick for a portal link) {snippet}"
        );
    }
    OdooError::NotPdf {
        content_type: answer.content_type.clone(),
        snippet,
    }
}

/// The text of an HTML page: tags, `<script>`/`<style>` contents and comments left out.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(4096));
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        out.push(' ');
        let tag = &rest[start..];
        let lower: String = tag.chars().take(8).collect::<String>().to_ascii_lowercase();
        let end_marker = if tag.starts_with("<!--") {
            "-->"
        } else if lower.starts_with("<script") {
            "</script>"
        } else if lower.starts_with("<style") {
            "</style>"
        } else {
            ">"
        };
        let found = if end_marker == ">" {
            tag.find('>')
        } else {
            tag.to_ascii_lowercase().find(end_marker)
        };
        match found {
            Some(i) => rest = &tag[i + end_marker.len()..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(SNIPPET_CHARS * 4)]);
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.chars().take(SNIPPET_CHARS).collect()
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > SNIPPET_CHARS {
        format!("{}…", s.chars().take(SNIPPET_CHARS).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod html_tests {
    use super::*;

    #[test]
    fn an_html_error_page_is_reported_by_its_text() {
        let page = "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n<title>404 Not Found</title>\n<style>h1{x}</style><h1>Not Found</h1>\n<p>The requested URL was not found on the server.</p><!-- x -->";
        let text = snippet(strip_tags(page).as_bytes());
        assert_eq!(
            text,
            "404 Not Found Not Found The requested URL was not found on the server."
        );
        assert_eq!(strip_tags("a < b"), "a  ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: Option<&str>, password: Option<&str>) -> OdooConfig {
        OdooConfig {
            url: "http://127.0.0.1:9/".into(),
            db: "walua".into(),
            login: "admin".into(),
            api_key: key.map(Secret::new),
            password: password.map(Secret::new),
            poll_interval: Duration::from_secs(30),
            hook_token: None,
            timeout: Duration::from_secs(1),
            rescan_window: Duration::from_secs(180),
            chatter: true,
            chatter_inbound: false,
            partners: true,
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let c = OdooClient::new(&config(Some("k3y-s3cret"), Some("pa55word"))).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("k3y-s3cret") && !d.contains("pa55word"), "{d}");
        assert!(d.contains("walua") && d.contains("http://127.0.0.1:9"), "{d}");
    }

    #[test]
    fn needs_a_secret_and_a_url() {
        assert!(matches!(
            OdooClient::new(&config(None, None)),
            Err(OdooError::Protocol(_))
        ));
        let mut c = config(Some("k"), None);
        c.url = "localhost:8069".into();
        assert!(matches!(OdooClient::new(&c), Err(OdooError::Protocol(_))));
    }

    #[test]
    fn faults_are_typed() {
        let c = OdooClient::new(&config(Some("k3y-s3cret"), None)).unwrap();
        let e = c.fault(&json!({"code": 200, "message": "Odoo Server Error",
            "data": {"name": "odoo.exceptions.UserError", "message": "Object x.nope doesn't exist"}}));
        assert_eq!(
            e,
            OdooError::Fault {
                name: "odoo.exceptions.UserError".into(),
                message: "Object x.nope doesn't exist".into(),
                code: 200
            }
        );
        let e = c.fault(&json!({"code": 100, "message": "Odoo Session Expired",
            "data": {"name": "odoo.http.SessionExpiredException", "message": "Session expired"}}));
        assert!(matches!(e, OdooError::SessionExpired(_)));
        let e = c.fault(&json!({"code": 200, "message": "Odoo Server Error",
            "data": {"name": "odoo.exceptions.AccessDenied", "message": "bad k3y-s3cret"}}));
        assert!(matches!(&e, OdooError::AccessDenied { name, .. } if name == "odoo.exceptions.AccessDenied"));
        assert!(!e.to_string().contains("k3y-s3cret"), "{e}");
    }

    /// Odoo 16's `_json_response` omits `result` when the method returned None.
    #[test]
    fn a_json_rpc_answer_without_result_is_null() {
        let c = OdooClient::new(&config(Some("k"), None)).unwrap();
        let answer = |body: &str| Answer {
            status: 200,
            content_type: "application/json".into(),
            final_path: "/jsonrpc".into(),
            set_cookies: Vec::new(),
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(
            c.interpret(answer(r#"{"jsonrpc": "2.0", "id": 7}"#)).unwrap(),
            Value::Null
        );
        assert_eq!(
            c.interpret(answer(r#"{"jsonrpc": "2.0", "id": 7, "result": true}"#))
                .unwrap(),
            json!(true)
        );
        // Not JSON-RPC at all: still a protocol error.
        assert!(matches!(
            c.interpret(answer(r#"{"hello": 1}"#)),
            Err(OdooError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn connection_refused_is_transport_without_secret() {
        let c = OdooClient::new(&config(Some("k3y-s3cret"), None)).unwrap();
        let e = c.login().await.unwrap_err();
        assert!(matches!(e, OdooError::Transport(_)), "{e:?}");
        assert!(!e.to_string().contains("k3y-s3cret"));
    }
}
