//! Odoo in the health check and the metrics: an Odoo that cannot be reached degrades walua
//! (200, with the reason) and shows in `walua_odoo_up`; every call is counted by model and
//! method; once Odoo answers again, walua is ok.

mod support;

use support::fake_odoo::FakeOdoo;
use support::*;

const AWA: &str = "221771234567";
const KEY: &str = "odoo-api-key-health";

const LOOKUP: &str = r#"
return {
  run = function(msg)
    local ok, rows = pcall(env.odoo.search_read, "res.partner", {}, { "name" }, { limit = 1 })
    env.whatsapp.send_text(msg.from, ok and "trouvé" or "Odoo indisponible")
  end,
}
"#;

async fn metrics(d: &TestDaemon) -> String {
    metrics_at(&d.http, &d.url("")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_odoo_degrades_health_and_shows_in_the_metrics() {
    let down = format!("http://127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    put_script(dir.path(), "on_message.lua", LOOKUP);
    let section = format!(
        "[odoo]\nurl = \"{down}\"\ndb = \"db\"\nlogin = \"bot\"\napi_key = \"{KEY}\"\ntimeout = \"2s\"\npoll_interval = \"1h\"\npartners = false\n"
    );
    let text = config_text(dir.path(), DRY_RUN, &section);
    let d = TestDaemon::start_in(dir, text).await;
    d.deliver_ok(&text_delivery(AWA, "wamid.H1", "facture", now())).await;
    d.dispatched(AWA, "wamid.H1").await;
    let (code, h) = d.api("/healthz").await;
    assert_eq!(code, 200, "Odoo down degrades walua, it does not fail it: {h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["problems"].to_string().contains("Odoo unreachable"), "{h}");
    assert!(!h.to_string().contains(KEY), "no secret in /healthz");
    let m = metrics(&d).await;
    assert!(m.contains("walua_odoo_up 0"), "{m}");
    assert!(
        m.contains("walua_odoo_errors_total{model=\"res.partner\",method=\"search_read\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_odoo_that_answers_is_ok_and_counted() {
    let odoo = FakeOdoo::start(KEY, "unused-password").await;
    let dir = tempfile::tempdir().unwrap();
    put_script(dir.path(), "on_message.lua", LOOKUP);
    let section = format!(
        "[odoo]\nurl = \"{}\"\ndb = \"{}\"\nlogin = \"{}\"\napi_key = \"{KEY}\"\npoll_interval = \"1h\"\npartners = false\n",
        odoo.url(),
        odoo.db(),
        odoo.login()
    );
    let text = config_text(dir.path(), DRY_RUN, &section);
    let d = TestDaemon::start_in(dir, text).await;
    d.deliver_ok(&text_delivery(AWA, "wamid.H2", "facture", now())).await;
    d.dispatched(AWA, "wamid.H2").await;
    let (code, h) = d.api("/healthz").await;
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")), "{h}");
    let m = metrics(&d).await;
    assert!(m.contains("walua_odoo_up 1"), "{m}");
    assert!(
        m.contains("walua_odoo_calls_total{model=\"res.partner\",method=\"search_read\"} 1"),
        "{m}"
    );
    assert!(m.contains("walua_odoo_seconds_count 1"), "{m}");
}

#[test]
fn walua_check_logs_in_to_odoo_unless_offline() {
    let dir = tempfile::tempdir().unwrap();
    let down = format!("http://127.0.0.1:{}", free_port());
    let section =
        format!("[odoo]\nurl = \"{down}\"\ndb = \"db\"\nlogin = \"bot\"\napi_key = \"{KEY}\"\ntimeout = \"2s\"\n");
    put_script(dir.path(), "on_message.lua", LOOKUP);
    let conf = dir.path().join("walua.toml");
    std::fs::write(&conf, config_text(dir.path(), DRY_RUN, &section)).unwrap();
    let check = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_walua"))
            .arg("--config")
            .arg(&conf)
            .arg("check")
            .args(extra)
            .output()
            .unwrap()
    };
    let out = check(&[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("odoo: cannot log in"), "{text}");
    assert!(!text.contains(KEY), "{text}");
    let out = check(&["--offline"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("not contacted (--offline)"), "{text}");
}
