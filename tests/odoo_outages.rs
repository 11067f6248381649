//! Odoo events are never missed nor lost: what the real Odoo 16 did to walua (issue 15),
//! replayed against the fake Odoo, through the real daemon.
//!
//! - a mass change of more records than a poll page in one `write_date` second;
//! - a transaction that commits after a later one (its `write_date` is behind the cursor);
//! - an order created and confirmed between two polls (first sight: its confirmation, no
//!   stale Valider / Annuler);
//! - a media upload answered 500 while an invoice is posted;
//! - a hook script that fails definitely, parked, fixed and replayed;
//! - a customer's tap while Odoo is down: the fallback reply, then the answer, and the
//!   contact's later message waits while other contacts' do not;
//! - a cron run while Odoo is down, retried; `GET /api/cron`, `POST /api/cron/{name}/run`.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::odoo_world::*;
use support::*;

/// A write hook on sale.order that sends "NAME:STATE" for every change it sees.
const ECHO_HOOK: &str = r#"
return { model = "sale.order", on = "write", fields = { "state", "name" },
  run = function(order, previous)
    env.whatsapp.send_text("221771234567", order.name .. ":" .. order.state)
  end }
"#;

/// Only the hooks the test puts there.
fn only_hooks(scripts: &Path, hooks: &[(&str, &str)]) {
    let dir = scripts.join("hooks");
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    for (name, source) in hooks {
        std::fs::write(dir.join(format!("{name}.lua")), source).unwrap();
    }
}

/// Runs the `walua` command against the world's daemon; returns (success, stdout).
async fn walua_cli(w: &World, args: &[&str]) -> (bool, String) {
    w.daemon.cli(args).await
}

fn texts(sent: &[Value]) -> Vec<String> {
    sent.iter().map(body_text).collect()
}

/// Nothing more arrives at the fake Graph API for a while.
async fn no_more_than(w: &World, n: usize) {
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let got = w.graph.accepted();
    assert_eq!(
        got.len(),
        n,
        "{:?}",
        texts(&got.into_iter().map(|(_, b)| b).collect::<Vec<_>>())
    );
}

#[tokio::test]
async fn a_mass_change_of_105_records_in_one_second_fires_each_once_and_later_changes_still_fire() {
    let w = world(true, |s| only_hooks(s, &[("echo", ECHO_HOOK)])).await;
    w.odoo.advance(Duration::from_secs(1));
    // One `create([...])` of 105 quotations: one transaction, one write_date second.
    let ids: Vec<i64> = (0..105)
        .map(|i| {
            w.odoo.insert(
                "sale.order",
                json!({"partner_id": w.partner, "client_order_ref": format!("import-{i}")}),
            )
        })
        .collect();
    let second = |id: i64| w.odoo.get("sale.order", id)["write_date"].clone();
    assert_eq!(second(ids[0]), second(ids[104]), "the fake stamps them in one second");
    let sent = w.sent(105).await;
    let mut names: Vec<String> = texts(&sent);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 105, "each record once");
    // A change after the mass import is still seen.
    w.odoo.advance(Duration::from_secs(1));
    w.odoo.update("sale.order", ids[3], json!({"state": "sale"}));
    let name = w.odoo.get("sale.order", ids[3])["name"].as_str().unwrap().to_string();
    let sent = w.sent(106).await;
    assert_eq!(body_text(&sent[105]), format!("{name}:sale"));
    no_more_than(&w, 106).await;
}

#[tokio::test]
async fn a_change_committed_late_behind_the_cursor_fires_once() {
    let w = world(true, |s| only_hooks(s, &[("echo", ECHO_HOOK)])).await;
    w.odoo.advance(Duration::from_secs(1));
    // A long transaction starts now (Odoo stamps write_date with its start)…
    let started = w.odoo.now();
    // …meanwhile another order is created and committed 6 s later: the cursor moves past.
    w.odoo.advance(Duration::from_secs(6));
    let quick = w.odoo.insert("sale.order", json!({"partner_id": w.partner}));
    let quick_name = w.odoo.get("sale.order", quick)["name"].as_str().unwrap().to_string();
    assert_eq!(texts(&w.sent(1).await), vec![format!("{quick_name}:draft")]);
    // The long transaction commits now, with its start as write_date.
    let now = w.odoo.now();
    w.odoo.set_time(&started);
    let late = w.odoo.insert("sale.order", json!({"partner_id": w.partner}));
    w.odoo.set_time(&now);
    let late_name = w.odoo.get("sale.order", late)["name"].as_str().unwrap().to_string();
    let sent = w.sent(2).await;
    assert_eq!(body_text(&sent[1]), format!("{late_name}:draft"));
    no_more_than(&w, 2).await;
}

#[tokio::test]
async fn a_record_whose_id_commits_after_a_higher_one_still_fires_its_create_hook() {
    let created = r#"
return { model = "sale.order", on = "create", fields = { "name" },
  run = function(order) env.whatsapp.send_text("221771234567", "new:" .. order.name) end }
"#;
    let w = world(true, |s| only_hooks(s, &[("created", created)])).await;
    w.odoo.advance(Duration::from_secs(1));
    // A long transaction takes its order id (the sequence moves at once) and its start time…
    let started = w.odoo.now();
    let late_id = w.odoo.reserve_id("sale.order");
    // …another order, with a higher id, commits first: the cursor moves past the late id.
    w.odoo.advance(Duration::from_secs(4));
    let quick = w.odoo.insert("sale.order", json!({"partner_id": w.partner}));
    assert!(quick > late_id);
    let quick_name = w.odoo.get("sale.order", quick)["name"].as_str().unwrap().to_string();
    assert_eq!(texts(&w.sent(1).await), vec![format!("new:{quick_name}")]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The long transaction commits now.
    let now = w.odoo.now();
    w.odoo.set_time(&started);
    w.odoo
        .insert_reserved("sale.order", late_id, json!({"partner_id": w.partner}));
    w.odoo.set_time(&now);
    let late_name = w.odoo.get("sale.order", late_id)["name"].as_str().unwrap().to_string();
    let sent = w.sent(2).await;
    assert_eq!(body_text(&sent[1]), format!("new:{late_name}"));
    no_more_than(&w, 2).await;
}

#[tokio::test]
async fn an_order_created_and_confirmed_between_two_polls_gets_its_confirmation_not_stale_buttons() {
    let w = world(true, |_| {}).await;
    // Odoo answers nothing while the order is created and confirmed, so that the next poll
    // sees it for the first time already confirmed.
    w.odoo.fail_next(1_000_000);
    let order = w.new_order();
    w.odoo.advance(Duration::from_secs(1));
    w.odoo.update("sale.order", order, json!({"state": "sale"}));
    let name = w.odoo.get("sale.order", order)["name"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(400)).await;
    w.odoo.fail_next(0);
    let sent = w.sent(1).await;
    let all = texts(&sent);
    assert!(
        all[0].starts_with(&format!("Votre commande {name} est maintenant : Confirmée")),
        "first sight: the state hook fires from `initial` (draft): {all:?}"
    );
    no_more_than(&w, 1).await;
    assert!(
        w.graph.accepted().iter().all(|(_, m)| m["type"] != "interactive"),
        "no Valider / Annuler for an order already confirmed"
    );
}

#[tokio::test]
async fn an_invoice_whose_pdf_upload_fails_is_sent_once_the_upload_works() {
    let w = world_with(true, |_| {}, "retry_first = \"300ms\"").await;
    w.graph.fail_uploads(&[500, 503]);
    w.odoo.advance(Duration::from_secs(1));
    let inv = w.odoo.insert(
        "account.move",
        json!({"move_type": "out_invoice", "partner_id": w.partner, "name": "INV/2026/00077", "amount_total": 27000, "amount_residual": 27000}),
    );
    w.odoo.advance(Duration::from_secs(1));
    w.odoo.update("account.move", inv, json!({"state": "posted"}));
    let sent = w.sent(1).await;
    assert_eq!(sent[0]["document"]["filename"], "INV_2026_00077.pdf");
    assert_eq!(w.graph.uploads().len(), 1, "two refused uploads, then one that worked");
    no_more_than(&w, 1).await;
    let (_, all) = w.daemon.api("/api/parked?all=1").await;
    assert_eq!(all["parked"], json!([]), "the retry cleared its entry");
}

#[tokio::test]
async fn a_hook_that_fails_definitely_is_parked_then_replayed_once_fixed() {
    let broken = r#"
return { model = "sale.order", on = "write", fields = { "state", "name" },
  run = function(order) local x = nil; return x.field end }
"#;
    let w = world(true, |s| only_hooks(s, &[("echo", broken)])).await;
    w.odoo.advance(Duration::from_secs(1));
    let order = w.odoo.insert("sale.order", json!({"partner_id": w.partner}));
    let id = format!("hook:echo:{order}");
    let parked = w
        .daemon
        .eventually("the failed run parked", || async {
            let (_, v) = w.daemon.api("/api/parked").await;
            v["parked"].as_array().and_then(|a| a.first().cloned())
        })
        .await;
    assert_eq!(parked["id"], id);
    assert_eq!(parked["transient"], false, "a Lua error is definite: {parked}");
    assert!(
        parked["error"].as_str().unwrap().contains("hooks/echo.lua:3"),
        "{parked}"
    );
    let (_, health) = w.daemon.api("/healthz").await;
    assert_eq!(health["status"], "degraded");
    assert!(health["problems"].to_string().contains(&id), "{health}");
    let base = w.daemon.url("");
    let metrics = metrics_at(&reqwest::Client::new(), base.trim_end_matches('/')).await;
    assert!(metrics.contains("walua_failed_runs{state=\"parked\"} 1"), "{metrics}");
    let (ok, out) = walua_cli(&w, &["parked", "list"]).await;
    assert!(
        ok && out.contains(&id) && out.contains("definite: ") && out.contains("parked"),
        "{out}"
    );
    // It is not run again by itself, nor on the next polls.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(w.graph.accepted().is_empty());

    // The operator fixes the script and replays the event.
    w.daemon.write_script("hooks/echo.lua", ECHO_HOOK);
    let name = w.odoo.get("sale.order", order)["name"].as_str().unwrap().to_string();
    let out = w
        .daemon
        .eventually("the fixed script loaded and the event replayed", || async {
            let (ok, out) = walua_cli(&w, &["parked", "replay", &id]).await;
            assert!(ok || out.contains("failed again"), "{out}");
            ok.then_some(out)
        })
        .await;
    assert!(out.contains("ran, entry cleared"), "{out}");
    assert_eq!(texts(&w.sent(1).await), vec![format!("{name}:draft")]);
    let (_, v) = w.daemon.api("/api/parked?all=1").await;
    assert_eq!(v["parked"], json!([]));
    let (status, _) = w.daemon.api_post(&format!("/api/parked/{id}/replay"), &json!({})).await;
    assert_eq!(status, 404, "replayed once: the entry is gone");
    no_more_than(&w, 1).await;
    let (_, health) = w.daemon.api("/healthz").await;
    assert!(!health["problems"].to_string().contains("parked"), "{health}");
}

#[tokio::test]
async fn a_tap_while_odoo_is_down_gets_the_fallback_then_its_answer_and_holds_only_that_contact() {
    let w = world_with(true, |_| {}, "fallback_after = \"1s\"").await;
    let order = w.new_order();
    let name = w.odoo.get("sale.order", order)["name"].as_str().unwrap().to_string();
    w.sent(1).await;

    w.odoo.fail_next(1_000_000);
    w.daemon
        .deliver_ok(&click_delivery(
            PHONE,
            "wamid.TAP",
            &format!("btn_order_details_{order}"),
            "Voir détail",
        ))
        .await;
    w.daemon
        .deliver_ok(&text_delivery(PHONE, "wamid.AFTER", "Allô ?", now()))
        .await;
    // Another customer is not held.
    let other = "221770000001";
    w.daemon
        .deliver_ok(&text_delivery(other, "wamid.OTHER", "Bonjour", now()))
        .await;
    w.daemon.dispatched(other, "wamid.OTHER").await;

    let sent = w.sent(2).await;
    assert_eq!(sent[1]["to"], PHONE);
    assert_eq!(body_text(&sent[1]), walua::config::FALLBACK_REPLY);
    let held = w.daemon.messages_of(PHONE).await;
    for wamid in ["wamid.TAP", "wamid.AFTER"] {
        let m = held.iter().find(|m| m["wamid"] == wamid).unwrap();
        assert!(m["script"].is_null(), "{wamid} waits: {m}");
    }

    // The operator sees it waiting.
    let (_, waiting) = w.daemon.api("/api/parked?all=1").await;
    let entry = &waiting["parked"][0];
    assert_eq!(
        (entry["kind"].as_str(), entry["parked"].as_bool()),
        (Some("message"), Some(false)),
        "{waiting}"
    );
    assert!(
        entry["error"].as_str().unwrap().contains("cannot reach Odoo"),
        "{waiting}"
    );

    // Odoo is back: the tap is answered, then the contact's next message runs.
    w.odoo.fail_next(0);
    let sent = w.sent(3).await;
    assert!(
        body_text(&sent[2]).starts_with(&format!("Détail de la commande {name} :")),
        "{}",
        body_text(&sent[2])
    );
    let tap = w.daemon.dispatched(PHONE, "wamid.TAP").await;
    assert!(tap["script"]["error"].is_null(), "{tap}");
    let after = w.daemon.dispatched(PHONE, "wamid.AFTER").await;
    assert!(after["id"].as_u64() > tap["id"].as_u64());
    let (_, v) = w.daemon.api("/api/parked?all=1").await;
    assert_eq!(v["parked"], json!([]), "answered: no longer waiting");
    no_more_than(&w, 3).await;
}

#[tokio::test]
async fn a_tap_that_keeps_failing_is_parked_and_the_contact_goes_on() {
    let w = world_with(true, |_| {}, "retry_for = \"2s\"\nfallback_after = \"1h\"").await;
    let order = w.new_order();
    w.sent(1).await;
    w.odoo.fail_next(1_000_000);
    w.daemon
        .deliver_ok(&click_delivery(
            PHONE,
            "wamid.TAP",
            &format!("btn_order_details_{order}"),
            "Voir détail",
        ))
        .await;
    let tap = w.daemon.dispatched(PHONE, "wamid.TAP").await;
    assert!(
        tap["script"]["error"].as_str().unwrap().starts_with("parked after"),
        "{tap}"
    );
    let id = format!("message:{}", tap["id"]);
    let (_, v) = w.daemon.api("/api/parked").await;
    let entry = &v["parked"][0];
    assert_eq!(
        (entry["id"].as_str(), entry["kind"].as_str()),
        (Some(id.as_str()), Some("message"))
    );
    assert!(entry["expires_ms"].as_i64().unwrap() > entry["first_failed_ms"].as_i64().unwrap());
    // Odoo back, the operator replays it: the customer gets the answer.
    w.odoo.fail_next(0);
    let (status, _) = w.daemon.api_post(&format!("/api/parked/{id}/replay"), &json!({})).await;
    assert_eq!(status, 202);
    let sent = w.sent(2).await;
    assert!(
        body_text(&sent[1]).starts_with("Détail de la commande"),
        "{}",
        body_text(&sent[1])
    );
}

#[tokio::test]
async fn scripts_tell_a_transient_odoo_error_from_a_definite_one() {
    let probe = r#"
return { match = "^probe_(%d+)$", anyone = true, run = function(id)
  local ok, err = pcall(env.odoo.call, "sale.order", "read", { { tonumber(id) } }, { fields = { "name" } })
  local ok2, err2 = pcall(env.odoo.call, "sale.order", "no_such_method", { { 1 } })
  env.whatsapp.send_text(message.from, string.format("%s %s %s %s | %s %s %s", tostring(ok), tostring(err.transient), err.kind,
    tostring(err):sub(1, 45), tostring(ok2), tostring(err2.transient), tostring(err2.exception)))
end }
"#;
    // No hooks: their polls would take the failures meant for the probe.
    let w = world(true, |s| {
        only_hooks(s, &[]);
        put_script(s.parent().unwrap(), "buttons/probe.lua", probe)
    })
    .await;
    // The client tries a read 4 times: all 4 fail, then Odoo answers again.
    w.odoo.fail_next(4);
    w.daemon
        .deliver_ok(&click_delivery(PHONE, "wamid.PROBE", "probe_1", "?"))
        .await;
    let sent = w.sent(1).await;
    assert_eq!(
        body_text(&sent[0]),
        "false true unreachable env.odoo.call(sale.order, read): cannot reach | false false builtins.AttributeError"
    );
}

#[tokio::test]
async fn a_cron_run_while_odoo_is_down_is_retried_and_cron_jobs_can_be_listed_and_run_now() {
    let job = r#"
return { schedule = "*/10 * * * * *", run = function()
  local rows = env.odoo.search_read("res.partner", { { "name", "=", "Awa Diop" } }, { "name" })
  env.whatsapp.send_text("221771234567", "cron: " .. rows[1].name)
end }
"#;
    let w = world_with(
        true,
        |s| put_script(s.parent().unwrap(), "cron/ping.lua", job),
        "retry_first = \"300ms\"",
    )
    .await;
    // Odoo goes down; the next tick (within 10 s) fails and is retried within its 10 s
    // period: waited for over two periods, for a loaded machine.
    w.odoo.fail_next(1_000_000);
    let (_, retrying) = w
        .daemon
        .eventually_within("a cron run retrying", Duration::from_secs(25), || async {
            let (_, v) = w.daemon.api("/api/cron").await;
            let job = v["jobs"].as_array()?.iter().find(|j| j["name"] == "ping")?.clone();
            (job["retrying"] == 1).then_some(((), job))
        })
        .await;
    assert!(
        retrying["last_error"].as_str().unwrap().contains("cannot reach Odoo"),
        "{retrying}"
    );
    assert!(retrying["next_run"].is_string());
    w.odoo.fail_next(0);
    let sent = w.sent(1).await;
    assert_eq!(body_text(&sent[0]), "cron: Awa Diop");
    w.daemon
        .eventually("the retry cleared its entry", || async {
            let (_, v) = w.daemon.api("/api/cron").await;
            let job = v["jobs"].as_array()?.iter().find(|j| j["name"] == "ping")?.clone();
            (job["retrying"] == 0 && job["parked"] == 0 && job["last_error"].is_null()).then_some(())
        })
        .await;

    let (status, v) = w.daemon.api_post("/api/cron/ping/run", &json!({})).await;
    assert_eq!((status, v["ok"].clone()), (200, json!(true)));
    let (ok, out) = walua_cli(&w, &["cron", "list"]).await;
    assert!(
        ok && out.starts_with("JOB") && out.contains("ping") && out.contains("*/10 * * * * *"),
        "{out}"
    );
    let (ok, out) = walua_cli(&w, &["cron", "run", "ping"]).await;
    assert!(ok && out.contains("ping: ran, 1 message(s) queued"), "{out}");
    w.odoo.fail_next(1_000_000);
    let (ok, out) = walua_cli(&w, &["cron", "run", "ping"]).await;
    assert!(
        !ok && out.contains("ping: failed: ") && out.contains("cannot reach Odoo"),
        "{out}"
    );
    w.odoo.fail_next(0);
    let (status, _) = w.daemon.api_post("/api/cron/nope/run", &json!({})).await;
    assert_eq!(status, 404);
    // A job never overlaps itself, also when run on request.
    w.odoo.set_latency(Duration::from_millis(800));
    // The job's own schedule (every 10 s) may be running when the first request comes: then
    // that one is refused too, and the pair is tried again.
    let empty = json!({});
    let mut refused = None;
    for _ in 0..5 {
        let first = w.daemon.api_post("/api/cron/ping/run", &empty);
        let second = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            w.daemon.api_post("/api/cron/ping/run", &empty).await
        };
        let ((s1, v1), (s2, v2)) = tokio::join!(first, second);
        if s1 == 409 {
            assert!(v1["error"].as_str().unwrap().contains("is running now"), "{v1}");
            tokio::time::sleep(Duration::from_millis(900)).await;
            continue;
        }
        assert_eq!((s1, s2), (200, 409), "{v2}");
        refused = Some(v2);
        break;
    }
    let v2 = refused.expect("a run on request that did not meet the scheduled one");
    assert!(v2["error"].as_str().unwrap().contains("is running now"), "{v2}");
    w.odoo.set_latency(Duration::ZERO);
}
