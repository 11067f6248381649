//! The durable send queue.
//!
//! [`Outbox::enqueue`] validates a message against Meta's limits, checks the 24 h window and
//! records the message and its job in one durable transaction before anything goes on the
//! network. [`OutboxWorker`] sends due jobs: a global token bucket per number
//! (`max_per_second`), a per-recipient bucket (Meta's pair rate: `pair_burst` messages, then
//! one per `pair_interval`), at most one message in flight per recipient (order is kept),
//! retries with exponential backoff and jitter on 429 / 5xx / timeouts / connection errors
//! until `retry_horizon`, and a definite error marks the message failed with Meta's code and
//! an explanation.
//!
//! # Crash between "sending" and Meta's answer
//!
//! A job is marked `sending` durably before the request. If walua dies before Meta's answer
//! is recorded, the job is found in `sending` at start-up and is NOT resent: the message gets
//! status `unknown` with an explanation. Every send carries `biz_opaque_callback_data =
//! "walua:<id>"`, which Meta echoes in status webhooks, so a message that did go out is
//! reconciled (wamid and status) by its first status webhook. An operator can resend an
//! `unknown` or `failed` message with `POST /api/messages/{id}/resend`.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::store::outbox::{NewOutbound, SendResult};
use crate::store::{ErrorInfo, MessageRecord, Store, StoreError, normalize_contact, now_ms};
use crate::whatsapp::client::{GraphClient, SendFailure};
use crate::whatsapp::error::{Disposition, explain};
use crate::whatsapp::message::{OutboundContent, Recipient, ValidationError};

/// A send request: the body of `POST /api/messages` and what the Lua send calls build.
#[derive(Debug, Clone, Deserialize)]
pub struct SendRequest {
    /// Phone number, BSUID or username of a known contact.
    pub to: String,
    /// Reply to this wamid (`context.message_id`).
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The content, tagged by `type`.
    #[serde(flatten)]
    pub content: OutboundContent,
}

/// Why a send request was refused before being queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Meta would refuse it (limits, shapes) or the recipient is unusable (422).
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The enqueue side of the outbox, shared by the admin API and the scripts.
#[derive(Clone)]
pub struct Outbox {
    store: Store,
    wake: Arc<Notify>,
    dry_run: bool,
    allow_outside_window: bool,
}

impl Outbox {
    /// An outbox on `store`; `wake` is notified when a job is queued.
    pub fn new(store: Store, wake: Arc<Notify>, dry_run: bool, allow_outside_window: bool) -> Outbox {
        Outbox {
            store,
            wake,
            dry_run,
            allow_outside_window,
        }
    }

    /// Wakes the worker (after a job was queued by another path, e.g. a resend).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Validates a request and gives it an id, without recording anything yet (scripts
    /// commit their sends together with their outcome).
    pub fn prepare(&self, req: &SendRequest, origin: &str) -> Result<NewOutbound, SendError> {
        let recipient = self.resolve_recipient(&req.to)?;
        let body = req.content.graph_body(&recipient, req.reply_to.as_deref())?;
        let content = serde_json::to_value(&req.content).unwrap_or(Value::Null);
        Ok(NewOutbound {
            id: self.store.allocate_message_id(),
            recipient: recipient.as_str().to_string(),
            kind: req.content.kind().to_string(),
            summary: req.content.summary(),
            content,
            body,
            free_form: req.content.is_free_form(),
            allow_outside_window: self.allow_outside_window,
            dry_run: self.dry_run,
            origin: origin.to_string(),
            reply_to: req.reply_to.clone(),
        })
    }

    /// Logs a recorded message and wakes the worker when it was queued.
    pub fn recorded(&self, record: &MessageRecord, origin: &str) {
        let recipient = record.to.as_deref().unwrap_or("?");
        match record.status.as_str() {
            "queued" => {
                tracing::debug!(message_id = record.id, to = %recipient, kind = %record.kind, origin, "outbound message queued");
                self.wake.notify_one();
            }
            "dry_run" => {
                tracing::debug!(message_id = record.id, to = %recipient, kind = %record.kind, origin, body = %record.raw, "dry run: message recorded, not sent")
            }
            _ => {
                tracing::warn!(message_id = record.id, to = %recipient, origin, error = ?record.error.as_ref().map(|e| &e.title), "outbound message refused")
            }
        }
    }

    /// Validates and records a message (synchronous: call it off the async runtime).
    pub fn enqueue_blocking(&self, req: &SendRequest, origin: &str) -> Result<MessageRecord, SendError> {
        let new = self.prepare(req, origin)?;
        let record = self.store.enqueue_outbound(new)?;
        self.recorded(&record, origin);
        Ok(record)
    }

    /// Validates and records a message from async code.
    pub async fn enqueue(&self, req: SendRequest, origin: String) -> Result<MessageRecord, SendError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.enqueue_blocking(&req, &origin))
            .await
            .map_err(|e| SendError::Store(StoreError::Join(e.to_string())))?
    }

    /// A phone or BSUID as given, or a known contact's (username) phone, else its BSUID.
    fn resolve_recipient(&self, to: &str) -> Result<Recipient, ValidationError> {
        let normalized = normalize_contact(to);
        if let Ok(r) = Recipient::parse(&normalized) {
            return Ok(r);
        }
        let conv = self
            .store
            .conversation(to)
            .map_err(|e| ValidationError::new("to", format!("cannot look the contact up: {e}")))?;
        match conv {
            Some(c) => match c.wa_id.or(c.user_id) {
                Some(id) => Recipient::parse(&id),
                None => Err(ValidationError::new(
                    "to",
                    format!("contact `{to}` has no phone number nor BSUID"),
                )),
            },
            None => Err(ValidationError::new(
                "to",
                format!("`{to}` is neither a phone number, a BSUID (e.g. SN.1349…) nor a known contact"),
            )),
        }
    }
}

/// Outbox worker settings, from `[whatsapp]`.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// Messages per second for the number.
    pub max_per_second: u32,
    /// Messages that may go to one recipient back to back.
    pub pair_burst: u32,
    /// Then one message per this interval to the same recipient.
    pub pair_interval: Duration,
    /// First retry delay (doubles each attempt, ±25 % jitter, capped at 10 min).
    pub retry_base: Duration,
    /// Give up retrying after this long since the message was queued.
    pub retry_horizon: Duration,
    /// Sends in flight at once.
    pub max_in_flight: usize,
}

/// The background sender. Owned by the daemon; stops on shutdown after in-flight sends end.
pub struct OutboxWorker {
    /// The store.
    pub store: Store,
    /// The Graph API client.
    pub client: Arc<GraphClient>,
    /// Notified when a job is queued.
    pub wake: Arc<Notify>,
    /// Stops the worker.
    pub shutdown: CancellationToken,
    /// Limits and retry policy.
    pub settings: OutboxSettings,
}

/// How long the worker may wait for the global limiter while gathering a batch of sends.
const GATHER_WAIT: Duration = Duration::from_millis(5);

type Keyed = RateLimiter<String, governor::state::keyed::DefaultKeyedStateStore<String>, DefaultClock>;

impl OutboxWorker {
    /// Recovers interrupted sends, then sends until shutdown.
    pub async fn run(self) {
        match self.store.blocking(|s| s.outbox_recover_interrupted()).await {
            Ok(ids) if !ids.is_empty() => {
                tracing::warn!(?ids, "sends interrupted by the last stop marked `unknown`, not resent")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "could not recover interrupted sends"),
        }
        let s = &self.settings;
        let per_second = NonZeroU32::new(s.max_per_second.max(1)).expect("max(1) is non-zero");
        let global = RateLimiter::direct(Quota::per_second(per_second).allow_burst(NonZeroU32::MIN));
        let pair: Arc<Keyed> = Arc::new(RateLimiter::keyed(
            Quota::with_period(s.pair_interval.max(Duration::from_millis(1)))
                .expect("period is non-zero")
                .allow_burst(NonZeroU32::new(s.pair_burst.max(1)).expect("max(1) is non-zero")),
        ));
        let clock = DefaultClock::default();
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
        let permits = Arc::new(Semaphore::new(s.max_in_flight.max(1)));
        let tasks = tokio_util::task::TaskTracker::new();

        // Answers are recorded by one task, in group commits: every answer that arrives
        // while a commit is in flight goes into the next one (one fsync per group).
        let (answers, answers_rx) = tokio::sync::mpsc::unbounded_channel::<Answer>();
        let recorder = tokio::spawn(record_answers(
            self.store.clone(),
            answers_rx,
            in_flight.clone(),
            self.wake.clone(),
        ));

        'outer: loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let busy = in_flight.lock().expect("not poisoned").clone();
            let store = self.store.clone();
            let due = store.blocking(move |s| s.outbox_due(now_ms(), 256, &busy)).await;
            let (due, next_wakeup) = match due {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "outbox read failed; retrying in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = self.shutdown.cancelled() => break,
                    }
                }
            };
            let mut sleep_for = next_wakeup
                .map(|t| Duration::from_millis((t - now_ms()).max(1) as u64))
                .unwrap_or(Duration::from_secs(3600));
            // Take as many due jobs as the rate limits and free permits allow right now, mark
            // them all `sending` in one durable transaction, then send them concurrently.
            // When the global limiter makes a job wait long, what was gathered goes first.
            let mut batch = Vec::new();
            let mut launched = false;
            for job in due {
                let permit = match permits.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) if !batch.is_empty() => break,
                    Err(_) => tokio::select! {
                        p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
                        _ = self.shutdown.cancelled() => break 'outer,
                    },
                };
                if let Err(not_until) = pair.check_key(&job.recipient) {
                    sleep_for = sleep_for.min(not_until.wait_time_from(clock.now()));
                    continue;
                }
                if let Err(not_until) = global.check() {
                    // A short wait (high max_per_second) keeps gathering; a long one launches
                    // what was gathered first, so sends are never bunched beyond a few ms.
                    if !batch.is_empty() && not_until.wait_time_from(clock.now()) > GATHER_WAIT {
                        launched |= self
                            .launch(std::mem::take(&mut batch), &in_flight, &tasks, &answers)
                            .await;
                    }
                    tokio::select! {
                        _ = global.until_ready() => {}
                        _ = self.shutdown.cancelled() => break 'outer,
                    }
                }
                batch.push((job, permit));
            }
            if !batch.is_empty() {
                launched |= self.launch(batch, &in_flight, &tasks, &answers).await;
            }
            if launched {
                // More may be due right away.
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep_for) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        tasks.close();
        tasks.wait().await;
        drop(answers);
        let _ = recorder.await;
        tracing::debug!("outbox worker stopped");
    }
}

impl OutboxWorker {
    /// Marks a batch of jobs `sending` in one durable transaction, then starts their sends.
    /// Returns whether any send started.
    async fn launch(
        &self,
        batch: Vec<(crate::store::outbox::OutboxJob, tokio::sync::OwnedSemaphorePermit)>,
        in_flight: &Arc<Mutex<HashSet<String>>>,
        tasks: &tokio_util::task::TaskTracker,
        answers: &tokio::sync::mpsc::UnboundedSender<Answer>,
    ) -> bool {
        let ids: Vec<u64> = batch.iter().map(|(j, _)| j.message_id).collect();
        tracing::trace!(sends = ids.len(), "marking sends");
        let bodies = match self.store.blocking(move |s| s.outbox_mark_sending_many(&ids)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot mark messages as sending; will retry");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = self.shutdown.cancelled() => {}
                }
                return false;
            }
        };
        let mut any = false;
        for ((job, permit), body) in batch.into_iter().zip(bodies) {
            let Some(body) = body else { continue };
            any = true;
            in_flight.lock().expect("not poisoned").insert(job.recipient.clone());
            let ctx = SendContext {
                client: self.client.clone(),
                settings: self.settings.clone(),
                answers: answers.clone(),
            };
            tasks.spawn(async move {
                ctx.send(job, body).await;
                drop(permit);
            });
        }
        any
    }
}

/// The answer to one send, waiting to be recorded.
struct Answer {
    recipient: String,
    result: SendResult,
}

/// Records send answers in group commits, then frees their recipients and wakes the worker.
async fn record_answers(
    store: Store,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Answer>,
    in_flight: Arc<Mutex<HashSet<String>>>,
    wake: Arc<Notify>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let (recipients, results): (Vec<String>, Vec<SendResult>) =
            batch.drain(..).map(|a| (a.recipient, a.result)).unzip();
        let ids: Vec<u64> = results.iter().map(SendResult::id).collect();
        let recorded = store
            .blocking(move |s| s.outbox_record_many(results, &crate::explain_error))
            .await;
        if let Err(e) = recorded {
            // The jobs stay `sending`: at the next start they are marked `unknown`, never resent blindly.
            tracing::error!(message_ids = ?ids, error = %e, "could not record the send outcomes");
        }
        {
            let mut busy = in_flight.lock().expect("not poisoned");
            for r in &recipients {
                busy.remove(r);
            }
        }
        wake.notify_one();
    }
}

struct SendContext {
    client: Arc<GraphClient>,
    settings: OutboxSettings,
    answers: tokio::sync::mpsc::UnboundedSender<Answer>,
}

impl SendContext {
    async fn send(self, job: crate::store::outbox::OutboxJob, body: Value) {
        let id = job.message_id;
        let attempt = job.attempts + 1;
        let started = std::time::Instant::now();
        let result = self.client.send(&body).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let result = match result {
            Ok(ok) => {
                tracing::info!(message_id = id, wamid = %ok.wamid, attempt, elapsed_ms, "sent");
                SendResult::Accepted {
                    id,
                    wamid: ok.wamid,
                    response: ok.response,
                }
            }
            Err(failure) => {
                let retry_at = now_ms() + backoff(self.settings.retry_base, attempt).as_millis() as i64;
                let horizon_end = job.queued_at_ms + self.settings.retry_horizon.as_millis() as i64;
                match failure.disposition {
                    Disposition::Retry if retry_at <= horizon_end => {
                        let reason = failure.to_string();
                        tracing::warn!(message_id = id, attempt, error = %reason, retry_in_ms = retry_at - now_ms(), "send failed; will retry");
                        SendResult::Retry {
                            id,
                            next_attempt_ms: retry_at,
                            error: reason,
                        }
                    }
                    disposition => {
                        let mut info = error_info(&failure);
                        if disposition == Disposition::Retry {
                            info.title = format!(
                                "gave up after {attempt} attempts over {}s: {}",
                                self.settings.retry_horizon.as_secs(),
                                info.title
                            );
                        }
                        tracing::warn!(message_id = id, attempt, code = info.code, error = %info.title, "send failed for good");
                        SendResult::Failed {
                            id,
                            error: info,
                            response: failure.response.clone(),
                        }
                    }
                }
            }
        };
        let _ = self.answers.send(Answer {
            recipient: job.recipient,
            result,
        });
    }
}

/// The operator-facing record of a failed send.
pub fn error_info(f: &SendFailure) -> ErrorInfo {
    match &f.error {
        Some(e) => ErrorInfo {
            code: e.code,
            title: e.message.clone(),
            details: e.details.clone(),
            explanation: explain(e.code).to_string(),
        },
        None => ErrorInfo {
            code: 0,
            title: f.transport.clone().unwrap_or_else(|| f.to_string()),
            details: f.http_status.map(|s| format!("HTTP {s}")),
            explanation: "walua could not get an answer from the Graph API (network error, timeout or server error). Check connectivity to graph.facebook.com; transient errors are retried until whatsapp.retry_horizon.".into(),
        },
    }
}

/// Exponential backoff with ±25 % jitter, capped at 10 minutes.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    use rand::Rng;
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(Duration::from_secs(600));
    capped.mul_f64(rand::rng().random_range(0.75..1.25))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let b = Duration::from_secs(2);
        for attempt in 1..6 {
            let d = backoff(b, attempt);
            let nominal = 2.0 * 2f64.powi(attempt as i32 - 1);
            assert!(
                d.as_secs_f64() >= nominal * 0.75 && d.as_secs_f64() <= nominal * 1.25,
                "{attempt}: {d:?}"
            );
        }
        assert!(backoff(b, 40) <= Duration::from_secs(750));
    }
}
