//! Opt-out through the real daemon and the fake Graph API: each source (keywords, Meta's
//! `user_preferences` webhook, Meta's error 131050), each scope (marketing, everything the
//! business starts), the exceptions, and opting back in.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::fake_graph::{FakeGraph, Scripted};
use support::*;

const AWA: &str = "221771234567";

const PROMO: &str = r#"name = "promo_tabaski"
language = "fr"
category = "MARKETING"

[body]
text = "Bonjour {{1}}, profitez de nos offres de Tabaski cette semaine dans toutes nos boutiques."
example = ["Awa"]
"#;

/// A bot that answers every text, a cron job that notifies Awa, the shipped templates plus a
/// MARKETING one, and the `[optout]` section given.
async fn shop(optout: &str) -> (FakeGraph, TestDaemon) {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    put_script(
        dir.path(),
        "on_message.lua",
        r#"return { run = function(msg) env.whatsapp.send_text(msg.from, "Bot : bien reçu") end }"#,
    );
    put_script(
        dir.path(),
        "cron/rappel.lua",
        &format!(
            r#"return {{ schedule = "0 0 0 1 1 *", run = function()
  env.whatsapp.send_text("{AWA}", "Rappel : votre commande vous attend")
end }}"#
        ),
    );
    put_script(
        dir.path(),
        "buttons/etat.lua",
        r#"return { match = "^etat$", anyone = true, run = function()
  local o = contact.opted_out
  env.whatsapp.send_text(message.from, o and (o.scope .. " " .. o.source) or "abonné")
end }"#,
    );
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    for f in ["order_state.fr.toml", "order_created.fr.toml"] {
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("templates")
                .join(f),
            templates.join(f),
        )
        .unwrap();
    }
    std::fs::write(templates.join("promo_tabaski.fr.toml"), PROMO).unwrap();
    let text = config_text(
        dir.path(),
        &live_whatsapp(&fake.url(), ""),
        &format!("[optout]\n{optout}\n"),
    );
    let d = TestDaemon::start_in(dir, text).await;
    (fake, d)
}

async fn says(d: &TestDaemon, wamid: &str, text: &str) {
    d.deliver_ok(&text_delivery(AWA, wamid, text, now())).await;
    d.dispatched(AWA, wamid).await;
}

async fn contact(d: &TestDaemon) -> Value {
    let (_, v) = d.api("/api/conversations").await;
    v["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["contact"] == AWA)
        .cloned()
        .unwrap()
}

async fn template(d: &TestDaemon, name: &str, params: Value) -> (u16, Value) {
    d.api_post(
        "/api/messages",
        &json!({"to": AWA, "type": "template", "name": name, "lang": "fr", "params": params}),
    )
    .await
}

fn order_state() -> Value {
    json!(["S00042", "Confirmée"])
}

fn texts(sent: &[(String, Value)]) -> Vec<String> {
    sent.iter()
        .map(|(_, b)| b["text"]["body"].as_str().unwrap_or("(template)").to_string())
        .collect()
}

#[tokio::test]
async fn arret_stops_everything_the_business_starts_but_replies_to_the_customer_still_go() {
    let (fake, d) = shop("").await;
    says(&d, "wamid.1", "Bonjour").await;
    fake.wait_for_accepted(1, Duration::from_secs(10)).await;

    // "Arrêt !", in any case and with its accent: handled before any script.
    says(&d, "wamid.2", "  arrêt ! ").await;
    let sent = fake.wait_for_accepted(2, Duration::from_secs(10)).await;
    assert!(
        texts(&sent)[1].starts_with("C'est noté : nous ne vous enverrons plus de messages."),
        "the confirmation, not the bot: {:?}",
        texts(&sent)
    );
    let m = d.dispatched(AWA, "wamid.2").await;
    assert_eq!(m["script"]["scripts"], json!(["optout: stop (ARRET)"]), "{m}");
    let c = contact(&d).await;
    assert_eq!(c["opted_out"]["scope"], "all");
    assert_eq!(c["opted_out"]["source"], "keyword:ARRET");
    assert!(c["opted_out"]["since_ms"].as_i64().unwrap() > 0);
    let (ok, out) = d.cli(&["conversations"]).await;
    assert!(
        ok && out.contains("OPTED OUT") && out.lines().any(|l| l.contains(AWA) && l.contains(" all ")),
        "{out}"
    );

    // A template, even a utility one, is refused before queueing, with the reason.
    let (status, body) = template(&d, "order_state", order_state()).await;
    assert_eq!(status, 422, "{body}");
    let why = body["error"].as_str().unwrap();
    assert!(
        why.contains("opted out of all messages") && why.contains("keyword:ARRET"),
        "{why}"
    );
    // A cron notification is refused too: the run fails with the reason, nothing is sent.
    let (status, body) = d.api_post("/api/cron/rappel/run", &json!({})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("opted out"), "{body}");
    // The customer writes again: the bot answers (a reply, inside the window).
    says(&d, "wamid.3", "Où est ma commande ?").await;
    let sent = fake.wait_for_accepted(3, Duration::from_secs(10)).await;
    assert_eq!(texts(&sent)[2], "Bot : bien reçu");
    // In Lua, the contact says so.
    d.deliver_ok(&click_delivery(AWA, "wamid.4", "etat", "État")).await;
    let sent = fake.wait_for_accepted(4, Duration::from_secs(10)).await;
    assert_eq!(texts(&sent)[3], "all keyword:ARRET");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.accepted_count(), 4, "nothing else went");

    // START: back in, confirmed, and templates go again.
    says(&d, "wamid.5", "Start").await;
    let sent = fake.wait_for_accepted(5, Duration::from_secs(10)).await;
    assert!(texts(&sent)[4].starts_with("C'est noté : vous recevrez à nouveau nos messages."));
    assert_eq!(contact(&d).await["opted_out"], Value::Null);
    let (status, body) = template(&d, "order_state", order_state()).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn a_sentence_with_a_stop_word_opts_nobody_out() {
    let (fake, d) = shop("").await;
    for (i, t) in ["je veux arrêter la commande", "STOP ou encore ?", "stopper"]
        .iter()
        .enumerate()
    {
        says(&d, &format!("wamid.S{i}"), t).await;
    }
    let sent = fake.wait_for_accepted(3, Duration::from_secs(10)).await;
    assert_eq!(texts(&sent), ["Bot : bien reçu"; 3]);
    assert_eq!(contact(&d).await["opted_out"], Value::Null);
}

#[tokio::test]
async fn stop_promotions_stops_marketing_templates_only() {
    let (fake, d) = shop("").await;
    says(&d, "wamid.P1", "Stop promotions").await;
    let sent = fake.wait_for_accepted(1, Duration::from_secs(10)).await;
    assert!(texts(&sent)[0].contains("vous ne recevrez plus nos promotions"));
    assert_eq!(contact(&d).await["opted_out"]["scope"], "marketing");
    let (status, body) = template(&d, "promo_tabaski", json!(["Awa"])).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("MARKETING template `promo_tabaski`"),
        "{body}"
    );
    let (status, body) = template(&d, "order_state", order_state()).await;
    assert_eq!(status, 202, "a utility template still goes: {body}");
    // A cron notification (free text, in the window) still goes.
    let (status, body) = d.api_post("/api/cron/rappel/run", &json!({})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn exceptions_name_what_goes_despite_an_opt_out_of_everything() {
    let (_fake, d) = shop("exceptions = [\"order_state\", \"cron/rappel\"]").await;
    says(&d, "wamid.E1", "STOP").await;
    assert_eq!(contact(&d).await["opted_out"]["scope"], "all");
    let (status, body) = template(&d, "order_state", order_state()).await;
    assert_eq!(status, 202, "excepted template: {body}");
    let (status, body) = d.api_post("/api/cron/rappel/run", &json!({})).await;
    assert_eq!(status, 200, "excepted script: {body}");
    let (status, _) = template(&d, "order_created", json!(["Awa", "S1", "1 000 CFA"])).await;
    assert_eq!(status, 422, "not excepted");
}

fn preferences(value: &str) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "user_preferences",
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1234567890"},
                  "contacts": [{"profile": {"name": "Awa"}, "wa_id": AWA}],
                  "user_preferences": [{"wa_id": AWA, "detail": "User requested to stop marketing messages",
                                        "category": "marketing_messages", "value": value, "timestamp": 1796000000}]}}]}]})
}

#[tokio::test]
async fn metas_user_preferences_stop_and_resume_marketing() {
    let (_fake, d) = shop("").await;
    says(&d, "wamid.U1", "Bonjour").await;
    d.deliver_ok(&preferences("stop")).await;
    let c = d
        .eventually("Meta's stop applied", || async {
            let c = contact(&d).await;
            (!c["opted_out"].is_null()).then_some(c)
        })
        .await;
    assert_eq!(c["opted_out"]["scope"], "marketing");
    assert_eq!(c["opted_out"]["source"], "meta:user_preferences");
    assert_eq!(c["opted_out"]["since_ms"], 1_796_000_000_000i64);
    let (status, _) = template(&d, "promo_tabaski", json!(["Awa"])).await;
    assert_eq!(status, 422);
    d.deliver_ok(&preferences("resume")).await;
    d.eventually("Meta's resume applied", || async {
        contact(&d).await["opted_out"].is_null().then_some(())
    })
    .await;
    let (status, body) = template(&d, "promo_tabaski", json!(["Awa"])).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn metas_error_131050_opts_the_user_out_of_marketing() {
    let (fake, d) = shop("").await;
    says(&d, "wamid.M1", "Bonjour").await;
    fake.wait_for_accepted(1, Duration::from_secs(10)).await;
    fake.push_response(Scripted::MetaError {
        http: 400,
        code: 131050,
        message: "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business".into(),
        details: "".into(),
    });
    let (status, body) = template(&d, "promo_tabaski", json!(["Awa"])).await;
    assert_eq!(status, 202, "{body}");
    d.wait_status(&body["id"], "failed").await;
    let c = contact(&d).await;
    assert_eq!(c["opted_out"]["scope"], "marketing", "{c}");
    assert_eq!(c["opted_out"]["source"], "meta:131050");
    let (status, _) = template(&d, "promo_tabaski", json!(["Awa"])).await;
    assert_eq!(status, 422, "refused before queueing now");
}

#[tokio::test]
async fn a_template_script_shapes_the_confirmation() {
    let (fake, d) = shop("keywords = [\"STOP\", \"ANNULER ABONNEMENT\"]").await;
    d.write_script(
        "templates/optout_confirmation.lua",
        r#"return function(r) return { type = "text", text = "Bien noté (" .. r.request .. ", " .. tostring(r.scope) .. ", " .. r.keyword .. ")." } end"#,
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    says(&d, "wamid.T1", "annuler abonnement").await;
    let sent = fake.wait_for_accepted(1, Duration::from_secs(10)).await;
    assert_eq!(texts(&sent)[0], "Bien noté (stop, all, ANNULER ABONNEMENT).");
    // ARRET is no longer a keyword with this list: the bot answers.
    says(&d, "wamid.T2", "arrêt").await;
    let sent = fake.wait_for_accepted(2, Duration::from_secs(10)).await;
    assert_eq!(texts(&sent)[1], "Bot : bien reçu");
}
