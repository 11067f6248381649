//! A fake of Meta's Graph API (v21.0) for integration tests: a hyper 1.x server on
//! `127.0.0.1:0` that checks what walua sends the way Meta does, records every request and
//! can be scripted to fail, stall or drop connections.
//!
//! ```ignore
//! let fg = FakeGraph::start("token").await;   // api_base = fg.url()
//! fg.push_response(Scripted::RateLimited);    // next /messages answers 429, then normal
//! let sent = fg.wait_for_accepted(1, Duration::from_secs(5)).await;
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use rand::Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use super::serve::{self, Protocols};

/// A scripted answer for the next `/messages` request (see [`FakeGraph::push_response`]).
#[derive(Debug, Clone)]
pub enum Scripted {
    /// This HTTP status with a generic Meta error body (`{}` for a status below 400).
    Status(u16),
    /// 429 with code 130429 "Rate limit hit".
    RateLimited,
    /// Any Meta error.
    MetaError {
        http: u16,
        code: i64,
        message: String,
        details: String,
    },
    /// Wait, then process normally. The wamid is issued before the wait, as when Meta accepts a
    /// message but the answer is slow: a client that times out has still sent it.
    Delay(Duration),
    /// Never answer (the client must time out). Not accepted.
    Hang,
    /// Close the connection without answering. Not accepted.
    Drop,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    /// The JSON body, or `Null` when the body is not JSON (multipart, empty, …).
    pub body: Value,
    /// When the request head arrived.
    pub at: Instant,
    /// The HTTP status answered; 0 for `Hang` and `Drop`.
    pub outcome_status: u16,
    /// The wamid issued, for accepted message sends.
    pub wamid: Option<String>,
}

/// A media file uploaded with `POST /{phone_number_id}/media`.
#[derive(Debug, Clone)]
pub struct Upload {
    pub id: String,
    pub filename: Option<String>,
    pub mime_type: String,
    pub bytes: Vec<u8>,
    /// The `ttl_minutes` field, when given (numbers with "No Storage").
    pub ttl_minutes: Option<u32>,
}

#[derive(Default)]
struct State {
    scripted: VecDeque<Scripted>,
    /// HTTP statuses the next `/media` uploads answer with (FIFO), before normal answers.
    media_failures: VecDeque<u16>,
    /// Numbers Meta knows under another wa_id (sent to → wa_id in the answer).
    wa_ids: HashMap<String, String>,
    failure_rate: f64,
    failure_kinds: Vec<Scripted>,
    latency: Duration,
    requests: Vec<Recorded>,
    accepted: Vec<(String, Value)>,
    uploads: Vec<Upload>,
    media: HashMap<String, (Vec<u8>, String)>,
    next_wamid: u64,
    next_media: u64,
    next_trace: u64,
    /// Business numbers with a token of their own (phone number id → token); other numbers
    /// take the server's token.
    number_tokens: HashMap<String, String>,
    /// Media received by a number with a token of its own (media id → number): only that
    /// token reads them.
    media_owner: HashMap<String, String>,
    /// Message templates of every WABA (deleted ones kept, as Meta keeps their names).
    templates: Vec<FakeTemplate>,
    next_template: u64,
    /// The WABA of each business number: its template sends are checked against it.
    number_wabas: HashMap<String, String>,
    /// Resumable upload sessions: session id → declared length; and handles given.
    upload_sessions: HashMap<String, usize>,
    handles: Vec<String>,
}

/// A message template as the fake keeps it.
#[derive(Debug, Clone)]
pub struct FakeTemplate {
    pub id: String,
    pub waba: String,
    pub name: String,
    pub language: String,
    pub category: String,
    pub status: String,
    pub quality: String,
    pub components: Value,
    pub parameter_format: String,
    /// When it was edited (approved edits count against Meta's limits).
    pub edits: Vec<Instant>,
    pub deleted: Option<Instant>,
}

/// Most templates a WABA holds.
pub const FAKE_MAX_TEMPLATES: usize = 250;

struct Inner {
    token: String,
    base: String,
    state: Mutex<State>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake Graph API server. Dropping it stops the server and all its connections.
pub struct FakeGraph {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
    /// The accept loop; dropping it stops the server.
    _serving: serve::Serving,
}

/// What to do with a request once it has been checked.
enum Outcome {
    Answer(u16, Value),
    Hang,
    Drop,
}

type Reply = Response<Full<Bytes>>;

impl FakeGraph {
    /// Starts the server; requests must carry `Authorization: Bearer {token}`.
    pub async fn start(token: &str) -> FakeGraph {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake graph");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            token: token.to_string(),
            base: format!("http://{addr}"),
            state: Mutex::new(State::default()),
        });
        let srv = inner.clone();
        // HTTP/1.1, and HTTP/2 over cleartext for a client that knows it speaks it, as Meta
        // speaks HTTP/2 over TLS.
        let _serving = serve::spawn(listener, Protocols::Http1AndH2c, move |req| handle(srv.clone(), req));
        FakeGraph { inner, addr, _serving }
    }

    /// Gives business number `phone_number_id` a token of its own: its sends and uploads must
    /// carry it (as with numbers of two Meta apps).
    pub fn add_number(&self, phone_number_id: &str, token: &str) {
        self.inner
            .lock()
            .number_tokens
            .insert(phone_number_id.to_string(), token.to_string());
    }

    /// The `api_base` for walua's config: `http://127.0.0.1:PORT/v21.0`.
    pub fn url(&self) -> String {
        format!("{}/v21.0", self.inner.base)
    }

    /// Queues a scripted answer, consumed (FIFO) by the next `/messages` requests.
    pub fn push_response(&self, s: Scripted) {
        self.inner.lock().scripted.push_back(s);
    }

    /// Answers sends to `to` with `wa_id` as the contact's wa_id, as Meta does for numbers it
    /// writes otherwise (Brazil's ninth digit, Mexico's 1).
    pub fn knows_as(&self, to: &str, wa_id: &str) {
        self.inner.lock().wa_ids.insert(to.to_string(), wa_id.to_string());
    }

    /// The next `statuses.len()` media uploads answer these HTTP statuses (e.g. 500) with a
    /// Meta error body, in order; later ones succeed.
    pub fn fail_uploads(&self, statuses: &[u16]) {
        self.inner.lock().media_failures.extend(statuses.iter().copied());
    }

    /// From now on each `/messages` request (with no scripted answer queued) fails with
    /// probability `p` with a kind chosen at random from `kinds`. `p = 0.0` disables.
    pub fn set_failure_rate(&self, p: f64, kinds: Vec<Scripted>) {
        let mut st = self.inner.lock();
        st.failure_rate = p;
        st.failure_kinds = kinds;
    }

    /// Latency added to every answer.
    pub fn set_latency(&self, d: Duration) {
        self.inner.lock().latency = d;
    }

    /// Registers downloadable media, as if a user had sent it.
    pub fn add_media(&self, id: &str, bytes: impl Into<Vec<u8>>, mime: &str) {
        self.inner
            .lock()
            .media
            .insert(id.to_string(), (bytes.into(), mime.to_string()));
    }

    /// Adds a media file received by business number `phone_number_id`: with a token of its
    /// own (see [`FakeGraph::add_number`]), only that token can read it.
    pub fn add_media_of(&self, phone_number_id: &str, id: &str, bytes: impl Into<Vec<u8>>, mime: &str) {
        self.add_media(id, bytes, mime);
        self.inner
            .lock()
            .media_owner
            .insert(id.to_string(), phone_number_id.to_string());
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().requests.clone()
    }

    /// `(wamid, body)` of every accepted message send (not mark-as-read), in order.
    pub fn accepted(&self) -> Vec<(String, Value)> {
        self.inner.lock().accepted.clone()
    }

    /// The requests received after the first `n`, in arrival order (a bench reads only what
    /// is new).
    pub fn requests_since(&self, n: usize) -> Vec<Recorded> {
        let st = self.inner.lock();
        st.requests.get(n..).map(<[Recorded]>::to_vec).unwrap_or_default()
    }

    /// How many sends were accepted so far.
    pub fn accepted_count(&self) -> usize {
        self.inner.lock().accepted.len()
    }

    /// Every uploaded media file.
    pub fn uploads(&self) -> Vec<Upload> {
        self.inner.lock().uploads.clone()
    }

    /// Polls until at least `n` sends were accepted; panics after `timeout`.
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            let acc = self.accepted();
            if acc.len() >= n {
                return acc;
            }
            if Instant::now() >= deadline {
                panic!(
                    "fake graph: {} accepted after {timeout:?}, wanted {n}: {acc:?}",
                    acc.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Reply, std::io::Error> {
    let at = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let authorization = header("authorization");
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let file_offset = header("file_offset");
    let content_type = header("content-type").unwrap_or_default();
    let raw = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(std::io::Error::other(e)),
    };
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // A number's own token for its messages and media; any known token to read media.
    let authorized = {
        let st = inner.lock();
        let bearer = |t: &str| authorization.as_deref() == Some(format!("Bearer {t}").as_str());
        match (
            segs.as_slice(),
            st.number_tokens.get(segs.get(1).copied().unwrap_or("")),
        ) {
            (["v21.0", _, "messages" | "media"], Some(own)) => bearer(own),
            (["v21.0", _, "messages" | "media"], None) => bearer(&inner.token),
            _ => match segs
                .last()
                .and_then(|id| st.media_owner.get(*id))
                .and_then(|n| st.number_tokens.get(n))
            {
                Some(owner) => bearer(owner),
                None => bearer(&inner.token) || st.number_tokens.values().any(|t| bearer(t)),
            },
        }
    };

    let media = segs.last().and_then(|id| inner.lock().media.get(*id).cloned()); // guard dropped here
    let mut extra_delay = Duration::ZERO;
    let mut wamid = None;
    let mut file = None;
    let outcome = match (method.as_str(), segs.as_slice()) {
        ("POST", ["v21.0", _, "messages"]) => {
            let script = {
                let mut st = inner.lock();
                let p = st.failure_rate;
                st.scripted.pop_front().or_else(|| {
                    let mut rng = rand::rng();
                    (p > 0.0 && !st.failure_kinds.is_empty() && rng.random_bool(p.min(1.0)))
                        .then(|| st.failure_kinds[rng.random_range(0..st.failure_kinds.len())].clone())
                })
            };
            match script {
                Some(Scripted::Status(s)) if s < 400 => Outcome::Answer(s, json!({})),
                Some(Scripted::Status(s)) => {
                    let (code, msg) = match s {
                        401 => (190, "Invalid OAuth access token"),
                        429 => (130429, "Rate limit hit"),
                        503 => (2, "Service temporarily unavailable"),
                        _ => (1, "An unknown error occurred"),
                    };
                    Outcome::Answer(s, meta_error(&inner, code, None, msg, msg))
                }
                Some(Scripted::RateLimited) => Outcome::Answer(
                    429,
                    meta_error(
                        &inner,
                        130429,
                        None,
                        "(#130429) Rate limit hit",
                        "Cloud API message throughput has been reached.",
                    ),
                ),
                Some(Scripted::MetaError {
                    http,
                    code,
                    message,
                    details,
                }) => Outcome::Answer(http, meta_error(&inner, code, None, &message, &details)),
                Some(Scripted::Hang) => Outcome::Hang,
                Some(Scripted::Drop) => Outcome::Drop,
                Some(Scripted::Delay(d)) => {
                    extra_delay = d;
                    messages(&inner, authorized, segs[1], &body, &mut wamid)
                }
                None => messages(&inner, authorized, segs[1], &body, &mut wamid),
            }
        }
        ("POST", ["v21.0", _, "media"]) if !authorized => unauthorized(&inner),
        ("POST", ["v21.0", _, "media"]) if inner.lock().media_failures.front().is_some() => {
            let status = inner.lock().media_failures.pop_front().unwrap_or(500);
            Outcome::Answer(
                status,
                meta_error(
                    &inner,
                    1,
                    None,
                    "An unknown error occurred",
                    "An unknown error occurred",
                ),
            )
        }
        ("POST", ["v21.0", _, "media"]) => match upload(&inner, &content_type, &raw) {
            Ok(v) => Outcome::Answer(200, v),
            Err(msg) => bad_param(&inner, &msg),
        },
        ("GET" | "POST" | "DELETE", ["v21.0", _, "message_templates"]) if !authorized => unauthorized(&inner),
        ("GET", ["v21.0", waba, "message_templates"]) => list_templates(&inner, waba, &query),
        ("POST", ["v21.0", waba, "message_templates"]) => create_template(&inner, waba, &body),
        ("DELETE", ["v21.0", waba, "message_templates"]) => delete_template(&inner, waba, &query),
        ("POST", ["v21.0", _, "uploads"]) if !authorized => unauthorized(&inner),
        ("POST", ["v21.0", _app, "uploads"]) => {
            let len = query.get("file_length").and_then(|l| l.parse::<usize>().ok());
            match (len, query.get("file_type")) {
                (Some(len), Some(_)) => {
                    let id = {
                        let mut st = inner.lock();
                        st.next_template += 1;
                        let id = format!("upload:MTphdHRhY2htZW50{}", st.next_template);
                        st.upload_sessions.insert(id.clone(), len);
                        id
                    };
                    Outcome::Answer(200, json!({ "id": id }))
                }
                _ => bad_param(&inner, "(#100) file_length and file_type are required"),
            }
        }
        ("POST", ["v21.0", session]) if session.starts_with("upload:") => {
            let oauth = authorization.as_deref() == Some(format!("OAuth {}", inner.token).as_str());
            let declared = inner.lock().upload_sessions.get(*session).copied();
            match (oauth, declared, file_offset.as_deref()) {
                (false, ..) => unauthorized(&inner),
                (true, None, _) => unknown_object(&inner, "post", session),
                (true, Some(len), Some("0")) if len == raw.len() => {
                    let h = format!("4::aW1hZ2UvanBlZw==:ARb{}", raw.len());
                    inner.lock().handles.push(h.clone());
                    Outcome::Answer(200, json!({ "h": h }))
                }
                (true, Some(len), _) => bad_param(
                    &inner,
                    &format!("(#100) the upload must start at file_offset 0 and carry the {len} bytes declared"),
                ),
            }
        }
        ("POST", ["v21.0", id]) if inner.lock().templates.iter().any(|t| t.id == *id) => {
            if authorized {
                edit_template(&inner, id, &body)
            } else {
                unauthorized(&inner)
            }
        }
        ("GET", ["v21.0", _] | ["files", _]) if !authorized => unauthorized(&inner),
        ("GET", ["v21.0", id]) => match media {
            Some((bytes, mime)) => Outcome::Answer(
                200,
                json!({
                    "url": format!("{}/files/{id}", inner.base),
                    "mime_type": mime,
                    "sha256": hex::encode(Sha256::digest(&bytes)),
                    "file_size": bytes.len(),
                    "id": id,
                    "messaging_product": "whatsapp",
                }),
            ),
            None => unknown_object(&inner, "get", id),
        },
        ("GET", ["files", _]) => match media {
            Some(m) => {
                file = Some(m);
                Outcome::Answer(200, Value::Null)
            }
            None => Outcome::Answer(
                404,
                meta_error(&inner, 100, Some(33), "Media not found", "Media not found"),
            ),
        },
        _ => {
            let msg = format!("Unknown path components: {path}");
            Outcome::Answer(404, meta_error(&inner, 100, None, &msg, &msg))
        }
    };

    let (latency, status) = {
        let mut st = inner.lock();
        let status = match &outcome {
            Outcome::Answer(s, _) => *s,
            _ => 0,
        };
        if let Some(id) = &wamid {
            st.accepted.push((id.clone(), body.clone()));
        }
        st.requests.push(Recorded {
            method,
            path,
            authorization,
            body,
            at,
            outcome_status: status,
            wamid,
        });
        (st.latency, status)
    };
    tokio::time::sleep(latency + extra_delay).await;
    let (ct, payload) = match (outcome, file) {
        (Outcome::Hang, _) => std::future::pending().await,
        // An error from the service makes hyper close the connection without a response.
        (Outcome::Drop, _) => return Err(std::io::Error::other("scripted connection drop")),
        (Outcome::Answer(..), Some((bytes, mime))) => (mime, Bytes::from(bytes)),
        (Outcome::Answer(_, v), None) => ("application/json".to_string(), Bytes::from(v.to_string())),
    };
    let mut resp = Response::new(Full::new(payload));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert("content-type", ct.parse().unwrap());
    Ok(resp)
}

/// Normal behaviour of `POST /{phone_number_id}/messages`.
fn messages(inner: &Inner, authorized: bool, pnid: &str, body: &Value, wamid: &mut Option<String>) -> Outcome {
    if !authorized {
        return unauthorized(inner);
    }
    if body.get("type").and_then(Value::as_str) == Some("template")
        && let Some(refused) = check_template_send(inner, pnid, body)
    {
        return refused;
    }
    if pnid.is_empty() || !pnid.bytes().all(|b| b.is_ascii_digit()) {
        return unknown_object(inner, "post", pnid);
    }
    if body.get("messaging_product").and_then(Value::as_str) != Some("whatsapp") {
        return bad_param(inner, "(#100) The parameter messaging_product is required.");
    }
    if body.get("status").and_then(Value::as_str) == Some("read") {
        if let Err(msg) = check_read(body) {
            return bad_param(inner, &msg);
        }
        return match body.get("message_id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Outcome::Answer(200, json!({"success": true})),
            _ => bad_param(inner, "(#100) The parameter message_id is required."),
        };
    }
    if let Err(msg) = check_message(body) {
        return bad_param(inner, &msg);
    }
    let to = body.get("to").and_then(Value::as_str);
    let input = to
        .or_else(|| body.get("recipient").and_then(Value::as_str))
        .unwrap_or_default();
    let known_as = to.and_then(|t| inner.lock().wa_ids.get(t).cloned());
    let contact = match to {
        Some(to) => json!({"input": input, "wa_id": known_as.as_deref().unwrap_or(to)}),
        None => json!({"input": input, "user_id": input}),
    };
    let id = {
        let mut st = inner.lock();
        st.next_wamid += 1;
        format!("wamid.FAKE{}", st.next_wamid)
    };
    *wamid = Some(id.clone());
    Outcome::Answer(
        200,
        json!({"messaging_product": "whatsapp", "contacts": [contact],
               "messages": [{"id": id, "message_status": "accepted"}]}),
    )
}

const TYPES: [&str; 11] = [
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "template",
    "interactive",
    "location",
    "contacts",
    "reaction",
];

/// A mark-as-read body (`status: read`), optionally with `typing_indicator: {type: "text"}`
/// (the typing indicator): nothing else is accepted.
fn check_read(b: &Value) -> Result<(), String> {
    let obj = b.as_object().ok_or("(#100) Invalid body.")?;
    for k in obj.keys() {
        if !["messaging_product", "status", "message_id", "typing_indicator"].contains(&k.as_str()) {
            return Err(format!("(#100) Param {k} is not valid for a read receipt."));
        }
    }
    if let Some(t) = obj.get("typing_indicator") {
        let ok = t
            .as_object()
            .is_some_and(|t| t.len() == 1 && t.get("type") == Some(&json!("text")));
        if !ok {
            return Err("(#100) Param typing_indicator['type'] must be one of {text}.".into());
        }
    }
    Ok(())
}

/// A media object (`audio`, or an interactive header's `image`/`video`/`document`): exactly
/// one of `id` or `link`, and only the `allowed` other keys.
fn check_media_object(name: &str, m: &Value, allowed: &[&str]) -> Result<(), String> {
    let obj = m
        .as_object()
        .ok_or_else(|| format!("(#100) The parameter {name} must be an object."))?;
    if obj.contains_key("id") == obj.contains_key("link") {
        return Err(format!("(#100) Param {name} must have exactly one of id or link."));
    }
    for (k, v) in obj {
        match k.as_str() {
            "id" | "link" if v.as_str().is_some_and(|s| !s.is_empty()) => {}
            "id" | "link" => return Err(format!("(#100) Param {name}['{k}'] must be a non-empty string.")),
            k if allowed.contains(&k) => {}
            k => return Err(format!("(#100) Param {name}['{k}'] is not valid.")),
        }
    }
    Ok(())
}

/// An interactive header: text for every kind, image/video/document for `button` and
/// `cta_url` (Meta's reply buttons and CTA URL docs), and only text for `list`.
fn check_header(kind: &str, h: &Value) -> Result<(), String> {
    let ty = h.get("type").and_then(Value::as_str).unwrap_or_default();
    let allowed: &[&str] = match kind {
        "list" => &["text"],
        _ => &["text", "image", "video", "document"],
    };
    if !allowed.contains(&ty) {
        return Err(format!(
            "(#100) Param interactive['header']['type'] must be one of {{{}}} - got \"{ty}\".",
            allowed.join(", ")
        ));
    }
    let obj = h.as_object().map(|o| o.len()).unwrap_or_default();
    if obj != 2 {
        return Err("(#100) Param interactive['header'] must have its type and that one field.".into());
    }
    if ty == "text" {
        let t = h["text"].as_str().unwrap_or_default();
        if t.is_empty() || t.chars().count() > 60 {
            return Err("(#100) Param interactive['header']['text'] must be 1 to 60 characters long.".into());
        }
        return Ok(());
    }
    let extra: &[&str] = if ty == "document" { &["filename"] } else { &[] };
    check_media_object(&format!("interactive['header']['{ty}']"), &h[ty], extra)
}

/// Meta's parameter checks on a message body; `Err` is the error message.
fn check_message(b: &Value) -> Result<(), String> {
    let s = |p: &str| b.pointer(p).and_then(Value::as_str);
    let len = |p: &str| s(p).map_or(0, |v| v.chars().count());
    let too_long = |name: &str, max: usize| format!("(#100) Param {name} must be at most {max} characters long.");
    match (s("/to"), s("/recipient")) {
        (Some(to), _) if to.is_empty() || !to.bytes().all(|c| c.is_ascii_digit()) => {
            return Err("(#100) Invalid parameter: to must be a phone number in digits.".into());
        }
        (None, None | Some("")) => return Err("(#100) The parameter to is required.".into()),
        _ => {}
    }
    let ty = s("/type").unwrap_or("text");
    if !TYPES.contains(&ty) {
        return Err(format!(
            "(#100) Param type must be one of {{{}}} - got \"{ty}\".",
            TYPES.join(", ")
        ));
    }
    if !b.get(ty).is_some_and(Value::is_object) && ty != "contacts" {
        return Err(format!("(#100) The parameter {ty} is required."));
    }
    if ty == "text" && s("/text/body").is_none_or(str::is_empty) {
        return Err("(#100) The parameter text['body'] is required.".into());
    }
    if len("/text/body") > 4096 {
        return Err(too_long("text['body']", 4096));
    }
    if len("/biz_opaque_callback_data") > 512 {
        return Err(too_long("biz_opaque_callback_data", 512));
    }
    if ty == "audio" {
        check_media_object("audio", &b["audio"], &["voice"])?;
        if b.pointer("/audio/voice").is_some_and(|v| !v.is_boolean()) {
            return Err("(#100) Param audio['voice'] must be a boolean.".into());
        }
    }
    if ty == "interactive"
        && let Some(h) = b.pointer("/interactive/header")
    {
        check_header(s("/interactive/type").unwrap_or_default(), h)?;
    }
    if ty == "interactive" && s("/interactive/type") == Some("button") {
        let buttons = b.pointer("/interactive/action/buttons").and_then(Value::as_array);
        let buttons = buttons.map(Vec::as_slice).unwrap_or_default();
        if buttons.is_empty() || buttons.len() > 3 {
            return Err("(#100) Param interactive['action']['buttons'] must have 1 to 3 elements.".into());
        }
        for (i, bt) in buttons.iter().enumerate() {
            let t = bt.pointer("/reply/title").and_then(Value::as_str).unwrap_or_default();
            if t.is_empty() || t.chars().count() > 20 {
                return Err(too_long(
                    &format!("interactive['action']['buttons'][{i}]['reply']['title']"),
                    20,
                ));
            }
        }
    }
    if ty == "interactive" && s("/interactive/type") == Some("list") {
        let sections = b.pointer("/interactive/action/sections").and_then(Value::as_array);
        let rows: usize = sections
            .into_iter()
            .flatten()
            .map(|s| s["rows"].as_array().map_or(0, Vec::len))
            .sum();
        if rows == 0 || rows > 10 {
            return Err("(#100) Param interactive['action']['sections'] must have 1 to 10 rows in total.".into());
        }
    }
    Ok(())
}

/// `POST /{phone_number_id}/media`: minimal multipart parsing.
fn upload(inner: &Inner, content_type: &str, body: &[u8]) -> Result<Value, String> {
    let parts = parse_multipart(content_type, body).ok_or("(#100) The request is not valid multipart/form-data.")?;
    let field = |n: &str| parts.iter().find(|p| p.name == n);
    if field("messaging_product").map(|p| p.data.as_slice()) != Some(b"whatsapp") {
        return Err("(#100) The parameter messaging_product is required.".into());
    }
    let file = field("file").ok_or("(#100) The parameter file is required.")?;
    let ty = field("type").map(|p| String::from_utf8_lossy(&p.data).into_owned());
    let mime = file
        .content_type
        .clone()
        .or(ty)
        .unwrap_or_else(|| "application/octet-stream".into());
    let ttl_minutes = match field("ttl_minutes") {
        None => None,
        Some(p) => match String::from_utf8_lossy(&p.data).parse::<u32>() {
            Ok(n) if (60..=43_200).contains(&n) => Some(n),
            _ => return Err("(#100) Param ttl_minutes must be an integer between 60 and 43200.".into()),
        },
    };
    let mut st = inner.lock();
    st.next_media += 1;
    let id = format!("media-{}", st.next_media);
    st.media.insert(id.clone(), (file.data.clone(), mime.clone()));
    st.uploads.push(Upload {
        id: id.clone(),
        filename: file.filename.clone(),
        mime_type: mime,
        bytes: file.data.clone(),
        ttl_minutes,
    });
    Ok(json!({ "id": id }))
}

struct Part {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

fn parse_multipart(content_type: &str, body: &[u8]) -> Option<Vec<Part>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let delim = format!("--{boundary}").into_bytes();
    let mut pos = find(body, &delim, 0)? + delim.len();
    let mut parts = Vec::new();
    while !body.get(pos..)?.starts_with(b"--") {
        let start = pos + 2; // CRLF after the delimiter
        let next = find(body, &delim, start)?;
        let chunk = body.get(start..next.checked_sub(2)?)?; // CRLF before the next delimiter
        let hdr_end = find(chunk, b"\r\n\r\n", 0)?;
        let headers = std::str::from_utf8(&chunk[..hdr_end]).ok()?;
        let mut part = Part {
            name: String::new(),
            filename: None,
            content_type: None,
            data: chunk[hdr_end + 4..].to_vec(),
        };
        for line in headers.lines() {
            let (k, v) = line.split_once(':')?;
            if k.eq_ignore_ascii_case("content-type") {
                part.content_type = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("content-disposition") {
                for p in v.split(';').map(str::trim) {
                    if let Some(n) = p.strip_prefix("name=") {
                        part.name = n.trim_matches('"').to_string();
                    } else if let Some(f) = p.strip_prefix("filename=") {
                        part.filename = Some(f.trim_matches('"').to_string());
                    }
                }
            }
        }
        parts.push(part);
        pos = next + delim.len();
    }
    Some(parts)
}

/// Meta's error body.
fn meta_error(inner: &Inner, code: i64, subcode: Option<i64>, message: &str, details: &str) -> Value {
    let trace = {
        let mut st = inner.lock();
        st.next_trace += 1;
        st.next_trace
    };
    let mut e = json!({
        "message": message,
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": format!("AfakeTrace{trace}"),
    });
    if let Some(sc) = subcode {
        e["error_subcode"] = json!(sc);
    }
    json!({ "error": e })
}

fn unauthorized(inner: &Inner) -> Outcome {
    let msg = "Invalid OAuth access token - Cannot parse access token";
    Outcome::Answer(401, meta_error(inner, 190, None, msg, msg))
}

fn bad_param(inner: &Inner, msg: &str) -> Outcome {
    Outcome::Answer(400, meta_error(inner, 100, None, msg, msg))
}

fn unknown_object(inner: &Inner, verb: &str, id: &str) -> Outcome {
    let msg = format!(
        "Unsupported {verb} request. Object with ID '{id}' does not exist, cannot be loaded due to missing \
         permissions, or does not support this operation."
    );
    Outcome::Answer(400, meta_error(inner, 100, Some(33), &msg, &msg))
}

impl FakeGraph {
    /// Business number `pnid` belongs to WABA `waba`: its template sends are checked against
    /// that WABA's templates (name, language, status, parameter counts), as Meta does.
    pub fn set_waba(&self, pnid: &str, waba: &str) {
        self.inner
            .lock()
            .number_wabas
            .insert(pnid.to_string(), waba.to_string());
    }

    /// Adds a template as if created in WhatsApp Manager; returns its id.
    pub fn add_template(
        &self,
        waba: &str,
        name: &str,
        language: &str,
        category: &str,
        status: &str,
        components: Value,
    ) -> String {
        insert_template(
            &mut self.inner.lock(),
            FakeTemplate {
                id: String::new(),
                waba: waba.to_string(),
                name: name.to_string(),
                language: language.to_string(),
                category: category.to_string(),
                status: status.to_string(),
                quality: "UNKNOWN".into(),
                components,
                parameter_format: "POSITIONAL".into(),
                edits: Vec::new(),
                deleted: None,
            },
        )
    }

    /// Meta's review (or pause) decides: the template's status becomes `status`.
    pub fn set_template_status(&self, name: &str, language: &str, status: &str) -> String {
        let mut st = self.inner.lock();
        let t = st
            .templates
            .iter_mut()
            .find(|t| t.name == name && t.language == language && t.deleted.is_none())
            .expect("template exists in the fake");
        t.status = status.to_string();
        t.id.clone()
    }

    /// Every template the fake holds (deleted ones too).
    pub fn templates(&self) -> Vec<FakeTemplate> {
        self.inner.lock().templates.clone()
    }

    /// Header example handles the resumable upload gave out.
    pub fn handles(&self) -> Vec<String> {
        self.inner.lock().handles.clone()
    }
}

/// Adds `t` under a new Meta-like id; returns the id.
fn insert_template(st: &mut State, mut t: FakeTemplate) -> String {
    st.next_template += 1;
    t.id = format!("{}", 1_000_000_000_000u64 + st.next_template);
    let id = t.id.clone();
    st.templates.push(t);
    id
}

fn template_json(t: &FakeTemplate) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "language": t.language,
        "status": t.status,
        "category": t.category,
        "components": t.components,
        "parameter_format": t.parameter_format,
        "quality_score": {"score": t.quality},
    })
}

/// `GET /{waba}/message_templates`: pages of `limit` (default 25, as Meta), cursors.
fn list_templates(inner: &Inner, waba: &str, query: &HashMap<String, String>) -> Outcome {
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(25)
        .clamp(1, 100);
    let start = match query.get("after") {
        Some(a) => match a.strip_prefix("QVFIU").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return bad_param(inner, "(#100) Invalid cursor"),
        },
        None => 0,
    };
    let st = inner.lock();
    let all: Vec<&FakeTemplate> = st
        .templates
        .iter()
        .filter(|t| t.waba == waba && t.deleted.is_none())
        .collect();
    let page: Vec<Value> = all.iter().skip(start).take(limit).map(|t| template_json(t)).collect();
    let end = start + page.len();
    let mut answer = json!({
        "data": page,
        "paging": {"cursors": {"before": format!("QVFIU{start}"), "after": format!("QVFIU{end}")}},
    });
    if end < all.len() {
        answer["paging"]["next"] = json!(format!(
            "{}/v21.0/{waba}/message_templates?limit={limit}&after=QVFIU{end}",
            inner.base
        ));
    }
    Outcome::Answer(200, answer)
}

fn template_error(inner: &Inner, subcode: i64, title: &str) -> Outcome {
    Outcome::Answer(400, meta_error(inner, 100, Some(subcode), "Invalid parameter", title))
}

/// `POST /{waba}/message_templates`.
fn create_template(inner: &Inner, waba: &str, body: &Value) -> Outcome {
    let name = body.get("name").and_then(Value::as_str).unwrap_or("");
    let language = body.get("language").and_then(Value::as_str).unwrap_or("");
    let category = body.get("category").and_then(Value::as_str).unwrap_or("");
    let Some(components) = body.get("components").and_then(Value::as_array) else {
        return bad_param(inner, "(#100) The parameter components is required.");
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return bad_param(
            inner,
            "(#100) Param name must contain only lowercase characters, numbers and underscores.",
        );
    }
    if language.is_empty() {
        return bad_param(inner, "(#100) The parameter language is required.");
    }
    if !["UTILITY", "MARKETING", "AUTHENTICATION"].contains(&category) {
        return bad_param(
            inner,
            "(#100) Param category must be one of {UTILITY, MARKETING, AUTHENTICATION}.",
        );
    }
    if !components.iter().any(|c| c["type"] == "BODY") {
        return bad_param(inner, "(#100) A template needs a BODY component.");
    }
    for c in components {
        if c["type"] == "HEADER" && ["IMAGE", "DOCUMENT", "VIDEO"].contains(&c["format"].as_str().unwrap_or("")) {
            let handle = c
                .pointer("/example/header_handle/0")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !inner.lock().handles.iter().any(|h| h == handle) {
                return bad_param(
                    inner,
                    "(#100) Param example.header_handle must be a handle from the resumable upload API.",
                );
            }
        }
        if c["type"] == "BODY" {
            let text = c["text"].as_str().unwrap_or("");
            let params = count_placeholders(text);
            let examples = c
                .pointer("/example/body_text/0")
                .and_then(Value::as_array)
                .map(Vec::len)
                .or_else(|| {
                    c.pointer("/example/body_text_named_params")
                        .and_then(Value::as_array)
                        .map(Vec::len)
                })
                .unwrap_or(0);
            if params != examples {
                return template_error(
                    inner,
                    2388043,
                    "Message template's body has parameters without examples.",
                );
            }
        }
    }
    let now = Instant::now();
    let mut st = inner.lock();
    if st
        .templates
        .iter()
        .any(|t| t.waba == waba && t.name == name && t.language == language && t.deleted.is_none())
    {
        drop(st);
        return template_error(inner, 2388024, "Content in this language already exists.");
    }
    if st.templates.iter().any(|t| {
        t.waba == waba
            && t.name == name
            && t.deleted
                .is_some_and(|d| now.duration_since(d) < Duration::from_secs(30 * 86400))
    }) {
        drop(st);
        return template_error(
            inner,
            2388023,
            "Message template is being deleted: its name cannot be used for 4 weeks.",
        );
    }
    if st
        .templates
        .iter()
        .filter(|t| t.waba == waba && t.deleted.is_none())
        .count()
        >= FAKE_MAX_TEMPLATES
    {
        drop(st);
        return template_error(
            inner,
            2388084,
            "The WhatsApp Business Account reached its maximum number of message templates (250).",
        );
    }
    let id = insert_template(
        &mut st,
        FakeTemplate {
            id: String::new(),
            waba: waba.to_string(),
            name: name.to_string(),
            language: language.to_string(),
            category: category.to_string(),
            status: "PENDING".into(),
            quality: "UNKNOWN".into(),
            components: Value::Array(components.clone()),
            parameter_format: body
                .get("parameter_format")
                .and_then(Value::as_str)
                .unwrap_or("POSITIONAL")
                .to_string(),
            edits: Vec::new(),
            deleted: None,
        },
    );
    Outcome::Answer(200, json!({ "id": id, "status": "PENDING", "category": category }))
}

/// `POST /{template_id}`: edit components (Meta's limits on approved templates).
fn edit_template(inner: &Inner, id: &str, body: &Value) -> Outcome {
    let now = Instant::now();
    let mut st = inner.lock();
    let t = st
        .templates
        .iter_mut()
        .find(|t| t.id == id)
        .expect("checked by the router");
    if let Some(c) = body.get("category").and_then(Value::as_str)
        && c != t.category
        && t.status == "APPROVED"
    {
        drop(st);
        return template_error(inner, 2388078, "The category of an approved template cannot be edited.");
    }
    if !["APPROVED", "REJECTED", "PAUSED"].contains(&t.status.as_str()) {
        drop(st);
        return template_error(
            inner,
            2388025,
            "Only APPROVED, REJECTED or PAUSED templates can be edited.",
        );
    }
    if t.status == "APPROVED" {
        let day = t
            .edits
            .iter()
            .filter(|e| now.duration_since(**e) < Duration::from_secs(86400))
            .count();
        let month = t
            .edits
            .iter()
            .filter(|e| now.duration_since(**e) < Duration::from_secs(30 * 86400))
            .count();
        if day >= 1 || month >= 10 {
            drop(st);
            return template_error(
                inner,
                2388308,
                "An approved template can be edited once a day and 10 times in 30 days.",
            );
        }
        t.edits.push(now);
    }
    if let Some(c) = body.get("components") {
        t.components = c.clone();
    }
    t.status = "PENDING".into();
    Outcome::Answer(200, json!({ "success": true }))
}

/// `DELETE /{waba}/message_templates?name=…[&hsm_id=…]`.
fn delete_template(inner: &Inner, waba: &str, query: &HashMap<String, String>) -> Outcome {
    let Some(name) = query.get("name") else {
        return bad_param(inner, "(#100) The parameter name is required.");
    };
    let now = Instant::now();
    let mut st = inner.lock();
    let mut n = 0;
    for t in st
        .templates
        .iter_mut()
        .filter(|t| t.waba == waba && &t.name == name && t.deleted.is_none())
    {
        if query.get("hsm_id").is_none_or(|h| *h == t.id) {
            t.deleted = Some(now);
            t.status = "DELETED".into();
            n += 1;
        }
    }
    drop(st);
    if n == 0 {
        return template_error(inner, 2593002, "Message template not found.");
    }
    Outcome::Answer(200, json!({ "success": true }))
}

fn count_placeholders(text: &str) -> usize {
    let mut n = 0;
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        match rest[i..].find("}}") {
            Some(j) => {
                n += 1;
                rest = &rest[i + j + 2..];
            }
            None => break,
        }
    }
    n
}

/// A template send checked the way Meta does, when the number's WABA is known.
fn check_template_send(inner: &Inner, pnid: &str, body: &Value) -> Option<Outcome> {
    let st = inner.lock();
    let waba = st.number_wabas.get(pnid)?.clone();
    let name = body.pointer("/template/name").and_then(Value::as_str).unwrap_or("");
    let lang = body
        .pointer("/template/language/code")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(t) = st
        .templates
        .iter()
        .find(|t| {
            t.waba == waba
                && t.name == name
                && t.language.replace('-', "_") == lang.replace('-', "_")
                && t.deleted.is_none()
        })
        .cloned()
    else {
        drop(st);
        return Some(Outcome::Answer(
            404,
            meta_error(
                inner,
                132001,
                None,
                "(#132001) Template name does not exist in the translation",
                &format!("template name ({name}) does not exist in {lang}"),
            ),
        ));
    };
    drop(st);
    match t.status.as_str() {
        "APPROVED" => {}
        "PAUSED" => {
            return Some(Outcome::Answer(
                400,
                meta_error(
                    inner,
                    132015,
                    None,
                    "(#132015) Template is paused",
                    "Template is paused due to low quality",
                ),
            ));
        }
        "DISABLED" => {
            return Some(Outcome::Answer(
                400,
                meta_error(
                    inner,
                    132016,
                    None,
                    "(#132016) Template is disabled",
                    "Template is disabled",
                ),
            ));
        }
        _ => {
            return Some(Outcome::Answer(
                404,
                meta_error(
                    inner,
                    132001,
                    None,
                    "(#132001) Template name does not exist in the translation",
                    "template is not approved",
                ),
            ));
        }
    }
    let expected = t
        .components
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "BODY"))
        .and_then(|b| b["text"].as_str())
        .map(count_placeholders)
        .unwrap_or(0);
    let sent = body
        .pointer("/template/components")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "body"))
        .and_then(|b| b["parameters"].as_array())
        .map(Vec::len)
        .unwrap_or(0);
    (expected != sent).then(|| {
        Outcome::Answer(400, meta_error(inner, 132000, None, "(#132000) Number of parameters does not match the expected number of params", &format!("body: number of localizable_params ({sent}) does not match the expected number of params ({expected})")))
    })
}
