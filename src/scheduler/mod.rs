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
//! - **No overlap.** Jobs run one after the other on the scheduler task: a job never overlaps
//!   itself.
//! - **Hot reload.** The registry is read on every pass, so a saved schedule takes effect
//!   without a restart.
//! - **Daylight saving.** Ticks are computed in the job's zone by the cron crate and
//!   remembered as UTC instants. A local time that happens twice (clocks go back) fires once:
//!   a tick whose local wall-clock time equals the last fired one is skipped. A local time
//!   that does not exist (clocks go forward) is skipped by the cron crate; the job runs at its
//!   next tick.
//! - A new job (never run) starts from now: its past is not caught up.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use mlua::{Function, Value as LuaValue};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::script::registry::{ScriptFile, ScriptKind, ScriptMeta, SharedRegistry};
use crate::script::runtime::ScriptRuntime;
use crate::store::Store;

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
    pub async fn run(self) {
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

    /// Runs `file` if a tick is due; returns the next tick.
    async fn pass(&self, file: &ScriptFile) -> Result<Option<DateTime<Utc>>, String> {
        let ScriptMeta::Cron(def) = &file.meta else {
            return Ok(None);
        };
        let schedule = def.parsed().map_err(|e| e.to_string())?;
        let tz = def.tz().unwrap_or(self.default_tz);
        let key = format!("cron:{}", file.name);
        let now = Utc::now();
        let state: Option<CronState> = {
            let k = key.clone();
            self.store
                .blocking(move |s| s.state_get(&k))
                .await
                .map_err(|e| e.to_string())?
                .and_then(|v| serde_json::from_value(v).ok())
        };
        let Some(state) = state.filter(|s| s.schedule == def.schedule) else {
            // First sight of this job (or of a new schedule): start from now.
            let fresh = CronState {
                last_tick_ms: now.timestamp_millis(),
                last_local: String::new(),
                last_run_ms: None,
                last_error: None,
                schedule: def.schedule.clone(),
            };
            self.commit(Default::default(), &key, &fresh).await?;
            tracing::info!(job = %file.name, schedule = %def.schedule, %tz, next = ?next_tick(&schedule, tz, now), "cron job scheduled");
            return Ok(next_tick(&schedule, tz, now));
        };
        let last = Utc.timestamp_millis_opt(state.last_tick_ms).single().unwrap_or(now);
        let Some(tick) = due_tick(&schedule, tz, last, &state.last_local, now) else {
            return Ok(next_tick(&schedule, tz, now));
        };
        let missed = schedule
            .after(&last.with_timezone(&tz))
            .take_while(|t| t.with_timezone(&Utc) <= now)
            .count();
        tracing::info!(job = %file.name, tick = %tick, missed = missed.saturating_sub(1), "cron job running");
        let f = file.clone();
        let result = self
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
        let (effects, outcome) = result;
        let error = outcome.err();
        if let Some(e) = &error {
            tracing::warn!(job = %file.name, error = %e, "cron job failed; its effects are dropped");
        }
        let effects = if error.is_some() { Default::default() } else { effects };
        let next_state = CronState {
            last_tick_ms: tick.with_timezone(&Utc).timestamp_millis(),
            last_local: local(&tick),
            last_run_ms: Some(Utc::now().timestamp_millis()),
            last_error: error,
            schedule: def.schedule.clone(),
        };
        self.commit(effects, &key, &next_state).await?;
        Ok(next_tick(&schedule, tz, Utc::now()))
    }

    async fn commit(
        &self,
        effects: crate::script::runtime::Effects,
        key: &str,
        state: &CronState,
    ) -> Result<(), String> {
        let mut commit = effects.into_commit(Vec::new());
        commit.state.push((key.to_string(), json!(state)));
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
