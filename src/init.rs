//! `walua init DIR`: a fresh install layout.
//!
//! ```text
//! DIR/walua.toml                 the commented example configuration (dry run), with the
//!                                store and scripts paths pointing into DIR
//! DIR/scripts/                   the default scripts shipped with this build
//!   buttons/ scenarios/ templates/ hooks/ cron/ lib/
//!   on_message.lua README.md
//!   types/walua.lua .luarc.json  type definitions for the Lua language server
//! DIR/templates/                 the shipped message template definitions (TOML) and their
//!                                schema, beside the scripts
//! ```
//!
//! Existing files are never overwritten unless `force` is set: the whole init is refused
//! before anything is written, with the list of files in the way.

use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/default_scripts.rs"));

/// The script folders every install has (some may ship empty).
pub const SCRIPT_DIRS: [&str; 7] = ["buttons", "scenarios", "templates", "hooks", "cron", "lib", "types"];

/// Why `walua init` did nothing (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Files would be overwritten and `--force` was not given.
    #[error(
        "{} already exist(s) in {}: {}; nothing was written (use --force to overwrite them)",
        .files.len(), .dir.display(), .files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Exists {
        /// The target directory.
        dir: PathBuf,
        /// The files in the way, relative to it.
        files: Vec<PathBuf>,
    },
    /// Writing failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// What could not be written.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What `init` wrote.
#[derive(Debug)]
pub struct InitReport {
    /// The configuration file.
    pub config: PathBuf,
    /// Every file written, relative to the target directory.
    pub written: Vec<PathBuf>,
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The example configuration with the store at `store` and the scripts at `scripts`.
pub fn config_text(store: &Path, scripts: &Path) -> String {
    let mut out = String::new();
    for line in crate::config::EMBEDDED_CONFIG.lines() {
        let t = line.trim_start();
        if t.starts_with("path = \"var/walua.redb\"") {
            out.push_str(&format!("path = {}", toml_string(&store.display().to_string())));
        } else if t.starts_with("dir = \"scripts\"") {
            out.push_str(&format!(
                "dir = {}                                    # the Lua scripts (see scripts/README.md)",
                toml_string(&scripts.display().to_string())
            ));
        } else if t.starts_with("dir = \"templates\"") {
            out.push_str(&format!(
                "dir = {}                                    # message template definitions (see templates/README.md)",
                toml_string(&scripts.with_file_name("templates").display().to_string())
            ));
        } else if t.starts_with("# Relative paths are relative to the directory walua is started from.") {
            out.push_str(line);
            out.push_str("\n# Written by `walua init`: the store and scripts paths below are absolute.");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Creates the layout in `dir` (created when missing). `store` overrides the store path
/// (default `DIR/var/walua.redb`). Refuses to overwrite any file unless `force`.
pub fn init(dir: &Path, store: Option<&Path>, force: bool) -> Result<InitReport, InitError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InitError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dir = dir.canonicalize().map_err(io(dir))?;
    let store = store
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join("var").join("walua.redb"));
    let scripts = dir.join("scripts");

    let mut files: Vec<(PathBuf, Vec<u8>)> =
        vec![(PathBuf::from("walua.toml"), config_text(&store, &scripts).into_bytes())];
    for (rel, bytes) in DEFAULT_SCRIPTS {
        files.push((Path::new("scripts").join(rel), bytes.to_vec()));
    }
    for (rel, bytes) in DEFAULT_TEMPLATES {
        files.push((Path::new("templates").join(rel), bytes.to_vec()));
    }
    if !force {
        let existing: Vec<PathBuf> = files
            .iter()
            .filter(|(rel, _)| dir.join(rel).exists())
            .map(|(rel, _)| rel.clone())
            .collect();
        if !existing.is_empty() {
            return Err(InitError::Exists { dir, files: existing });
        }
    }
    for sub in SCRIPT_DIRS {
        let d = scripts.join(sub);
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    let mut written = Vec::new();
    for (rel, bytes) in files {
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, bytes).map_err(io(&path))?;
        written.push(rel);
    }
    Ok(InitReport {
        config: dir.join("walua.toml"),
        written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ships_the_types_and_an_on_message_script() {
        let names: Vec<&str> = DEFAULT_SCRIPTS.iter().map(|(n, _)| *n).collect();
        for needed in ["on_message.lua", "README.md", "types/walua.lua", ".luarc.json"] {
            assert!(names.contains(&needed), "{needed} not embedded: {names:?}");
        }
    }

    #[test]
    fn the_generated_configuration_is_valid() {
        let text = config_text(Path::new("/srv/w a\"lua/var/x.redb"), Path::new("/srv/scripts"));
        let c = crate::Config::from_toml(Path::new("walua.toml"), &text).unwrap();
        assert_eq!(c.store.path, Path::new("/srv/w a\"lua/var/x.redb"));
        assert_eq!(c.scripts.dir, Path::new("/srv/scripts"));
        assert!(c.whatsapp.dry_run);
    }
}
