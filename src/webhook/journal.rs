//! The delivery journal: an append-only log of webhook bodies, durable before the 200.
//!
//! Handlers hand a body to [`DeliveryJournal::append`] and wait. One writer thread takes
//! every body waiting in its queue, appends them all to the active segment with one
//! `write` and one `fdatasync`, then answers each handler. While a sync is in flight new
//! bodies queue up, so the batch grows with the load and the cost per delivery falls.
//!
//! The journal lives in its own files, beside the store (`walua.redb` →
//! `walua.journal/`), so acknowledging a delivery never waits for redb's single writer,
//! which the processor, the dispatcher and the outbox share.
//!
//! # Files
//!
//! A segment is named after the id of its first delivery (`00000000000000000001.log`) and
//! holds records `[body length: u32 LE][crc32: u32 LE][delivery id: u64 LE][body]`; the
//! CRC covers the id and the body. A segment is sealed at [`SEGMENT_BYTES`] and a new one
//! begins.
//!
//! # Exactly once
//!
//! The processor ([`super::processor`]) reads records with a [`JournalCursor`], only up to
//! what is durable, and applies each batch in one redb transaction that also records the
//! highest applied delivery id (the checkpoint). At start-up every record after the
//! checkpoint is processed again; a torn record at the end of the last segment (a crash
//! during a write, never acknowledged) is cut off. A sealed segment is deleted only once a
//! durable redb commit covers all its deliveries ([`JournalFiles::release_through`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

/// The most deliveries written with one fsync.
pub const MAX_BATCH: usize = 1024;

/// A segment is sealed once it holds this many bytes (default of
/// `store.journal_segment_bytes`).
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes before each body: length, CRC, delivery id.
const HEADER: usize = 16;

/// Why the journal could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The system error.
        source: std::io::Error,
    },
    /// A record that was durable no longer reads back (disk corruption, or a file edited
    /// by hand). The daemon refuses to skip acknowledged deliveries silently.
    #[error(
        "{path}: corrupt record at byte {offset} ({why}); acknowledged deliveries from there on cannot be read. \
         Move the file aside to start without them."
    )]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong with it.
        why: String,
    },
    /// The writer thread is gone (shutdown, or a panic).
    #[error("journal writer stopped")]
    Stopped,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The journal directory that belongs to a store file: `walua.redb` → `walua.journal`.
pub fn dir_for_store(store: &Path) -> PathBuf {
    store.with_extension("journal")
}

/// One segment as the writer and the readers see it.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Bytes known to be durable (readers never read past this).
    durable_len: u64,
    /// The highest delivery id it holds, if any.
    last_id: Option<u64>,
}

/// State shared by the writer and the cursors.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// Segments by their first delivery id; the last one is the active one.
    segments: Mutex<BTreeMap<u64, Segment>>,
    /// The last append's error, until an append succeeds (for `/healthz`).
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn path(&self, first_id: u64) -> PathBuf {
        segment_path(&self.dir, first_id)
    }
}

fn segment_path(dir: &Path, first_id: u64) -> PathBuf {
    dir.join(format!("{first_id:020}.log"))
}

/// The journal's files: the writer side (blocking; used by the writer thread, by tests and
/// by the start-up migration).
pub struct DeliveryLog {
    shared: Arc<Shared>,
    /// The active segment, opened for appending, with its first id.
    active: Option<(u64, File)>,
    /// The id the next record gets.
    next_id: u64,
    /// Reused write buffer.
    buf: Vec<u8>,
    /// A segment is sealed once it holds this many bytes.
    segment_bytes: u64,
}

impl DeliveryLog {
    /// Opens (or creates) the journal in `dir`. `applied` is the store's checkpoint: the
    /// highest delivery id already applied, durably. Segments entirely at or below it are
    /// deleted; the rest are checked record by record. A torn record at the end of the
    /// last segment is cut off; anything else unreadable is [`JournalError::Corrupt`].
    /// New ids start above both the journal's last id and `applied`.
    pub fn open(dir: &Path, applied: u64) -> Result<DeliveryLog, JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut firsts: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name.strip_suffix(".log").and_then(|n| n.parse::<u64>().ok()) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segments = BTreeMap::new();
        let count = firsts.len();
        for (i, first) in firsts.iter().copied().enumerate() {
            let path = segment_path(dir, first);
            let is_last = i + 1 == count;
            let next_first = firsts.get(i + 1).copied();
            // A segment whose successor starts at or below the checkpoint is fully applied.
            if !is_last && next_first.is_some_and(|n| n <= applied.saturating_add(1)) {
                std::fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            let scan = scan_segment(&path)?;
            if scan.valid_len < scan.file_len {
                if !is_last {
                    return Err(JournalError::Corrupt {
                        path,
                        offset: scan.valid_len,
                        why: scan.why.unwrap_or_default(),
                    });
                }
                tracing::warn!(
                    file = %path.display(),
                    kept = scan.valid_len,
                    cut = scan.file_len - scan.valid_len,
                    "cutting a torn record off the journal (a crash during a write; it was never acknowledged)"
                );
                let f = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
                f.set_len(scan.valid_len).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
            }
            segments.insert(
                first,
                Segment {
                    durable_len: scan.valid_len,
                    last_id: scan.last_id,
                },
            );
        }
        let last_id = segments.values().filter_map(|s| s.last_id).max().unwrap_or(0);
        let next_id = last_id.max(applied) + 1;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            segments: Mutex::new(segments),
            failure: Mutex::new(None),
        });
        let mut log = DeliveryLog {
            shared,
            active: None,
            next_id,
            buf: Vec::new(),
            segment_bytes: SEGMENT_BYTES,
        };
        // Keep appending to the last segment unless it is full.
        let last = log.segments().iter().next_back().map(|(f, s)| (*f, *s));
        if let Some((first, seg)) = last
            && seg.durable_len < SEGMENT_BYTES
        {
            let path = log.shared.path(first);
            let file = OpenOptions::new().append(true).open(&path).map_err(io(&path))?;
            log.active = Some((first, file));
        }
        Ok(log)
    }

    fn segments(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Segment>> {
        self.shared.segments.lock().expect("journal lock not poisoned")
    }

    /// Seals segments at `bytes` instead of [`SEGMENT_BYTES`].
    pub fn with_segment_bytes(mut self, bytes: u64) -> DeliveryLog {
        self.segment_bytes = bytes;
        self
    }

    /// Makes new ids start above `at_least` (ids handed out elsewhere before).
    pub fn skip_to(&mut self, at_least: u64) {
        self.next_id = self.next_id.max(at_least + 1);
    }

    /// Appends deliveries that already have ids (moved over from an older store), keeping
    /// those ids; records at or below the journal's last id are already here and skipped.
    /// Returns how many were appended.
    pub fn append_migrated(&mut self, records: &[(u64, Vec<u8>)]) -> Result<usize, JournalError> {
        let mut moved = 0;
        for (id, body) in records {
            if *id < self.next_id {
                continue;
            }
            self.next_id = *id;
            self.append(&[body])?;
            moved += 1;
        }
        Ok(moved)
    }

    /// The highest delivery id journaled (0 if none ever was).
    pub fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// A cursor that reads every durable record after delivery id `after`.
    pub fn cursor(&self, after: u64) -> JournalCursor {
        self.files().cursor(after)
    }

    /// Durably appends deliveries (one write, one fdatasync) and returns their ids, in
    /// order. On an error nothing of the batch counts: the segment is cut back to its
    /// durable length and the next batch starts a new segment; the ids are not reused.
    pub fn append(&mut self, bodies: &[&[u8]]) -> Result<Vec<u64>, JournalError> {
        let first_id = self.next_id;
        self.next_id += bodies.len() as u64;
        let result = self.write_batch(first_id, bodies);
        if result.is_err()
            && let Some((first, file)) = self.active.take()
        {
            let durable = self.segments().get(&first).map(|s| s.durable_len).unwrap_or(0);
            let _ = file.set_len(durable);
            if durable == 0 {
                // Nothing of it was ever durable: no empty file per refused batch.
                drop(file);
                let path = self.shared.path(first);
                if std::fs::remove_file(&path).is_ok() {
                    self.segments().remove(&first);
                }
            }
        }
        *self.shared.failure.lock().expect("journal lock not poisoned") = result.as_ref().err().map(|e| e.to_string());
        result
    }

    fn write_batch(&mut self, first_id: u64, bodies: &[&[u8]]) -> Result<Vec<u64>, JournalError> {
        if self.active.is_none() {
            self.start_segment(first_id)?;
        }
        self.buf.clear();
        let mut ids = Vec::with_capacity(bodies.len());
        for (i, body) in bodies.iter().enumerate() {
            let id = first_id + i as u64;
            encode_record(&mut self.buf, id, body);
            ids.push(id);
        }
        let (first, file) = self.active.as_mut().expect("a segment is active");
        let path = segment_path(&self.shared.dir, *first);
        file.write_all(&self.buf).map_err(io(&path))?;
        file.sync_data().map_err(io(&path))?;
        let first = *first;
        let durable_len = {
            let mut segments = self.segments();
            let seg = segments.get_mut(&first).expect("the active segment is listed");
            seg.durable_len += self.buf.len() as u64;
            seg.last_id = ids.last().copied().or(seg.last_id);
            seg.durable_len
        };
        if durable_len >= self.segment_bytes {
            self.active = None;
        }
        Ok(ids)
    }

    /// Creates the segment that starts at `first_id` and makes its name durable.
    fn start_segment(&mut self, first_id: u64) -> Result<(), JournalError> {
        let path = self.shared.path(first_id);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        File::open(&self.shared.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.shared.dir))?;
        self.segments().insert(
            first_id,
            Segment {
                durable_len: 0,
                last_id: None,
            },
        );
        self.active = Some((first_id, file));
        Ok(())
    }

    /// A handle that can delete fully applied segments from another thread.
    pub fn files(&self) -> JournalFiles {
        JournalFiles {
            shared: self.shared.clone(),
        }
    }
}

/// Deletes sealed segments once the store durably covers them.
#[derive(Clone)]
pub struct JournalFiles {
    shared: Arc<Shared>,
}

impl JournalFiles {
    /// Whether some sealed segment holds only deliveries at or below `applied`.
    pub fn releasable(&self, applied: u64) -> bool {
        !self.sealed_through(applied).is_empty()
    }

    fn sealed_through(&self, applied: u64) -> Vec<u64> {
        let segments = self.shared.segments.lock().expect("journal lock not poisoned");
        let firsts: Vec<u64> = segments.keys().copied().collect();
        // A segment is sealed when another one follows it; it is applied when every id
        // below its successor's first id is.
        firsts
            .windows(2)
            .filter(|w| w[1] <= applied.saturating_add(1))
            .map(|w| w[0])
            .collect()
    }

    /// Deletes every sealed segment whose deliveries are all at or below `applied`. Call
    /// it only after a durable store commit that records `applied`.
    pub fn release_through(&self, applied: u64) -> Result<usize, JournalError> {
        let firsts = self.sealed_through(applied);
        for first in &firsts {
            let path = self.shared.path(*first);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
            self.shared
                .segments
                .lock()
                .expect("journal lock not poisoned")
                .remove(first);
        }
        Ok(firsts.len())
    }

    /// A cursor that reads the records after `after` (e.g. the store's checkpoint, read again
    /// after the store was re-opened and lost its commits that were not durable yet).
    pub fn cursor(&self, after: u64) -> JournalCursor {
        JournalCursor {
            shared: self.shared.clone(),
            after,
            segment: None,
            offset: 0,
            file: None,
        }
    }

    /// Why the journal cannot write, when its last append failed.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.lock().expect("journal lock not poisoned").clone()
    }

    /// [`JournalFiles::failure`], after checking again (blocking): when the last append
    /// failed, a small file is written and synced beside the segments; if that works now
    /// (space is back), the failure is cleared.
    pub fn recheck(&self) -> Option<String> {
        self.failure()?;
        let probe = self.shared.dir.join(".write-probe");
        let written = std::fs::File::create(&probe)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &[0u8; 8192])?;
                f.sync_all()
            })
            .map_err(|e| format!("{}: {e}", probe.display()));
        let _ = std::fs::remove_file(&probe);
        let mut failure = self.shared.failure.lock().expect("journal lock not poisoned");
        match written {
            Ok(()) => *failure = None,
            Err(e) => *failure = Some(e),
        }
        failure.clone()
    }

    /// Deliveries journaled after `applied` (an upper bound if an I/O error skipped ids).
    pub fn backlog(&self, applied: u64) -> u64 {
        let segments = self.shared.segments.lock().expect("journal lock not poisoned");
        let last = segments.values().filter_map(|s| s.last_id).max().unwrap_or(0);
        last.saturating_sub(applied)
    }
}

fn encode_record(buf: &mut Vec<u8>, id: u64, body: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&id.to_le_bytes());
    crc.update(body);
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(body);
}

/// A record decoded in place: delivery id, body, and its size on disk.
type Record<'a> = (u64, &'a [u8], usize);

/// One record parsed from `bytes` at its start: `Ok(Some((id, body, size)))`, `Ok(None)`
/// when `bytes` ends before the record does, `Err(why)` when it is not a record.
fn decode_record(bytes: &[u8]) -> Result<Option<Record<'_>>, String> {
    if bytes.len() < HEADER {
        return Ok(None);
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let id = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let Some(body) = bytes.get(HEADER..HEADER + len) else {
        return Ok(None);
    };
    let mut check = crc32fast::Hasher::new();
    check.update(&id.to_le_bytes());
    check.update(body);
    if check.finalize() != crc {
        return Err(format!("checksum mismatch (delivery {id}?)"));
    }
    Ok(Some((id, body, HEADER + len)))
}

struct Scan {
    file_len: u64,
    valid_len: u64,
    last_id: Option<u64>,
    why: Option<String>,
}

fn scan_segment(path: &Path) -> Result<Scan, JournalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io(path))?;
    let (mut pos, mut last_id, mut why) = (0usize, None, None);
    while pos < bytes.len() {
        match decode_record(&bytes[pos..]) {
            Ok(Some((id, _, size))) => {
                if last_id.is_some_and(|l| id <= l) {
                    why = Some(format!("delivery id {id} out of order"));
                    break;
                }
                last_id = Some(id);
                pos += size;
            }
            Ok(None) => {
                why = Some("record cut short".into());
                break;
            }
            Err(e) => {
                why = Some(e);
                break;
            }
        }
    }
    Ok(Scan {
        file_len: bytes.len() as u64,
        valid_len: pos as u64,
        last_id,
        why,
    })
}

/// Reads durable records in order, from one delivery id on (the processor's side).
pub struct JournalCursor {
    shared: Arc<Shared>,
    /// Records with an id at or below this are skipped (already applied or read).
    after: u64,
    /// The segment being read (its first id) and the byte offset in it.
    segment: Option<u64>,
    offset: u64,
    file: Option<File>,
}

/// Where a [`JournalCursor`] stood, to go back there when what it read was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorMark {
    after: u64,
    segment: Option<u64>,
    offset: u64,
}

impl CursorMark {
    /// The last delivery id read (or the checkpoint the cursor started from).
    pub fn after(&self) -> u64 {
        self.after
    }
}

impl JournalCursor {
    /// Where the cursor stands now.
    pub fn mark(&self) -> CursorMark {
        CursorMark {
            after: self.after,
            segment: self.segment,
            offset: self.offset,
        }
    }

    /// Goes back to `mark`: the records read since are read again.
    pub fn rewind(&mut self, mark: CursorMark) {
        self.after = mark.after;
        if self.segment != mark.segment {
            self.file = None;
        }
        self.segment = mark.segment;
        self.offset = mark.offset;
    }

    /// Up to `limit` records after the last one read (or after the checkpoint it started
    /// from), reading at most about `max_bytes` of bodies.
    pub fn read(&mut self, limit: usize, max_bytes: usize) -> Result<Vec<(u64, Vec<u8>)>, JournalError> {
        let mut out = Vec::new();
        let mut bytes_read = 0usize;
        while out.len() < limit && bytes_read < max_bytes {
            // Where to read: the current segment, or the next one once it is exhausted.
            let (first, durable_len, has_next) = {
                let segments = self.shared.segments.lock().expect("journal lock not poisoned");
                let current = match self.segment {
                    Some(f) if segments.contains_key(&f) => Some(f),
                    _ => None,
                };
                let current = current.or_else(|| {
                    self.offset = 0;
                    self.file = None;
                    segments.keys().next().copied()
                });
                let Some(first) = current else { break };
                let durable = segments[&first].durable_len;
                let has_next = segments.range(first + 1..).next().map(|(f, _)| *f);
                (first, durable, has_next)
            };
            self.segment = Some(first);
            if self.offset >= durable_len {
                match has_next {
                    Some(next) => {
                        self.segment = Some(next);
                        self.offset = 0;
                        self.file = None;
                        continue;
                    }
                    None => break,
                }
            }
            let path = self.shared.path(first);
            if self.file.is_none() {
                self.file = Some(File::open(&path).map_err(io(&path))?);
            }
            let file = self.file.as_mut().expect("opened above");
            let want = (durable_len - self.offset).min((max_bytes - bytes_read + HEADER) as u64 + 64 * 1024);
            let mut chunk = vec![0u8; want as usize];
            file.read_exact_at(&mut chunk, self.offset).map_err(io(&path))?;
            let mut pos = 0usize;
            while out.len() < limit && bytes_read < max_bytes {
                match decode_record(&chunk[pos..]) {
                    Ok(Some((id, body, size))) => {
                        if id > self.after {
                            bytes_read += body.len();
                            out.push((id, body.to_vec()));
                            self.after = id;
                        }
                        pos += size;
                    }
                    Ok(None) if pos == 0 && !out.is_empty() => {
                        // A record larger than what is left of the budget: next time.
                        return Ok(out);
                    }
                    Ok(None) if pos == 0 => {
                        // One record larger than the chunk: read exactly it.
                        let mut header = [0u8; HEADER];
                        file.read_exact_at(&mut header, self.offset).map_err(io(&path))?;
                        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as u64;
                        let size = HEADER as u64 + len;
                        if self.offset + size > durable_len {
                            return Err(JournalError::Corrupt {
                                path,
                                offset: self.offset,
                                why: "record runs past the durable end".into(),
                            });
                        }
                        chunk = vec![0u8; size as usize];
                        file.read_exact_at(&mut chunk, self.offset).map_err(io(&path))?;
                        continue;
                    }
                    Ok(None) => break,
                    Err(why) => {
                        return Err(JournalError::Corrupt {
                            path,
                            offset: self.offset + pos as u64,
                            why,
                        });
                    }
                }
            }
            self.offset += pos as u64;
        }
        Ok(out)
    }
}

struct AppendRequest {
    body: Bytes,
    done: oneshot::Sender<Result<u64, String>>,
}

/// Handle to the journal writer thread; cheap to clone. The writer stops once every
/// handle is dropped and its queue is drained.
#[derive(Clone)]
pub struct DeliveryJournal {
    queue: flume::Sender<AppendRequest>,
}

impl DeliveryJournal {
    /// Starts the writer on its own thread (from the blocking pool). `journaled` is
    /// notified after each durable batch so the processor picks the new deliveries up.
    pub fn start(log: DeliveryLog, journaled: Arc<Notify>) -> (DeliveryJournal, tokio::task::JoinHandle<()>) {
        let (queue, rx) = flume::bounded(4 * MAX_BATCH);
        let task = tokio::task::spawn_blocking(move || write_loop(log, rx, journaled));
        (DeliveryJournal { queue }, task)
    }

    /// Durably journals one delivery; returns its delivery id once it is on disk.
    pub async fn append(&self, body: Bytes) -> Result<u64, String> {
        let (done, wait) = oneshot::channel();
        self.queue
            .send_async(AppendRequest { body, done })
            .await
            .map_err(|_| JournalError::Stopped.to_string())?;
        wait.await.map_err(|_| JournalError::Stopped.to_string())?
    }
}

fn write_loop(mut log: DeliveryLog, rx: flume::Receiver<AppendRequest>, journaled: Arc<Notify>) {
    let mut batch: Vec<AppendRequest> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        batch.extend(rx.try_iter().take(MAX_BATCH - 1));
        let bodies: Vec<&[u8]> = batch.iter().map(|r| r.body.as_ref()).collect();
        let count = bodies.len();
        match log.append(&bodies) {
            Ok(ids) => {
                tracing::trace!(count, "journal batch durable");
                journaled.notify_one();
                for (req, id) in batch.drain(..).zip(ids) {
                    let _ = req.done.send(Ok(id));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, count, "journal write failed; deliveries refused with 503 (Meta will redeliver)");
                for req in batch.drain(..) {
                    let _ = req.done.send(Err(e.to_string()));
                }
            }
        }
    }
    tracing::debug!("journal writer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(log: &DeliveryLog, after: u64) -> Vec<(u64, Vec<u8>)> {
        log.cursor(after).read(usize::MAX, usize::MAX / 2).unwrap()
    }

    #[test]
    fn appended_records_read_back_in_order_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::open(dir.path(), 0).unwrap();
        assert_eq!(log.append(&[b"a", b"bb"]).unwrap(), vec![1, 2]);
        assert_eq!(log.append(&[b"ccc"]).unwrap(), vec![3]);
        let mut cursor = log.cursor(0);
        assert_eq!(cursor.read(2, 1 << 20).unwrap().len(), 2);
        assert_eq!(cursor.read(10, 1 << 20).unwrap(), vec![(3, b"ccc".to_vec())]);
        assert!(cursor.read(10, 1 << 20).unwrap().is_empty());
        log.append(&[b"d"]).unwrap();
        assert_eq!(cursor.read(10, 1 << 20).unwrap(), vec![(4, b"d".to_vec())]);
        drop(log);
        let log = DeliveryLog::open(dir.path(), 2).unwrap();
        assert_eq!(log.last_id(), 4);
        let ids: Vec<u64> = read_all(&log, 2).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![3, 4]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_ids_continue() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::open(dir.path(), 0).unwrap();
        log.append(&[b"one", b"two"]).unwrap();
        drop(log);
        let seg = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        let mut rec = Vec::new();
        encode_record(&mut rec, 3, b"three");
        f.write_all(&rec[..rec.len() - 2]).unwrap();
        drop(f);
        let mut log = DeliveryLog::open(dir.path(), 0).unwrap();
        assert_eq!(read_all(&log, 0).len(), 2);
        assert_eq!(log.append(&[b"four"]).unwrap(), vec![3]);
        assert_eq!(read_all(&log, 0).last().unwrap(), &(3, b"four".to_vec()));
    }

    #[test]
    fn corruption_in_a_sealed_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::open(dir.path(), 0).unwrap();
        log.append(&[b"one"]).unwrap();
        log.active = None; // seal it
        log.append(&[b"two"]).unwrap();
        drop(log);
        let seg = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        let err = DeliveryLog::open(dir.path(), 0).err().unwrap();
        assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn sealed_segments_are_released_once_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::open(dir.path(), 0).unwrap();
        log.append(&[b"one", b"two"]).unwrap();
        log.active = None;
        log.append(&[b"three"]).unwrap();
        let files = log.files();
        assert!(!files.releasable(1));
        assert_eq!(files.backlog(1), 2);
        assert!(files.releasable(2));
        assert_eq!(files.release_through(2).unwrap(), 1);
        assert!(!segment_path(dir.path(), 1).exists());
        assert_eq!(read_all(&log, 2), vec![(3, b"three".to_vec())]);
        drop(log);
        // Ids never go back, even when the journal directory was emptied.
        std::fs::remove_dir_all(dir.path()).unwrap();
        let mut log = DeliveryLog::open(dir.path(), 3).unwrap();
        assert_eq!(log.append(&[b"four"]).unwrap(), vec![4]);
        log.skip_to(9);
        assert_eq!(log.last_id(), 9);
        assert_eq!(log.append(&[b"ten"]).unwrap(), vec![10]);
    }

    #[test]
    fn a_record_larger_than_the_read_budget_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::open(dir.path(), 0).unwrap();
        let big = vec![7u8; 300 * 1024];
        log.append(&[b"small", &big, b"after"]).unwrap();
        let mut cursor = log.cursor(0);
        let got = cursor.read(10, 1024).unwrap();
        assert_eq!(got.len(), 1);
        let got = cursor.read(10, 1024).unwrap();
        assert_eq!(got, vec![(2, big)]);
        assert_eq!(cursor.read(10, 1024).unwrap(), vec![(3, b"after".to_vec())]);
    }
}
