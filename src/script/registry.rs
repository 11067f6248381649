//! Loading and validating the scripts on disk, by kind.
//!
//! # Layout of the scripts directory
//!
//! ```text
//! scripts/
//!   on_message.lua          optional, kind OnMessage, name "on_message"
//!   buttons/*.lua           kind Button
//!   scenarios/*.lua         kind Scenario
//!   templates/*.lua         kind Template
//!   hooks/*.lua             kind Hook
//!   cron/*.lua              kind Cron
//!   lib/**.lua              modules for `require`, never registered
//! ```
//!
//! A script's name is its file stem (`buttons/validate_order.lua` → `validate_order`). Hidden
//! files and editor droppings (`.x.lua.swp`, `x.lua~`, vim's `4913` probe, emacs `.#x.lua`
//! locks and `#x.lua#` auto-saves, `*.tmp`) are not scripts.
//!
//! # Validation
//!
//! [`load_file`] compiles the chunk and runs it ONCE in a scratch [`Sandbox`] (with harmless
//! placeholders for `env`, `message`, `contact`, `button_id` and `logger`), then checks the
//! shape of the returned value for the script's kind and extracts its [`ScriptMeta`]. The
//! closures produced by that run are discarded: the runtime compiles [`ScriptFile::source`]
//! again in its own sandboxes.
//!
//! Every [`LoadError`] message starts with the script's chunk name (`scripts/buttons/x.lua:`),
//! followed by the line for syntax and runtime errors (`scripts/buttons/x.lua:3: ...`) or by the
//! offending field for shape problems (`scripts/scenarios/o.lua: steps.ask.buttons[2].next: ...`).
//!
//! # Registry
//!
//! [`Registry`] holds the current good version of every script plus the last load error per
//! path: a broken save keeps the previous version running. It is shared as a
//! [`SharedRegistry`] between the hot-reload watcher (see [`super::watcher`]) and the runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use mlua::{Function, LuaSerdeExt, Table, Value};
use serde::{Deserialize, Serialize};

use super::sandbox::{Limits, RunError, Sandbox};

/// Default lifetime of a scenario conversation (`expires` omitted): 24 hours.
pub const DEFAULT_SCENARIO_EXPIRES_SECS: u64 = 86_400;

/// Maximum length (in characters) of a reply button title, as enforced by Meta.
pub const MAX_BUTTON_TITLE_CHARS: usize = 20;

/// Maximum number of reply buttons of one interactive message, as enforced by Meta.
pub const MAX_BUTTONS: usize = 3;

/// The prefix of a scenario button's `next` that hands the conversation over to another
/// scenario (`next = "scenario:payment"`).
pub const SCENARIO_HANDOVER_PREFIX: &str = "scenario:";

/// What a script is for; derived from the folder it lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptKind {
    /// `buttons/*.lua`: runs when an inbound button id matches its pattern.
    Button,
    /// `scenarios/*.lua`: a multi-step conversation.
    Scenario,
    /// `templates/*.lua`: turns a record into a message.
    Template,
    /// `hooks/*.lua`: an Odoo event.
    Hook,
    /// `cron/*.lua`: a scheduled job.
    Cron,
    /// `on_message.lua`: runs for every inbound message no button script handled.
    OnMessage,
}

impl ScriptKind {
    /// Every kind, in registry order.
    pub const ALL: [ScriptKind; 6] = [
        ScriptKind::Button,
        ScriptKind::Scenario,
        ScriptKind::Template,
        ScriptKind::Hook,
        ScriptKind::Cron,
        ScriptKind::OnMessage,
    ];

    /// The folder of this kind under the scripts directory (`None` for [`ScriptKind::OnMessage`],
    /// which is the top-level `on_message.lua`).
    pub fn dir(self) -> Option<&'static str> {
        match self {
            ScriptKind::Button => Some("buttons"),
            ScriptKind::Scenario => Some("scenarios"),
            ScriptKind::Template => Some("templates"),
            ScriptKind::Hook => Some("hooks"),
            ScriptKind::Cron => Some("cron"),
            ScriptKind::OnMessage => None,
        }
    }

    /// The kind whose folder is `dir` (`"buttons"` → [`ScriptKind::Button`]).
    pub fn from_dir(dir: &str) -> Option<ScriptKind> {
        ScriptKind::ALL.into_iter().find(|k| k.dir() == Some(dir))
    }

    /// The snake_case name used in JSON (`"button"`, `"on_message"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ScriptKind::Button => "button",
            ScriptKind::Scenario => "scenario",
            ScriptKind::Template => "template",
            ScriptKind::Hook => "hook",
            ScriptKind::Cron => "cron",
            ScriptKind::OnMessage => "on_message",
        }
    }
}

impl fmt::Display for ScriptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One successfully loaded script.
#[derive(Debug, Clone)]
pub struct ScriptFile {
    /// The file stem, e.g. `validate_order`.
    pub name: String,
    /// The kind, from the folder.
    pub kind: ScriptKind,
    /// `scripts_dir.join(relative path)`; the registry's key for this file.
    pub path: PathBuf,
    /// The Lua chunk name, e.g. `scripts/buttons/validate_order.lua` (the scripts directory's
    /// display path joined with the relative path); errors of this script start with it.
    pub chunk_name: String,
    /// The source text, for the runtime to compile.
    pub source: Arc<str>,
    /// Bumped by [`Registry::apply`] on every successful load of this script (1 for the first
    /// load; a script deleted and re-created continues its numbering). [`load_file`] sets 1.
    pub version: u64,
    /// When this version was loaded.
    pub loaded_at: DateTime<Utc>,
    /// What was extracted from the value the chunk returned.
    pub meta: ScriptMeta,
}

/// What a script declares, extracted when it is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScriptMeta {
    /// A button script.
    Button {
        /// The Lua pattern matched against inbound button ids; captures become `run`'s arguments.
        pattern: String,
        /// `anyone = true`: any contact may click it (a payload printed on a poster), not only
        /// one walua sent the button to.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        anyone: bool,
    },
    /// A scenario's steps.
    Scenario(ScenarioDef),
    /// A template (the chunk returns a function).
    Template,
    /// An Odoo hook.
    Hook(HookDef),
    /// A scheduled job.
    Cron(CronDef),
    /// The catch-all inbound message script.
    OnMessage,
}

/// A multi-step conversation declared by `scenarios/NAME.lua`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioDef {
    /// The step the scenario starts with.
    pub start: String,
    /// How long a conversation in this scenario stays alive without an answer (`expires`,
    /// default [`DEFAULT_SCENARIO_EXPIRES_SECS`]).
    pub expires_secs: u64,
    /// The steps by name.
    pub steps: BTreeMap<String, StepDef>,
}

/// One step of a scenario: a message with up to three reply buttons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDef {
    /// The message body (absent only for steps that consist of a `run` function alone).
    pub body: Option<String>,
    /// Optional header text.
    pub header: Option<String>,
    /// Optional footer text.
    pub footer: Option<String>,
    /// The reply buttons (0 to 3).
    pub buttons: Vec<StepButton>,
    /// Whether the step has a `run` function (called when the step is entered).
    pub has_run: bool,
}

/// One reply button of a scenario step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepButton {
    /// The button id (unique within the step).
    pub id: String,
    /// The title shown on the button (at most [`MAX_BUTTON_TITLE_CHARS`] characters).
    pub title: String,
    /// The step to go to when clicked, or `"scenario:OTHER"` to hand over to another scenario.
    pub next: Option<String>,
    /// A text reply sent when clicked.
    pub reply: Option<String>,
    /// Whether the button has a `run` function (called when clicked).
    pub has_run: bool,
}

/// The Odoo event an Odoo hook reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookEvent {
    /// A record was created.
    Create,
    /// A record was written (one of [`HookDef::fields`] changed).
    Write,
}

impl HookEvent {
    /// `"create"` or `"write"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Create => "create",
            HookEvent::Write => "write",
        }
    }
}

/// What an Odoo hook (`hooks/NAME.lua`) listens to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookDef {
    /// The Odoo model, e.g. `sale.order`.
    pub model: String,
    /// `create` or `write`.
    pub on: HookEvent,
    /// The Odoo domain filtering records, as JSON (e.g. `[["state", "=", "sale"]]`).
    pub domain: Option<serde_json::Value>,
    /// The fields sent with the record (for `write`: the fields whose change triggers the hook).
    pub fields: Vec<String>,
    /// `write` hooks: the watched values every new record starts with (e.g.
    /// `{ state = "draft" }`). A record created after the hook started watching but first
    /// seen already changed (created and confirmed within one poll, or while walua was down)
    /// gets these as `previous`, so it fires like a change from its initial state ("first
    /// sight"). Without `initial`, or for records older than the hook, `previous` is nil.
    pub initial: Option<serde_json::Value>,
}

/// When a cron script (`cron/NAME.lua`) runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronDef {
    /// The schedule in the `cron` crate's syntax (seconds first): a 5-field `schedule` is
    /// normalized by prefixing `"0 "`; fields are separated by single spaces.
    pub schedule: String,
    /// The IANA time zone of the schedule (e.g. `Africa/Dakar`); `None` means UTC.
    pub timezone: Option<String>,
}

impl CronDef {
    /// The parsed schedule (always succeeds for a loaded script).
    pub fn parsed(&self) -> Result<cron::Schedule, cron::error::Error> {
        cron::Schedule::from_str(&self.schedule)
    }

    /// The parsed time zone (`None` when unset).
    pub fn tz(&self) -> Option<chrono_tz::Tz> {
        self.timezone.as_deref().and_then(|t| t.parse().ok())
    }
}

/// Why a script could not be loaded (or a cross-file warning about a loaded one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    /// The script file.
    pub path: PathBuf,
    /// Starts with the chunk name (`scripts/buttons/x.lua:`) and, when Lua knows it, the line
    /// (`scripts/buttons/x.lua:3: ...`).
    pub message: String,
}

/// One row of `GET /api/scripts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptStatus {
    /// The script's name (file stem).
    pub name: String,
    /// The script's kind.
    pub kind: ScriptKind,
    /// The script file.
    pub path: PathBuf,
    /// When the running version was loaded (`None` when no version ever loaded).
    pub loaded_at: Option<DateTime<Utc>>,
    /// The running version (0 when no version is loaded).
    pub version: u64,
    /// The last load error (the previous version keeps running) or cross-file warning.
    pub last_error: Option<String>,
}

/// A registry shared between the watcher and the runtime.
pub type SharedRegistry = Arc<RwLock<Registry>>;

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

/// `true` for file names that editors and tools create next to the real file: hidden files
/// (`.x.lua.swp`, `.#x.lua`, `.x.lua.tmp`), backups (`x.lua~`), vim's numeric write probe
/// (`4913`), emacs auto-saves (`#x.lua#`) and `*.swp`/`*.swx`/`*.tmp`.
pub fn is_editor_temp(file_name: &str) -> bool {
    file_name.starts_with('.')
        || file_name.ends_with('~')
        || (file_name.starts_with('#') && file_name.ends_with('#'))
        || (!file_name.is_empty() && file_name.bytes().all(|b| b.is_ascii_digit()))
        || [".swp", ".swx", ".tmp"].iter().any(|s| file_name.ends_with(s))
}

/// Path of `path` relative to `scripts_dir`, when it is inside it.
fn relative<'a>(scripts_dir: &Path, path: &'a Path) -> Option<&'a Path> {
    path.strip_prefix(scripts_dir).ok()
}

/// The kind and name of the script at `path`, or `None` when `path` is not a script (not under
/// `scripts_dir`, not `.lua`, in `lib/`, nested deeper than one folder, hidden or an editor
/// temporary file).
pub fn classify(scripts_dir: &Path, path: &Path) -> Option<(ScriptKind, String)> {
    let rel = relative(scripts_dir, path)?;
    let parts: Vec<&str> = rel
        .components()
        .map(|c| match c {
            std::path::Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let (kind, file) = match parts.as_slice() {
        ["on_message.lua"] => (ScriptKind::OnMessage, "on_message.lua"),
        [dir, file] => (ScriptKind::from_dir(dir)?, *file),
        _ => return None,
    };
    if is_editor_temp(file) {
        return None;
    }
    let stem = file.strip_suffix(".lua")?;
    if stem.is_empty() {
        return None;
    }
    Some((kind, stem.to_string()))
}

/// `true` when `path` is inside `scripts_dir/lib` (or is that folder).
pub fn is_lib_path(scripts_dir: &Path, path: &Path) -> bool {
    relative(scripts_dir, path).is_some_and(|rel| rel.starts_with("lib"))
}

/// Kind and name of a script path without knowing the scripts directory (from the parent
/// folder's name), for registry rows that only have an error.
fn kind_from_path(path: &Path) -> Option<(ScriptKind, String)> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix(".lua")?.to_string();
    let parent = path.parent().and_then(|p| p.file_name()).and_then(|p| p.to_str());
    match parent.and_then(ScriptKind::from_dir) {
        Some(kind) => Some((kind, stem)),
        None if file == "on_message.lua" => Some((ScriptKind::OnMessage, stem)),
        None => None,
    }
}

/// Every script file under `scripts_dir` (see [`classify`]), in kind then file order. Missing
/// kind folders are fine; an unreadable scripts directory is an error.
pub fn script_paths(scripts_dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    if let Err(e) = std::fs::read_dir(scripts_dir) {
        return Err(LoadError {
            path: scripts_dir.to_path_buf(),
            message: format!("{}: cannot read the scripts directory: {e}", scripts_dir.display()),
        });
    }
    let on_message = scripts_dir.join("on_message.lua");
    if on_message.is_file() {
        out.push(on_message);
    }
    for kind in ScriptKind::ALL {
        let Some(dir) = kind.dir() else { continue };
        let dir = scripts_dir.join(dir);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| !p.is_dir() && classify(scripts_dir, p).is_some())
            .collect();
        files.sort();
        out.extend(files);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Sets `env`, `message`, `contact`, `button_id` and `logger` for the load-time run. The API
/// tables exist (so `env.vars.x or default` and `local send = env.whatsapp.send_text` work) but
/// calling any API function at load time raises an error naming the call.
const PLACEHOLDERS: &str = r#"
local function unavailable(prefix)
  return setmetatable({}, { __index = function(_, k)
    return function()
      error(prefix .. "." .. tostring(k) .. " cannot be called while the script is being loaded", 2)
    end
  end })
end
local function noop() end
env = {
  vars = {},
  whatsapp = unavailable("env.whatsapp"),
  odoo = unavailable("env.odoo"),
  store = unavailable("env.store"),
  scenario = unavailable("env.scenario"),
  notify = function() error("env.notify cannot be called while the script is being loaded", 2) end,
}
message = { button = {}, list = {}, media = {}, context = {}, raw = {} }
contact = {}
button_id = ""
logger = { debug = noop, info = noop, warn = noop, error = noop }
"#;

/// The message of an mlua error without the "syntax error: " prefix and the traceback.
fn mlua_message(e: &mlua::Error) -> String {
    let m = match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        other => other.to_string(),
    };
    match m.find("\nstack traceback:") {
        Some(i) => m[..i].to_string(),
        None => m,
    }
}

/// Makes `message` start with `chunk:`. Lua truncates long chunk names in locations
/// (`...ttons/x.lua:3: boom`); such a prefix is replaced by the full chunk name.
fn located(chunk: &str, message: &str) -> String {
    if message.starts_with(chunk) && message[chunk.len()..].starts_with(':') {
        return message.to_string();
    }
    if let Some(rest) = message.strip_prefix("...") {
        // The longest suffix of `chunk` that `rest` starts with, followed by ':'.
        for (i, _) in chunk.char_indices() {
            let tail = &chunk[i..];
            if tail.len() >= 8 && rest.starts_with(tail) && rest[tail.len()..].starts_with(':') {
                return format!("{chunk}{}", &rest[tail.len()..]);
            }
        }
    }
    format!("{chunk}: {message}")
}

/// Loads one file. `Ok(None)` when `path` is not a script (see [`classify`]) or no longer
/// exists; `Err` when it does not compile, fails when run, or returns a value of the wrong
/// shape for its kind.
pub fn load_file(scripts_dir: &Path, path: &Path, sandbox: &Sandbox) -> Result<Option<ScriptFile>, LoadError> {
    let Some((kind, name)) = classify(scripts_dir, path) else {
        return Ok(None);
    };
    let rel = relative(scripts_dir, path).expect("classified paths are inside scripts_dir");
    let path = scripts_dir.join(rel);
    let chunk_name = path.display().to_string();
    let fail = |message: String| LoadError {
        path: path.clone(),
        message: located(&chunk_name, &message),
    };
    let source = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) if path.is_dir() => return Ok(None),
        Err(e) => return Err(fail(format!("cannot read: {e}"))),
    };
    let source = String::from_utf8(source).map_err(|e| fail(format!("not valid UTF-8: {e}")))?;

    let value = evaluate(sandbox, &chunk_name, &source).map_err(&fail)?;
    let meta = extract(sandbox, kind, value).map_err(&fail)?;
    Ok(Some(ScriptFile {
        name,
        kind,
        path: path.clone(),
        chunk_name,
        source: source.into(),
        version: 1,
        loaded_at: Utc::now(),
        meta,
    }))
}

/// Compiles and runs the chunk once with placeholders; the first returned value.
fn evaluate(sandbox: &Sandbox, chunk_name: &str, source: &str) -> Result<Value, String> {
    let f = sandbox.compile(chunk_name, source).map_err(|e| mlua_message(&e))?;
    let env = sandbox.fresh_env().map_err(|e| mlua_message(&e))?;
    let placeholders = sandbox
        .compile("=walua-load-placeholders", PLACEHOLDERS)
        .map_err(|e| mlua_message(&e))?;
    sandbox.run::<()>(&placeholders, &env, ()).map_err(|e| e.to_string())?;
    sandbox.run::<Value>(&f, &env, ()).map_err(|e: RunError| e.to_string())
}

/// Loads every script under `scripts_dir` with `sandbox`. The errors include the cross-file
/// warnings (see [`cross_check`]); scripts with only warnings are still returned.
pub fn load_all(scripts_dir: &Path, sandbox: &Sandbox) -> (Vec<ScriptFile>, Vec<LoadError>) {
    let paths = match script_paths(scripts_dir) {
        Ok(p) => p,
        Err(e) => return (Vec::new(), vec![e]),
    };
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match load_file(scripts_dir, &path, sandbox) {
            Ok(Some(f)) => files.push(f),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    errors.extend(cross_check(files.iter()));
    (files, errors)
}

/// Checks every script under `scripts_dir` (for `walua check`): all load errors and cross-file
/// warnings, in file order. Uses default [`Limits`].
pub fn check_all(scripts_dir: &Path) -> Vec<LoadError> {
    let sandbox = match Sandbox::new(Limits::default(), scripts_dir.join("lib")) {
        Ok(s) => s,
        Err(e) => {
            return vec![LoadError {
                path: scripts_dir.to_path_buf(),
                message: format!("{}: cannot create the Lua sandbox: {e}", scripts_dir.display()),
            }];
        }
    };
    load_all(scripts_dir, &sandbox).1
}

/// Cross-file checks over a set of loaded scripts: a scenario button whose `next` is
/// `"scenario:OTHER"` where no scenario `OTHER` is loaded. These are warnings: the scripts stay
/// loaded.
pub fn cross_check<'a>(scripts: impl IntoIterator<Item = &'a ScriptFile>) -> Vec<LoadError> {
    let scripts: Vec<&ScriptFile> = scripts.into_iter().collect();
    let scenarios: BTreeSet<&str> = scripts
        .iter()
        .filter(|s| s.kind == ScriptKind::Scenario)
        .map(|s| s.name.as_str())
        .collect();
    let mut out = Vec::new();
    for s in &scripts {
        let ScriptMeta::Scenario(def) = &s.meta else { continue };
        for (step_name, step) in &def.steps {
            for (i, b) in step.buttons.iter().enumerate() {
                let Some(other) = b.next.as_deref().and_then(|n| n.strip_prefix(SCENARIO_HANDOVER_PREFIX)) else {
                    continue;
                };
                if !scenarios.contains(other) {
                    out.push(LoadError {
                        path: s.path.clone(),
                        message: format!(
                            "{}: {}.buttons[{}].next: scenario `{other}` does not exist (no scenarios/{other}.lua)",
                            s.chunk_name,
                            step_path(step_name),
                            i + 1
                        ),
                    });
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Shape checks
// ---------------------------------------------------------------------------------------------

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) | Value::Number(_) => "number",
        other => other.type_name(),
    }
}

fn expect_table(v: Value, what: &str) -> Result<Table, String> {
    match v {
        Value::Table(t) => Ok(t),
        other => Err(format!("the script must return {what}, got {}", type_name(&other))),
    }
}

/// Raw field access: metamethods of a returned table are never run outside of a budget.
fn get(t: &Table, key: &str) -> Result<Value, String> {
    t.raw_get::<Value>(key).map_err(|e| mlua_message(&e))
}

fn opt_string(v: Value, path: &str) -> Result<Option<String>, String> {
    match v {
        Value::Nil => Ok(None),
        Value::String(s) => s
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| format!("{path}: not valid UTF-8")),
        other => Err(format!("{path}: expected a string, got {}", type_name(&other))),
    }
}

fn req_string(v: Value, path: &str) -> Result<String, String> {
    match opt_string(v, path)? {
        Some(s) if s.is_empty() => Err(format!("{path}: must not be empty")),
        Some(s) => Ok(s),
        None => Err(format!("{path}: missing (expected a string)")),
    }
}

fn opt_function(v: Value, path: &str) -> Result<Option<Function>, String> {
    match v {
        Value::Nil => Ok(None),
        Value::Function(f) => Ok(Some(f)),
        other => Err(format!("{path}: expected a function, got {}", type_name(&other))),
    }
}

fn req_function(v: Value, path: &str) -> Result<Function, String> {
    opt_function(v, path)?.ok_or_else(|| format!("{path}: missing (expected a function)"))
}

/// The elements of an array table `1..n`; refuses non-sequence keys.
fn array(t: &Table, path: &str) -> Result<Vec<Value>, String> {
    let n = t.raw_len();
    let mut count = 0usize;
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair.map_err(|e| mlua_message(&e))?;
        match k {
            Value::Integer(i) if i >= 1 && (i as usize) <= n => count += 1,
            other => {
                let shown = match &other {
                    Value::String(s) => format!("`{}`", s.to_string_lossy()),
                    v => format!("a {} key", type_name(v)),
                };
                return Err(format!("{path}: expected an array, found field {shown}"));
            }
        }
    }
    if count != n {
        return Err(format!("{path}: expected an array without holes"));
    }
    (1..=n)
        .map(|i| t.raw_get::<Value>(i).map_err(|e| mlua_message(&e)))
        .collect()
}

/// Refuses string keys of `t` outside `allowed` (catches typos such as `nxet`).
fn known_fields(t: &Table, allowed: &[&str], path: &str) -> Result<(), String> {
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair.map_err(|e| mlua_message(&e))?;
        if let Value::String(s) = &k {
            let k = s.to_string_lossy();
            if !allowed.contains(&k.as_str()) {
                return Err(format!(
                    "{path}: unknown field `{k}` (expected one of: {})",
                    allowed.join(", ")
                ));
            }
        }
    }
    Ok(())
}

fn step_path(name: &str) -> String {
    let ident = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ident {
        format!("steps.{name}")
    } else {
        format!("steps[{name:?}]")
    }
}

fn extract(sandbox: &Sandbox, kind: ScriptKind, value: Value) -> Result<ScriptMeta, String> {
    match kind {
        ScriptKind::Button => {
            let t = expect_table(value, "a table { match = \"pattern\", run = function }")?;
            let pattern = req_string(get(&t, "match")?, "match")?;
            check_pattern(sandbox, &pattern).map_err(|e| format!("match: invalid Lua pattern {pattern:?}: {e}"))?;
            req_function(get(&t, "run")?, "run")?;
            let anyone = match get(&t, "anyone")? {
                Value::Nil => false,
                Value::Boolean(b) => b,
                other => return Err(format!("anyone: expected a boolean, got {}", type_name(&other))),
            };
            Ok(ScriptMeta::Button { pattern, anyone })
        }
        ScriptKind::Scenario => {
            let t = expect_table(value, "a table { start = \"step\", steps = { ... } }")?;
            Ok(ScriptMeta::Scenario(scenario(&t)?))
        }
        ScriptKind::Template => match value {
            Value::Function(_) => Ok(ScriptMeta::Template),
            other => Err(format!(
                "the script must return a function (record → message), got {}",
                type_name(&other)
            )),
        },
        ScriptKind::Hook => {
            let t = expect_table(value, "a table { model = ..., on = ..., run = function }")?;
            Ok(ScriptMeta::Hook(hook(sandbox, &t)?))
        }
        ScriptKind::Cron => {
            let t = expect_table(value, "a table { schedule = \"...\", run = function }")?;
            Ok(ScriptMeta::Cron(cron_def(&t)?))
        }
        ScriptKind::OnMessage => {
            let t = expect_table(value, "a table { run = function }")?;
            req_function(get(&t, "run")?, "run")?;
            Ok(ScriptMeta::OnMessage)
        }
    }
}

/// Static syntax check of a Lua pattern (mirrors `lstrlib.c`, which only reports some errors
/// when the matcher reaches them), then `string.find("", pattern)` in the sandbox.
fn check_pattern(sandbox: &Sandbox, pattern: &str) -> Result<(), String> {
    check_pattern_syntax(pattern.as_bytes())?;
    let env = sandbox.fresh_env().map_err(|e| mlua_message(&e))?;
    let string: Table = env.raw_get("string").map_err(|e| mlua_message(&e))?;
    let find: Function = string.get("find").map_err(|e| mlua_message(&e))?;
    sandbox
        .call::<Value>(&find, ("", pattern))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn check_pattern_syntax(p: &[u8]) -> Result<(), String> {
    const MAX_CAPTURES: usize = 32;
    fn class_end(p: &[u8], mut i: usize) -> Result<usize, String> {
        let c = p[i];
        i += 1;
        if c == b'%' {
            if i >= p.len() {
                return Err("malformed pattern (ends with '%')".into());
            }
            return Ok(i + 1);
        }
        if c == b'[' {
            if p.get(i) == Some(&b'^') {
                i += 1;
            }
            loop {
                if i >= p.len() {
                    return Err("malformed pattern (missing ']')".into());
                }
                let c = p[i];
                i += 1;
                if c == b'%' && i < p.len() {
                    i += 1;
                }
                if p.get(i) == Some(&b']') {
                    return Ok(i + 1);
                }
            }
        }
        Ok(i)
    }

    let mut i = usize::from(p.first() == Some(&b'^'));
    let mut closed: Vec<bool> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    while i < p.len() {
        match p[i] {
            b'(' => {
                if closed.len() >= MAX_CAPTURES {
                    return Err("too many captures".into());
                }
                if p.get(i + 1) == Some(&b')') {
                    closed.push(true);
                    i += 2;
                } else {
                    open.push(closed.len());
                    closed.push(false);
                    i += 1;
                }
                continue;
            }
            b')' => {
                let c = open.pop().ok_or("invalid pattern capture")?;
                closed[c] = true;
                i += 1;
                continue;
            }
            b'$' if i + 1 == p.len() => break,
            b'%' => match p.get(i + 1) {
                Some(b'b') => {
                    if i + 3 >= p.len() {
                        return Err("malformed pattern (missing arguments to '%b')".into());
                    }
                    i += 4;
                    continue;
                }
                Some(b'f') => {
                    i += 2;
                    if p.get(i) != Some(&b'[') {
                        return Err("missing '[' after '%f' in pattern".into());
                    }
                    i = class_end(p, i)?;
                    continue;
                }
                Some(d) if d.is_ascii_digit() => {
                    let n = usize::from(d - b'0');
                    if n == 0 || n > closed.len() || !closed[n - 1] {
                        return Err(format!("invalid capture index %{n}"));
                    }
                    i += 2;
                    continue;
                }
                _ => {}
            },
            _ => {}
        }
        i = class_end(p, i)?;
        if matches!(p.get(i), Some(b'*' | b'+' | b'-' | b'?')) {
            i += 1;
        }
    }
    if !open.is_empty() {
        return Err("unfinished capture".into());
    }
    Ok(())
}

fn scenario(t: &Table) -> Result<ScenarioDef, String> {
    let start = req_string(get(t, "start")?, "start")?;
    let expires_secs = match get(t, "expires")? {
        Value::Nil => DEFAULT_SCENARIO_EXPIRES_SECS,
        Value::Integer(n) if n > 0 => n as u64,
        Value::Number(n) if n > 0.0 && n.fract() == 0.0 && n < u64::MAX as f64 => n as u64,
        other => {
            return Err(format!(
                "expires: expected a positive whole number of seconds, got {}",
                match other {
                    Value::Integer(n) => n.to_string(),
                    Value::Number(n) => n.to_string(),
                    v => type_name(&v).to_string(),
                }
            ));
        }
    };
    let steps_table = match get(t, "steps")? {
        Value::Table(s) => s,
        Value::Nil => return Err("steps: missing (expected a table of steps by name)".into()),
        other => return Err(format!("steps: expected a table, got {}", type_name(&other))),
    };

    // Collect raw step tables first: `next` refers to steps by name.
    let mut raw: BTreeMap<String, Table> = BTreeMap::new();
    for pair in steps_table.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| mlua_message(&e))?;
        let name = match k {
            Value::String(s) => s
                .to_str()
                .map(|s| s.to_string())
                .map_err(|_| "steps: step names must be valid UTF-8")?,
            other => {
                return Err(format!(
                    "steps: step names must be strings, found a {} key",
                    type_name(&other)
                ));
            }
        };
        match v {
            Value::Table(step) => {
                raw.insert(name, step);
            }
            other => {
                return Err(format!(
                    "{}: expected a table, got {}",
                    step_path(&name),
                    type_name(&other)
                ));
            }
        }
    }
    if raw.is_empty() {
        return Err("steps: a scenario needs at least one step".into());
    }
    if !raw.contains_key(&start) {
        return Err(format!("start: step `{start}` does not exist in this scenario"));
    }

    let mut steps = BTreeMap::new();
    for (name, st) in &raw {
        let sp = step_path(name);
        known_fields(st, &["body", "header", "footer", "buttons", "run"], &sp)?;
        let body = opt_string(get(st, "body")?, &format!("{sp}.body"))?;
        let header = opt_string(get(st, "header")?, &format!("{sp}.header"))?;
        let footer = opt_string(get(st, "footer")?, &format!("{sp}.footer"))?;
        let has_run = opt_function(get(st, "run")?, &format!("{sp}.run"))?.is_some();
        let buttons = match get(st, "buttons")? {
            Value::Nil => Vec::new(),
            Value::Table(b) => step_buttons(&b, &sp, &raw)?,
            other => return Err(format!("{sp}.buttons: expected an array, got {}", type_name(&other))),
        };
        let run_only = has_run && buttons.is_empty() && header.is_none() && footer.is_none();
        match &body {
            Some(b) if b.is_empty() => return Err(format!("{sp}.body: must not be empty")),
            None if !run_only => return Err(format!("{sp}.body: missing (expected a string)")),
            _ => {}
        }
        steps.insert(
            name.clone(),
            StepDef {
                body,
                header,
                footer,
                buttons,
                has_run,
            },
        );
    }
    Ok(ScenarioDef {
        start,
        expires_secs,
        steps,
    })
}

fn step_buttons(b: &Table, sp: &str, steps: &BTreeMap<String, Table>) -> Result<Vec<StepButton>, String> {
    let path = format!("{sp}.buttons");
    let items = array(b, &path)?;
    if items.is_empty() || items.len() > MAX_BUTTONS {
        return Err(format!(
            "{path}: expected 1 to {MAX_BUTTONS} buttons, got {}",
            items.len()
        ));
    }
    let mut out: Vec<StepButton> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let bp = format!("{path}[{}]", i + 1);
        let bt = match item {
            Value::Table(t) => t,
            other => {
                return Err(format!(
                    "{bp}: expected a table {{ id, title, ... }}, got {}",
                    type_name(&other)
                ));
            }
        };
        known_fields(&bt, &["id", "title", "next", "reply", "run"], &bp)?;
        let id = req_string(get(&bt, "id")?, &format!("{bp}.id"))?;
        if out.iter().any(|o| o.id == id) {
            return Err(format!("{bp}.id: duplicate button id `{id}` in this step"));
        }
        let title = req_string(get(&bt, "title")?, &format!("{bp}.title"))?;
        let chars = title.chars().count();
        if chars > MAX_BUTTON_TITLE_CHARS {
            return Err(format!(
                "{bp}.title: {title:?} is {chars} characters long, WhatsApp allows at most {MAX_BUTTON_TITLE_CHARS}"
            ));
        }
        let next = opt_string(get(&bt, "next")?, &format!("{bp}.next"))?;
        if let Some(n) = &next {
            match n.strip_prefix(SCENARIO_HANDOVER_PREFIX) {
                Some("") => return Err(format!("{bp}.next: `{n}` names no scenario")),
                Some(_) => {}
                None if steps.contains_key(n) => {}
                None => return Err(format!("{bp}.next: step `{n}` does not exist in this scenario")),
            }
        }
        let reply = opt_string(get(&bt, "reply")?, &format!("{bp}.reply"))?;
        let has_run = opt_function(get(&bt, "run")?, &format!("{bp}.run"))?.is_some();
        out.push(StepButton {
            id,
            title,
            next,
            reply,
            has_run,
        });
    }
    Ok(out)
}

fn hook(sandbox: &Sandbox, t: &Table) -> Result<HookDef, String> {
    let model = req_string(get(t, "model")?, "model")?;
    let on = match req_string(get(t, "on")?, "on")?.as_str() {
        "create" => HookEvent::Create,
        "write" => HookEvent::Write,
        other => return Err(format!("on: expected \"create\" or \"write\", got {other:?}")),
    };
    let domain = match get(t, "domain")? {
        Value::Nil => None,
        v @ Value::Table(_) => Some(
            sandbox
                .lua()
                .from_value::<serde_json::Value>(v)
                .map_err(|e| format!("domain: cannot be converted to JSON: {}", mlua_message(&e)))?,
        ),
        other => return Err(format!("domain: expected a table, got {}", type_name(&other))),
    };
    let fields = match get(t, "fields")? {
        Value::Nil => Vec::new(),
        Value::Table(f) => array(&f, "fields")?
            .into_iter()
            .enumerate()
            .map(|(i, v)| req_string(v, &format!("fields[{}]", i + 1)))
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(format!(
                "fields: expected an array of strings, got {}",
                type_name(&other)
            ));
        }
    };
    if on == HookEvent::Write && fields.is_empty() {
        return Err("fields: required for on = \"write\" (the fields whose change triggers the hook)".into());
    }
    let initial = match get(t, "initial")? {
        Value::Nil => None,
        _ if on == HookEvent::Create => {
            return Err("initial: only for on = \"write\" (a create hook has no previous values)".into());
        }
        v @ Value::Table(_) => {
            let value = sandbox
                .lua()
                .from_value::<serde_json::Value>(v)
                .map_err(|e| format!("initial: cannot be converted to JSON: {}", mlua_message(&e)))?;
            let value = match value {
                // `{}` converts to an empty array.
                serde_json::Value::Array(a) if a.is_empty() => serde_json::Value::Object(Default::default()),
                v => v,
            };
            let Some(map) = value.as_object() else {
                return Err("initial: expected a table of field = value".into());
            };
            if let Some(f) = map.keys().find(|k| !fields.contains(k)) {
                return Err(format!("initial: `{f}` is not one of the hook's fields"));
            }
            Some(value)
        }
        other => return Err(format!("initial: expected a table, got {}", type_name(&other))),
    };
    req_function(get(t, "run")?, "run")?;
    Ok(HookDef {
        model,
        on,
        domain,
        fields,
        initial,
    })
}

/// Normalizes a cron expression to the `cron` crate's 6/7-field form and validates it.
pub fn normalize_schedule(schedule: &str) -> Result<String, String> {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    let normalized = match fields.len() {
        5 => format!("0 {}", fields.join(" ")),
        6 | 7 => fields.join(" "),
        n => {
            return Err(format!(
                "expected 5 fields (min hour day month weekday), or 6/7 with seconds (and year), got {n}"
            ));
        }
    };
    cron::Schedule::from_str(&normalized).map_err(|e| e.to_string())?;
    Ok(normalized)
}

fn cron_def(t: &Table) -> Result<CronDef, String> {
    let raw = req_string(get(t, "schedule")?, "schedule")?;
    let schedule = normalize_schedule(&raw).map_err(|e| format!("schedule: invalid cron expression {raw:?}: {e}"))?;
    let timezone = opt_string(get(t, "timezone")?, "timezone")?;
    if let Some(tz) = &timezone {
        tz.parse::<chrono_tz::Tz>().map_err(|_| {
            format!("timezone: unknown time zone {tz:?} (expected an IANA name such as \"Africa/Dakar\")")
        })?;
    }
    req_function(get(t, "run")?, "run")?;
    Ok(CronDef { schedule, timezone })
}

// ---------------------------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------------------------

type Key = (ScriptKind, String);

/// The current set of good scripts plus the last load error per path. See the module docs.
#[derive(Debug, Default)]
pub struct Registry {
    scripts: BTreeMap<Key, ScriptFile>,
    by_path: HashMap<PathBuf, Key>,
    errors: BTreeMap<PathBuf, LoadError>,
    warnings: BTreeMap<PathBuf, Vec<LoadError>>,
    /// Last version per script, kept after removal so that numbering never restarts.
    versions: HashMap<Key, u64>,
    generation: u64,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the outcome of [`load_file`] for `path`: a success replaces the script and bumps
    /// its version (and clears its error); an error keeps the previous good version and records
    /// the error; `Ok(None)` (not a script, or deleted) removes it.
    pub fn apply(&mut self, path: &Path, result: Result<Option<ScriptFile>, LoadError>) {
        match result {
            Ok(Some(mut file)) => {
                let key = (file.kind, file.name.clone());
                if let Some(old_key) = self.by_path.get(path)
                    && *old_key != key
                {
                    let old_key = old_key.clone();
                    self.scripts.remove(&old_key);
                }
                if let Some(prev) = self.scripts.get(&key)
                    && prev.path != path
                {
                    self.by_path.remove(&prev.path.clone());
                }
                let version = self.versions.get(&key).copied().unwrap_or(0) + 1;
                file.version = version;
                self.versions.insert(key.clone(), version);
                self.by_path.insert(path.to_path_buf(), key.clone());
                self.scripts.insert(key, file);
                self.errors.remove(path);
                self.changed();
            }
            Ok(None) => self.remove(path),
            Err(e) => {
                self.errors.insert(path.to_path_buf(), e);
                self.changed();
            }
        }
    }

    /// Unregisters the script at `path` and forgets its error (no-op if unknown).
    pub fn remove(&mut self, path: &Path) {
        let mut changed = self.errors.remove(path).is_some();
        if let Some(key) = self.by_path.remove(path) {
            self.scripts.remove(&key);
            changed = true;
        }
        if changed {
            self.changed();
        }
    }

    fn changed(&mut self) {
        self.generation += 1;
        self.warnings.clear();
        for w in cross_check(self.scripts.values()) {
            self.warnings.entry(w.path.clone()).or_default().push(w);
        }
    }

    /// Bumped on every change (load, error, removal); lets the runtime drop cached chunks.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The button scripts, sorted by name (the matching order).
    pub fn buttons(&self) -> impl Iterator<Item = &ScriptFile> {
        self.of_kind(ScriptKind::Button)
    }

    /// The scripts of one kind, sorted by name.
    pub fn of_kind(&self, kind: ScriptKind) -> impl Iterator<Item = &ScriptFile> {
        self.scripts
            .range((kind, String::new())..)
            .take_while(move |((k, _), _)| *k == kind)
            .map(|(_, f)| f)
    }

    /// The script of `kind` named `name`.
    pub fn get(&self, kind: ScriptKind, name: &str) -> Option<&ScriptFile> {
        self.scripts.get(&(kind, name.to_string()))
    }

    /// The script loaded from `path`.
    pub fn get_path(&self, path: &Path) -> Option<&ScriptFile> {
        self.by_path.get(path).and_then(|k| self.scripts.get(k))
    }

    /// Every loaded script, by kind then name.
    pub fn all(&self) -> impl Iterator<Item = &ScriptFile> {
        self.scripts.values()
    }

    /// The paths of every loaded script.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.by_path.keys().map(PathBuf::as_path)
    }

    /// The last load error per path, then the cross-file warnings, each sorted by path.
    pub fn errors(&self) -> impl Iterator<Item = &LoadError> {
        self.errors.values().chain(self.warnings())
    }

    /// The cross-file warnings about loaded scripts (see [`cross_check`]), sorted by path.
    pub fn warnings(&self) -> impl Iterator<Item = &LoadError> {
        self.warnings.values().flatten()
    }

    /// One row per loaded or failing script, by kind then name (for `GET /api/scripts`).
    pub fn status(&self) -> Vec<ScriptStatus> {
        let last_error = |path: &Path| -> Option<String> {
            let mut parts: Vec<&str> = Vec::new();
            if let Some(e) = self.errors.get(path) {
                parts.push(&e.message);
            }
            if let Some(ws) = self.warnings.get(path) {
                parts.extend(ws.iter().map(|w| w.message.as_str()));
            }
            (!parts.is_empty()).then(|| parts.join("\n"))
        };
        let mut rows: Vec<ScriptStatus> = self
            .scripts
            .values()
            .map(|f| ScriptStatus {
                name: f.name.clone(),
                kind: f.kind,
                path: f.path.clone(),
                loaded_at: Some(f.loaded_at),
                version: f.version,
                last_error: last_error(&f.path),
            })
            .collect();
        for (path, e) in &self.errors {
            if self.by_path.contains_key(path) {
                continue;
            }
            let Some((kind, name)) = kind_from_path(path) else {
                continue;
            };
            rows.push(ScriptStatus {
                name,
                kind,
                path: path.clone(),
                loaded_at: None,
                version: 0,
                last_error: Some(e.message.clone()),
            });
        }
        rows.sort_by(|a, b| (a.kind, &a.name, &a.path).cmp(&(b.kind, &b.name, &b.path)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        sandbox: Sandbox,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("scripts");
        for sub in ["buttons", "scenarios", "templates", "hooks", "cron", "lib"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let sandbox = Sandbox::new(Limits::default(), dir.join("lib")).unwrap();
        Fixture {
            _tmp: tmp,
            dir,
            sandbox,
        }
    }

    impl Fixture {
        fn write(&self, rel: &str, src: &str) -> PathBuf {
            let p = self.dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, src).unwrap();
            p
        }
        fn load(&self, rel: &str, src: &str) -> Result<Option<ScriptFile>, LoadError> {
            let p = self.write(rel, src);
            load_file(&self.dir, &p, &self.sandbox)
        }
        fn ok(&self, rel: &str, src: &str) -> ScriptFile {
            self.load(rel, src)
                .unwrap_or_else(|e| panic!("{rel}: {e}"))
                .expect("a script")
        }
        fn err(&self, rel: &str, src: &str) -> String {
            match self.load(rel, src) {
                Err(e) => {
                    assert_eq!(e.path, self.dir.join(rel));
                    e.message
                }
                Ok(v) => panic!("{rel}: expected an error, got {v:?}"),
            }
        }
        fn chunk(&self, rel: &str) -> String {
            self.dir.join(rel).display().to_string()
        }
    }

    const SCENARIO: &str = r#"
local M = {
  start = "ask",
  expires = 3600,
  steps = {
    ask = { body = "Valider ?", header = "Commande", footer = "walua",
            buttons = { { id = "yes", title = "Valider", next = "payment" },
                        { id = "no", title = "Annuler", reply = "Commande annulée." },
                        { id = "other", title = "Autre", next = "scenario:support", run = function() end } } },
    payment = { body = "Méthode ?", buttons = { { id = "wave", title = "Wave", run = function() end } } },
    done = { run = function() end },
  },
}
return M
"#;

    #[test]
    fn every_kind_loads_with_meta() {
        let fx = fixture();
        let b = fx.ok(
            "buttons/validate_order.lua",
            "local p = env.vars.prefix or 'btn'\nlogger.info('x')\nlocal id = button_id .. (message.text or '')\n\
             return { match = '^' .. p .. '_validate_order_(%d+)$', run = function(id) end }",
        );
        assert_eq!(b.name, "validate_order");
        assert_eq!(b.kind, ScriptKind::Button);
        assert_eq!(b.chunk_name, fx.chunk("buttons/validate_order.lua"));
        assert_eq!(b.path, fx.dir.join("buttons/validate_order.lua"));
        assert_eq!(b.version, 1);
        assert!(b.source.contains("validate_order"));
        assert_eq!(
            b.meta,
            ScriptMeta::Button {
                pattern: "^btn_validate_order_(%d+)$".into(),
                anyone: false,
            }
        );

        let s = fx.ok("scenarios/order_validation.lua", SCENARIO);
        let ScriptMeta::Scenario(def) = &s.meta else {
            panic!("{:?}", s.meta)
        };
        assert_eq!(def.start, "ask");
        assert_eq!(def.expires_secs, 3600);
        assert_eq!(def.steps.len(), 3);
        let ask = &def.steps["ask"];
        assert_eq!(ask.body.as_deref(), Some("Valider ?"));
        assert_eq!(ask.header.as_deref(), Some("Commande"));
        assert_eq!(ask.footer.as_deref(), Some("walua"));
        assert!(!ask.has_run);
        assert_eq!(
            ask.buttons[0],
            StepButton {
                id: "yes".into(),
                title: "Valider".into(),
                next: Some("payment".into()),
                reply: None,
                has_run: false
            }
        );
        assert_eq!(ask.buttons[1].reply.as_deref(), Some("Commande annulée."));
        assert_eq!(ask.buttons[2].next.as_deref(), Some("scenario:support"));
        assert!(ask.buttons[2].has_run);
        assert!(def.steps["payment"].buttons[0].has_run);
        assert_eq!(def.steps["done"].body, None);
        assert!(def.steps["done"].has_run);
        let s2 = fx.ok(
            "scenarios/short.lua",
            "return { start = 'a', steps = { a = { body = 'hi' } } }",
        );
        let ScriptMeta::Scenario(def) = &s2.meta else { panic!() };
        assert_eq!(def.expires_secs, DEFAULT_SCENARIO_EXPIRES_SECS);
        // Round-trips through serde.
        let json = serde_json::to_string(&s.meta).unwrap();
        assert_eq!(serde_json::from_str::<ScriptMeta>(&json).unwrap(), s.meta);

        let t = fx.ok(
            "templates/order_created.lua",
            "return function(order) return { type = 'text' } end",
        );
        assert_eq!((t.kind, t.meta.clone()), (ScriptKind::Template, ScriptMeta::Template));

        let h = fx.ok(
            "hooks/sale_order_created.lua",
            "return { model = 'sale.order', on = 'create', domain = { { 'state', '=', 'sale' } },\n\
             fields = { 'name', 'partner_id' }, run = function(r) env.notify(r.phone, 'x', r) end }",
        );
        assert_eq!(
            h.meta,
            ScriptMeta::Hook(HookDef {
                model: "sale.order".into(),
                on: HookEvent::Create,
                domain: Some(serde_json::json!([["state", "=", "sale"]])),
                fields: vec!["name".into(), "partner_id".into()],
                initial: None,
            })
        );
        let h2 = fx.ok(
            "hooks/w.lua",
            "return { model = 'account.move', on = 'write', fields = { 'payment_state' }, run = function() end }",
        );
        let ScriptMeta::Hook(def) = &h2.meta else { panic!() };
        assert_eq!((def.on, def.domain.clone()), (HookEvent::Write, None));

        let c = fx.ok(
            "cron/reminders.lua",
            "return { schedule = '30  9 * * 1-5', timezone = 'Africa/Dakar', run = function() end }",
        );
        let ScriptMeta::Cron(def) = &c.meta else { panic!() };
        assert_eq!(def.schedule, "0 30 9 * * 1-5");
        assert_eq!(def.timezone.as_deref(), Some("Africa/Dakar"));
        assert!(def.parsed().is_ok());
        assert_eq!(def.tz(), Some(chrono_tz::Africa::Dakar));
        let c6 = fx.ok(
            "cron/six.lua",
            "return { schedule = '0 0 9 * * *', run = function() end }",
        );
        assert_eq!(
            c6.meta,
            ScriptMeta::Cron(CronDef {
                schedule: "0 0 9 * * *".into(),
                timezone: None
            })
        );

        let m = fx.ok("on_message.lua", "return { run = function() end }");
        assert_eq!(
            (m.kind, m.name.as_str(), m.meta.clone()),
            (ScriptKind::OnMessage, "on_message", ScriptMeta::OnMessage)
        );

        // Modules from lib/ can be required at load time.
        fx.write("lib/util.lua", "return { pat = '^btn_util$' }");
        let r = fx.ok(
            "buttons/uses_lib.lua",
            "local u = require('util')\nreturn { match = u.pat, run = function() end }",
        );
        assert_eq!(
            r.meta,
            ScriptMeta::Button {
                pattern: "^btn_util$".into(),
                anyone: false,
            }
        );
    }

    #[test]
    fn a_hooks_initial_values_must_be_its_own_fields_and_only_for_write_hooks() {
        let sandbox = Sandbox::new(Limits::default(), PathBuf::from("/nonexistent")).unwrap();
        let load = |src: &str| {
            let t: Table = sandbox.lua().load(src).eval().unwrap();
            hook(&sandbox, &t)
        };
        let ok = load("return { model = 'sale.order', on = 'write', fields = { 'state' }, initial = { state = 'draft' }, run = function() end }").unwrap();
        assert_eq!(ok.initial, Some(serde_json::json!({"state": "draft"})));
        let empty = load("return { model = 'account.move', on = 'write', fields = { 'amount_residual' }, initial = {}, run = function() end }").unwrap();
        assert_eq!(empty.initial, Some(serde_json::json!({})));
        let e = load("return { model = 'sale.order', on = 'write', fields = { 'state' }, initial = { name = 'x' }, run = function() end }").unwrap_err();
        assert!(e.contains("initial: `name` is not one of the hook's fields"), "{e}");
        let e = load("return { model = 'sale.order', on = 'create', fields = { 'state' }, initial = { state = 'draft' }, run = function() end }").unwrap_err();
        assert!(e.contains("only for on = \"write\""), "{e}");
    }

    #[test]
    fn non_scripts_are_skipped() {
        let fx = fixture();
        for rel in [
            "lib/util.lua",
            "lib/sub/x.lua",
            "buttons/.x.lua.swp",
            "buttons/.x.lua.swx",
            "buttons/x.lua~",
            "buttons/4913",
            "buttons/.#x.lua",
            "buttons/#x.lua#",
            "buttons/.hidden.lua",
            "buttons/x.lua.tmp",
            "buttons/readme.md",
            "buttons/sub/x.lua",
            "other/x.lua",
            "x.lua",
        ] {
            assert!(
                fx.load(rel, "this is not lua").unwrap().is_none(),
                "{rel} should not be a script"
            );
        }
        // A vanished file is Ok(None).
        assert!(
            load_file(&fx.dir, &fx.dir.join("buttons/gone.lua"), &fx.sandbox)
                .unwrap()
                .is_none()
        );
        assert!(is_editor_temp("4913") && is_editor_temp(".#a.lua") && !is_editor_temp("a.lua"));
    }

    #[test]
    fn syntax_and_runtime_errors_name_file_and_line() {
        let fx = fixture();
        let c = fx.chunk("buttons/bad.lua");
        let m = fx.err("buttons/bad.lua", "local x = 1\nreturn { match = 'x' run = 1 }");
        assert!(m.starts_with(&format!("{c}:2:")), "{m}");
        assert!(!m.contains("syntax error:"), "{m}");

        let m = fx.err("buttons/bad.lua", "local t\n\nreturn t.x");
        assert!(m.starts_with(&format!("{c}:3: attempt to index a nil value")), "{m}");

        let m = fx.err("buttons/bad.lua", "\nenv.whatsapp.send_text('x', 'y')\nreturn {}");
        assert!(
            m.starts_with(&format!(
                "{c}:2: env.whatsapp.send_text cannot be called while the script is being loaded"
            )),
            "{m}"
        );

        let m = fx.err("buttons/bad.lua", "while true do end");
        assert!(m.starts_with(&format!("{c}:1:")) && m.contains("CPU budget"), "{m}");

        // A long chunk name that Lua truncates still yields the full name.
        let long = format!("buttons/{}.lua", "x".repeat(70));
        let m = fx.err(&long, "\nerror('boom')");
        assert_eq!(m, format!("{}:2: boom", fx.chunk(&long)));

        // Errors in a required module name the module, prefixed with the script.
        fx.write("lib/broken.lua", "error('lib broke')");
        let m = fx.err("buttons/bad.lua", "local b = require('broken')\nreturn b");
        assert!(m.starts_with(&format!("{c}: ")), "{m}");
        assert!(m.contains("lib/broken.lua:1: lib broke"), "{m}");
    }

    #[test]
    fn shape_errors_are_reported_with_the_file() {
        let fx = fixture();
        let cases: &[(&str, &str, &str)] = &[
            ("buttons/b.lua", "return 42", "the script must return a table"),
            (
                "buttons/b.lua",
                "return { run = function() end }",
                "match: missing (expected a string)",
            ),
            (
                "buttons/b.lua",
                "return { match = 5, run = function() end }",
                "match: expected a string, got number",
            ),
            (
                "buttons/b.lua",
                "return { match = '^x$' }",
                "run: missing (expected a function)",
            ),
            (
                "buttons/b.lua",
                "return { match = '^x$', run = 'no' }",
                "run: expected a function, got string",
            ),
            (
                "buttons/b.lua",
                "return { match = 'x%', run = function() end }",
                "malformed pattern (ends with '%')",
            ),
            (
                "buttons/b.lua",
                "return { match = '^[a', run = function() end }",
                "missing ']'",
            ),
            (
                "buttons/b.lua",
                "return { match = '(x', run = function() end }",
                "unfinished capture",
            ),
            (
                "buttons/b.lua",
                "return { match = 'x)', run = function() end }",
                "invalid pattern capture",
            ),
            (
                "buttons/b.lua",
                "return { match = '(x)%2', run = function() end }",
                "invalid capture index %2",
            ),
            (
                "buttons/b.lua",
                "return { match = '%f', run = function() end }",
                "missing '[' after '%f'",
            ),
            (
                "buttons/b.lua",
                "return { match = '%bx', run = function() end }",
                "missing arguments to '%b'",
            ),
            (
                "scenarios/s.lua",
                "return { steps = { a = { body = 'x' } } }",
                "start: missing",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'b', steps = { a = { body = 'x' } } }",
                "start: step `b` does not exist",
            ),
            ("scenarios/s.lua", "return { start = 'a' }", "steps: missing"),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = {} }",
                "steps: a scenario needs at least one step",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = { a = {} } }",
                "steps.a.body: missing (expected a string)",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = { a = 'x' } }",
                "steps.a: expected a table, got string",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', expires = -1, steps = { a = { body = 'x' } } }",
                "expires: expected a positive whole number",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = { a = { body = 'x', buttons = {} } } }",
                "steps.a.buttons: expected 1 to 3 buttons, got 0",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = { a = { body = 'x', buttons = { {id='1',title='1'},{id='2',title='2'},{id='3',title='3'},{id='4',title='4'} } } } }",
                "steps.a.buttons: expected 1 to 3 buttons, got 4",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = { a = { body = 'x', buttons = { { id = 'y', title = 'Oui' }, { id = 'n', title = 'Non', next = 'paymnt' } } }, payment = { body = 'p' } } }",
                "steps.a.buttons[2].next: step `paymnt` does not exist in this scenario",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = { a = { body = 'x', buttons = { { id = 'y', title = 'Oui' }, { id = 'y', title = 'Non' } } } } }",
                "steps.a.buttons[2].id: duplicate button id `y`",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = { a = { body = 'x', buttons = { { id = 'y', title = 'Un titre beaucoup trop long' } } } } }",
                "steps.a.buttons[1].title: \"Un titre beaucoup trop long\" is 27 characters long",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = { a = { body = 'x', buttons = { { title = 'Oui' } } } } }",
                "steps.a.buttons[1].id: missing",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = { a = { body = 'x', buttons = { { id = 'y', title = 'Oui', nxet = 'a' } } } } }",
                "steps.a.buttons[1]: unknown field `nxet`",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = { a = { body = 'x', buttons = { { id = 'y', title = 'Oui', reply = 3 } } } } }",
                "steps.a.buttons[1].reply: expected a string, got number",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = { a = { body = 'x', buttons = { { id = 'y', title = 'Oui', run = true } } } } }",
                "steps.a.buttons[1].run: expected a function, got boolean",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = { a = { body = 'x', buttons = { x = 1 } } } }",
                "steps.a.buttons: expected an array, found field `x`",
            ),
            (
                "scenarios/s.lua",
                "return { start = 'a', steps = { a = { body = 'x', buttons = { { id = 'y', title = 'Oui', next = 'scenario:' } } } } }",
                "steps.a.buttons[1].next: `scenario:` names no scenario",
            ),
            (
                "templates/t.lua",
                "return { }",
                "the script must return a function (record → message), got table",
            ),
            (
                "hooks/h.lua",
                "return { on = 'create', run = function() end }",
                "model: missing",
            ),
            (
                "hooks/h.lua",
                "return { model = 'sale.order', on = 'delete', run = function() end }",
                "on: expected \"create\" or \"write\", got \"delete\"",
            ),
            (
                "hooks/h.lua",
                "return { model = 'sale.order', on = 'write', run = function() end }",
                "fields: required for on = \"write\"",
            ),
            (
                "hooks/h.lua",
                "return { model = 'sale.order', on = 'create', fields = { 1 }, run = function() end }",
                "fields[1]: expected a string, got number",
            ),
            (
                "hooks/h.lua",
                "return { model = 'sale.order', on = 'create', domain = 'x', run = function() end }",
                "domain: expected a table, got string",
            ),
            (
                "hooks/h.lua",
                "return { model = 'sale.order', on = 'create', domain = { function() end }, run = function() end }",
                "domain: cannot be converted to JSON",
            ),
            (
                "hooks/h.lua",
                "return { model = 'sale.order', on = 'create' }",
                "run: missing",
            ),
            ("cron/c.lua", "return { run = function() end }", "schedule: missing"),
            (
                "cron/c.lua",
                "return { schedule = '* * *', run = function() end }",
                "schedule: invalid cron expression \"* * *\": expected 5 fields",
            ),
            (
                "cron/c.lua",
                "return { schedule = '0 99 * * *', run = function() end }",
                "schedule: invalid cron expression \"0 99 * * *\"",
            ),
            (
                "cron/c.lua",
                "return { schedule = '0 9 * * *', timezone = 'Mars/Olympus', run = function() end }",
                "timezone: unknown time zone \"Mars/Olympus\"",
            ),
            ("cron/c.lua", "return { schedule = '0 9 * * *' }", "run: missing"),
            (
                "on_message.lua",
                "return function() end",
                "the script must return a table { run = function }, got function",
            ),
            ("on_message.lua", "return {}", "run: missing"),
        ];
        for (rel, src, expected) in cases {
            let m = fx.err(rel, src);
            let prefix = format!("{}: ", fx.chunk(rel));
            assert!(m.starts_with(&prefix), "{src}\n  → {m}");
            assert!(m.contains(expected), "{src}\n  → {m}\n  expected {expected:?}");
        }
    }

    #[test]
    fn pattern_syntax_accepts_valid_patterns() {
        for p in [
            "^btn_validate_order_(%d+)$",
            "^[%w_]+$",
            "[]]",
            "[^]]",
            "%bxy",
            "%f[%w]%w+",
            "(a)%1",
            "()a",
            "a$b",
            "^$",
            "[a-z]*-?+",
            "%%",
        ] {
            check_pattern_syntax(p.as_bytes()).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        for p in ["%", "[a", "[%", "(", ")", "%0", "(a%1)", "%b", "%bx", "%fa"] {
            assert!(check_pattern_syntax(p.as_bytes()).is_err(), "{p} should be rejected");
        }
    }

    fn file(fx: &Fixture, rel: &str, src: &str) -> (PathBuf, Result<Option<ScriptFile>, LoadError>) {
        let p = fx.write(rel, src);
        let r = load_file(&fx.dir, &p, &fx.sandbox);
        (p, r)
    }

    #[test]
    fn broken_save_keeps_the_old_version_and_fix_clears_the_error() {
        let fx = fixture();
        let mut reg = Registry::new();
        let g0 = reg.generation();
        let (p, r) = file(&fx, "buttons/x.lua", "return { match = '^a$', run = function() end }");
        reg.apply(&p, r);
        assert_eq!(reg.get(ScriptKind::Button, "x").unwrap().version, 1);
        assert!(reg.generation() > g0);

        let (p, r) = file(&fx, "buttons/x.lua", "return { match = '^b$', run = function() end }");
        reg.apply(&p, r);
        let x = reg.get(ScriptKind::Button, "x").unwrap();
        assert_eq!((x.version, x.source.contains("^b$")), (2, true));

        let g = reg.generation();
        let (p, r) = file(&fx, "buttons/x.lua", "return { match = '^c$' run = function() end }");
        reg.apply(&p, r);
        assert!(reg.generation() > g);
        let x = reg.get(ScriptKind::Button, "x").unwrap();
        assert_eq!(x.version, 2);
        assert!(x.source.contains("^b$"));
        assert_eq!(reg.errors().count(), 1);
        let st = reg.status();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].version, 2);
        let err = st[0].last_error.as_deref().unwrap();
        assert!(err.starts_with(&format!("{}:1:", fx.chunk("buttons/x.lua"))), "{err}");

        let (p, r) = file(&fx, "buttons/x.lua", "return { match = '^d$', run = function() end }");
        reg.apply(&p, r);
        let x = reg.get(ScriptKind::Button, "x").unwrap();
        assert_eq!(x.version, 3);
        assert_eq!(
            x.meta,
            ScriptMeta::Button {
                pattern: "^d$".into(),
                anyone: false
            }
        );
        assert_eq!(reg.errors().count(), 0);
        assert_eq!(reg.status()[0].last_error, None);

        // A script that never loaded shows up with its error and version 0.
        let (p2, r) = file(&fx, "cron/c.lua", "return {}");
        reg.apply(&p2, r);
        let row = reg.status().into_iter().find(|s| s.name == "c").unwrap();
        assert_eq!((row.kind, row.version, row.loaded_at), (ScriptKind::Cron, 0, None));
        assert!(row.last_error.unwrap().contains("schedule: missing"));

        // Removal, then re-creation continues the version numbering.
        reg.remove(&p);
        reg.remove(&p2);
        assert!(reg.get(ScriptKind::Button, "x").is_none());
        assert_eq!(reg.status().len(), 0);
        let (p, r) = file(&fx, "buttons/x.lua", "return { match = '^e$', run = function() end }");
        reg.apply(&p, r);
        assert_eq!(reg.get(ScriptKind::Button, "x").unwrap().version, 4);
        reg.apply(&p, Ok(None));
        assert_eq!(reg.all().count(), 0);
    }

    #[test]
    fn buttons_are_sorted_by_name() {
        let fx = fixture();
        let mut reg = Registry::new();
        for name in ["b", "a-b", "a", "c"] {
            let (p, r) = file(
                &fx,
                &format!("buttons/{name}.lua"),
                "return { match = 'x', run = function() end }",
            );
            reg.apply(&p, r);
        }
        let (p, r) = file(&fx, "on_message.lua", "return { run = function() end }");
        reg.apply(&p, r);
        let names: Vec<&str> = reg.buttons().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["a", "a-b", "b", "c"]);
        assert_eq!(reg.all().count(), 5);
        assert!(reg.get(ScriptKind::OnMessage, "on_message").is_some());
        assert_eq!(reg.get_path(&p).unwrap().kind, ScriptKind::OnMessage);
    }

    #[test]
    fn load_all_cross_checks_scenario_handover() {
        let fx = fixture();
        fx.write("scenarios/order.lua", SCENARIO);
        fx.write("buttons/ok.lua", "return { match = 'x', run = function() end }");
        fx.write("buttons/.ok.lua.swp", "garbage");
        fx.write("lib/util.lua", "garbage garbage");
        let (files, errors) = load_all(&fx.dir, &fx.sandbox);
        assert_eq!(files.len(), 2);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, fx.dir.join("scenarios/order.lua"));
        assert_eq!(
            errors[0].message,
            format!(
                "{}: steps.ask.buttons[3].next: scenario `support` does not exist (no scenarios/support.lua)",
                fx.chunk("scenarios/order.lua")
            )
        );

        // The registry keeps the scenario loaded and shows the warning until support exists.
        let mut reg = Registry::new();
        for f in files {
            reg.apply(&f.path.clone(), Ok(Some(f)));
        }
        assert!(reg.get(ScriptKind::Scenario, "order").is_some());
        assert_eq!(reg.errors().count(), 1);
        let (p, r) = file(
            &fx,
            "scenarios/support.lua",
            "return { start = 'a', steps = { a = { body = 'x' } } }",
        );
        reg.apply(&p, r);
        assert_eq!(reg.errors().count(), 0);
        assert!(reg.status().iter().all(|s| s.last_error.is_none()));
        let (files, errors) = load_all(&fx.dir, &fx.sandbox);
        assert_eq!((files.len(), errors.len()), (3, 0));
    }

    #[test]
    fn check_all_reports_every_broken_file() {
        let fx = fixture();
        fx.write("buttons/good.lua", "return { match = 'x', run = function() end }");
        fx.write("buttons/syntax.lua", "return {");
        fx.write(
            "scenarios/shape.lua",
            "return { start = 'nope', steps = { a = { body = 'x' } } }",
        );
        fx.write("templates/runtime.lua", "local x = nil\nreturn x()");
        fx.write(
            "cron/sched.lua",
            "return { schedule = 'every day', run = function() end }",
        );
        fx.write(
            "hooks/ok.lua",
            "return { model = 'res.partner', on = 'create', run = function() end }",
        );
        fx.write("on_message.lua", "return 1");
        let errors = check_all(&fx.dir);
        let mut paths: Vec<PathBuf> = errors.iter().map(|e| e.path.clone()).collect();
        paths.sort();
        let mut expected: Vec<PathBuf> = [
            "buttons/syntax.lua",
            "cron/sched.lua",
            "on_message.lua",
            "scenarios/shape.lua",
            "templates/runtime.lua",
        ]
        .iter()
        .map(|r| fx.dir.join(r))
        .collect();
        expected.sort();
        assert_eq!(paths, expected, "{errors:#?}");
        for e in &errors {
            assert!(
                e.message.starts_with(&format!("{}:", e.path.display())),
                "{}",
                e.message
            );
        }
        let runtime = errors.iter().find(|e| e.path.ends_with("runtime.lua")).unwrap();
        assert!(
            runtime
                .message
                .starts_with(&format!("{}:2:", fx.chunk("templates/runtime.lua")))
        );

        let missing = check_all(&fx.dir.join("nope"));
        assert_eq!(missing.len(), 1);
        assert!(missing[0].message.contains("cannot read the scripts directory"));
    }

    #[test]
    fn chunk_names_use_the_display_path() {
        assert_eq!(located("scripts/a.lua", "scripts/a.lua:3: x"), "scripts/a.lua:3: x");
        assert_eq!(located("scripts/a.lua", "boom"), "scripts/a.lua: boom");
        assert_eq!(
            located("scripts/buttons/abc.lua", "...ttons/abc.lua:2: e"),
            "scripts/buttons/abc.lua:2: e"
        );
        let fx = fixture();
        let rel_dir = Path::new("scripts");
        assert_eq!(
            classify(rel_dir, Path::new("scripts/buttons/x.lua")),
            Some((ScriptKind::Button, "x".into()))
        );
        assert!(is_lib_path(rel_dir, Path::new("scripts/lib/a/b.lua")));
        assert!(!is_lib_path(rel_dir, Path::new("scripts/library.lua")));
        drop(fx);
    }
}
