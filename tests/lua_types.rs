//! `scripts/types/walua.lua` (the LuaLS type definitions) must describe the API the runtime
//! really exposes, field for field, in both directions.
//!
//! A daemon runs an `on_message.lua` that walks `env`, its sub-tables, `message`, `contact`
//! and `logger` with `pairs()` and stores the key lists through `env.store.set`; messages of
//! several types make every optional field appear at least once. The union of the keys seen
//! is compared with the `---@field` declarations of the meta file.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::*;

const META: &str = include_str!("../scripts/types/walua.lua");

/// Meta class → the runtime table it describes.
const CLASSES: [(&str, &str); 8] = [
    ("WaluaEnv", "env"),
    ("WaluaWhatsApp", "env.whatsapp"),
    ("WaluaStore", "env.store"),
    ("WaluaScenario", "env.scenario"),
    ("WaluaOdoo", "env.odoo"),
    ("WaluaMessage", "message"),
    ("WaluaContact", "contact"),
    ("WaluaLogger", "logger"),
];

/// Fields set only in some runs: the partner when Odoo links the contact to one (this daemon
/// has no Odoo; `tests/odoo_chatter.rs` checks them), `opted_out` when the contact asked to
/// stop (`tests/optout.rs`).
const ODOO_ONLY: [(&str, &str); 3] = [
    ("WaluaContact", "partner_id"),
    ("WaluaContact", "partner_name"),
    ("WaluaContact", "opted_out"),
];

/// `---@class Name` → its `---@field` names, in the order written.
fn declared_fields(meta: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in meta.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("---@class ") {
            let name = rest.split_whitespace().next().unwrap().to_string();
            out.entry(name.clone()).or_default();
            current = Some(name);
        } else if let Some(rest) = line.strip_prefix("---@field ") {
            let name = rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('?')
                .to_string();
            let class = current.as_ref().expect("a ---@field belongs to a ---@class");
            out.get_mut(class).unwrap().insert(name);
        } else if !line.starts_with("---") {
            current = None;
        }
    }
    out
}

/// Top-level globals the meta file declares (`name = ...`).
fn declared_globals(meta: &str) -> BTreeSet<String> {
    meta.lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(name, _)| name.trim())
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_string)
        .collect()
}

const WALKER: &str = r#"
local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = tostring(k) end
  table.sort(out)
  return out
end
return {
  run = function(msg)
    env.store.set("keys:" .. msg.id, {
      ["env"] = keys(env),
      ["env.whatsapp"] = keys(env.whatsapp),
      ["env.store"] = keys(env.store),
      ["env.scenario"] = keys(env.scenario),
      ["env.odoo"] = keys(env.odoo),
      ["message"] = keys(message),
      ["contact"] = keys(contact),
      ["logger"] = keys(logger),
      ["globals"] = {
        env = env ~= nil, message = message ~= nil, contact = contact ~= nil,
        logger = logger ~= nil, button_id = button_id ~= nil,
      },
    })
  end,
}
"#;

/// Fixtures whose messages, together, give every optional field a value.
const FIXTURES: [&str; 7] = [
    "text.json",
    "context_reply.json",
    "interactive_button_reply.json",
    "interactive_list_reply.json",
    "image.json",
    "location.json",
    "username_only.json",
];

#[tokio::test]
async fn the_meta_file_matches_the_runtime_api() {
    let declared = declared_fields(META);
    for (class, _) in CLASSES {
        assert!(
            declared.contains_key(class),
            "scripts/types/walua.lua has no ---@class {class}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/on_message.lua"), WALKER).unwrap();
    let text = config_text(dir.path(), DRY_RUN, "");
    let d = TestDaemon::start_in(dir, text).await;
    let mut wamids = Vec::new();
    for f in FIXTURES {
        let body = fixture(f);
        for entry in body["entry"].as_array().unwrap() {
            for change in entry["changes"].as_array().unwrap() {
                for m in change["value"]["messages"].as_array().into_iter().flatten() {
                    wamids.push(m["id"].as_str().unwrap().to_string());
                }
            }
        }
        d.deliver_ok(&body).await;
    }
    d.settled().await;
    // Every message's scripts ran (their outcome is committed with the kv writes).
    let store_path = d.store_path();
    d.eventually("every message dispatched", || {
        let http = d.http.clone();
        let url = d.url("/metrics");
        let n = wamids.len() as f64;
        async move {
            let text = http.get(url).send().await.ok()?.text().await.ok()?;
            let runs: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("walua_script_runs_total{script=\"on_message\"} "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0);
            (runs >= n).then_some(())
        }
    })
    .await;
    let (dir, _) = d.stop().await;
    let store = walua::store::Store::open(&store_path).unwrap();

    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut globals: BTreeSet<String> = BTreeSet::new();
    for wamid in &wamids {
        let v = store
            .kv_get(&format!("keys:{wamid}"))
            .unwrap()
            .unwrap_or_else(|| panic!("no key list for {wamid}: did on_message run?"));
        for (_, table) in CLASSES {
            let names = v[table].as_array().cloned().unwrap_or_default();
            seen.entry(table.to_string())
                .or_default()
                .extend(names.iter().map(|n| n.as_str().unwrap().to_string()));
        }
        for (name, present) in v["globals"].as_object().unwrap() {
            if present.as_bool() == Some(true) {
                globals.insert(name.clone());
            }
        }
    }
    drop(dir);

    let mut problems = Vec::new();
    for (class, table) in CLASSES {
        let meta = &declared[class];
        let real = &seen[table];
        for missing in real.difference(meta) {
            problems.push(format!(
                "`{table}.{missing}` exists in the runtime but ---@class {class} has no ---@field {missing}"
            ));
        }
        for extra in meta.difference(real) {
            if ODOO_ONLY.contains(&(class, extra.as_str())) {
                continue;
            }
            problems.push(format!(
                "---@class {class} declares `{extra}`, which the runtime never exposes in `{table}`"
            ));
        }
    }
    let meta_globals = declared_globals(META);
    for g in &meta_globals {
        if !globals.contains(g) {
            problems.push(format!("global `{g}` is declared but was never set in a run"));
        }
    }
    for g in &globals {
        if !meta_globals.contains(g) {
            problems.push(format!("global `{g}` is set in runs but not declared"));
        }
    }
    assert!(
        problems.is_empty(),
        "scripts/types/walua.lua is out of sync with src/script/runtime.rs:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn script_kind_classes_match_the_fields_the_registry_accepts() {
    // The registry rejects unknown fields of scenario steps and buttons: the lists it accepts
    // are the classes' fields.
    let registry = include_str!("../src/script/registry.rs");
    let declared = declared_fields(META);
    let accepted = |needle: &str| -> BTreeSet<String> {
        let start = registry
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} not in registry.rs"));
        let list = &registry[start + needle.len()..];
        let list = &list[..list.find(']').unwrap()];
        list.split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    assert_eq!(declared["ScenarioStep"], accepted("known_fields(st, &["));
    assert_eq!(declared["ScenarioButton"], accepted("known_fields(&bt, &["));
    for (class, fields) in [
        ("ButtonScript", &["match", "anyone", "run"][..]),
        ("ScenarioScript", &["start", "expires", "steps"]),
        ("HookScript", &["model", "on", "fields", "domain", "initial", "run"]),
        ("CronScript", &["schedule", "timezone", "run"]),
        ("OnMessageScript", &["run"]),
    ] {
        let want: BTreeSet<String> = fields.iter().map(|s| s.to_string()).collect();
        assert_eq!(declared[class], want, "---@class {class}");
        for f in fields {
            assert!(
                registry.contains(&format!("get(t, \"{f}\")")) || registry.contains(&format!("get(&t, \"{f}\")")),
                "the registry does not read `{f}` of a {class}"
            );
        }
    }
}
