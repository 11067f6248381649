//! Embeds the default scripts (`scripts/`) and template definitions (`templates/`) for `walua init`.

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

fn main() {
    let mut code = String::new();
    embed(&mut code, "scripts", "DEFAULT_SCRIPTS");
    embed(&mut code, "templates", "DEFAULT_TEMPLATES");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("default_scripts.rs");
    std::fs::write(out, code).expect("OUT_DIR is writable");
}
