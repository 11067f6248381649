//! Odoo hooks: `scripts/hooks/*.lua` fired when Odoo records are created or changed.
//!
//! ```lua
//! return { model = "sale.order", on = "create", domain = { {"state", "=", "draft"} },
//!          fields = { "name", "partner_id", "amount_total" },
//!          run = function(record, previous) … end }
//! ```
//!
//! **Polling** (every `odoo.poll_interval`) keeps a durable cursor per hook, committed in the
//! same transaction as the script's effects, so each event fires once across restarts and
//! events that happened while walua was down fire when it comes back:
//!
//! - `on = "create"`: the last id seen; new records are `id > cursor`, oldest first. The first
//!   time a hook is seen its cursor starts at the newest existing record (history is not
//!   replayed).
//! - `on = "write"`: `write_date` plus, per record, the watched fields' last seen values.
//!   Odoo's `write_date` has one-second precision (`"2026-11-25 09:00:01"`, see the Odoo 16
//!   transcripts): `write_date > t` misses a second write within the same second, so the poll
//!   asks `write_date >= t` and a record fires only when one of its watched fields really
//!   changed since it was last seen (`previous` gives the old values).
//!
//! **Push** (`POST /hooks/odoo/{name}`, Odoo 17+ "Send Webhook Notification"): Odoo signs
//! nothing and never retries, so the URL carries a secret token (`odoo.hook_token`) and the
//! record is read again over JSON-RPC instead of trusting the payload; the same per-record
//! state keeps the poller from firing it a second time.

use std::sync::Arc;

use mlua::{Function, LuaSerdeExt, Value as LuaValue};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::OdooClient;
use crate::script::registry::{HookDef, HookEvent, ScriptFile, ScriptKind, ScriptMeta, SharedRegistry};
use crate::script::runtime::{Effects, ScriptRuntime};
use crate::script::sandbox::RunError;
use crate::store::Store;

/// Records read per poll and hook.
pub const POLL_LIMIT: usize = 100;

/// A hook's durable cursor.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct HookCursor {
    /// `create` hooks: the highest id handled.
    pub last_id: i64,
    /// `write` hooks: the `write_date` reached.
    pub write_date: Option<String>,
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

fn cursor_key(name: &str) -> String {
    format!("hook:{name}")
}

fn record_key(name: &str, id: i64) -> String {
    format!("hook:{name}:rec:{id}")
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

impl Hooks {
    /// Polls every hook until shutdown.
    pub async fn poll_forever(self, interval: std::time::Duration, shutdown: CancellationToken) {
        loop {
            let hooks: Vec<ScriptFile> = {
                let reg = self.registry.read().expect("not poisoned");
                reg.of_kind(ScriptKind::Hook).cloned().collect()
            };
            let mut failure = None;
            for file in hooks {
                if shutdown.is_cancelled() {
                    return;
                }
                if let Err(e) = self.poll(&file).await {
                    tracing::warn!(hook = %file.name, error = %e, "odoo hook poll failed; will try again");
                    failure.get_or_insert(format!("Odoo hook {} cannot poll: {e}", file.name));
                }
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

    /// One poll of one hook: fires every new event, each committed with the cursor.
    pub async fn poll(&self, file: &ScriptFile) -> Result<usize, HookError> {
        let ScriptMeta::Hook(def) = &file.meta else {
            return Ok(0);
        };
        let key = cursor_key(&file.name);
        let cursor: Option<HookCursor> = self.state(key.clone()).await?;
        let cursor = match cursor.filter(|c| c.def == def_value(def)) {
            Some(c) => c,
            None => {
                let (c, baselines) = self.start_cursor(def).await?;
                tracing::info!(hook = %file.name, model = %def.model, on = def.on.as_str(), last_id = c.last_id, write_date = ?c.write_date, "odoo hook cursor started");
                let mut state: Vec<(String, Value)> = baselines
                    .into_iter()
                    .map(|(id, values)| (record_key(&file.name, id), values))
                    .collect();
                state.push((key, json!(c)));
                self.commit(Effects::default(), state).await?;
                return Ok(0);
            }
        };
        let mut fields: Vec<String> = def.fields.clone();
        for extra in ["id", "write_date"] {
            if !fields.iter().any(|f| f == extra) {
                fields.push(extra.into());
            }
        }
        let field_refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        let mut domain = domain_of(def);
        let records = match def.on {
            HookEvent::Create => {
                domain.push(json!(["id", ">", cursor.last_id]));
                self.odoo
                    .search_read(
                        &def.model,
                        Value::Array(domain),
                        &field_refs,
                        json!({"order": "id asc", "limit": POLL_LIMIT}),
                    )
                    .await?
            }
            HookEvent::Write => {
                if let Some(wd) = &cursor.write_date {
                    domain.push(json!(["write_date", ">=", wd]));
                }
                self.odoo
                    .search_read(
                        &def.model,
                        Value::Array(domain),
                        &field_refs,
                        json!({"order": "write_date asc, id asc", "limit": POLL_LIMIT}),
                    )
                    .await?
            }
        };
        let mut fired = 0;
        let mut cursor = cursor;
        for record in records {
            let id = record.get("id").and_then(Value::as_i64).unwrap_or(0);
            let rkey = record_key(&file.name, id);
            let seen: Option<Value> = self.state(rkey.clone()).await?;
            let mut state = Vec::new();
            let values = watched(def, &record);
            let fire = match def.on {
                HookEvent::Create => {
                    cursor.last_id = cursor.last_id.max(id);
                    seen.is_none()
                }
                HookEvent::Write => {
                    if let Some(wd) = record.get("write_date").and_then(Value::as_str) {
                        cursor.write_date = Some(wd.to_string());
                    }
                    seen.as_ref() != Some(&values)
                }
            };
            if fire {
                let (effects, error) = self.run(file, &record, seen.clone()).await?;
                cursor.fired += 1;
                cursor.last_error = error;
                fired += 1;
                state.push((
                    rkey,
                    if def.on == HookEvent::Write {
                        values
                    } else {
                        json!(true)
                    },
                ));
                state.push((key.clone(), json!(cursor)));
                self.commit(effects, state).await?;
            } else {
                state.push((key.clone(), json!(cursor)));
                self.commit(Effects::default(), state).await?;
            }
        }
        Ok(fired)
    }

    /// Where a new cursor starts: after the newest existing record (create), or at the latest
    /// `write_date` with the records written during that second as already seen (write): their
    /// watched values are returned as baselines.
    async fn start_cursor(&self, def: &HookDef) -> Result<(HookCursor, Vec<(i64, Value)>), HookError> {
        let mut baselines = Vec::new();
        let mut c = HookCursor {
            def: def_value(def),
            ..Default::default()
        };
        match def.on {
            HookEvent::Create => {
                let top = self
                    .odoo
                    .search_read(
                        &def.model,
                        Value::Array(domain_of(def)),
                        &["id"],
                        json!({"order": "id desc", "limit": 1}),
                    )
                    .await?;
                c.last_id = top
                    .first()
                    .and_then(|r| r.get("id"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
            }
            HookEvent::Write => {
                let top = self
                    .odoo
                    .search_read(
                        &def.model,
                        Value::Array(domain_of(def)),
                        &["write_date"],
                        json!({"order": "write_date desc, id desc", "limit": 1}),
                    )
                    .await?;
                c.write_date = top
                    .first()
                    .and_then(|r| r.get("write_date"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if let Some(wd) = &c.write_date {
                    let mut domain = domain_of(def);
                    domain.push(json!(["write_date", ">=", wd]));
                    let mut fields: Vec<&str> = def.fields.iter().map(String::as_str).collect();
                    fields.push("id");
                    for r in self
                        .odoo
                        .search_read(&def.model, Value::Array(domain), &fields, json!({}))
                        .await?
                    {
                        if let Some(id) = r.get("id").and_then(Value::as_i64) {
                            baselines.push((id, watched(def, &r)));
                        }
                    }
                }
            }
        }
        Ok((c, baselines))
    }

    /// Runs a hook script with a record; returns its effects (empty when it failed) and error.
    async fn run(
        &self,
        file: &ScriptFile,
        record: &Value,
        previous: Option<Value>,
    ) -> Result<(Effects, Option<String>), HookError> {
        if let (Some(m), Some(lag)) = (&self.metrics, write_date_lag(record)) {
            m.hook_lag(lag);
        }
        let f = file.clone();
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
                tracing::info!(hook = %file.name, sent = effects.sends.len(), "odoo hook fired");
                Ok((effects, None))
            }
            Err(e) => {
                tracing::warn!(hook = %file.name, error = %e, "odoo hook script failed; its effects are dropped");
                Ok((Effects::default(), Some(e)))
            }
        }
    }

    async fn commit(&self, effects: Effects, state: Vec<(String, Value)>) -> Result<(), HookError> {
        let mut commit = effects.into_commit(Vec::new());
        commit.state = state;
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
        let mut fields: Vec<&str> = def.fields.iter().map(String::as_str).collect();
        for extra in ["id", "write_date"] {
            if !fields.contains(&extra) {
                fields.push(extra);
            }
        }
        let mut domain = domain_of(def);
        domain.push(json!(["id", "=", id]));
        let found = self
            .odoo
            .search_read(&def.model, Value::Array(domain), &fields, json!({"limit": 1}))
            .await?;
        let Some(record) = found.into_iter().next() else {
            tracing::info!(
                hook = name,
                id,
                "pushed record not found or outside the hook's domain; ignored"
            );
            return Ok(false);
        };
        let rkey = record_key(name, id);
        let seen: Option<Value> = self.state(rkey.clone()).await?;
        let values = watched(def, &record);
        let fire = match def.on {
            HookEvent::Create => seen.is_none(),
            HookEvent::Write => seen.as_ref() != Some(&values),
        };
        if !fire {
            return Ok(false);
        }
        let (effects, _error) = self.run(&file, &record, seen).await?;
        let marker = if def.on == HookEvent::Write {
            values
        } else {
            json!(true)
        };
        self.commit(effects, vec![(rkey, marker)]).await?;
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
mod lag_tests {
    use super::*;

    #[test]
    fn the_lag_is_measured_from_odoos_write_date() {
        let ago = (chrono::Utc::now() - chrono::Duration::seconds(90)).format("%Y-%m-%d %H:%M:%S");
        let lag = write_date_lag(&json!({ "write_date": ago.to_string() })).unwrap();
        assert!((89..=95).contains(&lag.as_secs()), "{lag:?}");
        assert!(write_date_lag(&json!({ "write_date": false })).is_none());
        assert!(write_date_lag(&json!({})).is_none());
    }
}
