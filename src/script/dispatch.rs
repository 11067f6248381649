//! The dispatcher: runs the scripts for every stored inbound message, exactly once, one
//! contact at a time, without letting one contact hold the others.
//!
//! The processor puts each new inbound message in the dispatch queue in the same transaction
//! that stores it. The dispatcher reads the queue in order and groups what it read by
//! contact: each contact's messages form one job, run in order on one Lua worker. A contact
//! with a job in progress gets no other until that job is committed, so its messages run
//! in order and each run sees what the previous one did (DESIGN.md, "One contact, one
//! order"); every other contact's messages start as soon as a worker is free.
//!
//! Before a job starts, the start of each of its messages is counted durably
//! ([`Store::dispatch_mark_started`]): a message that was running when walua died twice is
//! quarantined instead of run a third time. A job's effects are committed with the removal of
//! its messages from the queue in one transaction as soon as it ends, together with whatever
//! other jobs ended meanwhile: a crash before that commit runs them again with nothing
//! half-done; after it, nothing runs twice.
//!
//! A job whose worker wedges (its run does not stop when interrupted) is answered by the pool
//! with [`RuntimeError::Wedged`]: the message it was running is quarantined, durably, with the
//! reason as its outcome's error; the job's other messages go back to the queue.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::runtime::{Effects, RuntimeError, ScriptRuntime};
use crate::outbox::Outbox;
use crate::store::{PendingDispatch, ScriptOutcome, Store, StoreError};

/// The shortest time between two rounds of the dispatcher under load (`crate::pace`).
pub const DISPATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

/// Messages read from the queue per round.
pub const BATCH: usize = 128;

/// Most messages started and not committed at once.
pub const MAX_RUNNING: usize = 4 * BATCH;

/// Runs until shutdown.
pub struct Dispatcher {
    /// The store.
    pub store: Store,
    /// The Lua pool.
    pub runtime: Arc<ScriptRuntime>,
    /// Logs and wakes the outbox for committed sends.
    pub outbox: Outbox,
    /// Notified when the processor stored new inbound messages.
    pub wake: Arc<Notify>,
    /// Stops starting jobs; the loop ends once the running ones are committed.
    pub shutdown: CancellationToken,
    /// Counts script runs and errors for metrics.
    pub on_outcome: Arc<dyn Fn(&ScriptOutcome) + Send + Sync>,
}

/// What one contact's job came back with.
struct Finished {
    contact: String,
    ids: Vec<u64>,
    result: Result<(Effects, Vec<(u64, ScriptOutcome)>), RuntimeError>,
}

/// The dispatcher's view of what runs.
#[derive(Default)]
struct InFlight {
    /// Messages started and not yet committed.
    running: HashSet<u64>,
    /// Contacts with a job in progress.
    busy: HashSet<String>,
    /// Messages read from the queue whose contact was busy, by contact: skipped by the next
    /// reads until the contact's job is committed.
    held: HashMap<String, Vec<u64>>,
    /// `running` and every held id: what a read skips.
    skip: HashSet<u64>,
    /// Contacts whose message failed on a transient error: not run again before `until`.
    backoff: HashMap<String, Backoff>,
}

/// A contact held after a transient failure.
struct Backoff {
    /// Attempts that failed in a row.
    attempts: u32,
    /// No job for the contact before this.
    until: tokio::time::Instant,
    /// Its messages read meanwhile (skipped by reads until `until`).
    ids: Vec<u64>,
}

/// The first retry of a held message waits this long, doubled per attempt.
pub const HELD_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest wait between two retries of a held message.
pub const HELD_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

impl InFlight {
    /// Lets contacts whose backoff ended be read again; returns the next end, if any.
    fn backoff_ended(&mut self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let mut next = None::<tokio::time::Instant>;
        for b in self.backoff.values_mut() {
            if b.until <= now {
                for id in b.ids.drain(..) {
                    self.skip.remove(&id);
                }
            } else {
                next = Some(next.map_or(b.until, |n| n.min(b.until)));
            }
        }
        next
    }

    fn release(&mut self, contact: &str, ids: &[u64]) {
        self.busy.remove(contact);
        for id in ids {
            self.running.remove(id);
            self.skip.remove(id);
        }
        for id in self.held.remove(contact).unwrap_or_default() {
            self.skip.remove(&id);
        }
    }
}

type Record = (u64, Result<Option<PendingDispatch>, String>);

impl Dispatcher {
    /// Dispatches whatever waits (after a restart too), then each new message.
    pub async fn run(self) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        let mut flight = InFlight::default();
        let mut pacer = crate::pace::BatchPacer::new(DISPATCH_INTERVAL);
        let mut failing = false;
        // The pacer only spaces rounds; stopping is the loop's business.
        let never = CancellationToken::new();
        loop {
            let stopping = self.shutdown.is_cancelled();
            if stopping && flight.running.is_empty() {
                break;
            }
            // Commit what ended, then start what can start.
            let mut finished = Vec::new();
            while let Ok(f) = done_rx.try_recv() {
                finished.push(f);
            }
            let round = async {
                if !finished.is_empty() {
                    self.commit(finished, &mut flight).await?;
                }
                if !stopping && self.start(&mut flight, &done_tx).await? && flight.running.is_empty() {
                    // A full read started nothing (all quarantined): read on at once rather
                    // than wait for a job or a new message that may never come.
                    self.wake.notify_one();
                }
                Ok::<_, StoreError>(())
            };
            match round.await {
                Ok(()) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "script dispatch failed; retrying in 1s");
                    }
                    failing = true;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            }
            if stopping && flight.running.is_empty() {
                // The last jobs were just committed: nothing more will arrive.
                break;
            }
            let retry_at = flight.backoff_ended(tokio::time::Instant::now());
            tokio::select! {
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() && !stopping => {
                    flight.backoff_ended(tokio::time::Instant::now());
                }
                Some(f) = done_rx.recv() => {
                    // Put it back for the next round's commit, with whatever else ended.
                    let _ = done_tx.send(f);
                }
                _ = self.wake.notified(), if !stopping => {}
                _ = self.shutdown.cancelled(), if !stopping => {}
            }
            pacer.next_batch(&never).await;
        }
        tracing::debug!("dispatcher stopped");
    }

    /// Reads the queue and starts one job per contact that has none running. Returns
    /// whether the read was full (more may wait).
    async fn start(&self, flight: &mut InFlight, done: &mpsc::UnboundedSender<Finished>) -> Result<bool, StoreError> {
        if flight.running.len() >= MAX_RUNNING {
            return Ok(false);
        }
        let skip = flight.skip.clone();
        let limit = BATCH.min(MAX_RUNNING - flight.running.len());
        let records = self
            .store
            .blocking(move |s| s.dispatch_pending_except(limit, &skip))
            .await?;
        if records.is_empty() {
            return Ok(false);
        }
        let full = records.len() == limit;
        // Group by contact, in queue order; a busy contact's messages wait for its job.
        let mut jobs: Vec<(String, Vec<Record>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (id, record) in records {
            let record = record.map_err(|e| e.to_string());
            let contact = match &record {
                Ok(Some(p)) => p.message.contact.clone(),
                _ => String::new(),
            };
            if flight.busy.contains(&contact) {
                flight.held.entry(contact).or_default().push(id);
                flight.skip.insert(id);
                continue;
            }
            if let Some(b) = flight.backoff.get_mut(&contact)
                && b.until > tokio::time::Instant::now()
            {
                b.ids.push(id);
                flight.skip.insert(id);
                continue;
            }
            let i = *index.entry(contact.clone()).or_insert_with(|| {
                jobs.push((contact, Vec::new()));
                jobs.len() - 1
            });
            jobs[i].1.push((id, record));
        }
        if jobs.is_empty() {
            return Ok(full);
        }
        let ids: Vec<u64> = jobs.iter().flat_map(|(_, j)| j.iter().map(|(id, _)| *id)).collect();
        let (run, refused) = self.store.blocking(move |s| s.dispatch_mark_started(&ids)).await?;
        if !refused.is_empty() {
            let quarantined: Vec<(u64, String)> = refused
                .iter()
                .map(|(id, n)| {
                    tracing::error!(message_id = id, starts = n, "message quarantined: walua stopped while its scripts ran, twice");
                    (
                        *id,
                        format!(
                            "quarantined: walua stopped {n} times while this message's scripts ran (a crash they may cause); replay it once fixed"
                        ),
                    )
                })
                .collect();
            self.store
                .blocking(move |s| s.dispatch_quarantine(&quarantined, &[]))
                .await?;
        }
        let run: HashSet<u64> = run.into_iter().collect();
        for (contact, mut records) in jobs {
            records.retain(|(id, _)| run.contains(id));
            if records.is_empty() {
                continue;
            }
            let ids: Vec<u64> = records.iter().map(|(id, _)| *id).collect();
            flight.busy.insert(contact.clone());
            for id in &ids {
                flight.running.insert(*id);
                flight.skip.insert(*id);
            }
            let (runtime, done) = (self.runtime.clone(), done.clone());
            tokio::spawn(async move {
                let result = runtime.exec(move |w| w.dispatch_records(records)).await;
                // Let go of the pool before reporting: once the dispatcher has every answer,
                // shutdown stops the pool, which needs to be the last holder of it.
                drop(runtime);
                let _ = done.send(Finished { contact, ids, result });
            });
        }
        Ok(full)
    }

    /// Commits ended jobs in one transaction, quarantines what wedged, releases contacts.
    async fn commit(&self, finished: Vec<Finished>, flight: &mut InFlight) -> Result<(), StoreError> {
        let mut effects = Effects::default();
        let mut outcomes = Vec::new();
        let (mut quarantined, mut retry) = (Vec::new(), Vec::new());
        let mut released = Vec::new();
        for f in finished {
            match f.result {
                Ok((e, o)) => {
                    effects.absorb(e);
                    let mut held = false;
                    let done: HashSet<u64> = o.iter().filter(|(_, o)| !o.transient).map(|(id, _)| *id).collect();
                    for (id, outcome) in o {
                        if outcome.transient {
                            held = true;
                            let b = flight.backoff.entry(f.contact.clone()).or_insert(Backoff {
                                attempts: 0,
                                until: tokio::time::Instant::now(),
                                ids: Vec::new(),
                            });
                            b.attempts += 1;
                            let wait = HELD_RETRY_FIRST
                                .saturating_mul(1 << (b.attempts - 1).min(10))
                                .min(HELD_RETRY_MAX);
                            b.until = tokio::time::Instant::now() + wait;
                            tracing::info!(message_id = id, contact = %f.contact, attempt = b.attempts, "held message runs again in {wait:?}");
                        } else {
                            outcomes.push((id, outcome));
                        }
                    }
                    if held {
                        // Held and not run: their start marks are taken back, so that the
                        // retries never count as crashes (quarantine).
                        retry.extend(f.ids.iter().filter(|id| !done.contains(id)));
                    } else {
                        flight.backoff.remove(&f.contact);
                    }
                }
                Err(RuntimeError::Wedged { message, why, after_ms }) => {
                    let reason = RuntimeError::Wedged { message, why, after_ms }.to_string();
                    for id in &f.ids {
                        if Some(*id) == message {
                            tracing::error!(message_id = id, contact = %f.contact, reason = %reason, "message quarantined");
                            quarantined.push((*id, reason.clone()));
                        } else {
                            retry.push(*id);
                        }
                    }
                    if message.is_none() {
                        // Wedged outside a message's scripts: quarantine the job's first.
                        if let Some(first) = retry.first().copied() {
                            retry.retain(|id| *id != first);
                            quarantined.push((first, reason.clone()));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, contact = %f.contact, "a dispatch job did not run; its messages stay queued");
                    retry.extend(&f.ids);
                }
            }
            released.push((f.contact, f.ids));
        }
        for (id, o) in &outcomes {
            (self.on_outcome)(o);
            if o.scripts.is_empty() {
                tracing::debug!(message_id = id, "no script for this message");
            } else {
                tracing::info!(message_id = id, scripts = ?o.scripts, sent = o.sent.len(), error = ?o.error, "scripts ran");
            }
        }
        let written = async {
            if !outcomes.is_empty()
                || !effects.sends.is_empty()
                || !effects.state.is_empty()
                || !effects.failed.is_empty()
                || !effects.help.is_empty()
            {
                let commit = effects.into_commit(outcomes);
                let recorded = self
                    .store
                    .blocking(move |s| s.commit_script_runs_deferred(&commit))
                    .await?;
                for m in &recorded {
                    self.outbox.recorded(m, m.origin.as_deref().unwrap_or("script"));
                }
                // The scripts' outcomes (and a request for a person) show in the console.
                self.outbox.changed();
            }
            if !quarantined.is_empty() || !retry.is_empty() {
                self.store
                    .blocking(move |s| s.dispatch_quarantine(&quarantined, &retry))
                    .await?;
            }
            Ok(())
        }
        .await;
        // Committed or not, the contacts are free: what was not committed is still queued and
        // runs again, with nothing of the failed commit applied.
        for (contact, ids) in released {
            flight.release(&contact, &ids);
        }
        written
    }
}
