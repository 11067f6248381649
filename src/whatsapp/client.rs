//! Graph API client: send messages, upload and download media.
//!
//! The access token is only ever sent as `Authorization: Bearer …`; it is
//! not printed by `Debug`, and every error string this module produces is
//! scrubbed so that it can never contain the token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::Value;

use super::error::{Disposition, GraphError, classify};

/// Largest JSON response body we are willing to buffer from the Graph API.
const MAX_JSON_RESPONSE: u64 = 1024 * 1024;

/// Errors building a [`GraphClient`]. None of them contains the token.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API base URL is not an absolute http(s) URL.
    #[error("invalid Graph API base URL {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The rejected URL.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The phone number id is empty or contains characters other than digits.
    #[error("invalid phone_number_id {0:?}: expected the numeric id shown in WhatsApp Manager")]
    InvalidPhoneNumberId(String),
    /// The access token is empty or cannot be sent in an HTTP header.
    #[error("invalid access token: it is empty or contains characters not allowed in an HTTP header")]
    InvalidToken,
    /// The HTTP client could not be built (TLS setup, …).
    #[error("cannot build HTTP client: {0}")]
    Build(String),
}

/// Meta accepted a message (or a `mark_read`).
#[derive(Debug, Clone, PartialEq)]
pub struct SendAccepted {
    /// The `wamid` Meta assigned; empty for `mark_read` (`{"success":true}`).
    pub wamid: String,
    /// The full JSON response body.
    pub response: Value,
}

/// A failed Graph API call, with the decision whether to retry.
#[derive(Debug, Clone)]
pub struct SendFailure {
    /// HTTP status, or `None` when no response was received.
    pub http_status: Option<u16>,
    /// Meta's parsed error, when the body carried one.
    pub error: Option<GraphError>,
    /// Transport or local problem (connection refused, timeout, size cap,
    /// unexpected body, …) when there is no Meta error.
    pub transport: Option<String>,
    /// The response body as JSON, when it was JSON.
    pub response: Option<Value>,
    /// Retry later or give up.
    pub disposition: Disposition,
}

impl SendFailure {
    /// A failure decided locally (never retried), e.g. a size cap.
    pub fn local(http_status: Option<u16>, msg: impl Into<String>) -> Self {
        SendFailure {
            http_status,
            error: None,
            transport: Some(msg.into()),
            response: None,
            disposition: Disposition::Fail,
        }
    }

    /// Whether the outbox should try again later.
    pub fn is_retryable(&self) -> bool {
        self.disposition == Disposition::Retry
    }
}

impl fmt::Display for SendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.http_status {
            Some(s) => write!(f, "HTTP {s}")?,
            None => f.write_str("no response")?,
        }
        if let Some(e) = &self.error {
            write!(f, ", {e}")?;
        }
        if let Some(t) = &self.transport {
            write!(f, ", {t}")?;
        }
        if self.error.is_none()
            && self.transport.is_none()
            && let Some(r) = &self.response
        {
            let s = r.to_string();
            let short: String = s.chars().take(300).collect();
            write!(f, ", response: {short}")?;
        }
        match self.disposition {
            Disposition::Retry => f.write_str(" (will retry)"),
            Disposition::Fail => f.write_str(" (not retried)"),
        }
    }
}

impl std::error::Error for SendFailure {}

/// Media downloaded from Meta.
#[derive(Clone, PartialEq, Eq)]
pub struct DownloadedMedia {
    /// The file content.
    pub bytes: Vec<u8>,
    /// MIME type reported by Meta (falls back to the download's Content-Type).
    pub mime_type: String,
    /// SHA-256 reported by Meta, if any.
    pub sha256: Option<String>,
    /// File size reported by Meta, if any.
    pub file_size: Option<u64>,
}

impl fmt::Debug for DownloadedMedia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DownloadedMedia")
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("mime_type", &self.mime_type)
            .field("sha256", &self.sha256)
            .field("file_size", &self.file_size)
            .finish()
    }
}

/// The range of an upload's `ttl_minutes` (one hour to 30 days, Meta's "No Storage").
pub const TTL_MINUTES: std::ops::RangeInclusive<u32> = 60..=43_200;

/// Client for one WhatsApp business phone number on the Cloud API.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    api_base: String,
    phone_number_id: String,
    token: String,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient")
            .field("api_base", &self.api_base)
            .field("phone_number_id", &self.phone_number_id)
            .field("access_token", &"<redacted>")
            .finish()
    }
}

/// The Graph API clients of the configured numbers (every account with an access token),
/// the default account's first. Meta's media ids and tokens belong to a number (or its app),
/// so each message goes out, and each inbound file comes in, through its own number's client.
#[derive(Debug)]
pub struct GraphClients {
    clients: Vec<Arc<GraphClient>>,
}

impl GraphClients {
    /// One client per account of `whatsapp` that has an access token; `None` when none has.
    pub fn from_config(whatsapp: &crate::config::WhatsAppConfig) -> Result<Option<GraphClients>, ClientError> {
        let mut clients = Vec::new();
        for a in &whatsapp.accounts {
            if let Some(token) = &a.access_token {
                let client = GraphClient::new(
                    &whatsapp.api_base,
                    &a.phone_number_id,
                    token.expose().to_string(),
                    whatsapp.request_timeout,
                    whatsapp.http2_cleartext,
                )?;
                clients.push(Arc::new(client));
            }
        }
        Ok((!clients.is_empty()).then_some(GraphClients { clients }))
    }

    /// The default account's client (uploads through the admin API and scripts use it).
    pub fn default_client(&self) -> &Arc<GraphClient> {
        &self.clients[0]
    }

    /// The client of business number `phone_number_id` (`None`: the default account's);
    /// `None` when that number is not configured (any more).
    pub fn for_number(&self, phone_number_id: Option<&str>) -> Option<&Arc<GraphClient>> {
        match phone_number_id {
            None => Some(self.default_client()),
            Some(n) => self.clients.iter().find(|c| c.phone_number_id() == n),
        }
    }
}

impl GraphClient {
    /// Builds a client.
    ///
    /// * `api_base`: e.g. `https://graph.facebook.com/v23.0` (trailing `/` ignored);
    /// * `phone_number_id`: the business phone number id (digits);
    /// * `access_token`: a (preferably permanent system-user) token;
    /// * `timeout`: total time allowed per HTTP request, body included;
    /// * `http2_cleartext`: HTTP/2 without TLS to an `http://` base (`[whatsapp]
    ///   http2_cleartext`); HTTPS negotiates HTTP/2 by itself.
    pub fn new(
        api_base: &str,
        phone_number_id: &str,
        access_token: String,
        timeout: Duration,
        http2_cleartext: bool,
    ) -> Result<Self, ClientError> {
        let base = api_base.trim().trim_end_matches('/');
        match url::Url::parse(base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(_) => {
                return Err(ClientError::InvalidBaseUrl {
                    url: base.to_string(),
                    reason: "must be an http(s) URL with a host".into(),
                });
            }
            Err(e) => {
                return Err(ClientError::InvalidBaseUrl {
                    url: base.to_string(),
                    reason: e.to_string(),
                });
            }
        }
        let pnid = phone_number_id.trim();
        if pnid.is_empty() || !pnid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ClientError::InvalidPhoneNumberId(pnid.to_string()));
        }
        if access_token.trim().is_empty() || HeaderValue::from_str(&format!("Bearer {access_token}")).is_err() {
            return Err(ClientError::InvalidToken);
        }
        let mut builder = reqwest::Client::builder();
        if http2_cleartext {
            builder = builder.http2_prior_knowledge();
        }
        let http = builder
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("walua/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Build(error_chain(&e)))?;
        Ok(GraphClient {
            http,
            api_base: base.to_string(),
            phone_number_id: pnid.to_string(),
            token: access_token,
        })
    }

    /// The API base URL, without trailing slash.
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// The business phone number id.
    pub fn phone_number_id(&self) -> &str {
        &self.phone_number_id
    }

    /// Sends a message body built by
    /// [`OutboundContent::graph_body`](super::message::OutboundContent::graph_body)
    /// with `POST {api_base}/{phone_number_id}/messages`.
    ///
    /// A 2xx whose body is neither a `messages[0].id` nor `{"success":true}`
    /// is a [`Disposition::Fail`]: Meta may have accepted the message, and
    /// retrying could send it twice.
    pub async fn send(&self, body: &Value) -> Result<SendAccepted, SendFailure> {
        let url = format!("{}/{}/messages", self.api_base, self.phone_number_id);
        let req = self.http.post(url).bearer_auth(&self.token).json(body);
        let (status, json) = self.execute_json(req).await?;
        if let Some(id) = json
            .pointer("/messages/0/id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return Ok(SendAccepted {
                wamid: id.to_string(),
                response: json,
            });
        }
        if json.get("success").and_then(Value::as_bool) == Some(true) {
            return Ok(SendAccepted {
                wamid: String::new(),
                response: json,
            });
        }
        Err(self.scrub(SendFailure {
            http_status: Some(status),
            error: None,
            transport: Some("unexpected success response: no messages[0].id and no \"success\":true".into()),
            response: Some(json),
            disposition: Disposition::Fail,
        }))
    }

    /// Uploads media with a multipart `POST {api_base}/{phone_number_id}/media`
    /// and returns the media id to use in `"media"` fields.
    pub async fn upload_media(&self, bytes: Vec<u8>, mime: &str, filename: &str) -> Result<String, SendFailure> {
        self.upload_media_for(bytes, mime, filename, None).await
    }

    /// [`GraphClient::upload_media`] with a time-to-live in minutes (`ttl_minutes`, 60 to
    /// 43,200): numbers with Meta's "No Storage" keep media one hour unless told longer.
    pub async fn upload_media_for(
        &self,
        bytes: Vec<u8>,
        mime: &str,
        filename: &str,
        ttl_minutes: Option<u32>,
    ) -> Result<String, SendFailure> {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(filename.to_string())
            .mime_str(mime)
            .map_err(|_| SendFailure::local(None, format!("invalid MIME type {mime:?}")))?;
        let mut form = reqwest::multipart::Form::new()
            .text("messaging_product", "whatsapp")
            .text("type", mime.to_string());
        if let Some(ttl) = ttl_minutes {
            form = form.text("ttl_minutes", ttl.to_string());
        }
        let form = form.part("file", part);
        let url = format!("{}/{}/media", self.api_base, self.phone_number_id);
        let req = self.http.post(url).bearer_auth(&self.token).multipart(form);
        let (status, json) = self.execute_json(req).await?;
        match json.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(id.to_string()),
            _ => Err(self.scrub(SendFailure {
                http_status: Some(status),
                error: None,
                transport: Some("media upload response has no \"id\"".into()),
                response: Some(json),
                disposition: Disposition::Fail,
            })),
        }
    }

    /// One page of a WABA's templates: `GET {api_base}/{waba_id}/message_templates` with
    /// Meta's fields, 100 per page, from cursor `after`. Returns the templates and the
    /// cursor of the next page (`None` on the last).
    pub async fn list_templates(
        &self,
        waba_id: &str,
        after: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), SendFailure> {
        let url = format!("{}/{}/message_templates", self.api_base, check_id(waba_id)?);
        let mut query = vec![
            (
                "fields",
                "id,name,language,status,category,components,quality_score,rejected_reason,parameter_format",
            ),
            ("limit", "100"),
        ];
        if let Some(a) = after {
            query.push(("after", a));
        }
        let req = self.http.get(with_query(&url, &query)).bearer_auth(&self.token);
        let (_, json) = self.execute_json(req).await?;
        let data = json.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
        // Meta gives `paging.next` only when there is a next page; `cursors.after` is there
        // on the last page too.
        let next = json
            .pointer("/paging/next")
            .and_then(Value::as_str)
            .and_then(|_| json.pointer("/paging/cursors/after").and_then(Value::as_str))
            .map(str::to_string);
        Ok((data, next))
    }

    /// Creates a template: `POST {api_base}/{waba_id}/message_templates`. Meta answers
    /// `{"id","status","category"}`.
    pub async fn create_template(&self, waba_id: &str, body: &Value) -> Result<Value, SendFailure> {
        let url = format!("{}/{}/message_templates", self.api_base, check_id(waba_id)?);
        let req = self.http.post(url).bearer_auth(&self.token).json(body);
        Ok(self.execute_json(req).await?.1)
    }

    /// Edits a template's components (or category): `POST {api_base}/{template_id}`.
    pub async fn edit_template(&self, template_id: &str, body: &Value) -> Result<Value, SendFailure> {
        let url = format!("{}/{}", self.api_base, check_id(template_id)?);
        let req = self.http.post(url).bearer_auth(&self.token).json(body);
        Ok(self.execute_json(req).await?.1)
    }

    /// Deletes a template: every language of `name`, or only the one `hsm_id` names:
    /// `DELETE {api_base}/{waba_id}/message_templates?name=…[&hsm_id=…]`.
    pub async fn delete_template(&self, waba_id: &str, name: &str, hsm_id: Option<&str>) -> Result<Value, SendFailure> {
        let url = format!("{}/{}/message_templates", self.api_base, check_id(waba_id)?);
        let mut query = vec![("name", name)];
        if let Some(h) = hsm_id {
            query.push(("hsm_id", check_id(h)?));
        }
        let req = self.http.delete(with_query(&url, &query)).bearer_auth(&self.token);
        Ok(self.execute_json(req).await?.1)
    }

    /// Uploads a template header example through Meta's resumable upload API (the app's
    /// upload session, then the bytes with `Authorization: OAuth`) and returns the handle
    /// (`h`) that `example.header_handle` takes.
    pub async fn upload_template_example(
        &self,
        app_id: &str,
        bytes: Vec<u8>,
        mime: &str,
        filename: &str,
    ) -> Result<String, SendFailure> {
        let url = format!("{}/{}/uploads", self.api_base, check_id(app_id)?);
        let len = bytes.len().to_string();
        let query = [
            ("file_name", filename),
            ("file_length", len.as_str()),
            ("file_type", mime),
        ];
        let req = self.http.post(with_query(&url, &query)).bearer_auth(&self.token);
        let (status, session) = self.execute_json(req).await?;
        let Some(session_id) = session
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| s.starts_with("upload:"))
        else {
            return Err(self.scrub(SendFailure {
                http_status: Some(status),
                error: None,
                transport: Some("resumable upload session response has no \"id\": \"upload:…\"".into()),
                response: Some(session),
                disposition: Disposition::Fail,
            }));
        };
        let url = format!("{}/{}", self.api_base, session_id);
        let req = self
            .http
            .post(url)
            .header("Authorization", format!("OAuth {}", self.token))
            .header("file_offset", "0")
            .body(bytes);
        let (status, json) = self.execute_json(req).await?;
        match json.get("h").and_then(Value::as_str) {
            Some(h) if !h.is_empty() => Ok(h.to_string()),
            _ => Err(self.scrub(SendFailure {
                http_status: Some(status),
                error: None,
                transport: Some("resumable upload response has no handle \"h\"".into()),
                response: Some(json),
                disposition: Disposition::Fail,
            })),
        }
    }

    /// Downloads media by id: `GET {api_base}/{media_id}` for its metadata,
    /// then `GET` the returned URL with the bearer token.
    ///
    /// Refuses ([`Disposition::Fail`]) media larger than `max_bytes`, judged
    /// from Meta's `file_size`, the `Content-Length`, and the bytes actually
    /// streamed — the body is read chunk by chunk and abandoned as soon as
    /// it exceeds the cap.
    ///
    /// The client's `timeout` covers each of the two requests, body included,
    /// so it must be long enough for the largest media you accept.
    pub async fn download_media(&self, media_id: &str, max_bytes: u64) -> Result<DownloadedMedia, SendFailure> {
        if media_id.is_empty()
            || !media_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(SendFailure::local(None, format!("invalid media id {media_id:?}")));
        }
        let meta_url = format!("{}/{}", self.api_base, media_id);
        let req = self.http.get(meta_url).bearer_auth(&self.token);
        let (_, meta) = self.execute_json(req).await?;
        let file_size = match meta.get("file_size") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        let sha256 = meta.get("sha256").and_then(Value::as_str).map(str::to_string);
        let meta_mime = meta.get("mime_type").and_then(Value::as_str).map(str::to_string);
        if let Some(size) = file_size
            && size > max_bytes
        {
            return Err(SendFailure::local(
                None,
                format!("media {media_id} is {size} bytes, larger than the {max_bytes}-byte limit; not downloaded"),
            ));
        }
        let media_url = match meta.get("url").and_then(Value::as_str) {
            Some(u) if u.starts_with("https://") || u.starts_with("http://") => u.to_string(),
            _ => {
                return Err(self.scrub(SendFailure {
                    http_status: None,
                    error: None,
                    transport: Some(format!("media {media_id} metadata has no usable \"url\"")),
                    response: Some(meta),
                    disposition: Disposition::Fail,
                }));
            }
        };

        let mut resp = self
            .http
            .get(media_url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.transport_failure(&e))?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            let body = self.read_capped(&mut resp, MAX_JSON_RESPONSE).await;
            return Err(self.status_failure(status, body.ok().as_deref()));
        }
        if let Some(len) = resp.content_length()
            && len > max_bytes
        {
            return Err(SendFailure::local(
                Some(status),
                format!(
                    "media {media_id} is {len} bytes (Content-Length), larger than the {max_bytes}-byte limit; not downloaded"
                ),
            ));
        }
        let header_mime = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = self.read_capped(&mut resp, max_bytes).await.map_err(|e| match e {
            ReadError::TooLarge => SendFailure::local(
                Some(status),
                format!("media {media_id} exceeds the {max_bytes}-byte limit; download abandoned"),
            ),
            ReadError::Transport(f) => *f,
        })?;
        Ok(DownloadedMedia {
            bytes,
            mime_type: meta_mime
                .or(header_mime)
                .unwrap_or_else(|| "application/octet-stream".into()),
            sha256,
            file_size,
        })
    }

    /// Sends a request expecting a JSON body; non-2xx becomes a classified
    /// [`SendFailure`].
    async fn execute_json(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value), SendFailure> {
        let mut resp = req.send().await.map_err(|e| self.transport_failure(&e))?;
        let status = resp.status().as_u16();
        let body = match self.read_capped(&mut resp, MAX_JSON_RESPONSE).await {
            Ok(b) => b,
            Err(ReadError::Transport(f)) => {
                let mut f = *f;
                f.http_status = Some(status);
                f.disposition = classify(Some(status), None);
                if resp.status().is_success() {
                    // The request may have been processed; do not resend.
                    f.disposition = Disposition::Fail;
                }
                return Err(f);
            }
            Err(ReadError::TooLarge) => {
                return Err(SendFailure::local(
                    Some(status),
                    format!("response body larger than {MAX_JSON_RESPONSE} bytes"),
                ));
            }
        };
        if !(200..300).contains(&status) {
            return Err(self.status_failure(status, Some(&body)));
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => {
                if let Some(e) = GraphError::from_error_value(&v) {
                    let disposition = classify(Some(status), Some(&e));
                    return Err(self.scrub(SendFailure {
                        http_status: Some(status),
                        error: Some(e),
                        transport: None,
                        response: Some(v),
                        disposition,
                    }));
                }
                Ok((status, v))
            }
            Err(_) => Err(self.scrub(SendFailure::local(
                Some(status),
                format!("success response is not JSON: {}", snippet(&body)),
            ))),
        }
    }

    /// Builds the failure for a non-2xx response.
    fn status_failure(&self, status: u16, body: Option<&[u8]>) -> SendFailure {
        let body = body.unwrap_or_default();
        let json = serde_json::from_slice::<Value>(body).ok();
        let error = json.as_ref().and_then(GraphError::from_error_value);
        let transport = if error.is_none() && json.is_none() && !body.is_empty() {
            Some(format!("non-JSON error body: {}", snippet(body)))
        } else {
            None
        };
        let disposition = classify(Some(status), error.as_ref());
        self.scrub(SendFailure {
            http_status: Some(status),
            error,
            transport,
            response: json,
            disposition,
        })
    }

    fn transport_failure(&self, e: &reqwest::Error) -> SendFailure {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "transport error"
        };
        self.scrub(SendFailure {
            http_status: None,
            error: None,
            transport: Some(format!("{kind}: {}", error_chain(e))),
            response: None,
            disposition: classify(None, None),
        })
    }

    /// Reads the body chunk by chunk, stopping as soon as it exceeds `cap`.
    async fn read_capped(&self, resp: &mut reqwest::Response, cap: u64) -> Result<Vec<u8>, ReadError> {
        let mut out = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if out.len() as u64 + chunk.len() as u64 > cap {
                        return Err(ReadError::TooLarge);
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(out),
                Err(e) => return Err(ReadError::Transport(Box::new(self.transport_failure(&e)))),
            }
        }
    }

    /// Removes the access token from every string of a failure.
    fn scrub(&self, mut f: SendFailure) -> SendFailure {
        let t = self.token.as_str();
        let fix = |s: &mut String| {
            if s.contains(t) {
                *s = s.replace(t, "<redacted>");
            }
        };
        if let Some(s) = f.transport.as_mut() {
            fix(s);
        }
        if let Some(e) = f.error.as_mut() {
            fix(&mut e.message);
            for s in [&mut e.title, &mut e.details, &mut e.fbtrace_id].into_iter().flatten() {
                fix(s);
            }
        }
        if let Some(v) = f.response.as_mut() {
            scrub_value(v, t);
        }
        f
    }
}

/// `url` with `pairs` as its query string, encoded.
fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.query_pairs_mut().extend_pairs(pairs);
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// A Graph API id put in a URL path: digits only, else refused before any request.
#[allow(clippy::result_large_err)] // the client's one failure type, as every call returns
fn check_id(id: &str) -> Result<&str, SendFailure> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id)
    } else {
        Err(SendFailure::local(
            None,
            format!("`{id}` is not a Graph API id (digits only)"),
        ))
    }
}

enum ReadError {
    TooLarge,
    Transport(Box<SendFailure>),
}

fn scrub_value(v: &mut Value, token: &str) {
    match v {
        Value::String(s) if s.contains(token) => *s = s.replace(token, "<redacted>"),
        Value::Array(a) => a.iter_mut().for_each(|x| scrub_value(x, token)),
        Value::Object(o) => o.values_mut().for_each(|x| scrub_value(x, token)),
        _ => {}
    }
}

/// The error and its sources, joined by `: ` (reqwest's own Display omits
/// the cause, e.g. "connection refused"). URLs never carry the token.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let t: String = s.chars().take(200).collect();
    if s.chars().count() > 200 { format!("{t}…") } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body_util::BodyExt;
    use hyper::body::{Body, Frame, Incoming, SizeHint};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use serde_json::json;
    use tokio::net::TcpListener;

    use crate::whatsapp::message::{OutboundContent, Recipient};

    const TOKEN: &str = "EAAG-test-secret-token-0123456789";

    /// A request as seen by the test server.
    #[derive(Debug, Clone)]
    struct Captured {
        method: String,
        path: String,
        headers: HashMap<String, String>,
        body: Vec<u8>,
    }

    /// Response body: `count` copies of `chunk`, generated lazily, with an
    /// optional exact length announced as Content-Length.
    struct TestBody {
        chunk: Bytes,
        remaining: usize,
        announced: Option<u64>,
    }

    impl TestBody {
        fn full(data: impl Into<Bytes>) -> Self {
            let chunk: Bytes = data.into();
            let len = chunk.len() as u64;
            TestBody {
                chunk,
                remaining: 1,
                announced: Some(len),
            }
        }
        fn json(v: Value) -> Self {
            Self::full(v.to_string())
        }
        fn stream(chunk_size: usize, count: usize, announced: Option<u64>) -> Self {
            TestBody {
                chunk: Bytes::from(vec![b'x'; chunk_size]),
                remaining: count,
                announced,
            }
        }
    }

    impl Body for TestBody {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.remaining == 0 {
                return Poll::Ready(None);
            }
            self.remaining -= 1;
            Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
        }
        fn size_hint(&self) -> SizeHint {
            match self.announced {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            }
        }
    }

    type Handler = dyn Fn(&Captured, &str) -> (u16, TestBody) + Send + Sync;

    struct TestServer {
        base: String,
        requests: Arc<Mutex<Vec<Captured>>>,
    }

    impl TestServer {
        fn requests(&self) -> Vec<Captured> {
            self.requests.lock().unwrap().clone()
        }
        fn client(&self) -> GraphClient {
            GraphClient::new(
                &format!("{}/v23.0/", self.base),
                "106540352242922",
                TOKEN.to_string(),
                Duration::from_secs(5),
                false,
            )
            .unwrap()
        }
    }

    /// Starts a hyper 1.x HTTP/1 server on 127.0.0.1:0 answering with `handler`.
    async fn serve(handler: impl Fn(&Captured, &str) -> (u16, TestBody) + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (reqs, b) = (requests.clone(), base.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (reqs, handler, b) = (reqs.clone(), handler.clone(), b.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (reqs, handler, b) = (reqs.clone(), handler.clone(), b.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|c| c.to_bytes().to_vec()).unwrap_or_default();
                            let cap = Captured {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                    .collect(),
                                body,
                            };
                            let (status, body) = handler(&cap, &b);
                            reqs.lock().unwrap().push(cap);
                            let resp = Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(body)
                                .unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        TestServer { base, requests }
    }

    fn assert_no_token(f: &SendFailure) {
        let shown = format!("{f} {f:?}");
        assert!(!shown.contains(TOKEN), "token leaked: {shown}");
    }

    fn text_body() -> Value {
        OutboundContent::Text {
            text: "Bonjour".into(),
            preview_url: None,
        }
        .graph_body(&Recipient::parse("221771234567").unwrap(), None)
        .unwrap()
    }

    #[tokio::test]
    async fn send_success_and_bearer_header() {
        let srv = serve(|_, _| {
            (
                200,
                TestBody::json(json!({
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": "221771234567", "wa_id": "221771234567"}],
                    "messages": [{"id": "wamid.HBgLMjIxNzcxMjM0NTY3FQIAERgS", "message_status": "accepted"}]
                })),
            )
        })
        .await;
        let client = srv.client();
        let ok = client.send(&text_body()).await.unwrap();
        assert_eq!(ok.wamid, "wamid.HBgLMjIxNzcxMjM0NTY3FQIAERgS");
        assert_eq!(ok.response["contacts"][0]["wa_id"], "221771234567");
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].method, "POST");
        assert_eq!(reqs[0].path, "/v23.0/106540352242922/messages");
        assert_eq!(reqs[0].headers["authorization"], format!("Bearer {TOKEN}"));
        assert!(reqs[0].headers["content-type"].starts_with("application/json"));
        assert_eq!(serde_json::from_slice::<Value>(&reqs[0].body).unwrap(), text_body());
        let dbg = format!("{client:?}");
        assert!(!dbg.contains(TOKEN) && dbg.contains("redacted"), "{dbg}");
    }

    #[tokio::test]
    async fn mark_read_success_has_empty_wamid() {
        let srv = serve(|_, _| (200, TestBody::json(json!({"success": true})))).await;
        let body = OutboundContent::MarkRead {
            message_id: "wamid.X".into(),
        }
        .graph_body(&Recipient::parse("221771234567").unwrap(), None)
        .unwrap();
        let ok = srv.client().send(&body).await.unwrap();
        assert_eq!(ok.wamid, "");
    }

    #[tokio::test]
    async fn reengagement_error_fails_with_explanation() {
        let srv = serve(|_, _| {
            (
                400,
                TestBody::json(json!({"error": {
                    "message": "(#131047) Re-engagement message",
                    "type": "OAuthException",
                    "code": 131047,
                    "error_data": {"messaging_product": "whatsapp", "details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."},
                    "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"
                }})),
            )
        })
        .await;
        let f = srv.client().send(&text_body()).await.unwrap_err();
        assert_eq!(f.http_status, Some(400));
        assert_eq!(f.disposition, Disposition::Fail);
        assert_eq!(f.error.as_ref().unwrap().code, 131047);
        let s = f.to_string();
        assert!(
            s.contains("131047") && s.contains("approved template") && s.contains("not retried"),
            "{s}"
        );
        assert_no_token(&f);
    }

    #[tokio::test]
    async fn rate_limit_and_server_errors_retry() {
        let srv = serve(|c, _| {
            if c.body.windows(4).any(|w| w == b"r429") {
                let e = json!({"error": {"message": "(#130429) Rate limit hit", "code": 130429}});
                (429, TestBody::json(e))
            } else {
                (500, TestBody::full("<html>Internal Server Error</html>"))
            }
        })
        .await;
        let client = srv.client();
        let f = client.send(&json!({"case": "r429"})).await.unwrap_err();
        assert_eq!((f.http_status, f.disposition), (Some(429), Disposition::Retry));
        assert_no_token(&f);
        let f = client.send(&json!({"case": "r500"})).await.unwrap_err();
        assert_eq!((f.http_status, f.disposition), (Some(500), Disposition::Retry));
        assert!(f.error.is_none());
        assert!(f.to_string().contains("Internal Server Error"), "{f}");
        assert_no_token(&f);
    }

    #[tokio::test]
    async fn connection_refused_retries() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = GraphClient::new(
            &format!("http://{addr}/v23.0"),
            "1",
            TOKEN.into(),
            Duration::from_secs(5),
            false,
        )
        .unwrap();
        let f = client.send(&text_body()).await.unwrap_err();
        assert_eq!(f.http_status, None);
        assert_eq!(f.disposition, Disposition::Retry);
        assert!(f.transport.is_some());
        assert!(f.to_string().contains("will retry"), "{f}");
        assert_no_token(&f);
    }

    #[tokio::test]
    async fn echoed_token_is_scrubbed() {
        // A misbehaving proxy echoing the Authorization header back.
        let srv = serve(|c, _| {
            let auth = c.headers.get("authorization").cloned().unwrap_or_default();
            (
                401,
                TestBody::json(json!({"error": {"message": format!("bad token {auth}"), "code": 190,
                    "error_data": {"details": auth.clone()}, "error_user_title": auth}})),
            )
        })
        .await;
        let f = srv.client().send(&text_body()).await.unwrap_err();
        assert_eq!(f.disposition, Disposition::Fail);
        assert!(f.to_string().contains("system-user token"), "{f}");
        assert_no_token(&f);
        let f = srv
            .client()
            .upload_media(b"x".to_vec(), "image/png", "a.png")
            .await
            .unwrap_err();
        assert_no_token(&f);
    }

    #[tokio::test]
    async fn client_construction_errors_never_show_token() {
        let bad = [
            GraphClient::new("not a url", "1", TOKEN.into(), Duration::from_secs(1), false).unwrap_err(),
            GraphClient::new("ftp://x", "1", TOKEN.into(), Duration::from_secs(1), false).unwrap_err(),
            GraphClient::new(
                "https://graph.facebook.com/v23.0",
                "12/../3",
                TOKEN.into(),
                Duration::from_secs(1),
                false,
            )
            .unwrap_err(),
            GraphClient::new(
                "https://graph.facebook.com/v23.0",
                "1",
                format!("{TOKEN}\n"),
                Duration::from_secs(1),
                false,
            )
            .unwrap_err(),
            GraphClient::new(
                "https://graph.facebook.com/v23.0",
                "1",
                String::new(),
                Duration::from_secs(1),
                false,
            )
            .unwrap_err(),
        ];
        for e in bad {
            let s = format!("{e} {e:?}");
            assert!(!s.contains(TOKEN), "{s}");
        }
    }

    #[tokio::test]
    async fn media_upload_is_multipart() {
        let srv = serve(|_, _| (200, TestBody::json(json!({"id": "1037543291543636"})))).await;
        let pdf = b"%PDF-1.4 fake invoice".to_vec();
        let id = srv
            .client()
            .upload_media(pdf, "application/pdf", "F001.pdf")
            .await
            .unwrap();
        assert_eq!(id, "1037543291543636");
        let reqs = srv.requests();
        assert_eq!(reqs[0].method, "POST");
        assert_eq!(reqs[0].path, "/v23.0/106540352242922/media");
        assert_eq!(reqs[0].headers["authorization"], format!("Bearer {TOKEN}"));
        assert!(reqs[0].headers["content-type"].starts_with("multipart/form-data; boundary="));
        let body = String::from_utf8_lossy(&reqs[0].body);
        assert!(
            body.contains("name=\"messaging_product\"\r\n\r\nwhatsapp\r\n"),
            "{body}"
        );
        assert!(body.contains("name=\"type\"\r\n\r\napplication/pdf\r\n"), "{body}");
        assert!(body.contains("name=\"file\"; filename=\"F001.pdf\""), "{body}");
        assert!(
            body.contains("Content-Type: application/pdf") || body.contains("content-type: application/pdf"),
            "{body}"
        );
        assert!(body.contains("%PDF-1.4 fake invoice"), "{body}");
    }

    /// Media server: `/v23.0/{id}` answers metadata pointing at `/file/{id}`.
    async fn media_server() -> TestServer {
        serve(|c, base| {
            let p = c.path.as_str();
            match p {
                "/v23.0/small" => (200, TestBody::json(json!({"url": format!("{base}/file/small"), "mime_type": "image/jpeg", "sha256": "abc", "file_size": 5, "id": "small", "messaging_product": "whatsapp"}))),
                "/v23.0/declared_big" => (200, TestBody::json(json!({"url": format!("{base}/file/x"), "mime_type": "video/mp4", "file_size": 50_000_000, "id": "declared_big"}))),
                "/v23.0/length_big" => (200, TestBody::json(json!({"url": format!("{base}/file/length_big"), "mime_type": "video/mp4", "id": "length_big"}))),
                "/v23.0/stream_big" => (200, TestBody::json(json!({"url": format!("{base}/file/stream_big"), "mime_type": "video/mp4", "file_size": "10", "id": "stream_big"}))),
                "/file/small" => (200, TestBody::full("hello")),
                "/file/length_big" => (200, TestBody::stream(64 * 1024, 16, Some(16 * 64 * 1024))),
                // ~6.5 GB if fully read: the client must stop early.
                "/file/stream_big" => (200, TestBody::stream(64 * 1024, 100_000, None)),
                _ => (404, TestBody::json(json!({"error": {"message": "Unsupported get request", "code": 100, "error_subcode": 33}}))),
            }
        })
        .await
    }

    #[tokio::test]
    async fn download_media_ok() {
        let srv = media_server().await;
        let m = srv.client().download_media("small", 1024).await.unwrap();
        assert_eq!(m.bytes, b"hello");
        assert_eq!(m.mime_type, "image/jpeg");
        assert_eq!(m.sha256.as_deref(), Some("abc"));
        assert_eq!(m.file_size, Some(5));
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].path, "/v23.0/small");
        assert_eq!(reqs[1].path, "/file/small");
        for r in &reqs {
            assert_eq!(r.method, "GET");
            assert_eq!(r.headers["authorization"], format!("Bearer {TOKEN}"));
        }
        let f = srv.client().download_media("missing", 1024).await.unwrap_err();
        assert_eq!((f.http_status, f.disposition), (Some(404), Disposition::Fail));
        let f = srv.client().download_media("../etc", 1024).await.unwrap_err();
        assert_eq!(f.disposition, Disposition::Fail);
    }

    #[tokio::test]
    async fn download_media_cap_refused() {
        let srv = media_server().await;
        let client = srv.client();

        let f = client.download_media("declared_big", 100_000).await.unwrap_err();
        assert_eq!(f.disposition, Disposition::Fail);
        assert!(f.to_string().contains("50000000 bytes"), "{f}");
        assert_eq!(srv.requests().len(), 1, "file must not be fetched");

        let f = client.download_media("length_big", 100_000).await.unwrap_err();
        assert_eq!(f.disposition, Disposition::Fail);
        assert!(f.to_string().contains("Content-Length"), "{f}");

        let started = std::time::Instant::now();
        let f = client.download_media("stream_big", 100_000).await.unwrap_err();
        assert_eq!(f.disposition, Disposition::Fail);
        assert!(f.to_string().contains("abandoned"), "{f}");
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_no_token(&f);
    }
}
