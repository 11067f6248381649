//! `walua check` and `walua replay`: what an operator runs before trusting a change.

use std::path::Path;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::Config;
use crate::outbox::Outbox;
use crate::script::registry::{LoadError, Registry, SharedRegistry};
use crate::script::runtime::{RuntimeContext, ScriptRuntime};
use crate::script::sandbox::Limits;
use crate::script::watcher;
use crate::store::Store;

/// The scripts' problems: errors (the script is not loaded) and warnings (cross-file).
pub struct CheckReport {
    /// Scripts loaded fine.
    pub loaded: usize,
    /// Problems, each starting with `file:line:` where Lua gives a line.
    pub errors: Vec<LoadError>,
    /// Cross-file warnings.
    pub warnings: Vec<LoadError>,
    /// Template definitions loaded (`[templates] dir`).
    pub templates: usize,
    /// Template definitions that do not load or break Meta's rules (`file: problem`).
    pub template_errors: Vec<String>,
}

fn limits(config: &Config) -> Limits {
    config.scripts.limits()
}

/// Loads every script of the configuration's scripts directory.
pub fn check(config: &Config) -> CheckReport {
    let registry: SharedRegistry = Arc::new(RwLock::new(Registry::new()));
    let report = watcher::reload_all(&config.scripts.dir, &registry, limits(config));
    let reg = registry.read().expect("not poisoned");
    let warnings: Vec<LoadError> = reg.warnings().cloned().collect();
    let errors: Vec<LoadError> = report
        .errors
        .into_iter()
        .filter(|e| !warnings.iter().any(|w| w.message == e.message))
        .collect();
    let definitions = crate::templates::definition::load_dir(&config.templates.dir);
    let mut template_errors: Vec<String> = definitions.errors.iter().map(ToString::to_string).collect();
    template_errors.extend(definitions.problems().iter().map(ToString::to_string));
    CheckReport {
        loaded: reg.all().count(),
        errors,
        warnings,
        templates: definitions.definitions.len(),
        template_errors,
    }
}

/// What a replayed payload would do.
#[derive(Debug, serde::Serialize)]
pub struct ReplayReport {
    /// Whether the replay ran on a copy of the configured store (else an empty one).
    pub on_store_copy: bool,
    /// The inbound messages as they would be stored.
    pub stored: Vec<Value>,
    /// Non-message changes that would be kept raw.
    pub events: Vec<Value>,
    /// Each inbound message's script outcome.
    pub scripts: Vec<Value>,
    /// Every outbound message the scripts would queue, with the exact Graph API body.
    pub would_send: Vec<Value>,
}

/// Errors of `walua replay`.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The payload file.
    #[error("{0}")]
    Input(String),
    /// Store or runtime.
    #[error("{0}")]
    Internal(String),
}

/// Feeds one webhook payload through parsing and the scripts, as if Meta had sent it, on a
/// throw-away copy of the store. Nothing is sent and the real store is not touched.
pub fn replay(config: &Config, payload_path: &Path) -> Result<ReplayReport, ReplayError> {
    let body =
        std::fs::read(payload_path).map_err(|e| ReplayError::Input(format!("{}: {e}", payload_path.display())))?;
    crate::webhook::check_json(&bytes::Bytes::from(body.clone()))
        .map_err(|e| ReplayError::Input(format!("{}: {e}", payload_path.display())))?;
    let tmp = tempfile::tempdir().map_err(|e| ReplayError::Internal(e.to_string()))?;
    let copy = tmp.path().join("replay.redb");
    let mut on_store_copy = config.store.path.exists() && std::fs::copy(&config.store.path, &copy).is_ok();
    let store = match Store::open(&copy) {
        Ok(s) => s,
        Err(_) => {
            on_store_copy = false;
            let _ = std::fs::remove_file(&copy);
            Store::open(&copy).map_err(|e| ReplayError::Internal(e.to_string()))?
        }
    };
    let events_before = store.events(usize::MAX).map(|e| e.len()).unwrap_or(0);
    // Applied as the processor would, under the next delivery id of the copy.
    let delivery_id = store
        .journal_applied()
        .unwrap_or(0)
        .max(store.legacy_last_delivery_id().unwrap_or(0))
        + 1;
    let report = store
        .apply_deliveries(
            &[crate::webhook::processor::parse_delivery(delivery_id, &body)],
            &crate::explain_error,
            false,
        )
        .map_err(|e| ReplayError::Internal(e.to_string()))?;

    let registry: SharedRegistry = Arc::new(RwLock::new(Registry::new()));
    let loaded = watcher::reload_all(&config.scripts.dir, &registry, limits(config));
    for e in &loaded.errors {
        eprintln!("warning: {}", e.message);
    }
    let outbox = Outbox::new(
        store.clone(),
        Default::default(),
        true,
        config.whatsapp.allow_outside_window,
    )
    .with_senders(crate::outbox::Sender::of(&config.whatsapp))
    .with_default_country(config.whatsapp.accounts.first().and_then(|a| a.default_country.clone()))
    .with_optout(crate::optout::OptOutRules::new(&config.optout))
    .with_private_links(config.whatsapp.allow_private_links);
    crate::phone::warm_up(outbox.region(None).as_deref());
    let ctx = Arc::new(RuntimeContext {
        store: store.clone(),
        outbox,
        registry,
        vars: config.vars.clone(),
        limits: limits(config),
        lib_dir: config.scripts.dir.join("lib"),
        graph: None,
        store_path: copy.clone(),
        handle: None,
        odoo: None,
        metrics: Arc::new(crate::metrics::Metrics::new()),
        held: Default::default(),
        handover_buttons: config.console.handover_buttons,
    });
    let runtime = ScriptRuntime::start(1, ctx).map_err(|e| ReplayError::Internal(e.to_string()))?;
    let new_ids = report.new_messages.clone();
    let (effects, outcomes) = runtime
        .exec_blocking(move |w| w.dispatch_batch(&new_ids))
        .map_err(|e| ReplayError::Internal(e.to_string()))?;
    runtime.stop();

    let stored = report
        .new_messages
        .iter()
        .filter_map(|id| store.message(*id).ok().flatten())
        .map(|m| {
            serde_json::json!({
                "contact": m.contact, "from": m.from, "type": m.kind, "summary": m.summary, "wamid": m.wamid,
            })
        })
        .collect();
    let events = store
        .events(usize::MAX)
        .unwrap_or_default()
        .into_iter()
        .skip(events_before)
        .map(|e| serde_json::json!({ "field": e.field, "value": e.value }))
        .collect();
    let scripts = outcomes
        .into_iter()
        .map(|(id, o)| serde_json::json!({ "message": id, "scripts": o.scripts, "error": o.error }))
        .collect();
    let would_send = effects
        .sends
        .iter()
        .map(|n| serde_json::json!({ "to": n.recipient, "type": n.kind, "origin": n.origin, "body": n.body }))
        .collect();
    if report.duplicates > 0 {
        eprintln!(
            "note: {} message(s) of this payload are already in the store",
            report.duplicates
        );
    }
    Ok(ReplayReport {
        on_store_copy,
        stored,
        events,
        scripts,
        would_send,
    })
}
