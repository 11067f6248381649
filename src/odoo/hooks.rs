//! Odoo hooks: `scripts/hooks/*.lua` fired when Odoo records are created or changed.
//!
//! ```lua
//! return { model = "sale.order", on = "write", fields = { "state", "name" },
//!          initial = { state = "draft" },
//!          run = function(record, previous) … end }
//! ```
//!
//! **Polling** (every `odoo.poll_interval`) keeps a durable cursor per hook, committed in the
//! same transaction as the script's effects, so each event fires once across restarts and
//! events that happened while walua was down fire when it comes back. What Odoo 16 does that
//! shapes it (each seen on a real Odoo 16, `tests/fixtures/odoo16/`):
//!
//! - `write_date` has one-second precision and is the start of the writing transaction: a
//!   bulk `create([...])` of 105 records stamps them all with one second, and a transaction
//!   may commit up to `limit_time_real` (120 s) after a later one.
//! - ids come from a sequence taken before the commit: they commit out of order too.
//!
//! So:
//!
//! - **Keyset pages.** `on = "write"` reads `(write_date, id) > cursor` ordered by
//!   `write_date, id`, page after page: any number of records in one second goes through.
//!   `on = "create"` reads `id > cursor` by id.
//! - **Rescan window.** Each poll starts `odoo.rescan_window` (180 s) before the cursor
//!   (`write_date`, or `create_date` for create hooks), so a late commit is still seen. What
//!   was already fired is known per record (create: seen; write: the watched values last
//!   seen), so nothing fires twice. The first time a hook is seen, the records of the window
//!   are taken as seen (history is not replayed).
//! - **First sight.** A write hook gets `previous` = the watched values when it last saw the
//!   record. A record it never saw but that was created after the hook started watching
//!   (created and confirmed within one poll, or while walua was down) gets the hook's
//!   `initial` values as `previous`; older records, or hooks without `initial`, get nil.
//! - **Failures are not lost.** A run that fails on a transient error (Odoo unreachable, a
//!   Graph 5xx or 429, an upload) is retried with backoff, re-reading the record, until it
//!   succeeds or `scripts.retry_for` passes; then it is parked (`GET /api/parked`). A
//!   definite failure (a Lua error, an Odoo `UserError`) is parked at once. While an entry
//!   waits, the record is not fired again unless its watched values change; a later run that
//!   succeeds clears it. The record's "seen" state only moves when a run succeeds.
//!
//! **Push** (`POST /hooks/odoo/{name}`, Odoo 17+ "Send Webhook Notification"): Odoo signs
//! nothing and never retries, so the URL carries a secret token (`odoo.hook_token`) and the
//! record is read again over JSON-RPC instead of trusting the payload; the same per-record
//! state keeps the poller from firing it a second time.

use std::sync::Arc;
use std::time::Duration;

use mlua::{Function, LuaSerdeExt, Value as LuaValue};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::OdooClient;
use crate::script::registry::{HookDef, HookEvent, ScriptFile, ScriptKind, ScriptMeta, SharedRegistry};
use crate::script::runtime::{Effects, RunFailure, ScriptRuntime};
use crate::script::sandbox::RunError;
use crate::store::parked::{FailedRun, RetryPolicy, RunKind};
use crate::store::{Store, now_ms};

/// Records read per page.
pub const POLL_LIMIT: usize = 100;

/// Pages read per hook and poll: a backlog larger than this goes on at the next poll.
pub const MAX_PAGES: usize = 50;

/// A hook's durable cursor.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct HookCursor {
    /// `create` hooks: the highest id handled.
    pub last_id: i64,
    /// `write` hooks: the `write_date` reached.
    pub write_date: Option<String>,
    /// `write` hooks: the highest id handled within `write_date` (the keyset's second half).
    #[serde(default)]
    pub write_id: i64,
    /// `create` hooks: the newest `create_date` handled (where the rescan window ends).
    #[serde(default)]
    pub create_date: Option<String>,
    /// When the hook started watching (Odoo's clock, the newest `write_date` then): records
    /// created after it get the hook's `initial` values as `previous` on first sight.
    #[serde(default)]
    pub started: Option<String>,
    /// The hook definition the cursor was made for (model, event, domain, fields).
    pub def: Value,
    /// Events fired so far.
    pub fired: u64,
    /// The last script error.
    pub last_error: Option<String>,
}

/// What polling and push share.
#[derive(Clone)]
pub struct Hooks {
    /// The store.
    pub store: Store,
    /// The Lua pool.
    pub runtime: Arc<ScriptRuntime>,
    /// The loaded scripts.
    pub registry: SharedRegistry,
    /// Odoo.
    pub odoo: Arc<OdooClient>,
    /// Logs and wakes the outbox for committed sends.
    pub outbox: crate::outbox::Outbox,
    /// Why the last polling pass failed, until one succeeds (`/healthz`: degraded).
    pub poll_failure: Arc<std::sync::Mutex<Option<String>>>,
    /// Observes each fired event's lag (`walua_odoo_hook_lag_seconds`).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// How far back each poll looks again (`odoo.rescan_window`).
    pub rescan: Duration,
    /// How failed runs are retried, then parked.
    pub retry: RetryPolicy,
}

/// Errors of a hook pass or a push.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// No such hook script.
    #[error("no hook script named `{0}`")]
    Unknown(String),
    /// The push payload does not fit the hook.
    #[error("{0}")]
    BadPayload(String),
    /// Odoo failed.
    #[error(transparent)]
    Odoo(#[from] super::OdooError),
    /// Store or runtime.
    #[error("{0}")]
    Internal(String),
}

/// What firing one record came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    /// The script ran and its effects are committed.
    Ran,
    /// It failed on a transient error and will be retried.
    Retrying(String),
    /// It failed and is parked for the operator.
    Parked(String),
}

fn cursor_key(name: &str) -> String {
    format!("hook:{name}")
}

fn record_key(name: &str, id: i64) -> String {
    format!("hook:{name}:rec:{id}")
}

/// The failed-run id of a hook's record (see [`crate::store::parked`]).
pub fn failed_id(name: &str, id: i64) -> String {
    format!("hook:{name}:{id}")
}

fn def_value(def: &HookDef) -> Value {
    json!({ "model": def.model, "on": def.on.as_str(), "domain": def.domain, "fields": def.fields })
}

fn domain_of(def: &HookDef) -> Vec<Value> {
    def.domain
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn watched(def: &HookDef, record: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for f in &def.fields {
        out.insert(f.clone(), record.get(f).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

/// The fields a hook reads: its own, and what the poller needs.
fn read_fields(def: &HookDef) -> Vec<String> {
    let mut fields = def.fields.clone();
    for extra in ["id", "write_date", "create_date"] {
        if !fields.iter().any(|f| f == extra) {
            fields.push(extra.into());
        }
    }
    fields
}

const ODOO_TIME: &str = "%Y-%m-%d %H:%M:%S";

/// An Odoo datetime moved by `secs` seconds (same format); `None` when it does not parse.
fn odoo_time_shift(t: &str, secs: i64) -> Option<String> {
    let t = chrono::NaiveDateTime::parse_from_str(t, ODOO_TIME)
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S"))
        .ok()?;
    Some((t + chrono::Duration::seconds(secs)).format(ODOO_TIME).to_string())
}

/// An Odoo datetime moved back by `by`.
fn odoo_time_minus(t: &str, by: Duration) -> Option<String> {
    odoo_time_shift(t, -(by.as_secs() as i64))
}

fn str_of<'a>(record: &'a Value, field: &str) -> Option<&'a str> {
    record.get(field).and_then(Value::as_str)
}

impl Hooks {
    /// Polls every hook until shutdown.
    pub async fn poll_forever(self, interval: std::time::Duration, shutdown: CancellationToken) {
        // While Odoo is down every hook fails every poll: one log line when the failure
        // starts or changes, then one every 5 minutes with the count, and one when it ends.
        let mut logged: Option<(String, std::time::Instant, u64)> = None;
        loop {
            let hooks: Vec<ScriptFile> = {
                let reg = self.registry.read().expect("not poisoned");
                reg.of_kind(ScriptKind::Hook).cloned().collect()
            };
            let mut failed: Vec<String> = Vec::new();
            let mut first_error = None;
            for file in hooks {
                if shutdown.is_cancelled() {
                    return;
                }
                if let Err(e) = self.poll(&file).await {
                    failed.push(file.name.clone());
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
            let failure = first_error.map(|e| {
                let names = failed.join(", ");
                format!("Odoo hook(s) {names} cannot poll: {e}")
            });
            match (&failure, &mut logged) {
                (Some(f), Some((last, at, repeats))) if f == last => {
                    *repeats += 1;
                    if at.elapsed() >= std::time::Duration::from_secs(300) {
                        tracing::warn!(polls = *repeats, "{f}; still failing, polling again every {interval:?}");
                        *at = std::time::Instant::now();
                        *repeats = 0;
                    }
                }
                (Some(f), _) => {
                    tracing::warn!("{f}; polling again every {interval:?}");
                    logged = Some((f.clone(), std::time::Instant::now(), 0));
                }
                (None, Some(_)) => {
                    tracing::info!("Odoo hooks poll again");
                    logged = None;
                }
                (None, None) => {}
            }
            *self.poll_failure.lock().unwrap_or_else(|p| p.into_inner()) = failure;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn state<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: String,
    ) -> Result<Option<T>, HookError> {
        let v = self
            .store
            .blocking(move |s| s.state_get(&key))
            .await
            .map_err(|e| HookError::Internal(e.to_string()))?;
        Ok(v.and_then(|v| serde_json::from_value(v).ok()))
    }

    async fn failed(&self, id: String) -> Result<Option<FailedRun>, HookError> {
        self.store
            .blocking(move |s| s.failed_run(&id))
            .await
            .map_err(|e| HookError::Internal(e.to_string()))
    }

    /// One poll of one hook: runs the retries that are due, then fires every new event, each
    /// committed with the cursor. Returns the events fired.
    pub async fn poll(&self, file: &ScriptFile) -> Result<usize, HookError> {
        let ScriptMeta::Hook(def) = &file.meta else {
            return Ok(0);
        };
        let key = cursor_key(&file.name);
        let cursor: Option<HookCursor> = self.state(key.clone()).await?;
        let mut cursor = match cursor.filter(|c| c.def == def_value(def)) {
            Some(c) => c,
            None => {
                let (c, baselines) = self.start_cursor(def).await?;
                tracing::info!(hook = %file.name, model = %def.model, on = def.on.as_str(), last_id = c.last_id, write_date = ?c.write_date, "odoo hook cursor started");
                let mut state: Vec<(String, Value)> = baselines
                    .into_iter()
                    .map(|(id, values)| (record_key(&file.name, id), values))
                    .collect();
                state.push((key, json!(c)));
                self.commit(Effects::default(), state, Vec::new()).await?;
                return Ok(0);
            }
        };
        if cursor.started.is_none() {
            // A cursor from before first-sight semantics: only what is newer counts as new.
            cursor.started = cursor.write_date.clone().or_else(|| cursor.create_date.clone());
        }
        let mut fired = self.retry_due(file, def, &cursor).await?;
        let fields = read_fields(def);
        let field_refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        // Where this poll starts: the rescan window before the cursor.
        let mut after: Option<(String, i64)> = match def.on {
            HookEvent::Write => cursor
                .write_date
                .as_deref()
                .and_then(|w| odoo_time_minus(w, self.rescan))
                .map(|w| (w, 0)),
            HookEvent::Create => None,
        };
        let rescan_from = match def.on {
            HookEvent::Create => cursor
                .create_date
                .as_deref()
                .and_then(|c| odoo_time_minus(c, self.rescan)),
            HookEvent::Write => None,
        };
        let mut after_id = 0i64;
        for _page in 0..MAX_PAGES {
            let mut domain = domain_of(def);
            let order = match def.on {
                HookEvent::Create => {
                    match &rescan_from {
                        Some(c) => {
                            domain.push(json!("|"));
                            domain.push(json!(["id", ">", cursor.last_id]));
                            domain.push(json!(["create_date", ">=", c]));
                        }
                        None => domain.push(json!(["id", ">", cursor.last_id])),
                    }
                    domain.push(json!(["id", ">", after_id]));
                    "id asc"
                }
                HookEvent::Write => {
                    // Odoo answers write_date to the second but keeps (and compares, and
                    // sorts by) microseconds: "after (W, I)" is "from the next second on, or
                    // in second W with an id above I". Records of one second sort by their
                    // microseconds first, so I is the highest id seen in W: one skipped by
                    // that order is read again by the next poll's rescan.
                    if let Some((w, id)) = &after {
                        let next = odoo_time_shift(w, 1).unwrap_or_else(|| w.clone());
                        domain.push(json!("|"));
                        domain.push(json!(["write_date", ">=", next]));
                        domain.push(json!("&"));
                        domain.push(json!(["write_date", ">=", w]));
                        domain.push(json!(["id", ">", id]));
                    }
                    "write_date asc, id asc"
                }
            };
            let records = self
                .odoo
                .search_read(
                    &def.model,
                    Value::Array(domain),
                    &field_refs,
                    json!({"order": order, "limit": POLL_LIMIT}),
                )
                .await?;
            let full = records.len() == POLL_LIMIT;
            let mut moved = false;
            for record in records {
                let id = record.get("id").and_then(Value::as_i64).unwrap_or(0);
                after_id = after_id.max(id);
                let before = (cursor.last_id, cursor.write_date.clone(), cursor.write_id);
                match def.on {
                    HookEvent::Create => {
                        cursor.last_id = cursor.last_id.max(id);
                        if let Some(c) = str_of(&record, "create_date")
                            && cursor.create_date.as_deref().is_none_or(|old| c > old)
                        {
                            cursor.create_date = Some(c.to_string());
                        }
                    }
                    HookEvent::Write => {
                        if let Some(wd) = str_of(&record, "write_date") {
                            after = match after.take() {
                                Some((w, max)) if w.as_str() == wd => Some((w, max.max(id))),
                                Some((w, max)) if w.as_str() > wd => Some((w, max)),
                                _ => Some((wd.to_string(), id)),
                            };
                            let newer = match cursor.write_date.as_deref() {
                                None => true,
                                Some(old) => (wd, id) > (old, cursor.write_id),
                            };
                            if newer {
                                cursor.write_date = Some(wd.to_string());
                                cursor.write_id = id;
                            }
                        }
                    }
                }
                moved |= before != (cursor.last_id, cursor.write_date.clone(), cursor.write_id);
                let values = watched(def, &record);
                if let Some(f) = self.failed(failed_id(&file.name, id)).await?
                    && f.values.as_ref() == Some(&values)
                {
                    // Waiting for its retry or the operator; unchanged since it failed.
                    continue;
                }
                let seen: Option<Value> = self.state(record_key(&file.name, id)).await?;
                let fire = match def.on {
                    HookEvent::Create => seen.is_none(),
                    HookEvent::Write => seen.as_ref() != Some(&values),
                };
                if !fire {
                    continue;
                }
                let started = cursor.started.clone();
                let outcome = self
                    .fire(file, def, &record, seen, started.as_deref(), Some((&key, &mut cursor)))
                    .await?;
                moved = false;
                if outcome == Fired::Ran {
                    fired += 1;
                }
            }
            if moved {
                self.commit(Effects::default(), vec![(key.clone(), json!(cursor))], Vec::new())
                    .await?;
            }
            if !full {
                break;
            }
        }
        Ok(fired)
    }

    /// The `previous` a write hook's run gets: the values last seen, or on first sight the
    /// hook's `initial` values for a record created after the hook started watching.
    fn previous(def: &HookDef, record: &Value, seen: Option<Value>, started: Option<&str>) -> Option<Value> {
        if def.on != HookEvent::Write {
            return None;
        }
        if seen.is_some() {
            return seen;
        }
        let initial = def.initial.as_ref()?;
        let created = str_of(record, "create_date")?;
        if started.is_some_and(|s| created <= s) {
            return None;
        }
        Some(initial.clone())
    }

    /// Runs the hook for one record and commits what came of it: on success its effects, the
    /// record's new seen state and the cleared failed entry; on failure the failed entry
    /// (retrying or parked), the seen state untouched. The cursor, when given, is committed
    /// with either.
    async fn fire(
        &self,
        file: &ScriptFile,
        def: &HookDef,
        record: &Value,
        seen: Option<Value>,
        started: Option<&str>,
        cursor: Option<(&str, &mut HookCursor)>,
    ) -> Result<Fired, HookError> {
        let id = record.get("id").and_then(Value::as_i64).unwrap_or(0);
        let previous = Self::previous(def, record, seen, started);
        let values = watched(def, record);
        let fid = failed_id(&file.name, id);
        let existing = self.failed(fid.clone()).await?;
        let (effects, result) = self.run(file, record, previous).await?;
        let mut state = Vec::new();
        let (failed, fired) = match result {
            Ok(()) => {
                state.push((
                    record_key(&file.name, id),
                    if def.on == HookEvent::Write {
                        values
                    } else {
                        json!(true)
                    },
                ));
                if let Some(f) = &existing {
                    tracing::info!(hook = %file.name, id, attempts = f.attempts, "odoo hook ran after failing; its failed entry is cleared");
                }
                (existing.map(|_| (fid, None)), Fired::Ran)
            }
            Err(failure) => {
                let now = now_ms();
                let mut entry = existing.unwrap_or_else(|| {
                    FailedRun::new(fid.clone(), RunKind::Hook, &file.name, String::new(), true, now)
                });
                entry.record_id = Some(id);
                entry.values = Some(values);
                let parked = entry.failed_again(failure.message.clone(), failure.transient, now, &self.retry);
                let fired = if parked {
                    tracing::error!(hook = %file.name, model = %def.model, id, attempts = entry.attempts, transient = failure.transient, error = %failure.message,
                        "odoo hook run failed and is parked: see `walua parked list`, replay with `walua parked replay {fid}`");
                    Fired::Parked(failure.message)
                } else {
                    let wait = Duration::from_millis((entry.next_attempt_ms.unwrap_or(now) - now).max(0) as u64);
                    tracing::warn!(hook = %file.name, model = %def.model, id, attempts = entry.attempts, error = %failure.message,
                        "odoo hook run failed on a transient error; its effects are dropped and it runs again in {wait:?}");
                    Fired::Retrying(failure.message)
                };
                (Some((fid, Some(entry))), fired)
            }
        };
        if let Some((key, c)) = cursor {
            c.fired += 1;
            c.last_error = match &fired {
                Fired::Ran => None,
                Fired::Retrying(e) | Fired::Parked(e) => Some(e.clone()),
            };
            state.push((key.to_string(), json!(c)));
        }
        self.commit(effects, state, failed.into_iter().collect()).await?;
        Ok(fired)
    }

    /// Runs this hook's failed records whose retry is due, each re-read from Odoo.
    async fn retry_due(&self, file: &ScriptFile, def: &HookDef, cursor: &HookCursor) -> Result<usize, HookError> {
        let prefix = format!("hook:{}:", file.name);
        let now = now_ms();
        let due: Vec<FailedRun> = self
            .store
            .blocking(move |s| s.failed_runs(&prefix))
            .await
            .map_err(|e| HookError::Internal(e.to_string()))?
            .into_iter()
            .filter(|f| f.next_attempt_ms.is_some_and(|t| t <= now))
            .collect();
        let mut ran = 0;
        for entry in due {
            if let Fired::Ran = self.rerun(file, def, &entry, Some(cursor)).await? {
                ran += 1;
            }
        }
        Ok(ran)
    }

    /// Runs a failed record again, re-read from Odoo. A record gone or out of the hook's
    /// domain clears the entry.
    async fn rerun(
        &self,
        file: &ScriptFile,
        def: &HookDef,
        entry: &FailedRun,
        cursor: Option<&HookCursor>,
    ) -> Result<Fired, HookError> {
        let Some(id) = entry.record_id else {
            return Ok(Fired::Parked("the entry names no record".into()));
        };
        let Some(record) = self.read_record(def, id).await? else {
            tracing::info!(hook = %file.name, id, "failed record is gone or left the hook's domain; its entry is cleared");
            let fid = entry.id.clone();
            self.commit(Effects::default(), Vec::new(), vec![(fid, None)]).await?;
            return Ok(Fired::Ran);
        };
        let seen: Option<Value> = self.state(record_key(&file.name, id)).await?;
        let started = match cursor {
            Some(c) => c.started.clone(),
            None => self
                .state::<HookCursor>(cursor_key(&file.name))
                .await?
                .and_then(|c| c.started),
        };
        self.fire(file, def, &record, seen, started.as_deref(), None).await
    }

    /// Where a new cursor starts: after the newest existing record, with the records of the
    /// rescan window before it taken as seen (history is not replayed): their ids (create) or
    /// watched values (write) are returned as baselines.
    async fn start_cursor(&self, def: &HookDef) -> Result<(HookCursor, Vec<(i64, Value)>), HookError> {
        let mut baselines = Vec::new();
        let mut c = HookCursor {
            def: def_value(def),
            ..Default::default()
        };
        let (stamp, order) = match def.on {
            HookEvent::Create => ("create_date", "id desc"),
            HookEvent::Write => ("write_date", "write_date desc, id desc"),
        };
        let top = self
            .odoo
            .search_read(
                &def.model,
                Value::Array(domain_of(def)),
                &["id", stamp],
                json!({"order": order, "limit": 1}),
            )
            .await?;
        let Some(top) = top.into_iter().next() else {
            return Ok((c, baselines));
        };
        let newest = str_of(&top, stamp).map(str::to_string);
        let top_id = top.get("id").and_then(Value::as_i64).unwrap_or(0);
        match def.on {
            HookEvent::Create => {
                c.last_id = top_id;
                c.create_date = newest.clone();
            }
            HookEvent::Write => {
                c.write_date = newest.clone();
                c.write_id = top_id;
            }
        }
        c.started = newest.clone();
        let Some(from) = newest.as_deref().and_then(|n| odoo_time_minus(n, self.rescan)) else {
            return Ok((c, baselines));
        };
        let mut fields: Vec<&str> = def.fields.iter().map(String::as_str).collect();
        fields.push("id");
        let mut after_id = 0;
        loop {
            let mut domain = domain_of(def);
            domain.push(json!([stamp, ">=", from]));
            domain.push(json!(["id", ">", after_id]));
            let page = self
                .odoo
                .search_read(
                    &def.model,
                    Value::Array(domain),
                    &fields,
                    json!({"order": "id asc", "limit": POLL_LIMIT * 10}),
                )
                .await?;
            let full = page.len() == POLL_LIMIT * 10;
            for r in page {
                if let Some(id) = r.get("id").and_then(Value::as_i64) {
                    after_id = id;
                    let seen = match def.on {
                        HookEvent::Create => json!(true),
                        HookEvent::Write => watched(def, &r),
                    };
                    baselines.push((id, seen));
                }
            }
            if !full {
                break;
            }
        }
        Ok((c, baselines))
    }

    /// Runs a hook script with a record; returns its effects (empty when it failed) and how
    /// it ended.
    async fn run(
        &self,
        file: &ScriptFile,
        record: &Value,
        previous: Option<Value>,
    ) -> Result<(Effects, Result<(), RunFailure>), HookError> {
        if let (Some(m), Some(lag)) = (&self.metrics, write_date_lag(record)) {
            m.hook_lag(lag);
        }
        let f = file.clone();
        let record_id = record.get("id").and_then(Value::as_i64).unwrap_or(0);
        let record_name = record.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let record = record.clone();
        let (effects, result) = self
            .runtime
            .exec(move |w| {
                w.take_effects();
                let r = w.run_script(&f, |sandbox, value| {
                    let LuaValue::Table(t) = value else {
                        return Err(RunError::Lua {
                            message: format!("{}: must return a table", f.chunk_name),
                        });
                    };
                    let run: Function = t.get("run").map_err(|e| RunError::Lua {
                        message: format!("{}: run: {e}", f.chunk_name),
                    })?;
                    let lua = sandbox.lua();
                    let rec = lua
                        .to_value(&record)
                        .map_err(|e| RunError::Lua { message: e.to_string() })?;
                    let prev = match &previous {
                        Some(p) if p.is_object() => {
                            lua.to_value(p).map_err(|e| RunError::Lua { message: e.to_string() })?
                        }
                        _ => LuaValue::Nil,
                    };
                    sandbox.call::<()>(&run, (rec, prev))
                });
                (w.take_effects(), r)
            })
            .await
            .map_err(|e| HookError::Internal(e.to_string()))?;
        match result {
            Ok(()) => {
                tracing::info!(hook = %file.name, id = record_id, name = %record_name, sent = effects.sends.len(), "odoo hook fired");
                Ok((effects, Ok(())))
            }
            Err(e) => Ok((Effects::default(), Err(e))),
        }
    }

    async fn commit(
        &self,
        effects: Effects,
        state: Vec<(String, Value)>,
        failed: Vec<(String, Option<FailedRun>)>,
    ) -> Result<(), HookError> {
        let mut commit = effects.into_commit(Vec::new());
        commit.state = state;
        commit.failed = failed;
        let recorded = self
            .store
            .blocking(move |s| s.commit_script_runs(&commit))
            .await
            .map_err(|e| HookError::Internal(e.to_string()))?;
        for m in &recorded {
            self.outbox.recorded(m, m.origin.as_deref().unwrap_or("hook"));
        }
        Ok(())
    }

    /// A record as the hook reads it (its fields, `id`, `write_date`, `create_date`), read
    /// again from Odoo; `None` when it is gone or outside the hook's domain.
    async fn read_record(&self, def: &HookDef, id: i64) -> Result<Option<Value>, HookError> {
        let fields = read_fields(def);
        let field_refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        let mut domain = domain_of(def);
        domain.push(json!(["id", "=", id]));
        let found = self
            .odoo
            .search_read(&def.model, Value::Array(domain), &field_refs, json!({"limit": 1}))
            .await?;
        Ok(found.into_iter().next())
    }

    /// Runs a failed or parked hook record again now (`POST /api/parked/{id}/replay`).
    pub async fn replay(&self, entry: &FailedRun) -> Result<Fired, HookError> {
        let file = {
            let reg = self.registry.read().expect("not poisoned");
            reg.get(ScriptKind::Hook, &entry.name).cloned()
        }
        .ok_or_else(|| HookError::Unknown(entry.name.clone()))?;
        let ScriptMeta::Hook(def) = &file.meta else {
            return Err(HookError::Unknown(entry.name.clone()));
        };
        self.rerun(&file, def, entry, None).await
    }

    /// A push from Odoo (`_model`, `_id`): the record is read again and the hook fires once.
    pub async fn push(&self, name: &str, payload: &Value) -> Result<bool, HookError> {
        let file = {
            let reg = self.registry.read().expect("not poisoned");
            reg.get(ScriptKind::Hook, name).cloned()
        }
        .ok_or_else(|| HookError::Unknown(name.to_string()))?;
        let ScriptMeta::Hook(def) = &file.meta else {
            return Err(HookError::Unknown(name.to_string()));
        };
        let model = payload.get("_model").and_then(Value::as_str).unwrap_or(&def.model);
        if model != def.model {
            return Err(HookError::BadPayload(format!(
                "hook `{name}` watches {}, not {model}",
                def.model
            )));
        }
        let id = payload
            .get("_id")
            .or(payload.get("id"))
            .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .ok_or_else(|| HookError::BadPayload("the payload has no `_id`".into()))?;
        let Some(record) = self.read_record(def, id).await? else {
            tracing::info!(
                hook = name,
                id,
                "pushed record not found or outside the hook's domain; ignored"
            );
            return Ok(false);
        };
        let values = watched(def, &record);
        if let Some(f) = self.failed(failed_id(name, id)).await?
            && f.values.as_ref() == Some(&values)
        {
            return Ok(false);
        }
        let seen: Option<Value> = self.state(record_key(name, id)).await?;
        let fire = match def.on {
            HookEvent::Create => seen.is_none(),
            HookEvent::Write => seen.as_ref() != Some(&values),
        };
        if !fire {
            return Ok(false);
        }
        let started = self
            .state::<HookCursor>(cursor_key(name))
            .await?
            .and_then(|c| c.started);
        self.fire(&file, def, &record, seen, started.as_deref(), None).await?;
        Ok(true)
    }
}

/// How long ago Odoo stamped the record's `write_date` (UTC, `2026-11-30 09:41:07` or with a
/// `T`): the time from the change in Odoo to its hook run. Odoo stamps the start of the
/// transaction, so a long transaction shows as lag too.
fn write_date_lag(record: &Value) -> Option<std::time::Duration> {
    let text = record.get("write_date")?.as_str()?;
    let stamped = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .ok()?
        .and_utc();
    (chrono::Utc::now() - stamped).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odoo_times_move_by_whole_seconds_across_days() {
        assert_eq!(
            odoo_time_shift("2026-11-30 23:59:59", 1).as_deref(),
            Some("2026-12-01 00:00:00")
        );
        assert_eq!(
            odoo_time_minus("2026-11-30 00:01:00", Duration::from_secs(180)).as_deref(),
            Some("2026-11-29 23:58:00")
        );
        assert_eq!(
            odoo_time_shift("2026-11-30T10:00:00", 0).as_deref(),
            Some("2026-11-30 10:00:00")
        );
        assert_eq!(odoo_time_shift("false", 1), None);
    }

    #[test]
    fn first_sight_uses_initial_only_for_records_created_after_the_hook_started() {
        let def = HookDef {
            model: "sale.order".into(),
            on: HookEvent::Write,
            domain: None,
            fields: vec!["state".into()],
            initial: Some(json!({"state": "draft"})),
        };
        let rec = |created: &str| json!({"id": 1, "state": "sale", "create_date": created});
        let started = Some("2026-11-30 10:00:00");
        let new = Hooks::previous(&def, &rec("2026-11-30 10:00:05"), None, started);
        assert_eq!(new, Some(json!({"state": "draft"})));
        assert_eq!(
            Hooks::previous(&def, &rec("2026-11-30 09:00:00"), None, started),
            None,
            "older than the hook"
        );
        let seen = Some(json!({"state": "sent"}));
        assert_eq!(
            Hooks::previous(&def, &rec("2026-11-30 10:00:05"), seen.clone(), started),
            seen
        );
        let without = HookDef { initial: None, ..def };
        assert_eq!(
            Hooks::previous(&without, &rec("2026-11-30 10:00:05"), None, started),
            None
        );
    }

    #[test]
    fn the_lag_is_measured_from_odoos_write_date() {
        let ago = (chrono::Utc::now() - chrono::Duration::seconds(90)).format("%Y-%m-%d %H:%M:%S");
        let lag = write_date_lag(&json!({ "write_date": ago.to_string() })).unwrap();
        assert!((89..=95).contains(&lag.as_secs()), "{lag:?}");
        assert!(write_date_lag(&json!({ "write_date": false })).is_none());
        assert!(write_date_lag(&json!({})).is_none());
    }
}
