//! Embeds the default scripts (`scripts/`) and template definitions (`templates/`) for `walua init`,
//! and sets what `walua --version` prints: `WALUA_GIT_COMMIT`, `WALUA_LUA_VERSION`,
//! `WALUA_LUA_SRC_VERSION` and `WALUA_REDB_VERSION`.

use std::fmt::Write;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with('~') || name.ends_with(".swp") || name.starts_with(".#") {
            continue;
        }
        if path.is_dir() {
            walk(&path, root, out);
        } else if path.is_file() {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, path.canonicalize().expect("file exists")));
        }
    }
}

fn embed(code: &mut String, folder: &str, constant: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    println!("cargo:rerun-if-changed={folder}");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    writeln!(
        code,
        "/// Every file under `{folder}/` at build time: (path relative to {folder}/, contents)."
    )
    .unwrap();
    writeln!(code, "pub const {constant}: &[(&str, &[u8])] = &[").unwrap();
    for (rel, abs) in &files {
        println!("cargo:rerun-if-changed={}", abs.display());
        writeln!(code, "    ({rel:?}, include_bytes!({:?})),", abs.display().to_string()).unwrap();
    }
    code.push_str("];\n");
}

/// The version of package `name` in Cargo.lock (one entry: none of these is duplicated).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let needle = format!("name = {name:?}\n");
    let at = lock.find(&needle)? + needle.len();
    let line = lock[at..].lines().next()?;
    Some(line.strip_prefix("version = ")?.trim_matches('"').to_string())
}

/// `git rev-parse --short HEAD`, when building from walua's own git checkout (not from a
/// tarball, even one unpacked inside another repository). `WALUA_GIT_COMMIT` in the
/// environment wins (a packager building from a tarball knows the commit).
fn git_commit(manifest: &Path) -> String {
    println!("cargo:rerun-if-env-changed=WALUA_GIT_COMMIT");
    if let Ok(c) = std::env::var("WALUA_GIT_COMMIT") {
        return c;
    }
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(manifest)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let ours = git(&["rev-parse", "--show-toplevel"])
        .and_then(|top| Path::new(&top).canonicalize().ok())
        .is_some_and(|top| manifest.canonicalize().is_ok_and(|m| m == top));
    if !ours {
        return "unknown".into();
    }
    // A new commit must reach the binary: rebuild when HEAD or the branch it points to
    // moves. Only for release-like profiles (release, profiling, what the .deb ships): in
    // debug builds every commit would rebuild the whole crate and its ~35 test binaries,
    // so there the commit is the one of the build script's last run, and says so.
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    if release {
        let watch = |p: Option<String>| {
            if let Some(p) = p.map(PathBuf::from).filter(|p| p.exists()) {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        };
        watch(git(&["rev-parse", "--path-format=absolute", "--git-path", "HEAD"]));
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch(git(&["rev-parse", "--path-format=absolute", "--git-path", &branch]));
        }
        watch(git(&[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            "packed-refs",
        ]));
    }
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) if release => c,
        Some(c) => format!("{c} (debug build: may be older than the checkout)"),
        None => "unknown".into(),
    }
}

/// The versions `walua --version` prints besides its own.
fn versions() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("cargo:rustc-env=WALUA_GIT_COMMIT={}", git_commit(manifest));

    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string(manifest.join("Cargo.lock")).unwrap_or_default();
    let unknown = || "unknown".to_string();
    let redb = locked_version(&lock, "redb").unwrap_or_else(unknown);
    println!("cargo:rustc-env=WALUA_REDB_VERSION={redb}");
    let lua_src = locked_version(&lock, "lua-src").unwrap_or_else(unknown);
    println!("cargo:rustc-env=WALUA_LUA_SRC_VERSION={lua_src}");

    // The Lua release (5.4.x) is only in lua.h, of the patched lua-src under vendor/
    // (`[patch.crates-io]` in Cargo.toml); a unit test checks it against the running Lua.
    let mut lua = unknown();
    if let Ok(entries) = std::fs::read_dir(manifest.join("vendor/lua-src")) {
        for e in entries.filter_map(Result::ok) {
            let header = e.path().join("lua.h");
            let Ok(text) = std::fs::read_to_string(&header) else {
                continue;
            };
            println!("cargo:rerun-if-changed={}", header.display());
            let define = |name: &str| {
                text.lines().find_map(|l| {
                    let rest = l.strip_prefix("#define")?.trim_start().strip_prefix(name)?;
                    rest.starts_with([' ', '\t'])
                        .then(|| rest.trim().trim_matches('"').to_string())
                })
            };
            if let (Some(major), Some(minor), Some(release)) = (
                define("LUA_VERSION_MAJOR"),
                define("LUA_VERSION_MINOR"),
                define("LUA_VERSION_RELEASE"),
            ) {
                lua = format!("{major}.{minor}.{release}");
            }
        }
    }
    println!("cargo:rustc-env=WALUA_LUA_VERSION={lua}");
}

fn main() {
    versions();
    let mut code = String::new();
    embed(&mut code, "scripts", "DEFAULT_SCRIPTS");
    embed(&mut code, "templates", "DEFAULT_TEMPLATES");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("default_scripts.rs");
    std::fs::write(out, code).expect("OUT_DIR is writable");
}
