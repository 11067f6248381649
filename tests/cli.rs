//! `walua check` and `walua replay`, run as an operator would.

mod support;

use std::process::Command;

use support::*;

fn walua(conf: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_walua"))
        .arg("--config")
        .arg(conf)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_reports_every_broken_script_with_file_and_line_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    put_script(
        dir.path(),
        "buttons/good.lua",
        "return { match = '^ok$', anyone = true, run = function() end }",
    );
    put_script(
        dir.path(),
        "buttons/syntax.lua",
        "return { match = '^x$',\n run = function( end }",
    );
    put_script(dir.path(), "buttons/shape.lua", "return { match = '^x$' }");
    put_script(
        dir.path(),
        "cron/bad_schedule.lua",
        "return { schedule = 'every day', run = function() end }",
    );
    let conf = dir.path().join("walua.toml");
    std::fs::write(&conf, config_text(dir.path(), DRY_RUN, "")).unwrap();
    let out = walua(&conf, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("buttons/syntax.lua:2:"), "{stdout}");
    assert!(stdout.contains("buttons/shape.lua"), "{stdout}");
    assert!(stdout.contains("cron/bad_schedule.lua"), "{stdout}");
    assert!(stdout.contains("1 script(s) loaded, 3 error(s)"), "{stdout}");

    std::fs::remove_file(dir.path().join("scripts/buttons/syntax.lua")).unwrap();
    std::fs::remove_file(dir.path().join("scripts/buttons/shape.lua")).unwrap();
    std::fs::remove_file(dir.path().join("scripts/cron/bad_schedule.lua")).unwrap();
    let out = walua(&conf, &["check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn check_names_the_config_key_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("walua.toml");
    std::fs::write(&conf, "[whatsapp]\ndry_run = false\n").unwrap();
    let out = walua(&conf, &["check"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("walua.toml") && stdout.contains("whatsapp.phone_number_id"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_graph_api_version_near_its_end_is_reported_by_check_healthz_and_the_log() {
    // Meta retires v21.0 on 2027-01-21 (two years after v22.0); walua warns 60 days before.
    let retiring = chrono::NaiveDate::from_ymd_opt(2027, 1, 21).unwrap() - chrono::Utc::now().date_naive();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("walua.toml");
    let text = config_text(
        dir.path(),
        &format!("{DRY_RUN}\napi_base = \"https://graph.facebook.com/v21.0\""),
        "",
    );
    std::fs::write(&conf, &text).unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    let out = walua(&conf, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "a warning, not an error: {stdout}");
    let d = TestDaemon::start_in(dir, text).await;
    let (_, health) = d.api("/healthz").await;
    if retiring.num_days() < 60 {
        assert!(stdout.contains("warning: Graph API v21.0 stop"), "{stdout}");
        assert_eq!(health["status"], "degraded", "{health}");
        assert!(
            health["problems"].to_string().contains("Graph API v21.0 stop"),
            "{health}"
        );
    }
    // The default version is current.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("walua.toml");
    std::fs::write(&conf, config_text(dir.path(), DRY_RUN, "")).unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    let out = walua(&conf, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !stdout.contains("Graph API"), "{stdout}");
}

#[test]
fn replay_shows_what_would_be_stored_and_sent_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    put_script(
        dir.path(),
        "buttons/validate_order.lua",
        "return { match = '^btn_validate_order_(%d+)$', anyone = true, run = function(id) env.whatsapp.send_text(message.from, 'Commande ' .. id .. ' validée') end }",
    );
    let conf = dir.path().join("walua.toml");
    std::fs::write(
        &conf,
        config_text(
            dir.path(),
            "dry_run = false\napi_base = \"http://127.0.0.1:9\"\nallow_outside_window = true",
            "",
        ),
    )
    .unwrap();
    let payload =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks/interactive_button_reply.json");
    let out = walua(&conf, &["replay", payload.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["stored"][0]["summary"],
        "[button] Valider (btn_validate_order_42)"
    );
    assert_eq!(report["scripts"][0]["scripts"][0], "buttons/validate_order");
    assert_eq!(report["would_send"][0]["body"]["text"]["body"], "Commande 42 validée");
    assert_eq!(report["would_send"][0]["body"]["to"], "221771234567");
    assert!(!dir.path().join("walua.redb").exists(), "the store was not created");

    // With an existing store: it is left byte for byte as it was.
    walua::store::Store::open(&dir.path().join("walua.redb")).unwrap();
    let before = std::fs::read(dir.path().join("walua.redb")).unwrap();
    let out = walua(&conf, &["replay", payload.to_str().unwrap()]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["on_store_copy"], true);
    assert_eq!(std::fs::read(dir.path().join("walua.redb")).unwrap(), before);

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{oops").unwrap();
    let out = walua(&conf, &["replay", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));
}

#[test]
fn version_names_the_commit_and_the_lua_and_redb_versions() {
    let out = Command::new(env!("CARGO_BIN_EXE_walua"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], concat!("walua ", env!("CARGO_PKG_VERSION")), "{text}");
    assert!(lines[1].starts_with("commit: "), "{text}");
    assert!(lines[2].starts_with("Lua:    5.4."), "{text}");
    assert!(lines[3].starts_with("redb:   "), "{text}");
    // -V: one line, the version and the commit.
    let short = Command::new(env!("CARGO_BIN_EXE_walua")).arg("-V").output().unwrap();
    let short = String::from_utf8(short.stdout).unwrap();
    assert!(
        short.starts_with(concat!("walua ", env!("CARGO_PKG_VERSION"), " (")),
        "{short}"
    );
    assert_eq!(short.lines().count(), 1, "{short}");
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions_and_hide_the_packaging_commands() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_walua")).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "walua {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("complete -F _walua"), "{bash}");
    assert!(bash.contains("templates") && bash.contains("--offline"), "{bash}");
    assert!(run(&["completions", "zsh"]).starts_with("#compdef walua"));
    let fish = run(&["completions", "fish"]);
    assert!(fish.contains("complete -c walua") && fish.contains("serve"), "{fish}");
    assert!(!fish.contains("completions") && !fish.contains("mangen"), "{fish}");

    let man = run(&["man"]);
    assert!(man.contains(".TH walua 1"), "{man}");
    assert!(man.contains("serve") && !man.contains("completions"), "{man}");
    let dir = tempfile::tempdir().unwrap();
    run(&["man", "--dir", dir.path().to_str().unwrap()]);
    let serve = std::fs::read_to_string(dir.path().join("walua-serve.1")).unwrap();
    assert!(serve.contains(".TH walua-serve 1"), "{serve}");
    assert!(dir.path().join("walua-templates.1").exists());
    assert!(!dir.path().join("walua-man.1").exists());
}
