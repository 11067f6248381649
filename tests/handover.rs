//! Human handover through the real daemon: an agent takes a conversation over ("Prendre la
//! main"), the bot stays quiet for that customer, and answers again once the conversation is
//! given back ("Rendre au bot") or the handover lapses; scripts ask for a human with
//! `env.handover`; Odoo hooks and cron jobs still reach a handed-over customer.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const AWA: &str = "221771234567";

/// Answers every text with an echo; `humain` asks for an agent instead.
const ON_MESSAGE: &str = r#"
return {
  run = function(msg)
    if msg.text == "humain" then
      env.handover("le client demande un humain")
      return
    end
    env.whatsapp.send_text(msg.from, "Bot : " .. (msg.text or "?"))
  end,
}
"#;

/// Confirms an order on a tap of its "Valider" button.
const VALIDATE: &str = r#"
return {
  match = "^btn_validate_order_(%d+)$",
  anyone = true,
  run = function(order_id)
    env.whatsapp.send_text(message.from, "Commande " .. order_id .. " validée")
  end,
}
"#;

async fn daemon(console: &str) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    put_script(dir.path(), "on_message.lua", ON_MESSAGE);
    put_script(dir.path(), "buttons/validate_order.lua", VALIDATE);
    let text = config_text(dir.path(), DRY_RUN, &format!("[console]\n{console}\n"));
    TestDaemon::start_in(dir, text).await
}

/// Awa writes `body`; returns her message once its scripts ran.
async fn awa_writes(d: &TestDaemon, wamid: &str, body: &str) -> Value {
    d.deliver_ok(&text_delivery(AWA, wamid, body, now())).await;
    d.dispatched(AWA, wamid).await
}

/// Awa taps a button; returns her message once its scripts ran.
async fn awa_taps(d: &TestDaemon, wamid: &str, button: &str) -> Value {
    d.deliver_ok(&click_delivery(AWA, wamid, button, "Valider")).await;
    d.dispatched(AWA, wamid).await
}

/// The texts the bot sent Awa, oldest first.
async fn bot_texts(d: &TestDaemon) -> Vec<String> {
    d.outbound_of(AWA)
        .await
        .iter()
        .filter_map(|m| m["raw"]["text"]["body"].as_str().map(str::to_string))
        .collect()
}

async fn take_over(d: &TestDaemon, contact: &str, by: &str) -> (u16, Value) {
    d.api_post(
        &format!("/api/conversations/{contact}/handover"),
        &json!({ "by": by, "reason": "réclamation" }),
    )
    .await
}

async fn api_delete(d: &TestDaemon, path: &str) -> (u16, Value) {
    let r = d
        .http
        .delete(d.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Awa's conversation as `GET /api/conversations` lists it.
async fn awa_conversation(d: &TestDaemon) -> Value {
    let (status, list) = d.api("/api/conversations").await;
    assert_eq!(status, 200, "{list}");
    list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["contact"] == AWA)
        .cloned()
        .expect("Awa's conversation is listed")
}

#[tokio::test]
async fn an_agent_takes_over_the_bot_stays_quiet_and_answers_again_after_hand_back() {
    let d = daemon("").await;
    awa_writes(&d, "wamid.H1", "Bonjour").await;
    assert_eq!(bot_texts(&d).await, ["Bot : Bonjour"]);
    let conv = awa_conversation(&d).await;
    assert!(conv["handover"].is_null() && conv["help"].is_null(), "{conv}");

    // Fatou takes it over, naming Awa as she typed her number.
    let (status, taken) = take_over(&d, "+221 77 123 45 67", "Fatou").await;
    assert_eq!(status, 200, "{taken}");
    assert_eq!(taken["handover"]["by"], "Fatou");
    assert_eq!(taken["handover"]["reason"], "réclamation");
    let h = &taken["handover"];
    assert_eq!(
        h["until_ms"].as_i64().unwrap() - h["since_ms"].as_i64().unwrap(),
        4 * 3600 * 1000,
        "the default handover_timeout is 4 h"
    );
    assert_eq!(awa_conversation(&d).await["handover"]["by"], "Fatou");

    // Awa's texts reach the agent, not the scripts: each is marked, without error.
    for (wamid, body) in [("wamid.H2", "Ma commande n'est pas arrivée"), ("wamid.H3", "Allô ?")] {
        let m = awa_writes(&d, wamid, body).await;
        assert_eq!(m["script"]["scripts"], json!(["handover: agent Fatou"]), "{m}");
        assert!(m["script"]["error"].is_null(), "{m}");
    }
    let (_, thread) = d.api(&format!("/api/conversations/{AWA}/messages")).await;
    assert_eq!(thread["handover"]["by"], "Fatou", "the thread shows who holds it");
    assert!(thread["help"].is_null());
    assert_eq!(bot_texts(&d).await, ["Bot : Bonjour"], "the bot stayed quiet");

    // Fatou gives it back: the next text is answered, and the two she handled are not
    // replayed to the scripts.
    let (status, back) = api_delete(&d, &format!("/api/conversations/{AWA}/handover")).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["released"], true);
    assert!(awa_conversation(&d).await["handover"].is_null());
    awa_writes(&d, "wamid.H4", "Merci").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bot_texts(&d).await, ["Bot : Bonjour", "Bot : Merci"]);

    // Giving back again is harmless; an unknown customer is 404; an agent must be named.
    let (status, again) = api_delete(&d, &format!("/api/conversations/{AWA}/handover")).await;
    assert_eq!((status, again["released"].clone()), (200, json!(false)));
    assert_eq!(take_over(&d, "221700000000", "Fatou").await.0, 404);
    assert_eq!(api_delete(&d, "/api/conversations/221700000000/handover").await.0, 404);
    assert_eq!(api_delete(&d, "/api/conversations/221700000000/help").await.0, 404);
    assert_eq!(take_over(&d, AWA, "  ").await.0, 400);
    let (status, _) = d
        .api_post(&format!("/api/conversations/{AWA}/handover"), &json!({ "reason": "?" }))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn with_handover_buttons_run_a_tap_on_valider_still_confirms_the_order() {
    let d = daemon("handover_buttons = \"run\"").await;
    awa_writes(&d, "wamid.R1", "Bonjour").await;
    assert_eq!(take_over(&d, AWA, "Fatou").await.0, 200);
    let tap = awa_taps(&d, "wamid.R2", "btn_validate_order_42").await;
    assert_eq!(
        tap["script"]["scripts"],
        json!(["handover: agent Fatou", "buttons/validate_order"]),
        "{tap}"
    );
    // A text still reaches the agent only.
    awa_writes(&d, "wamid.R3", "Et la livraison ?").await;
    assert_eq!(bot_texts(&d).await, ["Bot : Bonjour", "Commande 42 validée"]);
}

#[tokio::test]
async fn with_handover_buttons_pause_a_tap_runs_nothing() {
    let d = daemon("handover_buttons = \"pause\"").await;
    awa_writes(&d, "wamid.P1", "Bonjour").await;
    assert_eq!(take_over(&d, AWA, "Fatou").await.0, 200);
    let tap = awa_taps(&d, "wamid.P2", "btn_validate_order_42").await;
    assert_eq!(tap["script"]["scripts"], json!(["handover: agent Fatou"]), "{tap}");
    assert!(tap["script"]["error"].is_null());
    assert_eq!(bot_texts(&d).await, ["Bot : Bonjour"]);
}

#[tokio::test]
async fn the_handover_lapses_after_handover_timeout_and_the_bot_answers_again() {
    let d = daemon("handover_timeout = \"1s\"").await;
    awa_writes(&d, "wamid.L1", "Bonjour").await;
    let (status, taken) = take_over(&d, AWA, "Fatou").await;
    assert_eq!(status, 200, "{taken}");
    let until = taken["handover"]["until_ms"].as_i64().unwrap();
    let m = awa_writes(&d, "wamid.L2", "Vous êtes là ?").await;
    assert_eq!(m["script"]["scripts"], json!(["handover: agent Fatou"]));

    // Nobody gave it back: after a second it lapses by itself.
    let wait = until - chrono::Utc::now().timestamp_millis() + 50;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    assert!(
        awa_conversation(&d).await["handover"].is_null(),
        "a lapsed handover shows as null"
    );
    let m = awa_writes(&d, "wamid.L3", "Toujours là ?").await;
    assert_eq!(m["script"]["scripts"], json!(["on_message"]));
    assert_eq!(bot_texts(&d).await, ["Bot : Bonjour", "Bot : Toujours là ?"]);
}

#[tokio::test]
async fn a_script_asks_for_a_human_and_taking_over_answers_it() {
    let d = daemon("").await;
    let m = awa_writes(&d, "wamid.A1", "humain").await;
    assert!(m["script"]["error"].is_null(), "{m}");
    let help = &awa_conversation(&d).await["help"];
    assert_eq!(help["reason"], "le client demande un humain", "{help}");
    assert!(help["by_script"].as_str().unwrap().contains("on_message"), "{help}");
    assert!(help["at_ms"].as_i64().unwrap() > 0);
    let (_, thread) = d.api(&format!("/api/conversations/{AWA}/messages")).await;
    assert_eq!(thread["help"]["reason"], "le client demande un humain");
    let metrics = metrics_at(&d.http, &d.url("")).await;
    assert!(
        metrics.contains("walua_handover_requests_total 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("handover"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Fatou takes it over: the request is answered.
    assert_eq!(take_over(&d, AWA, "Fatou").await.0, 200);
    assert!(awa_conversation(&d).await["help"].is_null());

    // Back to the bot, Awa asks again; this time an agent dismisses it without taking over.
    assert_eq!(
        api_delete(&d, &format!("/api/conversations/{AWA}/handover")).await.0,
        200
    );
    awa_writes(&d, "wamid.A2", "humain").await;
    assert!(!awa_conversation(&d).await["help"].is_null());
    let (status, dismissed) = api_delete(&d, &format!("/api/conversations/{AWA}/help")).await;
    assert_eq!(status, 200, "{dismissed}");
    assert_eq!(dismissed["dismissed"], true);
    let conv = awa_conversation(&d).await;
    assert!(conv["help"].is_null() && conv["handover"].is_null(), "{conv}");
}

/// A cron job (yearly: it runs when asked) that sends Awa a template, then asks for a human.
fn cron_job(ask_for_human: bool) -> String {
    format!(
        "return {{ schedule = \"0 0 0 1 1 *\", run = function()\n  env.whatsapp.send_template(\"{AWA}\", \"rappel\", \"fr\", {{ {{ type = \"body\", parameters = {{ {{ type = \"text\", text = \"facture F001\" }} }} }} }})\n  {}\nend }}\n",
        if ask_for_human { "env.handover(\"?\")" } else { "" }
    )
}

#[tokio::test]
async fn a_cron_send_still_reaches_a_handed_over_customer() {
    let dir = tempfile::tempdir().unwrap();
    put_script(dir.path(), "on_message.lua", ON_MESSAGE);
    put_script(dir.path(), "cron/reminder.lua", &cron_job(false));
    put_script(dir.path(), "cron/confused.lua", &cron_job(true));
    let text = config_text(dir.path(), DRY_RUN, "");
    let d = TestDaemon::start_in(dir, text).await;
    awa_writes(&d, "wamid.C1", "Bonjour").await;
    assert_eq!(take_over(&d, AWA, "Fatou").await.0, 200);

    let (status, ran) = d.api_post("/api/cron/reminder/run", &json!({})).await;
    assert_eq!(status, 200, "{ran}");
    let templates: Vec<Value> = d
        .outbound_of(AWA)
        .await
        .into_iter()
        .filter(|m| m["type"] == "template")
        .collect();
    assert_eq!(templates.len(), 1, "the reminder went out during the handover");
    assert_eq!(templates[0]["status"], "dry_run");

    // A cron run has no conversation to hand over: env.handover is a clear error, and the
    // run's send is dropped with it.
    let (status, failed) = d.api_post("/api/cron/confused/run", &json!({})).await;
    assert_eq!(status, 422, "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("env.handover: only a run about a customer's message"),
        "{failed}"
    );
    let count = d
        .outbound_of(AWA)
        .await
        .iter()
        .filter(|m| m["type"] == "template")
        .count();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_handover_moves_with_the_conversation_when_awa_shows_her_bsuid() {
    let d = daemon("").await;
    awa_writes(&d, "wamid.B1", "Bonjour").await;
    assert_eq!(take_over(&d, AWA, "Fatou").await.0, 200);

    // Meta now sends her BSUID too: her phone-keyed conversation merges into the BSUID one,
    // and Fatou still holds it.
    let mut delivery = fixture("text.json");
    let m = &mut delivery["entry"][0]["changes"][0]["value"]["messages"][0];
    m["timestamp"] = json!(now().to_string());
    m["id"] = json!("wamid.B2");
    d.deliver_ok(&delivery).await;
    let m = d.dispatched(AWA, "wamid.B2").await;
    assert_eq!(m["contact"], "SN.13491208655302741918");
    assert_eq!(m["script"]["scripts"], json!(["handover: agent Fatou"]), "{m}");

    // Given back through her BSUID.
    let (status, back) = api_delete(&d, "/api/conversations/SN.13491208655302741918/handover").await;
    assert_eq!((status, back["released"].clone()), (200, json!(true)), "{back}");
    assert_eq!(bot_texts(&d).await, ["Bot : Bonjour"]);
}
