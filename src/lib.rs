//! # walua
//!
//! One daemon for a business's WhatsApp automation: it receives Meta's WhatsApp Cloud API
//! webhooks for one or several business numbers, keeps every message and status in an
//! embedded redb store, runs the business's Lua scripts on them, and sends from a durable
//! outbox.
//!
//! # Layout
//!
//! - [`console`]: the agents' web console at `/`: sign-in and roles, the inbox and threads
//!   with live updates, replies, files and templates, resend and cancel, human handover, and
//!   the operations pages (outbox, scripts, parked runs, health); French, embedded assets.
//! - [`campaign`]: campaigns: a template sent to an audience (list, CSV, Odoo domain),
//!   scheduled, paced by the outbox behind answers to customers, paused, resumed, reported.
//! - [`config`]: `conf/walua.toml` → typed [`Config`], secrets from `env:` / `file:`.
//! - [`store`]: the redb tables and the only code that opens transactions.
//! - [`optout`]: customers' STOP: keywords, scopes, the rules sends are checked against.
//! - [`webhook`]: Meta payload types, signature check, the durable delivery journal (group
//!   commit) and the processor that turns journaled deliveries into stored messages.
//! - [`whatsapp`]: the Graph API clients (one per business number), outbound message
//!   builders with Meta's limits, and Meta's error codes explained for operators.
//! - [`http`]: the hyper server and router: webhook, health, admin API.
//! - [`outbox`]: the durable send queue: enqueue (validation, 24 h window), rate limits,
//!   retries, and the crash policy for interrupted sends.
//! - [`script`]: the Lua runtime: sandbox, script registry, hot reload, dispatch.
//! - [`media`]: media files kept beside the store.
//! - [`scheduler`]: cron jobs from `scripts/cron/`, with catch-up after downtime.
//! - [`replay`]: `walua check` and `walua replay`.
//! - [`odoo`]: the Odoo JSON-RPC client (API key or password, typed faults, re-login,
//!   invoice and report PDFs).
//! - [`metrics`]: the Prometheus metrics of `GET /metrics`.
//! - [`stats`]: analytics (messages in and out, delivery, read and failure rates,
//!   first-response times, conversations, billable messages) per day, template, campaign,
//!   script and number: `GET /api/stats`, `walua stats`, the console's statistics page; the
//!   aggregates behind them are in `store::stats`.
//! - [`search_index`]: the background task that writes new messages' words into the
//!   console's search index, off the transactions that store them.
//! - [`phone`]: phone numbers parsed with libphonenumber's rules into Meta's `wa_id` form.
//! - [`pace`]: spaces the batches of the processor, the dispatcher and the outbox under load,
//!   and runs the processor's and the dispatcher's drain loops.
//! - [`templates`]: Meta's message templates: definitions on disk, the registry synced from
//!   Meta, push / diff, and the check of every template send before it is queued.
//! - [`systemd`]: `sd_notify` readiness, reload, stop, watchdog and status.
//! - [`init`]: `walua init DIR`, a fresh install layout with the default scripts.
//! - [`cli`]: the client side of `walua conversations` / `walua messages`.
//!
//! Data flows one way: HTTP in → journal (durable, then 200) → parse → store → scripts
//! (dispatch, exactly once) → outbox → Graph API, whose answers and status webhooks come back
//! into the store.

pub mod campaign;
pub mod cli;
pub mod config;
pub mod console;
pub mod http;
pub mod init;
pub mod media;
pub mod metrics;
pub mod odoo;
pub mod optout;
pub mod outbox;
pub mod pace;
pub mod phone;
pub mod replay;
pub mod scheduler;
pub mod script;
pub mod search_index;
pub mod stats;
pub mod store;
pub mod systemd;
pub mod templates;
pub mod webhook;
pub mod whatsapp;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
use store::Store;
use webhook::journal::{DeliveryJournal, DeliveryLog, JournalFiles};
use webhook::processor::DeliveryProcessor;

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The delivery journal could not be opened (or the legacy one moved over).
    #[error("cannot open the delivery journal at {path}: {reason}")]
    Journal {
        /// The journal directory.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The store could not be opened.
    #[error("cannot open the store at {path}: {source}")]
    Store {
        /// The redb file.
        path: std::path::PathBuf,
        /// Why.
        source: store::StoreError,
    },
    /// The Odoo client could not be built from the configuration.
    #[error("odoo: {0}")]
    Odoo(String),
    /// The script runtime could not start.
    #[error("scripts: {0}")]
    Scripts(String),
    /// The Graph API client could not be built from the configuration.
    #[error("whatsapp: {0}")]
    Graph(String),
}

/// The running daemon's shared state, handed to every request handler.
pub struct App {
    /// The configuration it was started with.
    pub config: Arc<Config>,
    /// The store.
    pub store: Store,
    /// The journal writer of webhook deliveries.
    pub journal: DeliveryJournal,
    /// The journal's segment files (backlog for `/healthz` and the status line).
    pub journal_files: JournalFiles,
    /// The enqueue side of the outbox.
    pub outbox: outbox::Outbox,
    /// The Graph API clients, one per account (absent in dry run without an access token).
    pub graph: Option<Arc<whatsapp::client::GraphClients>>,
    /// The loaded scripts, their watcher and the Lua pool.
    pub scripts: script::Scripts,
    /// Odoo hooks (push endpoint), when `[odoo]` is configured.
    pub hooks: Option<odoo::hooks::Hooks>,
    /// The cron scheduler (`GET /api/cron`, `POST /api/cron/{name}/run`).
    pub cron: Arc<scheduler::Scheduler>,
    /// The Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Wakes the script dispatcher (a message put back in its queue).
    pub dispatch_wake: Arc<Notify>,
    /// Wakes the chatter writer (a note queued or replayed).
    pub chatter_wake: Arc<Notify>,
    /// The partner sync's last failure, when `[odoo] partners` is on (for `/healthz`).
    pub partner_sync_failure: Option<Arc<std::sync::Mutex<Option<String>>>>,
    /// Templates: the registry's sync with Meta, push and diff (`/api/templates`).
    pub templates: Arc<templates::sync::TemplateSync>,
    /// What the console's open pages listen to (`/console/events`).
    pub live: console::live::LiveChanges,
    /// Wakes the campaign runner (a campaign created, started or resumed).
    pub campaign_wake: Arc<Notify>,
    /// Cancelled when the daemon stops: long-lived responses (event streams) end with it.
    pub shutdown: CancellationToken,
    /// Slows down password guessing on the console's sign-in (see
    /// [`console::accounts::sign_in`]).
    pub sign_in_throttle: console::accounts::SignInThrottle,
}

/// The one-line status shown by `systemctl status` (blocking: reads the store).
pub fn status_line(store: &Store, journal: &JournalFiles, scripts: &script::Scripts) -> String {
    let (loaded, errors) = {
        let reg = scripts.registry.read().expect("not poisoned");
        (reg.all().count(), reg.errors().count())
    };
    let depth = store
        .outbox_len()
        .map(|d| d.to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let backlog = store.journal_applied().map(|a| journal.backlog(a)).unwrap_or(0);
    let mut line = format!("serving: {loaded} scripts, outbox depth {depth}, journal backlog {backlog}");
    if errors > 0 {
        line.push_str(&format!(", {errors} script(s) failed to load"));
    }
    let failing = [
        store.probe_writable().err().map(|e| format!("store cannot write: {e}")),
        journal.recheck().map(|e| format!("journal cannot write: {e}")),
        stuck_worker_problem(scripts),
    ];
    let failing: Vec<String> = failing.into_iter().flatten().collect();
    if failing.is_empty() {
        format!("{line}; health {}", if errors > 0 { "degraded" } else { "ok" })
    } else {
        format!("{line}; health failing: {}", failing.join("; "))
    }
}

/// Merges contacts walua once keyed by a badly normalised number into their canonical
/// conversation (see [`Store::renormalize_contacts`]), once per default country.
async fn renormalize_contacts(store: &Store, region: Option<String>) {
    let marker = format!("phone-v1:{}", region.as_deref().unwrap_or("-"));
    let result = store
        .blocking(move |s| {
            s.renormalize_contacts(&marker, &|key| {
                phone::normalize(key, region.as_deref()).map_err(|e| e.to_string())
            })
        })
        .await;
    match result {
        Ok(r) if r.skipped => {}
        Ok(r) => {
            for (from, to) in &r.merged {
                tracing::info!(from = %from, to = %to, "contact renormalised: its conversation merged into the canonical number's");
            }
            for (key, why) in &r.unparsed {
                tracing::warn!(contact = %key, reason = %why, "contact key is not a valid phone number; kept as it is");
            }
        }
        Err(e) => tracing::error!(error = %e, "could not renormalise contact keys; will try at the next start"),
    }
}

/// Re-opens the store after an I/O error (a full disk), every second, until shutdown: the
/// daemon resumes by itself once space is back. Logs each change of state.
async fn recover_store(store: Store, wake: Vec<Arc<Notify>>, shutdown: CancellationToken) {
    let mut failing: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
        let s = store.clone();
        let Ok(found) = tokio::task::spawn_blocking(move || s.recover()).await else {
            continue;
        };
        match found {
            store::Recovery::Healthy => {
                if failing.take().is_some() {
                    tracing::info!("the store answers again");
                    wake.iter().for_each(|n| n.notify_one());
                }
            }
            store::Recovery::Reopened { took_ms } => {
                tracing::warn!(
                    took_ms,
                    "the store was re-opened after an I/O error; processing resumes"
                );
                failing = None;
                wake.iter().for_each(|n| n.notify_one());
            }
            store::Recovery::Failing(reason) => {
                if failing.as_deref() != Some(reason.as_str()) {
                    tracing::error!(reason = %reason, "the store cannot be used; retrying every second");
                }
                failing = Some(reason);
            }
        }
    }
}

/// Why walua must be restarted, if a Lua worker thread it abandoned (wedged) has still not
/// ended after [`script::runtime::STUCK_THREAD_LIMIT`]: a thread cannot be killed.
pub fn stuck_worker_problem(scripts: &script::Scripts) -> Option<String> {
    let stuck: Vec<String> = scripts
        .runtime
        .stuck_workers()
        .into_iter()
        .filter(|(_, age)| *age >= script::runtime::STUCK_THREAD_LIMIT)
        .map(|(name, age)| format!("{name} ({} s)", age.as_secs()))
        .collect();
    (!stuck.is_empty()).then(|| {
        format!(
            "Lua worker thread(s) still running after being abandoned as wedged: {}; restart walua (systemd does it when the watchdog is on)",
            stuck.join(", ")
        )
    })
}

/// Opens the delivery journal beside the store and returns it with the store's checkpoint.
/// Deliveries a walua from before the file journal left unprocessed in the store are
/// moved over first, keeping their ids (a crash half-way moves none of them twice).
fn open_journal(store: &Store, dir: &std::path::Path) -> Result<(DeliveryLog, u64), String> {
    let applied = store.journal_applied().map_err(|e| e.to_string())?;
    let mut log = DeliveryLog::open(dir, applied).map_err(|e| e.to_string())?;
    let legacy = store.legacy_journal().map_err(|e| e.to_string())?;
    if !legacy.is_empty() {
        let moved = log.append_migrated(&legacy).map_err(|e| e.to_string())?;
        store.drop_legacy_journal().map_err(|e| e.to_string())?;
        tracing::info!(moved, "unprocessed deliveries moved from the store to the file journal");
    }
    log.skip_to(store.legacy_last_delivery_id().map_err(|e| e.to_string())?);
    Ok((log, applied))
}

/// Explains a Meta error code for an operator.
pub fn explain_error(code: i64) -> String {
    match code {
        0 => "no error code was given".to_string(),
        _ => format!(
            "Meta error {code}: see https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
        ),
    }
}

/// Runs the daemon on an already bound `listener` until `shutdown` completes, then drains:
/// the HTTP server stops accepting and finishes in-flight requests, the journal writer
/// commits what it holds, and background tasks stop, all within `server.shutdown_timeout`.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let config = Arc::new(config);
    let path = config.store.path.clone();
    let store = {
        let open_path = path.clone();
        tokio::task::spawn_blocking(move || Store::open(&open_path))
            .await
            .expect("store open task does not panic")
            .map_err(|source| RunError::Store {
                path: path.clone(),
                source,
            })?
    };

    let journal_dir = webhook::journal::dir_for_store(&path);
    let (log, applied) = {
        let (store, dir, segment) = (store.clone(), journal_dir.clone(), config.store.journal_segment_bytes);
        tokio::task::spawn_blocking(move || {
            open_journal(&store, &dir).map(|(log, a)| (log.with_segment_bytes(segment), a))
        })
        .await
        .expect("journal open task does not panic")
        .map_err(|reason| RunError::Journal {
            path: journal_dir.clone(),
            reason,
        })?
    };
    let journal_files = log.files();
    let journal_cursor = Arc::new(std::sync::Mutex::new(log.cursor(applied)));

    let metrics = Arc::new(metrics::Metrics::new());
    let stop_tasks = CancellationToken::new();
    let tasks = TaskTracker::new();
    let journaled = Arc::new(Notify::new());
    let media_wake = Arc::new(Notify::new());
    let search_wake = Arc::new(Notify::new());

    let outbox_wake = Arc::new(Notify::new());
    let live = console::live::LiveChanges::default();
    let outbox = outbox::Outbox::new(
        store.clone(),
        outbox_wake.clone(),
        config.whatsapp.dry_run,
        config.whatsapp.allow_outside_window,
    )
    .with_senders(outbox::Sender::of(&config.whatsapp))
    .with_default_country(config.whatsapp.accounts.first().and_then(|a| a.default_country.clone()))
    .with_metrics(metrics.clone())
    .with_live(live.clone())
    .with_chatter(config.odoo.as_ref().is_some_and(|o| o.chatter))
    .with_optout(optout::OptOutRules::new(&config.optout))
    .with_private_links(config.whatsapp.allow_private_links);
    let catalog = {
        let (store, whatsapp, dir) = (store.clone(), config.whatsapp.clone(), config.templates.dir.clone());
        Arc::new(
            tokio::task::spawn_blocking(move || templates::catalog::TemplateCatalog::new(store, &whatsapp, &dir))
                .await
                .expect("loading template definitions does not panic"),
        )
    };
    let outbox = outbox.with_templates(catalog.clone());
    let _definition_watcher = match (config.scripts.hot_reload, config.templates.dir.is_dir()) {
        (true, true) => templates::watch::DefinitionWatcher::start(catalog.clone())
            .map_err(|e| tracing::warn!(error = %e, "template definitions are not watched: restart walua after editing them"))
            .ok(),
        _ => None,
    };
    let region = outbox.region(None);
    let _ = tokio::task::spawn_blocking(move || phone::warm_up(region.as_deref())).await;
    renormalize_contacts(&store, outbox.region(None)).await;
    let w = &config.whatsapp;
    let graph = whatsapp::client::GraphClients::from_config(w)
        .map_err(|e| RunError::Graph(e.to_string()))?
        .map(Arc::new);
    match (&graph, w.dry_run) {
        (Some(clients), false) => {
            tasks.spawn(
                outbox::OutboxWorker {
                    store: store.clone(),
                    clients: clients.clone(),
                    wake: outbox_wake.clone(),
                    shutdown: stop_tasks.clone(),
                    settings: outbox::OutboxSettings {
                        max_per_second: w
                            .accounts
                            .iter()
                            .map(|a| (a.phone_number_id.clone(), a.max_per_second))
                            .collect(),
                        pair_burst: w.pair_burst,
                        pair_interval: w.pair_interval,
                        retry_base: w.retry_base,
                        retry_horizon: w.retry_horizon,
                        max_in_flight: w.max_in_flight,
                    },
                    metrics: metrics.clone(),
                    templates: Some(catalog.clone()),
                    live: live.clone(),
                }
                .run(),
            );
        }
        _ => tracing::info!("dry run: outbound messages are recorded with status dry_run, nothing is sent"),
    }
    let queue_media = graph.is_some() && !w.dry_run;
    if let (Some(clients), true) = (&graph, queue_media) {
        tasks.spawn(
            media::MediaDownloader {
                store: store.clone(),
                clients: clients.clone(),
                store_path: config.store.path.clone(),
                max_bytes: w.media_max_bytes,
                wake: media_wake.clone(),
                shutdown: stop_tasks.clone(),
            }
            .run(),
        );
    }
    // Scripts: load, watch, and the Lua pool with its dispatcher.
    let odoo = match &config.odoo {
        Some(o) => {
            let client = odoo::OdooClient::new(o).map_err(|e| RunError::Odoo(e.to_string()))?;
            client.set_metrics(metrics.clone());
            Some(Arc::new(client))
        }
        None => None,
    };
    let scripts = script::Scripts::start(
        &config,
        store.clone(),
        outbox.clone(),
        graph.clone(),
        odoo.clone(),
        metrics.clone(),
    )
    .map_err(|e| RunError::Scripts(e.to_string()))?;
    let dispatch_wake = Arc::new(Notify::new());
    tasks.spawn(
        script::dispatch::Dispatcher {
            store: store.clone(),
            runtime: scripts.runtime.clone(),
            outbox: outbox.clone(),
            wake: dispatch_wake.clone(),
            shutdown: stop_tasks.clone(),
            on_outcome: {
                let metrics = metrics.clone();
                Arc::new(move |o| metrics.script_outcome(o))
            },
        }
        .run(),
    );
    // Take over SIGHUP now (tokio keeps the handler for the life of the process), so that a
    // reload asked for right after READY=1 never hits the default action (terminate).
    if let Err(e) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tracing::warn!(error = %e, "cannot handle SIGHUP");
    }
    tasks.spawn(script::reload_on_sighup(
        scripts.clone(),
        store.clone(),
        journal_files.clone(),
        stop_tasks.clone(),
    ));
    let hooks = match (&odoo, &config.odoo) {
        (Some(client), Some(o)) => {
            let hooks = odoo::hooks::Hooks {
                store: store.clone(),
                runtime: scripts.runtime.clone(),
                registry: scripts.registry.clone(),
                odoo: client.clone(),
                outbox: outbox.clone(),
                poll_failure: Default::default(),
                metrics: Some(metrics.clone()),
                rescan: o.rescan_window,
                retry: config.scripts.retry_policy(),
            };
            tasks.spawn(hooks.clone().poll_forever(o.poll_interval, stop_tasks.clone()));
            Some(hooks)
        }
        _ => None,
    };
    // The chatter writer and the partner sync, when Odoo is configured.
    let chatter_wake = Arc::new(Notify::new());
    let mut partner_sync_failure = None;
    if let (Some(client), Some(o)) = (&odoo, &config.odoo) {
        if o.chatter {
            tasks.spawn(
                odoo::chatter::ChatterWriter {
                    store: store.clone(),
                    odoo: client.clone(),
                    wake: chatter_wake.clone(),
                    retry: config.scripts.retry_policy(),
                }
                .run(stop_tasks.clone()),
            );
        }
        store.set_chatter_inbound(o.chatter && o.chatter_inbound);
        if o.partners {
            let sync = odoo::partners::PartnerSync {
                store: store.clone(),
                odoo: client.clone(),
                default_country: config.whatsapp.accounts.first().and_then(|a| a.default_country.clone()),
                rescan: o.rescan_window,
                failure: Default::default(),
            };
            partner_sync_failure = Some(sync.failure.clone());
            tasks.spawn(sync.run(o.poll_interval, stop_tasks.clone()));
        }
    }
    let cron = Arc::new(scheduler::Scheduler {
        store: store.clone(),
        runtime: scripts.runtime.clone(),
        registry: scripts.registry.clone(),
        outbox: outbox.clone(),
        default_tz: config.scripts.timezone,
        shutdown: stop_tasks.clone(),
        retry: config.scripts.retry_policy(),
        running: Default::default(),
    });
    tasks.spawn(cron.clone().run());

    let (journal, journal_task) = DeliveryJournal::start(log, journaled.clone());
    tasks.spawn(
        DeliveryProcessor {
            store: store.clone(),
            cursor: journal_cursor,
            files: journal_files.clone(),
            journaled: journaled.clone(),
            processed: vec![media_wake.clone(), dispatch_wake.clone(), search_wake.clone()],
            explain: explain_error,
            shutdown: stop_tasks.clone(),
            queue_media,
            metrics: metrics.clone(),
            outbox: outbox.clone(),
            live: live.clone(),
        }
        .run(),
    );
    tasks.spawn(
        search_index::SearchIndexer {
            store: store.clone(),
            wake: search_wake.clone(),
            shutdown: stop_tasks.clone(),
        }
        .run(),
    );
    tasks.spawn(recover_store(
        store.clone(),
        vec![
            journaled.clone(),
            dispatch_wake.clone(),
            outbox_wake.clone(),
            media_wake.clone(),
            search_wake.clone(),
        ],
        stop_tasks.clone(),
    ));

    let template_sync = Arc::new(templates::sync::TemplateSync {
        store: store.clone(),
        catalog: catalog.clone(),
        wabas: match (&graph, config.whatsapp.dry_run) {
            (Some(clients), false) => config
                .whatsapp
                .wabas()
                .into_iter()
                .filter_map(|(id, account)| {
                    clients
                        .for_number(Some(&account.phone_number_id))
                        .map(|client| templates::sync::Waba {
                            id: id.to_string(),
                            client: client.clone(),
                        })
                })
                .collect(),
            _ => Vec::new(),
        },
        app_id: config.whatsapp.app_id.clone(),
        interval: config.templates.sync_interval,
        metrics: metrics.clone(),
        outbox: outbox.clone(),
        started_ms: store::now_ms(),
    });
    tasks.spawn(template_sync.clone().run(stop_tasks.clone()));
    let campaign_wake = Arc::new(Notify::new());
    tasks.spawn(
        campaign::CampaignRunner {
            store: store.clone(),
            outbox: outbox.clone(),
            rates: config
                .whatsapp
                .accounts
                .iter()
                .map(|a| (a.phone_number_id.clone(), a.max_per_second))
                .collect(),
            wake: campaign_wake.clone(),
            shutdown: stop_tasks.clone(),
        }
        .run(),
    );
    tasks.spawn(stats::follow(
        store.clone(),
        config.scripts.timezone,
        stop_tasks.clone(),
    ));
    // Stops the HTTP server; event streams end with it, so the drain does not wait for them.
    let stop_http = CancellationToken::new();
    let app = Arc::new(App {
        config: config.clone(),
        store: store.clone(),
        journal,
        journal_files: journal_files.clone(),
        outbox,
        graph,
        scripts: scripts.clone(),
        hooks,
        cron,
        metrics: metrics.clone(),
        dispatch_wake: dispatch_wake.clone(),
        chatter_wake,
        partner_sync_failure,
        templates: template_sync,
        live,
        campaign_wake,
        shutdown: stop_http.clone(),
        sign_in_throttle: console::accounts::SignInThrottle::new(),
    });
    if let Some(w) = whatsapp::version::check(&config.whatsapp.api_base, chrono::Utc::now().date_naive()) {
        tracing::warn!("{w}");
    }
    if config.whatsapp.accounts.iter().all(|a| a.app_secret.is_none()) {
        tracing::warn!("whatsapp.app_secret is not set (dry run): webhook signatures are NOT verified");
    }
    if config.server.admin_token.is_none() {
        tracing::warn!("server.admin_token is not set: the admin API answers loopback clients only");
    }
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, store = %path.display(), dry_run = config.whatsapp.dry_run, "walua is listening");

    {
        let (st, jf, sc) = (store.clone(), journal_files.clone(), scripts.clone());
        let line = tokio::task::spawn_blocking(move || status_line(&st, &jf, &sc))
            .await
            .unwrap_or_default();
        systemd::ready(&line);
        let (store, journal_files, scripts) = (store.clone(), journal_files.clone(), scripts.clone());
        tasks.spawn(systemd::keepalive(
            move || {
                let (store, journal_files, scripts) = (store.clone(), journal_files.clone(), scripts.clone());
                async move {
                    tokio::task::spawn_blocking(move || status_line(&store, &journal_files, &scripts))
                        .await
                        .unwrap_or_default()
                }
            },
            {
                let scripts = app.scripts.clone();
                move || stuck_worker_problem(&scripts)
            },
            stop_tasks.clone(),
        ));
    }

    let http = tokio::spawn(http::serve(
        app.clone(),
        listener,
        stop_http.clone(),
        config.server.shutdown_timeout,
    ));
    shutdown.await;
    tracing::info!("shutting down");
    systemd::stopping();
    stop_http.cancel();
    let _ = http.await;
    // No handler is left: dropping the last journal handle lets the writer drain and stop.
    drop(app);
    let deadline = config.server.shutdown_timeout;
    if tokio::time::timeout(deadline, journal_task).await.is_err() {
        tracing::warn!("journal writer did not stop in time");
    }
    stop_tasks.cancel();
    tasks.close();
    if tokio::time::timeout(deadline, tasks.wait()).await.is_err() {
        tracing::warn!("background tasks did not stop in time");
    }
    let _ = tokio::task::spawn_blocking(move || scripts.stop()).await;
    // Processing and script commits are not fsynced one by one (see
    // `Store::apply_deliveries_deferred`): one last durable commit makes them all durable.
    if let Err(e) = store.blocking(|s| s.probe_writable()).await {
        tracing::error!(error = %e, "final durable commit failed; unprocessed work will be redone at start-up");
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_left_in_a_legacy_store_move_to_the_file_journal_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("walua.redb")).unwrap();
        store.legacy_journal_insert(7, b"{\"a\":1}").unwrap();
        store.legacy_journal_insert(8, b"{\"b\":2}").unwrap();
        let jdir = dir.path().join("walua.journal");
        let (log, applied) = open_journal(&store, &jdir).unwrap();
        assert_eq!(applied, 0);
        let read: Vec<u64> = log
            .cursor(0)
            .read(10, 1 << 20)
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(read, [7, 8]);
        assert!(store.legacy_journal().unwrap().is_empty());
        drop(log);
        // A crash between the move and the drop: the rows are back, and are not moved twice.
        store.legacy_journal_insert(7, b"{\"a\":1}").unwrap();
        store.legacy_journal_insert(8, b"{\"b\":2}").unwrap();
        let (mut log, _) = open_journal(&store, &jdir).unwrap();
        assert_eq!(log.cursor(0).read(10, 1 << 20).unwrap().len(), 2);
        assert_eq!(log.append(&[b"{}"]).unwrap(), [9]);
    }
}
