//! Hot reload of the scripts directory.
//!
//! [`ScriptWatcher`] watches the scripts directory recursively with `notify` and owns one
//! std thread that debounces events and reloads what changed into the [`SharedRegistry`]:
//!
//! * Events are collected for [`DEBOUNCE`] after the first one, then the set of paths is
//!   processed once. Editors' atomic saves (write a temporary file, rename it over the target;
//!   vim's `4913` probe and `x.lua~` backup; emacs' `.#x.lua` locks) therefore end with the
//!   target reloaded once; the temporary files are never scripts (see
//!   [`registry::is_editor_temp`]).
//! * A script path that no longer exists is unregistered — after one more debounce period, so
//!   that a save which briefly moves the file away (vim's `x.lua` → `x.lua~`, then a new
//!   `x.lua`) split across two batches does not unregister it in between.
//! * A change in `lib/` (modules scripts may `require`), a folder appearing or vanishing, or a
//!   notify error/rescan request reloads everything ([`reload_all`]).
//! * Each changed file is compiled and validated in a scratch [`Sandbox`] created once per
//!   batch. A file that fails keeps its previous version; the error is logged with
//!   `tracing::warn!` (`file:line: message`) and recorded in the registry.
//!
//! Dropping the [`ScriptWatcher`] (or [`ScriptWatcher::stop`]) stops the notify watcher and
//! joins the thread.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};

use super::registry::{self, LoadError, SharedRegistry};
use super::sandbox::{Limits, Sandbox};

/// How long events are collected after the first one before the batch is processed.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// What one reload pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Scripts (re)loaded successfully.
    pub loaded: Vec<PathBuf>,
    /// Scripts unregistered because their file vanished.
    pub removed: Vec<PathBuf>,
    /// Load errors of this pass (the previous versions keep running) and the current
    /// cross-file warnings.
    pub errors: Vec<LoadError>,
}

impl ReloadReport {
    /// `true` when the pass loaded, removed and reported nothing.
    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty() && self.removed.is_empty() && self.errors.is_empty()
    }
}

/// Callback run on the watcher thread after every batch that changed something.
pub type OnChange = Arc<dyn Fn(&ReloadReport) + Send + Sync>;

impl ReloadReport {
    /// Applies one script's load result to the registry and records it here (loaded,
    /// removed, or failed with a warning); `log_loaded` logs each loaded script.
    fn apply(
        &mut self,
        reg: &mut registry::Registry,
        path: PathBuf,
        result: Result<Option<registry::ScriptFile>, LoadError>,
        log_loaded: bool,
    ) {
        match &result {
            Ok(Some(f)) => {
                if log_loaded {
                    tracing::info!(target: "walua::script", path = %path.display(), kind = %f.kind, "script loaded");
                }
                self.loaded.push(path.clone());
            }
            Ok(None) => {
                if reg.get_path(&path).is_some() {
                    self.removed.push(path.clone());
                }
            }
            Err(e) => {
                warn_error(e);
                self.errors.push(e.clone());
            }
        }
        reg.apply(&path, result);
    }
}

fn warn_error(e: &LoadError) {
    tracing::warn!(target: "walua::script", path = %e.path.display(), "script not loaded: {}", e.message);
}

fn new_sandbox(scripts_dir: &Path, limits: Limits) -> Result<Sandbox, LoadError> {
    Sandbox::new(limits, scripts_dir.join("lib")).map_err(|e| LoadError {
        path: scripts_dir.to_path_buf(),
        message: format!("{}: cannot create the Lua sandbox: {e}", scripts_dir.display()),
    })
}

/// Loads every script under `scripts_dir` into `registry` (start-up and SIGHUP). Files that
/// fail keep their previous good version; registered files that vanished are removed. When the
/// scripts directory itself cannot be read, nothing is removed and the error is reported.
pub fn reload_all(scripts_dir: &Path, registry: &SharedRegistry, limits: Limits) -> ReloadReport {
    let mut report = ReloadReport::default();
    let loaded = new_sandbox(scripts_dir, limits).and_then(|sandbox| {
        let paths = registry::script_paths(scripts_dir)?;
        Ok(paths
            .into_iter()
            .map(|p| {
                let r = registry::load_file(scripts_dir, &p, &sandbox);
                (p, r)
            })
            .collect::<Vec<_>>())
    });
    let results = match loaded {
        Ok(r) => r,
        Err(e) => {
            warn_error(&e);
            report.errors.push(e);
            return report;
        }
    };

    let mut reg = registry.write().unwrap_or_else(PoisonError::into_inner);
    let present: HashSet<&Path> = results.iter().map(|(p, _)| p.as_path()).collect();
    let known: BTreeSet<PathBuf> = reg
        .paths()
        .map(Path::to_path_buf)
        .chain(reg.errors().map(|e| e.path.clone()))
        .collect();
    for path in known {
        if !present.contains(path.as_path()) {
            if reg.get_path(&path).is_some() {
                report.removed.push(path.clone());
            }
            reg.remove(&path);
        }
    }
    for (path, result) in results {
        // `reload_all` reports the totals once (below), not each script.
        report.apply(&mut reg, path, result, false);
    }
    for w in reg.warnings() {
        warn_error(w);
        report.errors.push(w.clone());
    }
    drop(reg);
    tracing::info!(
        target: "walua::script",
        loaded = report.loaded.len(),
        removed = report.removed.len(),
        errors = report.errors.len(),
        "scripts reloaded from {}",
        scripts_dir.display()
    );
    report
}

enum Msg {
    Event(notify::Result<notify::Event>),
    Stop,
}

/// Watches the scripts directory and hot-reloads changed scripts. See the module docs.
pub struct ScriptWatcher {
    watcher: Option<notify::RecommendedWatcher>,
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl ScriptWatcher {
    /// Starts watching `scripts_dir` recursively. Does not load anything by itself: call
    /// [`reload_all`] after starting the watcher (so that no change is missed in between).
    /// `on_change` runs on the watcher thread after every batch that loaded, removed or failed
    /// something.
    pub fn start(
        scripts_dir: PathBuf,
        registry: SharedRegistry,
        limits: Limits,
        on_change: OnChange,
    ) -> notify::Result<ScriptWatcher> {
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let mut watcher = notify::recommended_watcher(move |res| {
            let _ = events.send(Msg::Event(res));
        })?;
        watcher.watch(&scripts_dir, RecursiveMode::Recursive)?;
        let absolute = std::env::current_dir()
            .map(|cwd| cwd.join(&scripts_dir))
            .unwrap_or_else(|_| scripts_dir.clone());
        let canonical = scripts_dir.canonicalize().unwrap_or_else(|_| absolute.clone());
        let worker = Worker {
            dir: scripts_dir,
            absolute,
            canonical,
            registry,
            limits,
            on_change,
            missing_once: HashSet::new(),
        };
        let thread = std::thread::Builder::new()
            .name("walua-script-watcher".into())
            .spawn(move || worker.run(rx))
            .map_err(notify::Error::io)?;
        Ok(ScriptWatcher {
            watcher: Some(watcher),
            tx,
            thread: Some(thread),
        })
    }

    /// Stops watching and joins the watcher thread (a batch in progress completes first).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Dropping the notify watcher stops its thread (and the event handler).
        self.watcher.take();
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ScriptWatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    /// The scripts directory as configured; registry keys are built from it.
    dir: PathBuf,
    /// `dir` made absolute, and canonicalized: forms in which notify may report paths.
    absolute: PathBuf,
    canonical: PathBuf,
    registry: SharedRegistry,
    limits: Limits,
    on_change: OnChange,
    /// Registered script paths found missing once; removed if still missing next batch.
    missing_once: HashSet<PathBuf>,
}

/// Events that may mean a script changed (opening or reading a file does not).
fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

impl Worker {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut pending: HashSet<PathBuf> = HashSet::new();
        let mut full = false;
        let mut deadline: Option<Instant> = None;
        loop {
            let msg = match deadline {
                None => match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                },
                Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            match msg {
                Some(Msg::Stop) => break,
                Some(Msg::Event(Ok(event))) => {
                    if event.need_rescan() {
                        full = true;
                    } else if !relevant(&event.kind) {
                        continue;
                    }
                    pending.extend(event.paths);
                    deadline.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                }
                Some(Msg::Event(Err(e))) => {
                    tracing::warn!(target: "walua::script", "script watcher error, reloading everything: {e}");
                    full = true;
                    deadline.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                }
                None => {
                    deadline = None;
                    let paths = std::mem::take(&mut pending);
                    let all = std::mem::take(&mut full);
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let (report, retry) = self.process(paths, all);
                        if !report.is_empty() {
                            (self.on_change)(&report);
                        }
                        retry
                    }));
                    match outcome {
                        Ok(retry) if !retry.is_empty() => {
                            pending.extend(retry);
                            deadline = Some(Instant::now() + DEBOUNCE);
                        }
                        Ok(_) => {}
                        Err(_) => tracing::error!(target: "walua::script", "script reload panicked"),
                    }
                }
            }
        }
        tracing::debug!(target: "walua::script", "script watcher stopped");
    }

    /// `path` expressed under `self.dir`, when it is inside the scripts directory.
    fn normalize(&self, path: &Path) -> Option<PathBuf> {
        [&self.dir, &self.absolute, &self.canonical]
            .into_iter()
            .find_map(|base| path.strip_prefix(base).ok())
            .map(|rel| {
                if rel.as_os_str().is_empty() {
                    self.dir.clone()
                } else {
                    self.dir.join(rel)
                }
            })
    }

    /// Processes one batch; returns the report and the paths to look at again next batch.
    fn process(&mut self, paths: HashSet<PathBuf>, mut full: bool) -> (ReloadReport, Vec<PathBuf>) {
        let mut files: BTreeSet<PathBuf> = BTreeSet::new();
        for raw in paths {
            let Some(path) = self.normalize(&raw) else { continue };
            if path == self.dir {
                full = true;
            } else if registry::is_lib_path(&self.dir, &path) {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let lua_module = name.ends_with(".lua") && !registry::is_editor_temp(name);
                if lua_module || path.is_dir() || path == self.dir.join("lib") {
                    full = true;
                }
            } else if path.is_dir() {
                // A folder created or renamed in: its files may predate its watch.
                full = true;
            } else if registry::classify(&self.dir, &path).is_some() {
                files.insert(path);
            } else if !path.exists() {
                // A folder removed or renamed away.
                let reg = self.registry.read().unwrap_or_else(PoisonError::into_inner);
                if reg.paths().any(|p| p.starts_with(&path)) {
                    full = true;
                }
            }
        }
        if full {
            self.missing_once.clear();
            return (reload_all(&self.dir, &self.registry, self.limits), Vec::new());
        }

        let mut report = ReloadReport::default();
        let mut retry = Vec::new();
        let mut sandbox: Option<Sandbox> = None;
        for path in files {
            if !path.exists() {
                let registered = self.registry_has(&path);
                if registered && self.missing_once.insert(path.clone()) {
                    retry.push(path);
                    continue;
                }
                self.missing_once.remove(&path);
                let mut reg = self.registry.write().unwrap_or_else(PoisonError::into_inner);
                if reg.get_path(&path).is_some() {
                    tracing::info!(target: "walua::script", path = %path.display(), "script removed");
                    report.removed.push(path.clone());
                }
                reg.remove(&path);
                continue;
            }
            self.missing_once.remove(&path);
            if sandbox.is_none() {
                match new_sandbox(&self.dir, self.limits) {
                    Ok(s) => sandbox = Some(s),
                    Err(e) => {
                        warn_error(&e);
                        report.errors.push(e);
                        return (report, Vec::new());
                    }
                }
            }
            let sb = sandbox.as_ref().expect("sandbox created above");
            let result = registry::load_file(&self.dir, &path, sb);
            let mut reg = self.registry.write().unwrap_or_else(PoisonError::into_inner);
            report.apply(&mut reg, path, result, true);
        }
        if !report.loaded.is_empty() || !report.removed.is_empty() {
            let reg = self.registry.read().unwrap_or_else(PoisonError::into_inner);
            for w in reg.warnings() {
                warn_error(w);
                report.errors.push(w.clone());
            }
        }
        (report, retry)
    }

    fn registry_has(&self, path: &Path) -> bool {
        self.registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get_path(path)
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, RwLock};

    use super::*;
    use crate::script::registry::{Registry, ScriptFile, ScriptKind, ScriptMeta};

    const TIMEOUT: Duration = Duration::from_secs(2);

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        registry: SharedRegistry,
        reports: Arc<Mutex<Vec<ReloadReport>>>,
        watcher: Option<ScriptWatcher>,
    }

    fn button(pattern: &str) -> String {
        format!("return {{ match = {pattern:?}, run = function() end }}\n")
    }

    fn fixture(files: &[(&str, &str)]) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("scripts");
        for sub in ["buttons", "scenarios", "lib"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for (rel, src) in files {
            std::fs::write(dir.join(rel), src).unwrap();
        }
        let registry: SharedRegistry = Arc::new(RwLock::new(Registry::new()));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = reports.clone();
        let watcher = ScriptWatcher::start(
            dir.clone(),
            registry.clone(),
            Limits::default(),
            Arc::new(move |r: &ReloadReport| sink.lock().unwrap().push(r.clone())),
        )
        .unwrap();
        let report = reload_all(&dir, &registry, Limits::default());
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(
            report.loaded.len(),
            files.iter().filter(|(r, _)| !r.starts_with("lib/")).count()
        );
        Fixture {
            _tmp: tmp,
            dir,
            registry,
            reports,
            watcher: Some(watcher),
        }
    }

    impl Fixture {
        fn path(&self, rel: &str) -> PathBuf {
            self.dir.join(rel)
        }
        fn write(&self, rel: &str, src: &str) {
            std::fs::write(self.path(rel), src).unwrap();
        }
        fn script(&self, name: &str) -> Option<ScriptFile> {
            self.registry.read().unwrap().get(ScriptKind::Button, name).cloned()
        }
        fn wait(&self, what: &str, cond: impl Fn(&Registry) -> bool) {
            let start = Instant::now();
            while start.elapsed() < TIMEOUT {
                if cond(&self.registry.read().unwrap()) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let reg = self.registry.read().unwrap();
            panic!("timed out waiting for {what}: {:#?}", reg.status());
        }
        /// Waits for the watcher to go quiet (no batch for a while).
        fn settle(&self) {
            std::thread::sleep(DEBOUNCE * 4);
        }
    }

    fn pattern_of(f: &ScriptFile) -> &str {
        match &f.meta {
            ScriptMeta::Button { pattern, .. } => pattern,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_file_is_registered() {
        let fx = fixture(&[]);
        let start = Instant::now();
        fx.write("buttons/new.lua", &button("^new$"));
        fx.wait("new.lua", |r| r.get(ScriptKind::Button, "new").is_some());
        assert!(start.elapsed() < TIMEOUT);
        let reports = fx.reports.lock().unwrap();
        assert!(
            reports.iter().any(|r| r.loaded == [fx.path("buttons/new.lua")]),
            "{reports:?}"
        );
    }

    #[test]
    fn atomic_save_reloads_the_target_once() {
        let fx = fixture(&[("buttons/x.lua", &button("^v1$"))]);
        assert_eq!(fx.script("x").unwrap().version, 1);
        fx.write("buttons/.x.lua.tmp", &button("^v2$"));
        std::fs::rename(fx.path("buttons/.x.lua.tmp"), fx.path("buttons/x.lua")).unwrap();
        fx.wait("v2", |r| {
            r.get(ScriptKind::Button, "x")
                .is_some_and(|f| f.source.contains("^v2$"))
        });
        fx.settle();
        let x = fx.script("x").unwrap();
        assert_eq!((x.version, pattern_of(&x)), (2, "^v2$"));
        let reg = fx.registry.read().unwrap();
        assert_eq!(reg.all().count(), 1);
        assert_eq!(reg.errors().count(), 0);
    }

    #[test]
    fn vim_and_emacs_style_saves_keep_the_script() {
        let fx = fixture(&[("buttons/x.lua", &button("^v1$"))]);
        // vim: probe file, backup by rename, write the new file, delete the backup.
        fx.write("buttons/4913", "");
        std::fs::remove_file(fx.path("buttons/4913")).unwrap();
        std::fs::rename(fx.path("buttons/x.lua"), fx.path("buttons/x.lua~")).unwrap();
        fx.write("buttons/x.lua", &button("^v2$"));
        std::fs::remove_file(fx.path("buttons/x.lua~")).unwrap();
        fx.wait("v2", |r| {
            r.get(ScriptKind::Button, "x")
                .is_some_and(|f| f.source.contains("^v2$"))
        });
        // emacs: lock file and swap files next to the script.
        fx.write("buttons/.#x.lua", "user@host.1234");
        fx.write("buttons/.x.lua.swp", "binary junk");
        fx.write("buttons/#x.lua#", "autosave");
        fx.settle();
        let reg = fx.registry.read().unwrap();
        let x = reg.get(ScriptKind::Button, "x").unwrap();
        assert_eq!(pattern_of(x), "^v2$");
        assert_eq!(reg.all().count(), 1, "{:#?}", reg.status());
        assert_eq!(reg.errors().count(), 0, "{:#?}", reg.status());
        drop(reg);
        let reports = fx.reports.lock().unwrap();
        assert!(reports.iter().all(|r| r.removed.is_empty()), "{reports:?}");
    }

    #[test]
    fn moved_away_then_back_across_batches_is_not_unregistered() {
        let fx = fixture(&[("buttons/x.lua", &button("^v1$"))]);
        std::fs::rename(fx.path("buttons/x.lua"), fx.path("buttons/x.lua~")).unwrap();
        // Longer than the debounce: the first batch sees x.lua missing.
        std::thread::sleep(DEBOUNCE + Duration::from_millis(60));
        fx.write("buttons/x.lua", &button("^v2$"));
        fx.wait("v2", |r| {
            r.get(ScriptKind::Button, "x")
                .is_some_and(|f| f.source.contains("^v2$"))
        });
        let reports = fx.reports.lock().unwrap();
        assert!(reports.iter().all(|r| r.removed.is_empty()), "{reports:?}");
    }

    #[test]
    fn delete_unregisters() {
        let fx = fixture(&[("buttons/x.lua", &button("^x$")), ("buttons/y.lua", &button("^y$"))]);
        std::fs::remove_file(fx.path("buttons/x.lua")).unwrap();
        fx.wait("x removed", |r| r.get(ScriptKind::Button, "x").is_none());
        assert!(fx.script("y").is_some());
        let reports = fx.reports.lock().unwrap();
        assert!(
            reports.iter().any(|r| r.removed == [fx.path("buttons/x.lua")]),
            "{reports:?}"
        );
    }

    #[test]
    fn broken_save_keeps_old_version_until_fixed() {
        let fx = fixture(&[("buttons/x.lua", &button("^v1$"))]);
        fx.write("buttons/x.lua", "return { match = '^v2$'\n run = function() end }");
        fx.wait("error", |r| r.status().iter().any(|s| s.last_error.is_some()));
        let status = fx.registry.read().unwrap().status();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].version, 1);
        assert!(status[0].loaded_at.is_some());
        let err = status[0].last_error.as_deref().unwrap();
        let chunk = fx.path("buttons/x.lua").display().to_string();
        assert!(err.starts_with(&format!("{chunk}:2:")), "{err}");
        let x = fx.script("x").unwrap();
        assert_eq!((x.version, pattern_of(&x)), (1, "^v1$"));

        fx.write("buttons/x.lua", &button("^v3$"));
        fx.wait("fixed", |r| r.status().iter().all(|s| s.last_error.is_none()));
        let x = fx.script("x").unwrap();
        assert_eq!((x.version, pattern_of(&x)), (2, "^v3$"));
    }

    #[test]
    fn lib_change_reloads_everything() {
        let fx = fixture(&[
            ("lib/pats.lua", "return { x = '^old$' }\n"),
            (
                "buttons/x.lua",
                "return { match = require('pats').x, run = function() end }\n",
            ),
        ]);
        assert_eq!(pattern_of(&fx.script("x").unwrap()), "^old$");
        fx.write("lib/.pats.lua.tmp", "return { x = '^new$' }\n");
        std::fs::rename(fx.path("lib/.pats.lua.tmp"), fx.path("lib/pats.lua")).unwrap();
        fx.wait("new pattern", |r| {
            r.get(ScriptKind::Button, "x").is_some_and(|f| {
                f.meta
                    == ScriptMeta::Button {
                        pattern: "^new$".into(),
                        anyone: false,
                    }
            })
        });
        assert_eq!(fx.script("x").unwrap().version, 2);
    }

    #[test]
    fn new_folder_and_removed_folder() {
        let fx = fixture(&[("buttons/x.lua", &button("^x$"))]);
        std::fs::create_dir(fx.path("templates")).unwrap();
        fx.write("templates/t.lua", "return function() end");
        fx.wait("template", |r| r.get(ScriptKind::Template, "t").is_some());
        std::fs::rename(fx.path("buttons"), fx.dir.parent().unwrap().join("old_buttons")).unwrap();
        fx.wait("buttons gone", |r| r.get(ScriptKind::Button, "x").is_none());
        assert!(fx.registry.read().unwrap().get(ScriptKind::Template, "t").is_some());
    }

    #[test]
    fn stop_stops_watching() {
        let mut fx = fixture(&[]);
        fx.watcher.take().unwrap().stop();
        fx.write("buttons/late.lua", &button("^late$"));
        std::thread::sleep(DEBOUNCE * 3);
        assert!(fx.script("late").is_none());
        assert!(fx.reports.lock().unwrap().is_empty());
    }

    #[test]
    fn reload_all_keeps_failures_and_drops_vanished() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("scripts");
        std::fs::create_dir_all(dir.join("buttons")).unwrap();
        std::fs::write(dir.join("buttons/a.lua"), button("^a1$")).unwrap();
        std::fs::write(dir.join("buttons/b.lua"), button("^b1$")).unwrap();
        let registry: SharedRegistry = Arc::new(RwLock::new(Registry::new()));
        let r = reload_all(&dir, &registry, Limits::default());
        assert_eq!((r.loaded.len(), r.removed.len(), r.errors.len()), (2, 0, 0));

        std::fs::write(dir.join("buttons/a.lua"), "return {").unwrap();
        std::fs::remove_file(dir.join("buttons/b.lua")).unwrap();
        std::fs::write(dir.join("on_message.lua"), "return { run = function() end }").unwrap();
        let r = reload_all(&dir, &registry, Limits::default());
        assert_eq!(r.loaded, [dir.join("on_message.lua")]);
        assert_eq!(r.removed, [dir.join("buttons/b.lua")]);
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].path, dir.join("buttons/a.lua"));
        let reg = registry.read().unwrap();
        let a = reg.get(ScriptKind::Button, "a").unwrap();
        assert_eq!((a.version, pattern_of(a)), (1, "^a1$"));
        assert!(reg.get(ScriptKind::Button, "b").is_none());
        drop(reg);

        // An unreadable scripts dir removes nothing.
        let r = reload_all(&tmp.path().join("missing"), &registry, Limits::default());
        assert_eq!(r.errors.len(), 1);
        assert_eq!(registry.read().unwrap().all().count(), 2);
    }
}
