//! Answers beyond a line of text: a template when the 24 h window is closed (picker, form
//! and preview), a file, and the fate of a send (resend a failed one, cancel a queued one).
//!
//! Forms post to `/c/{contact}/template`, `/attach` (multipart: the file goes up as media,
//! then the message is queued), `/resend` and `/cancel`; the role and the CSRF token are
//! checked here, on the server.

use std::fmt::Write as _;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{Map, Value, json};

use super::accounts::{self, ConsoleSession};
use super::pages::{attr, esc, plain, redirect, url_segment};
use super::strings::{FR, Strings};
use crate::App;
use crate::http::HttpResponse;
use crate::store::{Conversation, Direction, MessageRecord};

/// Largest file an agent may attach: Meta's limit for a document (images 5 MB, videos 16 MB;
/// Meta refuses bigger ones with its own explanation).
pub const MAX_ATTACHMENT: usize = 100 * 1024 * 1024;

/// A file sent with a form.
pub struct Upload {
    /// Its name on the agent's machine (no path).
    pub filename: String,
    /// Its type, as the browser said or guessed from the name.
    pub mime: String,
    /// Its bytes.
    pub bytes: Bytes,
}

/// A multipart form: its text fields and its first non-empty file.
pub struct Multipart {
    /// Text fields in order.
    pub fields: Vec<(String, String)>,
    /// The file, if one was chosen.
    pub file: Option<Upload>,
}

impl Multipart {
    /// The value of text field `name` (empty when absent).
    pub(super) fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// Reads a multipart/form-data body (at most [`MAX_ATTACHMENT`] and the server's read timeout).
pub(super) async fn read_multipart(app: &App, req: Request<Incoming>) -> Result<Multipart, String> {
    let boundary = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or("the form must be sent as multipart/form-data")?;
    let body = crate::http::read_body(app, req, MAX_ATTACHMENT + 64 * 1024)
        .await
        .map_err(|e| e.to_string())?;
    let stream = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(body)]);
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut out = Multipart {
        fields: Vec::new(),
        file: None,
    };
    while let Some(field) = parts.next_field().await.map_err(|e| e.to_string())? {
        let name = field.name().unwrap_or("").to_string();
        match field.file_name().map(str::to_string) {
            Some(filename) => {
                let mime = field
                    .content_type()
                    .map(|m| m.essence_str().to_string())
                    .filter(|m| m != "application/octet-stream")
                    .unwrap_or_else(|| crate::media::mime_for(&filename).to_string());
                let bytes = field.bytes().await.map_err(|e| e.to_string())?;
                if !filename.is_empty() && !bytes.is_empty() && out.file.is_none() {
                    out.file = Some(Upload { filename, mime, bytes });
                }
            }
            None => {
                let text = field.text().await.map_err(|e| e.to_string())?;
                out.fields.push((name, text));
            }
        }
    }
    Ok(out)
}

/// The kind of message a file goes out as.
fn kind_of(mime: &str) -> &'static str {
    match mime {
        "image/jpeg" | "image/png" => "image",
        "video/mp4" | "video/3gpp" => "video",
        m if m.starts_with("audio/") => "audio",
        _ => "document",
    }
}

/// Where the thread goes back to, with an error shown on top when there is one.
fn back(contact: &str, err: Option<&str>) -> HttpResponse {
    let base = format!("/c/{}", url_segment(contact));
    match err {
        Some(e) => redirect(&format!("{base}?err={}", url_segment(e))),
        None => redirect(&base),
    }
}

/// Queues `request` for the session's user; back to the thread, with Meta's or walua's refusal.
async fn queue(app: &App, session: &ConsoleSession, contact: &str, request: Value) -> HttpResponse {
    let request: crate::outbox::SendRequest = match serde_json::from_value(request) {
        Ok(r) => r,
        Err(e) => return back(contact, Some(&e.to_string())),
    };
    match app.outbox.enqueue(request, format!("console:{}", session.user)).await {
        Ok(m) if m.status == "failed" => {
            let why = m
                .error
                .map(|e| format!("{} — {}", e.title, e.explanation))
                .unwrap_or_default();
            back(contact, Some(&why))
        }
        Ok(_) => back(contact, None),
        Err(e) => back(contact, Some(&e.to_string())),
    }
}

/// The error text of an API-style answer (`{"error": …}`), for the thread's notice.
pub(super) async fn answer_text(r: HttpResponse) -> String {
    use http_body_util::BodyExt;
    let status = r.status();
    let bytes = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let text = v["error"].as_str().unwrap_or("").to_string();
    let explanation = v["explanation"].as_str().unwrap_or("");
    match (text.is_empty(), explanation.is_empty()) {
        (true, _) => status.to_string(),
        (false, true) => text,
        (false, false) => format!("{text} — {explanation}"),
    }
}

/// `POST /c/{contact}/attach` and `/template`: multipart forms.
pub async fn post_multipart(
    app: &App,
    session: &ConsoleSession,
    contact: &str,
    action: &str,
    req: Request<Incoming>,
) -> HttpResponse {
    let form = match read_multipart(app, req).await {
        Ok(f) => f,
        Err(e) => return back(contact, Some(&e)),
    };
    if !accounts::csrf_ok(session, form.get("csrf")) {
        return plain(StatusCode::FORBIDDEN, "bad form token");
    }
    if !session.role.can_reply() {
        return plain(StatusCode::FORBIDDEN, FR.forbidden);
    }
    match action {
        "attach" => attach(app, session, contact, form).await,
        _ => send_template(app, session, contact, form).await,
    }
}

/// Uploads a form's file as media of the number that answers `contact` (the admin API's
/// upload); a refusal comes back as the text the thread shows.
async fn upload(app: &App, contact: &str, file: &Upload) -> Result<crate::http::admin::KeptMedia, String> {
    let kept = crate::http::admin::keep_media(
        app,
        file.bytes.to_vec(),
        &file.filename,
        &file.mime,
        None,
        Some(contact.to_string()),
        None,
    )
    .await;
    match kept {
        Ok(m) => Ok(m),
        Err(r) => Err(answer_text(r).await),
    }
}

/// Uploads the file as media of the number the contact is answered from, then queues it.
async fn attach(app: &App, session: &ConsoleSession, contact: &str, form: Multipart) -> HttpResponse {
    let caption = form.get("caption").trim().to_string();
    let Some(file) = form.file else {
        return back(contact, Some(FR.attach_missing));
    };
    if let Err(why) = crate::http::admin::check_filename(&file.filename) {
        return back(contact, Some(&format!("{} {why}", FR.attach_name)));
    }
    let kind = kind_of(&file.mime);
    let media = match upload(app, contact, &file).await {
        Ok(m) => m,
        Err(why) => return back(contact, Some(&why)),
    };
    tracing::info!(user = %session.user, contact, file = %file.filename, kind, "console attachment uploaded");
    let mut request = json!({ "to": contact, "type": kind, "media": media.id });
    if let Some(from) = media.from {
        request["from"] = json!(from);
    }
    if kind == "document" {
        request["filename"] = json!(file.filename);
    }
    if !caption.is_empty() && kind != "audio" {
        request["caption"] = json!(caption);
    }
    queue(app, session, contact, request).await
}

/// Builds the parameter table from the form (`p.NAME`, `h.NAME`, `b.INDEX`, a header file or
/// link) and queues the template; the outbox checks it against the registry.
async fn send_template(app: &App, session: &ConsoleSession, contact: &str, form: Multipart) -> HttpResponse {
    let name = form.get("name").to_string();
    let lang = form.get("lang").to_string();
    if name.is_empty() || lang.is_empty() {
        return back(contact, Some(FR.template_missing));
    }
    let mut params = Map::new();
    let mut header = Map::new();
    let mut buttons: Vec<(usize, String)> = Vec::new();
    for (k, v) in &form.fields {
        if let Some(p) = k.strip_prefix("p.") {
            params.insert(p.to_string(), json!(v));
        } else if let Some(p) = k.strip_prefix("h.") {
            header.insert(p.to_string(), json!(v));
        } else if let Some(i) = k.strip_prefix("b.").and_then(|i| i.parse::<usize>().ok()) {
            buttons.push((i, v.clone()));
        }
    }
    let mut from = None;
    if let Some(file) = form.file {
        match upload(app, contact, &file).await {
            Ok(m) => {
                let mut media = json!({ "id": m.id });
                if kind_of(&file.mime) == "document" {
                    media["filename"] = json!(file.filename);
                }
                params.insert("header".into(), media);
                from = m.from;
            }
            Err(why) => return back(contact, Some(&why)),
        }
    } else if !form.get("hlink").trim().is_empty() {
        params.insert("header".into(), json!(form.get("hlink").trim()));
    } else if !header.is_empty() {
        // A text header's parameters go under their names (named templates) or as `header`.
        if header.len() == 1 && header.contains_key("1") {
            params.insert("header".into(), header.remove("1").unwrap_or_default());
        } else {
            params.extend(header);
        }
    }
    if !buttons.is_empty() {
        let last = buttons.iter().map(|(i, _)| *i).max().unwrap_or(0);
        let mut list = vec![Value::Null; last + 1];
        for (i, v) in buttons {
            list[i] = json!(v);
        }
        params.insert("buttons".into(), Value::Array(list));
    }
    let mut request = json!({ "to": contact, "type": "template", "name": name, "lang": lang, "params": params });
    if let Some(from) = from {
        request["from"] = json!(from);
    }
    queue(app, session, contact, request).await
}

/// `POST /c/{contact}/resend` and `/cancel` (url-encoded forms with the message `id`).
pub async fn resend_or_cancel(
    app: &App,
    session: &ConsoleSession,
    contact: &str,
    action: &str,
    id: &str,
) -> HttpResponse {
    let Ok(id) = id.parse::<u64>() else {
        return back(contact, Some(FR.no_such_message));
    };
    // The message must be this conversation's: a form cannot act on another contact's.
    let key = contact.to_string();
    let belongs = app
        .store
        .blocking(move |s| {
            let conv = s.conversation(&key)?;
            let m = s.message(id)?;
            Ok(matches!((conv, m), (Some(c), Some(m)) if m.contact == c.contact && m.direction == Direction::Outbound))
        })
        .await
        .unwrap_or(false);
    if !belongs {
        return back(contact, Some(FR.no_such_message));
    }
    let by = format!("console:{}", session.user);
    let done = match action {
        "resend" => crate::http::admin::resend(app, id).await.map(drop),
        _ => crate::http::admin::cancel_send(app, id, &by).await.map(drop),
    };
    match done {
        Ok(()) => {
            tracing::info!(user = %session.user, message = id, action, "console send action");
            back(contact, None)
        }
        Err(r) => back(contact, Some(&answer_text(r).await)),
    }
}

/// The resend / cancel buttons under an outbound message, for those who may answer.
pub fn message_actions(t: &Strings, session: &ConsoleSession, seg: &str, m: &MessageRecord) -> String {
    if !session.role.can_reply() || m.direction != Direction::Outbound {
        return String::new();
    }
    let (action, label, id_attr) = match m.status.as_str() {
        "failed" | "cancelled" => ("resend", t.resend, "resend"),
        "unknown" if m.wamid.is_none() => ("resend", t.resend, "resend"),
        "queued" => ("cancel", t.cancel_send, "cancel"),
        _ => return String::new(),
    };
    format!(
        "<form class=\"msg-action\" method=\"post\" action=\"/c/{seg}/{action}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"id\" value=\"{}\"><button class=\"secondary {id_attr}\" data-action=\"{id_attr}\" data-id=\"{}\">{label}</button></form>",
        attr(&session.csrf),
        m.id,
        m.id
    )
}

/// The file form under the reply box (window open).
pub fn attach_form(t: &Strings, session: &ConsoleSession, seg: &str) -> String {
    format!(
        "<form class=\"attach\" method=\"post\" action=\"/c/{seg}/attach\" enctype=\"multipart/form-data\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><label for=\"file\">{}</label><input id=\"file\" name=\"file\" type=\"file\" required accept=\"image/jpeg,image/png,video/mp4,audio/*,application/pdf,.pdf,.doc,.docx,.xls,.xlsx,.ppt,.pptx,.txt,.csv\"><input id=\"caption\" name=\"caption\" maxlength=\"1024\" placeholder=\"{}\"><button id=\"attach\">{}</button></form>",
        attr(&session.csrf),
        t.attach_label,
        attr(t.caption_placeholder),
        t.attach_send
    )
}

/// The body text of a template with its parameters filled from `values` (missing ones stay
/// `{{name}}`): the preview.
fn preview(text: &str, values: &Map<String, Value>) -> String {
    let mut out = text.to_string();
    for (k, v) in values {
        if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
            out = out.replace(&format!("{{{{{k}}}}}"), v);
        }
    }
    out
}

/// The template picker of a closed window: a choice of the number's sendable templates, then
/// the chosen one's form (one field per parameter) and a preview that follows the typing.
pub fn template_picker(app: &App, session: &ConsoleSession, conv: &Conversation, query: &str) -> String {
    let t = &FR;
    let seg = url_segment(&conv.contact);
    let number = conv.last_number().map(str::to_string);
    let choices = app
        .outbox
        .templates()
        .map(|c| c.choices(number.as_deref()))
        .unwrap_or_default();
    let mut out = format!("<section class=\"picker\" id=\"picker\"><h3>{}</h3>", t.picker_title);
    if choices.is_empty() {
        let _ = write!(out, "<p class=\"notice\">{}</p></section>", t.picker_none);
        return out;
    }
    let chosen = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "tpl")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let key = |d: &Value| {
        format!(
            "{}|{}",
            d["name"].as_str().unwrap_or(""),
            d["language"].as_str().unwrap_or("")
        )
    };
    let _ = write!(
        out,
        "<form class=\"choose\" method=\"get\" action=\"/c/{seg}\"><select id=\"tpl\" name=\"tpl\" data-autosubmit required><option value=\"\" disabled{}>{}</option>",
        if chosen.is_empty() { " selected" } else { "" },
        t.picker_placeholder
    );
    for d in &choices {
        let k = key(d);
        let _ = write!(
            out,
            "<option value=\"{}\"{}>{} ({}) — {}</option>",
            attr(&k),
            if k == chosen { " selected" } else { "" },
            esc(d["name"].as_str().unwrap_or("")),
            esc(d["language"].as_str().unwrap_or("")),
            esc(d["category"].as_str().unwrap_or(""))
        );
    }
    let _ = write!(
        out,
        "</select><button id=\"choose\" class=\"secondary\">{}</button></form>",
        t.picker_choose
    );
    let Some(d) = choices.iter().find(|d| key(d) == chosen) else {
        out.push_str("</section>");
        return out;
    };
    let text = d["text"].as_str().unwrap_or("");
    let _ = write!(
        out,
        "<form class=\"template\" id=\"template-form\" method=\"post\" action=\"/c/{seg}/template\" enctype=\"multipart/form-data\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"name\" value=\"{}\"><input type=\"hidden\" name=\"lang\" value=\"{}\">",
        attr(&session.csrf),
        attr(d["name"].as_str().unwrap_or("")),
        attr(d["language"].as_str().unwrap_or(""))
    );
    if let Some(kind) = d["header_media"].as_str() {
        let _ = write!(
            out,
            "<label for=\"hfile\">{} ({kind})</label><input id=\"hfile\" name=\"hfile\" type=\"file\"><label for=\"hlink\">{}</label><input id=\"hlink\" name=\"hlink\" type=\"url\" placeholder=\"https://…\">",
            t.picker_header_file, t.picker_header_link
        );
    }
    for p in d["header_parameters"].as_array().into_iter().flatten() {
        let p = p.as_str().unwrap_or("");
        let _ = write!(
            out,
            "<label for=\"h-{0}\">{1} {{{{{2}}}}}</label><input id=\"h-{0}\" name=\"h.{0}\" required>",
            attr(p),
            t.picker_header_param,
            esc(p)
        );
    }
    for p in d["parameters"].as_array().into_iter().flatten() {
        let p = p.as_str().unwrap_or("");
        let _ = write!(
            out,
            "<label for=\"p-{0}\">{{{{{1}}}}}</label><input id=\"p-{0}\" name=\"p.{0}\" data-param=\"{0}\" required maxlength=\"1024\">",
            attr(p),
            esc(p)
        );
    }
    for i in d["url_buttons"].as_array().into_iter().flatten() {
        let i = i.as_u64().unwrap_or(0);
        let _ = write!(
            out,
            "<label for=\"b-{i}\">{} {}</label><input id=\"b-{i}\" name=\"b.{i}\" required>",
            t.picker_url_suffix,
            i + 1
        );
    }
    let _ = write!(
        out,
        "<div class=\"preview msg out\" id=\"tpl-preview\" data-text=\"{}\">{}",
        attr(text),
        esc(&preview(text, &Map::new()))
    );
    if let Some(footer) = d["footer"].as_str() {
        let _ = write!(out, "<span class=\"meta\">{}</span>", esc(footer));
    }
    let buttons: Vec<&str> = d["buttons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["text"].as_str())
        .collect();
    if !buttons.is_empty() {
        out.push_str("<span class=\"buttons\">");
        for b in buttons {
            let _ = write!(out, "<span>{}</span>", esc(b));
        }
        out.push_str("</span>");
    }
    let _ = write!(
        out,
        "</div><button id=\"send-template\">{}</button></form></section>",
        t.picker_send
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preview_fills_what_is_given_and_keeps_the_rest() {
        let mut v = Map::new();
        v.insert("1".into(), json!("Awa"));
        v.insert("2".into(), json!(""));
        assert_eq!(
            preview("Bonjour {{1}}, commande {{2}}", &v),
            "Bonjour Awa, commande {{2}}"
        );
    }

    #[test]
    fn files_go_out_as_the_kind_meta_shows() {
        assert_eq!(kind_of("image/png"), "image");
        assert_eq!(kind_of("application/pdf"), "document");
        assert_eq!(kind_of("image/webp"), "document");
        assert_eq!(kind_of("audio/ogg"), "audio");
    }
}
