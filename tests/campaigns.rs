//! Campaigns through the real daemon and a fake Graph API: a MARKETING template sent to a
//! CSV, a list or an Odoo audience; skipped recipients with their reasons; schedules in the
//! shop's timezone; pause, resume, cancel; Meta pausing the template; answers to customers
//! going before a campaign's backlog; the report fed by Meta's status webhooks and the
//! customers' replies.

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::fake_graph::FakeGraph;
use support::*;

const WABA: &str = "102290129340398";
const PNID: &str = "1234567890";
const AWA: &str = "221771234567";

const PROMO: &str = r#"name = "promo_tabaski"
language = "fr"
category = "MARKETING"

[body]
text = "Bonjour {{1}}, profitez de nos offres de Tabaski cette semaine dans toutes nos boutiques."
example = ["Awa"]
"#;

const PROMO_BODY: &str = "Bonjour {{1}}, profitez de nos offres de Tabaski cette semaine dans toutes nos boutiques.";

/// A shop: a bot that answers every text, `promo_tabaski` defined on disk and APPROVED at
/// Meta (synced into the registry), and `[whatsapp]` / extra sections as given.
async fn shop(extra_whatsapp: &str, extra: &str) -> (FakeGraph, TestDaemon) {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    fake.set_waba(PNID, WABA);
    fake.add_template(
        WABA,
        "promo_tabaski",
        "fr",
        "MARKETING",
        "APPROVED",
        json!([{"type": "BODY", "text": PROMO_BODY, "example": {"body_text": [["Awa"]]}}]),
    );
    let dir = tempfile::tempdir().unwrap();
    put_script(
        dir.path(),
        "on_message.lua",
        r#"return { run = function(msg) env.whatsapp.send_text(msg.from, "Bot : bien reçu") end }"#,
    );
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(templates.join("promo_tabaski.fr.toml"), PROMO).unwrap();
    let whatsapp = live_whatsapp(&fake.url(), &format!("waba_id = \"{WABA}\"\n{extra_whatsapp}"));
    // `extra` lines starting with `scripts.` go in [scripts] (config_text writes that section).
    let (scripts, rest): (Vec<&str>, Vec<&str>) = extra.lines().partition(|l| l.starts_with("scripts."));
    let scripts: String = scripts
        .iter()
        .map(|l| format!("{}\n", &l["scripts.".len()..]))
        .collect();
    let text = config_text(dir.path(), &whatsapp, &rest.join("\n")).replacen(
        "[scripts]\n",
        &format!("[scripts]\n{scripts}"),
        1,
    );
    let d = TestDaemon::start_in(dir, text).await;
    let (status, synced) = d.api_post("/api/templates/sync", &json!({})).await;
    assert_eq!(status, 200, "{synced}");
    (fake, d)
}

/// A Senegalese mobile number, distinct for each `i`.
fn number(i: usize) -> String {
    format!("22177{:07}", 1_000_000 + i)
}

/// Console accounts (name, role), all with the browser tests' password.
async fn add_users(d: &TestDaemon, users: &[(&str, &str)]) {
    for (name, role) in users {
        let (status, body) = d
            .api_post(
                "/api/users",
                &json!({"name": name, "role": role, "password": browser::PASSWORD}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

/// Fills the console's new-campaign form (name, CSV file, start time) and sends it.
async fn submit_campaign_form(b: &fantoccini::Client, name: &str, csv: &std::path::Path, at: Option<&str>) {
    let mut fields = vec![("#campaign-name", name), ("#campaign-csv", csv.to_str().unwrap())];
    fields.extend(at.map(|at| ("#campaign-at", at)));
    for (css, text) in fields {
        browser::wait_for(b, css, css).await.send_keys(text).await.unwrap();
    }
    browser::wait_for(b, "the create button", "#campaign-create")
        .await
        .click()
        .await
        .unwrap();
}

async fn create(d: &TestDaemon, body: Value) -> Value {
    let (status, c) = d.api_post("/api/campaigns", &body).await;
    assert_eq!(status, 201, "campaign created: {c}");
    c
}

async fn report(d: &TestDaemon, id: &Value) -> Value {
    let (status, r) = d.api(&format!("/api/campaigns/{id}")).await;
    assert_eq!(status, 200, "{r}");
    r
}

async fn wait_campaign(d: &TestDaemon, id: &Value, status: &str, limit: Duration) -> Value {
    d.eventually_within(&format!("campaign {id} {status}"), limit, || async {
        let r = report(d, id).await;
        (r["status"] == status).then_some(r)
    })
    .await
}

async fn act(d: &TestDaemon, id: &Value, action: &str) -> (u16, Value) {
    d.api_post(&format!("/api/campaigns/{id}/{action}"), &json!({})).await
}

/// How many campaign sends reached Meta, by recipient.
fn sends_by_recipient(fake: &FakeGraph) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for (_, body) in fake.accepted() {
        if body["type"] == "template" {
            *by.entry(body["to"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    by
}

fn status_of(wamid: &str, status: &str, code: Option<i64>) -> Value {
    let mut s = json!({"id": wamid, "status": status, "timestamp": now().to_string(), "recipient_id": AWA});
    if let Some(code) = code {
        s["errors"] = json!([{"code": code, "title": "Message undeliverable", "message": "Message undeliverable"}]);
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550000000", "phone_number_id": PNID},
                  "statuses": [s]}}]}]})
}

#[tokio::test]
async fn a_csv_audience_skips_bad_duplicate_and_opted_out_lines_with_reasons_and_the_report_follows_meta_and_the_replies()
 {
    let (fake, d) = shop("", "").await;
    // Moussa said STOP last week: no marketing for him.
    let moussa = number(3);
    d.deliver_ok(&text_delivery(&moussa, "wamid.STOP", "STOP", now() - 60))
        .await;
    d.dispatched(&moussa, "wamid.STOP").await;
    let csv = format!(
        "to;1\n+221 77 100 00 01;Awa\n{};Fatou\n{moussa};Moussa\n12;Personne\n00221771000001;Awa encore\n{};\n",
        number(2),
        number(4)
    );
    let file = d.dir.path().join("audience.csv");
    std::fs::write(&file, &csv).unwrap();
    let file = file.to_str().unwrap();
    let (ok, out) = d
        .cli(&[
            "campaign",
            "create",
            "--name",
            "Tabaski",
            "--template",
            "promo_tabaski",
            "--csv",
            file,
        ])
        .await;
    assert!(ok, "{out}");
    assert!(out.contains("draft"), "{out}");
    let (_, list) = d.api("/api/campaigns").await;
    let id = list["campaigns"][0]["id"].clone();
    let draft = report(&d, &id).await;
    assert_eq!(draft["total"], 6, "{draft}");
    assert_eq!(
        draft["skipped_by_reason"],
        json!({"duplicate": 1, "invalid": 1, "opted_out": 1, "refused": 1}),
        "{draft}"
    );
    let (_, skipped) = d.api(&format!("/api/campaigns/{id}/recipients?state=skipped")).await;
    let reasons: Vec<String> = skipped["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}: {}",
                r["source"].as_str().unwrap(),
                r["skip"].as_str().unwrap(),
                r["reason"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        reasons[0].starts_with("line 4 opted_out:") && reasons[0].contains("opted out"),
        "{reasons:?}"
    );
    assert!(reasons[1].starts_with("line 5 invalid:"), "{reasons:?}");
    assert!(
        reasons[2].starts_with("line 6 duplicate:") && reasons[2].contains("recipient 1"),
        "{reasons:?}"
    );
    assert!(
        reasons[3].starts_with("line 7 refused:") && reasons[3].contains("params"),
        "{reasons:?}"
    );
    assert!(sends_by_recipient(&fake).is_empty(), "a draft sends nothing");

    let (ok, out) = d.cli(&["campaign", "start", &id.to_string(), "--follow"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("done"), "{out}");
    let sends = sends_by_recipient(&fake);
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert!(sends.values().all(|n| *n == 1), "{sends:?}");
    let awa = fake
        .accepted()
        .into_iter()
        .find(|(_, b)| b["to"] == number(1))
        .expect("Awa got it");
    assert_eq!(
        awa.1["template"]["components"][0]["parameters"][0]["text"], "Awa",
        "{}",
        awa.1
    );

    // Meta's statuses, then Awa answers and Fatou opts out.
    let wamid = |to: String| fake.accepted().into_iter().find(|(_, b)| b["to"] == to).unwrap().0;
    let (awa_wamid, fatou_wamid) = (wamid(number(1)), wamid(number(2)));
    for s in [
        status_of(&awa_wamid, "delivered", None),
        status_of(&awa_wamid, "read", None),
        status_of(&fatou_wamid, "failed", Some(131026)),
    ] {
        d.deliver_ok(&s).await;
    }
    d.deliver_ok(&text_delivery(&number(1), "wamid.AWA1", "C'est où ?", now()))
        .await;
    d.deliver_ok(&text_delivery(&number(1), "wamid.AWA2", "Merci", now()))
        .await;
    d.deliver_ok(&text_delivery(&number(2), "wamid.FATOU", "ARRET", now()))
        .await;
    d.settled().await;
    let r = d
        .eventually("the report", || async {
            let r = report(&d, &id).await;
            (r["replied"] == 2 && r["opted_out"] == 1).then_some(r)
        })
        .await;
    assert_eq!(
        (
            r["sent"].clone(),
            r["delivered"].clone(),
            r["read"].clone(),
            r["failed"].clone()
        ),
        (json!(1), json!(1), json!(1), json!(1)),
        "{r}"
    );
    assert_eq!(r["failed_by_code"], json!({"131026": 1}), "{r}");
    assert_eq!(r["skipped"], 4, "{r}");
    let (ok, shown) = d.cli(&["campaign", "show", &id.to_string()]).await;
    assert!(ok, "{shown}");
    assert!(shown.contains("131026 1") && shown.contains("opted_out"), "{shown}");
    let (ok, listed) = d.cli(&["campaign", "list"]).await;
    assert!(ok && listed.contains("Tabaski") && listed.contains("100 %"), "{listed}");

    // The analytics (issue 25) count the same campaign the same way, under its id.
    let stats = d
        .eventually("the campaign's statistics", || async {
            let (status, s) = d.api("/api/stats?group_by=campaign").await;
            assert_eq!(status, 200, "{s}");
            (s["complete"] == true && s["groups"].as_array().is_some_and(|g| !g.is_empty())).then_some(s)
        })
        .await;
    let groups = stats["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{stats:#}");
    let g = &groups[0];
    assert_eq!(g["key"], id.to_string(), "{g:#}");
    assert_eq!(
        (
            &g["messages_out"],
            &g["attempted"],
            &g["delivered"],
            &g["read"],
            &g["failed"],
            &g["out_by_sender"]["campaign"]
        ),
        (&json!(2), &json!(2), &json!(1), &json!(1), &json!(1), &json!(2)),
        "{g:#}"
    );
    assert_eq!(g["failures"], json!([{"code": 131026, "count": 1}]), "{g:#}");
    // Awa's send opened a conversation; Fatou's failed, so it opened none.
    assert_eq!(g["conversations"]["started_by_business"], 1, "{g:#}");
    let (_, by_template) = d.api("/api/stats?group_by=template").await;
    assert_eq!(by_template["groups"][0]["key"], "promo_tabaski", "{by_template:#}");
    assert_eq!(by_template["groups"][0]["messages_out"], 2, "{by_template:#}");
}

#[tokio::test]
async fn a_scheduled_campaign_starts_at_its_local_time_in_the_shops_timezone() {
    let (fake, d) = shop("", "scripts.timezone = \"Asia/Tokyo\"").await;
    let tz: chrono_tz::Tz = "Asia/Tokyo".parse().unwrap();
    let at = (chrono::Utc::now() + chrono::Duration::seconds(6)).with_timezone(&tz);
    let local = at.format("%Y-%m-%d %H:%M:%S").to_string();
    let c = create(
        &d,
        json!({"name": "Rappel", "template": "promo_tabaski", "lang": "fr", "at": local,
               "recipients": [{"to": number(1), "params": ["Awa"]}, {"to": number(2), "params": {"1": "Fatou"}}]}),
    )
    .await;
    assert_eq!(c["status"], "scheduled", "{c}");
    let expected = at
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(c["at"], expected, "Tokyo's local time, stored as UTC: {c}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fake.accepted().is_empty(), "nothing before its time");
    let done = wait_campaign(&d, &c["id"], "done", Duration::from_secs(25)).await;
    assert_eq!(done["sent"], 2, "{done}");
    let started = chrono::DateTime::parse_from_rfc3339(done["started_at"].as_str().unwrap()).unwrap();
    assert!(
        started >= at - chrono::Duration::seconds(1),
        "started {started}, scheduled {at}"
    );
}

#[tokio::test]
async fn pause_stops_even_what_was_queued_resume_goes_on_and_cancel_leaves_the_rest_unsent() {
    let (fake, d) = shop("max_per_second = 20", "").await;
    let recipients: Vec<Value> = (1..=120)
        .map(|i| json!({"to": number(i), "params": ["Client"]}))
        .collect();
    let c = create(
        &d,
        json!({"name": "Soldes", "template": "promo_tabaski", "lang": "fr", "start": true, "recipients": recipients}),
    )
    .await;
    let id = c["id"].clone();
    assert_eq!(c["status"], "running", "{c}");
    fake.wait_for_accepted(10, Duration::from_secs(10)).await;
    let (status, paused) = act(&d, &id, "pause").await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["status"], "paused");
    tokio::time::sleep(Duration::from_millis(1000)).await; // sends in flight end
    let at_pause = fake.accepted_count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fake.accepted_count(),
        at_pause,
        "nothing goes out while paused, not even the queued window"
    );
    assert!(at_pause < 60, "paused early: {at_pause}");
    let (status, again) = act(&d, &id, "pause").await;
    assert_eq!(status, 409, "{again}");

    let (status, resumed) = act(&d, &id, "resume").await;
    assert_eq!(
        (status, resumed["status"].clone()),
        (200, json!("running")),
        "{resumed}"
    );
    fake.wait_for_accepted(at_pause + 20, Duration::from_secs(10)).await;
    let (status, cancelled) = act(&d, &id, "cancel").await;
    assert_eq!(
        (status, cancelled["status"].clone()),
        (200, json!("cancelled")),
        "{cancelled}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let at_cancel = fake.accepted_count();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(fake.accepted_count(), at_cancel, "nothing after the cancel");
    let r = report(&d, &id).await;
    assert_eq!(r["sent"], at_cancel, "{r}");
    assert_eq!(r["cancelled"].as_u64().unwrap() + at_cancel as u64, 120, "{r}");
    assert_eq!(r["pending"], 0, "{r}");
    assert!(sends_by_recipient(&fake).values().all(|n| *n == 1));
    let (status, _) = act(&d, &id, "resume").await;
    assert_eq!(status, 409, "a cancelled campaign stays cancelled");
}

#[tokio::test]
async fn a_campaign_is_held_while_meta_pauses_its_template_and_goes_on_when_meta_reinstates_it() {
    let (fake, d) = shop("max_per_second = 20", "").await;
    let recipients: Vec<Value> = (1..=60)
        .map(|i| json!({"to": number(i), "params": ["Client"]}))
        .collect();
    let c = create(
        &d,
        json!({"name": "Tabaski", "template": "promo_tabaski", "lang": "fr", "start": true, "recipients": recipients}),
    )
    .await;
    let id = c["id"].clone();
    fake.wait_for_accepted(5, Duration::from_secs(10)).await;
    let template_id = fake.set_template_status("promo_tabaski", "fr", "PAUSED");
    let webhook = |event: &str| {
        json!({"object": "whatsapp_business_account", "entry": [{"id": WABA, "time": now(), "changes": [{
            "field": "message_template_status_update",
            "value": {"event": event, "message_template_id": template_id.parse::<u64>().unwrap(),
                      "message_template_name": "promo_tabaski", "message_template_language": "fr",
                      "reason": "LOW_QUALITY"}}]}]})
    };
    d.deliver_ok(&webhook("PAUSED")).await;
    let held = wait_campaign(&d, &id, "held", Duration::from_secs(10)).await;
    assert!(held["reason"].as_str().unwrap().contains("PAUSED"), "{held}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let at_hold = fake.accepted_count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fake.accepted_count(),
        at_hold,
        "nothing goes out while Meta pauses the template"
    );
    assert!(at_hold < 60);

    fake.set_template_status("promo_tabaski", "fr", "APPROVED");
    d.deliver_ok(&webhook("REINSTATED")).await;
    let done = wait_campaign(&d, &id, "done", Duration::from_secs(20)).await;
    assert_eq!(done["sent"], 60, "{done}");
    let sends = sends_by_recipient(&fake);
    assert_eq!(sends.len(), 60);
    assert!(sends.values().all(|n| *n == 1), "each once: {sends:?}");
}

#[tokio::test]
async fn answers_to_customers_go_before_a_campaigns_backlog() {
    let (fake, d) = shop("max_per_second = 2", "").await;
    let recipients: Vec<Value> = (1..=80)
        .map(|i| json!({"to": number(i), "params": ["Client"]}))
        .collect();
    let c = create(
        &d,
        json!({"name": "Gros envoi", "template": "promo_tabaski", "lang": "fr", "start": true, "recipients": recipients}),
    )
    .await;
    fake.wait_for_accepted(4, Duration::from_secs(10)).await;
    let before = fake.accepted_count();
    d.deliver_ok(&text_delivery(AWA, "wamid.QUESTION", "Vous êtes ouverts ?", now()))
        .await;
    d.eventually("the bot's answer", || async {
        fake.accepted().iter().any(|(_, b)| b["to"] == AWA).then_some(())
    })
    .await;
    let accepted = fake.accepted();
    let answer_at = accepted.iter().position(|(_, b)| b["to"] == AWA).unwrap();
    // The answer waited for the sends already in flight and the number's rate, not for the
    // campaign's queued window (10 at this rate) nor its 70-odd pending recipients: at 2/s,
    // a few seconds of the bot's own work under load let only a few campaign sends through.
    assert!(
        answer_at - before <= 10,
        "{} campaign sends went between the question and its answer",
        answer_at - before
    );
    let r = report(&d, &c["id"]).await;
    assert_ne!(r["status"], "done", "the campaign was still going: {r}");
}

#[tokio::test]
async fn bad_campaigns_are_refused_with_the_reason_and_record_nothing() {
    let (_fake, d) = shop("", "").await;
    let base = |extra: Value| {
        let mut b = json!({"name": "X", "template": "promo_tabaski", "lang": "fr"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases = [
        (base(json!({})), 422, "give the audience one way"),
        (
            base(json!({"recipients": [{"to": AWA, "params": ["Awa"]}], "csv": "to\n1"})),
            422,
            "one way",
        ),
        (
            json!({"name": "X", "template": "nope", "lang": "fr", "recipients": [{"to": AWA}]}),
            422,
            "template `nope` (fr) is unknown",
        ),
        (base(json!({"recipients": []})), 422, "the audience is empty"),
        (
            base(json!({"recipients": [{"to": "12"}]})),
            422,
            "no recipient can receive",
        ),
        (base(json!({"csv": "name,amount\nAwa,3\n"})), 422, "no recipient column"),
        (
            base(json!({"recipients": [{"to": AWA, "params": ["Awa"]}], "at": "2020-01-01 10:00"})),
            422,
            "in the past",
        ),
        (
            base(json!({"recipients": [{"to": AWA, "params": ["Awa"]}], "at": "demain"})),
            422,
            "RFC 3339",
        ),
        (
            base(json!({"recipients": [{"to": AWA}], "colour": "red"})),
            400,
            "unknown field",
        ),
        (base(json!({"odoo": {"domain": []}})), 422, "needs [odoo]"),
    ];
    for (body, status, says) in cases {
        let (got, answer) = d.api_post("/api/campaigns", &body).await;
        assert_eq!(got, status, "{body} → {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{body} → {answer}");
    }
    let (_, list) = d.api("/api/campaigns").await;
    assert_eq!(list["campaigns"], json!([]), "nothing recorded");
    assert_eq!(d.api("/api/campaigns/99").await.0, 404);
    assert_eq!(d.api("/api/campaigns/abc").await.0, 404);
    let c = create(&d, base(json!({"recipients": [{"to": AWA, "params": ["Awa"]}]}))).await;
    let (status, why) = act(&d, &c["id"], "resume").await;
    assert_eq!(status, 409, "{why}");
    assert!(why["error"].as_str().unwrap().contains("is draft"), "{why}");
    let (status, why) = d
        .api_post(&format!("/api/campaigns/{}/start", c["id"]), &json!({"at": "bientôt"}))
        .await;
    assert_eq!(status, 422, "{why}");
}

/// Calls the admin API of a daemon run as a separate process.
async fn admin(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http.request(method, format!("{base}{path}")).bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    match r.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({"error": e.to_string()})),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_killed_with_sigkill_resumes_after_restart_and_sends_nobody_twice() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    fake.set_latency(Duration::from_millis(30));
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(templates.join("promo_tabaski.fr.toml"), PROMO).unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    let port = free_port();
    let text = config_text(dir.path(), &live_whatsapp(&fake.url(), "max_per_second = 60"), "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(dir.path().join("walua.toml"), &text).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let up = |http: reqwest::Client, base: String| async move {
        for _ in 0..1500 {
            if admin(&http, &base, reqwest::Method::GET, "/healthz", None).await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("walua did not come up");
    };

    let mut child = spawn_serve(dir.path());
    up(http.clone(), base.clone()).await;
    let total = 400;
    let recipients: Vec<Value> = (1..=total)
        .map(|i| json!({"to": number(i), "params": ["Client"]}))
        .collect();
    let (status, c) = admin(
        &http,
        &base,
        reqwest::Method::POST,
        "/api/campaigns",
        Some(json!({"name": "Crash", "template": "promo_tabaski", "lang": "fr", "start": true, "recipients": recipients})),
    )
    .await;
    assert_eq!(status, 201, "{c}");
    let id = c["id"].clone();
    fake.wait_for_accepted(120, Duration::from_secs(20)).await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let at_kill = fake.accepted_count();
    assert!(at_kill < total, "killed in the middle: {at_kill}");

    let mut child = spawn_serve(dir.path());
    up(http.clone(), base.clone()).await;
    let mut done = Value::Null;
    for _ in 0..3000 {
        let (_, r) = admin(
            &http,
            &base,
            reqwest::Method::GET,
            &format!("/api/campaigns/{id}"),
            None,
        )
        .await;
        if r["status"] == "done" {
            done = r;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(done["status"], "done", "the campaign went on after the restart: {done}");
    child.kill().unwrap();
    child.wait().unwrap();

    let sends = sends_by_recipient(&fake);
    let twice: Vec<_> = sends.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    // A send interrupted by the kill is `unknown` (never resent blindly); every other
    // recipient got the message once.
    let unknown = done["unknown"].as_u64().unwrap();
    assert!(unknown <= 60, "{done}");
    assert_eq!(done["sent"].as_u64().unwrap() + unknown, total as u64, "{done}");
    assert!(
        sends.len() as u64 >= total as u64 - unknown,
        "{} reached Meta, {unknown} unknown",
        sends.len()
    );
    assert!(sends.len() > at_kill, "more went out after the restart");
}

#[tokio::test]
async fn an_odoo_domain_audience_sends_to_each_partners_mobile_with_its_fields_as_parameters() {
    let w = support::odoo_world::world(false, |_| {}).await;
    let moussa = w.odoo.add_partner("Moussa Ndiaye", Some("+221 77 200 00 02"), None);
    w.odoo.update(
        "res.partner",
        moussa,
        json!({"email": "moussa@example.sn", "lang": "fr_FR"}),
    );
    w.odoo
        .update("res.partner", w.partner, json!({"email": "awa@example.sn"}));
    let _nobody = w.odoo.add_partner("Sans Numéro", None, None);
    let archived = w.odoo.add_partner("Ancien Client", None, Some("+221 77 200 00 09"));
    w.odoo.archive("res.partner", archived);
    let d = &w.daemon;
    // The shipped order_created takes three values: here name, email and language.
    let c = create(
        d,
        json!({"name": "Relance", "template": "order_created", "lang": "fr", "start": true,
               "odoo": {"domain": [["id", "in", [w.partner, moussa, _nobody, archived]]], "params": ["name", "email", "lang"]}}),
    )
    .await;
    assert_eq!(c["source"], "odoo", "{c}");
    assert_eq!(c["total"], 3, "the archived partner is left out: {c}");
    let (_, skipped) = d
        .api(&format!("/api/campaigns/{}/recipients?state=skipped", c["id"]))
        .await;
    let skipped = &skipped["recipients"][0];
    assert_eq!(skipped["skip"], "invalid");
    assert!(skipped["reason"].as_str().unwrap().contains("Sans Numéro"), "{skipped}");
    wait_campaign(d, &c["id"], "done", Duration::from_secs(10)).await;
    let sent: Vec<(String, String)> = w
        .graph
        .accepted()
        .into_iter()
        .filter(|(_, b)| b["type"] == "template")
        .map(|(_, b)| {
            (
                b["to"].as_str().unwrap().to_string(),
                b["template"]["components"][0]["parameters"][0]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("221771234567".to_string(), "Awa Diop".to_string()),
            ("221772000002".to_string(), "Moussa Ndiaye".to_string())
        ]
    );
}

#[tokio::test]
async fn the_console_shows_a_campaigns_progress_and_report_and_an_admin_pauses_it() {
    let Some(driver) = browser::chromedriver() else { return };
    let (_fake, d) = shop("max_per_second = 4", "").await;
    add_users(&d, &[("aminata", "admin"), ("moussa", "viewer")]).await;
    let mut recipients: Vec<Value> = (1..=200)
        .map(|i| json!({"to": number(i), "params": [format!("Client {i}")]}))
        .collect();
    recipients.push(json!({"to": "12", "params": ["Personne"]}));
    let c = create(
        &d,
        json!({"name": "Tabaski 2026", "template": "promo_tabaski", "lang": "fr", "start": true, "recipients": recipients}),
    )
    .await;
    let id = c["id"].clone();
    d.eventually("some sent", || async {
        (report(&d, &id).await["sent"].as_u64() >= Some(4)).then_some(())
    })
    .await;

    let b = browser::browser(&driver).await;
    browser::sign_in(&b, &d, "moussa").await;
    b.goto(&d.url(&format!("/console/campaigns/{id}"))).await.unwrap();
    browser::wait_text(&b, "the report", "#report", "Envoyés").await;
    assert!(
        b.find(fantoccini::Locator::Css("button.pause")).await.is_err(),
        "no button for a viewer"
    );
    b.close().await.unwrap();

    let b = browser::browser(&driver).await;
    browser::sign_in(&b, &d, "aminata").await;
    b.goto(&d.url("/console/campaigns")).await.unwrap();
    browser::wait_text(
        &b,
        "the campaign row",
        &format!("#campaigns tr[data-id='{id}']"),
        "Tabaski 2026",
    )
    .await;
    browser::wait_text(&b, "its state", &format!("#campaigns tr[data-id='{id}']"), "En cours").await;
    browser::wait_for(&b, "the link", &format!("#campaigns tr[data-id='{id}'] a"))
        .await
        .click()
        .await
        .unwrap();
    browser::wait_text(&b, "the skipped recipient", "#skipped", "12").await;
    browser::wait_text(&b, "the skip reasons", "#skipped_by_reason", "Numéro invalide").await;
    browser::screenshots(&b, "campaign").await;
    browser::wait_for(&b, "the pause button", "button.pause")
        .await
        .click()
        .await
        .unwrap();
    browser::wait_text(&b, "the pause notice", ".notice.ok", "En pause").await;
    browser::wait_for(&b, "the paused state", "#campaign-status[data-status='paused']").await;
    assert_eq!(report(&d, &id).await["status"], "paused");
    browser::wait_for(&b, "the resume button", "button.resume")
        .await
        .click()
        .await
        .unwrap();
    browser::wait_for(&b, "the running state", "#campaign-status[data-status='running']").await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn an_admin_creates_a_campaign_from_a_csv_file_in_the_console_checks_the_draft_and_starts_it() {
    let Some(driver) = browser::chromedriver() else { return };
    let (fake, d) = shop("", "").await;
    add_users(&d, &[("aminata", "admin"), ("moussa", "agent")]).await;
    // A French spreadsheet's export: ";" and a BOM; one number twice, one invalid.
    let csv = d.dir.path().join("korite.csv");
    std::fs::write(
        &csv,
        format!(
            "\u{feff}to;1\n{};Awa\n{};Fatou\n+221 77 100 00 01;Awa encore\n12;Personne\n",
            number(1),
            number(2)
        ),
    )
    .unwrap();

    // An agent sees the campaigns but not the form, and cannot post it.
    let b = browser::browser(&driver).await;
    browser::sign_in(&b, &d, "moussa").await;
    b.goto(&d.url("/console/campaigns")).await.unwrap();
    browser::wait_for(&b, "the page", "nav.tabs").await;
    assert!(
        b.find(fantoccini::Locator::Css("#new-campaign")).await.is_err(),
        "no form for an agent"
    );
    b.close().await.unwrap();

    let b = browser::browser(&driver).await;
    browser::sign_in(&b, &d, "aminata").await;
    b.goto(&d.url("/console/campaigns")).await.unwrap();
    browser::wait_for(&b, "the form", "#campaign-name").await;
    browser::screenshots(&b, "campaign-new").await;
    // First with a start time walua cannot read: refused with the reason, nothing recorded.
    submit_campaign_form(&b, "Korité", &csv, Some("demain matin")).await;
    browser::wait_for(&b, "the refusal", "p.notice.error").await;
    let (_, list) = d.api("/api/campaigns").await;
    assert_eq!(list["campaigns"], json!([]), "a refused form records nothing");

    // Again, with no start time: a draft, and its report.
    submit_campaign_form(&b, "Korité", &csv, None).await;
    browser::wait_for(&b, "the draft", "#campaign-status[data-status='draft']").await;
    browser::wait_text(&b, "the skip reasons", "#skipped_by_reason", "Numéro invalide").await;
    let (_, list) = d.api("/api/campaigns").await;
    let id = list["campaigns"][0]["id"].clone();
    let draft = report(&d, &id).await;
    assert_eq!(
        (&draft["total"], &draft["skipped"], &draft["pending"]),
        (&json!(4), &json!(2), &json!(2)),
        "{draft}"
    );
    assert_eq!(list["campaigns"][0]["name"], "Korité");
    assert!(sends_by_recipient(&fake).is_empty(), "a draft sends nothing");

    browser::wait_for(&b, "the start button", "button.start")
        .await
        .click()
        .await
        .unwrap();
    browser::wait_for(&b, "the start notice", "p.notice.ok").await;
    d.eventually("the campaign done", || async {
        (report(&d, &id).await["status"] == "done").then_some(())
    })
    .await;
    b.refresh().await.unwrap();
    browser::wait_for(&b, "the finished state", "#campaign-status[data-status='done']").await;
    let sends = sends_by_recipient(&fake);
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert!(sends.values().all(|n| *n == 1), "{sends:?}");
    b.close().await.unwrap();
}
