//! The redb store: the only module that opens transactions.
//!
//! Tables are declared once, below. Values are JSON (records in [`records`]); keys are ids or
//! strings. Every method is synchronous and short: callers on the async runtime run them
//! through `tokio::task::spawn_blocking` (see [`Store::blocking`]).

pub mod campaigns;
pub mod chatter;
pub mod console;
pub mod handover;
pub mod inbox;
pub mod ops;
pub mod optout;
pub mod outbox;
pub mod parked;
pub mod partners;
pub mod records;
pub mod stats;
pub mod templates;
pub mod users;

use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};
use serde_json::Value;

use crate::webhook::payload::{Change, ContactInfo, Delivery, InboundMessage, StatusUpdate};
use console::CONSOLE_SEEN;
pub use handover::{Handover, HelpRequest};
pub use inbox::{InboxFilter, InboxPage, InboxRow, MessageHit, SearchHits, ThreadAnchor, ThreadPage};
pub use records::{
    Conversation, Direction, ErrorInfo, EventRecord, MessageRecord, ScenarioState, ScriptOutcome, StatusEntry,
};

/// Before walua kept its delivery journal in files (`webhook::journal`), unprocessed
/// deliveries waited here: delivery id → raw body. Read once at start-up and moved over.
const LEGACY_JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// `META` key of the journal checkpoint: the highest delivery id applied (u64 BE).
const JOURNAL_APPLIED: &str = "journal_applied";
/// Every message: id → JSON [`MessageRecord`].
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// Meta's wamid → message id; makes redeliveries idempotent.
const WAMIDS: TableDefinition<&str, u64> = TableDefinition::new("wamids");
/// Conversation key → JSON [`Conversation`].
const CONVERSATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("conversations");
/// Any form of contact id (phone, BSUID) → conversation key.
const CONTACT_ALIASES: TableDefinition<&str, &str> = TableDefinition::new("contact_aliases");
/// (conversation key, message id) → (); lists a conversation's messages in order.
const CONVERSATION_MESSAGES: TableDefinition<(&str, u64), ()> = TableDefinition::new("conversation_messages");
/// Statuses for wamids not (yet) known: wamid → JSON list of [`StatusEntry`].
const ORPHAN_STATUSES: TableDefinition<&str, &[u8]> = TableDefinition::new("orphan_statuses");
/// Non-message webhook changes kept raw: id → JSON [`EventRecord`].
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Id sequences: name → last id given.
const SEQUENCES: TableDefinition<&str, u64> = TableDefinition::new("sequences");
/// Inbound media waiting to be downloaded: message id → Meta media id.
const MEDIA_DOWNLOADS: TableDefinition<u64, &str> = TableDefinition::new("media_downloads");
/// What [`Store::dispatch_mark_started`] decided: the messages that may run, and those to
/// quarantine with how many times they had started.
pub type Started = (Vec<u64>, Vec<(u64, u32)>);

/// How many times a message's scripts may start without finishing (walua died while they
/// ran) before it is quarantined instead of run again.
pub const MAX_UNFINISHED_STARTS: u32 = 2;

/// Inbound messages waiting for their script dispatch: message id → ().
const DISPATCH: TableDefinition<u64, ()> = TableDefinition::new("dispatch");
/// Inbound messages whose scripts started and have not committed: message id → how many
/// times they started. Written durably before each run, removed with the run's commit, so a
/// message that was running when walua died twice is quarantined rather than run again.
const DISPATCH_STARTED: TableDefinition<u64, u32> = TableDefinition::new("dispatch_started");
/// What the scripts did with each dispatched inbound message: message id → JSON
/// [`ScriptOutcome`]. Kept beside the message rather than inside its record so that a dispatch
/// commit writes a small row instead of re-encoding the whole message (raw copy included);
/// reads put it back in [`MessageRecord::script`] (see [`MessageReader`]). Stores from before
/// this table keep their outcomes inside the records, which reads still honour.
const SCRIPT_OUTCOMES: TableDefinition<u64, &[u8]> = TableDefinition::new("script_outcomes");
/// Scripts' persistent key/value store (`env.store`): key → JSON value.
const SCRIPT_KV: TableDefinition<&str, &[u8]> = TableDefinition::new("script_kv");
/// Active scenario per contact: conversation key → JSON [`ScenarioState`].
const SCENARIOS: TableDefinition<&str, &[u8]> = TableDefinition::new("scenarios");
/// Durable state of schedulers and pollers: `cron:NAME`, `hook:NAME` → JSON.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// Button ids walua sent, per contact: (conversation key, button id) → when (unix ms). A
/// click is accepted only from a contact the button was sent to (see
/// [`Store::button_sent_to`]). Moved with the conversation on merges.
const SENT_BUTTONS: TableDefinition<(&str, &str), i64> = TableDefinition::new("sent_buttons");
/// Small daemon metadata (health probe time, schema version).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb reported an error (I/O, corruption, lock).
    #[error("store: {0}")]
    Redb(#[from] redb::Error),
    /// A stored value could not be decoded.
    #[error("store: corrupt record in {table}: {source}")]
    Codec {
        /// The table holding it.
        table: &'static str,
        /// serde's error.
        source: serde_json::Error,
    },
    /// The blocking task running a store operation panicked or was cancelled.
    #[error("store: background task failed: {0}")]
    Join(String),
    /// The delivery journal beside the store could not be read or written.
    #[error("journal: {0}")]
    Journal(String),
    /// A batch of deliveries does not continue from the store's journal checkpoint: the store
    /// lost commits that were not durable yet (it was re-opened after an I/O error), and the
    /// reader must go back to `stored`.
    #[error("store: journal checkpoint {stored} is behind the reader at {cursor}")]
    CheckpointMismatch {
        /// The checkpoint the store has.
        stored: u64,
        /// Where the reader was.
        cursor: u64,
    },
    /// The database is closed after an I/O error and could not be opened again yet.
    #[error("store: closed after an I/O error, waiting to be re-opened (is the disk full?)")]
    Closed,
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Redb(e.into()) }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

type Result<T> = std::result::Result<T, StoreError>;

/// redb's page cache. redb's default (1 GiB) lets the cache, and so the daemon's resident
/// memory, grow with the store; the hot pages of walua's workload (journal tail, recent
/// messages, outbox, dispatch queue) fit in far less. 8 MiB instead of 16 MiB lowered the
/// peak RSS of the end-to-end benchmark from ~57 MB to ~48 MB at the same throughput.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// A handle on the redb database; cheap to clone.
///
/// After an I/O error (a full disk) redb answers every call with "previous I/O error" until
/// the database is closed and opened again. [`Store::recover`] does that in place, under every
/// clone of the handle, so the daemon resumes by itself once space is back.
#[derive(Clone)]
pub struct Store {
    db: Arc<DbSlot>,
    /// The last message id handed out. Ids are allocated here, outside transactions, so that
    /// a script run can know the ids of the messages it queues before they are committed
    /// with its outcome; a crash leaves harmless gaps.
    message_ids: Arc<std::sync::atomic::AtomicU64>,
    /// `[odoo] chatter_inbound`: inbound messages of a contact linked to a partner queue a
    /// note for the partner's chatter, in the transaction that stores them.
    chatter_inbound: Arc<std::sync::atomic::AtomicBool>,
}

/// The open database, replaced by [`Store::recover`].
struct DbSlot {
    path: std::path::PathBuf,
    /// `None` after a failed re-open, until the next [`Store::recover`] succeeds.
    current: std::sync::RwLock<Option<Arc<Database>>>,
    /// Times the database was opened again after an I/O error.
    reopened: std::sync::atomic::AtomicU64,
}

/// What [`Store::recover`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The store answers: nothing to do.
    Healthy,
    /// The store had failed on an I/O error and was opened again; it answers now.
    Reopened {
        /// How long closing and opening (with redb's repair) took.
        took_ms: u64,
    },
    /// The store still fails (the disk is still full, say): why.
    Failing(String),
}

/// The effects of script runs, committed together by [`Store::commit_script_runs`].
#[derive(Debug, Default, Clone)]
pub struct ScriptCommit {
    /// Outbound messages the scripts queued (ids already allocated).
    pub sends: Vec<outbox::NewOutbound>,
    /// `env.store` writes, in order (`None` deletes).
    pub kv: Vec<(String, Option<Value>)>,
    /// Scenario state changes per contact (`None` ends the scenario).
    pub scenarios: Vec<(String, Option<ScenarioState>)>,
    /// Dispatched inbound messages and what their scripts did.
    pub outcomes: Vec<(u64, ScriptOutcome)>,
    /// Scheduler / poller state written with the effects (`cron:NAME`, `hook:NAME`).
    pub state: Vec<(String, Value)>,
    /// Failed runs written (`Some`) or cleared (`None`) with the effects (see [`parked`]).
    pub failed: Vec<(String, Option<parked::FailedRun>)>,
    /// Conversations a script flagged as needing a human (`env.handover`): conversation key →
    /// the request.
    pub help: Vec<(String, HelpRequest)>,
    /// Notes for Odoo records' chatter (`env.odoo.log`).
    pub chatter: Vec<chatter::ChatterNote>,
    /// Opt-outs set or cleared by customers' keywords: contact → entry (`None`: opted back in).
    pub optouts: Vec<(String, Option<crate::optout::OptOut>)>,
}

/// The META key of [`Store::buttons_indexed_since`].
const BUTTONS_SINCE: &str = "sent_buttons_since";

/// The button ids of an outbound message's Graph API body: reply buttons, list rows and a
/// template's quick-reply payloads.
pub fn button_ids(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_str)
            .map(|s| vec![s.to_string()])
            .unwrap_or_default()
    };
    let action = body.pointer("/interactive/action");
    for b in action
        .and_then(|a| a.get("buttons"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.extend(strs(b.pointer("/reply/id")));
    }
    for section in action
        .and_then(|a| a.get("sections"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for row in section.get("rows").and_then(Value::as_array).into_iter().flatten() {
            out.extend(strs(row.get("id")));
        }
    }
    for c in body
        .pointer("/template/components")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if c.get("type").and_then(Value::as_str) == Some("button") {
            for p in c.get("parameters").and_then(Value::as_array).into_iter().flatten() {
                out.extend(strs(p.get("payload")));
            }
        }
    }
    out
}

/// What [`Store::renormalize_contacts`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RenormalizeReport {
    /// Already done for this default country.
    pub skipped: bool,
    /// Conversations merged: (old key, canonical key).
    pub merged: Vec<(String, String)>,
    /// Phone keys that do not parse, kept as they are: (key, why).
    pub unparsed: Vec<(String, String)>,
}

/// What applying a batch of deliveries did, for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Deliveries applied.
    pub deliveries: usize,
    /// The journal checkpoint after this batch: its highest delivery id.
    pub applied_through: Option<u64>,
    /// New inbound messages stored.
    pub new_messages: Vec<u64>,
    /// The type of each new inbound message (for the metrics), in order.
    pub new_kinds: Vec<String>,
    /// Messages already known (Meta redelivered them).
    pub duplicates: usize,
    /// Statuses applied to a known message.
    pub statuses_applied: usize,
    /// Statuses kept for a wamid not known yet.
    pub statuses_orphaned: usize,
    /// Non-message changes kept raw.
    pub events: usize,
    /// What Meta's template webhooks changed in the template registry.
    pub template_changes: Vec<templates::TemplateChange>,
    /// The status objects of the batch's deliveries, redeliveries included: (status, business
    /// number), for `walua_status_webhooks_total` (filled by the delivery processor).
    pub status_webhooks: Vec<(String, String)>,
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records always serialize")
}

fn decode<'a, T: serde::Deserialize<'a>>(table: &'static str, bytes: &'a [u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Codec { table, source })
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Normalizes a contact id typed by a person: `+221 77 123` → `22177123`; BSUIDs unchanged.
pub fn normalize_contact(id: &str) -> String {
    let t = id.trim();
    let digits = t.trim_start_matches('+');
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit() || c == ' ' || c == '-') {
        digits.chars().filter(char::is_ascii_digit).collect()
    } else {
        t.to_string()
    }
}

impl Store {
    /// Opens (or creates) the store file, creating its directory, and its tables.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Redb(redb::Error::Io(e)))?;
        }
        let db = open_database(path)?;
        let last = {
            let read = db.begin_read()?;
            let seq = read.open_table(SEQUENCES)?;
            seq.get("message")?.map(|v| v.value()).unwrap_or(0)
        };
        let store = Store {
            db: Arc::new(DbSlot {
                path: path.to_path_buf(),
                current: std::sync::RwLock::new(Some(Arc::new(db))),
                reopened: Default::default(),
            }),
            message_ids: Arc::new(std::sync::atomic::AtomicU64::new(last)),
            chatter_inbound: Default::default(),
        };
        inbox::migrate(&store)?;
        Ok(store)
    }

    /// The database to run a transaction on (the current one, after any reopen).
    fn db(&self) -> Result<Arc<Database>> {
        self.db
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(StoreError::Closed)
    }

    /// Notes inbound messages from linked partners on their chatter (`[odoo] chatter_inbound`).
    pub fn set_chatter_inbound(&self, on: bool) {
        self.chatter_inbound.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Times the store was opened again after an I/O error since start.
    pub fn reopened(&self) -> u64 {
        self.db.reopened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Checks that the store answers, without writing; after an I/O error (redb then refuses
    /// everything until the database is re-opened) closes and re-opens it in place, under
    /// every clone of this handle. Calls that were running on the failed database fail (they
    /// would have anyway); later ones run on the new one. Blocking.
    pub fn recover(&self) -> Recovery {
        let probe = |db: &Database| match db.begin_write() {
            // Nothing written: aborting costs no I/O.
            Ok(_) => None,
            Err(e) => Some(StoreError::from(e)),
        };
        if let Ok(db) = self.db() {
            match probe(&db) {
                None => return Recovery::Healthy,
                Some(e) if !is_io_failure(&e) => return Recovery::Failing(e.to_string()),
                Some(_) => {}
            }
        }
        let start = std::time::Instant::now();
        let mut current = self.db.current.write().unwrap_or_else(|p| p.into_inner());
        // Another caller may have reopened it meanwhile.
        if current.as_deref().is_some_and(|db| probe(db).is_none()) {
            return Recovery::Healthy;
        }
        // redb keeps the file locked while the old handle lives: wait for the calls still
        // holding it (each holds it for one transaction) to end, then close it.
        if let Some(old) = current.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            drop(old);
        }
        match open_database(&self.db.path) {
            Ok(db) => {
                *current = Some(Arc::new(db));
                self.db.reopened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Recovery::Reopened {
                    took_ms: start.elapsed().as_millis() as u64,
                }
            }
            Err(e) => Recovery::Failing(format!("cannot re-open the store after an I/O error: {e}")),
        }
    }
}

/// Whether `e` means the database must be re-opened (an I/O error now or before).
pub fn is_io_failure(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Redb(redb::Error::Io(_) | redb::Error::PreviousIo) | StoreError::Closed
    )
}

/// Opens (or creates) the database file and its tables.
fn open_database(path: &Path) -> Result<Database> {
    let db = Database::builder().set_cache_size(CACHE_BYTES).create(path)?;
    {
        let txn = db.begin_write()?;
        {
            txn.open_table(MESSAGES)?;
            txn.open_table(WAMIDS)?;
            txn.open_table(CONVERSATIONS)?;
            txn.open_table(CONTACT_ALIASES)?;
            txn.open_table(CONVERSATION_MESSAGES)?;
            txn.open_table(ORPHAN_STATUSES)?;
            txn.open_table(EVENTS)?;
            txn.open_table(SEQUENCES)?;
            txn.open_table(META)?;
            txn.open_table(outbox::OUTBOX)?;
            txn.open_table(MEDIA_DOWNLOADS)?;
            txn.open_table(DISPATCH)?;
            txn.open_table(DISPATCH_STARTED)?;
            txn.open_table(SCRIPT_OUTCOMES)?;
            txn.open_table(SCRIPT_KV)?;
            txn.open_table(SCENARIOS)?;
            txn.open_table(STATE)?;
            txn.open_table(parked::FAILED_RUNS)?;
            txn.open_table(SENT_BUTTONS)?;
            txn.open_table(templates::TEMPLATES)?;
            txn.open_table(console::CONSOLE_READ)?;
            txn.open_table(CONSOLE_SEEN)?;
            txn.open_table(inbox::CONVERSATIONS_BY_RECENCY)?;
            txn.open_table(inbox::SEARCH_CONTACTS)?;
            txn.open_table(inbox::SEARCH_MESSAGES)?;
            txn.open_table(inbox::SEARCH_PENDING)?;
            txn.open_table(templates::TEMPLATE_KEYS)?;
            txn.open_table(users::USERS)?;
            txn.open_table(users::SESSIONS)?;
            ops::index_quarantined(&txn)?;
            txn.open_table(chatter::CHATTER)?;
            txn.open_table(optout::OPTOUTS)?;
            txn.open_table(campaigns::CAMPAIGNS)?;
            txn.open_table(campaigns::CAMPAIGN_RECIPIENTS)?;
            txn.open_table(campaigns::CAMPAIGN_COUNTS)?;
            txn.open_table(campaigns::CAMPAIGN_RECENT)?;
            txn.open_table(partners::PARTNERS)?;
            txn.open_table(partners::PARTNER_NUMBERS)?;
            let mut meta = txn.open_table(META)?;
            if meta.get(BUTTONS_SINCE)?.is_none() {
                meta.insert(BUTTONS_SINCE, now_ms().to_be_bytes().as_slice())?;
            }
        }
        txn.commit()?;
    }
    Ok(db)
}

impl Store {
    /// Hands out a new message id (see `message_ids`).
    pub fn allocate_message_id(&self) -> u64 {
        self.message_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Runs a store operation on the blocking pool, off the async runtime.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Proves the store is writable: a tiny durable write transaction.
    pub fn probe_writable(&self) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        txn.open_table(META)?
            .insert("health_probe", now_ms().to_be_bytes().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Merges conversations keyed by a badly normalised phone number (`771234567`,
    /// `00221771234567`, from walua before `crate::phone`; only those with no inbound
    /// message, whose key is Meta's) into the conversation of its canonical form, which `canonical` gives (or why the key does not parse: such keys stay
    /// and are reported). Runs once per `marker` (the default country), in one transaction.
    pub fn renormalize_contacts(
        &self,
        marker: &str,
        canonical: &dyn Fn(&str) -> std::result::Result<String, String>,
    ) -> Result<RenormalizeReport> {
        const DONE: &str = "contacts_normalized";
        let mut report = RenormalizeReport::default();
        let txn = self.db()?.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            if meta.get(DONE)?.is_some_and(|v| v.value() == marker.as_bytes()) {
                report.skipped = true;
                return Ok(report);
            }
            meta.insert(DONE, marker.as_bytes())?;
        }
        {
            let mut t = Tables::open(&txn, &self.message_ids)?;
            // Only conversations walua keyed itself (outbound only): a key from a webhook is
            // Meta's wa_id, which wins even where libphonenumber writes the number otherwise.
            let mut keys: Vec<String> = Vec::new();
            for row in t.conversations.iter()? {
                let (k, v) = row?;
                let key = k.value();
                if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let conv: Conversation = decode("conversations", v.value())?;
                if conv.last_inbound_at.is_none() {
                    keys.push(key.to_string());
                }
            }
            for key in keys {
                match canonical(&key) {
                    Ok(c) if c == key => {}
                    Ok(c) => {
                        let mut into = match t.get_conversation(&c)? {
                            Some(conv) => conv,
                            None => Conversation {
                                contact: c.clone(),
                                wa_id: Some(c.clone()),
                                ..Conversation::default()
                            },
                        };
                        t.merge_conversation(&key, &mut into)?;
                        if into.wa_id.as_deref().is_none_or(|w| w == key) {
                            into.wa_id = Some(c.clone());
                        }
                        t.put_conversation(&into)?;
                        t.aliases.insert(c.as_str(), into.contact.as_str())?;
                        t.aliases.insert(key.as_str(), into.contact.as_str())?;
                        report.merged.push((key, c));
                    }
                    Err(reason) => report.unparsed.push((key, reason)),
                }
            }
        }
        txn.commit()?;
        Ok(report)
    }

    /// Whether walua sent the button `button_id` to `contact` (any of its addresses), and
    /// when; `Ok(None)` if never. See [`Store::buttons_indexed_since`] for older sends.
    pub fn button_sent_to(&self, contact: &str, button_id: &str) -> Result<Option<i64>> {
        let txn = self.db()?.begin_read()?;
        let key = resolve_alias(&txn.open_table(CONTACT_ALIASES)?, contact)?.unwrap_or_else(|| contact.to_string());
        let table = txn.open_table(SENT_BUTTONS)?;
        Ok(table.get((key.as_str(), button_id))?.map(|v| v.value()))
    }

    /// Since when (unix ms) sent buttons are indexed: a click on a message sent before has
    /// no entry and is accepted.
    pub fn buttons_indexed_since(&self) -> Result<i64> {
        let txn = self.db()?.begin_read()?;
        let meta = txn.open_table(META)?;
        let since = meta
            .get(BUTTONS_SINCE)?
            .and_then(|v| v.value().try_into().ok().map(i64::from_be_bytes));
        Ok(since.unwrap_or(0))
    }

    // ---------------------------------------------------------------- journal

    /// The journal checkpoint: the highest delivery id applied (0 before the first).
    pub fn journal_applied(&self) -> Result<u64> {
        let txn = self.db()?.begin_read()?;
        read_journal_applied(&txn.open_table(META)?)
    }

    /// The highest delivery id the store ever handed out itself (stores from before the
    /// file journal): new ids must start above it.
    pub fn legacy_last_delivery_id(&self) -> Result<u64> {
        let txn = self.db()?.begin_read()?;
        let seq = txn.open_table(SEQUENCES)?;
        Ok(seq.get("delivery")?.map(|v| v.value()).unwrap_or(0))
    }

    /// Deliveries left unprocessed in the store by a walua from before the file journal,
    /// oldest first.
    pub fn legacy_journal(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        let txn = self.db()?.begin_read()?;
        let journal = match txn.open_table(LEGACY_JOURNAL) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in journal.iter()? {
            let (k, v) = row?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Writes a row of the legacy journal table (tests of the migration only).
    #[cfg(test)]
    pub(crate) fn legacy_journal_insert(&self, id: u64, body: &[u8]) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        txn.open_table(LEGACY_JOURNAL)?.insert(id, body)?;
        txn.open_table(SEQUENCES)?.insert("delivery", id)?;
        txn.commit()?;
        Ok(())
    }

    /// Writes raw bytes as a contact's conversation record (tests: a corrupt record).
    #[cfg(test)]
    pub(crate) fn put_raw_conversation(&self, contact: &str, bytes: Option<&[u8]>) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut t = txn.open_table(CONVERSATIONS)?;
            match bytes {
                Some(b) => t.insert(contact, b)?,
                None => t.remove(contact)?,
            };
        }
        txn.commit()?;
        Ok(())
    }

    /// Drops the legacy journal table, durably (once its deliveries are in the file journal).
    pub fn drop_legacy_journal(&self) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        txn.delete_table(LEGACY_JOURNAL)?;
        txn.commit()?;
        Ok(())
    }

    /// Applies parsed deliveries and moves the journal checkpoint to the highest of their
    /// ids, atomically: a crash leaves either all of a batch's effects and the new
    /// checkpoint, or neither (and the deliveries are applied again on restart).
    /// With `queue_media`, inbound media messages are queued for download in the same
    /// transaction.
    pub fn apply_deliveries(
        &self,
        batch: &[(u64, Delivery)],
        explain: &dyn Fn(i64) -> String,
        queue_media: bool,
    ) -> Result<ApplyReport> {
        self.apply_deliveries_with(None, batch, explain, queue_media, redb::Durability::Immediate)
    }

    /// [`Store::apply_deliveries`] without its own fsync (the delivery processor's path).
    ///
    /// Safe because redb's history is linear: a non-durable commit becomes durable with the
    /// next durable commit (the journal writer's, the dispatcher's, the outbox's), and a crash
    /// before that rolls the store back to a consistent earlier state in which these
    /// deliveries are still in the journal, so they are processed again on restart. Nothing
    /// leaves the process on the strength of a non-durable commit: network sends happen only
    /// after the outbox's durable `sending` mark.
    ///
    /// `after` is where the reader stood before this batch: the commit is refused with
    /// [`StoreError::CheckpointMismatch`] unless the store's checkpoint is there too (a store
    /// re-opened after an I/O error is back at its last durable commit, behind the reader).
    pub fn apply_deliveries_deferred(
        &self,
        after: u64,
        batch: &[(u64, Delivery)],
        explain: &dyn Fn(i64) -> String,
        queue_media: bool,
    ) -> Result<ApplyReport> {
        self.apply_deliveries_with(Some(after), batch, explain, queue_media, redb::Durability::None)
    }

    fn apply_deliveries_with(
        &self,
        after: Option<u64>,
        batch: &[(u64, Delivery)],
        explain: &dyn Fn(i64) -> String,
        queue_media: bool,
        durability: redb::Durability,
    ) -> Result<ApplyReport> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(durability)
            .map_err(|e| StoreError::Redb(redb::Error::from(e)))?;
        if let Some(cursor) = after {
            let stored = read_journal_applied(&txn.open_table(META)?)?;
            if stored != cursor {
                return Err(StoreError::CheckpointMismatch { stored, cursor });
            }
        }
        let mut report = ApplyReport::default();
        {
            let mut t = Tables::open(&txn, &self.message_ids)?;
            let mut downloads = txn.open_table(MEDIA_DOWNLOADS)?;
            let mut dispatch = txn.open_table(DISPATCH)?;
            for (delivery_id, delivery) in batch {
                for change in &delivery.changes {
                    match change {
                        Change::Messages(v) => {
                            for m in &v.messages {
                                let sender = v.sender_of(m);
                                let before = report.new_messages.len();
                                t.insert_inbound(
                                    *delivery_id,
                                    m,
                                    sender.as_ref(),
                                    v.phone_number_id.as_deref(),
                                    explain,
                                    &mut report,
                                )?;
                                if let Some(&id) = report.new_messages.get(before) {
                                    dispatch.insert(id, ())?;
                                    if self.chatter_inbound.load(std::sync::atomic::Ordering::Relaxed) {
                                        t.note_inbound_for_partner(&txn, id)?;
                                    }
                                }
                                if let (true, Some(&id), crate::webhook::payload::Content::Media(media)) =
                                    (queue_media, report.new_messages.get(before), &m.content)
                                    && let Some(media_id) = &media.id
                                {
                                    downloads.insert(id, media_id.as_str())?;
                                }
                            }
                            for s in &v.statuses {
                                t.apply_status(s, explain, &mut report)?;
                            }
                            if !v.errors.is_empty() {
                                let value = serde_json::json!({ "errors": v.errors });
                                t.insert_event(*delivery_id, "messages.errors", value)?;
                                report.events += 1;
                            }
                        }
                        Change::Other { field, value, entry_id } => {
                            t.insert_event(*delivery_id, field, value.clone())?;
                            report.events += 1;
                            if field == "user_preferences" {
                                t.apply_user_preferences(value)?;
                            }
                            if templates::TEMPLATE_FIELDS.contains(&field.as_str()) {
                                match entry_id {
                                    Some(waba) => {
                                        let mut tables = templates::TemplateTables::open(&txn)?;
                                        report.template_changes.extend(tables.apply(waba, field, value)?);
                                    }
                                    None => {
                                        tracing::warn!(field, "template webhook without entry id (WABA): kept raw only")
                                    }
                                }
                            }
                        }
                    }
                }
                report.deliveries += 1;
                report.applied_through = report.applied_through.max(Some(*delivery_id));
            }
            if let Some(applied) = report.applied_through {
                let mut meta = txn.open_table(META)?;
                if applied > read_journal_applied(&meta)? {
                    meta.insert(JOURNAL_APPLIED, applied.to_be_bytes().as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(report)
    }

    /// Inbound media waiting for download, oldest first.
    pub fn media_pending(&self, limit: usize) -> Result<Vec<PendingMedia>> {
        #[derive(serde::Deserialize)]
        struct NumberOnly {
            #[serde(default)]
            phone_number_id: Option<String>,
        }
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(MEDIA_DOWNLOADS)?;
        let messages = txn.open_table(MESSAGES)?;
        let mut out = Vec::new();
        for row in table.iter()?.take(limit) {
            let (k, v) = row?;
            let phone_number_id = match messages.get(k.value())? {
                Some(m) => decode::<NumberOnly>("messages", m.value())?.phone_number_id,
                None => None,
            };
            out.push(PendingMedia {
                message_id: k.value(),
                media_id: v.value().to_string(),
                phone_number_id,
            });
        }
        Ok(out)
    }

    /// Records the outcome of a media download and takes it off the queue. `file` is the
    /// path relative to the store's directory; `None` when the download failed for good.
    pub fn media_done(&self, message_id: u64, file: Option<String>) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut t = Tables::open(&txn, &self.message_ids)?;
            txn.open_table(MEDIA_DOWNLOADS)?.remove(message_id)?;
            if let (Some(file), Some(mut m)) = (file, t.get_message(message_id)?) {
                m.media_file = Some(file);
                t.put_message(&m)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    // ---------------------------------------------------------------- scripts

    /// Inbound messages whose scripts have not run yet, oldest first, read in one transaction:
    /// each id with its record and conversation, or why it could not be read (that message
    /// alone fails its dispatch).
    pub fn dispatch_pending_messages(&self, limit: usize) -> Result<Vec<(u64, Result<Option<PendingDispatch>>)>> {
        let txn = self.db()?.begin_read()?;
        let pending = txn.open_table(DISPATCH)?;
        let mut ids = Vec::new();
        for row in pending.iter()?.take(limit) {
            ids.push(row?.0.value());
        }
        pending_dispatch(&txn, &ids)
    }

    /// Like [`Store::dispatch_pending_messages`], skipping the messages `skip` names (those
    /// running, and those of contacts with a run in progress).
    pub fn dispatch_pending_except(
        &self,
        limit: usize,
        skip: &std::collections::HashSet<u64>,
    ) -> Result<Vec<(u64, Result<Option<PendingDispatch>>)>> {
        let txn = self.db()?.begin_read()?;
        let pending = txn.open_table(DISPATCH)?;
        let mut ids = Vec::new();
        for row in pending.iter()? {
            let id = row?.0.value();
            if !skip.contains(&id) {
                ids.push(id);
                if ids.len() == limit {
                    break;
                }
            }
        }
        pending_dispatch(&txn, &ids)
    }

    /// Durably counts a start of each message's scripts, before they run. Returns the
    /// messages that may run, and those already started [`MAX_UNFINISHED_STARTS`] times
    /// without finishing (walua died while they ran, twice), with that count: the caller
    /// quarantines them.
    pub fn dispatch_mark_started(&self, ids: &[u64]) -> Result<Started> {
        let txn = self.db()?.begin_write()?;
        let (mut run, mut refuse) = (Vec::with_capacity(ids.len()), Vec::new());
        {
            let mut started = txn.open_table(DISPATCH_STARTED)?;
            for &id in ids {
                let before = started.get(id)?.map_or(0, |v| v.value());
                if before >= MAX_UNFINISHED_STARTS {
                    refuse.push((id, before));
                } else {
                    started.insert(id, before + 1)?;
                    run.push(id);
                }
            }
        }
        txn.commit()?;
        Ok((run, refuse))
    }

    /// Takes messages out of the dispatch queue without running their scripts again, with
    /// `reason` as their outcome's error, durably (`quarantined` in `/api/messages/{id}`).
    /// Messages whose run had not started are put back in the queue unchanged (`retry`).
    pub fn dispatch_quarantine(&self, quarantined: &[(u64, String)], retry: &[u64]) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut dispatch = txn.open_table(DISPATCH)?;
            let mut started = txn.open_table(DISPATCH_STARTED)?;
            let mut outcomes = txn.open_table(SCRIPT_OUTCOMES)?;
            let mut index = txn.open_table(ops::QUARANTINED)?;
            for (id, reason) in quarantined {
                index.insert(*id, ())?;
                dispatch.remove(*id)?;
                started.remove(*id)?;
                let outcome = ScriptOutcome {
                    error: Some(reason.clone()),
                    quarantined: true,
                    at_ms: now_ms(),
                    ..Default::default()
                };
                outcomes.insert(*id, encode(&outcome).as_slice())?;
            }
            for id in retry {
                // Started on the wedged worker but not the cause: not counted against it.
                let n = started.remove(*id)?.map(|v| v.value());
                if let Some(n) = n
                    && n > 1
                {
                    started.insert(*id, n - 1)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Puts a quarantined message back in the dispatch queue (`POST /api/messages/{id}/replay`
    /// style, by the operator): its scripts run again once.
    pub fn dispatch_release(&self, id: u64) -> Result<bool> {
        let txn = self.db()?.begin_write()?;
        let found = {
            let messages = txn.open_table(MESSAGES)?;
            let found = match messages.get(id)? {
                Some(v) => decode::<MessageRecord>("messages", v.value())?.direction == Direction::Inbound,
                None => false,
            };
            if found {
                txn.open_table(DISPATCH)?.insert(id, ())?;
                txn.open_table(DISPATCH_STARTED)?.remove(id)?;
                txn.open_table(SCRIPT_OUTCOMES)?.remove(id)?;
                txn.open_table(ops::QUARANTINED)?.remove(id)?;
            }
            found
        };
        txn.commit()?;
        Ok(found)
    }

    /// [`Store::dispatch_pending_messages`] for the given messages.
    pub fn messages_for_dispatch(&self, ids: &[u64]) -> Result<Vec<(u64, Result<Option<PendingDispatch>>)>> {
        let txn = self.db()?.begin_read()?;
        pending_dispatch(&txn, ids)
    }

    /// A script key/value entry.
    pub fn kv_get(&self, key: &str) -> Result<Option<Value>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(SCRIPT_KV)?;
        let row = table.get(key)?;
        row.map(|v| decode("script_kv", v.value())).transpose()
    }

    /// A scheduler / poller state entry.
    pub fn state_get(&self, key: &str) -> Result<Option<Value>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(STATE)?;
        let row = table.get(key)?;
        row.map(|v| decode("state", v.value())).transpose()
    }

    /// A contact's active scenario (expired ones included; the caller checks).
    pub fn scenario_get(&self, contact: &str) -> Result<Option<ScenarioState>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(SCENARIOS)?;
        let row = table.get(contact)?;
        row.map(|v| decode("scenarios", v.value())).transpose()
    }

    /// Commits what script runs did, atomically: their sends, key/value writes, scenario
    /// changes, outcomes recorded on the messages, and the removal of the dispatched
    /// messages from the dispatch queue. A crash before this commit re-runs the scripts;
    /// after it, nothing runs twice. Returns the outbound messages as recorded.
    pub fn commit_script_runs(&self, commit: &ScriptCommit) -> Result<Vec<MessageRecord>> {
        self.commit_script_runs_with(commit, redb::Durability::Immediate)
    }

    /// [`Store::commit_script_runs`] without its own fsync (the dispatcher's path): it becomes
    /// durable with the next durable commit, and a crash before that re-runs the scripts on
    /// a store where they never ran (as a crash before the commit would). The sends it
    /// queues go on the network only after the outbox's durable `sending` mark, which makes
    /// this commit durable first.
    pub fn commit_script_runs_deferred(&self, commit: &ScriptCommit) -> Result<Vec<MessageRecord>> {
        self.commit_script_runs_with(commit, redb::Durability::None)
    }

    fn commit_script_runs_with(
        &self,
        commit: &ScriptCommit,
        durability: redb::Durability,
    ) -> Result<Vec<MessageRecord>> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(durability)
            .map_err(|e| StoreError::Redb(redb::Error::from(e)))?;
        let mut sent = Vec::new();
        {
            let mut t = Tables::open(&txn, &self.message_ids)?;
            let mut outbox_table = txn.open_table(outbox::OUTBOX)?;
            let mut dispatch = txn.open_table(DISPATCH)?;
            let mut kv = txn.open_table(SCRIPT_KV)?;
            let mut scenarios = txn.open_table(SCENARIOS)?;
            for new in &commit.sends {
                sent.push(t.insert_outbound(&mut outbox_table, new)?);
            }
            for note in &commit.chatter {
                t.queue_chatter(note.clone())?;
            }
            for (contact, entry) in &commit.optouts {
                let key = t.key_of(contact)?.unwrap_or_else(|| contact.clone());
                t.optout_set(&key, entry.clone())?;
            }
            for (contact, request) in &commit.help {
                let key = resolve_alias(&t.aliases, contact)?.unwrap_or_else(|| contact.clone());
                match t.get_conversation(&key)? {
                    Some(mut conv) => {
                        conv.help = Some(request.clone());
                        t.put_conversation(&conv)?;
                    }
                    None => {
                        tracing::warn!(contact = %contact, "help request for a contact with no conversation; dropped")
                    }
                }
            }
            for (key, value) in &commit.kv {
                match value {
                    Some(v) => kv.insert(key.as_str(), encode(v).as_slice())?,
                    None => kv.remove(key.as_str())?,
                };
            }
            for (contact, state) in &commit.scenarios {
                match state {
                    Some(s) => scenarios.insert(contact.as_str(), encode(s).as_slice())?,
                    None => scenarios.remove(contact.as_str())?,
                };
            }
            let mut state = txn.open_table(STATE)?;
            for (key, value) in &commit.state {
                state.insert(key.as_str(), encode(value).as_slice())?;
            }
            if !commit.failed.is_empty() {
                let mut failed = txn.open_table(parked::FAILED_RUNS)?;
                for (id, run) in &commit.failed {
                    match run {
                        Some(r) => failed.insert(id.as_str(), encode(r).as_slice())?,
                        None => failed.remove(id.as_str())?,
                    };
                }
            }
            let mut outcomes = txn.open_table(SCRIPT_OUTCOMES)?;
            let mut started = txn.open_table(DISPATCH_STARTED)?;
            for (id, outcome) in &commit.outcomes {
                dispatch.remove(*id)?;
                started.remove(*id)?;
                outcomes.insert(*id, encode(outcome).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(sent)
    }

    // ---------------------------------------------------------------- reads

    /// Conversations, most recent first.
    pub fn conversations(&self, limit: usize) -> Result<Vec<Conversation>> {
        self.conversations_after(None, limit).map(|(c, _)| c)
    }

    /// Conversations, most recent first, after `cursor` (a previous page's next cursor, see
    /// [`inbox::inbox_cursor`]), read from the recency index; with the next page's cursor.
    pub fn conversations_after(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Conversation>, Option<String>)> {
        let page = self.inbox_page(InboxFilter::All, cursor, limit, now_ms())?;
        Ok((page.rows.into_iter().map(|r| r.conv).collect(), page.next))
    }

    /// The conversation of a contact given by phone (any format) or BSUID.
    pub fn conversation(&self, contact: &str) -> Result<Option<Conversation>> {
        let txn = self.db()?.begin_read()?;
        let Some(key) = resolve_alias(&txn.open_table(CONTACT_ALIASES)?, contact)? else {
            return Ok(None);
        };
        let table = txn.open_table(CONVERSATIONS)?;
        let row = table.get(key.as_str())?;
        row.map(|v| decode("conversations", v.value())).transpose()
    }

    /// A contact's messages, oldest first (`None` when the contact is unknown).
    pub fn conversation_messages(&self, contact: &str, limit: usize) -> Result<Option<Vec<MessageRecord>>> {
        let txn = self.db()?.begin_read()?;
        let Some(key) = resolve_alias(&txn.open_table(CONTACT_ALIASES)?, contact)? else {
            return Ok(None);
        };
        let index = txn.open_table(CONVERSATION_MESSAGES)?;
        let messages = MessageReader::open(&txn)?;
        let mut ids: Vec<u64> = Vec::new();
        for row in index
            .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))?
            .rev()
            .take(limit)
        {
            ids.push(row?.0.value().1);
        }
        ids.reverse();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = messages.get(id)? {
                out.push(m);
            }
        }
        Ok(Some(out))
    }

    /// One message by walua id.
    pub fn message(&self, id: u64) -> Result<Option<MessageRecord>> {
        let txn = self.db()?.begin_read()?;
        MessageReader::open(&txn)?.get(id)
    }

    /// One message by Meta's wamid.
    pub fn message_by_wamid(&self, wamid: &str) -> Result<Option<MessageRecord>> {
        let txn = self.db()?.begin_read()?;
        let Some(id) = txn.open_table(WAMIDS)?.get(wamid)?.map(|v| v.value()) else {
            return Ok(None);
        };
        MessageReader::open(&txn)?.get(id)
    }

    /// Total number of stored messages.
    pub fn message_count(&self) -> Result<u64> {
        let txn = self.db()?.begin_read()?;
        Ok(txn.open_table(MESSAGES)?.len()?)
    }

    /// Non-message events, oldest first.
    pub fn events(&self, limit: usize) -> Result<Vec<EventRecord>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for row in table.iter()?.take(limit) {
            out.push(decode("events", row?.1.value())?);
        }
        Ok(out)
    }

    /// Statuses waiting for a wamid walua does not know yet.
    pub fn orphan_statuses(&self, wamid: &str) -> Result<Vec<StatusEntry>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(ORPHAN_STATUSES)?;
        let row = table.get(wamid)?;
        Ok(row
            .map(|v| decode("orphan_statuses", v.value()))
            .transpose()?
            .unwrap_or_default())
    }
}

/// An inbound media file waiting for download ([`Store::media_pending`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMedia {
    /// The message it belongs to.
    pub message_id: u64,
    /// Meta's media id.
    pub media_id: String,
    /// The business number that received it: its token downloads the file.
    pub phone_number_id: Option<String>,
}

/// An inbound message to dispatch, with its conversation as of the same read.
#[derive(Debug, Clone)]
pub struct PendingDispatch {
    /// The message.
    pub message: MessageRecord,
    /// Its contact's conversation (the scripts' `contact`).
    pub conversation: Option<Conversation>,
}

fn pending_dispatch(txn: &redb::ReadTransaction, ids: &[u64]) -> Result<Vec<(u64, Result<Option<PendingDispatch>>)>> {
    let messages = MessageReader::open(txn)?;
    let conversations = txn.open_table(CONVERSATIONS)?;
    let read = |id: u64| -> Result<Option<PendingDispatch>> {
        let Some(message) = messages.get(id)? else {
            return Ok(None);
        };
        let conversation = conversations
            .get(message.contact.as_str())?
            .map(|v| decode("conversations", v.value()))
            .transpose()?;
        Ok(Some(PendingDispatch { message, conversation }))
    };
    Ok(ids.iter().map(|&id| (id, read(id))).collect())
}

/// Reads messages as the admin API and the scripts see them: the stored record, with its
/// script outcome (kept in [`SCRIPT_OUTCOMES`]) and, while its job is on the network, the
/// status `sending` (kept on the job, see `Store::outbox_record_and_mark`).
struct MessageReader {
    messages: redb::ReadOnlyTable<u64, &'static [u8]>,
    outcomes: redb::ReadOnlyTable<u64, &'static [u8]>,
    jobs: redb::ReadOnlyTable<u64, &'static [u8]>,
}

impl MessageReader {
    fn open(txn: &redb::ReadTransaction) -> Result<MessageReader> {
        Ok(MessageReader {
            messages: txn.open_table(MESSAGES)?,
            outcomes: txn.open_table(SCRIPT_OUTCOMES)?,
            jobs: txn.open_table(outbox::OUTBOX)?,
        })
    }

    fn get(&self, id: u64) -> Result<Option<MessageRecord>> {
        let Some(row) = self.messages.get(id)? else {
            return Ok(None);
        };
        let mut m: MessageRecord = decode("messages", row.value())?;
        match m.direction {
            Direction::Inbound if m.script.is_none() => {
                if let Some(o) = self.outcomes.get(id)? {
                    m.script = Some(decode("script_outcomes", o.value())?);
                }
            }
            Direction::Outbound if m.status == "queued" => {
                if let Some(job) = self.jobs.get(id)? {
                    let job: outbox::OutboxJob = decode("outbox", job.value())?;
                    if job.state == outbox::JobState::Sending {
                        m.status = "sending".into();
                    }
                }
            }
            _ => {}
        }
        Ok(Some(m))
    }
}

/// A stored message's status alone.
#[derive(serde::Deserialize)]
struct StatusOnly {
    status: String,
}

/// The chatter note of a send about a record that failed (French, as Odoo's users read it).
fn chatter_failure_text(m: &MessageRecord) -> String {
    let to = m.to.as_deref().map(readable_contact).unwrap_or_default();
    match &m.error {
        Some(e) => format!(
            "Échec de l'envoi WhatsApp à {to} ({}) : {} {} — {}",
            m.summary, e.code, e.title, e.explanation
        ),
        None => format!("Échec de l'envoi WhatsApp à {to} ({})", m.summary),
    }
}

/// A phone number with its `+`, a BSUID as is.
pub fn readable_contact(c: &str) -> String {
    if !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) {
        format!("+{c}")
    } else {
        c.to_string()
    }
}

/// The journal checkpoint as stored in `META` (0 before the first batch).
fn read_journal_applied(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64> {
    Ok(meta
        .get(JOURNAL_APPLIED)?
        .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

fn next_ids(seq: &mut Table<&str, u64>, name: &str, count: u64) -> Result<u64> {
    let last = seq.get(name)?.map(|v| v.value()).unwrap_or(0);
    seq.insert(name, last + count)?;
    Ok(last + 1)
}

/// Keeps a sequence at least at `id` (ids allocated outside the transaction).
fn record_id(seq: &mut Table<&str, u64>, name: &str, id: u64) -> Result<()> {
    let last = seq.get(name)?.map(|v| v.value()).unwrap_or(0);
    if id > last {
        seq.insert(name, id)?;
    }
    Ok(())
}

fn resolve_alias(aliases: &impl ReadableTable<&'static str, &'static str>, contact: &str) -> Result<Option<String>> {
    let normalized = normalize_contact(contact);
    Ok(aliases.get(normalized.as_str())?.map(|v| v.value().to_string()))
}

/// The tables one delivery-applying transaction works on.
struct Tables<'txn> {
    messages: Table<'txn, u64, &'static [u8]>,
    wamids: Table<'txn, &'static str, u64>,
    conversations: Table<'txn, &'static str, &'static [u8]>,
    aliases: Table<'txn, &'static str, &'static str>,
    conversation_messages: Table<'txn, (&'static str, u64), ()>,
    orphans: Table<'txn, &'static str, &'static [u8]>,
    events: Table<'txn, u64, &'static [u8]>,
    sequences: Table<'txn, &'static str, u64>,
    sent_buttons: Table<'txn, (&'static str, &'static str), i64>,
    chatter: Table<'txn, u64, &'static [u8]>,
    optouts: Table<'txn, &'static str, &'static [u8]>,
    /// Campaign counters, kept with every change of a campaign message.
    campaign_counts: Table<'txn, u64, &'static [u8]>,
    /// The last campaign that reached each contact (replies and opt-outs).
    campaign_recent: Table<'txn, &'static str, &'static [u8]>,
    /// The console's indexes, kept with every conversation and message write.
    idx: inbox::ConvIndex<'txn>,
    /// Message ids written, for the stats follower (see [`stats`]).
    stats_changes: stats::ChangeMarks<'txn>,
    message_ids: Arc<std::sync::atomic::AtomicU64>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction, message_ids: &Arc<std::sync::atomic::AtomicU64>) -> Result<Self> {
        Ok(Tables {
            idx: inbox::ConvIndex::open(txn)?,
            stats_changes: stats::ChangeMarks::open(txn)?,
            messages: txn.open_table(MESSAGES)?,
            wamids: txn.open_table(WAMIDS)?,
            conversations: txn.open_table(CONVERSATIONS)?,
            aliases: txn.open_table(CONTACT_ALIASES)?,
            conversation_messages: txn.open_table(CONVERSATION_MESSAGES)?,
            orphans: txn.open_table(ORPHAN_STATUSES)?,
            events: txn.open_table(EVENTS)?,
            sequences: txn.open_table(SEQUENCES)?,
            sent_buttons: txn.open_table(SENT_BUTTONS)?,
            chatter: txn.open_table(chatter::CHATTER)?,
            optouts: txn.open_table(optout::OPTOUTS)?,
            campaign_counts: txn.open_table(campaigns::CAMPAIGN_COUNTS)?,
            campaign_recent: txn.open_table(campaigns::CAMPAIGN_RECENT)?,
            message_ids: message_ids.clone(),
        })
    }

    fn get_message(&self, id: u64) -> Result<Option<MessageRecord>> {
        let row = self.messages.get(id)?;
        row.map(|v| decode("messages", v.value())).transpose()
    }

    /// A message's raw copy alone (an outbound message's Graph API body), without decoding
    /// the rest of its record into values.
    fn get_message_raw(&self, id: u64) -> Result<Option<Value>> {
        #[derive(serde::Deserialize)]
        struct RawOnly {
            raw: Value,
        }
        let row = self.messages.get(id)?;
        Ok(row
            .map(|v| decode::<RawOnly>("messages", v.value()))
            .transpose()?
            .map(|r| r.raw))
    }

    fn put_message(&mut self, m: &MessageRecord) -> Result<()> {
        let meta_stopped = m
            .error
            .as_ref()
            .is_some_and(|e| e.code == crate::optout::META_MARKETING_STOPPED);
        if m.status == "failed" && (m.record.is_some() || meta_stopped) {
            let was_failed = match self.messages.get(m.id)? {
                Some(v) => decode::<StatusOnly>("messages", v.value())?.status == "failed",
                None => false,
            };
            // A send about an Odoo record that just failed: its failure goes on the chatter.
            if let Some(record) = m.record.as_ref().filter(|_| !was_failed) {
                let text = chatter_failure_text(m);
                self.queue_chatter(chatter::ChatterNote::new(record.clone(), text, None))?;
            }
            // Meta says the user stopped marketing messages: walua stops sending them.
            if meta_stopped && !was_failed {
                let entry = crate::optout::OptOut {
                    scope: crate::optout::Scope::Marketing,
                    since_ms: now_ms(),
                    source: format!("meta:{}", crate::optout::META_MARKETING_STOPPED),
                };
                let key = m.contact.clone();
                self.optout_set(&key, Some(entry))?;
            }
        }
        if let Some(campaign) = m.origin.as_deref().and_then(campaigns::campaign_of) {
            self.campaign_tally(campaign, m)?;
        }
        self.messages.insert(m.id, encode(m).as_slice())?;
        self.stats_changes.mark(m.id)?;
        Ok(())
    }

    fn get_conversation(&self, key: &str) -> Result<Option<Conversation>> {
        let row = self.conversations.get(key)?;
        row.map(|v| decode("conversations", v.value())).transpose()
    }

    /// Writes a conversation and its index rows (see [`inbox::write_conversation`]).
    fn put_conversation(&mut self, c: &Conversation) -> Result<()> {
        inbox::write_conversation(&mut self.conversations, &mut self.idx, c)
    }

    /// Finds or creates the conversation of a contact, merging a phone-keyed conversation
    /// into the BSUID-keyed one on first sight of both. Returns the conversation.
    fn upsert_contact(&mut self, info: &ContactInfo) -> Result<Conversation> {
        let key = info.key().expect("callers pass a contact with a key").to_string();
        let mut conv = self.get_conversation(&key)?.unwrap_or_else(|| Conversation {
            contact: key.clone(),
            ..Conversation::default()
        });
        // A conversation filed under the phone before the BSUID was known moves here.
        if let (Some(_), Some(phone)) = (&info.user_id, &info.wa_id) {
            let old_key = self.aliases.get(phone.as_str())?.map(|v| v.value().to_string());
            if let Some(old_key) = old_key.filter(|k| *k != key) {
                self.merge_conversation(&old_key, &mut conv)?;
            }
        }
        if info.wa_id.is_some() {
            conv.wa_id = info.wa_id.clone();
        }
        if info.user_id.is_some() {
            conv.user_id = info.user_id.clone();
        }
        if info.parent_user_id.is_some() {
            conv.parent_user_id = info.parent_user_id.clone();
        }
        if info.name.is_some() {
            conv.name = info.name.clone();
        }
        if info.username.is_some() {
            conv.username = info.username.clone();
        }
        // A parent BSUID (`SN.ENT.…`) names the same person: the window, the conversation
        // and sends follow it to this contact.
        for alias in [&info.user_id, &info.wa_id, &info.username, &info.parent_user_id]
            .into_iter()
            .flatten()
        {
            self.aliases.insert(alias.as_str(), key.as_str())?;
        }
        Ok(conv)
    }

    fn merge_conversation(&mut self, old_key: &str, into: &mut Conversation) -> Result<()> {
        let Some(old) = self.get_conversation(old_key)? else {
            return Ok(());
        };
        let mut ids = Vec::new();
        for row in self.conversation_messages.range((old_key, 0)..=(old_key, u64::MAX))? {
            ids.push(row?.0.value().1);
        }
        for id in &ids {
            self.conversation_messages.remove((old_key, *id))?;
            self.conversation_messages.insert((into.contact.as_str(), *id), ())?;
            if let Some(mut m) = self.get_message(*id)? {
                m.contact = into.contact.clone();
                self.put_message(&m)?;
            }
        }
        let buttons: Vec<(String, i64)> = self
            .sent_buttons
            .range((old_key, "")..)?
            .filter_map(|r| r.ok())
            .take_while(|(k, _)| k.value().0 == old_key)
            .map(|(k, v)| (k.value().1.to_string(), v.value()))
            .collect();
        for (button, at) in &buttons {
            self.sent_buttons.remove((old_key, button.as_str()))?;
            self.sent_buttons
                .insert((into.contact.as_str(), button.as_str()), *at)?;
        }
        into.message_count += old.message_count;
        into.inbound_total += old.inbound_total;
        into.last_outbound = into.last_outbound.max(old.last_outbound);
        into.merge_inbound(&old);
        if old.last_message_at > into.last_message_at {
            into.last_message_at = old.last_message_at;
            into.last_summary = old.last_summary.clone();
        }
        into.merge_handover(&old);
        into.name = into.name.take().or(old.name);
        into.username = into.username.take().or(old.username);
        inbox::remove_conversation(&mut self.conversations, &mut self.idx, old_key)?;
        // Every alias that pointed at the old key now points at the merged conversation.
        let stale: Vec<String> = self
            .aliases
            .iter()?
            .filter_map(|r| r.ok())
            .filter(|(_, v)| v.value() == old_key)
            .map(|(k, _)| k.value().to_string())
            .collect();
        for alias in stale {
            self.aliases.insert(alias.as_str(), into.contact.as_str())?;
        }
        tracing::info!(from = old_key, into = %into.contact, moved = ids.len(), "merged conversation");
        Ok(())
    }

    fn insert_inbound(
        &mut self,
        delivery_id: u64,
        m: &InboundMessage,
        sender: Option<&ContactInfo>,
        phone_number_id: Option<&str>,
        explain: &dyn Fn(i64) -> String,
        report: &mut ApplyReport,
    ) -> Result<()> {
        if self.wamids.get(m.id.as_str())?.is_some() {
            report.duplicates += 1;
            return Ok(());
        }
        let unknown = ContactInfo {
            wa_id: Some("unknown".into()),
            ..ContactInfo::default()
        };
        let mut conv = self.upsert_contact(sender.unwrap_or(&unknown))?;
        let id = self.message_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        record_id(&mut self.sequences, "message", id)?;
        let summary = m.summary();
        let mut record = MessageRecord {
            id,
            direction: Direction::Inbound,
            wamid: Some(m.id.clone()),
            contact: conv.contact.clone(),
            from: m.from.clone().or(m.from_user_id.clone()),
            to: None,
            kind: m.kind.clone(),
            summary: summary.clone(),
            status: "received".into(),
            statuses: vec![],
            error: m.errors.first().map(|e| ErrorInfo {
                code: e.code,
                title: e.title.clone().or(e.message.clone()).unwrap_or_default(),
                details: e.details.clone(),
                explanation: explain(e.code),
            }),
            timestamp: m.timestamp,
            stored_at_ms: now_ms(),
            delivery_id: Some(delivery_id),
            content: serde_json::to_value(&m.content).unwrap_or(Value::Null),
            context: m.context.as_ref().and_then(|c| serde_json::to_value(c).ok()),
            raw: m.raw.clone(),
            response: None,
            attempts: 0,
            media_file: None,
            origin: None,
            script: None,
            phone_number_id: phone_number_id.map(str::to_string),
            record: None,
        };
        self.take_orphans(&mut record, explain)?;
        self.put_message(&record)?;
        inbox::index_message(&mut self.idx, &record)?;
        self.wamids.insert(m.id.as_str(), id)?;
        self.conversation_messages.insert((conv.contact.as_str(), id), ())?;
        if let crate::webhook::payload::Content::System {
            new_wa_id: Some(new_phone),
            system_type,
            ..
        } = &m.content
            && system_type.as_deref() == Some("user_changed_number")
        {
            // The customer changed numbers: the conversation follows them.
            self.aliases.insert(new_phone.as_str(), conv.contact.as_str())?;
            conv.wa_id = Some(new_phone.clone());
        }
        conv.message_count += 1;
        conv.inbound_total += 1;
        self.campaign_replied(&conv.contact, m.timestamp)?;
        conv.inbound(phone_number_id, m.timestamp);
        if m.timestamp >= conv.last_message_at {
            conv.last_message_at = m.timestamp;
            conv.last_summary = summary;
        }
        self.put_conversation(&conv)?;
        report.new_messages.push(id);
        report.new_kinds.push(m.kind.clone());
        Ok(())
    }

    /// Applies statuses that arrived before their message.
    fn take_orphans(&mut self, record: &mut MessageRecord, explain: &dyn Fn(i64) -> String) -> Result<()> {
        let Some(wamid) = record.wamid.clone() else {
            return Ok(());
        };
        let orphans: Option<Vec<StatusEntry>> = {
            let row = self.orphans.remove(wamid.as_str())?;
            row.map(|v| decode("orphan_statuses", v.value())).transpose()?
        };
        for entry in orphans.unwrap_or_default() {
            record.apply_status(entry, explain);
        }
        Ok(())
    }

    fn apply_status(
        &mut self,
        s: &StatusUpdate,
        explain: &dyn Fn(i64) -> String,
        report: &mut ApplyReport,
    ) -> Result<()> {
        let entry = StatusEntry {
            status: s.status.clone(),
            timestamp: s.timestamp,
            errors: s.errors.clone(),
            conversation: s.conversation.clone(),
            pricing: s.pricing.clone(),
        };
        let mut id = self.wamids.get(s.id.as_str())?.map(|v| v.value());
        if id.is_none() {
            id = self.reconcile_by_callback(s)?;
        }
        match id {
            Some(id) => {
                if let Some(mut m) = self.get_message(id)? {
                    if m.apply_status(entry, explain) {
                        tracing::debug!(message_id = id, wamid = %s.id, status = %m.status, "status applied");
                    }
                    self.put_message(&m)?;
                }
                report.statuses_applied += 1;
            }
            None => {
                let mut list: Vec<StatusEntry> = {
                    let row = self.orphans.get(s.id.as_str())?;
                    row.map(|v| decode("orphan_statuses", v.value()))
                        .transpose()?
                        .unwrap_or_default()
                };
                if !list.contains(&entry) {
                    list.push(entry);
                }
                self.orphans.insert(s.id.as_str(), encode(&list).as_slice())?;
                tracing::info!(wamid = %s.id, status = %s.status, "status for an unknown wamid kept until its message appears");
                report.statuses_orphaned += 1;
            }
        }
        Ok(())
    }

    /// A status for an unknown wamid that carries walua's callback data belongs to a message
    /// whose send was interrupted before Meta's answer was recorded: attach the wamid to it.
    fn reconcile_by_callback(&mut self, s: &StatusUpdate) -> Result<Option<u64>> {
        let Some(id) = s
            .raw
            .get("biz_opaque_callback_data")
            .and_then(Value::as_str)
            .and_then(|c| c.strip_prefix(outbox::CALLBACK_PREFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return Ok(None);
        };
        let Some(mut m) = self.get_message(id)? else {
            return Ok(None);
        };
        if m.direction != Direction::Outbound || m.wamid.is_some() {
            return Ok(None);
        }
        m.wamid = Some(s.id.clone());
        if m.status == "unknown" {
            m.error = None;
        }
        self.put_message(&m)?;
        self.wamids.insert(s.id.as_str(), id)?;
        tracing::info!(message_id = id, wamid = %s.id, "interrupted send reconciled from a status webhook");
        Ok(Some(id))
    }

    fn insert_event(&mut self, delivery_id: u64, field: &str, value: Value) -> Result<()> {
        let id = next_ids(&mut self.sequences, "event", 1)?;
        tracing::info!(event = id, delivery = delivery_id, field, "webhook event kept raw");
        let record = EventRecord {
            id,
            field: field.to_string(),
            value,
            delivery_id,
            stored_at_ms: now_ms(),
        };
        self.events.insert(id, encode(&record).as_slice())?;
        Ok(())
    }
}
