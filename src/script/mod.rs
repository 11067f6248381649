//! The Lua runtime: what operators touch every day.
//!
//! - [`sandbox`]: one Lua 5.4 state with the safe standard library only, CPU and memory
//!   budgets, `require` limited to `scripts/lib/`.
//! - [`registry`]: scripts on disk by kind (buttons, scenarios, templates, hooks, cron,
//!   on_message), validated for shape when loaded; a failed load keeps the last good version.
//! - [`watcher`]: hot reload on save (debounced, editor-safe), SIGHUP reloads everything.
//! - [`runtime`]: the pool of Lua threads and the globals a run sees (`env`, `message`,
//!   `contact`, `button_id`, `logger`).
//! - `api`: the Rust functions behind `env` and `logger`, one `register_*` per API area.
//! - [`dispatch`]: runs the scripts for every inbound message exactly once.

mod api;
pub mod dispatch;
pub mod interrupt;
pub mod registry;
pub mod runtime;
pub mod sandbox;
pub mod watcher;

use std::sync::{Arc, Mutex, RwLock};

use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::outbox::Outbox;
use crate::store::Store;
use registry::{Registry, SharedRegistry};
use runtime::{RuntimeContext, ScriptRuntime};
use sandbox::Limits;

/// The scripts of a running daemon: registry, watcher and Lua pool. Cheap to clone.
#[derive(Clone)]
pub struct Scripts {
    /// The loaded scripts.
    pub registry: SharedRegistry,
    /// The Lua worker pool.
    pub runtime: Arc<ScriptRuntime>,
    /// The scripts directory.
    pub dir: std::path::PathBuf,
    /// Budgets of a run.
    pub limits: Limits,
    watcher: Arc<Mutex<Option<watcher::ScriptWatcher>>>,
}

/// Errors starting the script runtime.
#[derive(Debug, thiserror::Error)]
pub enum ScriptsError {
    /// The Lua pool could not start.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// The watcher could not start.
    #[error("cannot watch {dir}: {source}")]
    Watch {
        /// The scripts directory.
        dir: std::path::PathBuf,
        /// notify's error.
        source: notify::Error,
    },
}

impl Scripts {
    /// Loads every script, starts the watcher (when `hot_reload`) and the Lua pool.
    pub fn start(
        config: &Config,
        store: Store,
        outbox: Outbox,
        graph: Option<Arc<crate::whatsapp::client::GraphClients>>,
        odoo: Option<Arc<crate::odoo::OdooClient>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Scripts, ScriptsError> {
        let dir = config.scripts.dir.clone();
        let limits = config.scripts.limits();
        let registry: SharedRegistry = Arc::new(RwLock::new(Registry::new()));
        let report = watcher::reload_all(&dir, &registry, limits);
        log_report(&report);
        let watcher = if config.scripts.hot_reload && dir.is_dir() {
            let on_change: watcher::OnChange = Arc::new(log_report);
            Some(
                watcher::ScriptWatcher::start(dir.clone(), registry.clone(), limits, on_change).map_err(|source| {
                    ScriptsError::Watch {
                        dir: dir.clone(),
                        source,
                    }
                })?,
            )
        } else {
            None
        };
        let ctx = Arc::new(RuntimeContext {
            store,
            outbox,
            registry: registry.clone(),
            vars: config.vars.clone(),
            limits,
            lib_dir: dir.join("lib"),
            graph: graph.filter(|_| !config.whatsapp.dry_run),
            store_path: config.store.path.clone(),
            handle: tokio::runtime::Handle::try_current().ok(),
            odoo,
            metrics,
            held: runtime::HeldPolicy::from_config(&config.scripts),
            handover_buttons: config.console.handover_buttons,
        });
        let runtime = Arc::new(ScriptRuntime::start(config.scripts.workers, ctx)?);
        Ok(Scripts {
            registry,
            runtime,
            dir,
            limits,
            watcher: Arc::new(Mutex::new(watcher)),
        })
    }

    /// Reloads every script (SIGHUP).
    pub fn reload_all(&self) -> watcher::ReloadReport {
        let report = watcher::reload_all(&self.dir, &self.registry, self.limits);
        log_report(&report);
        report
    }

    /// Stops the watcher and the Lua threads (blocking).
    pub fn stop(self) {
        if let Some(w) = self.watcher.lock().expect("not poisoned").take() {
            w.stop();
        }
        // Stopped even if a handle on the pool is still held somewhere: the workers (and the
        // store they hold) must go before the daemon returns, or a restart finds it open.
        self.runtime.stop();
    }
}

fn log_report(report: &watcher::ReloadReport) {
    for path in &report.loaded {
        tracing::info!(script = %path.display(), "script loaded");
    }
    for path in &report.removed {
        tracing::info!(script = %path.display(), "script unregistered");
    }
    for e in &report.errors {
        tracing::warn!(script = %e.path.display(), error = %e.message, "script not loaded; the previous version (if any) stays");
    }
}

/// Reloads every script on SIGHUP until `shutdown`, telling systemd (`RELOADING=1`, then
/// `READY=1` with the new status line).
pub async fn reload_on_sighup(
    scripts: Scripts,
    store: Store,
    journal: crate::webhook::journal::JournalFiles,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload by saving files instead");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading every script");
                crate::systemd::reloading();
                let (s, st, jf) = (scripts.clone(), store.clone(), journal.clone());
                let line = tokio::task::spawn_blocking(move || {
                    let report = s.reload_all();
                    tracing::info!(loaded = report.loaded.len(), removed = report.removed.len(), errors = report.errors.len(), "scripts reloaded");
                    crate::status_line(&st, &jf, &s)
                })
                .await
                .unwrap_or_default();
                crate::systemd::ready(&line);
            }
            _ = shutdown.cancelled() => return,
        }
    }
}
