//! Operations: `/metrics` moves with the work done, `/healthz` tells the truth, and
//! `walua init` lays out a fresh install.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::fake_graph::{FakeGraph, Scripted};
use support::*;

/// Reads one sample (`name` or `name{labels}`) from a Prometheus text exposition; 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

async fn metrics(d: &TestDaemon) -> String {
    let r = d.http.get(d.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.unwrap()
}

/// Polls `/metrics` until `series` reaches at least `want`.
async fn metric_reaches(d: &TestDaemon, series: &str, want: f64) -> String {
    d.eventually(&format!("{series} >= {want}"), || async {
        let text = metrics(d).await;
        (sample(&text, series) >= want).then_some(text)
    })
    .await
}

const ON_MESSAGE: &str = r#"
return {
  run = function(msg)
    if msg.text == "boom" then error("boom on purpose") end
    env.whatsapp.send_text(msg.from, "Bien reçu")
  end,
}
"#;

#[tokio::test]
async fn metrics_move_with_deliveries_sends_and_script_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/on_message.lua"), ON_MESSAGE).unwrap();
    let text = config_text(dir.path(), DRY_RUN, "");
    let d = TestDaemon::start_in(dir, text).await;

    let before = metrics(&d).await;
    for series in [
        "walua_webhook_deliveries_total{result=\"accepted\"}",
        "walua_webhook_deliveries_total{result=\"bad_signature\"}",
        "walua_outbox_depth",
        "walua_outbox_retries_total",
        "walua_health",
    ] {
        assert!(before.contains(series), "{series} is exposed from the start:\n{before}");
        assert_eq!(sample(&before, series), 0.0);
    }

    // A delivery: accepted, one inbound text, the on_message script runs and replies (dry run).
    d.deliver_ok(&text_delivery("221770000001", "wamid.OPS.1", "Bonjour", now() - 5))
        .await;
    let m = metric_reaches(&d, "walua_script_runs_total{script=\"on_message\"}", 1.0).await;
    assert_eq!(sample(&m, "walua_webhook_deliveries_total{result=\"accepted\"}"), 1.0);
    assert_eq!(sample(&m, "walua_messages_in_total{type=\"text\"}"), 1.0);
    assert_eq!(sample(&m, "walua_ingest_seconds_count"), 1.0);
    assert!(sample(&m, "walua_script_seconds_count") >= 1.0);
    assert_eq!(sample(&m, "walua_script_errors_total{script=\"on_message\"}"), 0.0);
    let m = metric_reaches(
        &d,
        "walua_messages_out_total{type=\"text\",status=\"dry_run\",number=\"1234567890\"}",
        1.0,
    )
    .await;

    // A redelivery of the same wamid is accepted but is no new message.
    d.deliver_ok(&text_delivery("221770000001", "wamid.OPS.1", "Bonjour", now() - 5))
        .await;
    d.settled().await;
    let m2 = metrics(&d).await;
    assert_eq!(sample(&m2, "walua_webhook_deliveries_total{result=\"accepted\"}"), 2.0);
    assert_eq!(sample(&m2, "walua_messages_in_total{type=\"text\"}"), 1.0);

    // Refused deliveries are counted by result.
    let r = d
        .http
        .post(d.url("/webhook"))
        .header("x-hub-signature-256", "sha256=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = d.deliver(b"[1,2]").await;
    assert_eq!(r.status(), 400);
    let r = d.deliver(&vec![b' '; 70_000]).await;
    assert_eq!(r.status(), 413);
    let m2 = metrics(&d).await;
    assert_eq!(
        sample(&m2, "walua_webhook_deliveries_total{result=\"bad_signature\"}"),
        1.0
    );
    assert_eq!(
        sample(&m2, "walua_webhook_deliveries_total{result=\"invalid_json\"}"),
        1.0
    );
    assert_eq!(sample(&m2, "walua_webhook_deliveries_total{result=\"too_large\"}"), 1.0);

    // A send through the admin API.
    let (status, body) = d
        .api_post(
            "/api/messages",
            &json!({"to": "221770000001", "type": "text", "text": "Votre commande"}),
        )
        .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let before_dry = sample(
        &m,
        "walua_messages_out_total{type=\"text\",status=\"dry_run\",number=\"1234567890\"}",
    );
    metric_reaches(
        &d,
        "walua_messages_out_total{type=\"text\",status=\"dry_run\",number=\"1234567890\"}",
        before_dry + 1.0,
    )
    .await;

    // A failing script run is counted as an error.
    d.deliver_ok(&text_delivery("221770000001", "wamid.OPS.2", "boom", now() - 4))
        .await;
    let m3 = metric_reaches(&d, "walua_script_errors_total{script=\"on_message\"}", 1.0).await;
    assert_eq!(sample(&m3, "walua_script_runs_total{script=\"on_message\"}"), 2.0);
}

#[tokio::test]
async fn live_sends_count_sent_failed_retries_and_time() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let d = TestDaemon::start_live(&fake.url(), "allow_outside_window = true").await;
    fake.push_response(Scripted::Status(500));
    let send = |text: &str| json!({"to": "221770000009", "type": "text", "text": text});
    let (status, body) = d.api_post("/api/messages", &send("un")).await;
    assert!(status < 300, "{status} {body}");
    let m = metric_reaches(
        &d,
        "walua_messages_out_total{type=\"text\",status=\"sent\",number=\"1234567890\"}",
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &m,
            "walua_messages_out_total{type=\"text\",status=\"queued\",number=\"1234567890\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&m, "walua_outbox_retries_total"),
        1.0,
        "the 500 was retried:\n{m}"
    );
    assert_eq!(sample(&m, "walua_send_seconds_count"), 2.0);

    fake.push_response(Scripted::MetaError {
        http: 400,
        code: 131026,
        message: "Message undeliverable".into(),
        details: "test".into(),
    });
    d.api_post("/api/messages", &send("deux")).await;
    metric_reaches(
        &d,
        "walua_messages_out_total{type=\"text\",status=\"failed\",number=\"1234567890\"}",
        1.0,
    )
    .await;
    // The depth is read from the store before the counters are encoded: a scrape taken while
    // the failure was being committed shows the job still there. The next one does not.
    d.eventually("an empty outbox", || async {
        (sample(&metrics(&d).await, "walua_outbox_depth") == 0.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn healthz_reports_a_stuck_outbox() {
    // A job queued (live) and overdue by 11 minutes, then a daemon that never works it
    // (dry run has no outbox worker).
    let dir = tempfile::tempdir().unwrap();
    {
        let store = walua::store::Store::open(&dir.path().join("walua.redb")).unwrap();
        let outbox = walua::outbox::Outbox::new(store.clone(), Default::default(), false, true);
        let req: walua::outbox::SendRequest =
            serde_json::from_value(json!({"to": "221770000042", "type": "text", "text": "en attente"})).unwrap();
        let m = outbox.enqueue_blocking(&req, "test").unwrap();
        store
            .outbox_retry(m.id, now() * 1000 - 11 * 60 * 1000, "test: overdue".into())
            .unwrap();
    }
    let text = config_text(dir.path(), DRY_RUN, "");
    let d = TestDaemon::start_in(dir, text).await;
    let r = d.http.get(d.url("/healthz")).send().await.unwrap();
    // A stuck outbox degrades walua (200); it is not failing: it still takes deliveries.
    assert_eq!(r.status(), 200);
    let h: serde_json::Value = r.json().await.unwrap();
    assert_eq!(h["status"], "degraded");
    let problems = h["problems"].to_string();
    assert!(problems.contains("outbox stuck"), "{h}");
    assert!(problems.contains("221770000042"), "{h}");
    assert_eq!(h["store"], "writable");
    assert_eq!(h["outbox_depth"], 1);
    let m = metrics(&d).await;
    assert_eq!(sample(&m, "walua_outbox_depth"), 1.0);
}

#[tokio::test]
async fn healthz_is_ok_and_reports_scripts_and_backlog() {
    let d = TestDaemon::start().await;
    std::fs::create_dir_all(d.dir.path().join("scripts/buttons")).unwrap();
    std::fs::write(d.dir.path().join("scripts/buttons/bad.lua"), "return {").unwrap();
    let h = d
        .eventually("the broken script is reported", || async {
            let (status, h) = d.api("/healthz").await;
            (h["scripts"]["errors"] == 1).then_some((status, h))
        })
        .await;
    assert_eq!(
        h.0, 200,
        "a broken script is reported, not a reason to restart: {}",
        h.1
    );
    // A script that does not load degrades walua; it is not failing.
    assert_eq!(h.1["status"], "degraded");
    assert!(h.1["problems"].to_string().contains("failed to load"), "{}", h.1);
    assert_eq!(h.1["journal_backlog"], 0);
    assert!(h.1["scripts"]["last_errors"][0].as_str().unwrap().contains("bad.lua"));
}

fn walua(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_walua"))
        .args(args)
        .env_remove("WALUA_CONFIG")
        .output()
        .expect("walua runs")
}

#[test]
fn init_lays_out_a_fresh_install_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("install");
    let out = walua(&["init", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in [
        "walua.toml",
        "scripts/on_message.lua",
        "scripts/README.md",
        "scripts/types/walua.lua",
        "scripts/.luarc.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    for sub in ["buttons", "scenarios", "templates", "hooks", "cron", "lib"] {
        assert!(dir.join("scripts").join(sub).is_dir(), "scripts/{sub} missing");
    }
    assert_eq!(
        std::fs::read(dir.join("scripts/types/walua.lua")).unwrap(),
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/types/walua.lua")).unwrap()
    );

    // The configuration is valid and points into the install.
    let config = walua::Config::load(&dir.join("walua.toml")).unwrap();
    let canon = dir.canonicalize().unwrap();
    assert_eq!(config.store.path, canon.join("var/walua.redb"));
    assert_eq!(config.scripts.dir, canon.join("scripts"));
    assert!(config.whatsapp.dry_run);
    let out = walua(&["check", "--config", dir.join("walua.toml").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // A second init refuses, names the files and writes nothing.
    std::fs::write(
        dir.join("scripts/on_message.lua"),
        "-- mine\nreturn { run = function() end }\n",
    )
    .unwrap();
    let out = walua(&["init", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exist") && err.contains("--force"), "{err}");
    assert!(err.contains("walua.toml") && err.contains("on_message.lua"), "{err}");
    assert!(
        std::fs::read_to_string(dir.join("scripts/on_message.lua"))
            .unwrap()
            .starts_with("-- mine")
    );

    // --force overwrites; --store puts the store elsewhere.
    let store = tmp.path().join("state/walua.redb");
    let out = walua(&[
        "init",
        dir.to_str().unwrap(),
        "--force",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !std::fs::read_to_string(dir.join("scripts/on_message.lua"))
            .unwrap()
            .starts_with("-- mine")
    );
    assert_eq!(walua::Config::load(&dir.join("walua.toml")).unwrap().store.path, store);
}

#[tokio::test]
async fn the_shipped_on_message_script_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    walua::init::init(dir.path(), None, false).unwrap();
    let text = config_text(dir.path(), DRY_RUN, "");
    let d = TestDaemon::start_in(dir, text).await;
    let (_, h) = d.api("/healthz").await;
    let shipped = ["buttons", "scenarios", "templates", "hooks", "cron"]
        .iter()
        .map(|k| {
            std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(k))
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.path().extension().is_some_and(|x| x == "lua"))
                        .count()
                })
                .unwrap_or(0)
        })
        .sum::<usize>()
        + 1; // on_message.lua
    assert_eq!(h["scripts"]["loaded"], shipped, "{h}");
    assert_eq!(h["scripts"]["errors"], 0, "{h}");
    d.deliver_ok(&text_delivery("221770000003", "wamid.OPS.INIT", "Salut", now() - 5))
        .await;
    let m = metric_reaches(&d, "walua_script_runs_total{script=\"on_message\"}", 1.0).await;
    assert_eq!(sample(&m, "walua_script_errors_total{script=\"on_message\"}"), 0.0);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
