//! The console's pages: server-rendered HTML (every customer string escaped), forms that
//! work without script, and one small embedded script for live refresh and notifications.
//!
//! Every route checks the session and the role on the server: a viewer's request to reply or
//! take over is refused here, whatever the page showed.

use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use super::accounts::{self, ConsoleSession};
use super::strings::{FR, Strings};
use crate::App;
use crate::http::{HttpResponse, full};
use crate::store::{Conversation, Direction, InboxFilter, MessageRecord, ThreadAnchor};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The Content-Security-Policy of every console page: nothing but walua's own assets, no
/// inline script, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Conversations on one inbox page (older ones: "Plus anciennes", by cursor).
const INBOX_LIMIT: usize = 100;
/// Messages on one thread page (older ones: "Messages plus anciens", by cursor).
const THREAD_LIMIT: usize = 100;
/// Conversations and messages a search shows, each.
const SEARCH_LIMIT: usize = 30;

/// Whether `path` is one of the console's.
pub fn is_console_path(path: &str) -> bool {
    path == "/" || path == "/login" || path == "/logout" || path.starts_with("/console/") || path.starts_with("/c/")
}

/// Routes a console request.
pub async fn route(app: &App, peer: SocketAddr, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let t = &FR;
    match (&method, path.as_str()) {
        (&Method::GET, "/console/assets/console.css") => asset(CSS, "text/css; charset=utf-8"),
        (&Method::GET, "/console/assets/console.js") => asset(JS, "text/javascript; charset=utf-8"),
        (&Method::GET, "/login") => page(StatusCode::OK, &login_page(t, None)),
        (&Method::POST, "/login") => sign_in(app, peer, req).await,
        _ => {
            let Some(session) = accounts::session_of(app, &req).await else {
                return if method == Method::GET && !path.starts_with("/console/events") {
                    redirect("/login")
                } else {
                    plain(StatusCode::UNAUTHORIZED, "sign in first")
                };
            };
            let segments: Vec<String> = path
                .trim_start_matches('/')
                .split('/')
                .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
                .collect();
            let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
            let query = req.uri().query().unwrap_or("").to_string();
            let secure = accounts::request_is_https(app, peer, &req);
            match (&method, segs.as_slice()) {
                (&Method::GET, [""]) => refreshed(app, &session, secure, inbox_page(app, &session, &query).await),
                (&Method::GET, ["console", "inbox"]) => fragment(inbox_list(app, &query).await),
                (&Method::GET, ["console", "events"]) => events(app),
                (&Method::GET, ["console", "media", id]) => media(app, id).await,
                (&Method::POST, ["logout"]) => sign_out(app, peer, &session, req).await,
                (&Method::GET, ["c", contact]) => {
                    refreshed(app, &session, secure, thread_page(app, &session, contact, &query).await)
                }
                (&Method::GET, ["c", contact, "messages"]) => fragment(
                    thread_messages(app, Some(&session), contact, ThreadAnchor::Latest)
                        .await
                        .0,
                ),
                (&Method::POST, ["c", contact, action @ ("attach" | "template")]) => {
                    let contact = contact.to_string();
                    let action = action.to_string();
                    super::compose::post_multipart(app, &session, &contact, &action, req).await
                }
                (&Method::POST, ["c", contact, action]) => {
                    let contact = contact.to_string();
                    let action = action.to_string();
                    act(app, &session, &contact, &action, req).await
                }
                (&Method::GET, ["console", "stats"]) => super::stats::stats_page(app, &session, &query).await,
                (_, s) if super::ops::is_ops(s) => {
                    let segs: Vec<&str> = s.to_vec();
                    super::ops::route(app, &session, &method, &segs, &query, req).await
                }
                _ => plain(StatusCode::NOT_FOUND, "not found"),
            }
        }
    }
}

/// A page load sends the session cookie again: the session slides on the server, and the
/// browser must keep the cookie as long.
fn refreshed(app: &App, session: &ConsoleSession, secure: bool, mut r: HttpResponse) -> HttpResponse {
    if r.status() == StatusCode::OK
        && let Ok(v) = accounts::session_cookie(&session.token, secure, app.config.console.session_ttl).parse()
    {
        r.headers_mut().insert("set-cookie", v);
    }
    r
}

pub(super) fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_text(s)
}

pub(super) fn attr(s: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_double_quoted_attribute(s)
}

pub(super) fn url_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn secured(mut r: HttpResponse) -> HttpResponse {
    let h = r.headers_mut();
    h.insert("content-security-policy", CSP.parse().expect("static header"));
    h.insert("x-content-type-options", "nosniff".parse().expect("static header"));
    h.insert("referrer-policy", "same-origin".parse().expect("static header"));
    h.insert("x-frame-options", "DENY".parse().expect("static header"));
    h.insert("cache-control", "no-store".parse().expect("static header"));
    r
}

pub(super) fn page(status: StatusCode, html: &str) -> HttpResponse {
    secured(
        Response::builder()
            .status(status)
            .header("content-type", "text/html; charset=utf-8")
            .body(full(html.to_string()))
            .expect("static response parts are valid"),
    )
}

fn fragment(html: String) -> HttpResponse {
    page(StatusCode::OK, &html)
}

pub(super) fn plain(status: StatusCode, text: &str) -> HttpResponse {
    secured(crate::http::text(status, text.to_string()))
}

fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    secured(
        Response::builder()
            .header("content-type", content_type)
            .body(full(Bytes::from_static(body.as_bytes())))
            .expect("static response parts are valid"),
    )
}

pub(super) fn redirect(to: &str) -> HttpResponse {
    secured(
        Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header("location", to)
            .body(full(Bytes::new()))
            .expect("static response parts are valid"),
    )
}

/// The page frame: header with the user and sign-out, the body, the script.
pub(super) fn layout(t: &Strings, title: &str, session: Option<&ConsoleSession>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"fr\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · {}</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head><body data-help-text=\"{}\"><header><h1><a href=\"/\">{}</a></h1>",
        esc(title),
        t.app,
        attr(t.notify_help),
        t.app
    );
    if let Some(s) = session {
        let _ = write!(
            out,
            "<nav class=\"main\"><a href=\"/\">{}</a><a href=\"/console/outbox\" id=\"nav-ops\">{}</a><a href=\"/console/stats\" id=\"nav-stats\">{}</a></nav>",
            t.inbox, t.operations, t.stats.title
        );
        let _ = write!(
            out,
            "<span id=\"live\" data-off=\"{}\"></span><span class=\"who\">{} · {}</span><form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>{}</button></form>",
            attr(t.offline),
            esc(&s.user),
            esc(s.role.label_fr()),
            attr(&s.csrf),
            t.sign_out
        );
    }
    out.push_str("</header><main>");
    out.push_str(body);
    out.push_str("</main><script src=\"/console/assets/console.js\"></script></body></html>");
    out
}

fn login_page(t: &Strings, error: Option<&str>) -> String {
    let mut body = format!(
        "<form class=\"login\" method=\"post\" action=\"/login\"><h2>{}</h2>",
        t.sign_in_title
    );
    if let Some(e) = error {
        let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    let _ = write!(
        body,
        "<label for=\"user\">{}</label><input id=\"user\" name=\"user\" autocomplete=\"username\" required><label for=\"password\">{}</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required><button id=\"sign-in\">{}</button></form>",
        t.user, t.password, t.sign_in
    );
    layout(t, t.sign_in_title, None, &body)
}

pub(super) async fn form(req: Request<Incoming>) -> Vec<(String, String)> {
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    form_urlencoded::parse(&body).into_owned().collect()
}

pub(super) fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

async fn sign_in(app: &App, peer: SocketAddr, req: Request<Incoming>) -> HttpResponse {
    let secure = accounts::request_is_https(app, peer, &req);
    let f = form(req).await;
    match accounts::sign_in(app, field(&f, "user"), field(&f, "password"), peer.ip()).await {
        Ok((token, _csrf, _role)) => {
            let mut r = redirect("/");
            r.headers_mut().insert(
                "set-cookie",
                accounts::session_cookie(&token, secure, app.config.console.session_ttl)
                    .parse()
                    .expect("cookie is a valid header"),
            );
            r
        }
        Err(e) => {
            tracing::info!(user = field(&f, "user"), peer = %peer.ip(), error = %e, "console sign-in refused");
            page(StatusCode::UNAUTHORIZED, &login_page(&FR, Some(FR.sign_in_refused)))
        }
    }
}

async fn sign_out(app: &App, peer: SocketAddr, session: &ConsoleSession, req: Request<Incoming>) -> HttpResponse {
    let secure = accounts::request_is_https(app, peer, &req);
    let f = form(req).await;
    if !accounts::csrf_ok(session, field(&f, "csrf")) {
        return plain(StatusCode::FORBIDDEN, "bad form token");
    }
    let token = session.token.clone();
    let _ = app.store.blocking(move |s| s.session_delete(&token)).await;
    let mut r = redirect("/login");
    r.headers_mut().insert(
        "set-cookie",
        accounts::clear_cookie(secure)
            .parse()
            .expect("cookie is a valid header"),
    );
    r
}

fn events(app: &App) -> HttpResponse {
    let stream = app.live.event_stream(app.shutdown.clone());
    secured(
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-store")
            .header("x-accel-buffering", "no")
            .body(stream.boxed())
            .expect("static response parts are valid"),
    )
}

/// Inbound media, as an attachment that is never sniffed: a customer may send HTML or SVG.
async fn media(app: &App, id: &str) -> HttpResponse {
    let Ok(id) = id.parse::<u64>() else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let Ok(Some(m)) = app.store.blocking(move |s| s.message(id)).await else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let Some(file) = m.media_file.clone() else {
        return plain(StatusCode::NOT_FOUND, "not downloaded");
    };
    let base = app
        .config
        .store
        .path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let path = base.join(&file);
    // The stored path is walua's own, but never leave the media folder.
    if file.contains("..") {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mime = crate::media::mime_for(&name);
            // Images, audio and video are shown in the page; anything else only downloads.
            let shown = [
                "image/jpeg",
                "image/png",
                "image/webp",
                "audio/ogg",
                "audio/mpeg",
                "audio/aac",
                "video/mp4",
            ];
            let ct = if shown.contains(&mime) {
                mime
            } else {
                "application/octet-stream"
            };
            secured(
                Response::builder()
                    .header("content-type", ct)
                    .header(
                        "content-disposition",
                        format!("attachment; filename=\"{}\"", name.replace(['"', '\\'], "_")),
                    )
                    .body(full(bytes))
                    .expect("static response parts are valid"),
            )
        }
        Err(_) => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

fn window_left(conv: &Conversation) -> Option<i64> {
    let last = conv.last_inbound_to(None)?;
    let left = last + crate::store::outbox::WINDOW_SECS - chrono::Utc::now().timestamp();
    (left > 0).then_some(left)
}

pub(super) fn duration_fr(t: &Strings, secs: i64) -> String {
    let (h, m) = (secs / 3600, (secs % 3600) / 60);
    if h > 0 {
        format!("{h} {} {m:02}", t.hours)
    } else {
        format!("{m} {}", t.minutes)
    }
}

pub(super) fn local_time(app: &App, unix_secs: i64) -> String {
    chrono::DateTime::from_timestamp(unix_secs, 0)
        .map(|t| {
            t.with_timezone(&app.config.scripts.timezone)
                .format("%d/%m %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

fn contact_label(conv: &Conversation) -> String {
    let mut parts = Vec::new();
    if let Some(n) = &conv.name {
        parts.push(n.clone());
    }
    if let Some(u) = &conv.username {
        parts.push(format!("@{u}"));
    }
    match (&conv.wa_id, &conv.user_id) {
        (Some(p), _) => parts.push(format!("+{p}")),
        (None, Some(b)) => parts.push(b.clone()),
        _ => parts.push(conv.contact.clone()),
    }
    parts.join(" · ")
}

/// A query parameter's value (`""` when absent).
fn query_param(query: &str, name: &str) -> String {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The inbox filter a query asks for (`?f=unread`…), empty for all.
fn inbox_filter(query: &str) -> String {
    query_param(query, "f")
}

/// One page of the inbox (`?after=CURSOR` for the older ones), read from the store's recency
/// index: no message is read but each row's last send.
async fn inbox_list(app: &App, query: &str) -> String {
    let t = &FR;
    let filter = inbox_filter(query);
    let after = query_param(query, "after");
    let f = InboxFilter::parse(&filter);
    let page = app
        .store
        .blocking(move |s| {
            let cursor = (!after.is_empty()).then_some(after.as_str());
            s.inbox_page(f, cursor, INBOX_LIMIT, crate::store::now_ms())
        })
        .await
        .unwrap_or_default();
    let mut out = String::new();
    if page.rows.is_empty() {
        let _ = write!(out, "<p class=\"empty\">{}</p>", t.no_conversation);
    } else {
        out.push_str("<ul class=\"inbox\">");
        let now = crate::store::now_ms();
        for r in &page.rows {
            let json = super::handover::conversation_json(&r.conv, now);
            let handover = json.get("handover").filter(|h| !h.is_null()).cloned();
            let help = json.get("help").filter(|h| !h.is_null()).cloned();
            let scenario = r.scenario.as_ref().map(|sc| format!("{} · {}", sc.scenario, sc.step));
            conversation_row(app, t, &mut out, &r.conv, r.unread, r.failed, scenario, handover, help);
        }
        out.push_str("</ul>");
    }
    if let Some(next) = &page.next {
        let mut href = format!("/?after={}", url_segment(next));
        if !filter.is_empty() {
            let _ = write!(href, "&f={}", url_segment(&filter));
        }
        let _ = write!(
            out,
            "<p class=\"more\"><a id=\"older\" href=\"{}\">{}</a></p>",
            attr(&href),
            t.older_conversations
        );
    }
    out
}

/// One conversation's `<li>` in the inbox.
#[allow(clippy::too_many_arguments)]
fn conversation_row(
    app: &App,
    t: &Strings,
    out: &mut String,
    c: &Conversation,
    unread: u64,
    failed: bool,
    scenario: Option<String>,
    handover: Option<Value>,
    help: Option<Value>,
) {
    let _ = write!(
        out,
        "<li class=\"conv\" data-contact=\"{}\"{}><a href=\"/c/{}\"><div class=\"row1\"><span class=\"name\">{}</span><span class=\"when\">{}</span></div><div class=\"last\">{}</div><div class=\"badges\">",
        attr(&c.contact),
        if help.is_some() {
            format!(" data-help=\"{}\"", attr(&c.contact))
        } else {
            String::new()
        },
        url_segment(&c.contact),
        esc(&contact_label(c)),
        local_time(app, c.last_message_at),
        esc(&c.last_summary),
    );
    if unread > 0 {
        let _ = write!(out, "<span class=\"badge unread\">{} {}</span>", unread, t.unread);
    }
    match window_left(c) {
        Some(left) => {
            let _ = write!(
                out,
                "<span class=\"badge open\">{} · {}</span>",
                t.window_open,
                duration_fr(t, left)
            );
        }
        None => {
            let _ = write!(out, "<span class=\"badge closed\">{}</span>", t.window_closed);
        }
    }
    if failed {
        let _ = write!(out, "<span class=\"badge failed\">{}</span>", t.failed_send);
    }
    if let Some(s) = &scenario {
        let _ = write!(out, "<span class=\"badge\">{} {}</span>", t.scenario, esc(s));
    }
    if let Some(h) = &handover {
        let _ = write!(
            out,
            "<span class=\"badge handover\">{} {}</span>",
            t.taken_by,
            esc(h["by"].as_str().unwrap_or("?"))
        );
    }
    if let Some(h) = &help {
        let _ = write!(
            out,
            "<span class=\"badge help\">{} : {}</span>",
            t.help_requested,
            esc(h["reason"].as_str().unwrap_or(""))
        );
    }
    out.push_str("</div></a></li>");
}

/// Search results (`/?q=`): matching contacts, then matching messages, each linking to its
/// conversation (a message at its place in the thread).
async fn search_results(app: &App, q: &str) -> String {
    let t = &FR;
    let query = q.to_string();
    let hits = app
        .store
        .blocking(move |s| s.search(&query, SEARCH_LIMIT))
        .await
        .unwrap_or_default();
    let mut out = String::from("<div id=\"search-results\">");
    if hits.conversations.is_empty() && hits.messages.is_empty() {
        let _ = write!(out, "<p class=\"empty\">{}</p>", t.search_none);
    }
    if !hits.conversations.is_empty() {
        let _ = write!(
            out,
            "<h3>{}</h3><ul class=\"inbox\" id=\"found-contacts\">",
            t.search_contacts
        );
        for c in &hits.conversations {
            let _ = write!(
                out,
                "<li class=\"conv found\" data-contact=\"{}\"><a href=\"/c/{}\"><div class=\"row1\"><span class=\"name\">{}</span><span class=\"when\">{}</span></div><div class=\"last\">{}</div></a></li>",
                attr(&c.contact),
                url_segment(&c.contact),
                esc(&contact_label(c)),
                local_time(app, c.last_message_at),
                esc(&c.last_summary)
            );
        }
        out.push_str("</ul>");
    }
    if !hits.messages.is_empty() {
        let _ = write!(
            out,
            "<h3>{}</h3><ul class=\"inbox\" id=\"found-messages\">",
            t.search_messages
        );
        for m in &hits.messages {
            let label = m
                .conversation
                .as_ref()
                .map(contact_label)
                .unwrap_or_else(|| m.contact.clone());
            let _ = write!(
                out,
                "<li class=\"hit\" data-contact=\"{}\" data-id=\"{}\"><a href=\"/c/{}?around={}#m{}\"><div class=\"row1\"><span class=\"name\">{}{}</span><span class=\"when\">{}</span></div><div class=\"last\">{}</div></a></li>",
                attr(&m.contact),
                m.id,
                url_segment(&m.contact),
                m.id,
                m.id,
                if m.direction == Direction::Outbound { "→ " } else { "" },
                esc(&label),
                local_time(app, m.timestamp),
                esc(&m.snippet)
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</div>");
    out
}

async fn inbox_page(app: &App, session: &ConsoleSession, query: &str) -> HttpResponse {
    let t = &FR;
    let filter = inbox_filter(query);
    let q = query_param(query, "q");
    let after = query_param(query, "after");
    let mut body = format!(
        "<h2>{}</h2><form class=\"search\" method=\"get\" action=\"/\" role=\"search\"><input id=\"q\" name=\"q\" type=\"search\" value=\"{}\" placeholder=\"{}\" aria-label=\"{}\"><button id=\"search\">{}</button></form><nav class=\"filters\">",
        t.inbox,
        attr(&q),
        attr(t.search_placeholder),
        attr(t.search_placeholder),
        t.search_button
    );
    for (key, label) in [
        ("", t.filter_all),
        ("unread", t.filter_unread),
        ("open", t.filter_open),
        ("failed", t.filter_failed),
        ("handover", t.filter_handover),
    ] {
        let href = if key.is_empty() {
            "/".to_string()
        } else {
            format!("/?f={key}")
        };
        let _ = write!(
            body,
            "<a href=\"{href}\"{}>{label}</a>",
            if filter == key { " class=\"on\"" } else { "" }
        );
    }
    body.push_str("</nav>");
    if !q.trim().is_empty() {
        let _ = write!(body, "{}", search_results(app, &q).await);
        return page(StatusCode::OK, &layout(t, t.inbox, Some(session), &body));
    }
    let list_url = if filter.is_empty() {
        "/console/inbox".to_string()
    } else {
        format!("/console/inbox?f={}", url_segment(&filter))
    };
    // Only the first page refreshes live: an older page stays where the agent is.
    let live = if after.is_empty() {
        format!(" data-live=\"{}\"", attr(&list_url))
    } else {
        String::new()
    };
    let _ = write!(body, "<div id=\"inbox\"{live}>{}</div>", inbox_list(app, query).await);
    page(StatusCode::OK, &layout(t, t.inbox, Some(session), &body))
}

fn status_tick(t: &Strings, m: &MessageRecord) -> String {
    let (mark, class, title) = match m.status.as_str() {
        "queued" | "retry" => ("🕓", "", t.status_queued),
        "sending" => ("🕓", "", t.status_sending),
        "cancelled" => ("⊘", " failed", t.status_cancelled),
        "sent" => ("✓", "", t.status_sent),
        "delivered" => ("✓✓", "", t.status_delivered),
        "read" | "played" => ("✓✓", " read", t.status_read),
        "failed" => ("✗", " failed", t.status_failed),
        "dry_run" => ("○", "", t.status_dry_run),
        _ => ("?", "", t.status_unknown),
    };
    format!(
        "<span class=\"tick{class}\" data-status=\"{}\" title=\"{}\">{mark}</span>",
        attr(&m.status),
        attr(title)
    )
}

/// A message as the customer saw it.
fn render_content(app: &App, t: &Strings, m: &MessageRecord) -> String {
    let raw = &m.raw;
    let text = |p: &str| raw.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
    let media_link = |label: &str| -> String {
        if m.media_file.is_some() {
            format!("/console/media/{}", m.id)
        } else {
            let _ = label;
            String::new()
        }
    };
    match (m.direction, m.kind.as_str()) {
        (_, "text") => esc(&text("/text/body")).into_owned(),
        (Direction::Inbound, "image" | "sticker") => {
            let caption = text("/image/caption");
            match media_link("image").as_str() {
                "" => format!("🖼 <em>{}</em> {}", t.media_missing, esc(&caption)),
                url => format!("<img src=\"{}\" alt=\"\">{}", attr(url), esc(&caption)),
            }
        }
        (Direction::Inbound, "audio") => match media_link("audio").as_str() {
            "" => format!("🎤 <em>{}</em>", t.media_missing),
            url => format!("<audio controls preload=\"none\" src=\"{}\"></audio>", attr(url)),
        },
        (Direction::Inbound, "video" | "document") => {
            let name = text(&format!("/{}/filename", m.kind));
            match media_link("doc").as_str() {
                "" => format!("📄 {} <em>{}</em>", esc(&name), t.media_missing),
                url => format!("📄 <a href=\"{}\">{} {}</a>", attr(url), t.document, esc(&name)),
            }
        }
        (_, "location") => {
            let lat = raw.pointer("/location/latitude").and_then(Value::as_f64).unwrap_or(0.0);
            let lon = raw
                .pointer("/location/longitude")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            format!(
                "📍 {} {} <a href=\"https://www.openstreetmap.org/?mlat={lat}&amp;mlon={lon}\" rel=\"noopener noreferrer\" target=\"_blank\">{lat:.5}, {lon:.5}</a>",
                t.location,
                esc(&text("/location/name"))
            )
        }
        (Direction::Inbound, "interactive" | "button") => {
            let title = raw
                .pointer("/interactive/button_reply/title")
                .or_else(|| raw.pointer("/interactive/list_reply/title"))
                .or_else(|| raw.pointer("/button/text"))
                .and_then(Value::as_str)
                .unwrap_or(&m.summary);
            format!("🔘 {}", esc(title))
        }
        (Direction::Outbound, "template") => {
            let name = text("/template/name");
            let lang = text("/template/language/code");
            let values: Vec<String> = raw
                .pointer("/template/components")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "body"))
                .and_then(|b| b["parameters"].as_array())
                .map(|p| p.iter().map(|v| v["text"].as_str().unwrap_or("").to_string()).collect())
                .unwrap_or_default();
            let body = app
                .outbox
                .templates()
                .and_then(|c| c.describe(m.phone_number_id.as_deref(), &name, &lang))
                .and_then(|d| d["text"].as_str().map(str::to_string))
                .map(|mut text| {
                    for (i, v) in values.iter().enumerate() {
                        text = text.replace(&format!("{{{{{}}}}}", i + 1), v);
                    }
                    text
                })
                .unwrap_or_else(|| values.join(" · "));
            format!(
                "<span class=\"tpl\">{} {}</span>\n{}",
                t.template,
                esc(&name),
                esc(&body)
            )
        }
        (Direction::Outbound, "interactive") => {
            let body = text("/interactive/body/text");
            let mut out = esc(&body).into_owned();
            let buttons: Vec<String> = raw
                .pointer("/interactive/action/buttons")
                .and_then(Value::as_array)
                .map(|b| {
                    b.iter()
                        .filter_map(|b| b.pointer("/reply/title").and_then(Value::as_str))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let rows: Vec<String> = raw
                .pointer("/interactive/action/sections")
                .and_then(Value::as_array)
                .map(|s| {
                    s.iter()
                        .flat_map(|s| s["rows"].as_array().cloned().unwrap_or_default())
                        .filter_map(|r| r["title"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if !buttons.is_empty() || !rows.is_empty() {
                out.push_str("<span class=\"buttons\">");
                for b in buttons.iter().chain(rows.iter()) {
                    let _ = write!(out, "<span>{}</span>", esc(b));
                }
                out.push_str("</span>");
            }
            out
        }
        (Direction::Outbound, kind @ ("image" | "document" | "video" | "audio")) => {
            let caption = text(&format!("/{kind}/caption"));
            let name = text(&format!("/{kind}/filename"));
            format!("📎 {} {}", esc(&name), esc(&caption))
        }
        _ => esc(&m.summary).into_owned(),
    }
}

/// Which messages a thread page shows: `?before=ID` (older page), `?around=ID` (a search
/// result), else the latest.
fn thread_anchor(query: &str) -> ThreadAnchor {
    let id = |name: &str| query_param(query, name).parse::<u64>().ok();
    match (id("before"), id("around")) {
        (Some(b), _) => ThreadAnchor::Before(b),
        (None, Some(a)) => ThreadAnchor::Around(a),
        _ => ThreadAnchor::Latest,
    }
}

/// The thread's messages (HTML) — one page, with links to older and newer ones — and the
/// last message id shown.
async fn thread_messages(
    app: &App,
    session: Option<&ConsoleSession>,
    contact: &str,
    anchor: ThreadAnchor,
) -> (String, u64) {
    let t = &FR;
    let c = contact.to_string();
    let window = app
        .store
        .blocking(move |s| s.conversation_window(&c, anchor, THREAD_LIMIT))
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let messages = &window.messages;
    let seg = url_segment(contact);
    let mut out = String::from("<div class=\"thread\">");
    if let Some(older) = window.older {
        let _ = write!(
            out,
            "<p class=\"more\"><a id=\"older-messages\" href=\"/c/{seg}?before={older}\">{}</a></p>",
            t.older_messages
        );
    }
    let mut last = 0;
    let focus = match anchor {
        ThreadAnchor::Around(id) => id,
        _ => 0,
    };
    for m in messages {
        last = last.max(m.id);
        let dir = if m.direction == Direction::Inbound { "in" } else { "out" };
        let _ = write!(
            out,
            "<div class=\"msg {dir}{}\" id=\"m{}\" data-id=\"{}\" data-kind=\"{}\">{}<span class=\"meta\">{}",
            if m.id == focus { " found" } else { "" },
            m.id,
            m.id,
            attr(&m.kind),
            render_content(app, t, m),
            local_time(app, m.timestamp)
        );
        if m.direction == Direction::Outbound {
            let _ = write!(out, " {}", status_tick(t, m));
            if let Some(session) = session {
                out.push_str(&super::compose::message_actions(t, session, &url_segment(contact), m));
            }
            if let Some(e) = &m.error {
                let _ = write!(
                    out,
                    "<span class=\"error\">{} {} : {} — {}</span>",
                    t.status_failed,
                    e.code,
                    esc(&e.title),
                    esc(&e.explanation)
                );
            }
        }
        out.push_str("</span>");
        if m.direction == Direction::Inbound
            && let Some(s) = &m.script
        {
            let ran = if s.scripts.is_empty() {
                t.no_script.to_string()
            } else {
                s.scripts.join(", ")
            };
            match &s.error {
                Some(e) => {
                    let _ = write!(
                        out,
                        "<div class=\"script err\">{} : {} — {} : {}</div>",
                        t.scripts_ran,
                        esc(&ran),
                        t.script_error,
                        esc(e)
                    );
                }
                None => {
                    let _ = write!(out, "<div class=\"script\">{} : {}</div>", t.scripts_ran, esc(&ran));
                }
            }
        }
        out.push_str("</div>");
    }
    if window.newer {
        let _ = write!(
            out,
            "<p class=\"more\"><a id=\"newer-messages\" href=\"/c/{seg}\">{}</a></p>",
            t.newer_messages
        );
    }
    out.push_str("</div>");
    (out, last)
}

async fn thread_page(app: &App, session: &ConsoleSession, contact: &str, query: &str) -> HttpResponse {
    let t = &FR;
    let c = contact.to_string();
    let found = app
        .store
        .blocking(move |s| {
            let conv = s.conversation(&c)?;
            let handover = conv.as_ref().and_then(|conv| {
                let json = super::handover::conversation_json(conv, crate::store::now_ms());
                json.get("handover").filter(|h| !h.is_null()).cloned()
            });
            let partner = match &conv {
                Some(conv) => s.partner_for_contact(conv)?,
                None => None,
            };
            let optout = s.optout_of(&c)?;
            Ok((conv, handover, (partner, optout)))
        })
        .await;
    let Ok((Some(conv), handover, (partner, optout))) = found else {
        return plain(StatusCode::NOT_FOUND, "no such conversation");
    };
    let anchor = thread_anchor(query);
    let (messages, last) = thread_messages(app, Some(session), &conv.contact, anchor).await;
    if last > 0 {
        let key = conv.contact.clone();
        let _ = app.store.blocking(move |s| s.console_mark_read(&key, last)).await;
        app.live.bump();
    }
    let seg = url_segment(&conv.contact);
    let mut body = format!(
        "<p><a href=\"/\">{}</a></p><h2>{}</h2><div class=\"bar\">",
        t.back,
        esc(&contact_label(&conv))
    );
    match window_left(&conv) {
        Some(left) => {
            let _ = write!(
                body,
                "<span class=\"badge open\">{} · {}</span>",
                t.window_open,
                duration_fr(t, left)
            );
        }
        None => {
            let _ = write!(body, "<span class=\"badge closed\">{}</span>", t.window_closed);
        }
    }
    if let Some(o) = &optout {
        let _ = write!(
            body,
            "<span class=\"badge failed\" id=\"opted-out\" data-scope=\"{}\" title=\"{}\">{}</span>",
            o.scope.as_str(),
            attr(&format!("{} — {}", local_time(app, o.since_ms / 1000), o.source)),
            match o.scope {
                crate::optout::Scope::All => t.opted_out_all,
                crate::optout::Scope::Marketing => t.opted_out_marketing,
            }
        );
    }
    if let Some(p) = &partner {
        let _ = write!(
            body,
            "<span class=\"badge partner\" id=\"partner\" data-partner=\"{}\" title=\"{}\">Odoo : {} (#{})</span>",
            p.id,
            attr(&if p.ambiguous.is_empty() {
                String::new()
            } else {
                format!(
                    "{} {}",
                    t.partner_ambiguous,
                    p.ambiguous
                        .iter()
                        .map(|i| format!("#{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
            esc(&p.name),
            p.id
        );
    }
    if session.role.can_reply() {
        match &handover {
            Some(_) => {
                let _ = write!(
                    body,
                    "<form method=\"post\" action=\"/c/{seg}/release\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button id=\"give-back\" class=\"secondary\">{}</button></form>",
                    attr(&session.csrf),
                    t.give_back
                );
            }
            None => {
                let _ = write!(
                    body,
                    "<form method=\"post\" action=\"/c/{seg}/handover\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button id=\"take-over\">{}</button></form>",
                    attr(&session.csrf),
                    t.take_over
                );
            }
        }
    }
    body.push_str("</div>");
    if let Some(h) = &handover {
        let until = h["until_ms"]
            .as_i64()
            .map(|ms| local_time(app, ms / 1000))
            .unwrap_or_default();
        let _ = write!(
            body,
            "<p class=\"notice\" id=\"handover\">{} {} — {} {}</p>",
            t.taken_by,
            esc(h["by"].as_str().unwrap_or("?")),
            t.handover_until,
            esc(&until)
        );
    }
    if let Some(err) = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "err")
        .map(|(_, v)| v.into_owned())
    {
        let _ = write!(
            body,
            "<p class=\"notice error\" role=\"alert\">{} : {}</p>",
            t.reply_failed,
            esc(&err)
        );
    }
    // An older page, or a search result's place, does not refresh to the latest.
    let live = if anchor == ThreadAnchor::Latest {
        format!(" data-live=\"/c/{seg}/messages\" data-scroll")
    } else {
        String::new()
    };
    let _ = write!(body, "<div id=\"messages\"{live}>{messages}</div>");
    if !session.role.can_reply() {
        let _ = write!(body, "<p class=\"notice\">{}</p>", t.read_only);
    } else if window_left(&conv).is_some() {
        let _ = write!(
            body,
            "<form class=\"reply\" method=\"post\" action=\"/c/{seg}/reply\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><textarea id=\"reply\" name=\"text\" required maxlength=\"4096\" placeholder=\"{}\"></textarea><button id=\"send\">{}</button></form>",
            attr(&session.csrf),
            attr(t.reply_placeholder),
            t.send
        );
        body.push_str(&super::compose::attach_form(t, session, &seg));
    } else {
        let _ = write!(
            body,
            "<p class=\"notice\" id=\"window-closed\">{}</p>",
            t.window_closed_help
        );
        body.push_str(&super::compose::template_picker(app, session, &conv, query));
    }
    page(StatusCode::OK, &layout(t, &contact_label(&conv), Some(session), &body))
}

/// Reply, take over, give back: POST forms with the session's CSRF token; the role is
/// checked here.
async fn act(app: &App, session: &ConsoleSession, contact: &str, action: &str, req: Request<Incoming>) -> HttpResponse {
    let f = form(req).await;
    if !accounts::csrf_ok(session, field(&f, "csrf")) {
        return plain(StatusCode::FORBIDDEN, "bad form token");
    }
    if !session.role.can_reply() {
        return plain(StatusCode::FORBIDDEN, FR.forbidden);
    }
    let back = format!("/c/{}", url_segment(contact));
    match action {
        "reply" => {
            let text = field(&f, "text").trim().to_string();
            if text.is_empty() {
                return redirect(&back);
            }
            let request: Result<crate::outbox::SendRequest, _> =
                serde_json::from_value(serde_json::json!({ "to": contact, "type": "text", "text": text }));
            let Ok(request) = request else {
                return plain(StatusCode::BAD_REQUEST, "bad reply");
            };
            match app.outbox.enqueue(request, format!("console:{}", session.user)).await {
                Ok(m) if m.status == "failed" => {
                    let why = m.error.map(|e| e.title).unwrap_or_default();
                    redirect(&format!("{back}?err={}", url_segment(&why)))
                }
                Ok(_) => redirect(&back),
                Err(e) => redirect(&format!("{back}?err={}", url_segment(&e.to_string()))),
            }
        }
        "handover" => match super::handover::take_over(app, contact, &session.user, None).await {
            Ok(_) => redirect(&back),
            Err(e) => redirect(&format!("{back}?err={}", url_segment(&e.to_string()))),
        },
        "resend" | "cancel" => super::compose::resend_or_cancel(app, session, contact, action, field(&f, "id")).await,
        "release" => match super::handover::give_back(app, contact).await {
            Ok(_) => redirect(&back),
            Err(e) => redirect(&format!("{back}?err={}", url_segment(&e.to_string()))),
        },
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    }
}
