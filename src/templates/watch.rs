//! Hot reload of the template definitions: [`DefinitionWatcher`] watches the definitions
//! folder with `notify` and reloads it into the [`TemplateCatalog`] after each burst of
//! changes (debounced like the scripts'). A file that stops loading keeps its previous
//! version; its error is logged.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;

use notify::{RecursiveMode, Watcher};

use super::catalog::TemplateCatalog;
use crate::script::watcher::DEBOUNCE;

enum Msg {
    Changed,
    Stop,
}

/// Watches the definitions folder; stops (and joins its thread) when dropped.
pub struct DefinitionWatcher {
    watcher: Option<notify::RecommendedWatcher>,
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl DefinitionWatcher {
    /// Starts watching `catalog`'s folder (which must exist).
    pub fn start(catalog: Arc<TemplateCatalog>) -> notify::Result<DefinitionWatcher> {
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok_and(|e| !e.kind.is_access()) {
                let _ = events.send(Msg::Changed);
            }
        })?;
        watcher.watch(catalog.dir(), RecursiveMode::Recursive)?;
        let thread = std::thread::Builder::new()
            .name("walua-template-watcher".into())
            .spawn(move || {
                while let Ok(msg) = rx.recv() {
                    if matches!(msg, Msg::Stop) {
                        return;
                    }
                    // Collect the burst (an editor's save is several events), then reload once.
                    loop {
                        match rx.recv_timeout(DEBOUNCE) {
                            Ok(Msg::Changed) => continue,
                            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                            Err(RecvTimeoutError::Timeout) => break,
                        }
                    }
                    let problems = catalog.reload();
                    let loaded = catalog.definitions().definitions.len();
                    tracing::info!(target: "walua::templates", loaded, problems = problems.len(), "template definitions reloaded");
                    for p in problems {
                        tracing::warn!(target: "walua::templates", problem = %p, "template definition");
                    }
                }
            })
            .map_err(notify::Error::io)?;
        Ok(DefinitionWatcher {
            watcher: Some(watcher),
            tx,
            thread: Some(thread),
        })
    }
}

impl Drop for DefinitionWatcher {
    fn drop(&mut self) {
        self.watcher.take();
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
