//! The console's indexes and reads: conversations by recency (cursor pagination), unread and
//! failed-send counters kept on the conversation, and a prefix search over contacts and
//! message texts. The conversation indexes are maintained in the transaction that changes
//! what they index, through one choke point per kind of write: [`write_conversation`] (every
//! conversation write) and [`remove_conversation`] (merges). A new message only queues its
//! searchable text ([`index_message`]: one row appended to [`SEARCH_PENDING`] in the
//! message's own transaction); the search indexer (`crate::search_index`) moves the queue
//! into [`SEARCH_MESSAGES`] in large transactions ([`Store::index_pending`]), so message
//! search lags the store by that task's pace (under a second; nothing is lost on a crash:
//! the queue commits with the message, and what it holds at open is indexed then).
//!
//! What each index costs is stated beside its table; `benches/console_history.rs` measures it
//! on 100,000 conversations and 1,000,000 messages (figures in the README).

use std::collections::HashSet;
use std::ops::Bound;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction};
use serde::Deserialize;
use serde_json::Value;

use super::{
    CONSOLE_SEEN, CONVERSATION_MESSAGES, CONVERSATIONS, Conversation, Direction, MESSAGES, META, MessageRecord, Result,
    SCENARIOS, ScenarioState, Store, console::CONSOLE_READ, decode, encode,
};

/// (unix seconds of the conversation's latest message, conversation key) → (). The inbox
/// reads it backwards from a cursor, so a page costs `limit` conversation reads whatever the
/// store's size. One row per conversation (~30–60 bytes with redb's overhead); a conversation
/// write that moves `last_message_at` deletes the old row and inserts the new one (the old
/// time is read from the record being replaced, which every writer reads anyway).
pub(super) const CONVERSATIONS_BY_RECENCY: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("conversations_by_recency");
/// (folded word, conversation key) → (): the contacts' searchable words — name words, the
/// username, the phone digits (whole, and the last nine: the national number), the BSUID.
/// A handful of rows per conversation, rewritten only when one of those fields changes.
pub(super) const SEARCH_CONTACTS: TableDefinition<(&str, &str), ()> = TableDefinition::new("search_contacts");
/// (folded word, message id) → (): the words of each message's text (bodies, captions,
/// button and list titles, template parameter values), written once by the search indexer;
/// about one row per distinct word (the bench prints the bytes per message).
pub(super) const SEARCH_MESSAGES: TableDefinition<(&str, u64), ()> = TableDefinition::new("search_messages");
/// Message id → its searchable text ([`message_text`]), not yet in [`SEARCH_MESSAGES`]:
/// appended in the transaction that stores the message (ids grow, so the row lands on the
/// table's last page), taken out by [`Store::index_pending`] in the transaction that writes
/// its words. Empty whenever the indexer has caught up.
pub(super) const SEARCH_PENDING: TableDefinition<u64, &str> = TableDefinition::new("search_pending");

/// `META` key set once the indexes above cover the whole store (see [`migrate`]).
const INDEXED: &str = "console_indexes";
/// The version of the indexes written under [`INDEXED`].
const INDEX_VERSION: &[u8] = b"1";
/// Conversations whose messages one migration transaction indexes.
const MIGRATION_CHUNK: usize = 2_000;

/// Conversations a filtered inbox request looks at before it answers with what it found and
/// a cursor where it stopped: a filter matching few conversations never scans the whole store.
/// 500 keeps the dearest filter (`failed`: one message read per conversation) under 50 ms
/// on the bench's history.
pub const INBOX_SCAN: usize = 500;
/// Matches of one search word read, newest first, before the rest is ignored.
const SEARCH_CAP: usize = 2_000;
/// Distinct indexed words one query word may match as a prefix (`ma` → `mariam`, `maison`…).
const PREFIX_WORDS: usize = 64;
/// Longest indexed word, in bytes (longer words are cut: a prefix still finds them).
const WORD_MAX: usize = 40;

/// The index tables one write transaction maintains.
pub(super) struct ConvIndex<'txn> {
    recency: Table<'txn, (i64, &'static str), ()>,
    contact_words: Table<'txn, (&'static str, &'static str), ()>,
    pending: Table<'txn, u64, &'static str>,
    /// Off only for the bench's "without indexes" figure ([`Store::set_indexing`]).
    on: bool,
}

/// Whether writes maintain the indexes: always, but in the bench's "without indexes" run
/// ([`Store::set_indexing`]; process-wide, so that write paths need no extra argument).
static INDEXING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

impl<'txn> ConvIndex<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        Ok(ConvIndex {
            recency: txn.open_table(CONVERSATIONS_BY_RECENCY)?,
            contact_words: txn.open_table(SEARCH_CONTACTS)?,
            pending: txn.open_table(SEARCH_PENDING)?,
            on: INDEXING.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

/// The fields of a stored conversation the indexes depend on, decoded without the rest.
#[derive(Deserialize)]
struct Indexed {
    contact: String,
    #[serde(default)]
    last_message_at: i64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    wa_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
}

impl Indexed {
    fn of(c: &Conversation) -> Indexed {
        Indexed {
            contact: c.contact.clone(),
            last_message_at: c.last_message_at,
            name: c.name.clone(),
            username: c.username.clone(),
            wa_id: c.wa_id.clone(),
            user_id: c.user_id.clone(),
        }
    }

    /// Whether `c` has the fields the contact words come from as they are here (then its
    /// words are these ones: nothing to compute or rewrite).
    fn same_words_as(&self, c: &Conversation) -> bool {
        self.contact == c.contact
            && self.name == c.name
            && self.username == c.username
            && self.wa_id == c.wa_id
            && self.user_id == c.user_id
    }

    fn words(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = &self.name {
            out.extend(words(n));
        }
        if let Some(u) = &self.username {
            let folded = fold(u);
            out.extend(words(&folded));
            out.push(cut(&folded).to_string());
        }
        for phone in [&self.wa_id, &Some(self.contact.clone())].into_iter().flatten() {
            if !phone.is_empty() && phone.bytes().all(|b| b.is_ascii_digit()) {
                out.push(phone.clone());
                if phone.len() > 9 {
                    out.push(phone[phone.len() - 9..].to_string());
                }
            }
        }
        for id in [&self.user_id, &Some(self.contact.clone())].into_iter().flatten() {
            if !id.bytes().all(|b| b.is_ascii_digit()) {
                // Whole (`sn.9988…`) and in parts (`sn`, `9988…`), so `SN.9988` finds it.
                out.push(cut(&fold(id)).to_string());
                out.extend(words(id));
            }
        }
        out.retain(|w| !w.is_empty());
        out.sort();
        out.dedup();
        out
    }
}

/// Writes a conversation record and keeps its index rows right: the only way conversations
/// are written (inbound, outbound, merges, handover, renormalisation).
pub(super) fn write_conversation(
    conversations: &mut Table<'_, &'static str, &'static [u8]>,
    idx: &mut ConvIndex<'_>,
    c: &Conversation,
) -> Result<()> {
    let old: Option<Indexed> = if idx.on {
        // A record that does not decode (corrupt) is replaced; its index rows, unknown, stay.
        let row = conversations.get(c.contact.as_str())?;
        row.and_then(|v| serde_json::from_slice(v.value()).ok())
    } else {
        None
    };
    conversations.insert(c.contact.as_str(), encode(c).as_slice())?;
    if idx.on {
        index_conversation(idx, old.as_ref(), c)?;
    }
    Ok(())
}

/// Moves a conversation's index rows from `old` (as stored before, `None`: not indexed) to `c`.
fn index_conversation(idx: &mut ConvIndex<'_>, old: Option<&Indexed>, c: &Conversation) -> Result<()> {
    let key = c.contact.as_str();
    match old {
        Some(o) if o.last_message_at == c.last_message_at => {}
        Some(o) => {
            idx.recency.remove((o.last_message_at, key))?;
            idx.recency.insert((c.last_message_at, key), ())?;
        }
        None => {
            idx.recency.insert((c.last_message_at, key), ())?;
        }
    }
    if old.is_some_and(|o| o.same_words_as(c)) {
        return Ok(());
    }
    let new_words = Indexed::of(c).words();
    let old_words = old.map(Indexed::words);
    if old_words.as_ref() != Some(&new_words) {
        for w in old_words.iter().flatten() {
            idx.contact_words.remove((w.as_str(), key))?;
        }
        for w in &new_words {
            idx.contact_words.insert((w.as_str(), key), ())?;
        }
    }
    Ok(())
}

/// Deletes a conversation record (merged into another) and its index rows.
pub(super) fn remove_conversation(
    conversations: &mut Table<'_, &'static str, &'static [u8]>,
    idx: &mut ConvIndex<'_>,
    key: &str,
) -> Result<()> {
    let old: Option<Indexed> = {
        let row = conversations.remove(key)?;
        row.map(|v| decode("conversations", v.value())).transpose()?
    };
    if let (Some(o), true) = (old, idx.on) {
        idx.recency.remove((o.last_message_at, key))?;
        for w in o.words() {
            idx.contact_words.remove((w.as_str(), key))?;
        }
    }
    Ok(())
}

/// Queues the searchable text of a new message for the search indexer (nothing for a
/// message without text: a sticker, an image without caption).
pub(super) fn index_message(idx: &mut ConvIndex<'_>, m: &MessageRecord) -> Result<()> {
    if idx.on {
        let text = message_text(&m.raw);
        if !text.is_empty() {
            idx.pending.insert(m.id, text.as_str())?;
        }
    }
    Ok(())
}

/// Messages [`Store::index_pending`] takes per transaction, at most.
pub const INDEX_BATCH: usize = 20_000;

impl Store {
    /// Moves up to `limit` messages from the search queue into the message word index, in
    /// one transaction (words sorted, so that rows sharing a page are written together).
    /// Returns how many it indexed; fewer than `limit` means the queue is empty.
    ///
    /// Not fsynced on its own, like the processor's commits: a crash before the next durable
    /// commit rolls the queue back with the words, and they are indexed again (the rows are
    /// keys: writing one twice changes nothing).
    pub fn index_pending(&self, limit: usize) -> Result<usize> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| super::StoreError::Redb(redb::Error::from(e)))?;
        let mut taken = 0;
        {
            let mut pending = txn.open_table(SEARCH_PENDING)?;
            let mut rows: Vec<(String, u64)> = Vec::new();
            while taken < limit {
                let Some((id, text)) = pending.pop_first()? else { break };
                let id = id.value();
                rows.extend(words(text.value()).into_iter().map(|w| (w, id)));
                taken += 1;
            }
            if taken > 0 {
                rows.sort_unstable();
                let mut index = txn.open_table(SEARCH_MESSAGES)?;
                for (w, id) in &rows {
                    index.insert((w.as_str(), *id), ())?;
                }
            }
        }
        if taken == 0 {
            txn.abort()?;
        } else {
            txn.commit()?;
        }
        Ok(taken)
    }

    /// Messages stored and not yet searchable (the search indexer's backlog).
    pub fn search_backlog(&self) -> Result<u64> {
        let txn = self.db()?.begin_read()?;
        Ok(txn.open_table(SEARCH_PENDING)?.len()?)
    }
}

// ---------------------------------------------------------------- words

/// Lowercases and folds accents (`Élodie` → `elodie`, `cœur` → `coeur`), for indexing and
/// for queries alike.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
            continue;
        }
        let f: &str = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'ā' | 'Ā' => "a",
            'ç' | 'Ç' | 'ć' | 'č' | 'Č' => "c",
            'è' | 'é' | 'ê' | 'ë' | 'È' | 'É' | 'Ê' | 'Ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
            'ì' | 'í' | 'î' | 'ï' | 'Ì' | 'Í' | 'Î' | 'Ï' | 'ī' => "i",
            'ñ' | 'Ñ' | 'ń' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' | 'ō' => "o",
            'ù' | 'ú' | 'û' | 'ü' | 'Ù' | 'Ú' | 'Û' | 'Ü' | 'ū' => "u",
            'ý' | 'ÿ' | 'Ý' | 'Ÿ' => "y",
            'œ' | 'Œ' => "oe",
            'æ' | 'Æ' => "ae",
            'ß' => "ss",
            '’' | '‘' => "'",
            _ => {
                out.extend(c.to_lowercase());
                continue;
            }
        };
        out.push_str(f);
    }
    out
}

fn cut(w: &str) -> &str {
    if w.len() <= WORD_MAX {
        return w;
    }
    let mut end = WORD_MAX;
    while !w.is_char_boundary(end) {
        end -= 1;
    }
    &w[..end]
}

/// The searchable words of a text: folded, split on anything not a letter or digit, at least
/// two characters, cut at [`WORD_MAX`] bytes, each once.
pub fn words(text: &str) -> Vec<String> {
    let folded = fold(text);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for w in folded.split(|c: char| !c.is_alphanumeric()) {
        if w.chars().nth(1).is_none() {
            continue;
        }
        let w = cut(w);
        if seen.insert(w) {
            out.push(w.to_string());
        }
    }
    out
}

/// The text of a message a person would search: text bodies, captions, file names, button and
/// list titles, template parameter values, a location's name and address — taken from the raw
/// copy (Meta's message object or the Graph API body).
pub fn message_text(raw: &Value) -> String {
    fn walk(v: &Value, key: &str, depth: u8, out: &mut String) {
        if depth > 8 {
            return;
        }
        match v {
            Value::String(s) => {
                if matches!(
                    key,
                    "body" | "caption" | "filename" | "title" | "description" | "text" | "address" | "location.name"
                ) {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(s);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, key, depth + 1, out)),
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "context" || k == "id" || k == "payload" {
                        continue;
                    }
                    let k = if key == "location" && k == "name" {
                        "location.name"
                    } else {
                        k.as_str()
                    };
                    walk(v, k, depth + 1, out);
                }
            }
            _ => {}
        }
    }
    let mut out = String::new();
    walk(raw, "", 0, &mut out);
    out
}

fn message_words(raw: &Value) -> Vec<String> {
    words(&message_text(raw))
}

// ---------------------------------------------------------------- migration

/// Builds the indexes of a store written before them, once (marked in `META`), in
/// transactions of [`MIGRATION_CHUNK`] conversations: counters (`inbound_total`,
/// `last_outbound`), the team's seen counts from `console_read`, the recency rows and the
/// search words. Every step writes values, never increments, so a migration interrupted by a
/// crash is simply run again. Returns how many conversations it indexed (0: nothing to do).
pub(super) fn migrate(store: &Store) -> Result<usize> {
    let db = store.db()?;
    let keys: Vec<String> = {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        if meta.get(INDEXED)?.is_some_and(|v| v.value() == INDEX_VERSION) {
            return Ok(0);
        }
        let conversations = txn.open_table(CONVERSATIONS)?;
        let mut keys = Vec::with_capacity(conversations.len()? as usize);
        for row in conversations.iter()? {
            keys.push(row?.0.value().to_string());
        }
        keys
    };
    let start = std::time::Instant::now();
    tracing::info!(conversations = keys.len(), "building the console indexes (once)");
    for chunk in keys.chunks(MIGRATION_CHUNK) {
        let txn = db.begin_write()?;
        {
            let mut conversations = txn.open_table(CONVERSATIONS)?;
            let mut idx = ConvIndex::open(&txn)?;
            idx.on = true;
            let mut message_words_table = txn.open_table(SEARCH_MESSAGES)?;
            let index = txn.open_table(CONVERSATION_MESSAGES)?;
            let messages = txn.open_table(MESSAGES)?;
            let read = txn.open_table(CONSOLE_READ)?;
            let mut seen = txn.open_table(CONSOLE_SEEN)?;
            for key in chunk {
                let conv: Option<Conversation> = {
                    let row = conversations.get(key.as_str())?;
                    row.map(|v| decode("conversations", v.value())).transpose()?
                };
                let Some(mut conv) = conv else { continue };
                let read_upto = read.get(key.as_str())?.map(|v| v.value()).unwrap_or(0);
                let (mut inbound, mut inbound_seen, mut last_outbound) = (0u64, 0u64, None);
                for row in index.range((key.as_str(), 0)..=(key.as_str(), u64::MAX))? {
                    let id = row?.0.value().1;
                    let Some(m) = messages.get(id)? else { continue };
                    let m: MessageRecord = decode("messages", m.value())?;
                    match m.direction {
                        Direction::Inbound => {
                            inbound += 1;
                            if id <= read_upto {
                                inbound_seen += 1;
                            }
                        }
                        Direction::Outbound => last_outbound = Some(id),
                    }
                    for w in message_words(&m.raw) {
                        message_words_table.insert((w.as_str(), id), ())?;
                    }
                }
                conv.inbound_total = inbound;
                conv.last_outbound = last_outbound;
                conversations.insert(key.as_str(), encode(&conv).as_slice())?;
                index_conversation(&mut idx, None, &conv)?;
                if read_upto > 0 {
                    seen.insert(key.as_str(), inbound_seen)?;
                }
            }
        }
        txn.commit()?;
    }
    let txn = db.begin_write()?;
    txn.open_table(META)?.insert(INDEXED, INDEX_VERSION)?;
    txn.commit()?;
    tracing::info!(
        conversations = keys.len(),
        took_ms = start.elapsed().as_millis() as u64,
        "console indexes built"
    );
    Ok(keys.len())
}

// ---------------------------------------------------------------- reads

/// Which conversations the inbox shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxFilter {
    /// Every conversation.
    All,
    /// With messages the team has not seen.
    Unread,
    /// The 24 h window is open.
    Open,
    /// The latest send failed.
    Failed,
    /// An agent holds it.
    Handover,
}

impl InboxFilter {
    /// The filter a query value names (`unread`, `open`, `failed`, `handover`); anything else
    /// is [`InboxFilter::All`].
    pub fn parse(s: &str) -> InboxFilter {
        match s {
            "unread" => InboxFilter::Unread,
            "open" => InboxFilter::Open,
            "failed" => InboxFilter::Failed,
            "handover" => InboxFilter::Handover,
            _ => InboxFilter::All,
        }
    }
}

/// One conversation of the inbox, with what its row shows.
#[derive(Debug, Clone)]
pub struct InboxRow {
    /// The conversation.
    pub conv: Conversation,
    /// Inbound messages the team has not seen.
    pub unread: u64,
    /// The latest outbound message failed.
    pub failed: bool,
    /// The contact's scenario, if one is active.
    pub scenario: Option<ScenarioState>,
}

/// A page of the inbox.
#[derive(Debug, Clone, Default)]
pub struct InboxPage {
    /// The rows, most recent first.
    pub rows: Vec<InboxRow>,
    /// Where the next page starts (`?after=`), `None` at the end.
    pub next: Option<String>,
}

/// A page of a conversation's messages.
#[derive(Debug, Clone, Default)]
pub struct ThreadPage {
    /// Messages, oldest first.
    pub messages: Vec<MessageRecord>,
    /// Older messages exist: the next page is `?before=` this id (the oldest shown).
    pub older: Option<u64>,
    /// Newer messages exist than those shown (an older page, or around a message).
    pub newer: bool,
    /// The conversation's inbound messages, as of the same read.
    pub inbound_total: u64,
}

/// Which messages of a conversation to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadAnchor {
    /// The latest.
    Latest,
    /// Those before this message id.
    Before(u64),
    /// Those around this message id (a search result).
    Around(u64),
}

/// What a search found.
#[derive(Debug, Clone, Default)]
pub struct SearchHits {
    /// Contacts whose name, username, phone or BSUID match, most recent first.
    pub conversations: Vec<Conversation>,
    /// Messages whose text matches, newest first.
    pub messages: Vec<MessageHit>,
}

/// A message a search found.
#[derive(Debug, Clone)]
pub struct MessageHit {
    /// The message id.
    pub id: u64,
    /// Its conversation key.
    pub contact: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Unix seconds.
    pub timestamp: i64,
    /// The matching text, cut around the first match.
    pub snippet: String,
    /// Its conversation (for the contact's name).
    pub conversation: Option<Conversation>,
}

/// The cursor of a conversation in the recency index: `SECONDS.KEY`.
pub fn inbox_cursor(last_message_at: i64, contact: &str) -> String {
    format!("{last_message_at}.{contact}")
}

fn parse_cursor(s: &str) -> Option<(i64, &str)> {
    let (ts, key) = s.split_once('.')?;
    Some((ts.parse().ok()?, key))
}

#[derive(Deserialize)]
struct StatusOnly {
    status: String,
}

impl Store {
    /// Turns the index writes off (on by default) in the whole process, for the bench's
    /// "without indexes" write cost only: a store written so has incomplete indexes.
    #[doc(hidden)]
    pub fn set_indexing(&self, on: bool) {
        INDEXING.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes the store as a walua from before the console indexes left it — index tables, seen
    /// counts and the `META` mark gone, conversations without their counters — so that the next
    /// open migrates it (tests of the migration).
    #[doc(hidden)]
    pub fn strip_console_indexes(&self) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            for name in [
                "conversations_by_recency",
                "search_contacts",
                "search_messages",
                "search_pending",
                "console_seen",
            ] {
                let _ = txn.delete_table(TableDefinition::<&str, ()>::new(name));
            }
            txn.open_table(META)?.remove(INDEXED)?;
            let mut conversations = txn.open_table(CONVERSATIONS)?;
            let mut all = Vec::new();
            for row in conversations.iter()? {
                let (k, v) = row?;
                all.push((
                    k.value().to_string(),
                    decode::<Conversation>("conversations", v.value())?,
                ));
            }
            for (k, mut c) in all {
                c.inbound_total = 0;
                c.last_outbound = None;
                conversations.insert(k.as_str(), encode(&c).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A page of the inbox, most recent first, after `cursor` (from a previous page's
    /// `next`), reading the recency index backwards: at most `limit` rows, and at most
    /// [`INBOX_SCAN`] conversations looked at (a filter that matches few answers with what it
    /// found and a cursor where it stopped). The `Open` filter stops at the 24 h boundary.
    pub fn inbox_page(
        &self,
        filter: InboxFilter,
        cursor: Option<&str>,
        limit: usize,
        now_ms: i64,
    ) -> Result<InboxPage> {
        let txn = self.db()?.begin_read()?;
        let recency = txn.open_table(CONVERSATIONS_BY_RECENCY)?;
        let conversations = txn.open_table(CONVERSATIONS)?;
        let seen = txn.open_table(CONSOLE_SEEN)?;
        let messages = txn.open_table(MESSAGES)?;
        let scenarios = txn.open_table(SCENARIOS)?;
        let now_s = now_ms / 1000;
        let upper = match cursor.and_then(parse_cursor) {
            Some((ts, key)) => Bound::Excluded((ts, key)),
            None => Bound::Unbounded,
        };
        let mut page = InboxPage::default();
        let mut scanned = 0;
        let mut iter = recency
            .range::<(i64, &str)>((Bound::Unbounded, upper))?
            .rev()
            .peekable();
        while let Some(row) = iter.next() {
            let row = row?.0;
            let (ts, key) = row.value();
            if filter == InboxFilter::Open && now_s - ts >= super::outbox::WINDOW_SECS {
                break;
            }
            scanned += 1;
            let conv: Option<Conversation> = {
                let row = conversations.get(key)?;
                row.map(|v| decode("conversations", v.value())).transpose()?
            };
            if let Some(conv) = conv {
                let unread = conv
                    .inbound_total
                    .saturating_sub(seen.get(key)?.map(|v| v.value()).unwrap_or(0));
                let failed = match conv.last_outbound {
                    Some(id) => match messages.get(id)? {
                        Some(m) => decode::<StatusOnly>("messages", m.value())?.status == "failed",
                        None => false,
                    },
                    None => false,
                };
                let keep = match filter {
                    InboxFilter::All => true,
                    InboxFilter::Unread => unread > 0,
                    InboxFilter::Open => super::outbox::window_open(Some(&conv), None, now_s),
                    InboxFilter::Failed => failed,
                    InboxFilter::Handover => conv.active_handover(now_ms).is_some(),
                };
                if keep {
                    let scenario: Option<ScenarioState> = {
                        let row = scenarios.get(key)?;
                        row.map(|v| decode("scenarios", v.value())).transpose()?
                    };
                    page.rows.push(InboxRow {
                        scenario: scenario.filter(|s| s.expires_ms > now_ms),
                        conv,
                        unread,
                        failed,
                    });
                }
            }
            if page.rows.len() >= limit || (filter != InboxFilter::All && scanned >= INBOX_SCAN) {
                let more = match iter.peek() {
                    Some(Ok(next)) => {
                        !(filter == InboxFilter::Open && now_s - next.0.value().0 >= super::outbox::WINDOW_SECS)
                    }
                    Some(Err(_)) => true,
                    None => false,
                };
                if more {
                    page.next = Some(inbox_cursor(ts, key));
                }
                break;
            }
        }
        Ok(page)
    }

    /// A page of `contact`'s messages (oldest first): the latest `limit`, those before a
    /// message, or those around one. `None` when the contact is unknown.
    pub fn conversation_window(&self, contact: &str, anchor: ThreadAnchor, limit: usize) -> Result<Option<ThreadPage>> {
        let txn = self.db()?.begin_read()?;
        let Some(key) = super::resolve_alias(&txn.open_table(super::CONTACT_ALIASES)?, contact)? else {
            return Ok(None);
        };
        let inbound_total = {
            let conversations = txn.open_table(CONVERSATIONS)?;
            let row = conversations.get(key.as_str())?;
            row.map(|v| decode::<Conversation>("conversations", v.value()))
                .transpose()?
                .map_or(0, |c| c.inbound_total)
        };
        let index = txn.open_table(CONVERSATION_MESSAGES)?;
        let k = key.as_str();
        let (upper, newer) = match anchor {
            ThreadAnchor::Latest => (u64::MAX, false),
            ThreadAnchor::Before(id) => (id.saturating_sub(1), true),
            ThreadAnchor::Around(id) => {
                // A quarter of the page after the message, the rest before it.
                let after: Vec<u64> = index
                    .range((k, id.saturating_add(1))..=(k, u64::MAX))?
                    .take((limit / 4).max(1) + 1)
                    .map(|r| r.map(|r| r.0.value().1))
                    .collect::<std::result::Result<_, _>>()?;
                let quarter = (limit / 4).max(1);
                if after.len() > quarter {
                    (after[quarter - 1], true)
                } else {
                    (u64::MAX, false)
                }
            }
        };
        let mut ids: Vec<u64> = Vec::with_capacity(limit + 1);
        for row in index.range((k, 0)..=(k, upper))?.rev().take(limit + 1) {
            ids.push(row?.0.value().1);
        }
        let older = if ids.len() > limit {
            ids.truncate(limit);
            ids.last().copied()
        } else {
            None
        };
        ids.reverse();
        let reader = super::MessageReader::open(&txn)?;
        let mut messages = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = reader.get(id)? {
                messages.push(m);
            }
        }
        Ok(Some(ThreadPage {
            messages,
            older,
            newer,
            inbound_total,
        }))
    }

    /// Searches contacts (name, username, phone digits, BSUID) and message texts for every
    /// word of `query`, each as a prefix, accents and case folded: at most `limit`
    /// conversations (most recent first) and `limit` messages (newest first). A word matches
    /// at most [`PREFIX_WORDS`] indexed words and its [`SEARCH_CAP`] newest matches are read.
    pub fn search(&self, query: &str, limit: usize) -> Result<SearchHits> {
        let terms = query_terms(query);
        let mut hits = SearchHits::default();
        if terms.is_empty() || limit == 0 {
            return Ok(hits);
        }
        let txn = self.db()?.begin_read()?;
        let conversations = txn.open_table(CONVERSATIONS)?;
        let get_conv = |key: &str| -> Result<Option<Conversation>> {
            let row = conversations.get(key)?;
            row.map(|v| decode("conversations", v.value())).transpose()
        };

        // Contacts: every term must match one of the contact's words.
        let contact_words = txn.open_table(SEARCH_CONTACTS)?;
        let mut sets: Vec<(HashSet<String>, bool, &String)> = Vec::new();
        for t in &terms {
            let (set, complete) = contact_postings(&contact_words, t)?;
            sets.push((set, complete, t));
        }
        sets.sort_by_key(|(s, _, _)| s.len());
        if let Some(((first, _, _), rest)) = sets.split_first() {
            // Ranked on the fields the index needs (a partial decode), fully read for the page.
            let mut ranked: Vec<(i64, &String)> = Vec::new();
            for key in first {
                let indexed: Option<Indexed> = {
                    let row = conversations.get(key.as_str())?;
                    row.and_then(|v| serde_json::from_slice(v.value()).ok())
                };
                let Some(indexed) = indexed else { continue };
                let ok = rest.iter().all(|(set, complete, t)| {
                    set.contains(key) || (!complete && indexed.words().iter().any(|w| w.starts_with(t.as_str())))
                });
                if ok {
                    ranked.push((indexed.last_message_at, key));
                }
            }
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            for (_, key) in ranked.into_iter().take(limit) {
                if let Some(c) = get_conv(key)? {
                    hits.conversations.push(c);
                }
            }
        }

        // Messages: candidates from the rarest term, newest first; the others checked.
        let message_words_table = txn.open_table(SEARCH_MESSAGES)?;
        let mut lists: Vec<(Vec<u64>, bool, &String)> = Vec::new();
        for t in &terms {
            let (ids, complete) = message_postings(&message_words_table, t)?;
            lists.push((ids, complete, t));
        }
        lists.sort_by_key(|(ids, _, _)| ids.len());
        let messages = super::MessageReader::open(&txn)?;
        let (first, rest) = lists.split_first().expect("terms is not empty");
        let sets: Vec<(HashSet<u64>, bool, &String)> = rest
            .iter()
            .map(|(ids, complete, t)| (ids.iter().copied().collect(), *complete, *t))
            .collect();
        for &id in &first.0 {
            if hits.messages.len() >= limit {
                break;
            }
            if sets.iter().any(|(set, complete, _)| *complete && !set.contains(&id)) {
                continue;
            }
            let Some(m) = messages.get(id)? else { continue };
            let text = message_text(&m.raw);
            let mine = words(&text);
            let ok = sets.iter().all(|(set, complete, t)| {
                set.contains(&id) || (!complete && mine.iter().any(|w| w.starts_with(t.as_str())))
            });
            if !ok {
                continue;
            }
            hits.messages.push(MessageHit {
                id,
                direction: m.direction,
                timestamp: m.timestamp,
                snippet: snippet(&text, first.2),
                conversation: get_conv(&m.contact)?,
                contact: m.contact,
            });
        }
        Ok(hits)
    }

    /// Sizes of the console's index tables: (name, entries, bytes stored, bytes of redb's
    /// own pages and fragmentation), for the bench.
    #[doc(hidden)]
    pub fn console_index_sizes(&self) -> Result<Vec<(&'static str, u64, u64, u64)>> {
        let txn = self.db()?.begin_write()?;
        let mut out = Vec::new();
        macro_rules! size {
            ($name:expr, $def:expr) => {{
                let t = txn.open_table($def)?;
                let s = t.stats()?;
                out.push((
                    $name,
                    t.len()?,
                    s.stored_bytes(),
                    s.metadata_bytes() + s.fragmented_bytes(),
                ));
            }};
        }
        size!("messages", MESSAGES);
        size!("conversations", CONVERSATIONS);
        size!("conversation_messages", CONVERSATION_MESSAGES);
        size!("conversations_by_recency", CONVERSATIONS_BY_RECENCY);
        size!("search_contacts", SEARCH_CONTACTS);
        size!("search_messages", SEARCH_MESSAGES);
        size!("console_seen", CONSOLE_SEEN);
        txn.abort()?;
        Ok(out)
    }
}

/// One item of a generated history ([`Store::import_history`], the bench's store).
#[doc(hidden)]
pub enum HistoryItem {
    /// A delivery from Meta (messages and statuses), applied as the processor does, without
    /// queueing script runs or media downloads.
    Delivery(u64, crate::webhook::payload::Delivery),
    /// An outbound message sent at `at_ms`, accepted by Meta as `wamid`.
    Outbound {
        /// The message.
        new: Box<super::outbox::NewOutbound>,
        /// When it was queued (unix ms).
        at_ms: i64,
        /// Meta's id for it.
        wamid: String,
    },
}

impl Store {
    /// Writes a generated history through the store's own write paths (inbound apply, outbound
    /// insert, Meta's acceptance, statuses), in ONE transaction without fsync (bench only).
    #[doc(hidden)]
    pub fn import_history(&self, items: &[HistoryItem]) -> Result<()> {
        use crate::webhook::payload::Change;
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| super::StoreError::Redb(redb::Error::from(e)))?;
        {
            let mut t = super::Tables::open(&txn, &self.message_ids)?;
            let mut outbox = txn.open_table(super::outbox::OUTBOX)?;
            let mut report = super::ApplyReport::default();
            let explain = crate::explain_error;
            for item in items {
                match item {
                    HistoryItem::Delivery(id, d) => {
                        for change in &d.changes {
                            if let Change::Messages(v) = change {
                                for m in &v.messages {
                                    let sender = v.sender_of(m);
                                    t.insert_inbound(
                                        *id,
                                        m,
                                        sender.as_ref(),
                                        v.phone_number_id.as_deref(),
                                        &explain,
                                        &mut report,
                                    )?;
                                }
                                for s in &v.statuses {
                                    t.apply_status(s, &explain, &mut report)?;
                                }
                            }
                        }
                    }
                    HistoryItem::Outbound { new, at_ms, wamid } => {
                        t.insert_outbound_at(&mut outbox, new, *at_ms)?;
                        let accepted = super::outbox::SendOutcome::Accepted {
                            id: new.id,
                            wamid: wamid.clone(),
                            response: serde_json::json!({"messages": [{"id": wamid}]}),
                        };
                        t.record_outcome(&mut outbox, &accepted, &explain)?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// The words of a query: folded; a query that is a phone number (`+221 77 12`) is one
/// word of its digits.
fn query_terms(query: &str) -> Vec<String> {
    let q = query.trim();
    let phone_like = q.chars().any(|c| c.is_ascii_digit())
        && q.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '+' | '-' | '.' | '(' | ')'));
    if phone_like {
        let digits: String = q.chars().filter(char::is_ascii_digit).collect();
        return if digits.len() >= 2 { vec![digits] } else { vec![] };
    }
    let mut terms = words(q);
    // `ab` in `ab abc` adds nothing.
    terms.sort_by_key(|t| std::cmp::Reverse(t.len()));
    let mut kept: Vec<String> = Vec::new();
    for t in terms {
        if !kept.iter().any(|k| k.starts_with(t.as_str())) {
            kept.push(t);
        }
    }
    kept
}

fn message_postings(table: &redb::ReadOnlyTable<(&'static str, u64), ()>, prefix: &str) -> Result<(Vec<u64>, bool)> {
    let mut all: Vec<u64> = Vec::new();
    let mut complete = true;
    let mut from = Bound::Included((prefix.to_string(), 0u64));
    for _ in 0..PREFIX_WORDS + 1 {
        let word = {
            let lower = match &from {
                Bound::Included((w, id)) => Bound::Included((w.as_str(), *id)),
                Bound::Excluded((w, id)) => Bound::Excluded((w.as_str(), *id)),
                Bound::Unbounded => Bound::Unbounded,
            };
            let mut range = table.range::<(&str, u64)>((lower, Bound::Unbounded))?;
            match range.next() {
                Some(row) => row?.0.value().0.to_string(),
                None => break,
            }
        };
        if !word.starts_with(prefix) {
            break;
        }
        let before = all.len();
        for row in table
            .range((word.as_str(), 0)..=(word.as_str(), u64::MAX))?
            .rev()
            .take(SEARCH_CAP)
        {
            all.push(row?.0.value().1);
        }
        if all.len() - before == SEARCH_CAP {
            complete = false;
        }
        from = Bound::Excluded((word, u64::MAX));
        if all.len() > 4 * SEARCH_CAP {
            all.sort_unstable_by(|a, b| b.cmp(a));
            all.dedup();
            all.truncate(SEARCH_CAP);
            complete = false;
        }
    }
    if let Bound::Excluded((w, _)) = &from {
        // Stopped by the word budget while words may remain.
        let mut range = table.range::<(&str, u64)>((Bound::Excluded((w.as_str(), u64::MAX)), Bound::Unbounded))?;
        if let Some(row) = range.next()
            && row?.0.value().0.starts_with(prefix)
        {
            complete = false;
        }
    }
    all.sort_unstable_by(|a, b| b.cmp(a));
    all.dedup();
    if all.len() > SEARCH_CAP {
        all.truncate(SEARCH_CAP);
        complete = false;
    }
    Ok((all, complete))
}

fn contact_postings(
    table: &redb::ReadOnlyTable<(&'static str, &'static str), ()>,
    prefix: &str,
) -> Result<(HashSet<String>, bool)> {
    let mut out = HashSet::new();
    let mut complete = true;
    for row in table.range::<(&str, &str)>((Bound::Included((prefix, "")), Bound::Unbounded))? {
        let (k, _) = row?;
        let (word, key) = k.value();
        if !word.starts_with(prefix) {
            break;
        }
        if out.len() >= SEARCH_CAP {
            complete = false;
            break;
        }
        out.insert(key.to_string());
    }
    Ok((out, complete))
}

/// `text` cut to about 160 characters around the first word starting with `term`.
fn snippet(text: &str, term: &str) -> String {
    const AROUND: usize = 160;
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| {
            fold(w)
                .split(|c: char| !c.is_alphanumeric())
                .any(|p| p.starts_with(term))
        })
        .unwrap_or(0);
    let start = at.saturating_sub(6);
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    for w in &words[start..] {
        if out.chars().count() > AROUND {
            out.push('…');
            break;
        }
        if !out.is_empty() && !out.ends_with('…') {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_and_words() {
        assert_eq!(fold("Élodie CŒUR Ça"), "elodie coeur ca");
        assert_eq!(
            words("Bonjour, j'ai reçu la facture n°42 — merci!"),
            ["bonjour", "ai", "recu", "la", "facture", "42", "merci"]
        );
        let raw = serde_json::json!({"type": "template", "template": {"name": "order", "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Aïssatou"}]}]}});
        assert_eq!(words(&message_text(&raw)), ["aissatou"]);
        assert_eq!(query_terms("+221 77 12"), ["2217712"]);
        assert_eq!(query_terms("Fac factu"), ["factu"]);
    }

    /// A stored message waits in the search queue (committed with it, so it survives a
    /// crash and a re-open) until the indexer writes its words; indexing is idempotent.
    #[test]
    fn messages_are_searchable_once_the_queue_is_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("walua.redb");
        let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
            {"field": "messages", "value": {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "221338601234", "phone_number_id": "1"},
             "contacts": [{"profile": {"name": "Awa"}, "wa_id": "221771234567"}],
             "messages": [{"from": "221771234567", "id": "wamid.q1", "timestamp": "1700000000",
                           "type": "text", "text": {"body": "Où est ma livraison ?"}}]}}]}]});
        {
            let store = Store::open(&path).unwrap();
            let d = crate::webhook::payload::Delivery::parse(&body);
            store
                .apply_deliveries(&[(1, d)], &|_: i64| String::new(), false)
                .unwrap();
            assert_eq!(store.search_backlog().unwrap(), 1);
            assert!(store.search("livraison", 10).unwrap().messages.is_empty());
            // Contacts are indexed with the conversation, at once.
            assert_eq!(store.search("awa", 10).unwrap().conversations.len(), 1);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.search_backlog().unwrap(), 1, "the queue survives a re-open");
        assert_eq!(store.index_pending(INDEX_BATCH).unwrap(), 1);
        assert_eq!(store.search_backlog().unwrap(), 0);
        assert_eq!(store.index_pending(INDEX_BATCH).unwrap(), 0, "nothing left");
        let hits = store.search("ou livr", 10).unwrap().messages;
        assert_eq!(hits.len(), 1);
        assert!(hits[0].snippet.contains("livraison"), "{}", hits[0].snippet);
    }

    #[test]
    fn snippets_start_near_the_match() {
        let text = "un deux trois quatre cinq six sept huit neuf dix onze Réclamation douze";
        assert!(snippet(text, "reclam").starts_with("…six sept"));
    }
}
