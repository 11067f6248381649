//! Template definitions kept as TOML files (`templates/order_created.fr.toml`), checked
//! against Meta's rules before anything is sent to Meta, and turned into Meta's creation JSON.
//!
//! One file holds one template in one language. The format is described in
//! `templates/README.md` and `templates/schema.json`; in short:
//!
//! ```toml
//! #:schema ./schema.json
//! name = "order_created"
//! language = "fr"
//! category = "UTILITY"
//!
//! [body]
//! text = "Bonjour {{1}}, votre commande {{2}} d'un montant de {{3}} est bien enregistrée."
//! example = ["Awa Diop", "S00042", "15 000 CFA"]
//!
//! [footer]
//! text = "Boutique Dakar"
//!
//! [[buttons]]
//! type = "QUICK_REPLY"
//! text = "Valider"
//! ```
//!
//! [`load_dir`] reads a directory, [`Definition::validate`] lists what Meta would refuse,
//! [`Definition::components`] / [`Definition::create_request`] give Meta's creation JSON and
//! [`differences`] compares a local definition with what Meta holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

/// Longest template name Meta accepts.
pub const MAX_NAME: usize = 512;
/// Longest text header, in characters.
pub const MAX_HEADER_TEXT: usize = 60;
/// Most parameters a text header may hold.
pub const MAX_HEADER_PARAMS: usize = 1;
/// Longest body, in characters (parameters counted as written, `{{1}}` is 5).
pub const MAX_BODY_TEXT: usize = 1024;
/// Longest footer, in characters.
pub const MAX_FOOTER_TEXT: usize = 60;
/// Words of fixed body text walua asks for each parameter: its approximation of Meta's
/// "this template has too many variables for its length".
pub const MIN_WORDS_PER_PARAM: usize = 3;
/// Most buttons a template may hold, all kinds together.
pub const MAX_BUTTONS: usize = 10;
/// Most quick-reply buttons.
pub const MAX_QUICK_REPLIES: usize = 10;
/// Most URL buttons.
pub const MAX_URL_BUTTONS: usize = 2;
/// Most phone-number buttons.
pub const MAX_PHONE_BUTTONS: usize = 1;
/// Longest button label, in characters.
pub const MAX_BUTTON_TEXT: usize = 25;
/// Longest button URL, in characters.
pub const MAX_BUTTON_URL: usize = 2000;
/// Longest button phone number, `+` included.
pub const MAX_BUTTON_PHONE: usize = 20;
/// Largest image header example Meta accepts: 5 MB.
pub const MAX_IMAGE_BYTES: u64 = 5 * 1024 * 1024;
/// Largest document header example Meta accepts: 100 MB.
pub const MAX_DOCUMENT_BYTES: u64 = 100 * 1024 * 1024;
/// Largest video header example Meta accepts: 16 MB.
pub const MAX_VIDEO_BYTES: u64 = 16 * 1024 * 1024;

/// The language codes Meta accepts for message templates (after [`normalize_language`]).
pub const META_LANGUAGES: &[&str] = &[
    "af", "sq", "ar", "az", "bn", "bg", "ca", "zh_CN", "zh_HK", "zh_TW", "hr", "cs", "da", "nl", "en", "en_GB",
    "en_US", "et", "fil", "fi", "fr", "ka", "de", "el", "gu", "ha", "he", "hi", "hu", "id", "ga", "it", "ja", "kn",
    "kk", "rw_RW", "ko", "ky_KG", "lo", "lv", "lt", "mk", "ms", "ml", "mr", "nb", "fa", "pl", "pt_BR", "pt_PT", "pa",
    "ro", "ru", "sr", "sk", "sl", "es", "es_AR", "es_ES", "es_MX", "sw", "sv", "ta", "te", "th", "tr", "uk", "ur",
    "uz", "vi", "zu",
];

/// Meta's template category: it decides the price and the review Meta applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Category {
    /// Transactional messages about something the customer did (orders, invoices).
    Utility,
    /// Promotions and anything else.
    Marketing,
    /// One-time passwords: parsed so that [`Definition::validate`] can say walua does not
    /// support them (they use a different component set).
    Authentication,
}

impl Category {
    /// Meta's spelling: `UTILITY`, `MARKETING`, `AUTHENTICATION`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Utility => "UTILITY",
            Category::Marketing => "MARKETING",
            Category::Authentication => "AUTHENTICATION",
        }
    }
}

/// What a template's header shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HeaderFormat {
    /// A line of text, with at most one parameter.
    Text,
    /// A picture (jpg, png), chosen at each send.
    Image,
    /// A PDF document (an invoice), chosen at each send.
    Document,
    /// An mp4 video, chosen at each send.
    Video,
}

impl HeaderFormat {
    /// Meta's spelling: `TEXT`, `IMAGE`, `DOCUMENT`, `VIDEO`.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderFormat::Text => "TEXT",
            HeaderFormat::Image => "IMAGE",
            HeaderFormat::Document => "DOCUMENT",
            HeaderFormat::Video => "VIDEO",
        }
    }

    /// The file extensions Meta accepts for this media kind (none for text), lowercase.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            HeaderFormat::Text => &[],
            HeaderFormat::Image => &["jpg", "jpeg", "png"],
            HeaderFormat::Document => &["pdf"],
            HeaderFormat::Video => &["mp4"],
        }
    }

    /// The largest example file Meta accepts for this media kind (0 for text).
    pub fn max_bytes(self) -> u64 {
        match self {
            HeaderFormat::Text => 0,
            HeaderFormat::Image => MAX_IMAGE_BYTES,
            HeaderFormat::Document => MAX_DOCUMENT_BYTES,
            HeaderFormat::Video => MAX_VIDEO_BYTES,
        }
    }
}

/// Example values, which Meta requires for every parameter when a template is reviewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Example {
    /// `example = ["Awa Diop", "S00042"]`: one value per numbered parameter, in order.
    Values(Vec<String>),
    /// `example = { customer = "Awa Diop" }`: one value per named parameter.
    Named(BTreeMap<String, String>),
    /// `example = "examples/facture.pdf"`: a media header's example file, relative to the
    /// definition file.
    File(String),
}

impl<'de> Deserialize<'de> for Example {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ExampleVisitor;
        impl<'de> Visitor<'de> for ExampleVisitor {
            type Value = Example;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of example values, a table `name = \"example\"`, or (media header) a file path")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Example, E> {
                Ok(Example::File(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Example, A::Error> {
                let mut values = Vec::new();
                while let Some(v) = seq.next_element::<ExampleValue>()? {
                    values.push(v.0);
                }
                Ok(Example::Values(values))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Example, A::Error> {
                let mut values = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, ExampleValue>()? {
                    values.insert(k, v.0);
                }
                Ok(Example::Named(values))
            }
        }
        d.deserialize_any(ExampleVisitor)
    }
}

/// One example value: text, or a number written as text.
struct ExampleValue(String);

impl<'de> Deserialize<'de> for ExampleValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl Visitor<'_> for ValueVisitor {
            type Value = ExampleValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an example value (text or a number)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExampleValue, E> {
                Ok(ExampleValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ExampleValue, E> {
                Ok(ExampleValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ExampleValue, E> {
                Ok(ExampleValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ExampleValue, E> {
                Ok(ExampleValue(v.to_string()))
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}

/// The optional `[header]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Text or a media kind.
    pub format: HeaderFormat,
    /// The text of a `TEXT` header (absent for media).
    #[serde(default)]
    pub text: Option<String>,
    /// Text: the parameter's example; media: the example file Meta reviews.
    #[serde(default)]
    pub example: Option<Example>,
}

/// The `[body]` table: the message itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// The text with its parameters, `{{1}}` or `{{customer}}`.
    pub text: String,
    /// One example per parameter (required by Meta's review).
    #[serde(default)]
    pub example: Option<Example>,
}

/// The optional `[footer]` table (a table rather than a top-level key, so it may be written
/// anywhere in the file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Footer {
    text: String,
}

/// What a button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ButtonType {
    /// Sends its payload back to walua (a button script) when tapped.
    QuickReply,
    /// Opens a web page, whose URL may end with a parameter.
    Url,
    /// Calls a phone number.
    PhoneNumber,
}

impl ButtonType {
    /// Meta's spelling: `QUICK_REPLY`, `URL`, `PHONE_NUMBER`.
    pub fn as_str(self) -> &'static str {
        match self {
            ButtonType::QuickReply => "QUICK_REPLY",
            ButtonType::Url => "URL",
            ButtonType::PhoneNumber => "PHONE_NUMBER",
        }
    }
}

/// One `[[buttons]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Button {
    /// What it does.
    #[serde(rename = "type")]
    pub kind: ButtonType,
    /// Its label.
    pub text: String,
    /// `URL` buttons: the page, possibly ending with `{{1}}`.
    #[serde(default)]
    pub url: Option<String>,
    /// `URL` buttons with a parameter: a full example URL.
    #[serde(default)]
    pub example: Option<String>,
    /// `PHONE_NUMBER` buttons: the number, `+` and digits.
    #[serde(default)]
    pub phone_number: Option<String>,
}

impl Button {
    /// True for a URL button whose URL ends with a parameter (the suffix given at each send).
    pub fn has_url_parameter(&self) -> bool {
        self.kind == ButtonType::Url && self.url.as_deref().is_some_and(|u| !placeholders(u).is_empty())
    }
}

/// The file as written (serde's view); [`Definition`] is what the rest of walua uses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    name: String,
    language: String,
    category: Category,
    #[serde(default)]
    header: Option<Header>,
    body: Body,
    #[serde(default)]
    footer: Option<Footer>,
    #[serde(default)]
    buttons: Vec<Button>,
}

/// One template in one language, as read from its TOML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// Meta's template name: lowercase letters, digits and `_`.
    pub name: String,
    /// Meta's language code, normalised by [`normalize_language`] (`en-us` → `en_US`).
    pub language: String,
    /// Meta's category.
    pub category: Category,
    /// The optional header (text or media).
    pub header: Option<Header>,
    /// The body (required).
    pub body: Body,
    /// The optional footer: fixed text, no parameter.
    pub footer: Option<String>,
    /// The buttons, in the order the customer sees them.
    pub buttons: Vec<Button>,
    /// The file it was read from: errors name it, and media examples are relative to it.
    pub path: PathBuf,
}

/// A definition file that could not be used: unreadable, malformed, or a duplicate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DefinitionError {
    /// The file at fault.
    pub path: PathBuf,
    /// The 1-based line the TOML parser pointed at, when it did.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl DefinitionError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        DefinitionError {
            path: path.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }
}

/// What a directory of definitions holds: the usable ones and the files that are not.
#[derive(Debug, Clone, Default)]
pub struct DefinitionSet {
    /// The definitions read, sorted by file name.
    pub definitions: Vec<Definition>,
    /// The files that could not be read or parsed, and duplicates.
    pub errors: Vec<DefinitionError>,
}

impl DefinitionSet {
    /// The definition of `name` in `language` (any spelling of the code), if there is one.
    pub fn find(&self, name: &str, language: &str) -> Option<&Definition> {
        let language = normalize_language(language);
        self.definitions
            .iter()
            .find(|d| d.name == name && d.language == language)
    }

    /// Every rule Meta would break, across all definitions, one error per problem (for
    /// `walua check`).
    pub fn problems(&self) -> Vec<DefinitionError> {
        self.definitions
            .iter()
            .flat_map(|d| d.validate().into_iter().map(|m| DefinitionError::new(&d.path, m)))
            .collect()
    }
}

/// Meta's spelling of a language code: `en-US`, `en_us` and `EN_US` are all `en_US`; `fr`
/// stays `fr`, `FIL` becomes `fil`.
pub fn normalize_language(code: &str) -> String {
    let code = code.trim();
    match code.split_once(['-', '_']) {
        Some((lang, region)) => format!("{}_{}", lang.to_ascii_lowercase(), region.to_ascii_uppercase()),
        None => code.to_ascii_lowercase(),
    }
}

/// True for files an editor leaves beside the definitions (backups, swap and lock files).
fn is_editor_file(name: &str) -> bool {
    name.starts_with(".#") || name.ends_with('~') || name.ends_with(".swp") || name.starts_with('.')
}

/// Reads every `*.toml` file directly in `dir` (not in sub-directories). A missing directory
/// is an empty set. A second file defining the same name and language is an error.
pub fn load_dir(dir: &Path) -> DefinitionSet {
    let mut set = DefinitionSet::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return set,
        Err(e) => {
            set.errors
                .push(DefinitionError::new(dir, format!("cannot read the directory: {e}")));
            return set;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".toml") && !is_editor_file(name) && p.is_file()
        })
        .collect();
    files.sort();
    let mut seen: HashMap<(String, String), PathBuf> = HashMap::new();
    for path in files {
        match load_file(&path) {
            Ok(def) => {
                let key = (def.name.clone(), def.language.clone());
                if let Some(first) = seen.get(&key) {
                    set.errors.push(DefinitionError::new(
                        &path,
                        format!(
                            "defines {} ({}) again: it is already defined in {}",
                            def.name,
                            def.language,
                            first.display()
                        ),
                    ));
                } else {
                    seen.insert(key, path.clone());
                    set.definitions.push(def);
                }
            }
            Err(e) => set.errors.push(e),
        }
    }
    set
}

/// Reads and parses one definition file (the rules of Meta are checked by
/// [`Definition::validate`], not here).
pub fn load_file(path: &Path) -> Result<Definition, DefinitionError> {
    let text = std::fs::read_to_string(path).map_err(|e| DefinitionError::new(path, format!("cannot read: {e}")))?;
    Definition::from_toml(path, &text)
}

impl Definition {
    /// Parses definition text; `path` names it in errors and anchors a media header's
    /// example file (it need not exist).
    pub fn from_toml(path: &Path, text: &str) -> Result<Definition, DefinitionError> {
        let raw: RawDefinition = toml::from_str(text).map_err(|e| DefinitionError {
            path: path.to_path_buf(),
            line: e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1),
            message: e.message().trim_end().to_string(),
        })?;
        Ok(Definition {
            name: raw.name,
            language: normalize_language(&raw.language),
            category: raw.category,
            header: raw.header,
            body: raw.body,
            footer: raw.footer.map(|f| f.text),
            buttons: raw.buttons,
            path: path.to_path_buf(),
        })
    }
}

/// One `{{…}}` in a text: the name inside and where it is (byte offsets of `{{` and after
/// `}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// What is between the braces, as written (`1`, `customer`).
    pub name: String,
    /// Byte offset of the opening `{{`.
    pub start: usize,
    /// Byte offset just after the closing `}}`.
    pub end: usize,
}

impl Placeholder {
    /// True for a numbered parameter (`{{1}}`).
    pub fn is_positional(&self) -> bool {
        !self.name.is_empty() && self.name.bytes().all(|b| b.is_ascii_digit())
    }

    /// True for a well-formed named parameter: a lowercase letter, then lowercase letters,
    /// digits and `_`.
    pub fn is_named(&self) -> bool {
        let mut chars = self.name.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }
}

/// The `{{…}}` parameters of a text, in order of appearance (repeats included).
pub fn placeholders(text: &str) -> Vec<Placeholder> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{").map(|i| i + from) {
        let Some(close) = text[open + 2..].find("}}").map(|i| i + open + 2) else {
            break;
        };
        found.push(Placeholder {
            name: text[open + 2..close].to_string(),
            start: open,
            end: close + 2,
        });
        from = close + 2;
    }
    found
}

/// The distinct parameter names of a text in Meta's order: numbered ones by number, named
/// ones by first appearance.
pub fn parameter_names(text: &str) -> Vec<String> {
    let all = placeholders(text);
    let mut names: Vec<String> = Vec::new();
    for p in &all {
        if !names.contains(&p.name) {
            names.push(p.name.clone());
        }
    }
    if all.iter().all(Placeholder::is_positional) {
        names.sort_by_key(|n| n.parse::<u64>().unwrap_or(u64::MAX));
    }
    names
}

/// Which kind of parameters a text uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamKind {
    None,
    Positional,
    Named,
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Words of a text outside its parameters: runs without whitespace holding a letter or digit.
fn fixed_words(text: &str, params: &[Placeholder]) -> usize {
    let mut fixed = String::new();
    let mut from = 0;
    for p in params {
        fixed.push_str(&text[from..p.start]);
        fixed.push(' ');
        from = p.end;
    }
    fixed.push_str(&text[from..]);
    fixed
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count()
}

/// Checks the parameters of a header or body text and their examples; returns the kind used.
fn check_params(
    field: &str,
    text: &str,
    example: Option<&Example>,
    max_params: Option<usize>,
    problems: &mut Vec<String>,
) -> ParamKind {
    let all = placeholders(text);
    let mut bad = false;
    for p in &all {
        if !p.is_positional() && !p.is_named() {
            problems.push(format!(
                "{field}: {{{{{}}}}} is not a parameter: use {{{{1}}}}, {{{{2}}}}… or a name in lowercase letters, digits and _ starting with a letter, like {{{{customer}}}}",
                p.name
            ));
            bad = true;
        }
    }
    let positional = all.iter().any(Placeholder::is_positional);
    let named = all.iter().any(Placeholder::is_named);
    if positional && named {
        problems.push(format!(
            "{field}: mixes numbered ({{{{1}}}}) and named ({{{{customer}}}}) parameters; Meta allows one kind per template"
        ));
        return ParamKind::Positional;
    }
    if bad {
        return if named { ParamKind::Named } else { ParamKind::Positional };
    }
    let kind = match (positional, named) {
        (true, _) => ParamKind::Positional,
        (_, true) => ParamKind::Named,
        _ => ParamKind::None,
    };
    // Repeats: Meta refuses a parameter used twice.
    let mut seen = HashSet::new();
    for p in &all {
        if !seen.insert(p.name.as_str()) {
            problems.push(format!(
                "{field}: parameter {{{{{}}}}} appears more than once; Meta refuses repeated parameters",
                p.name
            ));
        }
    }
    let names = parameter_names(text);
    if let Some(max) = max_params
        && names.len() > max
    {
        problems.push(format!(
            "{field}: {} parameters, Meta allows at most {max}",
            names.len()
        ));
    }
    if kind == ParamKind::Positional {
        for (i, n) in names.iter().enumerate() {
            let want = (i + 1).to_string();
            if *n != want {
                problems.push(format!(
                    "{field}: parameters must be numbered {{{{1}}}} to {{{{{}}}}} without gaps; {{{{{want}}}}} is missing",
                    names.len()
                ));
                break;
            }
        }
    }
    // Examples.
    match (example, kind) {
        (None, ParamKind::None) => {}
        (Some(_), ParamKind::None) => problems.push(format!("{field}: has an example but no parameter")),
        (None, _) => {
            for n in &names {
                problems.push(format!("{field}: parameter {{{{{n}}}}} has no example"));
            }
        }
        (Some(Example::File(_)), _) => problems.push(format!(
            "{field}: example must be a list of values (numbered parameters) or a table name = value (named parameters)"
        )),
        (Some(Example::Values(values)), ParamKind::Positional) => {
            for (i, n) in names.iter().enumerate() {
                match values.get(i) {
                    None => problems.push(format!("{field}: parameter {{{{{n}}}}} has no example")),
                    Some(v) if v.trim().is_empty() => {
                        problems.push(format!("{field}: the example of {{{{{n}}}}} is empty"))
                    }
                    Some(_) => {}
                }
            }
            if values.len() > names.len() {
                problems.push(format!(
                    "{field}: {} examples for {} parameters; remove the extra ones",
                    values.len(),
                    names.len()
                ));
            }
        }
        (Some(Example::Values(_)), _) => problems.push(format!(
            "{field}: named parameters take their examples as a table: example = {{ {} = \"…\" }}",
            names.first().map_or("customer", String::as_str)
        )),
        (Some(Example::Named(values)), ParamKind::Named) => {
            for n in &names {
                match values.get(n) {
                    None => problems.push(format!("{field}: parameter {{{{{n}}}}} has no example")),
                    Some(v) if v.trim().is_empty() => {
                        problems.push(format!("{field}: the example of {{{{{n}}}}} is empty"))
                    }
                    Some(_) => {}
                }
            }
            for k in values.keys() {
                if !names.contains(k) {
                    problems.push(format!(
                        "{field}: example for {k}, which is not a parameter of the text"
                    ));
                }
            }
        }
        (Some(Example::Named(_)), _) => problems.push(format!(
            "{field}: numbered parameters take their examples as a list: example = [\"…\"]"
        )),
    }
    kind
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

impl Definition {
    /// The parameter format of the whole template: `NAMED` when its header or body uses
    /// named parameters, `POSITIONAL` otherwise.
    pub fn parameter_format(&self) -> &'static str {
        let texts = self
            .header
            .iter()
            .filter_map(|h| h.text.as_deref())
            .chain(std::iter::once(self.body.text.as_str()));
        let named = texts.flat_map(placeholders).any(|p| p.is_named());
        if named { "NAMED" } else { "POSITIONAL" }
    }

    /// True when the template uses named parameters (`{{customer}}`).
    pub fn is_named(&self) -> bool {
        self.parameter_format() == "NAMED"
    }

    /// Everything Meta would refuse (or walua does not support), one sentence per problem
    /// naming the field; empty when the definition can be pushed.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let p = &mut problems;
        // Name and language.
        if self.name.is_empty() {
            p.push("name: must not be empty".into());
        } else if chars(&self.name) > MAX_NAME {
            p.push(format!(
                "name: {} characters, Meta allows at most {MAX_NAME}",
                chars(&self.name)
            ));
        }
        if let Some(c) = self
            .name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
        {
            p.push(format!(
                "name: invalid character {c:?}; Meta template names use only lowercase letters, digits and _"
            ));
        }
        if !META_LANGUAGES.contains(&self.language.as_str()) {
            p.push(format!(
                "language: {} is not one of Meta's template languages (fr, en, en_US, pt_BR, …)",
                self.language
            ));
        }
        if self.category == Category::Authentication {
            p.push("category: AUTHENTICATION templates are not supported by walua; use UTILITY or MARKETING".into());
        }
        // Header.
        let mut header_kind = ParamKind::None;
        if let Some(h) = &self.header {
            match h.format {
                HeaderFormat::Text => match &h.text {
                    None => p.push("header: a TEXT header needs text".into()),
                    Some(text) => {
                        if text.trim().is_empty() {
                            p.push("header: text must not be empty".into());
                        }
                        if chars(text) > MAX_HEADER_TEXT {
                            p.push(format!(
                                "header: text is {} characters, Meta allows at most {MAX_HEADER_TEXT}",
                                chars(text)
                            ));
                        }
                        if text.contains(['\n', '\r']) {
                            p.push("header: text may not contain line breaks".into());
                        }
                        header_kind = check_params("header", text, h.example.as_ref(), Some(MAX_HEADER_PARAMS), p);
                    }
                },
                media => self.validate_media_header(h, media, p),
            }
        }
        // Body.
        let body = &self.body.text;
        if body.trim().is_empty() {
            p.push("body: text must not be empty".into());
        }
        if chars(body) > MAX_BODY_TEXT {
            p.push(format!(
                "body: text is {} characters, Meta allows at most {MAX_BODY_TEXT}",
                chars(body)
            ));
        }
        let body_kind = check_params("body", body, self.body.example.as_ref(), None, p);
        let params = placeholders(body);
        let trimmed = body.trim();
        if let Some(first) = params.first()
            && body[..first.start].trim().is_empty()
            && !trimmed.is_empty()
        {
            p.push(format!(
                "body: starts with the parameter {{{{{}}}}}; Meta refuses a body that starts with a parameter: put text before it",
                first.name
            ));
        }
        if let Some(last) = params.last()
            && body[last.end..].trim().is_empty()
        {
            p.push(format!(
                "body: ends with the parameter {{{{{}}}}}; Meta refuses a body that ends with a parameter: put text after it (a final \".\" is enough)",
                last.name
            ));
        }
        for pair in params.windows(2) {
            if body[pair[0].end..pair[1].start].trim().is_empty() {
                p.push(format!(
                    "body: parameters {{{{{}}}}} and {{{{{}}}}} are next to each other; Meta wants text between them",
                    pair[0].name, pair[1].name
                ));
            }
        }
        let distinct = parameter_names(body).len();
        let words = fixed_words(body, &params);
        if distinct > 0 && words < MIN_WORDS_PER_PARAM * distinct {
            p.push(format!(
                "body: {distinct} parameters need at least {} words of fixed text, there are {words}; Meta refuses templates with too many parameters for their length",
                MIN_WORDS_PER_PARAM * distinct
            ));
        }
        if header_kind != ParamKind::None && body_kind != ParamKind::None && header_kind != body_kind {
            p.push("header and body: one uses numbered parameters, the other named ones; Meta allows one kind per template".into());
        }
        // Footer.
        if let Some(f) = &self.footer {
            if f.trim().is_empty() {
                p.push("footer: text must not be empty (remove [footer] instead)".into());
            }
            if chars(f) > MAX_FOOTER_TEXT {
                p.push(format!(
                    "footer: text is {} characters, Meta allows at most {MAX_FOOTER_TEXT}",
                    chars(f)
                ));
            }
            if !placeholders(f).is_empty() {
                p.push("footer: may not contain parameters".into());
            }
        }
        self.validate_buttons(p);
        problems
    }

    fn validate_media_header(&self, h: &Header, format: HeaderFormat, p: &mut Vec<String>) {
        let kind = format.as_str();
        if h.text.is_some() {
            p.push(format!("header: a {kind} header has no text (remove header.text)"));
        }
        let file = match &h.example {
            Some(Example::File(f)) => f,
            Some(_) => {
                p.push(format!(
                    "header: the example of a {kind} header is a file path relative to this file, e.g. example = \"examples/facture.pdf\""
                ));
                return;
            }
            None => {
                p.push(format!(
                    "header: a {kind} header needs an example file (Meta reviews it), e.g. example = \"examples/facture.pdf\""
                ));
                return;
            }
        };
        let path = self.path.parent().unwrap_or(Path::new(".")).join(file);
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !format.extensions().contains(&ext.as_str()) {
            p.push(format!(
                "header: example {file} is not a {kind} file; Meta accepts {}",
                format.extensions().join(", ")
            ));
        }
        match std::fs::metadata(&path) {
            Err(e) => p.push(format!("header: example file {} cannot be read: {e}", path.display())),
            Ok(m) if !m.is_file() => p.push(format!("header: example {} is not a file", path.display())),
            Ok(m) if m.len() > format.max_bytes() => p.push(format!(
                "header: example {file} is {} bytes, Meta accepts at most {} MB for a {kind} header",
                m.len(),
                format.max_bytes() / (1024 * 1024)
            )),
            Ok(m) if m.len() == 0 => p.push(format!("header: example {file} is empty")),
            Ok(_) => {}
        }
    }

    fn validate_buttons(&self, p: &mut Vec<String>) {
        let count = |k: ButtonType| self.buttons.iter().filter(|b| b.kind == k).count();
        if self.buttons.len() > MAX_BUTTONS {
            p.push(format!(
                "buttons: {} buttons, Meta allows at most {MAX_BUTTONS}",
                self.buttons.len()
            ));
        }
        for (kind, max, what) in [
            (ButtonType::QuickReply, MAX_QUICK_REPLIES, "QUICK_REPLY"),
            (ButtonType::Url, MAX_URL_BUTTONS, "URL"),
            (ButtonType::PhoneNumber, MAX_PHONE_BUTTONS, "PHONE_NUMBER"),
        ] {
            let n = count(kind);
            if n > max {
                p.push(format!("buttons: {n} {what} buttons, Meta allows at most {max}"));
            }
        }
        // Quick replies grouped: the kinds, in order, switch between quick reply and other at
        // most once.
        let switches = self
            .buttons
            .windows(2)
            .filter(|w| (w[0].kind == ButtonType::QuickReply) != (w[1].kind == ButtonType::QuickReply))
            .count();
        if switches > 1 {
            p.push(
                "buttons: quick replies must be grouped together, all before or all after the URL and phone buttons"
                    .into(),
            );
        }
        let mut labels = HashSet::new();
        for (i, b) in self.buttons.iter().enumerate() {
            let f = format!("buttons[{i}]");
            if b.text.trim().is_empty() {
                p.push(format!("{f}: text must not be empty"));
            }
            if chars(&b.text) > MAX_BUTTON_TEXT {
                p.push(format!(
                    "{f}: text is {} characters, Meta allows at most {MAX_BUTTON_TEXT}",
                    chars(&b.text)
                ));
            }
            if !placeholders(&b.text).is_empty() {
                p.push(format!("{f}: text may not contain parameters"));
            }
            if !labels.insert(b.text.trim()) {
                p.push(format!(
                    "{f}: another button is already labelled «{}»; Meta refuses duplicate labels",
                    b.text
                ));
            }
            match b.kind {
                ButtonType::QuickReply => {
                    if b.url.is_some() || b.phone_number.is_some() || b.example.is_some() {
                        p.push(format!(
                            "{f}: a QUICK_REPLY button has only a text (remove url, phone_number, example)"
                        ));
                    }
                }
                ButtonType::PhoneNumber => {
                    if b.url.is_some() || b.example.is_some() {
                        p.push(format!("{f}: a PHONE_NUMBER button has no url nor example"));
                    }
                    match &b.phone_number {
                        None => p.push(format!(
                            "{f}: a PHONE_NUMBER button needs phone_number, e.g. \"+221338000000\""
                        )),
                        Some(n) => {
                            let ok = n.len() <= MAX_BUTTON_PHONE
                                && n.strip_prefix('+')
                                    .is_some_and(|d| d.len() >= 2 && d.bytes().all(|c| c.is_ascii_digit()));
                            if !ok {
                                p.push(format!(
                                    "{f}: phone_number {n} must be + and the digits with the country code, at most {MAX_BUTTON_PHONE} characters, e.g. +221338000000"
                                ));
                            }
                        }
                    }
                }
                ButtonType::Url => self.validate_url_button(&f, b, p),
            }
        }
    }

    fn validate_url_button(&self, f: &str, b: &Button, p: &mut Vec<String>) {
        if b.phone_number.is_some() {
            p.push(format!("{f}: a URL button has no phone_number"));
        }
        let Some(url) = &b.url else {
            p.push(format!(
                "{f}: a URL button needs url, e.g. \"https://boutique.example/commande/{{{{1}}}}\""
            ));
            return;
        };
        if chars(url) > MAX_BUTTON_URL {
            p.push(format!(
                "{f}: url is {} characters, Meta allows at most {MAX_BUTTON_URL}",
                chars(url)
            ));
        }
        if !is_http_url(url) {
            p.push(format!("{f}: url must start with https:// or http://"));
        }
        let params = placeholders(url);
        match params.as_slice() {
            [] => {
                if b.example.is_some() {
                    p.push(format!("{f}: has an example but its url has no parameter"));
                }
            }
            [one] => {
                if one.name != "1" {
                    p.push(format!(
                        "{f}: the url parameter must be {{{{1}}}}, not {{{{{}}}}}",
                        one.name
                    ));
                }
                if one.end != url.len() {
                    p.push(format!("{f}: the url parameter must be at its very end"));
                }
                match &b.example {
                    None => p.push(format!(
                        "{f}: the url parameter has no example; give a full URL, e.g. example = \"{}S00042\"",
                        &url[..one.start]
                    )),
                    Some(ex) => {
                        if !ex.starts_with(&url[..one.start]) || ex.len() == one.start {
                            p.push(format!(
                                "{f}: example must be the url with a value in place of {{{{1}}}}, e.g. \"{}S00042\"",
                                &url[..one.start]
                            ));
                        }
                    }
                }
            }
            _ => p.push(format!(
                "{f}: url has {} parameters, Meta allows one, at the end",
                params.len()
            )),
        }
    }

    /// The example file of a media header, resolved against the definition's directory,
    /// with its MIME type (for the upload to Meta); `None` for text or no header, or an
    /// extension Meta does not accept.
    pub fn header_example_file(&self) -> Option<(PathBuf, &'static str)> {
        let h = self.header.as_ref()?;
        let Some(Example::File(file)) = &h.example else {
            return None;
        };
        let path = self.path.parent().unwrap_or(Path::new(".")).join(file);
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        let mime = match (h.format, ext.as_str()) {
            (HeaderFormat::Image, "jpg" | "jpeg") => "image/jpeg",
            (HeaderFormat::Image, "png") => "image/png",
            (HeaderFormat::Document, "pdf") => "application/pdf",
            (HeaderFormat::Video, "mp4") => "video/mp4",
            _ => return None,
        };
        Some((path, mime))
    }

    /// Example values of a text's parameters, in Meta's order ([`parameter_names`]).
    fn examples_for(text: &str, example: Option<&Example>) -> Vec<(String, String)> {
        let names = parameter_names(text);
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let v = match example {
                    Some(Example::Values(v)) => v.get(i).cloned(),
                    Some(Example::Named(m)) => m.get(n).cloned(),
                    _ => None,
                };
                (n.clone(), v.unwrap_or_default())
            })
            .collect()
    }

    /// Meta's creation components (`HEADER`, `BODY`, `FOOTER`, `BUTTONS`), with examples
    /// where there are parameters. A media header carries `header_handle` (from Meta's
    /// resumable upload) as its example when given.
    pub fn components(&self, header_handle: Option<&str>) -> Vec<Value> {
        let named = self.is_named();
        let mut out = Vec::new();
        if let Some(h) = &self.header {
            let mut c = Map::new();
            c.insert("type".into(), json!("HEADER"));
            c.insert("format".into(), json!(h.format.as_str()));
            match h.format {
                HeaderFormat::Text => {
                    let text = h.text.clone().unwrap_or_default();
                    let examples = Self::examples_for(&text, h.example.as_ref());
                    c.insert("text".into(), json!(text));
                    if !examples.is_empty() {
                        c.insert("example".into(), example_json("header_text", examples, named, false));
                    }
                }
                _ => {
                    if let Some(handle) = header_handle {
                        c.insert("example".into(), json!({ "header_handle": [handle] }));
                    }
                }
            }
            out.push(Value::Object(c));
        }
        let mut body = Map::new();
        body.insert("type".into(), json!("BODY"));
        body.insert("text".into(), json!(self.body.text));
        let examples = Self::examples_for(&self.body.text, self.body.example.as_ref());
        if !examples.is_empty() {
            body.insert("example".into(), example_json("body_text", examples, named, true));
        }
        out.push(Value::Object(body));
        if let Some(f) = &self.footer {
            out.push(json!({ "type": "FOOTER", "text": f }));
        }
        if !self.buttons.is_empty() {
            let buttons: Vec<Value> = self
                .buttons
                .iter()
                .map(|b| {
                    let mut o = Map::new();
                    o.insert("type".into(), json!(b.kind.as_str()));
                    o.insert("text".into(), json!(b.text));
                    if let Some(url) = &b.url {
                        o.insert("url".into(), json!(url));
                        if b.has_url_parameter()
                            && let Some(ex) = &b.example
                        {
                            o.insert("example".into(), json!([ex]));
                        }
                    }
                    if let Some(n) = &b.phone_number {
                        o.insert("phone_number".into(), json!(n));
                    }
                    Value::Object(o)
                })
                .collect();
            out.push(json!({ "type": "BUTTONS", "buttons": buttons }));
        }
        out
    }

    /// The body of Meta's `POST /{waba-id}/message_templates` (creation):
    /// `{"name","language","category","parameter_format","components"}`.
    pub fn create_request(&self, header_handle: Option<&str>) -> Value {
        json!({
            "name": self.name,
            "language": self.language,
            "category": self.category.as_str(),
            "parameter_format": self.parameter_format(),
            "components": self.components(header_handle),
        })
    }
}

/// Meta's `example` object of a header or body: `{"body_text":[[..]]}` /
/// `{"header_text":[..]}`, or `{"body_text_named_params":[{"param_name","example"}]}`.
fn example_json(key: &str, examples: Vec<(String, String)>, named: bool, nested: bool) -> Value {
    if named {
        let list: Vec<Value> = examples
            .into_iter()
            .map(|(n, v)| json!({ "param_name": n, "example": v }))
            .collect();
        json!({ format!("{key}_named_params"): list })
    } else {
        let values: Vec<String> = examples.into_iter().map(|(_, v)| v).collect();
        if nested {
            json!({ key: [values] })
        } else {
            json!({ key: values })
        }
    }
}

/// What the customer sees of a component list, for [`differences`].
#[derive(Debug, Default, PartialEq)]
struct Visible {
    header: Option<String>,
    body: Option<String>,
    footer: Option<String>,
    buttons: Vec<String>,
}

fn field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn visible(components: &[Value]) -> Visible {
    let mut seen = Visible::default();
    for c in components {
        let kind = field(c, "type").unwrap_or("").to_ascii_uppercase();
        match kind.as_str() {
            "HEADER" => {
                let format = field(c, "format").unwrap_or("TEXT").to_ascii_uppercase();
                seen.header = Some(match field(c, "text") {
                    Some(t) if format == "TEXT" => format!("TEXT «{t}»"),
                    _ => format,
                });
            }
            "BODY" => seen.body = field(c, "text").map(str::to_string),
            "FOOTER" => seen.footer = field(c, "text").map(str::to_string),
            "BUTTONS" => {
                for b in c.get("buttons").and_then(Value::as_array).into_iter().flatten() {
                    let mut s = format!(
                        "{} «{}»",
                        field(b, "type").unwrap_or("?").to_ascii_uppercase(),
                        field(b, "text").unwrap_or("")
                    );
                    if let Some(u) = field(b, "url") {
                        s.push_str(&format!(" {u}"));
                    }
                    if let Some(n) = field(b, "phone_number") {
                        let digits: String = n.chars().filter(char::is_ascii_digit).collect();
                        s.push_str(&format!(" +{digits}"));
                    }
                    seen.buttons.push(s);
                }
            }
            _ => {}
        }
    }
    seen
}

fn show(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("«{s}»"),
        None => "none".into(),
    }
}

/// What differs, for a customer, between a local definition's components
/// ([`Definition::components`]) and Meta's (its list API): header format and text, body,
/// footer, and each button's type, label, URL and phone number. Examples and media handles
/// are ignored, and type names compared without case. Empty when they are the same.
pub fn differences(local: &[Value], remote: &[Value]) -> Vec<String> {
    let (l, r) = (visible(local), visible(remote));
    let mut out = Vec::new();
    if l.header != r.header {
        let s = |h: &Option<String>| h.clone().unwrap_or_else(|| "none".into());
        out.push(format!(
            "header differs: local {} / Meta {}",
            s(&l.header),
            s(&r.header)
        ));
    }
    if l.body != r.body {
        out.push(format!(
            "body text differs: local {} / Meta {}",
            show(&l.body),
            show(&r.body)
        ));
    }
    if l.footer != r.footer {
        out.push(format!(
            "footer differs: local {} / Meta {}",
            show(&l.footer),
            show(&r.footer)
        ));
    }
    if l.buttons != r.buttons {
        let n = l.buttons.len().max(r.buttons.len());
        for i in 0..n {
            let (a, b) = (l.buttons.get(i), r.buttons.get(i));
            if a != b {
                let s = |x: Option<&String>| x.cloned().unwrap_or_else(|| "none".into());
                out.push(format!("button {} differs: local {} / Meta {}", i + 1, s(a), s(b)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
name = "order_created"
language = "fr"
category = "UTILITY"

[header]
format = "TEXT"
text = "Commande {{1}}"
example = ["S00042"]

[body]
text = "Bonjour {{1}}, votre commande {{2}} d'un montant de {{3}} est bien enregistrée."
example = ["Awa Diop", "S00042", "15 000 CFA"]

[footer]
text = "Boutique Dakar"

[[buttons]]
type = "QUICK_REPLY"
text = "Valider"

[[buttons]]
type = "QUICK_REPLY"
text = "Annuler"

[[buttons]]
type = "URL"
text = "Voir la commande"
url = "https://boutique.example/commande/{{1}}"
example = "https://boutique.example/commande/S00042"

[[buttons]]
type = "PHONE_NUMBER"
text = "Nous appeler"
phone_number = "+221338000000"
"#;

    fn parse(text: &str) -> Definition {
        Definition::from_toml(Path::new("/nowhere/t.fr.toml"), text).unwrap()
    }

    fn valid() -> Definition {
        parse(VALID)
    }

    /// The problems of `d`, asserting that one of them contains `needle`.
    fn refused(d: &Definition, needle: &str) -> Vec<String> {
        let problems = d.validate();
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "expected a problem containing {needle:?}, got {problems:#?}"
        );
        problems
    }

    fn with_body(text: &str, example: Option<Example>) -> Definition {
        let mut d = valid();
        d.body = Body {
            text: text.into(),
            example,
        };
        d
    }

    fn values(v: &[&str]) -> Option<Example> {
        Some(Example::Values(v.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn a_valid_definition_passes_and_parses_every_part() {
        let d = valid();
        assert_eq!(d.validate(), Vec::<String>::new());
        assert_eq!(d.category, Category::Utility);
        assert_eq!(d.footer.as_deref(), Some("Boutique Dakar"));
        assert_eq!(d.buttons.len(), 4);
        assert!(d.buttons[2].has_url_parameter());
        assert_eq!(d.parameter_format(), "POSITIONAL");
    }

    #[test]
    fn language_codes_are_normalised() {
        assert_eq!(normalize_language("en-US"), "en_US");
        assert_eq!(normalize_language("en_us"), "en_US");
        assert_eq!(normalize_language("EN_US"), "en_US");
        assert_eq!(normalize_language("fr"), "fr");
        assert_eq!(normalize_language("FIL"), "fil");
        assert_eq!(normalize_language("pt-br"), "pt_BR");
        let d = parse(&VALID.replace("language = \"fr\"", "language = \"en-us\""));
        assert_eq!(d.language, "en_US");
        assert!(d.validate().is_empty());
    }

    #[test]
    fn name_rules() {
        let mut d = valid();
        d.name = "Order-Created".into();
        refused(&d, "name: invalid character 'O'");
        d.name = String::new();
        refused(&d, "name: must not be empty");
        d.name = "a".repeat(513);
        refused(&d, "name: 513 characters");
        d.name = "a".repeat(512);
        assert!(d.validate().is_empty());
    }

    #[test]
    fn language_must_be_one_of_metas() {
        let mut d = valid();
        d.language = "wo".into();
        refused(&d, "language: wo is not one of Meta's");
        for l in ["fr", "en_US", "zh_HK", "rw_RW", "fil", "es_MX"] {
            d.language = l.into();
            assert!(d.validate().is_empty(), "{l}");
        }
    }

    #[test]
    fn authentication_is_refused() {
        let d = parse(&VALID.replace("UTILITY", "AUTHENTICATION"));
        refused(&d, "category: AUTHENTICATION");
        assert!(parse(&VALID.replace("UTILITY", "MARKETING")).validate().is_empty());
    }

    #[test]
    fn header_text_rules() {
        let mut d = valid();
        d.header.as_mut().unwrap().text = Some(format!("{} {{{{1}}}}", "x".repeat(60)));
        refused(&d, "header: text is 66 characters, Meta allows at most 60");
        d.header = Some(Header {
            format: HeaderFormat::Text,
            text: Some("Commande {{1}} du {{2}}".into()),
            example: values(&["S1", "lundi"]),
        });
        refused(&d, "header: 2 parameters, Meta allows at most 1");
        d.header = Some(Header {
            format: HeaderFormat::Text,
            text: Some("Commande {{1}}".into()),
            example: None,
        });
        refused(&d, "header: parameter {{1}} has no example");
        d.header = Some(Header {
            format: HeaderFormat::Text,
            text: Some("Commande\n{{1}}".into()),
            example: values(&["S1"]),
        });
        refused(&d, "header: text may not contain line breaks");
        d.header = Some(Header {
            format: HeaderFormat::Text,
            text: None,
            example: None,
        });
        refused(&d, "header: a TEXT header needs text");
        d.header = Some(Header {
            format: HeaderFormat::Text,
            text: Some("Votre commande".into()),
            example: values(&["S1"]),
        });
        refused(&d, "header: has an example but no parameter");
    }

    #[test]
    fn body_length() {
        let long = format!("Bonjour {{{{1}}}} {} fin.", "mot ".repeat(260));
        refused(
            &with_body(&long, values(&["Awa"])),
            "body: text is 1059 characters, Meta allows at most 1024",
        );
        refused(&with_body("  ", None), "body: text must not be empty");
    }

    #[test]
    fn positional_parameters_are_numbered_without_gaps_or_repeats() {
        let text = "Bonjour {{1}}, votre commande {{3}} est prête à être retirée au magasin aujourd'hui.";
        refused(&with_body(text, values(&["a", "b"])), "{{2}} is missing");
        let text = "Bonjour {{1}}, votre commande {{1}} est prête à être retirée au magasin aujourd'hui.";
        refused(
            &with_body(text, values(&["a"])),
            "parameter {{1}} appears more than once",
        );
    }

    #[test]
    fn parameters_are_well_formed_and_of_one_kind() {
        let text = "Bonjour {{Nom}}, votre commande est prête à être retirée au magasin.";
        refused(&with_body(text, None), "{{Nom}} is not a parameter");
        let text = "Bonjour {{customer}}, votre commande {{1}} est prête à être retirée au magasin demain.";
        refused(&with_body(text, values(&["a", "b"])), "mixes numbered");
        let mut d = with_body(
            "Bonjour {{customer}}, votre commande est prête à être retirée.",
            Some(Example::Named([("customer".to_string(), "Awa".to_string())].into())),
        );
        refused(
            &d,
            "header and body: one uses numbered parameters, the other named ones",
        );
        d.header = None;
        assert!(d.validate().is_empty());
        assert_eq!(d.parameter_format(), "NAMED");
    }

    #[test]
    fn a_body_may_not_start_or_end_with_a_parameter() {
        let text = "{{1}}, votre commande est prête à être retirée au magasin.";
        refused(
            &with_body(text, values(&["Awa"])),
            "body: starts with the parameter {{1}}",
        );
        let text = "Bonjour, votre commande est prête à être retirée au magasin {{1}}";
        refused(
            &with_body(text, values(&["Awa"])),
            "body: ends with the parameter {{1}}",
        );
        let text = "Bonjour, votre commande est prête à être retirée au magasin {{1}}  \n";
        refused(
            &with_body(text, values(&["Awa"])),
            "body: ends with the parameter {{1}}",
        );
        // Text (punctuation included) after the last parameter is enough.
        let text = "Bonjour, votre commande est prête à être retirée au magasin {{1}}.";
        assert!(with_body(text, values(&["Awa"])).validate().is_empty());
    }

    #[test]
    fn parameters_need_text_between_them() {
        let text = "Bonjour, votre commande {{1}} {{2}} est prête à être retirée au magasin dès demain matin.";
        refused(
            &with_body(text, values(&["a", "b"])),
            "parameters {{1}} and {{2}} are next to each other",
        );
    }

    #[test]
    fn enough_fixed_words_per_parameter() {
        let text = "Bonjour {{1}}, commande {{2}} : {{3}} ok.";
        refused(
            &with_body(text, values(&["a", "b", "c"])),
            "3 parameters need at least 9 words of fixed text, there are 3",
        );
        let text = "Bonjour {{1}}, votre commande {{2}} de {{3}} est bien notée chez nous.";
        assert!(with_body(text, values(&["a", "b", "c"])).validate().is_empty());
    }

    #[test]
    fn every_parameter_has_one_example() {
        let text = "Bonjour {{1}}, votre commande {{2}} de {{3}} est bien notée.";
        refused(
            &with_body(text, values(&["a", "b"])),
            "body: parameter {{3}} has no example",
        );
        refused(
            &with_body(text, values(&["a", "b", "c", "d"])),
            "body: 4 examples for 3 parameters",
        );
        refused(
            &with_body(text, values(&["a", "", "c"])),
            "body: the example of {{2}} is empty",
        );
        refused(&with_body(text, None), "body: parameter {{1}} has no example");
        refused(
            &with_body("Bonjour, votre commande est bien notée.", values(&["a"])),
            "body: has an example but no parameter",
        );
        let named = "Bonjour {{customer}}, votre commande est bien notée.";
        let mut d = with_body(named, values(&["a"]));
        d.header = None;
        refused(&d, "named parameters take their examples as a table");
        let d2 = with_body(
            named,
            Some(Example::Named([("client".to_string(), "Awa".to_string())].into())),
        );
        let p = refused(&d2, "body: parameter {{customer}} has no example");
        assert!(
            p.iter()
                .any(|p| p.contains("example for client, which is not a parameter"))
        );
    }

    #[test]
    fn footer_rules() {
        let mut d = valid();
        d.footer = Some("x".repeat(61));
        refused(&d, "footer: text is 61 characters, Meta allows at most 60");
        d.footer = Some("Merci {{1}}".into());
        refused(&d, "footer: may not contain parameters");
    }

    #[test]
    fn button_counts() {
        let mut d = valid();
        let qr = d.buttons[0].clone();
        d.buttons = vec![qr.clone(); 11];
        for (i, b) in d.buttons.iter_mut().enumerate() {
            b.text = format!("Choix {i}");
        }
        let p = refused(&d, "buttons: 11 buttons, Meta allows at most 10");
        assert!(
            p.iter()
                .any(|p| p.contains("11 QUICK_REPLY buttons, Meta allows at most 10"))
        );
        let mut d = valid();
        let url = d.buttons[2].clone();
        d.buttons = vec![url.clone(), url.clone(), url];
        for (i, b) in d.buttons.iter_mut().enumerate() {
            b.text = format!("Lien {i}");
        }
        refused(&d, "buttons: 3 URL buttons, Meta allows at most 2");
        let mut d = valid();
        let mut phone = d.buttons[3].clone();
        phone.text = "Autre numéro".into();
        d.buttons.push(phone);
        refused(&d, "buttons: 2 PHONE_NUMBER buttons, Meta allows at most 1");
    }

    #[test]
    fn quick_replies_are_grouped() {
        let mut d = valid();
        d.buttons.swap(1, 2); // QR, URL, QR, PHONE
        refused(&d, "quick replies must be grouped together");
        let mut d = valid();
        d.buttons.rotate_left(2); // URL, PHONE, QR, QR
        assert!(d.validate().is_empty());
    }

    #[test]
    fn button_text_rules() {
        let mut d = valid();
        d.buttons[0].text = "x".repeat(26);
        refused(&d, "buttons[0]: text is 26 characters, Meta allows at most 25");
        d.buttons[0].text = "Annuler".into();
        refused(&d, "buttons[1]: another button is already labelled «Annuler»");
        d.buttons[0].text = " ".into();
        refused(&d, "buttons[0]: text must not be empty");
        d.buttons[0].url = Some("https://x.example".into());
        refused(&d, "buttons[0]: a QUICK_REPLY button has only a text");
    }

    #[test]
    fn url_button_rules() {
        let mut d = valid();
        d.buttons[2].url = Some(format!("https://boutique.example/{}", "a".repeat(2000)));
        d.buttons[2].example = None;
        refused(&d, "buttons[2]: url is 2025 characters, Meta allows at most 2000");
        d.buttons[2].url = Some("ftp://boutique.example/".into());
        refused(&d, "buttons[2]: url must start with https:// or http://");
        d.buttons[2].url = Some("https://boutique.example/{{1}}/detail".into());
        d.buttons[2].example = Some("https://boutique.example/S1/detail".into());
        refused(&d, "buttons[2]: the url parameter must be at its very end");
        d.buttons[2].url = Some("https://boutique.example/{{1}}".into());
        d.buttons[2].example = None;
        refused(&d, "buttons[2]: the url parameter has no example");
        d.buttons[2].example = Some("https://ailleurs.example/S1".into());
        refused(&d, "buttons[2]: example must be the url with a value in place of {{1}}");
        d.buttons[2].url = Some("https://boutique.example/{{1}}-{{2}}".into());
        refused(&d, "buttons[2]: url has 2 parameters");
        d.buttons[2].url = Some("https://boutique.example/{{2}}".into());
        refused(&d, "buttons[2]: the url parameter must be {{1}}");
        d.buttons[2].url = Some("https://boutique.example/".into());
        refused(&d, "buttons[2]: has an example but its url has no parameter");
        d.buttons[2].url = None;
        refused(&d, "buttons[2]: a URL button needs url");
    }

    #[test]
    fn phone_button_rules() {
        let mut d = valid();
        for bad in ["221338000000", "+221 33 800 00 00", "+1234567890123456789012"] {
            d.buttons[3].phone_number = Some(bad.into());
            refused(&d, "buttons[3]: phone_number");
        }
        d.buttons[3].phone_number = None;
        refused(&d, "buttons[3]: a PHONE_NUMBER button needs phone_number");
    }

    fn media_definition(dir: &Path, format: &str, example: &str) -> Definition {
        let text = format!(
            "name = \"invoice_posted\"\nlanguage = \"fr\"\ncategory = \"UTILITY\"\n\
             [header]\nformat = \"{format}\"\nexample = \"{example}\"\n\
             [body]\ntext = \"Bonjour, veuillez trouver ci-joint votre facture.\"\n"
        );
        Definition::from_toml(&dir.join("invoice_posted.fr.toml"), &text).unwrap()
    }

    #[test]
    fn media_header_examples() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("examples")).unwrap();
        std::fs::write(dir.path().join("examples/f.pdf"), b"%PDF-1.4 tiny").unwrap();
        std::fs::write(dir.path().join("examples/p.png"), b"\x89PNG").unwrap();
        let d = media_definition(dir.path(), "DOCUMENT", "examples/f.pdf");
        assert!(d.validate().is_empty(), "{:?}", d.validate());
        let (path, mime) = d.header_example_file().unwrap();
        assert_eq!((path, mime), (dir.path().join("examples/f.pdf"), "application/pdf"));
        let d = media_definition(dir.path(), "IMAGE", "examples/p.png");
        assert!(d.validate().is_empty());
        assert_eq!(d.header_example_file().unwrap().1, "image/png");
        refused(
            &media_definition(dir.path(), "IMAGE", "examples/f.pdf"),
            "is not a IMAGE file; Meta accepts jpg, jpeg, png",
        );
        refused(
            &media_definition(dir.path(), "DOCUMENT", "examples/none.pdf"),
            "cannot be read",
        );
        refused(
            &media_definition(dir.path(), "VIDEO", "examples/f.pdf"),
            "Meta accepts mp4",
        );
        let big = std::fs::File::create(dir.path().join("examples/big.jpg")).unwrap();
        big.set_len(MAX_IMAGE_BYTES + 1).unwrap();
        refused(
            &media_definition(dir.path(), "IMAGE", "examples/big.jpg"),
            "Meta accepts at most 5 MB",
        );
        let mut d = media_definition(dir.path(), "DOCUMENT", "examples/f.pdf");
        d.header.as_mut().unwrap().example = None;
        refused(&d, "header: a DOCUMENT header needs an example file");
        d.header.as_mut().unwrap().example = values(&["x"]);
        refused(&d, "the example of a DOCUMENT header is a file path");
        d.header.as_mut().unwrap().text = Some("Facture".into());
        refused(&d, "a DOCUMENT header has no text");
        assert!(valid().header_example_file().is_none());
    }

    #[test]
    fn parse_errors_name_the_file_and_line() {
        let err = Definition::from_toml(
            Path::new("t/x.fr.toml"),
            "name = \"x\"\nlanguage = \"fr\"\ncategory = \"UTILITY\"\n[body]\ntext = \"a\"\ncolour = 1\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(6));
        assert!(
            err.to_string().starts_with("t/x.fr.toml:6: unknown field `colour`"),
            "{err}"
        );
        let err = Definition::from_toml(
            Path::new("x.toml"),
            "name = \"x\"\nlanguage = \"fr\"\ncategory = \"OTP\"\n[body]\ntext = \"a\"\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(3));
        let err = Definition::from_toml(Path::new("x.toml"), "name = \"x\"\n").unwrap_err();
        assert!(err.message.contains("missing field"), "{err}");
    }

    #[test]
    fn load_dir_reads_toml_files_and_reports_duplicates() {
        assert!(load_dir(Path::new("/nonexistent/templates")).definitions.is_empty());
        assert!(load_dir(Path::new("/nonexistent/templates")).errors.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("a.fr.toml"), VALID).unwrap();
        std::fs::write(p.join("b.fr.toml"), VALID).unwrap();
        std::fs::write(p.join("c.en.toml"), VALID.replace("\"fr\"", "\"en-US\"")).unwrap();
        std::fs::write(p.join(".#a.fr.toml"), "garbage").unwrap();
        std::fs::write(p.join("a.fr.toml~"), "garbage").unwrap();
        std::fs::write(p.join("a.fr.toml.swp"), "garbage").unwrap();
        std::fs::write(p.join("README.md"), "garbage").unwrap();
        std::fs::write(p.join("broken.toml"), "name = ").unwrap();
        std::fs::create_dir(p.join("sub.toml")).unwrap();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::write(p.join("sub/d.fr.toml"), "garbage").unwrap();
        let set = load_dir(p);
        assert_eq!(set.definitions.len(), 2);
        assert_eq!(set.errors.len(), 2, "{:?}", set.errors);
        assert!(set.errors.iter().any(|e| e.path.ends_with("b.fr.toml")
            && e.message.contains("defines order_created (fr) again")
            && e.message.contains("a.fr.toml")));
        assert!(
            set.errors
                .iter()
                .any(|e| e.path.ends_with("broken.toml") && e.line == Some(1))
        );
        assert!(set.find("order_created", "en_us").is_some());
        assert!(set.find("order_created", "fr").is_some());
        assert!(set.problems().is_empty());
    }

    #[test]
    fn creation_components_positional() {
        let d = valid();
        let c = d.components(None);
        assert_eq!(
            c[0],
            json!({"type":"HEADER","format":"TEXT","text":"Commande {{1}}","example":{"header_text":["S00042"]}})
        );
        assert_eq!(
            c[1],
            json!({"type":"BODY","text":d.body.text,"example":{"body_text":[["Awa Diop","S00042","15 000 CFA"]]}})
        );
        assert_eq!(c[2], json!({"type":"FOOTER","text":"Boutique Dakar"}));
        assert_eq!(
            c[3],
            json!({"type":"BUTTONS","buttons":[
                {"type":"QUICK_REPLY","text":"Valider"},
                {"type":"QUICK_REPLY","text":"Annuler"},
                {"type":"URL","text":"Voir la commande","url":"https://boutique.example/commande/{{1}}",
                 "example":["https://boutique.example/commande/S00042"]},
                {"type":"PHONE_NUMBER","text":"Nous appeler","phone_number":"+221338000000"},
            ]})
        );
        let r = d.create_request(None);
        assert_eq!(r["name"], "order_created");
        assert_eq!(r["language"], "fr");
        assert_eq!(r["category"], "UTILITY");
        assert_eq!(r["parameter_format"], "POSITIONAL");
        assert_eq!(r["components"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn creation_components_named_media_and_without_parameters() {
        let text = r#"
name = "welcome"
language = "fr"
category = "MARKETING"
[header]
format = "TEXT"
text = "Bienvenue {{shop}}"
example = { shop = "Boutique Dakar" }
[body]
text = "Bonjour {{customer}}, merci pour votre commande {{order}} chez nous."
example = { order = "S00042", customer = "Awa" }
"#;
        let d = parse(text);
        assert!(d.validate().is_empty(), "{:?}", d.validate());
        let r = d.create_request(None);
        assert_eq!(r["parameter_format"], "NAMED");
        assert_eq!(
            r["components"][0]["example"],
            json!({"header_text_named_params":[{"param_name":"shop","example":"Boutique Dakar"}]})
        );
        assert_eq!(
            r["components"][1]["example"],
            json!({"body_text_named_params":[
                {"param_name":"customer","example":"Awa"},
                {"param_name":"order","example":"S00042"}]})
        );
        let dir = tempfile::tempdir().unwrap();
        let d = media_definition(dir.path(), "DOCUMENT", "examples/f.pdf");
        let c = d.components(Some("4::aGFuZGxl"));
        assert_eq!(
            c[0],
            json!({"type":"HEADER","format":"DOCUMENT","example":{"header_handle":["4::aGFuZGxl"]}})
        );
        assert_eq!(
            c[1],
            json!({"type":"BODY","text":"Bonjour, veuillez trouver ci-joint votre facture."})
        );
        assert_eq!(d.components(None)[0], json!({"type":"HEADER","format":"DOCUMENT"}));
    }

    #[test]
    fn differences_ignore_examples_handles_and_case() {
        let d = valid();
        let local = d.components(None);
        let mut remote: Vec<Value> = local.clone();
        for c in &mut remote {
            if let Some(o) = c.as_object_mut() {
                o.remove("example");
                let t = o["type"].as_str().unwrap().to_ascii_lowercase();
                o.insert("type".into(), json!(t));
            }
        }
        remote[3]["buttons"][2].as_object_mut().unwrap().remove("example");
        assert!(differences(&local, &remote).is_empty());
        let dir = tempfile::tempdir().unwrap();
        let m = media_definition(dir.path(), "DOCUMENT", "examples/f.pdf");
        assert!(differences(&m.components(None), &m.components(Some("h"))).is_empty());
    }

    #[test]
    fn differences_name_what_a_customer_would_see_differently() {
        let local = valid().components(None);
        let mut remote = local.clone();
        remote[1]["text"] = json!("Autre texte {{1}} {{2}} {{3}}.");
        remote[2]["text"] = json!("Autre pied");
        remote[0]["text"] = json!("Commande n° {{1}}");
        remote[3]["buttons"][0]["text"] = json!("OK");
        remote[3]["buttons"][3]["phone_number"] = json!("+221 33 800 00 01");
        let diffs = differences(&local, &remote);
        assert_eq!(diffs.len(), 5, "{diffs:#?}");
        assert!(diffs[0].starts_with("header differs: local TEXT «Commande {{1}}» / Meta TEXT «Commande n° {{1}}»"));
        assert!(diffs[1].starts_with("body text differs: local «Bonjour {{1}}"));
        assert!(diffs[1].ends_with("/ Meta «Autre texte {{1}} {{2}} {{3}}.»"));
        assert_eq!(diffs[2], "footer differs: local «Boutique Dakar» / Meta «Autre pied»");
        assert_eq!(
            diffs[3],
            "button 1 differs: local QUICK_REPLY «Valider» / Meta QUICK_REPLY «OK»"
        );
        assert!(diffs[4].starts_with("button 4 differs"));
        // Same phone number written with spaces: no difference.
        let mut remote = local.clone();
        remote[3]["buttons"][3]["phone_number"] = json!("+221 33 800 00 00");
        assert!(differences(&local, &remote).is_empty());
        // A missing footer and a missing button.
        let remote = vec![local[0].clone(), local[1].clone()];
        let diffs = differences(&local, &remote);
        assert!(diffs.contains(&"footer differs: local «Boutique Dakar» / Meta none".to_string()));
        assert!(
            diffs
                .iter()
                .any(|d| d.starts_with("button 4 differs") && d.ends_with("/ Meta none"))
        );
    }

    /// The definitions shipped in `templates/` pass every rule, and take what the default
    /// scripts send (scripts/hooks, scripts/cron give plain values, built into these components).
    #[test]
    fn shipped_definitions_are_valid_and_match_the_scripts() {
        use crate::templates::params::{self, HeaderShape, MediaKind};
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let set = load_dir(&dir);
        assert!(set.errors.is_empty(), "{:#?}", set.errors);
        assert!(set.problems().is_empty(), "{:#?}", set.problems());
        // (name, header, body parameters, quick replies)
        let expected = [
            ("order_created", HeaderShape::None, 3, 3),
            ("invoice_posted", HeaderShape::Media(MediaKind::Document), 2, 0),
            ("unpaid_invoice_reminder", HeaderShape::None, 3, 0),
            ("order_state", HeaderShape::None, 2, 0),
            ("invoice_residual", HeaderShape::None, 2, 0),
        ];
        assert_eq!(set.definitions.len(), expected.len());
        for (name, header, body, quick_replies) in expected {
            let d = set
                .find(name, "fr")
                .unwrap_or_else(|| panic!("{name}.fr.toml is shipped"));
            assert!(d.path.ends_with(format!("{name}.fr.toml")));
            let s = params::shape(&d.components(None)).with_name(name);
            assert_eq!(
                (&s.header, s.body.len(), s.quick_replies()),
                (&header, body, quick_replies),
                "{name}"
            );
            assert!(s.buttons.len() == quick_replies && !s.named, "{name}");
            // The components built from the scripts. values.
            let mut sent = vec![json!({"type":"body","parameters":
                (0..body).map(|i| json!({"type":"text","text":format!("v{i}")})).collect::<Vec<_>>()})];
            if let HeaderShape::Media(_) = header {
                sent.insert(
                    0,
                    json!({"type":"header","parameters":[
                    {"type":"document","document":{"id":"1","filename":"F.pdf"}}]}),
                );
            }
            for i in 0..quick_replies {
                sent.push(json!({"type":"button","sub_type":"quick_reply","index":i.to_string(),
                    "parameters":[{"type":"payload","payload":format!("btn_{i}")}]}));
            }
            params::check(&s, &sent).unwrap_or_else(|e| panic!("{e}"));
        }
        let (pdf, mime) = set.find("invoice_posted", "fr").unwrap().header_example_file().unwrap();
        assert_eq!(mime, "application/pdf");
        assert!(std::fs::read(pdf).unwrap().starts_with(b"%PDF-"));
    }
}
