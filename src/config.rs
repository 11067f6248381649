//! `conf/walua.toml` → a typed [`Config`].
//!
//! Every secret may be written literally, as `env:NAME` (read from the environment) or as
//! `file:PATH` (read from a file, e.g. a systemd credential). In a `file:` path,
//! `$CREDENTIALS_DIRECTORY` (or `${CREDENTIALS_DIRECTORY}`) is replaced by that environment
//! variable, which systemd sets for units with `LoadCredential=`:
//! `access_token = "file:$CREDENTIALS_DIRECTORY/access_token"`. (systemd expands `%d` in
//! unit files, not in this TOML file.) Secrets are held in
//! [`Secret`], whose `Debug` and `Display` never show the value. Every error names the file
//! and the key at fault.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Errors found while reading the configuration; each names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read the configuration: {source}")]
    Read {
        /// The configuration file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or a key has the wrong type or is unknown.
    #[error("{file}: {message}")]
    Parse {
        /// The configuration file.
        file: PathBuf,
        /// toml's message, which names the key and the line.
        message: String,
    },
    /// A key is present but its value is not acceptable.
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// The dotted key, e.g. `whatsapp.access_token`.
        key: String,
        /// What is wrong with it (never the secret's value).
        message: String,
    },
}

/// A secret value (token, key, password). Never printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value known to be secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's value, for the one place that must use it (a header, an HMAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The whole daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from, named in errors.
    pub file: PathBuf,
    /// `[server]`: the HTTP listener and the admin API.
    pub server: ServerConfig,
    /// `[store]`: where the redb file lives.
    pub store: StoreConfig,
    /// `[whatsapp]`: the Meta Cloud API account.
    pub whatsapp: WhatsAppConfig,
    /// `[odoo]`: the optional Odoo connection.
    pub odoo: Option<OdooConfig>,
    /// `[scripts]`: where the Lua scripts live.
    pub scripts: ScriptsConfig,
    /// `[log]`: log format and level.
    pub log: LogConfig,
    /// `[vars]`: free-form values that scripts read as `env.vars`.
    pub vars: serde_json::Value,
    /// `[templates]`: where template definitions live and how often Meta's registry is read.
    pub templates: TemplatesConfig,
    /// `[console]`: the agents' web console (sessions, handover).
    pub console: ConsoleConfig,
    /// `[optout]`: the keywords customers stop and resume with, the confirmations, the
    /// exceptions (see [`crate::optout`]).
    pub optout: OptOutConfig,
}

/// `[optout]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOutConfig {
    /// Whole messages that stop every message the business starts.
    pub keywords: Vec<String>,
    /// Whole messages that stop marketing only.
    pub marketing_keywords: Vec<String>,
    /// Whole messages that opt back in.
    pub resume_keywords: Vec<String>,
    /// Template names and script names (`hooks/invoice_posted`) sent despite an opt-out of
    /// everything (e.g. invoices), chosen by the operator.
    pub exceptions: Vec<String>,
    /// The confirmation of a marketing opt-out.
    pub confirm_marketing: String,
    /// The confirmation of an opt-out of everything.
    pub confirm_all: String,
    /// The confirmation of an opt-in.
    pub confirm_resume: String,
}

impl Default for OptOutConfig {
    fn default() -> Self {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        OptOutConfig {
            keywords: list(&["STOP", "ARRET", "ARRÊT", "DESABONNER"]),
            marketing_keywords: list(&["STOP PROMOTIONS"]),
            resume_keywords: list(&["START", "ARRET FIN"]),
            exceptions: Vec::new(),
            confirm_marketing: crate::optout::CONFIRM_MARKETING.into(),
            confirm_all: crate::optout::CONFIRM_ALL.into(),
            confirm_resume: crate::optout::CONFIRM_RESUME.into(),
        }
    }
}

/// What button actions do while an agent has taken a conversation over
/// (`[console] handover_buttons`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandoverButtons {
    /// Button actions still run (a customer tapping "Valider" on an order still confirms it).
    Run,
    /// Nothing runs: the agent answers everything.
    Pause,
}

/// `[console]`.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Button actions during a handover (`handover_buttons`, default `run`).
    pub handover_buttons: HandoverButtons,
    /// A handover lapses after this long without being renewed (`handover_timeout`, default
    /// 4 h): the bot answers again.
    pub handover_timeout: Duration,
    /// How long a console session lasts without activity (`session_ttl`, default 12 h).
    pub session_ttl: Duration,
    /// Reverse proxies trusted to say the request came over HTTPS (`X-Forwarded-Proto`) and
    /// who the client is (`trusted_proxies`, IP addresses; default none).
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// `[templates]`.
#[derive(Debug, Clone)]
pub struct TemplatesConfig {
    /// The folder of template definitions (`*.toml`, see `templates/README.md`), beside the
    /// scripts (`dir`, default `templates`).
    pub dir: PathBuf,
    /// How often each WABA's templates are read from Meta (`sync_interval`, default 15 min,
    /// at least 1 min); status webhooks keep them current in between.
    pub sync_interval: Duration,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address the HTTP server binds (`listen`).
    pub listen: SocketAddr,
    /// Bearer token of the admin API; when absent the admin API only answers on loopback.
    pub admin_token: Option<Secret>,
    /// Largest webhook body accepted before answering 413 (`body_limit`, bytes).
    pub body_limit: usize,
    /// How long a graceful shutdown waits for in-flight work (`shutdown_timeout`).
    pub shutdown_timeout: Duration,
    /// Most client connections open at once (`max_connections`); one more is answered 503
    /// and closed. `None`: computed at start-up below the process's open-file limit, see
    /// [`crate::http::server::default_max_connections`].
    pub max_connections: Option<usize>,
    /// Time a client has to send a request's headers, counted from the connection's accept
    /// or from its first byte after an idle keep-alive pause (`header_read_timeout`).
    pub header_read_timeout: Duration,
    /// Time a client has to send a whole request body (`body_read_timeout`); 408 after it.
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this
    /// (`idle_timeout`). A response still being sent (a download, a live-update stream) is
    /// not idle.
    pub idle_timeout: Duration,
    /// Largest request head: HTTP/1 read buffer and HTTP/2 header list (`max_header_bytes`).
    pub max_header_bytes: usize,
    /// Most header fields in an HTTP/1 request (`max_headers`); more get 431.
    pub max_headers: usize,
    /// Requests at once on one HTTP/2 connection (`http2_max_concurrent_streams`).
    pub http2_max_concurrent_streams: u32,
    /// Interval of HTTP/2 keep-alive pings on a connection (`http2_keep_alive_interval`).
    pub http2_keep_alive_interval: Duration,
    /// An HTTP/2 connection whose ping is not answered within this is closed
    /// (`http2_keep_alive_timeout`).
    pub http2_keep_alive_timeout: Duration,
}

/// `[store]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The redb file (`path`); its directory is created when missing. The delivery
    /// journal lives beside it (`walua.redb` → `walua.journal/`).
    pub path: PathBuf,
    /// A journal segment is sealed at this size and deleted once fully applied
    /// (`journal_segment_bytes`, default 64 MiB).
    pub journal_segment_bytes: u64,
}

/// One business number walua serves: `[whatsapp]` itself, or each `[[whatsapp.accounts]]`.
#[derive(Debug, Clone)]
pub struct WhatsAppAccount {
    /// How scripts, the API and logs name it (`name`; default: the phone number id).
    pub name: String,
    /// The Graph API phone number id messages are sent from (empty only in a dry run
    /// without a number).
    pub phone_number_id: String,
    /// Permanent (system user) access token for the Graph API.
    pub access_token: Option<Secret>,
    /// Secret of the Meta app that signs this number's webhook deliveries
    /// (X-Hub-Signature-256).
    pub app_secret: Option<Secret>,
    /// Token Meta echoes back during the webhook subscription check of this number's app.
    pub verify_token: Option<Secret>,
    /// Outbound rate limit of this number (messages per second).
    pub max_per_second: u32,
    /// The region (ISO 3166, e.g. `SN`) of numbers written without a country code and sent
    /// from this number: `[whatsapp] default_country`, or the account's own.
    pub default_country: Option<String>,
    /// The WhatsApp Business Account that owns this number's templates (`waba_id`, per
    /// account or inherited from `[whatsapp]`); several numbers may share one. `None`: no
    /// template management for this number (sends are not checked against Meta's registry).
    pub waba_id: Option<String>,
}

/// `[whatsapp]`.
#[derive(Debug, Clone)]
pub struct WhatsAppConfig {
    /// The numbers walua serves, never empty: the `[whatsapp]` number alone, or every
    /// `[[whatsapp.accounts]]` (which inherit `[whatsapp]`'s `app_secret`, `verify_token` and
    /// `max_per_second`). The first is the default sender.
    pub accounts: Vec<WhatsAppAccount>,
    /// Graph API base URL, version included; tests point it at a fake.
    pub api_base: String,
    /// Record outbound messages with their exact JSON, send nothing.
    pub dry_run: bool,
    /// Send free-form messages even when the 24 h customer-service window is closed.
    pub allow_outside_window: bool,
    /// Accept media `link`s to localhost or private addresses (local setups, tests): Meta's
    /// servers cannot fetch them, so by default such sends are refused before queueing.
    pub allow_private_links: bool,
    /// How long a message keeps being retried on 429 / 5xx / timeouts before it fails.
    pub retry_horizon: Duration,
    /// Timeout of one Graph API request.
    pub request_timeout: Duration,
    /// Largest inbound media file downloaded and kept beside the store (bytes).
    pub media_max_bytes: u64,
    /// Messages that may go to one recipient back to back (Meta's pair rate).
    pub pair_burst: u32,
    /// After the burst, one message per this interval to the same recipient.
    pub pair_interval: Duration,
    /// First retry delay; doubles each attempt (±25 % jitter), capped at 10 minutes.
    pub retry_base: Duration,
    /// Sends in flight at once.
    pub max_in_flight: usize,
    /// Speak HTTP/2 without TLS (h2c, "prior knowledge") to an `http://` `api_base`: a local
    /// fake or proxy that supports it. An `https://` base (Meta) negotiates HTTP/2 by itself.
    pub http2_cleartext: bool,
    /// The Meta app id (`app_id`): template header examples (images, documents, videos) are
    /// uploaded through Meta's resumable upload API, which is addressed by app.
    pub app_id: Option<String>,
}

impl WhatsAppConfig {
    /// Every distinct WABA of the accounts, with the first account that names it (whose
    /// access token manages its templates).
    pub fn wabas(&self) -> Vec<(&str, &WhatsAppAccount)> {
        let mut out: Vec<(&str, &WhatsAppAccount)> = Vec::new();
        for a in &self.accounts {
            if let Some(w) = a.waba_id.as_deref()
                && !out.iter().any(|(o, _)| *o == w)
            {
                out.push((w, a));
            }
        }
        out
    }

    /// The app secrets that may sign a webhook delivery (one per Meta app, without repeats).
    pub fn app_secrets(&self) -> Vec<&Secret> {
        let mut out: Vec<&Secret> = Vec::new();
        for s in self.accounts.iter().filter_map(|a| a.app_secret.as_ref()) {
            if !out.iter().any(|o| o.expose() == s.expose()) {
                out.push(s);
            }
        }
        out
    }

    /// The tokens Meta's subscription check may echo (one per Meta app).
    pub fn verify_tokens(&self) -> impl Iterator<Item = &Secret> {
        self.accounts.iter().filter_map(|a| a.verify_token.as_ref())
    }
}

/// `[odoo]`.
#[derive(Debug, Clone)]
pub struct OdooConfig {
    /// Base URL of the Odoo server, e.g. `http://localhost:8069`.
    pub url: String,
    /// Database name.
    pub db: String,
    /// Login of the bot user.
    pub login: String,
    /// API key (preferred) of the bot user.
    pub api_key: Option<Secret>,
    /// Password, allowing a web session for `/report/pdf` as well.
    pub password: Option<Secret>,
    /// How often hook scripts poll Odoo.
    pub poll_interval: Duration,
    /// Secret that push hooks (`POST /hooks/odoo/{name}?token=…`) must carry.
    pub hook_token: Option<Secret>,
    /// Timeout of one JSON-RPC call.
    pub timeout: Duration,
    /// How far back each poll looks again for changes committed late: Odoo stamps
    /// `write_date` with the start of the transaction, which may commit up to Odoo's
    /// `limit_time_real` (120 s by default) later. Default 180 s; at least 30 s.
    pub rescan_window: Duration,
    /// Sends about an Odoo record (`opts.record`, `record` in the API) and their failures are
    /// noted on the record's chatter, and `env.odoo.log` works (default true).
    pub chatter: bool,
    /// Inbound WhatsApp messages of a contact linked to a partner are noted on the partner's
    /// chatter (default false).
    pub chatter_inbound: bool,
    /// Keep walua's index of the partners' phone numbers (contacts get `partner_id`;
    /// default true).
    pub partners: bool,
}

/// `[scripts]`.
#[derive(Debug, Clone)]
pub struct ScriptsConfig {
    /// Root of the scripts tree (buttons/, scenarios/, templates/, hooks/, cron/, lib/).
    pub dir: PathBuf,
    /// Lua worker threads (each owns one Lua state).
    pub workers: usize,
    /// CPU budget of one script run.
    pub cpu_budget: Duration,
    /// Memory budget of one Lua state (bytes).
    pub memory_budget: usize,
    /// Wall-clock cap of one script run, waits inside `env.*` included.
    pub run_timeout: Duration,
    /// Watch the directory and reload scripts when they are saved.
    pub hot_reload: bool,
    /// Time zone of cron jobs that name none (IANA name, e.g. `Africa/Dakar`).
    pub timezone: chrono_tz::Tz,
    /// How long a run that failed on a transient error (Odoo down, Graph 5xx) is retried
    /// before it is parked for the operator.
    pub retry_for: Duration,
    /// The first retry's delay, doubled per attempt up to 10 minutes.
    pub retry_first: Duration,
    /// A customer's message held by a transient failure gets the fallback reply after this.
    pub fallback_after: Duration,
    /// The fallback reply's text, unless `scripts/templates/fallback_reply.lua` shapes it.
    pub fallback_reply: String,
    /// A parked customer message can be replayed for this long after it arrived (the 24 h
    /// window): an answer days later would be worse than none.
    pub reply_expiry: Duration,
}

/// The fallback reply's French default.
pub const FALLBACK_REPLY: &str = "Nous avons bien reçu votre message. Un souci technique passager nous empêche d'y répondre tout de suite : nous vous répondons dès que possible.";

impl ScriptsConfig {
    /// How failed runs are retried (`retry_first`, doubled, at most 10 min, for
    /// `retry_for`), then parked.
    pub fn retry_policy(&self) -> crate::store::parked::RetryPolicy {
        crate::store::parked::RetryPolicy {
            first: self.retry_first,
            max: Duration::from_secs(600).max(self.retry_first),
            retry_for: self.retry_for,
        }
    }

    /// The budgets of one run.
    pub fn limits(&self) -> crate::script::sandbox::Limits {
        crate::script::sandbox::Limits {
            cpu: self.cpu_budget,
            memory: self.memory_budget,
            run_timeout: self.run_timeout.max(self.cpu_budget),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `text` for terminals, `json` for log collectors.
    pub format: LogFormat,
    /// Default filter when `RUST_LOG` is not set, e.g. `info` or `walua=debug`.
    pub level: String,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

// ---- raw, as written in the file ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    whatsapp: RawWhatsApp,
    odoo: Option<RawOdoo>,
    #[serde(default)]
    scripts: RawScripts,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    vars: toml::Table,
    #[serde(default)]
    templates: RawTemplates,
    #[serde(default)]
    console: RawConsole,
    #[serde(default)]
    optout: RawOptOut,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOptOut {
    keywords: Option<Vec<String>>,
    marketing_keywords: Option<Vec<String>>,
    resume_keywords: Option<Vec<String>>,
    exceptions: Option<Vec<String>>,
    confirm_marketing: Option<String>,
    confirm_all: Option<String>,
    confirm_resume: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    handover_buttons: Option<HandoverButtons>,
    handover_timeout: Option<String>,
    session_ttl: Option<String>,
    trusted_proxies: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTemplates {
    dir: Option<PathBuf>,
    sync_interval: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    admin_token: Option<String>,
    body_limit: Option<usize>,
    shutdown_timeout: Option<String>,
    max_connections: Option<usize>,
    header_read_timeout: Option<String>,
    body_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    http2_max_concurrent_streams: Option<u32>,
    http2_keep_alive_interval: Option<String>,
    http2_keep_alive_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<PathBuf>,
    journal_segment_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: Option<String>,
    phone_number_id: Option<String>,
    access_token: Option<String>,
    app_secret: Option<String>,
    verify_token: Option<String>,
    max_per_second: Option<u32>,
    default_country: Option<String>,
    waba_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWhatsApp {
    accounts: Option<Vec<RawAccount>>,
    phone_number_id: Option<String>,
    access_token: Option<String>,
    app_secret: Option<String>,
    verify_token: Option<String>,
    api_base: Option<String>,
    dry_run: Option<bool>,
    max_per_second: Option<u32>,
    allow_outside_window: Option<bool>,
    allow_private_links: Option<bool>,
    retry_horizon: Option<String>,
    request_timeout: Option<String>,
    media_max_bytes: Option<u64>,
    pair_burst: Option<u32>,
    pair_interval: Option<String>,
    retry_base: Option<String>,
    max_in_flight: Option<usize>,
    http2_cleartext: Option<bool>,
    default_country: Option<String>,
    waba_id: Option<String>,
    app_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOdoo {
    url: Option<String>,
    db: Option<String>,
    login: Option<String>,
    api_key: Option<String>,
    password: Option<String>,
    poll_interval: Option<String>,
    hook_token: Option<String>,
    timeout: Option<String>,
    rescan_window: Option<String>,
    chatter: Option<bool>,
    chatter_inbound: Option<bool>,
    partners: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScripts {
    dir: Option<PathBuf>,
    workers: Option<usize>,
    cpu_budget: Option<String>,
    memory_budget: Option<usize>,
    run_timeout: Option<String>,
    hot_reload: Option<bool>,
    timezone: Option<String>,
    retry_for: Option<String>,
    retry_first: Option<String>,
    fallback_after: Option<String>,
    fallback_reply: Option<String>,
    reply_expiry: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

/// A Graph API id (`waba_id`, `app_id`): digits only, or refused with the key named.
fn graph_id(cx: &Cx, key: &str, value: Option<String>) -> Result<Option<String>, ConfigError> {
    match value.map(|v| v.trim().to_string()) {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(v)),
        Some(v) => Err(cx.invalid(key, format!("`{v}` is not a Graph API id (digits only)"))),
    }
}

/// The Graph API base used when `api_base` is not set: Meta's host with the version walua
/// is built for ([`crate::whatsapp::version::DEFAULT_VERSION`]).
pub fn default_api_base() -> String {
    format!(
        "https://graph.facebook.com/{}",
        crate::whatsapp::version::DEFAULT_VERSION
    )
}

impl Config {
    /// Reads and validates a configuration file, resolving every secret reference.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(path, &text)
    }

    /// Parses configuration text; `file` is only used to name the source in errors.
    pub fn from_toml(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_path_buf(),
            message: parse_message(text, &e),
        })?;
        let cx = Cx { file };

        let listen_text = raw.server.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_text
            .parse::<SocketAddr>()
            .map_err(|e| cx.invalid("server.listen", format!("`{listen_text}` is not an address:port ({e})")))?;
        let server = ServerConfig {
            listen,
            admin_token: cx.secret("server.admin_token", raw.server.admin_token)?,
            body_limit: match raw.server.body_limit {
                Some(0) => return Err(cx.invalid("server.body_limit", "must be greater than 0")),
                Some(n) => n,
                None => 1024 * 1024,
            },
            shutdown_timeout: cx.duration("server.shutdown_timeout", raw.server.shutdown_timeout, "10s")?,
            max_connections: match raw.server.max_connections {
                Some(0) => return Err(cx.invalid("server.max_connections", "must be greater than 0")),
                n => n,
            },
            header_read_timeout: cx.positive_duration(
                "server.header_read_timeout",
                raw.server.header_read_timeout,
                "10s",
            )?,
            body_read_timeout: cx.positive_duration("server.body_read_timeout", raw.server.body_read_timeout, "60s")?,
            idle_timeout: cx.positive_duration("server.idle_timeout", raw.server.idle_timeout, "75s")?,
            max_header_bytes: match raw.server.max_header_bytes {
                Some(n) if !(8192..=1024 * 1024).contains(&n) => {
                    return Err(cx.invalid("server.max_header_bytes", "must be between 8192 and 1048576 bytes"));
                }
                Some(n) => n,
                None => 32 * 1024,
            },
            max_headers: match raw.server.max_headers {
                Some(n) if !(8..=10_000).contains(&n) => {
                    return Err(cx.invalid("server.max_headers", "must be between 8 and 10000"));
                }
                Some(n) => n,
                None => 100,
            },
            http2_max_concurrent_streams: match raw.server.http2_max_concurrent_streams {
                Some(0) => {
                    return Err(cx.invalid("server.http2_max_concurrent_streams", "must be greater than 0"));
                }
                Some(n) => n,
                None => 100,
            },
            http2_keep_alive_interval: cx.positive_duration(
                "server.http2_keep_alive_interval",
                raw.server.http2_keep_alive_interval,
                "30s",
            )?,
            http2_keep_alive_timeout: cx.positive_duration(
                "server.http2_keep_alive_timeout",
                raw.server.http2_keep_alive_timeout,
                "20s",
            )?,
        };

        let store = StoreConfig {
            path: raw.store.path.unwrap_or_else(|| PathBuf::from("var/walua.redb")),
            journal_segment_bytes: match raw.store.journal_segment_bytes {
                Some(n) if n < 4096 => {
                    return Err(cx.invalid("store.journal_segment_bytes", "must be at least 4096"));
                }
                Some(n) => n,
                None => crate::webhook::journal::SEGMENT_BYTES,
            },
        };

        let w = raw.whatsapp;
        let raw_has_accounts = w.accounts.is_some();
        let dry_run = w.dry_run.unwrap_or(true);
        let max_per_second = |key: &str, n: Option<u32>| match n {
            Some(0) => Err(cx.invalid(key, "must be greater than 0")),
            n => Ok(n),
        };
        let default_rate = max_per_second("whatsapp.max_per_second", w.max_per_second)?.unwrap_or(80);
        let default_country = match w.default_country.as_deref() {
            Some(c) => {
                Some(crate::phone::region(c).map_err(|e| cx.invalid("whatsapp.default_country", e.to_string()))?)
            }
            None => None,
        };
        let accounts = match w.accounts {
            None => vec![WhatsAppAccount {
                default_country: default_country.clone(),
                name: w.phone_number_id.clone().unwrap_or_default(),
                phone_number_id: w.phone_number_id.unwrap_or_default(),
                access_token: cx.secret("whatsapp.access_token", w.access_token)?,
                app_secret: cx.secret("whatsapp.app_secret", w.app_secret)?,
                verify_token: cx.secret("whatsapp.verify_token", w.verify_token)?,
                max_per_second: default_rate,
                waba_id: graph_id(&cx, "whatsapp.waba_id", w.waba_id.clone())?,
            }],
            Some(raw_accounts) => {
                for (key, set) in [
                    ("whatsapp.phone_number_id", w.phone_number_id.is_some()),
                    ("whatsapp.access_token", w.access_token.is_some()),
                ] {
                    if set {
                        return Err(cx.invalid(
                            key,
                            "set it in each [[whatsapp.accounts]] instead: with accounts, [whatsapp] holds what they share",
                        ));
                    }
                }
                if raw_accounts.is_empty() {
                    return Err(cx.invalid("whatsapp.accounts", "is empty: give at least one account"));
                }
                let mut accounts: Vec<WhatsAppAccount> = Vec::with_capacity(raw_accounts.len());
                for (i, a) in raw_accounts.into_iter().enumerate() {
                    let key = |k: &str| format!("whatsapp.accounts[{i}].{k}");
                    let pnid = a
                        .phone_number_id
                        .map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty())
                        .ok_or_else(|| cx.invalid(&key("phone_number_id"), "missing"))?;
                    let name = match a.name.map(|n| n.trim().to_string()) {
                        Some(n) if n.is_empty() => return Err(cx.invalid(&key("name"), "is empty")),
                        Some(n) => n,
                        None => pnid.clone(),
                    };
                    for other in &accounts {
                        if other.phone_number_id == pnid {
                            return Err(cx.invalid(&key("phone_number_id"), format!("`{pnid}` is listed twice")));
                        }
                        if other.name == name || other.phone_number_id == name || other.name == pnid {
                            return Err(cx.invalid(
                                &key("name"),
                                format!(
                                    "`{name}` names another account too: names and phone number ids must be unique"
                                ),
                            ));
                        }
                    }
                    // An inherited secret that cannot be read is reported at `[whatsapp]`'s key.
                    let inherited = |k: &str, own: Option<String>, shared: &Option<String>| match own {
                        Some(own) => cx.secret(&key(k), Some(own)),
                        None => cx.secret(&format!("whatsapp.{k}"), shared.clone()),
                    };
                    accounts.push(WhatsAppAccount {
                        access_token: cx.secret(&key("access_token"), a.access_token)?,
                        app_secret: inherited("app_secret", a.app_secret, &w.app_secret)?,
                        verify_token: inherited("verify_token", a.verify_token, &w.verify_token)?,
                        max_per_second: max_per_second(&key("max_per_second"), a.max_per_second)?
                            .unwrap_or(default_rate),
                        default_country: match a.default_country {
                            Some(c) => Some(
                                crate::phone::region(&c)
                                    .map_err(|e| cx.invalid(&key("default_country"), e.to_string()))?,
                            ),
                            None => default_country.clone(),
                        },
                        waba_id: match a.waba_id {
                            Some(own) => graph_id(&cx, &key("waba_id"), Some(own))?,
                            None => graph_id(&cx, "whatsapp.waba_id", w.waba_id.clone())?,
                        },
                        name,
                        phone_number_id: pnid,
                    });
                }
                accounts
            }
        };
        let whatsapp = WhatsAppConfig {
            accounts,
            api_base: w
                .api_base
                .unwrap_or_else(default_api_base)
                .trim_end_matches('/')
                .to_string(),
            dry_run,
            allow_outside_window: w.allow_outside_window.unwrap_or(false),
            allow_private_links: w.allow_private_links.unwrap_or(false),
            retry_horizon: cx.duration("whatsapp.retry_horizon", w.retry_horizon, "1h")?,
            request_timeout: cx.duration("whatsapp.request_timeout", w.request_timeout, "30s")?,
            media_max_bytes: w.media_max_bytes.unwrap_or(16 * 1024 * 1024),
            pair_burst: w.pair_burst.unwrap_or(10).max(1),
            pair_interval: cx.duration("whatsapp.pair_interval", w.pair_interval, "6s")?,
            retry_base: cx.duration("whatsapp.retry_base", w.retry_base, "2s")?,
            max_in_flight: w.max_in_flight.unwrap_or(32).max(1),
            http2_cleartext: w.http2_cleartext.unwrap_or(false),
            app_id: graph_id(&cx, "whatsapp.app_id", w.app_id)?,
        };
        if url::Url::parse(&whatsapp.api_base).is_err() {
            return Err(cx.invalid("whatsapp.api_base", format!("`{}` is not a URL", whatsapp.api_base)));
        }
        if !dry_run {
            for (i, a) in whatsapp.accounts.iter().enumerate() {
                let key = |k: &str| {
                    if raw_has_accounts {
                        format!("whatsapp.accounts[{i}].{k}")
                    } else {
                        format!("whatsapp.{k}")
                    }
                };
                if a.phone_number_id.is_empty() {
                    return Err(cx.invalid(&key("phone_number_id"), "required unless dry_run = true"));
                }
                for (k, value) in [
                    ("access_token", &a.access_token),
                    ("app_secret", &a.app_secret),
                    ("verify_token", &a.verify_token),
                ] {
                    if value.is_none() {
                        return Err(cx.invalid(&key(k), "required unless dry_run = true"));
                    }
                }
            }
            // Without a token the admin API trusts loopback peers, and a reverse proxy on the
            // same host makes every request a loopback one: a live daemon always has a token.
            if server.admin_token.is_none() {
                return Err(cx.invalid(
                    "server.admin_token",
                    "required unless dry_run = true (the admin API sends messages for real; generate one with e.g. `openssl rand -hex 32`)",
                ));
            }
        }

        let odoo = match raw.odoo {
            None => None,
            Some(o) => {
                let url = o.url.ok_or_else(|| cx.invalid("odoo.url", "missing"))?;
                if url::Url::parse(&url).is_err() {
                    return Err(cx.invalid("odoo.url", format!("`{url}` is not a URL")));
                }
                let api_key = cx.secret("odoo.api_key", o.api_key)?;
                let password = cx.secret("odoo.password", o.password)?;
                if api_key.is_none() && password.is_none() {
                    return Err(cx.invalid("odoo.api_key", "set odoo.api_key (or odoo.password)"));
                }
                Some(OdooConfig {
                    url: url.trim_end_matches('/').to_string(),
                    db: o.db.ok_or_else(|| cx.invalid("odoo.db", "missing"))?,
                    login: o.login.ok_or_else(|| cx.invalid("odoo.login", "missing"))?,
                    api_key,
                    password,
                    poll_interval: cx.duration("odoo.poll_interval", o.poll_interval, "30s")?,
                    hook_token: cx.secret("odoo.hook_token", o.hook_token)?,
                    timeout: cx.duration("odoo.timeout", o.timeout, "30s")?,
                    rescan_window: match cx.duration("odoo.rescan_window", o.rescan_window, "180s")? {
                        d if d < Duration::from_secs(30) => {
                            return Err(cx.invalid(
                                "odoo.rescan_window",
                                "must be at least 30s; keep it above Odoo's limit_time_real (120s by default): a transaction may commit that late",
                            ));
                        }
                        d => d,
                    },
                    chatter: o.chatter.unwrap_or(true),
                    chatter_inbound: o.chatter_inbound.unwrap_or(false),
                    partners: o.partners.unwrap_or(true),
                })
            }
        };

        let scripts = ScriptsConfig {
            dir: raw.scripts.dir.unwrap_or_else(|| PathBuf::from("scripts")),
            workers: raw.scripts.workers.unwrap_or(2).clamp(1, 64),
            cpu_budget: cx.duration("scripts.cpu_budget", raw.scripts.cpu_budget, "200ms")?,
            memory_budget: match raw.scripts.memory_budget {
                Some(n) if n < 1024 * 1024 => {
                    return Err(cx.invalid("scripts.memory_budget", "must be at least 1048576 bytes"));
                }
                Some(n) => n,
                None => 32 * 1024 * 1024,
            },
            run_timeout: cx.duration("scripts.run_timeout", raw.scripts.run_timeout, "60s")?,
            hot_reload: raw.scripts.hot_reload.unwrap_or(true),
            timezone: match raw.scripts.timezone {
                None => chrono_tz::UTC,
                Some(name) => name.parse().map_err(|_| {
                    cx.invalid(
                        "scripts.timezone",
                        format!("`{name}` is not an IANA time zone (e.g. Africa/Dakar)"),
                    )
                })?,
            },
            retry_for: cx.duration("scripts.retry_for", raw.scripts.retry_for, "1h")?,
            retry_first: cx.duration("scripts.retry_first", raw.scripts.retry_first, "10s")?,
            fallback_after: cx.duration("scripts.fallback_after", raw.scripts.fallback_after, "2m")?,
            fallback_reply: match raw.scripts.fallback_reply {
                Some(t) if t.trim().is_empty() => {
                    return Err(cx.invalid("scripts.fallback_reply", "must not be empty"));
                }
                Some(t) => t,
                None => FALLBACK_REPLY.to_string(),
            },
            reply_expiry: cx.duration("scripts.reply_expiry", raw.scripts.reply_expiry, "24h")?,
        };
        let log = LogConfig {
            format: raw.log.format.unwrap_or(LogFormat::Text),
            level: raw.log.level.unwrap_or_else(|| "info".into()),
        };
        let vars = serde_json::to_value(&raw.vars).map_err(|e| cx.invalid("vars", e.to_string()))?;
        let templates = TemplatesConfig {
            dir: raw.templates.dir.unwrap_or_else(|| PathBuf::from("templates")),
            sync_interval: match cx.duration("templates.sync_interval", raw.templates.sync_interval, "15m")? {
                d if d < Duration::from_secs(60) => {
                    return Err(cx.invalid(
                        "templates.sync_interval",
                        "must be at least 1m (Meta rate-limits the template API)",
                    ));
                }
                d => d,
            },
        };

        let console = ConsoleConfig {
            handover_buttons: raw.console.handover_buttons.unwrap_or(HandoverButtons::Run),
            handover_timeout: cx.positive_duration("console.handover_timeout", raw.console.handover_timeout, "4h")?,
            session_ttl: cx.positive_duration("console.session_ttl", raw.console.session_ttl, "12h")?,
            trusted_proxies: raw
                .console
                .trusted_proxies
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    p.trim()
                        .parse()
                        .map_err(|_| cx.invalid("console.trusted_proxies", format!("`{p}` is not an IP address")))
                })
                .collect::<Result<_, _>>()?,
        };
        let optout = {
            let d = OptOutConfig::default();
            let o = raw.optout;
            let cfg = OptOutConfig {
                keywords: o.keywords.unwrap_or(d.keywords),
                marketing_keywords: o.marketing_keywords.unwrap_or(d.marketing_keywords),
                resume_keywords: o.resume_keywords.unwrap_or(d.resume_keywords),
                exceptions: o.exceptions.unwrap_or_default(),
                confirm_marketing: o.confirm_marketing.unwrap_or(d.confirm_marketing),
                confirm_all: o.confirm_all.unwrap_or(d.confirm_all),
                confirm_resume: o.confirm_resume.unwrap_or(d.confirm_resume),
            };
            // A keyword in two lists would be ambiguous; an empty one would match nothing.
            let mut seen = std::collections::HashMap::new();
            for (list, words) in [
                ("optout.keywords", &cfg.keywords),
                ("optout.marketing_keywords", &cfg.marketing_keywords),
                ("optout.resume_keywords", &cfg.resume_keywords),
            ] {
                for w in words {
                    let f = crate::optout::fold(w);
                    if f.is_empty() {
                        return Err(cx.invalid(list, format!("`{w}` is empty once folded; give words")));
                    }
                    if let Some(other) = seen.insert(f.clone(), list)
                        && other != list
                    {
                        return Err(cx.invalid(list, format!("`{w}` is also in {other}")));
                    }
                }
            }
            for (key, text) in [
                ("optout.confirm_marketing", &cfg.confirm_marketing),
                ("optout.confirm_all", &cfg.confirm_all),
                ("optout.confirm_resume", &cfg.confirm_resume),
            ] {
                if text.trim().is_empty() || text.chars().count() > 4096 {
                    return Err(cx.invalid(key, "must be a text of 1 to 4096 characters"));
                }
            }
            cfg
        };
        Ok(Config {
            optout,
            file: file.to_path_buf(),
            server,
            store,
            whatsapp,
            odoo,
            scripts,
            log,
            vars,
            templates,
            console,
        })
    }

    /// The configuration the binary embeds: dry-run, loopback, no secret needed.
    pub fn embedded_default() -> Config {
        Config::from_toml(Path::new("<embedded conf/walua.toml>"), EMBEDDED_CONFIG)
            .expect("the embedded configuration is valid")
    }

    /// Every secret in this configuration, so that tests and log filters can look for them.
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut out = Vec::new();
        out.extend(self.server.admin_token.iter());
        for a in &self.whatsapp.accounts {
            out.extend(a.access_token.iter());
            out.extend(a.app_secret.iter());
            out.extend(a.verify_token.iter());
        }
        if let Some(o) = &self.odoo {
            out.extend(o.api_key.iter());
            out.extend(o.password.iter());
            out.extend(o.hook_token.iter());
        }
        out
    }
}

/// The example configuration shipped as `conf/walua.toml`, embedded in the binary.
pub const EMBEDDED_CONFIG: &str = include_str!("../conf/walua.toml");

struct Cx<'a> {
    file: &'a Path,
}

impl Cx<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn secret(&self, key: &str, raw: Option<String>) -> Result<Option<Secret>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let value = if let Some(name) = raw.strip_prefix("env:") {
            std::env::var(name)
                .map_err(|_| self.invalid(key, format!("environment variable {name} is not set (or not UTF-8)")))?
        } else if let Some(path) = raw.strip_prefix("file:") {
            let path = &expand_credentials_dir(path).map_err(|m| self.invalid(key, m))?;
            let text = std::fs::read_to_string(path)
                .map_err(|e| self.invalid(key, format!("cannot read secret file {path}: {e}")))?;
            text.trim_end_matches(['\n', '\r']).to_string()
        } else {
            raw
        };
        if value.is_empty() {
            return Err(self.invalid(key, "is empty"));
        }
        Ok(Some(Secret(value)))
    }

    /// A duration that must not be zero (a timeout of 0 would close everything at once).
    fn positive_duration(&self, key: &str, raw: Option<String>, default: &str) -> Result<Duration, ConfigError> {
        match self.duration(key, raw, default)? {
            d if d.is_zero() => Err(self.invalid(key, "must be greater than 0")),
            d => Ok(d),
        }
    }

    fn duration(&self, key: &str, raw: Option<String>, default: &str) -> Result<Duration, ConfigError> {
        let text = raw.unwrap_or_else(|| default.to_string());
        parse_duration(&text).ok_or_else(|| {
            self.invalid(
                key,
                format!("`{text}` is not a duration (use e.g. 500ms, 30s, 5m, 1h, 1d)"),
            )
        })
    }
}

/// toml's message with the line and column, WITHOUT the source excerpt toml's `Display`
/// adds: that excerpt is the offending line, which may hold a literal secret.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            // Name the key (never its value): `[section]` + the left side of `key = ...`.
            let line_text = text.lines().nth(line - 1).unwrap_or("");
            let key = line_text
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty());
            let section = before
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| l.starts_with('['))
                .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
            match (section, key) {
                (Some(sec), Some(k)) => format!("line {line}, column {column}, key {sec}.{k}: {message}"),
                (None, Some(k)) => format!("line {line}, column {column}, key {k}: {message}"),
                _ => format!("line {line}, column {column}: {message}"),
            }
        }
        None => message.to_string(),
    }
}

/// Replaces `$CREDENTIALS_DIRECTORY` / `${CREDENTIALS_DIRECTORY}` in a `file:` path by the
/// environment variable systemd sets for units with `LoadCredential=`.
pub fn expand_credentials_dir(path: &str) -> Result<String, String> {
    const NAMES: [&str; 2] = ["${CREDENTIALS_DIRECTORY}", "$CREDENTIALS_DIRECTORY"];
    if !NAMES.iter().any(|n| path.contains(n)) {
        return Ok(path.to_string());
    }
    let dir = std::env::var("CREDENTIALS_DIRECTORY").map_err(|_| {
        format!(
            "{path} uses $CREDENTIALS_DIRECTORY, which is not set (it is set by systemd for units with LoadCredential=)"
        )
    })?;
    let dir = dir.trim_end_matches('/');
    Ok(NAMES.iter().fold(path.to_string(), |p, n| p.replace(n, dir)))
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `1d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" | "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("test.toml"), text)
    }

    #[test]
    fn embedded_default_is_dry_run_and_needs_no_secret() {
        let c = Config::embedded_default();
        assert!(c.whatsapp.dry_run);
        assert!(c.secrets().is_empty());
    }

    #[test]
    fn missing_env_secret_names_key_and_file_but_not_value() {
        let err = load("[whatsapp]\naccess_token = \"env:WALUA_TEST_SURELY_UNSET_VAR\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("test.toml"), "{text}");
        assert!(text.contains("whatsapp.access_token"), "{text}");
        assert!(text.contains("WALUA_TEST_SURELY_UNSET_VAR"), "{text}");
    }

    #[test]
    fn file_secret_is_read_and_never_displayed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cr3t-value\n").unwrap();
        let c = load(&format!("[server]\nadmin_token = \"file:{}\"\n", p.display())).unwrap();
        let token = c.server.admin_token.as_ref().unwrap();
        assert_eq!(token.expose(), "s3cr3t-value");
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
    }

    #[test]
    fn credentials_directory_is_expanded_in_file_paths() {
        assert_eq!(expand_credentials_dir("/etc/x").unwrap(), "/etc/x");
        // The variable is only read when the path names it; this test owns that name.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin_token"), "from-credential\n").unwrap();
        // SAFETY: no other test reads or writes CREDENTIALS_DIRECTORY.
        unsafe { std::env::set_var("CREDENTIALS_DIRECTORY", dir.path()) };
        let c = load("[server]\nadmin_token = \"file:$CREDENTIALS_DIRECTORY/admin_token\"\n").unwrap();
        assert_eq!(c.server.admin_token.unwrap().expose(), "from-credential");
        let c = load("[server]\nadmin_token = \"file:${CREDENTIALS_DIRECTORY}/admin_token\"\n").unwrap();
        assert_eq!(c.server.admin_token.unwrap().expose(), "from-credential");
        unsafe { std::env::remove_var("CREDENTIALS_DIRECTORY") };
        let err = load("[server]\nadmin_token = \"file:$CREDENTIALS_DIRECTORY/admin_token\"\n").unwrap_err();
        assert!(err.to_string().contains("CREDENTIALS_DIRECTORY"), "{err}");
    }

    #[test]
    fn live_mode_requires_the_meta_secrets() {
        let err = load("[whatsapp]\ndry_run = false\nphone_number_id = \"1\"\n").unwrap_err();
        assert!(err.to_string().contains("whatsapp.access_token"), "{err}");
    }

    #[test]
    fn live_mode_requires_an_admin_token() {
        let live = "[whatsapp]\ndry_run = false\nphone_number_id = \"1\"\naccess_token = \"t\"\napp_secret = \"s\"\nverify_token = \"v\"\n";
        let err = load(live).unwrap_err().to_string();
        assert!(err.contains("server.admin_token"), "{err}");
        let c = load(&format!("[server]\nadmin_token = \"adm\"\n{live}")).unwrap();
        assert!(!c.whatsapp.dry_run);
        // A dry run may go without: the admin API then answers unproxied loopback peers only.
        assert!(
            load("[whatsapp]\ndry_run = true\n")
                .unwrap()
                .server
                .admin_token
                .is_none()
        );
    }

    #[test]
    fn http_limits_have_defaults_and_refuse_nonsense() {
        let s = load("").unwrap().server;
        assert_eq!(s.max_connections, None, "computed from the fd limit at start-up");
        assert_eq!(s.header_read_timeout, Duration::from_secs(10));
        assert_eq!(s.body_read_timeout, Duration::from_secs(60));
        assert_eq!(s.idle_timeout, Duration::from_secs(75));
        assert_eq!((s.max_header_bytes, s.max_headers), (32 * 1024, 100));
        assert_eq!(s.http2_max_concurrent_streams, 100);
        let s = load("[server]\nmax_connections = 50\nidle_timeout = \"2m\"\n")
            .unwrap()
            .server;
        assert_eq!(
            (s.max_connections, s.idle_timeout),
            (Some(50), Duration::from_secs(120))
        );
        for (text, key) in [
            ("max_connections = 0", "server.max_connections"),
            ("header_read_timeout = \"0s\"", "server.header_read_timeout"),
            ("body_read_timeout = \"soon\"", "server.body_read_timeout"),
            ("idle_timeout = \"0ms\"", "server.idle_timeout"),
            ("max_header_bytes = 100", "server.max_header_bytes"),
            ("max_headers = 0", "server.max_headers"),
            (
                "http2_max_concurrent_streams = 0",
                "server.http2_max_concurrent_streams",
            ),
            ("http2_keep_alive_timeout = \"0s\"", "server.http2_keep_alive_timeout"),
        ] {
            let err = load(&format!("[server]\n{text}\n")).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_and_malformed_keys_are_named() {
        let err = load("[server]\nlisten_on = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("listen_on"), "{err}");
        let err = load("[server]\nlisten = \"nowhere\"\n").unwrap_err().to_string();
        assert!(err.contains("server.listen"), "{err}");
        let err = load("[whatsapp]\nmax_per_second = \"fast\"\n").unwrap_err().to_string();
        assert!(err.contains("max_per_second"), "{err}");
        let err = load("[odoo]\nurl = \"http://x\"\n").unwrap_err().to_string();
        assert!(err.contains("odoo."), "{err}");
    }

    #[test]
    fn parse_errors_do_not_echo_the_line_holding_a_secret() {
        let err = load("[whatsapp]\naccess_token = \"tok-S3CR3T-value\" trailing\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("tok-S3CR3T-value"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn accounts_inherit_what_whatsapp_shares_and_are_checked_one_by_one() {
        let c = load(
            "[server]\nadmin_token = \"adm\"\n[whatsapp]\ndry_run = false\napp_secret = \"shared-secret\"\nverify_token = \"shared-verify\"\nmax_per_second = 40\n\
             [[whatsapp.accounts]]\nname = \"dakar\"\nphone_number_id = \"111\"\naccess_token = \"tok-a\"\n\
             [[whatsapp.accounts]]\nphone_number_id = \"222\"\naccess_token = \"tok-b\"\napp_secret = \"other-app\"\nmax_per_second = 500\n",
        )
        .unwrap();
        let [dakar, second] = &c.whatsapp.accounts[..] else {
            panic!("two accounts")
        };
        assert_eq!((dakar.name.as_str(), dakar.max_per_second), ("dakar", 40));
        assert_eq!(dakar.app_secret.as_ref().unwrap().expose(), "shared-secret");
        assert_eq!(
            (second.name.as_str(), second.max_per_second),
            ("222", 500),
            "named by its id"
        );
        assert_eq!(second.app_secret.as_ref().unwrap().expose(), "other-app");
        assert_eq!(second.verify_token.as_ref().unwrap().expose(), "shared-verify");
        assert_eq!(c.whatsapp.app_secrets().len(), 2);
        assert_eq!(
            c.secrets().len(),
            7,
            "every account's secrets are known to the log filter"
        );

        let live = "[whatsapp]\ndry_run = false\napp_secret = \"s\"\nverify_token = \"v\"\n";
        for (accounts, key) in [
            (
                "phone_number_id = \"1\"\n[[whatsapp.accounts]]\nphone_number_id = \"2\"\naccess_token = \"t\"\n",
                "whatsapp.phone_number_id",
            ),
            (
                "[[whatsapp.accounts]]\nphone_number_id = \"1\"\naccess_token = \"t\"\n[[whatsapp.accounts]]\nphone_number_id = \"1\"\naccess_token = \"u\"\n",
                "whatsapp.accounts[1].phone_number_id",
            ),
            (
                "[[whatsapp.accounts]]\nname = \"x\"\nphone_number_id = \"1\"\naccess_token = \"t\"\n[[whatsapp.accounts]]\nname = \"x\"\nphone_number_id = \"2\"\naccess_token = \"u\"\n",
                "whatsapp.accounts[1].name",
            ),
            (
                "[[whatsapp.accounts]]\nphone_number_id = \"1\"\naccess_token = \"t\"\n[[whatsapp.accounts]]\nphone_number_id = \"2\"\n",
                "whatsapp.accounts[1].access_token",
            ),
            (
                "[[whatsapp.accounts]]\naccess_token = \"t\"\n",
                "whatsapp.accounts[0].phone_number_id",
            ),
            ("accounts = []\n", "whatsapp.accounts"),
            (
                "[[whatsapp.accounts]]\nname = \" \"\nphone_number_id = \"1\"\naccess_token = \"t\"\n",
                "whatsapp.accounts[0].name",
            ),
            (
                "[[whatsapp.accounts]]\nphone_number_id = \"1\"\naccess_token = \"t\"\nmax_per_second = 0\n",
                "whatsapp.accounts[0].max_per_second",
            ),
        ] {
            let err = load(&format!("{live}{accounts}")).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")) || err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("soon"), None);
    }
}
