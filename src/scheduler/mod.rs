//! Cron jobs from `scripts/cron/*.lua`.
//!
//! A job returns `{ schedule = "0 0 9 * * *", timezone = "Africa/Dakar", run = function() … end }`.
//! Schedules use the cron crate's syntax (6 or 7 fields with seconds, day-of-week 1 = Sunday);
//! the 5-field form operators know is accepted and gets `0` seconds. The zone defaults to
//! `[scripts] timezone` (UTC when unset).
//!
//! - **Persisted last run.** The last tick handled is stored (`cron:NAME` in the state table)
//!   in the same transaction as the job's effects.
//! - **Catch-up once.** After downtime, a job whose ticks were missed runs once, not once per
//!   missed tick.
//! - **No overlap.** Jobs run one after the other on the scheduler task, and a job run on
//!   request (`walua cron run`) holds the job too: a job never overlaps itself.
//! - **Hot reload.** The registry is read on every pass, so a saved schedule takes effect
//!   without a restart.
//! - **Daylight saving.** Ticks are computed in the job's zone by the cron crate and
//!   remembered as UTC instants. A local time that happens twice (clocks go back) fires once:
//!   a tick whose local wall-clock time equals the last fired one is skipped. A local time
//!   that does not exist (clocks go forward) is skipped by the cron crate; the job runs at its
//!   next tick.
//! - A new job (never run) starts from now: its past is not caught up.
//! - **Failures are not lost.** A run that fails on a transient error (Odoo unreachable, a
//!   Graph 5xx) is retried with backoff within its period (`cron:NAME:TICK` in the failed
//!   runs); when the next tick comes first, or on a definite failure (a Lua error), it is
//!   parked for the operator (`walua parked list|replay`). `walua cron list` shows each job's
//!   next and last runs and its last error; `walua cron run NAME` runs one now.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use mlua::{Function, Value as LuaValue};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::script::registry::{ScriptFile, ScriptKind, ScriptMeta, SharedRegistry};
use crate::script::runtime::{Effects, RunFailure, ScriptRuntime};
use crate::store::Store;
use crate::store::parked::{FailedRun, RetryPolicy, RunKind};

/// What the scheduler needs.
pub struct Scheduler {
    /// The store.
    pub store: Store,
    /// The Lua pool.
    pub runtime: Arc<ScriptRuntime>,
    /// The loaded scripts.
    pub registry: SharedRegistry,
    /// Logs and wakes the outbox for committed sends.
    pub outbox: crate::outbox::Outbox,
    /// Zone of jobs that name none.
    pub default_tz: Tz,
    /// Stops the scheduler.
    pub shutdown: CancellationToken,
    /// How failed runs are retried (within their period), then parked.
    pub retry: RetryPolicy,
    /// Jobs running now, by name: a job never overlaps itself, also when run on request.
    pub running: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// A job's turn to run; the job is free again when it is dropped.
struct Claim<'a> {
    running: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    name: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

/// A job as `GET /api/cron` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CronJob {
    /// The script's name (`cron/NAME.lua`).
    pub name: String,
    /// Its schedule (6/7-field form).
    pub schedule: String,
    /// Its time zone.
    pub timezone: String,
    /// The next tick (RFC 3339, UTC).
    pub next_run: Option<String>,
    /// When it last ran (RFC 3339, UTC).
    pub last_run: Option<String>,
    /// The last run's error.
    pub last_error: Option<String>,
    /// Runs waiting for a retry.
    pub retrying: usize,
    /// Runs parked for the operator.
    pub parked: usize,
}

/// Errors of `walua cron run`.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// No such job.
    #[error("no cron job named `{0}` (see `walua cron list`)")]
    Unknown(String),
    /// The job is running now.
    #[error("cron job `{0}` is running now; try again when it has finished")]
    Busy(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

/// Unix ms as an RFC 3339 time (UTC, seconds), for the admin API.
pub fn rfc3339(ms: i64) -> Option<String> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The state kept per job.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CronState {
    /// The last tick handled (UTC, unix ms).
    pub last_tick_ms: i64,
    /// Its local wall-clock time, to fire a repeated local time once.
    pub last_local: String,
    /// When the job last ran (unix ms), if it ran.
    pub last_run_ms: Option<i64>,
    /// The last run's error.
    pub last_error: Option<String>,
    /// The schedule the state was computed with.
    pub schedule: String,
}

/// The tick to run now, if any: the latest tick in (last, now], skipping a local time already
/// fired. `None` when nothing is due.
pub fn due_tick(
    schedule: &cron::Schedule,
    tz: Tz,
    last: DateTime<Utc>,
    last_local: &str,
    now: DateTime<Utc>,
) -> Option<DateTime<Tz>> {
    let start = last.with_timezone(&tz);
    schedule
        .after(&start)
        .take_while(|t| t.with_timezone(&Utc) <= now)
        .filter(|t| local(t) != last_local)
        .last()
}

/// The next tick after `now`.
pub fn next_tick(schedule: &cron::Schedule, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .after(&now.with_timezone(&tz))
        .next()
        .map(|t| t.with_timezone(&Utc))
}

fn local(t: &DateTime<Tz>) -> String {
    t.naive_local().format("%Y-%m-%d %H:%M:%S").to_string()
}

impl Scheduler {
    /// Runs due jobs until shutdown.
    pub async fn run(self: Arc<Self>) {
        loop {
            let jobs: Vec<ScriptFile> = {
                let reg = self.registry.read().expect("not poisoned");
                reg.of_kind(ScriptKind::Cron).cloned().collect()
            };
            let mut sleep = Duration::from_secs(30);
            for file in jobs {
                if self.shutdown.is_cancelled() {
                    return;
                }
                match self.pass(&file).await {
                    Ok(Some(next)) => {
                        let until = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                        sleep = sleep.min(until);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(job = %file.name, error = %e, "cron pass failed"),
                }
            }
            // Wake at least every second so that a saved schedule is seen promptly.
            let sleep = sleep.clamp(Duration::from_millis(20), Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn cron_state(&self, key: &str) -> Result<Option<CronState>, String> {
        let k = key.to_string();
        Ok(self
            .store
            .blocking(move |s| s.state_get(&k))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    /// Runs `file`'s due retries, then its tick if one is due; returns when to look again.
    async fn pass(&self, file: &ScriptFile) -> Result<Option<DateTime<Utc>>, String> {
        let ScriptMeta::Cron(def) = &file.meta else {
            return Ok(None);
        };
        let schedule = def.parsed().map_err(|e| e.to_string())?;
        let tz = def.tz().unwrap_or(self.default_tz);
        let key = format!("cron:{}", file.name);
        let now = Utc::now();
        let state = self.cron_state(&key).await?;
        let Some(state) = state.filter(|s| s.schedule == def.schedule) else {
            // First sight of this job (or of a new schedule): start from now.
            let fresh = CronState {
                last_tick_ms: now.timestamp_millis(),
                last_local: String::new(),
                last_run_ms: None,
                last_error: None,
                schedule: def.schedule.clone(),
            };
            self.commit(Default::default(), &key, &fresh, Vec::new()).await?;
            tracing::info!(job = %file.name, schedule = %def.schedule, %tz, next = ?next_tick(&schedule, tz, now), "cron job scheduled");
            return Ok(next_tick(&schedule, tz, now));
        };
        let Some(_claim) = self.claim(&file.name) else {
            // Run on request right now: look again in a second.
            return Ok(Some(now + chrono::Duration::seconds(1)));
        };
        let mut wake = next_tick(&schedule, tz, now);
        if let Some(retry_at) = self.retries(file, &schedule, tz, &key).await? {
            wake = Some(wake.map_or(retry_at, |w| w.min(retry_at)));
        }
        let state = self.cron_state(&key).await?.unwrap_or(state);
        let last = Utc.timestamp_millis_opt(state.last_tick_ms).single().unwrap_or(now);
        let Some(tick) = due_tick(&schedule, tz, last, &state.last_local, now) else {
            return Ok(wake);
        };
        let missed = schedule
            .after(&last.with_timezone(&tz))
            .take_while(|t| t.with_timezone(&Utc) <= now)
            .count();
        tracing::info!(job = %file.name, tick = %tick, missed = missed.saturating_sub(1), "cron job running");
        let tick_ms = tick.with_timezone(&Utc).timestamp_millis();
        let (effects, outcome) = self.run_job(file).await?;
        let mut failed = Vec::new();
        if let Err(failure) = &outcome {
            let id = format!("{key}:{tick_ms}");
            let mut entry = FailedRun::new(
                id.clone(),
                RunKind::Cron,
                &file.name,
                String::new(),
                true,
                Utc::now().timestamp_millis(),
            );
            entry.tick_ms = Some(tick_ms);
            let policy = self.policy_within(&schedule, tz, tick_ms, entry.first_failed_ms);
            self.note_failure(file, &mut entry, failure, &policy);
            failed.push((id, Some(entry)));
        }
        let next_state = CronState {
            last_tick_ms: tick_ms,
            last_local: local(&tick),
            last_run_ms: Some(Utc::now().timestamp_millis()),
            last_error: outcome.err().map(|f| f.message),
            schedule: def.schedule.clone(),
        };
        self.commit(effects, &key, &next_state, failed).await?;
        Ok(next_tick(&schedule, tz, Utc::now()).map(|n| wake.map_or(n, |w| w.min(n))))
    }

    /// The retry policy of a run for `tick_ms`: retried at most until the job's next tick.
    fn policy_within(&self, schedule: &cron::Schedule, tz: Tz, tick_ms: i64, first_failed_ms: i64) -> RetryPolicy {
        let tick = Utc.timestamp_millis_opt(tick_ms).single().unwrap_or_else(Utc::now);
        let period_left = next_tick(schedule, tz, tick)
            .map(|n| Duration::from_millis((n.timestamp_millis() - first_failed_ms).max(0) as u64))
            .unwrap_or(self.retry.retry_for);
        RetryPolicy {
            retry_for: self.retry.retry_for.min(period_left),
            ..self.retry
        }
    }

    /// Logs a failed run and records it in `entry` (retrying or parked).
    fn note_failure(&self, file: &ScriptFile, entry: &mut FailedRun, failure: &RunFailure, policy: &RetryPolicy) {
        let now = Utc::now().timestamp_millis();
        if entry.failed_again(failure.message.clone(), failure.transient, now, policy) {
            tracing::error!(job = %file.name, attempts = entry.attempts, transient = failure.transient, error = %failure.message,
                "cron run failed and is parked: see `walua parked list`, replay with `walua parked replay {}`", entry.id);
        } else {
            let wait = Duration::from_millis((entry.next_attempt_ms.unwrap_or(now) - now).max(0) as u64);
            tracing::warn!(job = %file.name, attempts = entry.attempts, error = %failure.message,
                "cron run failed on a transient error; its effects are dropped and it runs again in {wait:?}");
        }
    }

    /// Runs this job's due retries; parks those whose period ended. Returns the next retry.
    async fn retries(
        &self,
        file: &ScriptFile,
        schedule: &cron::Schedule,
        tz: Tz,
        key: &str,
    ) -> Result<Option<DateTime<Utc>>, String> {
        let prefix = format!("{key}:");
        let entries = self
            .store
            .blocking(move |s| s.failed_runs(&prefix))
            .await
            .map_err(|e| e.to_string())?;
        let mut next: Option<DateTime<Utc>> = None;
        for mut entry in entries {
            let Some(due) = entry.next_attempt_ms else { continue };
            let now = Utc::now().timestamp_millis();
            let tick_ms = entry.tick_ms.unwrap_or(entry.first_failed_ms);
            let period_end = next_tick(
                schedule,
                tz,
                Utc.timestamp_millis_opt(tick_ms).single().unwrap_or_else(Utc::now),
            );
            if period_end.is_some_and(|end| end.timestamp_millis() <= now) {
                entry.next_attempt_ms = None;
                entry.error = format!("{} (not retried past the job's next run)", entry.error);
                tracing::error!(job = %file.name, attempts = entry.attempts, error = %entry.error,
                    "cron run still failing when its period ended: parked; replay with `walua parked replay {}`", entry.id);
                let id = entry.id.clone();
                self.store
                    .blocking(move |s| s.failed_run_set(&id, Some(&entry)))
                    .await
                    .map_err(|e| e.to_string())?;
                continue;
            }
            if due > now {
                let at = Utc.timestamp_millis_opt(due).single();
                next = match (next, at) {
                    (Some(n), Some(a)) => Some(n.min(a)),
                    (n, a) => n.or(a),
                };
                continue;
            }
            tracing::info!(job = %file.name, attempt = entry.attempts + 1, "cron run retried");
            let (effects, outcome) = self.run_job(file).await?;
            let mut state = self.cron_state(key).await?;
            match outcome {
                Ok(()) => {
                    tracing::info!(job = %file.name, attempts = entry.attempts, "cron run succeeded on retry");
                    if let Some(s) = state.as_mut() {
                        s.last_run_ms = Some(now);
                        s.last_error = None;
                    }
                    let id = entry.id.clone();
                    self.commit_with(effects, key, state.as_ref(), vec![(id, None)]).await?;
                }
                Err(failure) => {
                    let policy = self.policy_within(schedule, tz, tick_ms, entry.first_failed_ms);
                    self.note_failure(file, &mut entry, &failure, &policy);
                    if let Some(s) = state.as_mut() {
                        s.last_run_ms = Some(now);
                        s.last_error = Some(failure.message);
                    }
                    if let Some(at) = entry.next_attempt_ms.and_then(|t| Utc.timestamp_millis_opt(t).single()) {
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                    let id = entry.id.clone();
                    self.commit_with(Effects::default(), key, state.as_ref(), vec![(id, Some(entry))])
                        .await?;
                }
            }
        }
        Ok(next)
    }

    /// Claims `name` for one run, or `None` when it is running.
    fn claim(&self, name: &str) -> Option<Claim<'_>> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(name.to_string()).then(|| Claim {
            running: &self.running,
            name: name.to_string(),
        })
    }

    /// Runs a job's script once; its effects are empty when it failed.
    async fn run_job(&self, file: &ScriptFile) -> Result<(Effects, Result<(), RunFailure>), String> {
        let f = file.clone();
        let (effects, outcome) = self
            .runtime
            .exec(move |w| {
                w.take_effects();
                let r = w.run_script(&f, |sandbox, value| {
                    let LuaValue::Table(t) = value else {
                        return Err(crate::script::sandbox::RunError::Lua {
                            message: format!("{}: must return a table", f.chunk_name),
                        });
                    };
                    let run: Function =
                        t.get::<Function>("run")
                            .map_err(|e| crate::script::sandbox::RunError::Lua {
                                message: format!("{}: run: {e}", f.chunk_name),
                            })?;
                    sandbox.call::<()>(&run, ())
                });
                (w.take_effects(), r)
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(match outcome {
            Ok(()) => (effects, Ok(())),
            Err(e) => (Effects::default(), Err(e)),
        })
    }

    /// Every cron job with its next and last runs (`GET /api/cron`).
    pub async fn jobs(&self) -> Result<Vec<CronJob>, CronError> {
        let files: Vec<ScriptFile> = {
            let reg = self.registry.read().expect("not poisoned");
            reg.of_kind(ScriptKind::Cron).cloned().collect()
        };
        let failed = self
            .store
            .blocking(|s| s.failed_runs("cron:"))
            .await
            .map_err(|e| CronError::Store(e.to_string()))?;
        let mut out = Vec::new();
        for file in files {
            let ScriptMeta::Cron(def) = &file.meta else { continue };
            let tz = def.tz().unwrap_or(self.default_tz);
            let key = format!("cron:{}", file.name);
            let state = self.cron_state(&key).await.map_err(CronError::Store)?;
            let prefix = format!("{key}:");
            let mine = failed.iter().filter(|f| f.id.starts_with(&prefix));
            let (parked, retrying): (Vec<_>, Vec<_>) = mine.partition(|f| f.parked());
            out.push(CronJob {
                name: file.name.clone(),
                schedule: def.schedule.clone(),
                timezone: tz.to_string(),
                next_run: def
                    .parsed()
                    .ok()
                    .and_then(|s| next_tick(&s, tz, Utc::now()))
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                last_run: state.as_ref().and_then(|s| s.last_run_ms).and_then(rfc3339),
                last_error: state.and_then(|s| s.last_error),
                retrying: retrying.len(),
                parked: parked.len(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Runs a job now, whatever its schedule (`walua cron run NAME`); its effects are
    /// committed when it succeeds. The schedule is untouched.
    pub async fn run_now(&self, name: &str) -> Result<Result<usize, RunFailure>, CronError> {
        let file = {
            let reg = self.registry.read().expect("not poisoned");
            reg.get(ScriptKind::Cron, name).cloned()
        }
        .ok_or_else(|| CronError::Unknown(name.to_string()))?;
        let _claim = self
            .claim(&file.name)
            .ok_or_else(|| CronError::Busy(file.name.clone()))?;
        tracing::info!(job = %file.name, "cron job run now, on request");
        let (effects, outcome) = self.run_job(&file).await.map_err(CronError::Store)?;
        let key = format!("cron:{}", file.name);
        let mut state = self.cron_state(&key).await.map_err(CronError::Store)?;
        if let Some(s) = state.as_mut() {
            s.last_run_ms = Some(Utc::now().timestamp_millis());
            s.last_error = outcome.as_ref().err().map(|f| f.message.clone());
        }
        let sent = effects.sends.len();
        self.commit_with(effects, &key, state.as_ref(), Vec::new())
            .await
            .map_err(CronError::Store)?;
        Ok(outcome.map(|()| sent))
    }

    /// Runs a failed cron run again now (`POST /api/parked/{id}/replay`); clears its entry when
    /// it succeeds, records the new error when not.
    pub async fn replay(&self, entry: &FailedRun) -> Result<Result<usize, RunFailure>, CronError> {
        let file = {
            let reg = self.registry.read().expect("not poisoned");
            reg.get(ScriptKind::Cron, &entry.name).cloned()
        }
        .ok_or_else(|| CronError::Unknown(entry.name.clone()))?;
        let _claim = self
            .claim(&file.name)
            .ok_or_else(|| CronError::Busy(file.name.clone()))?;
        let (effects, outcome) = self.run_job(&file).await.map_err(CronError::Store)?;
        let key = format!("cron:{}", file.name);
        let sent = effects.sends.len();
        let failed = match &outcome {
            Ok(()) => (entry.id.clone(), None),
            Err(f) => {
                let mut e = entry.clone();
                e.attempts += 1;
                e.error = f.message.clone();
                e.transient = f.transient;
                e.last_failed_ms = Utc::now().timestamp_millis();
                (entry.id.clone(), Some(e))
            }
        };
        let state = self.cron_state(&key).await.map_err(CronError::Store)?;
        self.commit_with(effects, &key, state.as_ref(), vec![failed])
            .await
            .map_err(CronError::Store)?;
        Ok(outcome.map(|()| sent))
    }

    async fn commit(
        &self,
        effects: Effects,
        key: &str,
        state: &CronState,
        failed: Vec<(String, Option<FailedRun>)>,
    ) -> Result<(), String> {
        self.commit_with(effects, key, Some(state), failed).await
    }

    async fn commit_with(
        &self,
        effects: Effects,
        key: &str,
        state: Option<&CronState>,
        failed: Vec<(String, Option<FailedRun>)>,
    ) -> Result<(), String> {
        let mut commit = effects.into_commit(Vec::new());
        if let Some(state) = state {
            commit.state.push((key.to_string(), json!(state)));
        }
        commit.failed = failed;
        let recorded = self
            .store
            .blocking(move |s| s.commit_script_runs(&commit))
            .await
            .map_err(|e| e.to_string())?;
        for m in &recorded {
            self.outbox.recorded(m, m.origin.as_deref().unwrap_or("cron"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn missed_ticks_collapse_into_one_run() {
        let s = cron::Schedule::from_str("0 0 9 * * *").unwrap();
        let tz: Tz = "Africa/Dakar".parse().unwrap();
        let last = at(tz, 2026, 11, 20, 9, 0);
        let now = at(tz, 2026, 11, 25, 10, 0);
        let tick = due_tick(&s, tz, last, "", now).unwrap();
        assert_eq!(local(&tick), "2026-11-25 09:00:00", "only the latest missed tick");
        assert!(due_tick(&s, tz, tick.with_timezone(&Utc), &local(&tick), now).is_none());
    }

    #[test]
    fn a_repeated_local_time_fires_once_and_a_skipped_one_not_at_all() {
        let tz: Tz = "Europe/Paris".parse().unwrap();
        // 2026-10-25: 02:30 local happens twice in Paris (clocks go back at 03:00).
        let s = cron::Schedule::from_str("0 30 2 * * *").unwrap();
        let before = at(tz, 2026, 10, 25, 1, 0);
        let first = due_tick(&s, tz, before, "", at(tz, 2026, 10, 25, 2, 45)).unwrap();
        let after_both = Utc.with_ymd_and_hms(2026, 10, 25, 2, 0, 0).unwrap(); // 03:00 CET
        let again = due_tick(&s, tz, first.with_timezone(&Utc), &local(&first), after_both);
        assert!(again.is_none(), "the repeated 02:30 must not fire twice: {again:?}");
        // 2026-03-29: 02:30 does not exist in Paris; the job next runs the day after.
        let before = at(tz, 2026, 3, 29, 1, 0);
        let next = next_tick(&s, tz, before).unwrap().with_timezone(&tz);
        assert_eq!(local(&next), "2026-03-30 02:30:00");
    }
}
