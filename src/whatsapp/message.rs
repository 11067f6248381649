//! Outbound message model.
//!
//! [`OutboundContent`] mirrors the bodies accepted by the daemon's
//! `POST /api/messages` endpoint (`{"type":"text","text":"Bonjour"}`, …).
//! [`OutboundContent::graph_body`] validates the content against Meta's
//! documented limits *before* anything is sent and renders the exact JSON the
//! Cloud API expects on `POST /{phone-number-id}/messages`.
//!
//! All lengths are counted in Unicode scalar values (`str::chars().count()`).

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Maximum length of a text message body.
pub const MAX_TEXT_BODY: usize = 4096;
/// Maximum length of a media caption (image, video, document).
pub const MAX_CAPTION: usize = 1024;
/// Maximum length of an interactive message body.
pub const MAX_INTERACTIVE_BODY: usize = 1024;
/// Maximum length of an interactive text header.
pub const MAX_HEADER: usize = 60;
/// Maximum length of an interactive footer.
pub const MAX_FOOTER: usize = 60;
/// Maximum number of reply buttons.
pub const MAX_REPLY_BUTTONS: usize = 3;
/// Maximum length of a reply button id.
pub const MAX_BUTTON_ID: usize = 256;
/// Maximum length of a reply button title.
pub const MAX_BUTTON_TITLE: usize = 20;
/// Maximum length of the list "open" button label.
pub const MAX_LIST_BUTTON: usize = 20;
/// Maximum number of list sections.
pub const MAX_LIST_SECTIONS: usize = 10;
/// Maximum number of rows across all list sections.
pub const MAX_LIST_ROWS: usize = 10;
/// Maximum length of a list row id.
pub const MAX_ROW_ID: usize = 200;
/// Maximum length of a list row title.
pub const MAX_ROW_TITLE: usize = 24;
/// Maximum length of a list row description.
pub const MAX_ROW_DESCRIPTION: usize = 72;
/// Maximum length of a list section title.
pub const MAX_SECTION_TITLE: usize = 24;
/// Maximum length of a CTA URL button label.
pub const MAX_CTA_DISPLAY_TEXT: usize = 20;
/// Largest audio file Meta accepts (voice notes included): 16 MB.
pub const MAX_AUDIO_BYTES: usize = 16 * 1024 * 1024;
/// Maximum length of a document file name shown to the recipient.
pub const MAX_FILENAME: usize = 240;
/// Maximum length of a template name.
pub const MAX_TEMPLATE_NAME: usize = 512;
/// Minimum number of digits in a phone recipient.
pub const MIN_PHONE_DIGITS: usize = 6;
/// Maximum number of digits in a phone recipient (E.164).
pub const MAX_PHONE_DIGITS: usize = 15;
/// Maximum length of the part of a BSUID after the `CC.` prefix.
pub const MAX_BSUID_SUFFIX: usize = 160;

/// A message failed validation against Meta's limits; nothing was sent.
///
/// Displays as `"{field}: {reason}"`, e.g.
/// `buttons[1].title: 27 characters, Meta allows at most 20`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// Path of the offending field, e.g. `sections[0].rows[2].title`.
    pub field: String,
    /// What is wrong with it, naming the limit.
    pub reason: String,
}

impl ValidationError {
    /// Builds an error for `field` with the given `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn err<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, ValidationError> {
    Err(ValidationError::new(field, reason))
}

/// Checks `value` has at most `max` characters (and at least one when `required`).
fn check_len(field: &str, value: &str, max: usize, required: bool) -> Result<(), ValidationError> {
    let n = value.chars().count();
    if required && value.trim().is_empty() {
        return err(field, "must not be empty");
    }
    if n > max {
        return err(field, format!("{n} characters, Meta allows at most {max}"));
    }
    Ok(())
}

fn check_opt_len(field: &str, value: Option<&str>, max: usize) -> Result<(), ValidationError> {
    match value {
        Some(v) => check_len(field, v, max, true),
        None => Ok(()),
    }
}

fn check_http_url(field: &str, value: &str) -> Result<(), ValidationError> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) => err(
            field,
            format!("scheme {:?} is not allowed, Meta only fetches http(s) URLs", u.scheme()),
        ),
        Err(e) => err(field, format!("not a valid http(s) URL ({e})")),
    }
}

fn check_id(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return err(field, "must not be empty");
    }
    Ok(())
}

/// Who a message is addressed to.
///
/// Meta addresses users either by phone number (`"to"`) or, since the 2026
/// username rollout, by business-scoped user id (`"recipient"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Recipient {
    /// A phone number in international format, digits only (no leading `+`).
    Phone(String),
    /// A business-scoped user id such as `SN.13491208655302741918`.
    Bsuid(String),
}

impl Recipient {
    /// Parses a recipient.
    ///
    /// * BSUID: two uppercase ASCII letters, a dot, then 1–160 characters of
    ///   `[A-Za-z0-9.]` (parent BSUIDs look like `US.ENT.1181…`).
    /// * Phone: 6–15 ASCII digits with an optional leading `+` (stripped).
    ///
    /// Surrounding whitespace is ignored.
    pub fn parse(input: &str) -> Result<Recipient, ValidationError> {
        let s = input.trim();
        let b = s.as_bytes();
        if b.len() >= 3 && b[0].is_ascii_uppercase() && b[1].is_ascii_uppercase() && b[2] == b'.' {
            let rest = &s[3..];
            if rest.is_empty() {
                return err("to", "BSUID has nothing after the country prefix");
            }
            if rest.len() > MAX_BSUID_SUFFIX {
                return err(
                    "to",
                    format!(
                        "BSUID is {} characters after the prefix, at most {MAX_BSUID_SUFFIX} accepted",
                        rest.len()
                    ),
                );
            }
            if let Some(c) = rest.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '.')) {
                return err("to", format!("BSUID contains invalid character {c:?}"));
            }
            return Ok(Recipient::Bsuid(s.to_string()));
        }
        let digits = s.strip_prefix('+').unwrap_or(s);
        if digits.is_empty() {
            return err("to", "recipient must not be empty");
        }
        if let Some(c) = digits.chars().find(|c| !c.is_ascii_digit()) {
            return err(
                "to",
                format!(
                    "invalid character {c:?}: expected a phone number (digits, optional leading '+') or a BSUID like \"US.1234…\""
                ),
            );
        }
        let n = digits.len();
        if !(MIN_PHONE_DIGITS..=MAX_PHONE_DIGITS).contains(&n) {
            return err(
                "to",
                format!(
                    "phone number has {n} digits, expected {MIN_PHONE_DIGITS}–{MAX_PHONE_DIGITS} including the country code"
                ),
            );
        }
        Ok(Recipient::Phone(digits.to_string()))
    }

    /// The identifier as sent to Meta (phone digits or the BSUID).
    pub fn as_str(&self) -> &str {
        match self {
            Recipient::Phone(s) | Recipient::Bsuid(s) => s,
        }
    }

    /// The Graph API JSON field this recipient goes in: `"to"` or `"recipient"`.
    pub fn graph_field(&self) -> &'static str {
        match self {
            Recipient::Phone(_) => "to",
            Recipient::Bsuid(_) => "recipient",
        }
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Recipient {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Recipient::parse(s)
    }
}

/// One quick-reply button of a `buttons` message.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ReplyButton {
    /// Identifier echoed back in the reply webhook (1–256 characters, unique).
    pub id: String,
    /// Label shown on the button (1–20 characters).
    pub title: String,
}

/// One section of a `list` message.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ListSection {
    /// Section heading (≤ 24 characters); required when there is more than one section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The selectable rows of this section.
    pub rows: Vec<ListRow>,
}

/// One selectable row of a `list` message.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ListRow {
    /// Identifier echoed back in the reply webhook (1–200 characters, unique).
    pub id: String,
    /// Row title (1–24 characters).
    pub title: String,
    /// Optional secondary line (≤ 72 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The file of an outbound media message: exactly one of a public link or an uploaded media
/// id. Flattened into each media variant, so the JSON keeps `link` / `media` beside `type`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaFile {
    /// Public http(s) URL Meta downloads the media from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Media id returned by a previous upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
}

impl MediaFile {
    /// Checks that exactly one source is given and well formed; returns Meta's media object
    /// (`{"link": …}` or `{"id": …}`).
    fn graph_object(&self) -> Result<Map<String, Value>, ValidationError> {
        let mut obj = Map::new();
        match (&self.link, &self.media) {
            (Some(_), Some(_)) => {
                return err("link/media", "give exactly one of link or media, not both");
            }
            (None, None) => {
                return err(
                    "link/media",
                    "give exactly one of link (http(s) URL) or media (uploaded media id)",
                );
            }
            (Some(l), None) => {
                check_http_url("link", l)?;
                obj.insert("link".into(), Value::String(l.clone()));
            }
            (None, Some(m)) => {
                check_id("media", m)?;
                obj.insert("id".into(), Value::String(m.clone()));
            }
        }
        Ok(obj)
    }

    /// A short description for listings: `media ID` or the link, at most `width` characters.
    fn summary(&self, width: usize) -> String {
        match (&self.link, &self.media) {
            (_, Some(m)) => format!("media {}", ellipsize(m, width)),
            (Some(l), None) => ellipsize(l, width),
            (None, None) => "?".to_string(),
        }
    }
}

/// Checks that an audio file can be sent as a voice note: at most [`MAX_AUDIO_BYTES`] and an
/// OGG file whose first stream is OPUS (`OggS` page starting with an `OpusHead` packet), as
/// Meta requires for voice messages.
pub fn check_voice_bytes(bytes: &[u8]) -> Result<(), ValidationError> {
    check_audio_size(bytes.len())?;
    if !bytes.starts_with(b"OggS") {
        return err(
            "voice",
            "not an OGG file: Meta's voice messages need an .ogg file encoded with the OPUS codec",
        );
    }
    // The first page's segment table is at 27 and has `bytes[26]` entries; the first
    // packet (the codec's identification header) follows.
    let start = 27 + bytes.get(26).copied().unwrap_or(0) as usize;
    if !bytes.get(start..).is_some_and(|p| p.starts_with(b"OpusHead")) {
        return err(
            "voice",
            "an OGG file without an OPUS stream: Meta's voice messages need the OPUS codec",
        );
    }
    Ok(())
}

/// Checks an audio file's size against Meta's 16 MB limit.
pub fn check_audio_size(len: usize) -> Result<(), ValidationError> {
    if len > MAX_AUDIO_BYTES {
        return err(
            "audio",
            format!("{len} bytes, Meta allows audio files of at most {MAX_AUDIO_BYTES} bytes (16 MB)"),
        );
    }
    Ok(())
}

/// A voice note by link: a URL whose path names another audio format is refused (Meta's voice
/// messages need OGG/OPUS); a URL without a known extension is left to Meta.
fn check_voice_link(link: &str) -> Result<(), ValidationError> {
    let ext = url::Url::parse(link).ok().and_then(|u| {
        let last = u.path_segments()?.next_back()?.to_string();
        let (_, ext) = last.rsplit_once('.')?;
        Some(ext.to_ascii_lowercase())
    });
    match ext.as_deref() {
        Some(e @ ("mp3" | "aac" | "amr" | "m4a" | "mp4" | "wav" | "mpeg" | "flac" | "wma" | "webm")) => err(
            "voice",
            format!("the link names a .{e} file: Meta's voice messages need an .ogg file encoded with OPUS"),
        ),
        _ => Ok(()),
    }
}

/// The header of a reply-buttons, list or CTA URL message: a text, or (reply buttons and
/// CTA URL only) an image, video or document in Meta's own shape
/// (`{"type":"image","image":{"link":…}}`, `{"type":"document","document":{"id":…,"filename":…}}`).
///
/// A plain string is a text header; it serializes back to a plain string.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum Header {
    /// A text header (≤ 60 characters).
    Text(String),
    /// A media (or explicit `{"type":"text","text":…}`) header.
    Media(Box<MediaHeader>),
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Header::Text(s)),
            v @ Value::Object(_) => serde_json::from_value(v)
                .map(|m| Header::Media(Box::new(m)))
                .map_err(|e| D::Error::custom(format!("header: {e}"))),
            _ => Err(D::Error::custom(
                "header: expected a text or an object like {\"type\":\"image\",\"image\":{\"link\":\"https://…\"}}",
            )),
        }
    }
}

/// A header object in Meta's shape: `type` names which of the other fields is used.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MediaHeader {
    /// `image`, `video`, `document` or `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The file of an `image` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<HeaderFile>,
    /// The file of a `video` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<HeaderFile>,
    /// The file of a `document` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<HeaderFile>,
}

/// The media object of a header: exactly one of `id` (an uploaded media id; `media` is
/// accepted too) or `link`, and for a document an optional `filename`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderFile {
    /// Uploaded media id.
    #[serde(default, alias = "media", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Public http(s) URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// File name shown for a document header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// Which header kinds an interactive message allows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HeaderRule {
    /// List messages: a text header only.
    TextOnly,
    /// Reply buttons: text, or image/video/document by media id or link.
    Media,
    /// CTA URL: text, or image/video/document by link (Meta documents only `link` here).
    MediaLinkOnly,
}

impl Header {
    /// Validates the header for a message allowing `rule` and returns Meta's header object.
    fn graph_object(&self, rule: HeaderRule, message: &str) -> Result<Value, ValidationError> {
        let m = match self {
            Header::Text(t) => {
                check_len("header", t, MAX_HEADER, true)?;
                return Ok(json!({"type": "text", "text": t}));
            }
            Header::Media(m) => m,
        };
        let given: Vec<&str> = [
            ("text", m.text.is_some()),
            ("image", m.image.is_some()),
            ("video", m.video.is_some()),
            ("document", m.document.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect();
        if given.len() != 1 || given[0] != m.kind {
            return err(
                "header",
                format!(
                    "type {:?} needs exactly one matching field (e.g. {{\"type\":\"image\",\"image\":{{\"link\":…}}}}), got {}",
                    m.kind,
                    if given.is_empty() {
                        "none".to_string()
                    } else {
                        given.join(", ")
                    }
                ),
            );
        }
        let file = match m.kind.as_str() {
            "text" => {
                let t = m.text.as_deref().unwrap_or_default();
                check_len("header.text", t, MAX_HEADER, true)?;
                return Ok(json!({"type": "text", "text": t}));
            }
            _ if rule == HeaderRule::TextOnly => {
                return err(
                    "header",
                    format!("a {message} message allows only a text header (Meta), not {:?}", m.kind),
                );
            }
            "image" => m.image.as_ref(),
            "video" => m.video.as_ref(),
            "document" => m.document.as_ref(),
            other => {
                return err(
                    "header.type",
                    format!("{other:?} is not a header type: use text, image, video or document"),
                );
            }
        };
        let file = file.expect("checked above");
        let kind = m.kind.as_str();
        let mut obj = Map::new();
        match (&file.id, &file.link) {
            (Some(_), Some(_)) | (None, None) => {
                return err(
                    format!("header.{kind}"),
                    "give exactly one of id (uploaded media id) or link",
                );
            }
            (Some(_), None) if rule == HeaderRule::MediaLinkOnly => {
                return err(
                    format!("header.{kind}.id"),
                    format!("a {message} message's media header takes a link (Meta documents only link here)"),
                );
            }
            (Some(id), None) => {
                check_id(&format!("header.{kind}.id"), id)?;
                obj.insert("id".into(), json!(id));
            }
            (None, Some(l)) => {
                check_http_url(&format!("header.{kind}.link"), l)?;
                obj.insert("link".into(), json!(l));
            }
        }
        if let Some(f) = &file.filename {
            if kind != "document" {
                return err(
                    format!("header.{kind}.filename"),
                    "only a document header has a file name",
                );
            }
            check_len("header.document.filename", f, MAX_FILENAME, true)?;
            obj.insert("filename".into(), json!(f));
        }
        Ok(json!({"type": kind, kind: obj}))
    }
}

/// The content of an outbound message, as accepted by `POST /api/messages`.
///
/// Tagged by `"type"` (snake_case): `text`, `image`, `audio`, `video`,
/// `sticker`, `document`, `template`, `buttons`, `list`, `cta_url`,
/// `location`, `contacts`, `reaction`, `mark_read`, `typing`.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutboundContent {
    /// A plain text message.
    Text {
        /// Message body (1–4096 characters).
        text: String,
        /// Ask WhatsApp to render a preview of the first URL in the body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preview_url: Option<bool>,
    },
    /// An image, by public URL or uploaded media id.
    Image {
        /// The file: a public link or an uploaded media id.
        #[serde(flatten)]
        file: MediaFile,
        /// Caption (≤ 1024 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
    },
    /// An audio file or voice note.
    Audio {
        /// The file: a public link or an uploaded media id.
        #[serde(flatten)]
        file: MediaFile,
        /// Send as a voice note (`"voice": true`): an OGG file with the OPUS codec, shown
        /// with the business's picture, a microphone and a transcript.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        voice: Option<bool>,
    },
    /// A video.
    Video {
        /// The file: a public link or an uploaded media id.
        #[serde(flatten)]
        file: MediaFile,
        /// Caption (≤ 1024 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
    },
    /// A sticker (WebP).
    Sticker {
        /// The file: a public link or an uploaded media id.
        #[serde(flatten)]
        file: MediaFile,
    },
    /// A document (PDF, …).
    Document {
        /// The file: a public link or an uploaded media id.
        #[serde(flatten)]
        file: MediaFile,
        /// File name shown to the recipient, e.g. `F001.pdf`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
        /// Caption (≤ 1024 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
    },
    /// An approved message template (allowed outside the 24h window).
    Template {
        /// Template name: lowercase letters, digits and `_`.
        name: String,
        /// Language code the template was approved in, e.g. `fr` or `en_US`.
        lang: String,
        /// Meta's own component objects (header/body/button with parameters),
        /// passed through unchanged; must be an array of objects with a `"type"`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        components: Option<Value>,
        /// The parameter values instead of components: a plain list (header, body, then
        /// button values in order) or a table keyed by parameter name; the outbox builds
        /// Meta's components from the template registry or its definition.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        params: Option<Value>,
    },
    /// An interactive message with 1–3 quick-reply buttons.
    Buttons {
        /// Body text (1–1024 characters).
        body: String,
        /// The buttons (1–3, unique ids).
        buttons: Vec<ReplyButton>,
        /// Optional header: a text (≤ 60 characters) or an image, video or document.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<Header>,
        /// Optional footer (≤ 60 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        footer: Option<String>,
    },
    /// An interactive list message (menu of up to 10 rows).
    List {
        /// Body text (1–1024 characters).
        body: String,
        /// Label of the button that opens the list (1–20 characters).
        button: String,
        /// 1–10 sections, 1–10 rows in total.
        sections: Vec<ListSection>,
        /// Optional header: a text (≤ 60 characters) or an image, video or document.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<Header>,
        /// Optional footer (≤ 60 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        footer: Option<String>,
    },
    /// An interactive call-to-action URL button.
    CtaUrl {
        /// Body text (1–1024 characters).
        body: String,
        /// Button label (1–20 characters).
        display_text: String,
        /// http(s) URL opened when the button is tapped.
        url: String,
        /// Optional header: a text (≤ 60 characters) or an image, video or document.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<Header>,
        /// Optional footer (≤ 60 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        footer: Option<String>,
    },
    /// A location pin.
    Location {
        /// Latitude in degrees, −90..=90.
        latitude: f64,
        /// Longitude in degrees, −180..=180.
        longitude: f64,
        /// Optional place name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Optional address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// Contact cards, in Meta's own `contacts` array format.
    Contacts {
        /// Non-empty array of Meta contact objects, each with `name.formatted_name`.
        contacts: Value,
    },
    /// A reaction to an earlier message.
    Reaction {
        /// The `wamid` of the message reacted to.
        message_id: String,
        /// The emoji; `""` removes a previous reaction.
        emoji: String,
    },
    /// Marks an inbound message (and earlier ones) as read. Not a message.
    MarkRead {
        /// The `wamid` of the inbound message.
        message_id: String,
    },
    /// Marks an inbound message as read and shows the typing indicator (dismissed by the
    /// next message or after 25 seconds). Not a message.
    Typing {
        /// The `wamid` of the inbound message.
        message_id: String,
    },
}

fn add_caption(obj: &mut Map<String, Value>, caption: &Option<String>) -> Result<(), ValidationError> {
    if let Some(c) = caption {
        check_len("caption", c, MAX_CAPTION, false)?;
        obj.insert("caption".into(), Value::String(c.clone()));
    }
    Ok(())
}

/// Validates body/header/footer and builds the common interactive skeleton.
fn interactive_base(
    kind: &str,
    body: &str,
    header: &Option<Header>,
    footer: &Option<String>,
    rule: HeaderRule,
) -> Result<Map<String, Value>, ValidationError> {
    check_len("body", body, MAX_INTERACTIVE_BODY, true)?;
    let header = header.as_ref().map(|h| h.graph_object(rule, kind)).transpose()?;
    check_opt_len("footer", footer.as_deref(), MAX_FOOTER)?;
    let mut obj = Map::new();
    obj.insert("type".into(), json!(kind));
    if let Some(h) = header {
        obj.insert("header".into(), h);
    }
    obj.insert("body".into(), json!({ "text": body }));
    if let Some(f) = footer {
        obj.insert("footer".into(), json!({ "text": f }));
    }
    Ok(obj)
}

fn validate_template_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return err("name", "template name must not be empty");
    }
    let n = name.chars().count();
    if n > MAX_TEMPLATE_NAME {
        return err(
            "name",
            format!("{n} characters, Meta allows at most {MAX_TEMPLATE_NAME}"),
        );
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return err(
            "name",
            format!("invalid character {c:?}: template names use only lowercase letters, digits and '_'"),
        );
    }
    Ok(())
}

fn validate_lang(lang: &str) -> Result<(), ValidationError> {
    let ok = (2..=15).contains(&lang.len())
        && lang.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
        && lang.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        err(
            "lang",
            format!("{lang:?} is not a language code such as \"fr\" or \"en_US\""),
        )
    }
}

fn validate_components(components: &Value) -> Result<(), ValidationError> {
    let Some(arr) = components.as_array() else {
        return err("components", "must be an array of component objects");
    };
    for (i, c) in arr.iter().enumerate() {
        let Some(obj) = c.as_object() else {
            return err(format!("components[{i}]"), "must be an object");
        };
        match obj.get("type") {
            Some(Value::String(t)) if !t.is_empty() => {}
            _ => {
                return err(
                    format!("components[{i}].type"),
                    "missing: each component needs a \"type\" (header, body, button, …)",
                );
            }
        }
    }
    Ok(())
}

fn validate_contacts(contacts: &Value) -> Result<(), ValidationError> {
    let Some(arr) = contacts.as_array() else {
        return err("contacts", "must be an array of Meta contact objects");
    };
    if arr.is_empty() {
        return err("contacts", "must contain at least one contact");
    }
    for (i, c) in arr.iter().enumerate() {
        if !c.is_object() {
            return err(format!("contacts[{i}]"), "must be an object");
        }
        match c.pointer("/name/formatted_name") {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ => {
                return err(
                    format!("contacts[{i}].name.formatted_name"),
                    "missing: Meta requires a formatted name for every contact",
                );
            }
        }
    }
    Ok(())
}

/// Truncates to `max` characters, appending `…` when something was cut.
fn ellipsize(s: &str, max: usize) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut out: String = one_line.chars().take(max).collect();
        out.push('…');
        out
    }
}

impl OutboundContent {
    /// The message type name, as used in the `"type"` tag (e.g. `"cta_url"`).
    pub fn kind(&self) -> &'static str {
        match self {
            OutboundContent::Text { .. } => "text",
            OutboundContent::Image { .. } => "image",
            OutboundContent::Audio { .. } => "audio",
            OutboundContent::Video { .. } => "video",
            OutboundContent::Sticker { .. } => "sticker",
            OutboundContent::Document { .. } => "document",
            OutboundContent::Template { .. } => "template",
            OutboundContent::Buttons { .. } => "buttons",
            OutboundContent::List { .. } => "list",
            OutboundContent::CtaUrl { .. } => "cta_url",
            OutboundContent::Location { .. } => "location",
            OutboundContent::Contacts { .. } => "contacts",
            OutboundContent::Reaction { .. } => "reaction",
            OutboundContent::MarkRead { .. } => "mark_read",
            OutboundContent::Typing { .. } => "typing",
        }
    }

    /// True for template messages, which Meta delivers at any time (they are
    /// the only way to (re)open a conversation outside the 24h window).
    pub fn is_template(&self) -> bool {
        matches!(self, OutboundContent::Template { .. })
    }

    /// True for free-form messages, which Meta only delivers within 24 hours
    /// of the user's last inbound message (customer service window).
    ///
    /// Everything except templates, `mark_read` and `typing` (which are not messages)
    /// is free-form; reactions are treated as free-form too.
    pub fn is_free_form(&self) -> bool {
        !matches!(
            self,
            OutboundContent::Template { .. } | OutboundContent::MarkRead { .. } | OutboundContent::Typing { .. }
        )
    }

    /// A short one-line human-readable description for tables and logs,
    /// e.g. `text: Bonjour` or `buttons: Valider ? [Oui|Non]`.
    pub fn summary(&self) -> String {
        const W: usize = 40;
        let with_caption = |base: String, caption: &Option<String>| match caption {
            Some(c) if !c.is_empty() => format!("{base} \"{}\"", ellipsize(c, W)),
            _ => base,
        };
        let kind = self.kind();
        match self {
            OutboundContent::Text { text, .. } => format!("{kind}: {}", ellipsize(text, W)),
            OutboundContent::Image { file, caption } | OutboundContent::Video { file, caption } => {
                with_caption(format!("{kind}: {}", file.summary(W)), caption)
            }
            OutboundContent::Audio {
                file,
                voice: Some(true),
            } => format!("{kind} (voice): {}", file.summary(W)),
            OutboundContent::Audio { file, .. } | OutboundContent::Sticker { file } => {
                format!("{kind}: {}", file.summary(W))
            }
            OutboundContent::Document {
                file,
                filename,
                caption,
            } => {
                let base = match filename {
                    Some(f) => format!("{kind}: {} ({})", ellipsize(f, W), file.summary(W)),
                    None => format!("{kind}: {}", file.summary(W)),
                };
                with_caption(base, caption)
            }
            OutboundContent::Template { name, lang, .. } => format!("{kind}: {name} ({lang})"),
            OutboundContent::Buttons { body, buttons, .. } => {
                let titles: Vec<&str> = buttons.iter().map(|b| b.title.as_str()).collect();
                format!("{kind}: {} [{}]", ellipsize(body, W), titles.join("|"))
            }
            OutboundContent::List {
                body, button, sections, ..
            } => {
                let rows: usize = sections.iter().map(|s| s.rows.len()).sum();
                format!("{kind}: {} [{button}: {rows} rows]", ellipsize(body, W))
            }
            OutboundContent::CtaUrl {
                body,
                display_text,
                url,
                ..
            } => {
                format!(
                    "{kind}: {} [{display_text} → {}]",
                    ellipsize(body, W),
                    ellipsize(url, W)
                )
            }
            OutboundContent::Location {
                latitude,
                longitude,
                name,
                ..
            } => match name {
                Some(n) => format!("{kind}: {} ({latitude}, {longitude})", ellipsize(n, W)),
                None => format!("{kind}: ({latitude}, {longitude})"),
            },
            OutboundContent::Contacts { contacts } => {
                let names: Vec<String> = contacts
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.pointer("/name/formatted_name")?.as_str())
                            .map(|s| ellipsize(s, W))
                            .collect()
                    })
                    .unwrap_or_default();
                format!("{kind}: {}", names.join(", "))
            }
            OutboundContent::Reaction { message_id, emoji } => {
                if emoji.is_empty() {
                    format!("{kind}: (removed) on {}", ellipsize(message_id, W))
                } else {
                    format!("{kind}: {emoji} on {}", ellipsize(message_id, W))
                }
            }
            OutboundContent::MarkRead { message_id } | OutboundContent::Typing { message_id } => {
                format!("{kind}: {}", ellipsize(message_id, W))
            }
        }
    }

    /// Validates against Meta's limits and builds the Graph API request body
    /// for `POST /{phone-number-id}/messages`.
    ///
    /// `reply_to` (a `wamid`) adds `"context": {"message_id": …}` so the
    /// message is shown as a reply; it is ignored for `mark_read`, whose body
    /// is `{"messaging_product":"whatsapp","status":"read","message_id":…}`
    /// and does not name the recipient, and for `typing`, the same body with
    /// `"typing_indicator":{"type":"text"}`.
    pub fn graph_body(&self, to: &Recipient, reply_to: Option<&str>) -> Result<Value, ValidationError> {
        if let OutboundContent::MarkRead { message_id } | OutboundContent::Typing { message_id } = self {
            check_id("message_id", message_id)?;
            let mut body = json!({
                "messaging_product": "whatsapp",
                "status": "read",
                "message_id": message_id,
            });
            if matches!(self, OutboundContent::Typing { .. }) {
                body["typing_indicator"] = json!({"type": "text"});
            }
            return Ok(body);
        }
        let (graph_type, payload) = self.graph_payload()?;
        let mut body = Map::new();
        body.insert("messaging_product".into(), json!("whatsapp"));
        body.insert("recipient_type".into(), json!("individual"));
        body.insert(to.graph_field().into(), json!(to.as_str()));
        body.insert("type".into(), json!(graph_type));
        body.insert(graph_type.into(), payload);
        if let Some(id) = reply_to {
            check_id("reply_to", id)?;
            body.insert("context".into(), json!({ "message_id": id }));
        }
        Ok(Value::Object(body))
    }

    /// Validates and returns `(graph type, payload object)` for every kind
    /// except `mark_read`.
    fn graph_payload(&self) -> Result<(&'static str, Value), ValidationError> {
        Ok(match self {
            OutboundContent::Text { text, preview_url } => {
                check_len("text", text, MAX_TEXT_BODY, true)?;
                let mut obj = Map::new();
                obj.insert("body".into(), json!(text));
                if let Some(p) = preview_url {
                    obj.insert("preview_url".into(), json!(p));
                }
                ("text", Value::Object(obj))
            }
            OutboundContent::Image { file, caption } => {
                let mut obj = file.graph_object()?;
                add_caption(&mut obj, caption)?;
                ("image", Value::Object(obj))
            }
            OutboundContent::Video { file, caption } => {
                let mut obj = file.graph_object()?;
                add_caption(&mut obj, caption)?;
                ("video", Value::Object(obj))
            }
            OutboundContent::Audio { file, voice } => {
                let mut obj = file.graph_object()?;
                if *voice == Some(true) {
                    if let Some(l) = &file.link {
                        check_voice_link(l)?;
                    }
                    obj.insert("voice".into(), json!(true));
                }
                ("audio", Value::Object(obj))
            }
            OutboundContent::Sticker { file } => ("sticker", Value::Object(file.graph_object()?)),
            OutboundContent::Document {
                file,
                filename,
                caption,
            } => {
                let mut obj = file.graph_object()?;
                add_caption(&mut obj, caption)?;
                if let Some(f) = filename {
                    check_len("filename", f, MAX_FILENAME, true)?;
                    obj.insert("filename".into(), json!(f));
                }
                ("document", Value::Object(obj))
            }
            OutboundContent::Template {
                name,
                lang,
                components,
                params,
            } => {
                validate_template_name(name)?;
                validate_lang(lang)?;
                if params.is_some() {
                    return Err(ValidationError::new(
                        "params",
                        "template parameters must be turned into components by the outbox first",
                    ));
                }
                let mut obj = Map::new();
                obj.insert("name".into(), json!(name));
                obj.insert("language".into(), json!({ "code": lang }));
                if let Some(c) = components {
                    validate_components(c)?;
                    obj.insert("components".into(), c.clone());
                }
                ("template", Value::Object(obj))
            }
            OutboundContent::Buttons {
                body,
                buttons,
                header,
                footer,
            } => {
                let mut obj = interactive_base("button", body, header, footer, HeaderRule::Media)?;
                if buttons.is_empty() || buttons.len() > MAX_REPLY_BUTTONS {
                    return err(
                        "buttons",
                        format!("{} buttons, Meta allows 1 to {MAX_REPLY_BUTTONS}", buttons.len()),
                    );
                }
                let mut ids = HashSet::new();
                let mut titles = HashSet::new();
                let mut out = Vec::with_capacity(buttons.len());
                for (i, b) in buttons.iter().enumerate() {
                    check_len(&format!("buttons[{i}].id"), &b.id, MAX_BUTTON_ID, true)?;
                    check_len(&format!("buttons[{i}].title"), &b.title, MAX_BUTTON_TITLE, true)?;
                    if !ids.insert(b.id.as_str()) {
                        return err(
                            format!("buttons[{i}].id"),
                            format!("duplicate id {:?}, ids must be unique", b.id),
                        );
                    }
                    if !titles.insert(b.title.as_str()) {
                        return err(
                            format!("buttons[{i}].title"),
                            format!("duplicate title {:?}, Meta requires unique button titles", b.title),
                        );
                    }
                    out.push(json!({"type": "reply", "reply": {"id": b.id, "title": b.title}}));
                }
                obj.insert("action".into(), json!({ "buttons": out }));
                ("interactive", Value::Object(obj))
            }
            OutboundContent::List {
                body,
                button,
                sections,
                header,
                footer,
            } => {
                let mut obj = interactive_base("list", body, header, footer, HeaderRule::TextOnly)?;
                check_len("button", button, MAX_LIST_BUTTON, true)?;
                if sections.is_empty() || sections.len() > MAX_LIST_SECTIONS {
                    return err(
                        "sections",
                        format!("{} sections, Meta allows 1 to {MAX_LIST_SECTIONS}", sections.len()),
                    );
                }
                let total: usize = sections.iter().map(|s| s.rows.len()).sum();
                if total == 0 || total > MAX_LIST_ROWS {
                    return err(
                        "sections",
                        format!("{total} rows in total, Meta allows 1 to {MAX_LIST_ROWS} across all sections"),
                    );
                }
                let multi = sections.len() > 1;
                let mut ids = HashSet::new();
                let mut out_sections = Vec::with_capacity(sections.len());
                for (si, s) in sections.iter().enumerate() {
                    let f = format!("sections[{si}].title");
                    match &s.title {
                        Some(t) => check_len(&f, t, MAX_SECTION_TITLE, true)?,
                        None if multi => {
                            return err(f, "required when the list has more than one section");
                        }
                        None => {}
                    }
                    if s.rows.is_empty() {
                        return err(format!("sections[{si}].rows"), "each section needs at least one row");
                    }
                    let mut rows = Vec::with_capacity(s.rows.len());
                    for (ri, r) in s.rows.iter().enumerate() {
                        let p = format!("sections[{si}].rows[{ri}]");
                        check_len(&format!("{p}.id"), &r.id, MAX_ROW_ID, true)?;
                        check_len(&format!("{p}.title"), &r.title, MAX_ROW_TITLE, true)?;
                        check_opt_len(
                            &format!("{p}.description"),
                            r.description.as_deref(),
                            MAX_ROW_DESCRIPTION,
                        )?;
                        if !ids.insert(r.id.as_str()) {
                            return err(
                                format!("{p}.id"),
                                format!("duplicate id {:?}, row ids must be unique", r.id),
                            );
                        }
                        let mut row = json!({"id": r.id, "title": r.title});
                        if let Some(d) = &r.description {
                            row["description"] = json!(d);
                        }
                        rows.push(row);
                    }
                    let mut sec = json!({ "rows": rows });
                    if let Some(t) = &s.title {
                        sec["title"] = json!(t);
                    }
                    out_sections.push(sec);
                }
                obj.insert("action".into(), json!({"button": button, "sections": out_sections}));
                ("interactive", Value::Object(obj))
            }
            OutboundContent::CtaUrl {
                body,
                display_text,
                url,
                header,
                footer,
            } => {
                let mut obj = interactive_base("cta_url", body, header, footer, HeaderRule::MediaLinkOnly)?;
                check_len("display_text", display_text, MAX_CTA_DISPLAY_TEXT, true)?;
                check_http_url("url", url)?;
                obj.insert(
                    "action".into(),
                    json!({"name": "cta_url", "parameters": {"display_text": display_text, "url": url}}),
                );
                ("interactive", Value::Object(obj))
            }
            OutboundContent::Location {
                latitude,
                longitude,
                name,
                address,
            } => {
                if !latitude.is_finite() || !(-90.0..=90.0).contains(latitude) {
                    return err("latitude", format!("{latitude} is outside -90..=90"));
                }
                if !longitude.is_finite() || !(-180.0..=180.0).contains(longitude) {
                    return err("longitude", format!("{longitude} is outside -180..=180"));
                }
                let mut obj = Map::new();
                obj.insert("latitude".into(), json!(latitude));
                obj.insert("longitude".into(), json!(longitude));
                if let Some(n) = name {
                    obj.insert("name".into(), json!(n));
                }
                if let Some(a) = address {
                    obj.insert("address".into(), json!(a));
                }
                ("location", Value::Object(obj))
            }
            OutboundContent::Contacts { contacts } => {
                validate_contacts(contacts)?;
                ("contacts", contacts.clone())
            }
            OutboundContent::Reaction { message_id, emoji } => {
                check_id("message_id", message_id)?;
                let n = emoji.chars().count();
                if n > 16 || emoji.chars().any(char::is_whitespace) {
                    return err("emoji", "must be a single emoji, or \"\" to remove the reaction");
                }
                ("reaction", json!({"message_id": message_id, "emoji": emoji}))
            }
            // Rendered by `graph_body` directly; never reached from there.
            OutboundContent::MarkRead { .. } | OutboundContent::Typing { .. } => {
                return err("type", format!("{} is not a message and has no payload", self.kind()));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn phone() -> Recipient {
        Recipient::parse("+221771234567").unwrap()
    }

    fn content(v: Value) -> OutboundContent {
        serde_json::from_value(v).expect("valid content JSON")
    }

    fn body(v: Value) -> Value {
        content(v).graph_body(&phone(), None).unwrap()
    }

    fn invalid(v: Value) -> ValidationError {
        content(v).graph_body(&phone(), None).unwrap_err()
    }

    fn base(kind: &str, payload: Value) -> Value {
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "221771234567",
            "type": kind,
            kind: payload,
        })
    }

    #[test]
    fn recipient_parsing() {
        assert_eq!(phone(), Recipient::Phone("221771234567".into()));
        assert_eq!(phone().as_str(), "221771234567");
        assert_eq!(
            Recipient::parse("SN.13491208655302741918").unwrap(),
            Recipient::Bsuid("SN.13491208655302741918".into())
        );
        assert!(matches!(
            Recipient::parse("US.ENT.11815799212886844830"),
            Ok(Recipient::Bsuid(_))
        ));
        assert!(matches!(Recipient::parse("123456"), Ok(Recipient::Phone(_))));
        assert!(matches!(Recipient::parse("123456789012345"), Ok(Recipient::Phone(_))));
        for bad in [
            "",
            "+",
            "12345",
            "1234567890123456",
            "22177 1234567",
            "sn.123",
            "SN.",
            "SN.12-3",
            "S.123",
            "abc",
        ] {
            assert!(Recipient::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn bsuid_uses_recipient_field() {
        let to = Recipient::parse("SN.13491208655302741918").unwrap();
        let b = content(json!({"type":"text","text":"Bonjour"}))
            .graph_body(&to, None)
            .unwrap();
        assert_eq!(
            b,
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "recipient": "SN.13491208655302741918",
                "type": "text",
                "text": {"body": "Bonjour"},
            })
        );
        assert!(b.get("to").is_none());
    }

    #[test]
    fn reply_context() {
        let b = content(json!({"type":"text","text":"Oui"}))
            .graph_body(&phone(), Some("wamid.ABC"))
            .unwrap();
        assert_eq!(b["context"], json!({"message_id": "wamid.ABC"}));
        let r = content(json!({"type":"mark_read","message_id":"wamid.ABC"}))
            .graph_body(&phone(), Some("wamid.XYZ"))
            .unwrap();
        assert!(r.get("context").is_none());
    }

    #[test]
    fn text_json() {
        assert_eq!(
            body(json!({"to":"221771234567","type":"text","text":"Bonjour"})),
            base("text", json!({"body": "Bonjour"}))
        );
        assert_eq!(
            body(json!({"type":"text","text":"https://x.sn","preview_url":true})),
            base("text", json!({"body": "https://x.sn", "preview_url": true}))
        );
    }

    #[test]
    fn media_json() {
        assert_eq!(
            body(json!({"type":"image","link":"https://example.com/a.jpg","caption":"Photo"})),
            base(
                "image",
                json!({"link": "https://example.com/a.jpg", "caption": "Photo"})
            )
        );
        assert_eq!(
            body(json!({"type":"audio","media":"1234"})),
            base("audio", json!({"id": "1234"}))
        );
        assert_eq!(
            body(json!({"type":"video","media":"99","caption":"Clip"})),
            base("video", json!({"id": "99", "caption": "Clip"}))
        );
        assert_eq!(
            body(json!({"type":"sticker","link":"http://example.com/s.webp"})),
            base("sticker", json!({"link": "http://example.com/s.webp"}))
        );
        assert_eq!(
            body(json!({"type":"document","media":"MEDIA_ID","filename":"F001.pdf","caption":"Votre facture"})),
            base(
                "document",
                json!({"id": "MEDIA_ID", "filename": "F001.pdf", "caption": "Votre facture"})
            )
        );
    }

    #[test]
    fn template_json() {
        let components = json!([
            {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://example.com/h.png"}}]},
            {"type": "body", "parameters": [
                {"type": "text", "text": "Awa"},
                {"type": "currency", "currency": {"fallback_value": "10 000 XOF", "code": "XOF", "amount_1000": 10000000}},
                {"type": "date_time", "date_time": {"fallback_value": "1 mars 2026"}}
            ]},
            {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{"type": "payload", "payload": "CONFIRM"}]},
            {"type": "button", "sub_type": "copy_code", "index": "1", "parameters": [{"type": "coupon_code", "coupon_code": "SAVE10"}]}
        ]);
        assert_eq!(
            body(json!({"type":"template","name":"order_confirmation","lang":"fr","components":components})),
            base(
                "template",
                json!({"name": "order_confirmation", "language": {"code": "fr"}, "components": components})
            )
        );
        assert_eq!(
            body(json!({"type":"template","name":"hello_world","lang":"en_US"})),
            base(
                "template",
                json!({"name": "hello_world", "language": {"code": "en_US"}})
            )
        );
    }

    #[test]
    fn buttons_json() {
        assert_eq!(
            body(json!({
                "type":"buttons","body":"Valider ?","header":"Commande","footer":"walua",
                "buttons":[{"id":"btn_yes","title":"Oui"},{"id":"btn_no","title":"Non"}]
            })),
            base(
                "interactive",
                json!({
                    "type": "button",
                    "header": {"type": "text", "text": "Commande"},
                    "body": {"text": "Valider ?"},
                    "footer": {"text": "walua"},
                    "action": {"buttons": [
                        {"type": "reply", "reply": {"id": "btn_yes", "title": "Oui"}},
                        {"type": "reply", "reply": {"id": "btn_no", "title": "Non"}}
                    ]}
                })
            )
        );
    }

    #[test]
    fn list_json() {
        assert_eq!(
            body(json!({
                "type":"list","body":"Nos produits","button":"Choisir",
                "sections":[
                    {"title":"Boissons","rows":[{"id":"r1","title":"Bissap","description":"Frais"}]},
                    {"title":"Plats","rows":[{"id":"r2","title":"Thieb"}]}
                ]
            })),
            base(
                "interactive",
                json!({
                    "type": "list",
                    "body": {"text": "Nos produits"},
                    "action": {
                        "button": "Choisir",
                        "sections": [
                            {"title": "Boissons", "rows": [{"id": "r1", "title": "Bissap", "description": "Frais"}]},
                            {"title": "Plats", "rows": [{"id": "r2", "title": "Thieb"}]}
                        ]
                    }
                })
            )
        );
    }

    #[test]
    fn cta_location_contacts_reaction_markread_json() {
        assert_eq!(
            body(
                json!({"type":"cta_url","body":"Suivre","display_text":"Voir","url":"https://example.com/t/1","footer":"f"})
            ),
            base(
                "interactive",
                json!({
                    "type": "cta_url",
                    "body": {"text": "Suivre"},
                    "footer": {"text": "f"},
                    "action": {"name": "cta_url", "parameters": {"display_text": "Voir", "url": "https://example.com/t/1"}}
                })
            )
        );
        assert_eq!(
            body(json!({"type":"location","latitude":14.7167,"longitude":-17.4677,"name":"Dakar","address":"Plateau"})),
            base(
                "location",
                json!({"latitude": 14.7167, "longitude": -17.4677, "name": "Dakar", "address": "Plateau"})
            )
        );
        let contacts = json!([{"name": {"formatted_name": "Awa Ndiaye", "first_name": "Awa"}, "phones": [{"phone": "+221771234567", "type": "CELL"}]}]);
        assert_eq!(
            body(json!({"type":"contacts","contacts":contacts})),
            base("contacts", contacts)
        );
        assert_eq!(
            body(json!({"type":"reaction","message_id":"wamid.X","emoji":"👍"})),
            base("reaction", json!({"message_id": "wamid.X", "emoji": "👍"}))
        );
        assert_eq!(
            body(json!({"type":"reaction","message_id":"wamid.X","emoji":""})),
            base("reaction", json!({"message_id": "wamid.X", "emoji": ""}))
        );
        assert_eq!(
            body(json!({"type":"mark_read","message_id":"wamid.X"})),
            json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"})
        );
    }

    #[test]
    fn kinds_and_summaries() {
        let t = content(json!({"type":"text","text":"Bonjour"}));
        assert_eq!(t.kind(), "text");
        assert!(t.is_free_form() && !t.is_template());
        assert_eq!(t.summary(), "text: Bonjour");
        let long = content(json!({"type":"text","text":"x".repeat(100)}));
        assert!(long.summary().ends_with('…'));
        let b = content(
            json!({"type":"buttons","body":"Valider ?","buttons":[{"id":"a","title":"Oui"},{"id":"b","title":"Non"}]}),
        );
        assert_eq!(b.summary(), "buttons: Valider ? [Oui|Non]");
        let tpl = content(json!({"type":"template","name":"hello_world","lang":"en_US"}));
        assert!(tpl.is_template() && !tpl.is_free_form());
        let mr = content(json!({"type":"mark_read","message_id":"wamid.X"}));
        assert_eq!(mr.kind(), "mark_read");
        assert!(!mr.is_free_form() && !mr.is_template());
        let r = content(json!({"type":"reaction","message_id":"wamid.X","emoji":"👍"}));
        assert!(r.is_free_form());
        assert_eq!(
            content(json!({"type":"cta_url","body":"b","display_text":"d","url":"https://e.com"})).kind(),
            "cta_url"
        );
        // Round trip through serde keeps the shape of POST /api/messages.
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({"type":"text","text":"Bonjour"})
        );
    }

    #[test]
    fn text_limits() {
        assert!(body(json!({"type":"text","text":"é".repeat(4096)}))["text"]["body"].is_string());
        let e = invalid(json!({"type":"text","text":"é".repeat(4097)}));
        assert_eq!(e.to_string(), "text: 4097 characters, Meta allows at most 4096");
        assert_eq!(invalid(json!({"type":"text","text":""})).field, "text");
        assert_eq!(invalid(json!({"type":"text","text":"   "})).field, "text");
    }

    #[test]
    fn media_limits() {
        let e = invalid(json!({"type":"image","link":"https://e.com/a.png","caption":"c".repeat(1025)}));
        assert_eq!(e.to_string(), "caption: 1025 characters, Meta allows at most 1024");
        assert!(body(json!({"type":"image","link":"https://e.com/a.png","caption":"c".repeat(1024)})).is_object());
        assert_eq!(invalid(json!({"type":"image"})).field, "link/media");
        assert_eq!(
            invalid(json!({"type":"image","link":"https://e.com/a","media":"1"})).field,
            "link/media"
        );
        assert_eq!(
            invalid(json!({"type":"document","link":"ftp://e.com/a.pdf"})).field,
            "link"
        );
        assert_eq!(invalid(json!({"type":"document","link":"/tmp/a.pdf"})).field, "link");
        assert_eq!(invalid(json!({"type":"audio","media":" "})).field, "media");
    }

    fn buttons(list: Value) -> Value {
        json!({"type":"buttons","body":"Valider ?","buttons":list})
    }

    #[test]
    fn button_limits() {
        assert_eq!(invalid(buttons(json!([]))).field, "buttons");
        let four: Vec<Value> = (0..4)
            .map(|i| json!({"id": format!("b{i}"), "title": format!("T{i}")}))
            .collect();
        assert_eq!(
            invalid(buttons(json!(four))).to_string(),
            "buttons: 4 buttons, Meta allows 1 to 3"
        );
        let e = invalid(buttons(
            json!([{"id":"a","title":"Oui"},{"id":"b","title":"t".repeat(27)}]),
        ));
        assert_eq!(e.to_string(), "buttons[1].title: 27 characters, Meta allows at most 20");
        assert_eq!(
            invalid(buttons(json!([{"id":"a","title":""}]))).field,
            "buttons[0].title"
        );
        assert_eq!(invalid(buttons(json!([{"id":"","title":"x"}]))).field, "buttons[0].id");
        assert_eq!(
            invalid(buttons(json!([{"id":"i".repeat(257),"title":"x"}]))).field,
            "buttons[0].id"
        );
        assert!(body(buttons(json!([{"id":"i".repeat(256),"title":"t".repeat(20)}]))).is_object());
        let dup = invalid(buttons(json!([{"id":"a","title":"x"},{"id":"a","title":"y"}])));
        assert_eq!(dup.field, "buttons[1].id");
        assert!(dup.reason.contains("unique"));
        let e = invalid(json!({"type":"buttons","body":"b".repeat(1025),"buttons":[{"id":"a","title":"x"}]}));
        assert_eq!(e.to_string(), "body: 1025 characters, Meta allows at most 1024");
        assert_eq!(
            invalid(json!({"type":"buttons","body":"","buttons":[{"id":"a","title":"x"}]})).field,
            "body"
        );
        let e =
            invalid(json!({"type":"buttons","body":"b","header":"h".repeat(61),"buttons":[{"id":"a","title":"x"}]}));
        assert_eq!(e.to_string(), "header: 61 characters, Meta allows at most 60");
        let e =
            invalid(json!({"type":"buttons","body":"b","footer":"f".repeat(61),"buttons":[{"id":"a","title":"x"}]}));
        assert_eq!(e.to_string(), "footer: 61 characters, Meta allows at most 60");
    }

    fn list(button: &str, sections: Value) -> Value {
        json!({"type":"list","body":"Menu","button":button,"sections":sections})
    }

    #[test]
    fn list_limits() {
        let one_row = json!([{"rows":[{"id":"r","title":"t"}]}]);
        assert!(
            body(list("Choisir", one_row.clone())).is_object(),
            "single untitled section is fine"
        );
        assert_eq!(
            invalid(list(&"b".repeat(21), one_row.clone())).to_string(),
            "button: 21 characters, Meta allows at most 20"
        );
        assert_eq!(invalid(list("", one_row)).field, "button");
        assert_eq!(invalid(list("B", json!([]))).field, "sections");
        let eleven: Vec<Value> = (0..11)
            .map(|i| json!({"title": format!("S{i}"), "rows":[{"id": format!("r{i}"), "title":"t"}]}))
            .collect();
        assert_eq!(
            invalid(list("B", json!(eleven))).to_string(),
            "sections: 11 sections, Meta allows 1 to 10"
        );
        let rows: Vec<Value> = (0..11).map(|i| json!({"id": format!("r{i}"), "title":"t"})).collect();
        assert_eq!(
            invalid(list("B", json!([{"rows": rows}]))).to_string(),
            "sections: 11 rows in total, Meta allows 1 to 10 across all sections"
        );
        assert_eq!(invalid(list("B", json!([{"rows": []}]))).field, "sections");
        let e = invalid(list(
            "B",
            json!([{"title":"A","rows":[{"id":"1","title":"t"}]},{"rows":[{"id":"2","title":"t"}]}]),
        ));
        assert_eq!(e.field, "sections[1].title");
        assert!(e.reason.contains("more than one section"));
        assert_eq!(
            invalid(list(
                "B",
                json!([{"title":"s".repeat(25),"rows":[{"id":"1","title":"t"}]}])
            ))
            .to_string(),
            "sections[0].title: 25 characters, Meta allows at most 24"
        );
        assert_eq!(
            invalid(list("B", json!([{"rows":[{"id":"i".repeat(201),"title":"t"}]}]))).field,
            "sections[0].rows[0].id"
        );
        assert_eq!(
            invalid(list("B", json!([{"rows":[{"id":"1","title":"t".repeat(25)}]}]))).to_string(),
            "sections[0].rows[0].title: 25 characters, Meta allows at most 24"
        );
        assert_eq!(
            invalid(list(
                "B",
                json!([{"rows":[{"id":"1","title":"t","description":"d".repeat(73)}]}])
            ))
            .to_string(),
            "sections[0].rows[0].description: 73 characters, Meta allows at most 72"
        );
        assert_eq!(
            invalid(list(
                "B",
                json!([{"title":"A","rows":[{"id":"1","title":"t"}]},{"title":"B","rows":[{"id":"1","title":"u"}]}])
            ))
            .field,
            "sections[1].rows[0].id"
        );
        let ok = json!([{"rows":[{"id":"i".repeat(200),"title":"t".repeat(24),"description":"d".repeat(72)}]}]);
        assert!(body(list(&"b".repeat(20), ok)).is_object());
    }

    #[test]
    fn cta_limits() {
        let e = invalid(json!({"type":"cta_url","body":"b","display_text":"d".repeat(21),"url":"https://e.com"}));
        assert_eq!(e.to_string(), "display_text: 21 characters, Meta allows at most 20");
        assert_eq!(
            invalid(json!({"type":"cta_url","body":"b","display_text":"d","url":"javascript:alert(1)"})).field,
            "url"
        );
        assert_eq!(
            invalid(json!({"type":"cta_url","body":"","display_text":"d","url":"https://e.com"})).field,
            "body"
        );
    }

    #[test]
    fn template_limits() {
        assert_eq!(invalid(json!({"type":"template","name":"","lang":"fr"})).field, "name");
        assert_eq!(
            invalid(json!({"type":"template","name":"Order_Confirmation","lang":"fr"})).field,
            "name"
        );
        assert_eq!(
            invalid(json!({"type":"template","name":"order-confirmation","lang":"fr"})).field,
            "name"
        );
        assert_eq!(invalid(json!({"type":"template","name":"ok","lang":""})).field, "lang");
        assert_eq!(
            invalid(json!({"type":"template","name":"ok","lang":"fr","components":{"type":"body"}})).field,
            "components"
        );
        assert_eq!(
            invalid(json!({"type":"template","name":"ok","lang":"fr","components":["body"]})).field,
            "components[0]"
        );
        assert_eq!(
            invalid(
                json!({"type":"template","name":"ok","lang":"fr","components":[{"type":"body"},{"parameters":[]}]})
            )
            .field,
            "components[1].type"
        );
    }

    #[test]
    fn other_limits() {
        assert_eq!(
            invalid(json!({"type":"location","latitude":91.0,"longitude":0.0})).field,
            "latitude"
        );
        assert_eq!(
            invalid(json!({"type":"location","latitude":0.0,"longitude":-180.5})).field,
            "longitude"
        );
        assert!(body(json!({"type":"location","latitude":-90.0,"longitude":180.0})).is_object());
        assert_eq!(invalid(json!({"type":"contacts","contacts":[]})).field, "contacts");
        assert_eq!(
            invalid(json!({"type":"contacts","contacts":{"name":{}}})).field,
            "contacts"
        );
        assert_eq!(
            invalid(json!({"type":"contacts","contacts":[{"phones":[]}]})).field,
            "contacts[0].name.formatted_name"
        );
        assert_eq!(
            invalid(json!({"type":"reaction","message_id":"","emoji":"👍"})).field,
            "message_id"
        );
        assert_eq!(
            invalid(json!({"type":"reaction","message_id":"w","emoji":"a b"})).field,
            "emoji"
        );
        assert_eq!(invalid(json!({"type":"mark_read","message_id":""})).field, "message_id");
    }

    #[test]
    fn voice_json_and_limits() {
        assert_eq!(
            body(json!({"type":"audio","media":"1013859600285441","voice":true})),
            base("audio", json!({"id": "1013859600285441", "voice": true}))
        );
        assert_eq!(
            body(json!({"type":"audio","link":"https://e.com/v.ogg","voice":true})),
            base("audio", json!({"link": "https://e.com/v.ogg", "voice": true}))
        );
        assert_eq!(
            body(json!({"type":"audio","media":"1","voice":false})),
            base("audio", json!({"id": "1"}))
        );
        let e = invalid(json!({"type":"audio","link":"https://e.com/chanson.MP3","voice":true}));
        assert_eq!(e.field, "voice");
        assert!(e.reason.contains(".mp3"), "{e}");
        let v = content(json!({"type":"audio","media":"1","voice":true}));
        assert_eq!(v.summary(), "audio (voice): media 1");
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            json!({"type":"audio","media":"1","voice":true})
        );

        let mut ogg = b"OggS\0\x02".to_vec();
        ogg.resize(26, 0);
        ogg.push(1); // one segment
        ogg.push(19);
        ogg.extend_from_slice(b"OpusHead\x01\x01");
        assert!(check_voice_bytes(&ogg).is_ok());
        let mut vorbis = ogg.clone();
        vorbis[28..36].copy_from_slice(b"\x01vorbis\0");
        assert!(check_voice_bytes(&vorbis).unwrap_err().reason.contains("OPUS"));
        assert!(
            check_voice_bytes(b"ID3\x04mp3")
                .unwrap_err()
                .reason
                .contains("not an OGG")
        );
        assert!(check_audio_size(MAX_AUDIO_BYTES).is_ok());
        assert_eq!(check_audio_size(MAX_AUDIO_BYTES + 1).unwrap_err().field, "audio");
    }

    #[test]
    fn media_headers() {
        let b = body(json!({
            "type":"buttons","body":"Valider ?","buttons":[{"id":"a","title":"Oui"}],
            "header":{"type":"image","image":{"id":"2762702990552401"}}
        }));
        assert_eq!(
            b["interactive"]["header"],
            json!({"type": "image", "image": {"id": "2762702990552401"}})
        );
        let b = body(json!({
            "type":"buttons","body":"Facture","buttons":[{"id":"a","title":"Payer"}],
            "header":{"type":"document","document":{"link":"https://e.com/F1.pdf","filename":"F1.pdf"}}
        }));
        assert_eq!(
            b["interactive"]["header"],
            json!({"type": "document", "document": {"link": "https://e.com/F1.pdf", "filename": "F1.pdf"}})
        );
        let b = body(json!({
            "type":"cta_url","body":"Suivre","display_text":"Voir","url":"https://e.com/t",
            "header":{"type":"video","video":{"link":"https://e.com/v.mp4"}}
        }));
        assert_eq!(
            b["interactive"]["header"],
            json!({"type": "video", "video": {"link": "https://e.com/v.mp4"}})
        );
        // `media` is accepted for the id; an explicit text header object works too.
        let b = body(json!({
            "type":"buttons","body":"b","buttons":[{"id":"a","title":"x"}],
            "header":{"type":"video","video":{"media":"55"}}
        }));
        assert_eq!(
            b["interactive"]["header"],
            json!({"type": "video", "video": {"id": "55"}})
        );
        let b = body(json!({
            "type":"buttons","body":"b","buttons":[{"id":"a","title":"x"}],"header":{"type":"text","text":"Titre"}
        }));
        assert_eq!(b["interactive"]["header"], json!({"type": "text", "text": "Titre"}));
        // A text header still round-trips as a plain string.
        let c = content(json!({"type":"buttons","body":"b","buttons":[{"id":"a","title":"x"}],"header":"H"}));
        assert_eq!(serde_json::to_value(&c).unwrap()["header"], json!("H"));

        let btn =
            |header: Value| json!({"type":"buttons","body":"b","buttons":[{"id":"a","title":"x"}],"header":header});
        assert_eq!(
            invalid(btn(json!({"type":"image","video":{"link":"https://e.com/v"}}))).field,
            "header"
        );
        assert_eq!(invalid(btn(json!({"type":"image"}))).field, "header");
        assert_eq!(
            invalid(btn(
                json!({"type":"image","image":{"id":"1","link":"https://e.com/a.png"}})
            ))
            .field,
            "header.image"
        );
        assert_eq!(invalid(btn(json!({"type":"image","image":{}}))).field, "header.image");
        assert_eq!(
            invalid(btn(json!({"type":"image","image":{"link":"ftp://e.com/a.png"}}))).field,
            "header.image.link"
        );
        assert_eq!(
            invalid(btn(
                json!({"type":"image","image":{"link":"https://e.com/a.png","filename":"a.png"}})
            ))
            .field,
            "header.image.filename"
        );
        assert!(
            serde_json::from_value::<OutboundContent>(btn(
                json!({"type":"audio","audio":{"link":"https://e.com/a.ogg"}})
            ))
            .is_err(),
            "no audio header"
        );
        assert_eq!(invalid(btn(json!({"type":"sticker","text":"x"}))).field, "header");
        assert_eq!(
            invalid(btn(json!({"type":"text","text":"t".repeat(61)}))).field,
            "header.text"
        );
        assert!(
            serde_json::from_value::<OutboundContent>(btn(json!({"type":"image","image":{"url":"x"}}))).is_err(),
            "unknown fields are refused"
        );
        assert!(serde_json::from_value::<OutboundContent>(btn(json!(3))).is_err());
        let e = invalid(json!({
            "type":"list","body":"Menu","button":"Choisir","sections":[{"rows":[{"id":"r","title":"t"}]}],
            "header":{"type":"image","image":{"link":"https://e.com/a.png"}}
        }));
        assert_eq!(e.field, "header");
        assert!(e.reason.contains("only a text header"), "{e}");
        let e = invalid(json!({
            "type":"cta_url","body":"b","display_text":"d","url":"https://e.com",
            "header":{"type":"image","image":{"id":"123"}}
        }));
        assert_eq!(e.field, "header.image.id");
    }

    #[test]
    fn typing_json() {
        let t = content(json!({"type":"typing","message_id":"wamid.X"}));
        assert_eq!(
            t.graph_body(&phone(), Some("wamid.Y")).unwrap(),
            json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X",
                   "typing_indicator": {"type": "text"}})
        );
        assert_eq!(t.kind(), "typing");
        assert!(!t.is_free_form() && !t.is_template());
        assert_eq!(t.summary(), "typing: wamid.X");
        assert_eq!(invalid(json!({"type":"typing","message_id":" "})).field, "message_id");
    }
}
