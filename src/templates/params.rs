//! The parameters of a template send.
//!
//! Scripts give a template's parameters the simple way, and [`build`] turns them into Meta's
//! send components:
//!
//! - a list, consumed in order: the header parameter (if the header has one), the body
//!   parameters, then one value per button that takes one, in button order: a URL button
//!   with a parameter takes its URL suffix, a quick reply its payload. Quick-reply payloads
//!   may be left out as a group (Meta then uses each button's text as its payload):
//!   `{"Awa Diop", "S00042", "15 000 CFA"}`;
//! - a table keyed by parameter name (`{customer = "Awa Diop"}`, or `["1"]`, `["2"]`… for
//!   numbered body parameters), with the special keys `header` (the header's parameter or
//!   media), `body` (a list of the numbered body parameters) and `buttons` (a list aligned
//!   with the template's buttons, `nil`/null for a button without parameter).
//!
//! Sends that carry hand-written components are checked by [`check`] instead. Both work on
//! a [`TemplateShape`], read by [`shape`] from Meta's component JSON (its list API, or
//! [`Definition::components`](super::Definition::components)).

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::definition::{parameter_names, placeholders};

/// Most consecutive spaces Meta accepts in a text parameter.
pub const MAX_CONSECUTIVE_SPACES: usize = 4;

/// The kind of media a header shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// jpg or png.
    Image,
    /// pdf.
    Document,
    /// mp4.
    Video,
}

impl MediaKind {
    /// The lowercase name Meta uses in send parameters: `image`, `document`, `video`.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Document => "document",
            MediaKind::Video => "video",
        }
    }
}

/// What a template's header takes at each send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderShape {
    /// The template has no header (a text header without parameter is
    /// [`HeaderShape::Text`] with an empty list).
    None,
    /// A text header and its parameter names (`"1"`, or a name), possibly none.
    Text(Vec<String>),
    /// A media header: the media is chosen at each send.
    Media(MediaKind),
    /// A header format walua does not fill in by itself (`LOCATION`): hand-written
    /// components only.
    Other(String),
}

/// What a button takes at each send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonKind {
    /// A quick reply: an optional payload.
    QuickReply,
    /// A URL button; `dynamic` when its URL ends with a parameter, the suffix given at send.
    Url {
        /// True when the URL ends with `{{1}}`.
        dynamic: bool,
    },
    /// A phone-number button: nothing to give.
    PhoneNumber,
    /// Another kind (`COPY_CODE`, `FLOW`, …), in Meta's upper case: walua gives it nothing.
    Other(String),
}

/// One button of a template, as a send sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonShape {
    /// Its position among the template's buttons: Meta's `index` in send components.
    pub index: usize,
    /// What it takes.
    pub kind: ButtonKind,
}

/// What a template takes at each send: read from its components by [`shape`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateShape {
    /// The template's name, for error messages (empty when unknown: see [`TemplateShape::with_name`]).
    pub name: String,
    /// What the header takes.
    pub header: HeaderShape,
    /// The body's parameter names, in Meta's order: `"1"`, `"2"`… or names by first use.
    pub body: Vec<String>,
    /// True when the template uses named parameters (`{{customer}}`): sends then carry
    /// `parameter_name`.
    pub named: bool,
    /// The buttons, in order.
    pub buttons: Vec<ButtonShape>,
}

/// Why a template send's parameters were refused; each names the template and the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A list of parameters of the wrong length.
    #[error("{template} takes {expected}; {given} values given")]
    Count {
        /// The template (or "the template").
        template: String,
        /// What it takes, in words ("3 body parameters and 3 quick-reply payloads").
        expected: String,
        /// How many values the list held.
        given: usize,
    },
    /// A required parameter was not given.
    #[error("{template}: {part} is missing")]
    Missing {
        /// The template.
        template: String,
        /// The part ("body parameter {{2}}").
        part: String,
    },
    /// A key of a parameter table that the template does not have.
    #[error("{template}: unknown key `{key}`; the template takes {expected}")]
    UnknownKey {
        /// The template.
        template: String,
        /// The key given.
        key: String,
        /// The keys it takes.
        expected: String,
    },
    /// A parameter or component whose value or form is wrong.
    #[error("{template}: {part}: {reason}")]
    Invalid {
        /// The template.
        template: String,
        /// The part ("body parameter {{1}}", "button index 2").
        part: String,
        /// What was expected.
        reason: String,
    },
    /// Parameters that are neither a list nor a table.
    #[error("{template}: parameters must be a list or a table, not {found}")]
    Form {
        /// The template.
        template: String,
        /// What was given (`a string`, `a number`).
        found: String,
    },
}

fn upper(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_ascii_uppercase()
}

/// Reads what a template takes from Meta's components (upper or lower case types).
pub fn shape(components: &[Value]) -> TemplateShape {
    let mut s = TemplateShape {
        name: String::new(),
        header: HeaderShape::None,
        body: Vec::new(),
        named: false,
        buttons: Vec::new(),
    };
    let mut texts: Vec<String> = Vec::new();
    for c in components {
        match upper(c, "type").as_str() {
            "HEADER" => {
                let format = upper(c, "format");
                s.header = match format.as_str() {
                    "TEXT" | "" => {
                        let text = c.get("text").and_then(Value::as_str).unwrap_or("");
                        texts.push(text.to_string());
                        HeaderShape::Text(parameter_names(text))
                    }
                    "IMAGE" => HeaderShape::Media(MediaKind::Image),
                    "DOCUMENT" => HeaderShape::Media(MediaKind::Document),
                    "VIDEO" => HeaderShape::Media(MediaKind::Video),
                    _ => HeaderShape::Other(format),
                };
            }
            "BODY" => {
                let text = c.get("text").and_then(Value::as_str).unwrap_or("");
                texts.push(text.to_string());
                s.body = parameter_names(text);
            }
            "BUTTONS" => {
                let buttons = c.get("buttons").and_then(Value::as_array).cloned().unwrap_or_default();
                for (index, b) in buttons.iter().enumerate() {
                    let kind = match upper(b, "type").as_str() {
                        "QUICK_REPLY" => ButtonKind::QuickReply,
                        "URL" => ButtonKind::Url {
                            dynamic: b
                                .get("url")
                                .and_then(Value::as_str)
                                .is_some_and(|u| !placeholders(u).is_empty()),
                        },
                        "PHONE_NUMBER" => ButtonKind::PhoneNumber,
                        other => ButtonKind::Other(other.to_string()),
                    };
                    s.buttons.push(ButtonShape { index, kind });
                }
            }
            _ => {}
        }
    }
    s.named = texts.iter().flat_map(|t| placeholders(t)).any(|p| p.is_named());
    s
}

impl TemplateShape {
    /// The same shape, naming `name` in its error messages.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// The number of quick-reply buttons.
    pub fn quick_replies(&self) -> usize {
        self.buttons.iter().filter(|b| b.kind == ButtonKind::QuickReply).count()
    }

    /// The number of URL buttons that take a suffix.
    pub fn url_suffixes(&self) -> usize {
        self.buttons
            .iter()
            .filter(|b| b.kind == ButtonKind::Url { dynamic: true })
            .count()
    }

    /// How many values the header takes: its text parameters, or 1 for media.
    pub fn header_count(&self) -> usize {
        match &self.header {
            HeaderShape::Text(p) => p.len(),
            HeaderShape::Media(_) => 1,
            HeaderShape::None | HeaderShape::Other(_) => 0,
        }
    }

    fn label(&self) -> String {
        if self.name.is_empty() {
            "the template".into()
        } else {
            self.name.clone()
        }
    }

    fn invalid(&self, part: impl Into<String>, reason: impl Into<String>) -> ParamError {
        ParamError::Invalid {
            template: self.label(),
            part: part.into(),
            reason: reason.into(),
        }
    }

    fn missing(&self, part: impl Into<String>) -> ParamError {
        ParamError::Missing {
            template: self.label(),
            part: part.into(),
        }
    }

    /// What a parameter list holds, in words, for [`ParamError::Count`].
    fn expected_list(&self) -> String {
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut parts = Vec::new();
        match &self.header {
            HeaderShape::Media(k) => parts.push(format!("a header {}", k.as_str())),
            HeaderShape::Text(p) if !p.is_empty() => {
                parts.push(plural(p.len(), "header parameter", "header parameters"))
            }
            _ => {}
        }
        if !self.body.is_empty() {
            parts.push(plural(self.body.len(), "body parameter", "body parameters"));
        }
        if self.url_suffixes() > 0 {
            parts.push(plural(self.url_suffixes(), "URL button suffix", "URL button suffixes"));
        }
        let mut text = if parts.is_empty() {
            "no parameters".to_string()
        } else {
            parts.join(" and ")
        };
        let qr = self.quick_replies();
        if qr > 0 {
            if parts.is_empty() {
                text = plural(qr, "quick-reply payload", "quick-reply payloads");
            } else {
                text.push_str(&format!(
                    " and {}",
                    plural(qr, "quick-reply payload", "quick-reply payloads")
                ));
            }
            text.push_str(" (the payloads may be left out, all together)");
        }
        text
    }

    /// The keys a parameter table may hold, for [`ParamError::UnknownKey`].
    fn expected_keys(&self) -> String {
        let mut keys: Vec<String> = Vec::new();
        if self.header_count() > 0 {
            keys.push("header".into());
            if self.named
                && let HeaderShape::Text(p) = &self.header
            {
                keys.extend(p.iter().cloned());
            }
        }
        if self.named {
            keys.extend(self.body.iter().cloned());
        } else if !self.body.is_empty() {
            keys.push("body".into());
            keys.extend(self.body.iter().cloned());
        }
        if self.url_suffixes() + self.quick_replies() > 0 {
            keys.push("buttons".into());
        }
        if keys.is_empty() {
            "no parameters".into()
        } else {
            keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        }
    }
}

/// The values of a send, each at its place in the shape.
struct Given<'a> {
    header: Vec<Option<&'a Value>>,
    body: Vec<Option<&'a Value>>,
    buttons: Vec<Option<&'a Value>>,
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// Builds Meta's send components of a template from a simple list or table of parameters
/// (see the module documentation for the two forms).
pub fn build(shape: &TemplateShape, params: &Value) -> Result<Vec<Value>, ParamError> {
    let given = match params {
        Value::Array(a) => from_list(shape, a)?,
        Value::Null => from_list(shape, &[])?,
        Value::Object(o) => from_table(shape, o)?,
        other => {
            return Err(ParamError::Form {
                template: shape.label(),
                found: kind_of(other).into(),
            });
        }
    };
    render(shape, &given)
}

fn from_list<'a>(shape: &TemplateShape, list: &'a [Value]) -> Result<Given<'a>, ParamError> {
    let (h, b, urls, qr) = (
        shape.header_count(),
        shape.body.len(),
        shape.url_suffixes(),
        shape.quick_replies(),
    );
    let required = h + b + urls;
    let with_payloads = list.len() == required + qr && qr > 0;
    if list.len() != required && !with_payloads {
        return Err(ParamError::Count {
            template: shape.label(),
            expected: shape.expected_list(),
            given: list.len(),
        });
    }
    let mut values = list.iter();
    let header = (0..h).map(|_| values.next()).collect();
    let body = (0..b).map(|_| values.next()).collect();
    let buttons = shape
        .buttons
        .iter()
        .map(|button| match button.kind {
            ButtonKind::Url { dynamic: true } => values.next(),
            ButtonKind::QuickReply if with_payloads => values.next(),
            _ => None,
        })
        .collect();
    Ok(Given { header, body, buttons })
}

fn from_table<'a>(shape: &TemplateShape, table: &'a Map<String, Value>) -> Result<Given<'a>, ParamError> {
    let mut given = Given {
        header: vec![None; shape.header_count()],
        body: vec![None; shape.body.len()],
        buttons: vec![None; shape.buttons.len()],
    };
    let header_names: Vec<String> = match &shape.header {
        HeaderShape::Text(p) => p.clone(),
        _ => Vec::new(),
    };
    let set = |slot: &mut Option<&'a Value>, v: &'a Value, part: String| {
        if slot.is_some() {
            return Err(shape.invalid(part, "given twice"));
        }
        *slot = Some(v);
        Ok(())
    };
    for (key, value) in table {
        let unknown = || ParamError::UnknownKey {
            template: shape.label(),
            key: key.clone(),
            expected: shape.expected_keys(),
        };
        let by_name = shape.named || key.bytes().all(|c| c.is_ascii_digit());
        if by_name && let Some(i) = shape.body.iter().position(|n| n == key) {
            set(&mut given.body[i], value, format!("body parameter {{{{{key}}}}}"))?;
        } else if shape.named
            && let Some(i) = header_names.iter().position(|n| n == key)
        {
            set(&mut given.header[i], value, format!("header parameter {{{{{key}}}}}"))?;
        } else if key == "header" {
            if given.header.len() != 1 {
                return Err(shape.invalid("header", "the template's header takes no parameter"));
            }
            set(&mut given.header[0], value, "header parameter".into())?;
        } else if key == "body" && !shape.named && !shape.body.is_empty() {
            let Some(list) = value.as_array() else {
                return Err(shape.invalid("body", format!("must be a list of values, not {}", kind_of(value))));
            };
            if list.len() != shape.body.len() {
                return Err(shape.invalid(
                    "body",
                    format!("{} values for {} body parameters", list.len(), shape.body.len()),
                ));
            }
            for (i, v) in list.iter().enumerate() {
                set(&mut given.body[i], v, format!("body parameter {{{{{}}}}}", i + 1))?;
            }
        } else if key == "buttons" && !shape.buttons.is_empty() {
            let Some(list) = value.as_array() else {
                return Err(shape.invalid(
                    "buttons",
                    format!(
                        "must be a list aligned with the template's buttons, not {}",
                        kind_of(value)
                    ),
                ));
            };
            if list.len() > shape.buttons.len() {
                return Err(shape.invalid(
                    "buttons",
                    format!("{} values for {} buttons", list.len(), shape.buttons.len()),
                ));
            }
            for (i, v) in list.iter().enumerate() {
                if v.is_null() {
                    continue;
                }
                match shape.buttons[i].kind {
                    ButtonKind::QuickReply | ButtonKind::Url { dynamic: true } => given.buttons[i] = Some(v),
                    _ => {
                        return Err(shape.invalid(
                            format!("button index {i}"),
                            "takes no parameter: give null (nil) for it",
                        ));
                    }
                }
            }
        } else {
            return Err(unknown());
        }
    }
    Ok(given)
}

/// A text parameter's value: numbers and booleans become text; empty values and Meta's
/// forbidden whitespace are refused.
fn text_value(shape: &TemplateShape, part: &str, v: Option<&Value>) -> Result<String, ParamError> {
    let text = match v {
        None => return Err(shape.missing(part)),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Null) => return Err(shape.invalid(part, "is null; Meta refuses empty parameters")),
        Some(other) => return Err(shape.invalid(part, format!("must be text, not {}", kind_of(other)))),
    };
    check_text(shape, part, &text)?;
    Ok(text)
}

fn check_text(shape: &TemplateShape, part: &str, text: &str) -> Result<(), ParamError> {
    if text.trim().is_empty() {
        return Err(shape.invalid(part, "is empty; Meta refuses empty parameters"));
    }
    if text.contains(['\n', '\r', '\t']) {
        return Err(shape.invalid(
            part,
            "contains a line break or a tab, which Meta refuses in template parameters",
        ));
    }
    if text.contains(&" ".repeat(MAX_CONSECUTIVE_SPACES + 1)) {
        return Err(shape.invalid(
            part,
            format!("contains more than {MAX_CONSECUTIVE_SPACES} consecutive spaces, which Meta refuses"),
        ));
    }
    Ok(())
}

/// A media header's value: a media id (digits), an http(s) URL, or `{id|link, filename?}`.
fn media_value(shape: &TemplateShape, kind: MediaKind, v: Option<&Value>) -> Result<Value, ParamError> {
    let part = format!("header {}", kind.as_str());
    let media = match v {
        None => return Err(shape.missing(part)),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) => json!({ "id": s }),
        Some(Value::Number(n)) if n.is_u64() => json!({ "id": n.to_string() }),
        Some(Value::String(s)) if s.starts_with("https://") || s.starts_with("http://") => json!({ "link": s }),
        Some(Value::Object(o)) => {
            let mut out = Map::new();
            match (o.get("id"), o.get("link")) {
                (Some(Value::String(id)), None) if !id.is_empty() => {
                    out.insert("id".into(), json!(id));
                }
                (Some(Value::Number(id)), None) => {
                    out.insert("id".into(), json!(id.to_string()));
                }
                (None, Some(Value::String(link))) if link.starts_with("https://") || link.starts_with("http://") => {
                    out.insert("link".into(), json!(link));
                }
                _ => {
                    return Err(shape.invalid(
                        part,
                        "needs exactly one of `id` (a media id) or `link` (an http(s) URL)",
                    ));
                }
            }
            for (k, val) in o {
                match k.as_str() {
                    "id" | "link" => {}
                    "filename" if kind == MediaKind::Document => {
                        let Some(name) = val.as_str() else {
                            return Err(shape.invalid(part, "filename must be text"));
                        };
                        out.insert("filename".into(), json!(name));
                    }
                    "caption" if kind != MediaKind::Document => {}
                    other => {
                        return Err(shape.invalid(
                            part,
                            format!("unknown key `{other}` (id, link and, for a document, filename)"),
                        ));
                    }
                }
            }
            Value::Object(out)
        }
        Some(other) => {
            return Err(shape.invalid(
                part,
                format!(
                    "must be a media id, an http(s) URL or a table {{id|link, filename}}, not {}",
                    match other {
                        Value::String(s) => format!("«{s}»"),
                        v => kind_of(v).to_string(),
                    }
                ),
            ));
        }
    };
    Ok(json!({ "type": kind.as_str(), kind.as_str(): media }))
}

fn text_parameter(named: bool, name: &str, text: String) -> Value {
    if named {
        json!({ "type": "text", "parameter_name": name, "text": text })
    } else {
        json!({ "type": "text", "text": text })
    }
}

fn render(shape: &TemplateShape, given: &Given) -> Result<Vec<Value>, ParamError> {
    let mut out = Vec::new();
    match &shape.header {
        HeaderShape::Text(names) if !names.is_empty() => {
            let mut parameters = Vec::new();
            for (name, v) in names.iter().zip(&given.header) {
                let text = text_value(shape, &format!("header parameter {{{{{name}}}}}"), *v)?;
                parameters.push(text_parameter(shape.named, name, text));
            }
            out.push(json!({ "type": "header", "parameters": parameters }));
        }
        HeaderShape::Media(kind) => {
            let p = media_value(shape, *kind, given.header.first().copied().flatten())?;
            out.push(json!({ "type": "header", "parameters": [p] }));
        }
        HeaderShape::Other(format) => {
            return Err(shape.invalid(
                "header",
                format!("a {format} header is not filled in from a list or table: send hand-written components"),
            ));
        }
        _ => {}
    }
    if !shape.body.is_empty() {
        let mut parameters = Vec::new();
        for (name, v) in shape.body.iter().zip(&given.body) {
            let text = text_value(shape, &format!("body parameter {{{{{name}}}}}"), *v)?;
            parameters.push(text_parameter(shape.named, name, text));
        }
        out.push(json!({ "type": "body", "parameters": parameters }));
    }
    for (button, v) in shape.buttons.iter().zip(&given.buttons) {
        let index = button.index.to_string();
        match &button.kind {
            ButtonKind::Url { dynamic: true } => {
                let part = format!("URL button index {index} suffix");
                let text = text_value(shape, &part, *v)?;
                out.push(json!({
                    "type": "button", "sub_type": "url", "index": index,
                    "parameters": [{ "type": "text", "text": text }],
                }));
            }
            ButtonKind::QuickReply => {
                if let Some(v) = v {
                    let part = format!("quick-reply button index {index} payload");
                    let payload = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => return Err(shape.invalid(part, format!("must be text, not {}", kind_of(other)))),
                    };
                    if payload.is_empty() {
                        return Err(shape.invalid(part, "is empty"));
                    }
                    out.push(json!({
                        "type": "button", "sub_type": "quick_reply", "index": index,
                        "parameters": [{ "type": "payload", "payload": payload }],
                    }));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Checks the parameters of one header or body component against the names expected.
fn check_text_component(
    shape: &TemplateShape,
    part: &str,
    names: &[String],
    component: &Value,
) -> Result<(), ParamError> {
    let parameters = component
        .get("parameters")
        .map(|p| {
            p.as_array()
                .ok_or_else(|| shape.invalid(part, "parameters must be a list"))
        })
        .transpose()?
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if parameters.len() != names.len() {
        return Err(shape.invalid(
            part,
            format!(
                "{} parameters given, the template takes {}",
                parameters.len(),
                names.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for (i, p) in parameters.iter().enumerate() {
        let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
        let label = format!("{part} parameter {}", i + 1);
        match kind {
            "text" => {
                let text = p
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| shape.invalid(&label, "a text parameter needs `text`"))?;
                check_text(shape, &label, text)?;
            }
            "currency" | "date_time" => {}
            other => {
                return Err(shape.invalid(
                    &label,
                    format!("type `{other}`: a text parameter is text, currency or date_time"),
                ));
            }
        }
        if shape.named {
            let Some(name) = p.get("parameter_name").and_then(Value::as_str) else {
                return Err(shape.invalid(&label, "the template uses named parameters: give `parameter_name`"));
            };
            if !names.iter().any(|n| n == name) {
                return Err(shape.invalid(
                    &label,
                    format!("no parameter named `{name}` (the template has {})", names.join(", ")),
                ));
            }
            if !seen.insert(name) {
                return Err(shape.invalid(&label, format!("`{name}` given twice")));
            }
        }
    }
    Ok(())
}

/// Checks hand-written send components against a template's shape: the header's presence
/// and media kind, the number (and names) of body parameters and their types, and each
/// button component's index and sub-type.
pub fn check(shape: &TemplateShape, sent: &[Value]) -> Result<(), ParamError> {
    let (mut header, mut body) = (false, false);
    let mut buttons = HashSet::new();
    for (i, c) in sent.iter().enumerate() {
        let kind = c.get("type").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
        match kind.as_str() {
            "header" => {
                if std::mem::replace(&mut header, true) {
                    return Err(shape.invalid("header", "given twice"));
                }
                match &shape.header {
                    HeaderShape::Text(names) if !names.is_empty() => check_text_component(shape, "header", names, c)?,
                    HeaderShape::Media(media) => {
                        let parameters = c
                            .get("parameters")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        let [p] = parameters.as_slice() else {
                            return Err(shape.invalid(
                                "header",
                                format!("takes one {} parameter, {} given", media.as_str(), parameters.len()),
                            ));
                        };
                        let t = p.get("type").and_then(Value::as_str).unwrap_or("");
                        if t != media.as_str() || !p.get(t).is_some_and(Value::is_object) {
                            return Err(shape.invalid(
                                "header",
                                format!(
                                    "the template's header is a {0}: give {{\"type\":\"{0}\",\"{0}\":{{\"id\"|\"link\":…}}}}, not type `{t}`",
                                    media.as_str()
                                ),
                            ));
                        }
                    }
                    HeaderShape::Other(_) => {}
                    _ => return Err(shape.invalid("header", "the template's header takes no parameter")),
                }
            }
            "body" => {
                if std::mem::replace(&mut body, true) {
                    return Err(shape.invalid("body", "given twice"));
                }
                check_text_component(shape, "body", &shape.body, c)?;
            }
            "button" => {
                let index = match c.get("index") {
                    Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
                    Some(Value::Number(n)) => n.as_u64(),
                    _ => None,
                };
                let Some(index) = index.and_then(|n| usize::try_from(n).ok()) else {
                    return Err(shape.invalid(
                        format!("components[{i}]"),
                        "a button component needs `index`, the button's position (\"0\", \"1\"…)",
                    ));
                };
                let Some(button) = shape.buttons.get(index) else {
                    return Err(shape.invalid(
                        format!("button index {index}"),
                        format!("the template has {} buttons", shape.buttons.len()),
                    ));
                };
                if !buttons.insert(index) {
                    return Err(shape.invalid(format!("button index {index}"), "given twice"));
                }
                let sub_type = c.get("sub_type").and_then(Value::as_str).unwrap_or("");
                let fits = match &button.kind {
                    ButtonKind::QuickReply => sub_type == "quick_reply",
                    ButtonKind::Url { dynamic: true } => sub_type == "url",
                    ButtonKind::Other(k) => sub_type.eq_ignore_ascii_case(k),
                    ButtonKind::Url { dynamic: false } | ButtonKind::PhoneNumber => false,
                };
                if !fits {
                    let want = match &button.kind {
                        ButtonKind::QuickReply => "a quick reply: sub_type quick_reply".to_string(),
                        ButtonKind::Url { dynamic: true } => "a URL button: sub_type url".to_string(),
                        ButtonKind::Url { dynamic: false } => {
                            "a URL button without parameter: send nothing for it".into()
                        }
                        ButtonKind::PhoneNumber => "a phone-number button: send nothing for it".into(),
                        ButtonKind::Other(k) => format!("a {k} button: sub_type {}", k.to_ascii_lowercase()),
                    };
                    return Err(shape.invalid(
                        format!("button index {index}"),
                        format!("sub_type `{sub_type}`, but the button is {want}"),
                    ));
                }
            }
            other => {
                return Err(shape.invalid(
                    format!("components[{i}]"),
                    format!("unknown component type `{other}` (header, body or button)"),
                ));
            }
        }
    }
    let header_needed = match &shape.header {
        HeaderShape::Text(p) => !p.is_empty(),
        HeaderShape::Media(_) => true,
        _ => false,
    };
    if header_needed && !header {
        return Err(shape.missing(match &shape.header {
            HeaderShape::Media(k) => format!("the header {} (a header component)", k.as_str()),
            _ => "the header parameter (a header component)".into(),
        }));
    }
    if !shape.body.is_empty() && !body {
        return Err(shape.missing(format!("the body component ({} parameters)", shape.body.len())));
    }
    for b in &shape.buttons {
        if b.kind == (ButtonKind::Url { dynamic: true }) && !buttons.contains(&b.index) {
            return Err(shape.missing(format!("the URL suffix of button index {}", b.index)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped order_created: 3 body parameters and 3 quick replies.
    fn order_created() -> TemplateShape {
        shape(&[
            json!({"type":"BODY","text":"Bonjour {{1}}, votre commande {{2}} de {{3}} est enregistrée."}),
            json!({"type":"FOOTER","text":"Merci"}),
            json!({"type":"BUTTONS","buttons":[
                {"type":"QUICK_REPLY","text":"Valider"},
                {"type":"QUICK_REPLY","text":"Annuler"},
                {"type":"QUICK_REPLY","text":"Voir détail"}]}),
        ])
        .with_name("order_created")
    }

    /// A document header, one body parameter, a URL button with a suffix, a phone button.
    fn invoice() -> TemplateShape {
        shape(&[
            json!({"type":"header","format":"document"}),
            json!({"type":"body","text":"Votre facture {{1}} est disponible en ligne."}),
            json!({"type":"buttons","buttons":[
                {"type":"URL","text":"Voir","url":"https://b.example/f/{{1}}"},
                {"type":"PHONE_NUMBER","text":"Appeler","phone_number":"+221338000000"},
                {"type":"URL","text":"Site","url":"https://b.example/"}]}),
        ])
        .with_name("invoice")
    }

    /// Named parameters in the header and the body.
    fn named() -> TemplateShape {
        shape(&[
            json!({"type":"HEADER","format":"TEXT","text":"Commande {{order}}"}),
            json!({"type":"BODY","text":"Bonjour {{customer}}, le total est de {{amount}} ce jour."}),
        ])
        .with_name("named")
    }

    #[test]
    fn shape_reads_meta_components() {
        let s = order_created();
        assert_eq!(s.header, HeaderShape::None);
        assert_eq!(s.body, ["1", "2", "3"]);
        assert!(!s.named);
        assert_eq!(s.quick_replies(), 3);
        let s = invoice();
        assert_eq!(s.header, HeaderShape::Media(MediaKind::Document));
        assert_eq!(s.buttons[0].kind, ButtonKind::Url { dynamic: true });
        assert_eq!(s.buttons[1].kind, ButtonKind::PhoneNumber);
        assert_eq!(
            s.buttons[2],
            ButtonShape {
                index: 2,
                kind: ButtonKind::Url { dynamic: false }
            }
        );
        let s = named();
        assert!(s.named);
        assert_eq!(s.header, HeaderShape::Text(vec!["order".into()]));
        assert_eq!(s.body, ["customer", "amount"]);
        let s = shape(&[
            json!({"type":"HEADER","format":"LOCATION"}),
            json!({"type":"BODY","text":"Code {{2}} puis {{1}} et {{10}}."}),
            json!({"type":"BUTTONS","buttons":[{"type":"COPY_CODE","example":"X"}]}),
        ]);
        assert_eq!(s.header, HeaderShape::Other("LOCATION".into()));
        assert_eq!(s.body, ["1", "2", "10"]);
        assert_eq!(s.buttons[0].kind, ButtonKind::Other("COPY_CODE".into()));
        let e = build(&s, &json!(["a", "b", "c"])).unwrap_err();
        assert!(e.to_string().contains("a LOCATION header is not filled in"), "{e}");
        let sent = [
            json!({"type":"header","parameters":[{"type":"location","location":{}}]}),
            json!({"type":"body","parameters":[{"type":"text","text":"1"},{"type":"text","text":"2"},{"type":"text","text":"3"}]}),
            json!({"type":"button","sub_type":"copy_code","index":0,"parameters":[{"type":"coupon_code","coupon_code":"X"}]}),
        ];
        assert!(check(&s, &sent).is_ok());
    }

    #[test]
    fn a_list_fills_the_body_and_optionally_the_quick_replies() {
        let s = order_created();
        let c = build(&s, &json!(["Awa", "S00042", 15000])).unwrap();
        assert_eq!(
            c,
            [json!({"type":"body","parameters":[
                {"type":"text","text":"Awa"},{"type":"text","text":"S00042"},{"type":"text","text":"15000"}]})]
        );
        let c = build(&s, &json!(["Awa", "S00042", "15 000 CFA", "v_1", "c_1", "d_1"])).unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(
            c[3],
            json!({"type":"button","sub_type":"quick_reply","index":"2","parameters":[{"type":"payload","payload":"d_1"}]})
        );
        assert!(check(&s, &c).is_ok());
    }

    #[test]
    fn a_list_of_the_wrong_length_names_what_the_template_takes() {
        let e = build(&order_created(), &json!(["Awa", "S00042"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "order_created takes 3 body parameters and 3 quick-reply payloads (the payloads may be left out, all together); 2 values given"
        );
        let e = build(&order_created(), &json!(["a", "b", "c", "d"])).unwrap_err();
        assert!(matches!(e, ParamError::Count { given: 4, .. }));
        let e = build(&invoice(), &json!(["123"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invoice takes a header document and 1 body parameter and 1 URL button suffix; 1 values given"
        );
    }

    #[test]
    fn a_list_fills_media_headers_and_url_suffixes() {
        let s = invoice();
        let c = build(&s, &json!(["4490", "F42", "F42"])).unwrap();
        assert_eq!(
            c[0],
            json!({"type":"header","parameters":[{"type":"document","document":{"id":"4490"}}]})
        );
        assert_eq!(
            c[2],
            json!({"type":"button","sub_type":"url","index":"0","parameters":[{"type":"text","text":"F42"}]})
        );
        assert!(check(&s, &c).is_ok());
        let c = build(&s, &json!(["https://b.example/f.pdf", "F42", "F42"])).unwrap();
        assert_eq!(
            c[0]["parameters"][0]["document"],
            json!({"link":"https://b.example/f.pdf"})
        );
        let c = build(&s, &json!([{"id": "4490", "filename": "F42.pdf"}, "F42", "F42"])).unwrap();
        assert_eq!(
            c[0]["parameters"][0]["document"],
            json!({"id":"4490","filename":"F42.pdf"})
        );
        let e = build(&s, &json!(["facture.pdf", "F42", "F42"])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invoice: header document: must be a media id"),
            "{e}"
        );
        let e = build(&s, &json!([{"id": "1", "link": "https://x"}, "F42", "F42"])).unwrap_err();
        assert!(e.to_string().contains("exactly one of `id`"), "{e}");
        let e = build(&s, &json!([{"id": "1", "size": 3}, "F42", "F42"])).unwrap_err();
        assert!(e.to_string().contains("unknown key `size`"), "{e}");
    }

    #[test]
    fn a_table_fills_positional_parameters_by_number_or_body_list() {
        let s = order_created();
        let by_number = build(&s, &json!({"1": "Awa", "2": "S00042", "3": "15 000 CFA"})).unwrap();
        let by_list = build(&s, &json!({"body": ["Awa", "S00042", "15 000 CFA"]})).unwrap();
        assert_eq!(by_number, by_list);
        assert_eq!(by_number.len(), 1);
        let with_buttons = build(
            &s,
            &json!({"body": ["Awa", "S00042", "15 000 CFA"], "buttons": ["v", null, "d"]}),
        )
        .unwrap();
        assert_eq!(with_buttons.len(), 3);
        assert_eq!(with_buttons[2]["index"], "2");
        let s = invoice();
        let c = build(&s, &json!({"header": "4490", "1": "F42", "buttons": ["F42"]})).unwrap();
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn a_table_fills_named_parameters() {
        let s = named();
        let c = build(&s, &json!({"order": "S1", "amount": "15 000 CFA", "customer": "Awa"})).unwrap();
        assert_eq!(
            c,
            [
                json!({"type":"header","parameters":[{"type":"text","parameter_name":"order","text":"S1"}]}),
                json!({"type":"body","parameters":[
                    {"type":"text","parameter_name":"customer","text":"Awa"},
                    {"type":"text","parameter_name":"amount","text":"15 000 CFA"}]}),
            ]
        );
        assert!(check(&s, &c).is_ok());
        let c2 = build(&s, &json!({"header": "S1", "amount": "15 000 CFA", "customer": "Awa"})).unwrap();
        assert_eq!(c, c2);
        // A list works too, in Meta's order.
        assert_eq!(build(&s, &json!(["S1", "Awa", "15 000 CFA"])).unwrap(), c);
    }

    #[test]
    fn table_errors() {
        let s = named();
        let e = build(&s, &json!({"order": "S1", "customer": "Awa"})).unwrap_err();
        assert_eq!(e.to_string(), "named: body parameter {{amount}} is missing");
        let e = build(
            &s,
            &json!({"order": "S1", "customer": "Awa", "amount": "1", "client": "x"}),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "named: unknown key `client`; the template takes `header`, `order`, `customer`, `amount`"
        );
        let e = build(
            &s,
            &json!({"order": "S1", "header": "S2", "customer": "Awa", "amount": "1"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        let s = order_created();
        let e = build(&s, &json!({"body": ["a", "b"]})).unwrap_err();
        assert!(e.to_string().contains("2 values for 3 body parameters"), "{e}");
        let e = build(
            &s,
            &json!({"1": "a", "2": "b", "3": "c", "buttons": ["a", "b", "c", "d"]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("4 values for 3 buttons"), "{e}");
        let e = build(&s, &json!({"1": "a", "2": "b", "3": "c", "header": "x"})).unwrap_err();
        assert!(e.to_string().contains("header takes no parameter"), "{e}");
        let s = invoice();
        let e = build(&s, &json!({"header": "1", "1": "F42"})).unwrap_err();
        assert_eq!(e.to_string(), "invoice: URL button index 0 suffix is missing");
        let e = build(&s, &json!({"header": "1", "1": "F42", "buttons": ["x", "y"]})).unwrap_err();
        assert!(e.to_string().contains("button index 1: takes no parameter"), "{e}");
        let e = build(&s, &json!("F42")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invoice: parameters must be a list or a table, not a string"
        );
    }

    #[test]
    fn text_values_are_checked() {
        let s = order_created();
        for (value, needle) in [
            (json!(null), "body parameter {{2}}: is null"),
            (json!(""), "body parameter {{2}}: is empty"),
            (json!("a\nb"), "body parameter {{2}}: contains a line break or a tab"),
            (json!("a\tb"), "line break or a tab"),
            (json!("a     b"), "more than 4 consecutive spaces"),
            (json!(["x"]), "must be text, not a list"),
        ] {
            let e = build(&s, &json!(["Awa", value, "1"])).unwrap_err();
            assert!(e.to_string().contains(needle), "{e} / {needle}");
        }
        let c = build(&s, &json!(["Awa", true, "a    b"])).unwrap();
        assert_eq!(c[0]["parameters"][1]["text"], "true");
        let e = build(&s, &json!(["a", "b", "c", "v", "", "d"])).unwrap_err();
        assert!(
            e.to_string().contains("quick-reply button index 1 payload: is empty"),
            "{e}"
        );
    }

    #[test]
    fn a_template_without_parameters_takes_nothing() {
        let s = shape(&[json!({"type":"BODY","text":"Merci pour votre commande."})]).with_name("merci");
        assert!(build(&s, &json!([])).unwrap().is_empty());
        assert!(build(&s, &json!({})).unwrap().is_empty());
        assert!(build(&s, &Value::Null).unwrap().is_empty());
        let e = build(&s, &json!(["x"])).unwrap_err();
        assert_eq!(e.to_string(), "merci takes no parameters; 1 values given");
        assert!(check(&s, &[]).is_ok());
    }

    #[test]
    fn check_accepts_what_the_default_scripts_send() {
        // The shipped order_created: {name, ref, amount} then the payloads.
        let sent = [
            json!({"type":"body","parameters":[
                {"type":"text","text":"Awa"},{"type":"text","text":"S1"},{"type":"text","text":"1 CFA"}]}),
            json!({"type":"button","sub_type":"quick_reply","index":"0","parameters":[{"type":"payload","payload":"a"}]}),
            json!({"type":"button","sub_type":"quick_reply","index":1,"parameters":[{"type":"payload","payload":"b"}]}),
        ];
        assert!(check(&order_created(), &sent).is_ok());
        let sent = [
            json!({"type":"header","parameters":[{"type":"document","document":{"id":"1","filename":"F.pdf"}}]}),
            json!({"type":"body","parameters":[{"type":"currency","currency":{"fallback_value":"1","code":"XOF","amount_1000":1000}}]}),
            json!({"type":"button","sub_type":"url","index":"0","parameters":[{"type":"text","text":"F42"}]}),
        ];
        assert!(check(&invoice(), &sent).is_ok());
    }

    #[test]
    fn check_errors() {
        let body = json!({"type":"body","parameters":[{"type":"text","text":"F"}]});
        let header = json!({"type":"header","parameters":[{"type":"document","document":{"id":"1"}}]});
        let url = json!({"type":"button","sub_type":"url","index":"0","parameters":[{"type":"text","text":"x"}]});
        let s = invoice();
        let cases: Vec<(Vec<Value>, &str)> = vec![
            (
                vec![body.clone(), url.clone()],
                "invoice: the header document (a header component) is missing",
            ),
            (
                vec![
                    json!({"type":"header","parameters":[{"type":"image","image":{"id":"1"}}]}),
                    body.clone(),
                    url.clone(),
                ],
                "the template's header is a document",
            ),
            (
                vec![header.clone(), url.clone()],
                "the body component (1 parameters) is missing",
            ),
            (
                vec![header.clone(), json!({"type":"body","parameters":[]}), url.clone()],
                "invoice: body: 0 parameters given, the template takes 1",
            ),
            (
                vec![
                    header.clone(),
                    json!({"type":"body","parameters":[{"type":"image"}]}),
                    url.clone(),
                ],
                "type `image`: a text parameter is text, currency or date_time",
            ),
            (
                vec![
                    header.clone(),
                    json!({"type":"body","parameters":[{"type":"text","text":"a\nb"}]}),
                    url.clone(),
                ],
                "line break",
            ),
            (
                vec![header.clone(), body.clone()],
                "the URL suffix of button index 0 is missing",
            ),
            (
                vec![
                    header.clone(),
                    body.clone(),
                    url.clone(),
                    json!({"type":"button","sub_type":"url","index":"9"}),
                ],
                "button index 9: the template has 3 buttons",
            ),
            (
                vec![
                    header.clone(),
                    body.clone(),
                    url.clone(),
                    json!({"type":"button","sub_type":"url","index":"x"}),
                ],
                "a button component needs `index`",
            ),
            (
                vec![
                    header.clone(),
                    body.clone(),
                    json!({"type":"button","sub_type":"quick_reply","index":"0"}),
                ],
                "sub_type `quick_reply`, but the button is a URL button: sub_type url",
            ),
            (
                vec![
                    header.clone(),
                    body.clone(),
                    url.clone(),
                    json!({"type":"button","sub_type":"url","index":"2"}),
                ],
                "a URL button without parameter",
            ),
            (
                vec![header.clone(), body.clone(), url.clone(), url.clone()],
                "button index 0: given twice",
            ),
            (
                vec![header.clone(), body.clone(), url.clone(), json!({"type":"footer"})],
                "unknown component type `footer`",
            ),
        ];
        for (sent, needle) in cases {
            let e = check(&s, &sent).unwrap_err().to_string();
            assert!(e.contains(needle), "{e} / {needle}");
        }
        let e = check(&order_created(), &[json!({"type":"header","parameters":[]}), body]).unwrap_err();
        assert!(
            e.to_string().contains("the template's header takes no parameter"),
            "{e}"
        );
    }

    #[test]
    fn check_named_parameters() {
        let s = named();
        let h = json!({"type":"header","parameters":[{"type":"text","parameter_name":"order","text":"S1"}]});
        let good = json!({"type":"body","parameters":[
            {"type":"text","parameter_name":"amount","text":"1"},
            {"type":"text","parameter_name":"customer","text":"Awa"}]});
        assert!(check(&s, &[h.clone(), good]).is_ok());
        let unnamed = json!({"type":"body","parameters":[{"type":"text","text":"1"},{"type":"text","text":"2"}]});
        let e = check(&s, &[h.clone(), unnamed]).unwrap_err();
        assert!(e.to_string().contains("give `parameter_name`"), "{e}");
        let wrong = json!({"type":"body","parameters":[
            {"type":"text","parameter_name":"amount","text":"1"},
            {"type":"text","parameter_name":"client","text":"Awa"}]});
        let e = check(&s, &[h.clone(), wrong]).unwrap_err();
        assert!(e.to_string().contains("no parameter named `client`"), "{e}");
        let twice = json!({"type":"body","parameters":[
            {"type":"text","parameter_name":"amount","text":"1"},
            {"type":"text","parameter_name":"amount","text":"2"}]});
        let e = check(&s, &[h, twice]).unwrap_err();
        assert!(e.to_string().contains("`amount` given twice"), "{e}");
    }
}
