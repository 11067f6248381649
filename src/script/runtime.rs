//! The Lua worker pool and a run's globals (`env`, `message`, `contact`, `button_id`,
//! `logger`); the functions behind `env` and `logger` are in `api`.
//!
//! # Threads
//!
//! Lua never runs on the tokio runtime: a fixed pool of OS threads each owns one
//! [`Sandbox`] (one Lua state) and takes jobs from a channel. Async code hands a closure to
//! [`ScriptRuntime::exec`] and awaits its answer. Each thread compiles a script once per
//! version (hot reload bumps the version) and runs it with a fresh environment every time.
//!
//! # Effects are buffered
//!
//! What a run does — messages queued, `env.store` writes, scenario moves — is collected in
//! [`Effects`] and committed by the caller in ONE transaction together with the removal of the
//! dispatched message from the dispatch queue. A crash before that commit runs the scripts
//! again with nothing half-done; after it, nothing runs twice. A run that fails leaves no
//! effect at all. Later runs of the same batch see earlier runs' effects.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlua::{Function, Lua, LuaSerdeExt, MultiValue, Table, Value as LuaValue};
use serde_json::{Value, json};

use super::interrupt::{Interrupt, RunClock};
use super::registry::{ScenarioDef, ScriptFile, ScriptKind, ScriptMeta, SharedRegistry};
use super::sandbox::{Limits, RunError, Sandbox};
use crate::outbox::{Outbox, SendRequest};
use crate::store::outbox::NewOutbound;
use crate::store::{
    Conversation, MessageRecord, PendingDispatch, ScenarioState, ScriptCommit, ScriptOutcome, Store, now_ms,
};

/// The prefix of the button ids walua generates for scenario steps:
/// `wsc|<scenario>|<step>|<button>`.
pub const SCENARIO_BUTTON_PREFIX: &str = "wsc|";

/// What every worker needs.
pub struct RuntimeContext {
    /// The store (reads; writes go through [`ScriptCommit`]).
    pub store: Store,
    /// Validates and gives ids to the messages scripts queue.
    pub outbox: Outbox,
    /// The loaded scripts.
    pub registry: SharedRegistry,
    /// `[vars]`, given to scripts as `env.vars`.
    pub vars: Value,
    /// CPU and memory budgets of a run.
    pub limits: Limits,
    /// `scripts/lib`, the only place `require` reads.
    pub lib_dir: PathBuf,
    /// Uploads media given as bytes (`send_document(to, {bytes = …})`); `None` in dry run.
    pub graph: Option<Arc<crate::whatsapp::client::GraphClients>>,
    /// The store file, beside which dry-run uploads are kept.
    pub store_path: PathBuf,
    /// The tokio runtime, to wait for network calls from Lua threads.
    pub handle: Option<tokio::runtime::Handle>,
    /// The Odoo client, when `[odoo]` is configured.
    pub odoo: Option<Arc<crate::odoo::OdooClient>>,
    /// Times script runs (`walua_script_seconds`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What happens to a customer's message whose scripts met a transient failure.
    pub held: HeldPolicy,
    /// Whether button actions run while an agent holds the conversation
    /// (`[console] handover_buttons`).
    pub handover_buttons: crate::config::HandoverButtons,
}

/// What happens to a customer's message whose scripts failed on a transient error (Odoo
/// down): it stays queued, holding that contact's later messages only, and runs again with
/// backoff; after `fallback_after` the customer gets the fallback reply once; after
/// `retry_for` it is parked, replayable until `reply_expiry` after it arrived.
#[derive(Debug, Clone)]
pub struct HeldPolicy {
    /// When the fallback reply goes (`scripts.fallback_after`).
    pub fallback_after: Duration,
    /// Its text, unless `scripts/templates/fallback_reply.lua` shapes it.
    pub fallback_reply: String,
    /// When the message is parked (`scripts.retry_for`).
    pub retry_for: Duration,
    /// How long a parked message can be replayed (`scripts.reply_expiry`).
    pub reply_expiry: Duration,
}

impl Default for HeldPolicy {
    fn default() -> Self {
        HeldPolicy {
            fallback_after: Duration::from_secs(120),
            fallback_reply: crate::config::FALLBACK_REPLY.to_string(),
            retry_for: Duration::from_secs(3600),
            reply_expiry: Duration::from_secs(24 * 3600),
        }
    }
}

impl HeldPolicy {
    /// The policy `[scripts]` sets.
    pub fn from_config(c: &crate::config::ScriptsConfig) -> HeldPolicy {
        HeldPolicy {
            fallback_after: c.fallback_after,
            fallback_reply: c.fallback_reply.clone(),
            retry_for: c.retry_for,
            reply_expiry: c.reply_expiry,
        }
    }
}

/// The buffered effects of the runs of one batch.
#[derive(Debug, Default, Clone)]
pub struct Effects {
    /// Who is acting, recorded as the messages' origin (`script:buttons/validate_order`).
    pub origin: String,
    /// Messages queued.
    pub sends: Vec<NewOutbound>,
    /// `env.store` writes in order.
    pub kv: Vec<(String, Option<Value>)>,
    /// Scenario state per contact (`None`: ended).
    pub scenarios: HashMap<String, Option<ScenarioState>>,
    /// Poller / dispatcher state written with the effects (the fallback reply's mark).
    pub state: Vec<(String, Value)>,
    /// Failed runs written with the effects (a parked message).
    pub failed: Vec<(String, Option<crate::store::parked::FailedRun>)>,
    /// Conversations a script flagged as needing a human (`env.handover`), by key.
    pub help: Vec<(String, crate::store::HelpRequest)>,
    /// Notes for Odoo records' chatter (`env.odoo.log`).
    pub chatter: Vec<crate::store::chatter::ChatterNote>,
    /// Opt-outs set (`Some`) or cleared (`None`) by a customer's keyword, by contact.
    pub optouts: Vec<(String, Option<crate::optout::OptOut>)>,
}

impl Effects {
    /// Appends another batch's effects (the dispatcher commits several together). Every
    /// field is named, so that a new kind of effect cannot be forgotten here.
    pub fn absorb(&mut self, other: Effects) {
        let Effects {
            origin: _,
            sends,
            kv,
            scenarios,
            state,
            failed,
            help,
            chatter,
            optouts,
        } = other;
        self.sends.extend(sends);
        self.kv.extend(kv);
        self.scenarios.extend(scenarios);
        self.state.extend(state);
        self.failed.extend(failed);
        self.help.extend(help);
        self.chatter.extend(chatter);
        self.optouts.extend(optouts);
    }

    /// Turns the effects into a commit, with the dispatch outcomes.
    pub fn into_commit(self, outcomes: Vec<(u64, ScriptOutcome)>) -> ScriptCommit {
        ScriptCommit {
            sends: self.sends,
            kv: self.kv,
            scenarios: self.scenarios.into_iter().collect(),
            outcomes,
            state: self.state,
            failed: self.failed,
            help: self.help,
            chatter: self.chatter,
            optouts: self.optouts,
        }
    }
}

/// A job for a Lua worker: what to run, and how to answer if the worker wedges on it.
struct Job {
    run: Box<dyn FnOnce(&mut LuaWorker) + Send>,
    abandon: Abandon,
}

/// Answers a job with an error instead of its result (the worker wedged).
type Abandon = Box<dyn FnOnce(RuntimeError) + Send>;

/// A worker and its thread (taken when the pool stops or the worker is abandoned).
type WorkerEntry = (Arc<WorkerSlot>, Option<std::thread::JoinHandle<()>>);

/// How long an abandoned (wedged) worker thread may go on before walua reports itself
/// unhealthy, so that systemd's watchdog restarts it: a thread cannot be killed.
pub const STUCK_THREAD_LIMIT: Duration = Duration::from_secs(30);

/// How long an extra worker (started while every worker waited in `env.*`) stays idle before
/// it stops.
const EXTRA_WORKER_IDLE: Duration = Duration::from_secs(30);

/// What the pool knows of one worker thread.
pub(crate) struct WorkerSlot {
    /// The thread's name, for logs and `/healthz`.
    name: String,
    /// The run clock of the worker's Lua state.
    clock: Arc<RunClock>,
    /// How to answer the job the worker is running, taken by whoever answers first: the
    /// worker when it finishes, or the wedge handler.
    current: Mutex<Option<Abandon>>,
    /// The inbound message the worker is running scripts for (0: none), to quarantine it.
    pub(crate) message: AtomicU64,
    /// When the worker was declared wedged and abandoned.
    abandoned_at: Mutex<Option<Instant>>,
    /// The thread has ended.
    exited: AtomicBool,
}

/// The pool of Lua threads.
///
/// Each worker owns one Lua state. A worker whose run does not end when interrupted (see
/// [`super::interrupt`]) is *wedged*: its job is answered with [`RuntimeError::Wedged`] (the
/// dispatcher quarantines the message), a new worker takes its place at once, and the old
/// thread is left to end by itself; if it has not after [`STUCK_THREAD_LIMIT`], `/healthz`
/// fails and the systemd watchdog is no longer fed, so that systemd restarts walua.
///
/// When every worker is busy and at least one of them waits inside `env.*` (Odoo, an
/// upload), the pool starts an extra worker for the queued job, up to `4 × workers`; extra
/// workers stop after [`EXTRA_WORKER_IDLE`] without work. So a contact whose run waits on a
/// slow Odoo never holds the others' messages.
pub struct ScriptRuntime {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    jobs: flume::Sender<Task>,
    rx: flume::Receiver<Task>,
    /// Taken by [`ScriptRuntime::stop`], so that the store it holds is released even while
    /// other handles on the pool remain.
    ctx: Mutex<Option<Arc<RuntimeContext>>>,
    /// Every worker started, with its thread (abandoned ones included until they end).
    workers: Mutex<Vec<WorkerEntry>>,
    /// Most workers at once (base and extra, abandoned ones not counted).
    max: usize,
    /// Workers running a job right now.
    busy: AtomicUsize,
    /// Workers alive and not abandoned.
    live: AtomicUsize,
    serial: AtomicUsize,
    stopping: AtomicBool,
}

/// Errors of the runtime itself (not of scripts).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A Lua state could not be created.
    #[error("cannot create a Lua state: {0}")]
    Lua(String),
    /// The pool is stopped.
    #[error("the Lua worker pool is stopped")]
    Stopped,
    /// The worker did not stop when its run was interrupted; it was replaced.
    #[error("quarantined: the run did not stop {after_ms} ms after its {why} and its Lua worker was replaced")]
    Wedged {
        /// The inbound message being dispatched, if the job was a dispatch.
        message: Option<u64>,
        /// What the run exceeded.
        why: &'static str,
        /// How long the run had been going.
        after_ms: u64,
    },
}

impl ScriptRuntime {
    /// Starts `threads` workers.
    pub fn start(threads: usize, ctx: Arc<RuntimeContext>) -> Result<ScriptRuntime, RuntimeError> {
        let (jobs, rx) = flume::unbounded::<Task>();
        let base = threads.max(1);
        let inner = Arc::new(PoolInner {
            jobs,
            rx,
            ctx: Mutex::new(Some(ctx)),
            workers: Mutex::new(Vec::new()),
            max: base * 4,
            busy: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            serial: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        for _ in 0..base {
            PoolInner::spawn_worker(&inner, false)?;
        }
        Ok(ScriptRuntime { inner })
    }

    /// Runs `f` on a Lua worker and returns its result.
    pub async fn exec<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LuaWorker) -> R + Send + 'static,
    ) -> Result<R, RuntimeError> {
        self.submit(f)?.await.map_err(|_| RuntimeError::Stopped)?
    }

    /// Runs `f` on a Lua worker from a blocking context.
    pub fn exec_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LuaWorker) -> R + Send + 'static,
    ) -> Result<R, RuntimeError> {
        self.submit(f)?.blocking_recv().map_err(|_| RuntimeError::Stopped)?
    }

    /// Queues `f` for a worker; its result (or why there is none) arrives on the returned
    /// channel.
    fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LuaWorker) -> R + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<R, RuntimeError>>, RuntimeError> {
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(RuntimeError::Stopped);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let answer = tx.clone();
        let job = Job {
            run: Box::new(move |w| {
                let r = f(w);
                if let Some(tx) = answer.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = tx.send(Ok(r));
                }
            }),
            abandon: Box::new(move |e| {
                if let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = tx.send(Err(e));
                }
            }),
        };
        self.inner
            .jobs
            .send(Task::Run(job))
            .map_err(|_| RuntimeError::Stopped)?;
        self.inner.grow_if_all_wait();
        Ok(rx)
    }

    /// Abandoned worker threads still running, with how long ago they were abandoned.
    pub fn stuck_workers(&self) -> Vec<(String, Duration)> {
        let workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        workers
            .iter()
            .filter(|(slot, _)| !slot.exited.load(Ordering::SeqCst))
            .filter_map(|(slot, _)| {
                let at = (*slot.abandoned_at.lock().unwrap_or_else(|p| p.into_inner()))?;
                Some((slot.name.clone(), at.elapsed()))
            })
            .collect()
    }

    /// Workers alive and not abandoned (base and extra).
    pub fn live_workers(&self) -> usize {
        self.inner.live.load(Ordering::SeqCst)
    }

    /// Stops the workers once the queued jobs are done. Abandoned threads are not waited for.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.ctx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let handles: Vec<_> = {
            let mut workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
            workers
                .iter_mut()
                .filter(|(slot, _)| slot.abandoned_at.lock().unwrap_or_else(|p| p.into_inner()).is_none())
                .filter_map(|(_, h)| h.take())
                .collect()
        };
        // Queued after every job: each worker finishes the queue, then takes one and ends.
        for _ in 0..handles.len() {
            let _ = self.inner.jobs.send(Task::Quit);
        }
        for h in handles {
            let _ = h.join();
        }
    }
}

/// What a worker takes from the queue.
enum Task {
    Run(Job),
    /// Sent by [`ScriptRuntime::stop`], one per worker.
    Quit,
}

impl PoolInner {
    /// Starts one worker thread (an extra one stops after [`EXTRA_WORKER_IDLE`] idle).
    fn spawn_worker(inner: &Arc<PoolInner>, extra: bool) -> Result<(), RuntimeError> {
        let n = inner.serial.fetch_add(1, Ordering::SeqCst);
        let name = format!("walua-lua-{n}");
        let ctx = inner
            .ctx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(RuntimeError::Stopped)?;
        let mut worker = LuaWorker::new(ctx)?;
        let slot = Arc::new(WorkerSlot {
            name: name.clone(),
            clock: worker.sandbox.clock().clone(),
            current: Mutex::new(None),
            message: AtomicU64::new(0),
            abandoned_at: Mutex::new(None),
            exited: AtomicBool::new(false),
        });
        worker.slot = Some(slot.clone());
        let weak = Arc::downgrade(inner);
        let wedged_slot = Arc::downgrade(&slot);
        slot.clock.set_wedge_handler(Arc::new(move |why, took| {
            if let (Some(pool), Some(slot)) = (weak.upgrade(), wedged_slot.upgrade()) {
                PoolInner::abandon(&pool, &slot, why, took);
            }
        }));
        let waiting_pool = Arc::downgrade(inner);
        slot.clock.set_wait_handler(Arc::new(move || {
            if let Some(p) = waiting_pool.upgrade() {
                p.grow_if_all_wait();
            }
        }));
        let rx = inner.rx.clone();
        let pool = Arc::downgrade(inner);
        let thread_slot = slot.clone();
        inner.live.fetch_add(1, Ordering::SeqCst);
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let slot = thread_slot;
                loop {
                    let task = if extra {
                        match rx.recv_timeout(EXTRA_WORKER_IDLE) {
                            Ok(t) => t,
                            Err(flume::RecvTimeoutError::Timeout) => break,
                            Err(flume::RecvTimeoutError::Disconnected) => break,
                        }
                    } else {
                        match rx.recv() {
                            Ok(t) => t,
                            Err(_) => break,
                        }
                    };
                    let Task::Run(job) = task else { break };
                    let busy = pool.upgrade();
                    if let Some(p) = &busy {
                        p.busy.fetch_add(1, Ordering::SeqCst);
                    }
                    *slot.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(job.abandon);
                    (job.run)(&mut worker);
                    // The wedge handler takes the answer (and this worker's place) first if
                    // it declared the run wedged.
                    let ours = slot.current.lock().unwrap_or_else(|p| p.into_inner()).take().is_some();
                    slot.message.store(0, Ordering::SeqCst);
                    if ours && let Some(p) = &busy {
                        p.busy.fetch_sub(1, Ordering::SeqCst);
                    }
                    if !ours {
                        // Declared wedged while it ran: a replacement took over.
                        tracing::warn!(worker = %slot.name, "an abandoned Lua worker came back and ends");
                        break;
                    }
                }
                if slot.abandoned_at.lock().unwrap_or_else(|p| p.into_inner()).is_none()
                    && let Some(p) = pool.upgrade()
                {
                    p.live.fetch_sub(1, Ordering::SeqCst);
                }
                slot.exited.store(true, Ordering::SeqCst);
            })
            .map_err(|e| RuntimeError::Lua(e.to_string()))?;
        let mut workers = inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        workers.retain(|(s, h)| !(s.exited.load(Ordering::SeqCst) && h.is_none()));
        workers.push((slot, Some(handle)));
        Ok(())
    }

    /// The wedge handler of a worker (on the timekeeper thread): answers its job, replaces it.
    fn abandon(pool: &Arc<PoolInner>, slot: &Arc<WorkerSlot>, why: Interrupt, took: Duration) {
        let Some(answer) = slot.current.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        *slot.abandoned_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        pool.live.fetch_sub(1, Ordering::SeqCst);
        pool.busy.fetch_sub(1, Ordering::SeqCst);
        let message = match slot.message.load(Ordering::SeqCst) {
            0 => None,
            id => Some(id),
        };
        let why = match why {
            Interrupt::Cpu => "CPU budget",
            Interrupt::WallClock => "wall-clock cap (scripts.run_timeout)",
        };
        tracing::error!(worker = %slot.name, message_id = ?message, why, took_ms = took.as_millis() as u64,
            "a Lua worker did not stop when its run was interrupted; it is replaced and the message quarantined");
        answer(RuntimeError::Wedged {
            message,
            why,
            after_ms: took.as_millis() as u64,
        });
        if !pool.stopping.load(Ordering::SeqCst)
            && let Err(e) = PoolInner::spawn_worker(pool, false)
        {
            tracing::error!(error = %e, "cannot start a Lua worker to replace a wedged one");
        }
    }

    /// Starts an extra worker when a job is queued, every worker is busy, and one of them
    /// waits in `env.*`. Called when a job is queued and when a run starts waiting.
    fn grow_if_all_wait(self: &Arc<Self>) {
        let live = self.live.load(Ordering::SeqCst);
        if self.stopping.load(Ordering::SeqCst)
            || self.rx.is_empty()
            || live >= self.max
            || self.busy.load(Ordering::SeqCst) < live
        {
            return;
        }
        let waiting = {
            let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            workers.iter().any(|(slot, _)| {
                !slot.exited.load(Ordering::SeqCst)
                    && slot.abandoned_at.lock().unwrap_or_else(|p| p.into_inner()).is_none()
                    && slot.clock.is_waiting()
            })
        };
        if waiting {
            tracing::debug!(
                live,
                "every Lua worker is busy and one waits in env.*: starting an extra worker"
            );
            if let Err(e) = PoolInner::spawn_worker(self, true) {
                tracing::warn!(error = %e, "cannot start an extra Lua worker");
            }
        }
    }
}

/// State shared by a worker and the Rust functions it exposes to Lua.
pub(super) struct Shared {
    /// The daemon's store, outbox, registry and clients.
    pub(super) ctx: Arc<RuntimeContext>,
    /// What the runs of the current batch did, committed by the caller.
    pub(super) effects: Mutex<Effects>,
    /// Compiled chunks by file, with the registry version they were compiled at.
    pub(super) compiled: Mutex<HashMap<PathBuf, (u64, Function)>>,
    /// Builds a fresh sandboxed globals table (for templates rendered by `env.notify`).
    pub(super) make_env: Function,
    /// The running script's name, for `logger` lines.
    pub(super) label: Mutex<String>,
    /// While an inbound message is dispatched: the business number it came to, which replies
    /// to its sender without `from` go out from (see [`default_from`]).
    pub(super) reply_from: Mutex<Option<ReplyFrom>>,
    /// The first transient failure (Odoo unreachable, a media upload answered 5xx…) an API
    /// call met during the current run: a run that then fails is worth trying again later.
    pub(super) transient: Mutex<Option<String>>,
    /// While an inbound message is dispatched: its contact's conversation key, which
    /// `env.handover` flags. `None` in hook and cron runs, which have no contact.
    pub(super) run_contact: Mutex<Option<String>>,
}

/// Why a hook or cron run failed, and whether trying again later may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFailure {
    /// The error, with the script's `file:line` when known.
    pub message: String,
    /// An API call met a transient failure during the run (Odoo unreachable or timing out,
    /// Graph 5xx or 429, an upload that failed): the run is retried. Otherwise the failure
    /// is definite (a Lua error, an Odoo `UserError`, a refused template): never retried.
    pub transient: bool,
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One Lua thread's state.
pub struct LuaWorker {
    sandbox: Sandbox,
    shared: Arc<Shared>,
    api: Table,
    /// Builds a run's `env` and `logger` from `api` and `vars` (see [`ENV_BUILDER`]).
    env_builder: Function,
    /// Builds a run's globals for an inbound message in one call (see [`ENV_BUILDER`]):
    /// each field set from Rust is a protected call into Lua, which cost more than the script.
    run_builder: Function,
    /// Builds a run's `message` from positional values (see [`ENV_BUILDER`]).
    message_builder: Function,
    /// Builds a run's `contact` from positional values (see [`ENV_BUILDER`]).
    contact_builder: Function,
    /// `[vars]` converted to Lua once; each run gets a read-only view of a deep copy.
    vars: Table,
    /// The real `string.find`, for button patterns.
    find: Function,
    /// What the pool knows of this worker (absent outside a pool).
    slot: Option<Arc<WorkerSlot>>,
}

/// The Lua side of a run's globals, compiled once per worker. Building tables inside the VM
/// costs a fraction of setting them field by field from Rust. It returns:
/// - `api_tables(api, vars)`: a run's `env` (each API table seen through an empty per-run
///   table that reads through to it, so a run that overwrites `env.whatsapp.send_text`
///   affects no other run), a read-only deep copy of `vars`, and the logger seen the same way.
///   The read-through tables share one metatable per API table.
/// - `message(lazy_raw, id, db_id, from, type, timestamp, text, part, f1, f2, f3, f4, location,
///   context, phone_number_id)`: the `message` table; `part` names the sub-table (`button`, `list`, `media`)
///   whose fields are `f1`…`f4`; `raw` is built on first read (or `pairs`) by `lazy_raw`.
/// - `contact(id, known, wa_id, user_id, name, username, message_count, last_inbound_at,
///   window_open)`: the `contact` table.
/// - `run(make_globals, api, vars, message, contact, button_id)`: the run's globals.
const ENV_BUILDER: &str = r#"
local G = ...
local next, type, setmetatable, error, sub = G.next, G.type, G.setmetatable, G.error, G.string.sub
local function deep(t)
  local c = {}
  for k, v in next, t do
    if type(v) == "table" then c[k] = deep(v) else c[k] = v end
  end
  return c
end
local function refuse() error("env.vars is read-only", 2) end
local function read_only(inner)
  return setmetatable({}, {
    __index = inner,
    __newindex = refuse,
    __pairs = function(t) return function(_, k) return next(inner, k) end, t, nil end,
    __len = function() return #inner end,
    __metatable = false,
  })
end
local overlays = {}
local function overlay(inner)
  local mt = overlays[inner]
  if mt == nil then
    -- pairs() iterates through a closure: handing out `inner` would let a run change it.
    mt = { __index = inner, __pairs = function(t) return function(_, k) return next(inner, k) end, t, nil end,
           __metatable = false }
    overlays[inner] = mt
  end
  return setmetatable({}, mt)
end
local function api_tables(api, vars)
  local env = {}
  for k, v in next, api do
    if type(k) ~= "string" or sub(k, 1, 2) ~= "__" then
      if type(v) == "table" then env[k] = overlay(v) else env[k] = v end
    end
  end
  env.vars = read_only(deep(vars))
  return env, overlay(api.__logger)
end
local parts = {
  button = function(a, b) return { id = a, title = b } end,
  list = function(a, b, c) return { id = a, title = b, description = c } end,
  media = function(a, b, c, d) return { id = a, mime_type = b, caption = c, filename = d } end,
}
local function pairs_with_raw(t)
  local _ = t.raw
  return next, t, nil
end
local function message(lazy_raw, id, db_id, from, kind, timestamp, text, part, f1, f2, f3, f4, location, context,
                       phone_number_id)
  local m = { id = id, db_id = db_id, from = from, type = kind, timestamp = timestamp, text = text,
              location = location, context = context, phone_number_id = phone_number_id }
  if part then m[part] = parts[part](f1, f2, f3, f4) end
  return setmetatable(m, { __index = lazy_raw, __pairs = pairs_with_raw })
end
local function contact(id, known, wa_id, user_id, name, username, message_count, last_inbound_at, window_open,
                       partner_id, partner_name, opted_out)
  if not known then return { id = id, window_open = window_open, opted_out = opted_out } end
  return { id = id, wa_id = wa_id, user_id = user_id, name = name, username = username,
           conversation = { message_count = message_count, last_inbound_at = last_inbound_at },
           window_open = window_open, partner_id = partner_id, partner_name = partner_name,
           opted_out = opted_out }
end
local function run(make_globals, api, vars, message, contact, button_id)
  local g = make_globals()
  g.env, g.logger = api_tables(api, vars)
  g.message, g.contact, g.button_id = message, contact, button_id
  return g
end
return api_tables, run, message, contact
"#;

pub(super) fn lua_err(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(e.to_string())
}

impl LuaWorker {
    fn new(ctx: Arc<RuntimeContext>) -> Result<LuaWorker, RuntimeError> {
        let sandbox = Sandbox::new(ctx.limits, ctx.lib_dir.clone()).map_err(|e| RuntimeError::Lua(e.to_string()))?;
        let shared = Arc::new(Shared {
            ctx,
            effects: Mutex::default(),
            compiled: Mutex::default(),
            make_env: sandbox.env_factory(),
            label: Mutex::default(),
            reply_from: Mutex::default(),
            transient: Mutex::default(),
            run_contact: Mutex::default(),
        });
        let api = super::api::build_api(sandbox.lua(), &shared).map_err(|e| RuntimeError::Lua(e.to_string()))?;
        let lua = sandbox.lua();
        type Builders = (Function, Function, Function, Function);
        let prepare = || -> mlua::Result<(Builders, Table, Function)> {
            // The real globals are emptied by the sandbox: take the library from a fresh env.
            let g = sandbox.fresh_env()?;
            let builders: Builders = lua.load(ENV_BUILDER).set_name("=walua:env").call(&g)?;
            let vars = match lua.to_value(&shared.ctx.vars)? {
                LuaValue::Table(t) => t,
                _ => lua.create_table()?,
            };
            let find = g.get::<Table>("string")?.get::<Function>("find")?;
            let raw_odoo: Table = api.get("odoo")?;
            let odoo: Table = lua.load(super::api::ODOO_WRAP).set_name("=walua:odoo").call((
                raw_odoo,
                g.get::<Function>("error")?,
                g.get::<Function>("setmetatable")?,
                g.get::<Function>("pairs")?,
            ))?;
            api.set("odoo", odoo)?;
            Ok((builders, vars, find))
        };
        let ((env_builder, run_builder, message_builder, contact_builder), vars, find) =
            prepare().map_err(|e| RuntimeError::Lua(e.to_string()))?;
        Ok(LuaWorker {
            sandbox,
            shared,
            api,
            env_builder,
            run_builder,
            message_builder,
            contact_builder,
            vars,
            find,
            slot: None,
        })
    }

    /// A run's `env` table and `logger` table (see [`ENV_BUILDER`]).
    fn api_tables(&self) -> mlua::Result<(Table, Table)> {
        self.env_builder.call((&self.api, &self.vars))
    }

    /// Starts scenario `name` for `to` outside any run (`POST /api/scenarios/{name}/start`,
    /// `walua scenario start`, the Odoo module's "send test scenario"): its first step is
    /// queued and the contact's state set; returns the effects to commit.
    pub fn start_scenario_for(&mut self, name: &str, to: &str, vars: Value, origin: &str) -> Result<Effects, String> {
        self.take_effects();
        self.shared.effects.lock().expect("not poisoned").origin = origin.to_string();
        let key = contact_key(&self.shared, to);
        match start_scenario(&self.shared, &key, to, name, vars) {
            Ok(()) => Ok(self.take_effects()),
            Err(e) => {
                self.take_effects();
                Err(e)
            }
        }
    }

    /// Takes the effects buffered so far (and starts a new buffer).
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut *self.shared.effects.lock().expect("not poisoned"))
    }

    /// Runs the scripts for a batch of stored inbound messages; returns the buffered effects
    /// and each message's outcome, for the caller to commit.
    pub fn dispatch_batch(&mut self, ids: &[u64]) -> (Effects, Vec<(u64, ScriptOutcome)>) {
        let records = match self.shared.ctx.store.messages_for_dispatch(ids) {
            Ok(r) => r
                .into_iter()
                .map(|(id, r)| (id, r.map_err(|e| e.to_string())))
                .collect(),
            Err(e) => ids.iter().map(|&id| (id, Err(e.to_string()))).collect(),
        };
        self.dispatch_records(records)
    }

    /// [`LuaWorker::dispatch_batch`] for messages already read from the store.
    pub fn dispatch_records(
        &mut self,
        records: Vec<(u64, Result<Option<PendingDispatch>, String>)>,
    ) -> (Effects, Vec<(u64, ScriptOutcome)>) {
        self.take_effects();
        let mut outcomes = Vec::with_capacity(records.len());
        for (id, record) in records {
            let failed = |error: String| ScriptOutcome {
                error: Some(error),
                at_ms: now_ms(),
                ..Default::default()
            };
            if let Some(slot) = &self.slot {
                slot.message.store(id, Ordering::SeqCst);
            }
            let outcome = match record {
                Ok(Some(p)) => self.dispatch(p.message, p.conversation.as_ref()),
                Ok(None) => failed("message not found".into()),
                Err(e) => failed(format!("store: {e}")),
            };
            let held = outcome.transient;
            outcomes.push((id, outcome));
            if held {
                // The contact's later messages wait for this one (DESIGN.md, "One contact,
                // one order"): they stay queued.
                break;
            }
        }
        (self.take_effects(), outcomes)
    }

    /// Runs the scripts for one inbound message: the contact's active scenario step first,
    /// then the first button action whose pattern matches, then `on_message.lua`. A failing
    /// run leaves no effect; its error (file:line) is the outcome's error.
    pub fn dispatch(&mut self, record: MessageRecord, conv: Option<&Conversation>) -> ScriptOutcome {
        // Shared with the run's `message.raw`, which is converted only if a script reads it.
        let record = Arc::new(record);
        // What to roll back to if the run fails: sends and writes are only appended, so their
        // lengths suffice; the scenario map is small (one entry per contact of the batch).
        let (sends_before, kv_before, help_before, chatter_before, scenarios_before, origin_before) = {
            let e = self.shared.effects.lock().expect("not poisoned");
            (
                e.sends.len(),
                e.kv.len(),
                e.help.len(),
                e.chatter.len(),
                e.scenarios.clone(),
                e.origin.clone(),
            )
        };
        *self.shared.run_contact.lock().expect("not poisoned") = Some(record.contact.clone());
        let mut scripts = Vec::new();
        let started = std::time::Instant::now();
        *self.shared.reply_from.lock().expect("not poisoned") =
            record.phone_number_id.clone().map(|number| ReplyFrom {
                addresses: [record.from.as_deref(), Some(record.contact.as_str())]
                    .into_iter()
                    .flatten()
                    .map(crate::store::normalize_contact)
                    .collect(),
                number,
            });
        self.take_transient();
        let result = self.route(&record, conv, &mut scripts);
        let transient = self.take_transient();
        if !scripts.is_empty() {
            self.shared.ctx.metrics.script_time(started.elapsed());
        }
        let mut outcome = ScriptOutcome {
            scripts,
            at_ms: now_ms(),
            ..Default::default()
        };
        match result {
            Ok(()) => {
                let mut effects = self.shared.effects.lock().expect("not poisoned");
                outcome.sent = effects.sends[sends_before..].iter().map(|s| s.id).collect();
                for _ in help_before..effects.help.len() {
                    self.shared.ctx.metrics.handover_request();
                }
                // A message held earlier (a retry runs at least a second after it arrived)
                // leaves the failed runs; a fresh one cannot be there, and is not looked up.
                if now_ms() - record.stored_at_ms > 900 {
                    let id = format!("message:{}", record.id);
                    if self.shared.ctx.store.failed_run(&id).ok().flatten().is_some() {
                        effects.failed.push((id, None));
                    }
                }
            }
            Err(e) => {
                {
                    let mut effects = self.shared.effects.lock().expect("not poisoned");
                    effects.sends.truncate(sends_before);
                    effects.kv.truncate(kv_before);
                    effects.help.truncate(help_before);
                    effects.chatter.truncate(chatter_before);
                    effects.scenarios = scenarios_before;
                    effects.origin = origin_before;
                }
                match transient {
                    Some(_) => self.held(&record, &mut outcome, e),
                    None => {
                        tracing::warn!(message_id = record.id, scripts = ?outcome.scripts, error = %e, "script failed; its effects are dropped (a definite error: not retried)");
                        outcome.error = Some(e);
                    }
                }
            }
        }
        *self.shared.reply_from.lock().expect("not poisoned") = None;
        *self.shared.run_contact.lock().expect("not poisoned") = None;
        outcome
    }

    /// A message whose scripts failed on a transient error: held for a retry (the outcome is
    /// marked `transient`, and the fallback reply goes once it waited `fallback_after`), or
    /// parked once it waited `retry_for`.
    fn held(&mut self, record: &MessageRecord, outcome: &mut ScriptOutcome, error: String) {
        let policy = self.shared.ctx.held.clone();
        let now = now_ms();
        let waited = Duration::from_millis((now - record.stored_at_ms).max(0) as u64);
        outcome.error = Some(error.clone());
        // The message's failed-run entry: visible while it waits (`walua parked list --all`,
        // `walua_failed_runs{state="retrying"}`), parked once it waited `retry_for`.
        let id = format!("message:{}", record.id);
        let mut entry = self.shared.ctx.store.failed_run(&id).ok().flatten().unwrap_or_else(|| {
            let mut e = crate::store::parked::FailedRun::new(
                id.clone(),
                crate::store::parked::RunKind::Message,
                &record.contact,
                String::new(),
                true,
                record.stored_at_ms,
            );
            e.message_id = Some(record.id);
            e.expires_ms = Some(record.stored_at_ms + policy.reply_expiry.as_millis() as i64);
            e
        });
        entry.attempts += 1;
        entry.error = error.clone();
        entry.last_failed_ms = now;
        let parked = waited >= policy.retry_for;
        // While held, the dispatcher's own backoff decides when; this says roughly when.
        entry.next_attempt_ms = (!parked).then_some(now + 1000);
        self.shared
            .effects
            .lock()
            .expect("not poisoned")
            .failed
            .push((id.clone(), Some(entry)));
        if parked {
            tracing::error!(message_id = record.id, contact = %record.contact, waited = ?waited, error = %error,
                "message parked: its scripts kept failing on a transient error; the contact's next messages run now; replay with `walua parked replay {id}`");
            outcome.error = Some(format!(
                "parked after {} s of transient failures: {error}",
                waited.as_secs()
            ));
            return;
        }
        outcome.transient = true;
        tracing::warn!(message_id = record.id, contact = %record.contact, waited = ?waited, error = %error,
            "script failed on a transient error; the message is held and runs again (the contact's later messages wait)");
        if waited < policy.fallback_after {
            return;
        }
        let mark = format!("fallback:{}", record.id);
        if self.shared.ctx.store.state_get(&mark).ok().flatten().is_some() {
            return;
        }
        // `reply_from` is still set: the reply goes from the number the message came to.
        let to = record.from.clone().unwrap_or_else(|| record.contact.clone());
        let sent = self.fallback_reply(&to, record, &policy);
        match sent {
            Ok(id) => {
                tracing::info!(
                    message_id = record.id,
                    reply = id,
                    "fallback reply queued while the message is held"
                );
                let mut effects = self.shared.effects.lock().expect("not poisoned");
                effects.state.push((mark, json!({ "reply": id, "at_ms": now })));
            }
            Err(e) => tracing::warn!(message_id = record.id, error = %e, "the fallback reply could not be queued"),
        }
    }

    /// A customer's opt-out or opt-in keyword: the blocklist entry and the confirmation, in
    /// the run's commit. `templates/optout_confirmation.lua`, when loaded, shapes the
    /// confirmation (given `{ request = "stop"|"resume", scope, keyword, text }`).
    fn opt_out(
        &mut self,
        record: &MessageRecord,
        request: crate::optout::Request,
        scripts: &mut Vec<String>,
    ) -> Result<(), String> {
        use crate::optout::{OptOut, Request};
        let rules = self.shared.ctx.outbox.optout_rules();
        let (entry, kind, scope, keyword, text) = match &request {
            Request::Stop(scope, k) => (
                Some(OptOut {
                    scope: *scope,
                    since_ms: now_ms(),
                    source: format!("keyword:{k}"),
                }),
                "stop",
                Some(scope.as_str()),
                k.clone(),
                match scope {
                    crate::optout::Scope::Marketing => rules.confirm_marketing.clone(),
                    crate::optout::Scope::All => rules.confirm_all.clone(),
                },
            ),
            Request::Resume(k) => (None, "resume", None, k.clone(), rules.confirm_resume.clone()),
        };
        scripts.push(format!("optout: {kind} ({keyword})"));
        tracing::info!(contact = %record.contact, request = kind, scope = ?scope, keyword = %keyword, "opt-out keyword");
        {
            let mut effects = self.shared.effects.lock().expect("not poisoned");
            effects.optouts.push((record.contact.clone(), entry));
            effects.origin = "walua:optout".into();
        }
        let to = record.from.clone().unwrap_or_else(|| record.contact.clone());
        let has_template = {
            let reg = self.shared.ctx.registry.read().expect("not poisoned");
            reg.get(ScriptKind::Template, "optout_confirmation").is_some()
        };
        if has_template {
            scripts.push("templates/optout_confirmation".into());
            let notify: Function = self.api.get("notify").map_err(|e| e.to_string())?;
            let data = self
                .sandbox
                .lua()
                .to_value(&json!({ "request": kind, "scope": scope, "keyword": keyword, "text": text }))
                .map_err(|e| e.to_string())?;
            self.sandbox
                .call::<u64>(&notify, (to.as_str(), "optout_confirmation", data))
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        queue(&self.shared, json!({ "to": to, "type": "text", "text": text })).map(drop)
    }

    /// Queues the fallback reply: `templates/fallback_reply.lua` when loaded (given
    /// `{ message = summary, kind, contact }`), else `scripts.fallback_reply`.
    fn fallback_reply(&mut self, to: &str, record: &MessageRecord, policy: &HeldPolicy) -> Result<u64, String> {
        let has_template = {
            let reg = self.shared.ctx.registry.read().expect("not poisoned");
            reg.get(ScriptKind::Template, "fallback_reply").is_some()
        };
        self.shared.effects.lock().expect("not poisoned").origin = "walua:fallback_reply".into();
        if has_template {
            let notify: Function = self.api.get("notify").map_err(|e| e.to_string())?;
            let data = self
                .sandbox
                .lua()
                .to_value(&json!({ "message": record.summary, "kind": record.kind, "contact": record.contact }))
                .map_err(|e| e.to_string())?;
            return self
                .sandbox
                .call::<u64>(&notify, (to, "fallback_reply", data))
                .map_err(|e| e.to_string());
        }
        queue(
            &self.shared,
            json!({ "to": to, "type": "text", "text": policy.fallback_reply }),
        )
    }

    /// Whether the contact who clicked `button_id` is one walua sent that button to (the
    /// index follows merges of the contact's conversations), or the click is on a message
    /// sent before the index existed (an upgrade).
    fn button_allowed(&self, record: &MessageRecord, button_id: &str) -> Result<bool, String> {
        let store = &self.shared.ctx.store;
        if store
            .button_sent_to(&record.contact, button_id)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(true);
        }
        let Some(wamid) = record
            .context
            .as_ref()
            .and_then(|c| c.get("id"))
            .and_then(Value::as_str)
        else {
            return Ok(false);
        };
        let since = store.buttons_indexed_since().map_err(|e| e.to_string())?;
        let before = store
            .message_by_wamid(wamid)
            .map_err(|e| e.to_string())?
            .is_some_and(|m| m.direction == crate::store::Direction::Outbound && m.stored_at_ms < since);
        Ok(before)
    }

    /// A click on a button walua never sent this contact (someone else's order id, a crafted
    /// payload): logged, no script runs, and the customer gets a polite answer.
    fn refuse_button(
        &mut self,
        record: &MessageRecord,
        button_id: &str,
        scripts: &mut Vec<String>,
    ) -> Result<(), String> {
        tracing::warn!(message_id = record.id, contact = %record.contact, button = button_id,
            "button refused: walua never sent it to this contact (a script may allow it with `anyone = true`)");
        scripts.push("refused: button not sent to this contact".into());
        queue(
            &self.shared,
            json!({ "to": reply_address(record), "type": "text", "text": FOREIGN_BUTTON_REPLY }),
        )
        .map(|_| ())
    }

    fn route(
        &mut self,
        record: &Arc<MessageRecord>,
        conv: Option<&Conversation>,
        scripts: &mut Vec<String>,
    ) -> Result<(), String> {
        let button = button_of(record);
        let contact_key = record.contact.clone();

        // "STOP", "START"…: handled before anything else (DESIGN.md, "One contact, one order");
        // the message's scripts do not run.
        if let Some(request) = self.shared.ctx.outbox.optout_rules().classify(record) {
            return self.opt_out(record, request, scripts);
        }

        // An agent holds the conversation: the bot stays quiet (DESIGN.md, "One contact, one
        // order": the handover comes before the scenario step, the button action and
        // on_message). Only a tap on a button action may still run, per `handover_buttons`.
        if let Some(handover) = conv.and_then(|c| c.active_handover(now_ms())) {
            scripts.push(format!("handover: agent {}", handover.by));
            let buttons_run = self.shared.ctx.handover_buttons == crate::config::HandoverButtons::Run;
            return match &button {
                Some((id, _)) if buttons_run && parse_scenario_button(id).is_none() => {
                    self.button_action(record, conv, id, scripts).map(|_| ())
                }
                _ => {
                    tracing::info!(message_id = record.id, contact = %record.contact, agent = %handover.by,
                        "handed over to an agent: the scripts do not answer this message");
                    Ok(())
                }
            };
        }

        if let Some((scenario, step, button_id)) = button.as_ref().and_then(|(id, _)| parse_scenario_button(id)) {
            let id = &button.as_ref().expect("parsed from it").0;
            if !self.button_allowed(record, id)? {
                return self.refuse_button(record, id, scripts);
            }
            scripts.push(format!("scenarios/{scenario}:{step}"));
            return self.scenario_click(record, conv, &scenario, &step, &button_id);
        }
        if let Some(state) = self.active_scenario(&contact_key)?
            && let Some(file) = self.scenario_file(&state.scenario)
            && let ScriptMeta::Scenario(def) = &file.meta
            && def.steps.get(&state.step).is_some_and(|s| s.has_run)
        {
            scripts.push(format!("scenarios/{}:{}", state.scenario, state.step));
            return self.scenario_step_run(record, conv, &file, state);
        }
        if let Some((id, _)) = &button
            && self.button_action(record, conv, id, scripts)?
        {
            return Ok(());
        }
        let on_message = {
            let reg = self.shared.ctx.registry.read().expect("not poisoned");
            reg.all().find(|f| f.kind == ScriptKind::OnMessage).cloned()
        };
        if let Some(file) = on_message {
            scripts.push("on_message".into());
            let env = self.run_env(record, conv, &file)?;
            let table = self.load_table(&file, &env)?;
            let run: Function = table.get("run").map_err(|e| format!("{}: run: {e}", file.chunk_name))?;
            let message: LuaValue = env.get("message").map_err(|e| e.to_string())?;
            return self.sandbox.call::<()>(&run, message).map_err(|e| e.to_string());
        }
        Ok(())
    }

    /// Runs the first button action whose pattern matches `id` (or refuses a button walua
    /// never sent this contact); `false` when no button action matches.
    fn button_action(
        &mut self,
        record: &Arc<MessageRecord>,
        conv: Option<&Conversation>,
        id: &str,
        scripts: &mut Vec<String>,
    ) -> Result<bool, String> {
        let buttons: Vec<ScriptFile> = {
            let reg = self.shared.ctx.registry.read().expect("not poisoned");
            reg.buttons().cloned().collect()
        };
        for file in buttons {
            let ScriptMeta::Button { pattern, anyone } = &file.meta else {
                continue;
            };
            if let Some(captures) = self.pattern_match(id, pattern)? {
                if !anyone && !self.button_allowed(record, id)? {
                    return self.refuse_button(record, id, scripts).map(|()| true);
                }
                scripts.push(format!("buttons/{}", file.name));
                let env = self.run_env(record, conv, &file)?;
                let table = self.load_table(&file, &env)?;
                let run: Function = table.get("run").map_err(|e| format!("{}: run: {e}", file.chunk_name))?;
                return self
                    .sandbox
                    .call::<()>(&run, captures)
                    .map(|()| true)
                    .map_err(|e| e.to_string());
            }
        }
        Ok(false)
    }

    fn set_label(&self, label: String) {
        *self.shared.label.lock().expect("not poisoned") = label.clone();
        self.shared.effects.lock().expect("not poisoned").origin = format!("script:{label}");
    }

    /// A fresh environment for a run of `file` about `record`.
    fn run_env(
        &self,
        record: &Arc<MessageRecord>,
        conv: Option<&Conversation>,
        file: &ScriptFile,
    ) -> Result<Table, String> {
        self.set_label(format!("{}/{}", kind_dir(file.kind), file.name));
        let lua = self.sandbox.lua();
        let build = || -> mlua::Result<Table> {
            let message = self.message_table(lua, record)?;
            let contact = self.contact_table(&record.contact, conv)?;
            let button_id = button_of(record).map(|(id, _)| id);
            self.run_builder.call((
                &self.shared.make_env,
                &self.api,
                &self.vars,
                message,
                contact,
                button_id,
            ))
        };
        build().map_err(|e| e.to_string())
    }

    /// The `message` table of a run. `message.raw` (Meta's whole message object) is converted
    /// on first read (or `pairs`): few scripts look at it, and converting it for every run cost
    /// more than the rest of the table.
    fn message_table(&self, lua: &Lua, record: &Arc<MessageRecord>) -> mlua::Result<Table> {
        let c = &record.content;
        let s = |k: &str| c.get(k).and_then(Value::as_str);
        let kind = s("kind").unwrap_or("");
        let text = match kind {
            "text" => s("body"),
            "media" => s("caption"),
            "button_reply" | "list_reply" => s("title"),
            "button" => s("text"),
            _ => None,
        };
        let (part, f) = match kind {
            "button_reply" => (Some("button"), [s("id"), s("title"), None, None]),
            "button" => (Some("button"), [s("payload"), s("text"), None, None]),
            "list_reply" => (Some("list"), [s("id"), s("title"), s("description"), None]),
            "media" => (Some("media"), [s("id"), s("mime_type"), s("caption"), s("filename")]),
            _ => (None, [None; 4]),
        };
        let location = match kind {
            "location" => Some(lua.to_value(c)?),
            _ => None,
        };
        let context = record.context.as_ref().map(|ctx| lua.to_value(ctx)).transpose()?;
        let shared = record.clone();
        let lazy_raw = lua.create_function(move |lua, (t, key): (Table, LuaValue)| {
            if key.as_string().is_some_and(|k| *k == "raw") {
                let raw = lua.to_value(&shared.raw)?;
                t.raw_set("raw", &raw)?;
                Ok(raw)
            } else {
                Ok(LuaValue::Nil)
            }
        })?;
        self.message_builder.call((
            lazy_raw,
            record.wamid.as_deref(),
            record.id,
            record.from.as_deref(),
            record.kind.as_str(),
            record.timestamp,
            text,
            part,
            f[0],
            f[1],
            f[2],
            f[3],
            location,
            context,
            record.phone_number_id.as_deref(),
        ))
    }

    /// The `contact` table of a run.
    fn contact_table(&self, key: &str, conv: Option<&Conversation>) -> mlua::Result<Table> {
        let window_open = crate::store::outbox::window_open(conv, None, now_ms() / 1000);
        // The partner linked through the contact's phone number (`[odoo] partners`).
        let partner = conv.and_then(|c| self.shared.ctx.store.partner_for_contact(c).ok().flatten());
        // `{ scope = "marketing"|"all", since_ms, source }` when the contact opted out.
        let opted_out = match self.shared.ctx.store.optout_of(key).ok().flatten() {
            Some(o) => Some(self.sandbox.lua().to_value(&o)?),
            None => None,
        };
        let c = conv;
        self.contact_builder.call((
            key,
            c.is_some(),
            c.and_then(|c| c.wa_id.as_deref()),
            c.and_then(|c| c.user_id.as_deref()),
            c.and_then(|c| c.name.as_deref()),
            c.and_then(|c| c.username.as_deref()),
            c.map(|c| c.message_count),
            c.and_then(|c| c.last_inbound_at),
            window_open,
            partner.as_ref().map(|p| p.id),
            partner.map(|p| p.name),
            opted_out,
        ))
    }

    /// Runs a script's chunk in `env` and returns the table it returns.
    fn load_table(&self, file: &ScriptFile, env: &Table) -> Result<Table, String> {
        let chunk = compiled(&self.shared, self.sandbox.lua(), file).map_err(|e| e.to_string())?;
        self.sandbox
            .run::<Table>(&chunk, env, ())
            .map_err(|e: RunError| e.to_string())
    }

    fn pattern_match(&self, id: &str, pattern: &str) -> Result<Option<MultiValue>, String> {
        // Under the budgets: the id comes from the customer's client, and a pattern can
        // backtrack for ever on the wrong input.
        let found: MultiValue = self
            .sandbox
            .call(&self.find, (id, pattern))
            .map_err(|e| format!("button pattern {pattern:?}: {e}"))?;
        let mut values = found.into_iter();
        match values.next() {
            Some(LuaValue::Nil) | None => Ok(None),
            Some(_) => {
                let _end = values.next();
                let captures: MultiValue = values.collect();
                if captures.is_empty() {
                    let whole = self.sandbox.lua().create_string(id).map_err(|e| e.to_string())?;
                    Ok(Some(MultiValue::from_iter([LuaValue::String(whole)])))
                } else {
                    Ok(Some(captures))
                }
            }
        }
    }

    fn active_scenario(&self, contact: &str) -> Result<Option<ScenarioState>, String> {
        active_scenario(&self.shared, contact)
    }

    fn scenario_file(&self, name: &str) -> Option<ScriptFile> {
        let reg = self.shared.ctx.registry.read().expect("not poisoned");
        reg.get(ScriptKind::Scenario, name).cloned()
    }

    fn scenario_click(
        &mut self,
        record: &Arc<MessageRecord>,
        conv: Option<&Conversation>,
        scenario: &str,
        step: &str,
        button_id: &str,
    ) -> Result<(), String> {
        let Some(state) = self.active_scenario(&record.contact)? else {
            tracing::info!(
                message_id = record.id,
                scenario,
                step,
                "click on a scenario that is over; ignored"
            );
            return Ok(());
        };
        if state.scenario != scenario || state.step != step {
            tracing::info!(message_id = record.id, scenario, step, current = %format!("{}:{}", state.scenario, state.step), "click on an old scenario step; ignored");
            return Ok(());
        }
        let (file, def) = loaded_scenario(&self.shared, scenario)?;
        let step_def = def
            .steps
            .get(step)
            .ok_or_else(|| format!("{}: step `{step}` no longer exists", file.chunk_name))?;
        let Some((index, button)) = step_def.buttons.iter().enumerate().find(|(_, b)| b.id == button_id) else {
            return Err(format!(
                "{}: step `{step}` has no button `{button_id}`",
                file.chunk_name
            ));
        };
        let to = reply_address(record);
        if let Some(reply) = &button.reply {
            queue(&self.shared, json!({ "to": to, "type": "text", "text": reply })).map_err(|e| e.to_string())?;
        }
        let mut next = button.next.clone();
        let mut vars = state.vars.clone();
        if button.has_run {
            let env = self.run_env(record, conv, &file)?;
            self.set_label(format!("scenarios/{scenario}"));
            let table = self.load_table(&file, &env)?;
            let run: Function = table
                .get::<Table>("steps")
                .and_then(|s| s.get::<Table>(step))
                .and_then(|s| s.get::<Table>("buttons"))
                .and_then(|b| b.get::<Table>(index + 1))
                .and_then(|b| b.get("run"))
                .map_err(|e| format!("{}: {e}", file.chunk_name))?;
            let lua = self.sandbox.lua();
            let vars_table = lua.to_value(&vars).map_err(|e| e.to_string())?;
            let ret: LuaValue = self.sandbox.call(&run, vars_table.clone()).map_err(|e| e.to_string())?;
            vars = lua.from_value(vars_table).unwrap_or(vars);
            if let LuaValue::String(s) = ret {
                next = Some(s.to_str().map_err(|e| e.to_string())?.to_string());
            }
        }
        move_scenario(&self.shared, &record.contact, &to, state, next, vars).map_err(|e| e.to_string())
    }

    fn scenario_step_run(
        &mut self,
        record: &Arc<MessageRecord>,
        conv: Option<&Conversation>,
        file: &ScriptFile,
        state: ScenarioState,
    ) -> Result<(), String> {
        let env = self.run_env(record, conv, file)?;
        let table = self.load_table(file, &env)?;
        let run: Function = table
            .get::<Table>("steps")
            .and_then(|s| s.get::<Table>(state.step.as_str()))
            .and_then(|s| s.get("run"))
            .map_err(|e| format!("{}: {e}", file.chunk_name))?;
        let lua = self.sandbox.lua();
        let vars_table = lua.to_value(&state.vars).map_err(|e| e.to_string())?;
        let message: LuaValue = env.get("message").map_err(|e| e.to_string())?;
        let ret: LuaValue = self
            .sandbox
            .call(&run, (message, vars_table.clone()))
            .map_err(|e| e.to_string())?;
        let vars = lua.from_value(vars_table).unwrap_or(state.vars.clone());
        let to = reply_address(record);
        match ret {
            LuaValue::String(s) => {
                let next = s.to_str().map_err(|e| e.to_string())?.to_string();
                move_scenario(&self.shared, &record.contact, &to, state, Some(next), vars).map_err(|e| e.to_string())
            }
            _ => {
                let mut state = state;
                state.vars = vars;
                state.updated_ms = now_ms();
                self.shared
                    .effects
                    .lock()
                    .expect("not poisoned")
                    .scenarios
                    .insert(record.contact.clone(), Some(state));
                Ok(())
            }
        }
    }

    /// Runs a function-valued or table-valued script outside any inbound message (hooks,
    /// cron, replay helpers): `f` receives the script's returned value and the sandbox.
    pub fn run_script(
        &mut self,
        file: &ScriptFile,
        call: impl FnOnce(&Sandbox, LuaValue) -> Result<(), RunError>,
    ) -> Result<(), RunFailure> {
        self.set_label(format!("{}/{}", kind_dir(file.kind), file.name));
        self.take_transient();
        let result = (|| -> Result<(), String> {
            let lua = self.sandbox.lua();
            let env = self.sandbox.fresh_env().map_err(|e| e.to_string())?;
            let build = || -> mlua::Result<()> {
                let (api, logger) = self.api_tables()?;
                env.set("env", api)?;
                env.set("logger", logger)?;
                Ok(())
            };
            build().map_err(|e| e.to_string())?;
            let chunk = compiled(&self.shared, lua, file).map_err(|e| e.to_string())?;
            let value: LuaValue = self.sandbox.run(&chunk, &env, ()).map_err(|e| e.to_string())?;
            call(&self.sandbox, value).map_err(|e| e.to_string())
        })();
        let transient = self.take_transient().is_some();
        result.map_err(|message| RunFailure { message, transient })
    }

    /// Takes the transient failure the current run met, if any (see [`Shared::transient`]).
    pub fn take_transient(&self) -> Option<String> {
        self.shared.transient.lock().expect("not poisoned").take()
    }
}

fn kind_dir(kind: ScriptKind) -> &'static str {
    match kind {
        ScriptKind::Button => "buttons",
        ScriptKind::Scenario => "scenarios",
        ScriptKind::Template => "templates",
        ScriptKind::Hook => "hooks",
        ScriptKind::Cron => "cron",
        ScriptKind::OnMessage => "on_message",
    }
}

/// Compiles a script once per version on this worker.
pub(super) fn compiled(shared: &Shared, lua: &Lua, file: &ScriptFile) -> mlua::Result<Function> {
    let mut cache = shared.compiled.lock().expect("not poisoned");
    if let Some((version, f)) = cache.get(&file.path)
        && *version == file.version
    {
        return Ok(f.clone());
    }
    let f = lua
        .load(&*file.source)
        .set_name(format!("@{}", file.chunk_name))
        .set_mode(mlua::chunk::ChunkMode::Text)
        .into_function()?;
    cache.insert(file.path.clone(), (file.version, f.clone()));
    Ok(f)
}

fn active_scenario(shared: &Shared, contact: &str) -> Result<Option<ScenarioState>, String> {
    let overlay = shared
        .effects
        .lock()
        .expect("not poisoned")
        .scenarios
        .get(contact)
        .cloned();
    let state = match overlay {
        Some(s) => s,
        None => shared.ctx.store.scenario_get(contact).map_err(|e| e.to_string())?,
    };
    Ok(state.filter(|s| s.expires_ms > now_ms()))
}

/// `wsc|scenario|step|button` → its parts.
pub fn parse_scenario_button(id: &str) -> Option<(String, String, String)> {
    let rest = id.strip_prefix(SCENARIO_BUTTON_PREFIX)?;
    let mut parts = rest.splitn(3, '|');
    Some((
        parts.next()?.to_string(),
        parts.next()?.to_string(),
        parts.next()?.to_string(),
    ))
}

/// The button id (or template quick-reply payload, or list row id) and title of a message.
fn button_of(record: &MessageRecord) -> Option<(String, String)> {
    let c = &record.content;
    let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    match c.get("kind").and_then(Value::as_str)? {
        "button_reply" | "list_reply" => Some((s("id")?, s("title").unwrap_or_default())),
        "button" => Some((s("payload")?, s("text").unwrap_or_default())),
        _ => None,
    }
}

/// The answer to a click on a button walua did not send to that contact.
pub const FOREIGN_BUTTON_REPLY: &str = "Désolé, ce bouton ne correspond à aucun message que nous vous avons envoyé : nous ne pouvons pas y donner suite. Écrivez-nous si vous avez besoin d'aide.";

/// Where replies to an inbound message go: its sender as Meta gave it (phone or BSUID).
fn reply_address(record: &MessageRecord) -> String {
    record.from.clone().unwrap_or_else(|| record.contact.clone())
}

/// The number a run's reply goes out from: the number the dispatched message came to.
#[derive(Debug, Clone)]
pub(super) struct ReplyFrom {
    /// The sender's addresses (phone or BSUID, and conversation key), normalized.
    addresses: Vec<String>,
    /// The business number (phone number id) the message came to.
    number: String,
}

/// The `from` of a send to `to` that names none: during a dispatch, a reply to the message's
/// sender goes out from the number the message came to (when it is configured); otherwise
/// `None`, and the outbox picks (the number `to` last wrote to, else the first account).
pub(super) fn default_from(shared: &Shared, to: &str) -> Option<String> {
    let reply = shared.reply_from.lock().expect("not poisoned");
    let reply = reply.as_ref()?;
    let to = crate::store::normalize_contact(to);
    (reply.addresses.contains(&to) && shared.ctx.outbox.sends_from(&reply.number)).then(|| reply.number.clone())
}

/// Validates a send (a JSON request like `POST /api/messages`) and buffers it.
pub(super) fn queue(shared: &Shared, request: Value) -> Result<u64, String> {
    queue_with_file(shared, request, None)
}

/// [`queue`] with the file the message carries, attached to the chatter note of a send about
/// an Odoo record.
pub(super) fn queue_with_file(
    shared: &Shared,
    request: Value,
    file: Option<crate::store::chatter::ChatterFile>,
) -> Result<u64, String> {
    let mut req: SendRequest = serde_json::from_value(request).map_err(|e| format!("invalid message: {e}"))?;
    if req.from.is_none() {
        req.from = default_from(shared, &req.to);
    }
    let origin = shared.effects.lock().expect("not poisoned").origin.clone();
    let mut new = shared.ctx.outbox.prepare(&req, &origin).map_err(|e| e.to_string())?;
    if new.record.is_some() {
        new.chatter_file = file;
    }
    let id = new.id;
    shared.effects.lock().expect("not poisoned").sends.push(new);
    Ok(id)
}

/// A loaded scenario script and its definition, or why there is none.
fn loaded_scenario(shared: &Shared, name: &str) -> Result<(ScriptFile, ScenarioDef), String> {
    let reg = shared.ctx.registry.read().expect("not poisoned");
    match reg.get(ScriptKind::Scenario, name) {
        Some(
            file @ ScriptFile {
                meta: ScriptMeta::Scenario(def),
                ..
            },
        ) => Ok((file.clone(), def.clone())),
        Some(_) => Err(format!("`{name}` is not a scenario")),
        None => Err(format!("scenario `{name}` is not loaded")),
    }
}

/// The message of a scenario step: its body with its buttons (ids routed back here).
fn send_step(shared: &Shared, to: &str, scenario: &str, step: &str) -> Result<(), String> {
    let (file, def) = loaded_scenario(shared, scenario)?;
    let s = def
        .steps
        .get(step)
        .ok_or_else(|| format!("{}: no step `{step}`", file.chunk_name))?;
    let Some(body) = &s.body else { return Ok(()) };
    let request = if s.buttons.is_empty() {
        json!({ "to": to, "type": "text", "text": body })
    } else {
        let buttons: Vec<Value> = s
            .buttons
            .iter()
            .map(|b| json!({ "id": format!("{SCENARIO_BUTTON_PREFIX}{scenario}|{step}|{}", b.id), "title": b.title }))
            .collect();
        let mut r = json!({ "to": to, "type": "buttons", "body": body, "buttons": buttons });
        if let Some(h) = &s.header {
            r["header"] = json!(h);
        }
        if let Some(f) = &s.footer {
            r["footer"] = json!(f);
        }
        r
    };
    queue(shared, request).map(|_| ())
}

/// Starts a scenario for a contact: state at the start step, and the step's message sent.
pub(super) fn start_scenario(
    shared: &Shared,
    contact_key: &str,
    to: &str,
    scenario: &str,
    vars: Value,
) -> Result<(), String> {
    let (_, def) = loaded_scenario(shared, scenario)?;
    let now = now_ms();
    let state = ScenarioState {
        scenario: scenario.to_string(),
        step: def.start.clone(),
        vars,
        updated_ms: now,
        expires_ms: now + def.expires_secs as i64 * 1000,
    };
    shared
        .effects
        .lock()
        .expect("not poisoned")
        .scenarios
        .insert(contact_key.to_string(), Some(state));
    send_step(shared, to, scenario, &def.start)
}

/// Moves a contact's scenario to `next` (a step, `scenario:OTHER`, or `None` to end it).
fn move_scenario(
    shared: &Shared,
    contact_key: &str,
    to: &str,
    mut state: ScenarioState,
    next: Option<String>,
    vars: Value,
) -> Result<(), String> {
    match next {
        None => {
            shared
                .effects
                .lock()
                .expect("not poisoned")
                .scenarios
                .insert(contact_key.to_string(), None);
            Ok(())
        }
        Some(n) => {
            if let Some(other) = n.strip_prefix("scenario:") {
                return start_scenario(shared, contact_key, to, other, vars);
            }
            state.step = n.clone();
            state.vars = vars;
            state.updated_ms = now_ms();
            shared
                .effects
                .lock()
                .expect("not poisoned")
                .scenarios
                .insert(contact_key.to_string(), Some(state.clone()));
            send_step(shared, to, &state.scenario, &n)
        }
    }
}

/// Resolves a contact reference (phone, BSUID, username) to its conversation key.
pub(super) fn contact_key(shared: &Shared, to: &str) -> String {
    match shared.ctx.store.conversation(to) {
        Ok(Some(c)) => c.contact,
        _ => crate::store::normalize_contact(to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::RwLock;

    fn context(dir: &std::path::Path) -> Arc<RuntimeContext> {
        let store = Store::open(&dir.join("walua.redb")).unwrap();
        let outbox = Outbox::new(store.clone(), Default::default(), true, false);
        Arc::new(RuntimeContext {
            store,
            outbox,
            registry: Arc::new(RwLock::new(super::super::registry::Registry::new())),
            vars: json!({}),
            limits: Limits {
                cpu: Duration::from_millis(50),
                ..Limits::default()
            },
            lib_dir: dir.join("lib"),
            graph: None,
            store_path: dir.join("walua.redb"),
            handle: None,
            odoo: None,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            held: Default::default(),
            handover_buttons: crate::config::HandoverButtons::Run,
        })
    }

    /// Containment when interruption fails: a job whose run ignores the interrupt (Rust code
    /// here, standing for a C path that never checks it) is answered with `Wedged`, a new
    /// worker takes its place, and the abandoned thread shows in `stuck_workers` until it
    /// ends by itself.
    #[test]
    fn a_worker_that_does_not_stop_is_replaced_and_its_job_answered() {
        let dir = tempfile::tempdir().unwrap();
        let rt = ScriptRuntime::start(1, context(dir.path())).unwrap();
        let release = Arc::new(AtomicBool::new(false));
        let r = release.clone();
        let result = rt.exec_blocking(move |w| {
            let clock = w.sandbox.clock().clone();
            assert!(clock.begin(Duration::from_millis(50), Duration::from_secs(60)));
            w.slot.as_ref().unwrap().message.store(7, Ordering::SeqCst);
            while !r.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            clock.end();
            "finished"
        });
        match result {
            Err(RuntimeError::Wedged { message, why, .. }) => {
                assert_eq!(message, Some(7));
                assert_eq!(why, "CPU budget");
            }
            other => panic!("expected a wedged worker, got {other:?}"),
        }
        // The pool goes on with a new worker.
        assert_eq!(rt.exec_blocking(|_| 42).unwrap(), 42);
        assert_eq!(rt.live_workers(), 1);
        let stuck = rt.stuck_workers();
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        // The abandoned thread ends once its run returns, and is forgotten.
        release.store(true, Ordering::SeqCst);
        let start = Instant::now();
        while !rt.stuck_workers().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the abandoned thread did not end"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(rt.exec_blocking(|_| 43).unwrap(), 43);
        rt.stop();
    }
}
