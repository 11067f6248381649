//! Message templates through the real daemon: definitions on disk pushed to a fake Graph API
//! that behaves like Meta's template API (review, paging, limits), Meta's template webhooks,
//! and the check every template send passes before it is queued.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::fake_graph::FakeGraph;
use support::*;

const WABA: &str = "102290129340398";
const APP: &str = "4711";
const PNID: &str = "1234567890";
const AWA: &str = "221771234567";

/// `order_created` as the shop defines it: three body values, three quick replies.
const ORDER_CREATED: &str = r#"
name = "order_created"
language = "fr"
category = "UTILITY"

[body]
text = "Bonjour {{1}}, votre commande {{2}} d'un montant de {{3}} a bien été enregistrée. Merci de la valider."
example = ["Awa Diop", "S00042", "15 000 CFA"]

[footer]
text = "Boutique Dakar"

[[buttons]]
type = "QUICK_REPLY"
text = "Valider"

[[buttons]]
type = "QUICK_REPLY"
text = "Annuler"
"#;

/// `invoice_posted`: a PDF header, two body values.
const INVOICE_POSTED: &str = r#"
name = "invoice_posted"
language = "fr"
category = "UTILITY"

[header]
format = "DOCUMENT"
example = "facture.pdf"

[body]
text = "Votre facture {{1}} d'un montant de {{2}} est disponible. Merci pour votre confiance."
example = ["FAC/2026/0042", "15 000 CFA"]
"#;

const PDF: &[u8] = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n";

fn write_definitions(dir: &Path) {
    let t = dir.join("templates");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("order_created.fr.toml"), ORDER_CREATED).unwrap();
    std::fs::write(t.join("invoice_posted.fr.toml"), INVOICE_POSTED).unwrap();
    std::fs::write(t.join("facture.pdf"), PDF).unwrap();
}

/// A live daemon whose number belongs to WABA, with the two definitions on disk, and a
/// customer whose 24 h window is open.
async fn shop(extra_whatsapp: &str) -> (FakeGraph, TestDaemon) {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    fake.set_waba(PNID, WABA);
    let dir = tempfile::tempdir().unwrap();
    write_definitions(dir.path());
    let whatsapp = live_whatsapp(
        &fake.url(),
        &format!("waba_id = \"{WABA}\"\napp_id = \"{APP}\"\n{extra_whatsapp}"),
    );
    let text = config_text(dir.path(), &whatsapp, "");
    let d = TestDaemon::start_in(dir, text).await;
    (fake, d)
}

/// Meta's `message_template_status_update` webhook.
fn status_webhook(id: &str, name: &str, lang: &str, event: &str, reason: &str) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA, "time": now(), "changes": [{
            "field": "message_template_status_update",
            "value": {
                "event": event,
                "message_template_id": id.parse::<u64>().unwrap(),
                "message_template_name": name,
                "message_template_language": lang,
                "reason": reason,
                "message_template_category": "UTILITY",
            }
        }]}]
    })
}

async fn template_status(d: &TestDaemon, name: &str) -> Option<String> {
    let (_, all) = d.api("/api/templates").await;
    all["templates"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)
        .and_then(|t| t["status"].as_str().map(str::to_string))
}

async fn wait_template_status(d: &TestDaemon, name: &str, want: &str) {
    d.eventually(&format!("{name} {want}"), || async {
        (template_status(d, name).await.as_deref() == Some(want)).then_some(())
    })
    .await;
}

fn order(params: Value) -> Value {
    json!({"to": AWA, "type": "template", "name": "order_created", "lang": "fr", "params": params})
}

async fn outbox_len(d: &TestDaemon) -> usize {
    d.messages_of(AWA).await.len()
}

#[tokio::test]
async fn push_submits_the_definitions_then_metas_review_approves_and_the_send_goes_out() {
    let (fake, d) = shop("").await;

    // Push: both definitions are created at Meta, the PDF example through the resumable upload.
    let (status, pushed) = d.api_post("/api/templates/push", &json!({})).await;
    assert_eq!(status, 200, "{pushed}");
    let results = pushed["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{pushed}");
    assert!(results.iter().all(|r| r["result"] == "created"), "{pushed}");
    let at_meta = fake.templates();
    assert_eq!(at_meta.len(), 2);
    let invoice = at_meta.iter().find(|t| t.name == "invoice_posted").unwrap();
    let handle = invoice.components[0]["example"]["header_handle"][0].as_str().unwrap();
    assert!(
        fake.handles().iter().any(|h| h == handle),
        "the header example was uploaded first"
    );
    let order_id = at_meta.iter().find(|t| t.name == "order_created").unwrap().id.clone();

    // Meta is reviewing it: a send is refused before anything is queued.
    wait_template_status(&d, "order_created", "PENDING").await;
    let (status, refused) = d
        .api_post("/api/messages", &order(json!(["Awa", "S00042", "15 000 CFA"])))
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("PENDING"), "{refused}");
    assert_eq!(outbox_len(&d).await, 0, "nothing recorded for a refused send");

    // Meta approves: the webhook updates the registry.
    fake.set_template_status("order_created", "fr", "APPROVED");
    d.deliver_ok(&status_webhook(&order_id, "order_created", "fr", "APPROVED", "NONE"))
        .await;
    wait_template_status(&d, "order_created", "APPROVED").await;

    // The send goes out, components built from a plain list: body values, then payloads.
    let (status, queued) = d
        .api_post(
            "/api/messages",
            &order(json!([
                "Awa Diop",
                "S00042",
                "15 000 CFA",
                "btn_validate_order_42",
                "btn_cancel_order_42"
            ])),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let sent = fake.wait_for_accepted(1, Duration::from_secs(5)).await;
    let components = &sent[0].1["template"]["components"];
    assert_eq!(
        components,
        &json!([
            {"type": "body", "parameters": [
                {"type": "text", "text": "Awa Diop"}, {"type": "text", "text": "S00042"}, {"type": "text", "text": "15 000 CFA"}]},
            {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{"type": "payload", "payload": "btn_validate_order_42"}]},
            {"type": "button", "sub_type": "quick_reply", "index": "1", "parameters": [{"type": "payload", "payload": "btn_cancel_order_42"}]},
        ]),
        "{sent:?}"
    );
    d.wait_status(&queued["id"], "sent").await;

    // Pushing again changes nothing.
    let (_, again) = d.api_post("/api/templates/push", &json!({})).await;
    assert!(
        again["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"] == "unchanged"),
        "{again}"
    );
    assert_eq!(fake.templates().len(), 2);
}

#[tokio::test]
async fn rejected_templates_and_mismatched_parameters_get_a_422_before_anything_is_queued() {
    let (fake, d) = shop("").await;
    let body = json!([{"type": "BODY", "text": "Bonjour {{1}}, votre commande {{2}} d'un montant de {{3}} a bien été enregistrée.",
                       "example": {"body_text": [["Awa", "S1", "10"]]}},
                      {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Valider"}, {"type": "QUICK_REPLY", "text": "Annuler"}]}]);
    fake.add_template(WABA, "order_created", "fr", "UTILITY", "APPROVED", body.clone());
    fake.add_template(WABA, "promo_tabaski", "fr", "MARKETING", "REJECTED", body);
    let (status, synced) = d.api_post("/api/templates/sync", &json!({})).await;
    assert_eq!(status, 200, "{synced}");

    let cases = [
        (
            json!({"to": AWA, "type": "template", "name": "promo_tabaski", "lang": "fr", "params": ["a", "b", "c"]}),
            "REJECTED",
        ),
        (order(json!(["Awa", "S00042"])), "2 values given"),
        (
            json!({"to": AWA, "type": "template", "name": "order_created", "lang": "fr",
                   "components": [{"type": "body", "parameters": [{"type": "text", "text": "Awa"}]}]}),
            "body",
        ),
        (
            json!({"to": AWA, "type": "template", "name": "order_created", "lang": "fr",
                   "params": ["Awa", "S1", "10"],
                   "components": []}),
            "not both",
        ),
        (
            json!({"to": AWA, "type": "template", "name": "bienvenue", "lang": "fr"}),
            "does not exist",
        ),
        (
            json!({"to": AWA, "type": "template", "name": "order_created", "lang": "en_US", "params": ["a", "b", "c"]}),
            "does not exist",
        ),
        (order(json!(["Awa", "S00042\nS00043", "10"])), "line break"),
    ];
    for (request, why) in cases {
        let (status, answer) = d.api_post("/api/messages", &request).await;
        assert_eq!(status, 422, "{request} → {answer}");
        let error = answer["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            error.contains(&why.to_lowercase()),
            "{request}: `{error}` should say {why}"
        );
    }
    assert_eq!(outbox_len(&d).await, 0, "nothing was recorded");
    assert!(fake.accepted().is_empty(), "nothing reached Meta");

    // en-US and en_US are the same language.
    fake.add_template(
        WABA,
        "welcome",
        "en_US",
        "UTILITY",
        "APPROVED",
        json!([{"type": "BODY", "text": "Welcome to the shop, we are glad you are here."}]),
    );
    d.api_post("/api/templates/sync", &json!({})).await;
    let (status, answer) = d
        .api_post(
            "/api/messages",
            &json!({"to": AWA, "type": "template", "name": "welcome", "lang": "en-US"}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test]
async fn sync_pages_through_every_template_of_the_waba() {
    let (fake, d) = shop("").await;
    for i in 0..230 {
        fake.add_template(
            WABA,
            &format!("relance_{i:03}"),
            "fr",
            "UTILITY",
            if i % 10 == 0 { "REJECTED" } else { "APPROVED" },
            json!([{"type": "BODY", "text": format!("Bonjour, ceci est le rappel numéro {i} de la boutique.")}]),
        );
    }
    let (status, synced) = d.api_post("/api/templates/sync", &json!({})).await;
    assert_eq!(status, 200, "{synced}");
    assert_eq!(synced["synced"][0]["templates"], 230, "{synced}");
    assert_eq!(synced["synced"][0]["pages"], 3, "100 per page");
    let pages = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/message_templates") && r.method == "GET")
        .count();
    assert!(pages >= 3, "{pages} list requests");
    let (_, listed) = d.api("/api/templates").await;
    let templates = listed["templates"].as_array().unwrap();
    assert_eq!(templates.len(), 230);
    assert_eq!(templates.iter().filter(|t| t["status"] == "REJECTED").count(), 23);
    assert!(listed["wabas"][0]["synced_at"].is_string(), "{}", listed["wabas"]);

    let metrics = metrics_at(&d.http, &d.url("")).await;
    assert!(
        metrics.contains("walua_template_changes_total{what=\"new\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_paused_template_holds_its_queued_sends_until_meta_unpauses_it_then_sends_them_once() {
    let (fake, d) = shop("").await;
    let id = fake.add_template(
        WABA,
        "order_created",
        "fr",
        "UTILITY",
        "APPROVED",
        json!([{"type": "BODY", "text": "Bonjour {{1}}, votre commande {{2}} d'un montant de {{3}} a bien été enregistrée.",
                "example": {"body_text": [["Awa", "S1", "10"]]}}]),
    );
    d.api_post("/api/templates/sync", &json!({})).await;

    // Meta pauses it for low quality.
    fake.set_template_status("order_created", "fr", "PAUSED");
    d.deliver_ok(&status_webhook(&id, "order_created", "fr", "PAUSED", "LOW_QUALITY"))
        .await;
    wait_template_status(&d, "order_created", "PAUSED").await;

    let (status, queued) = d
        .api_post("/api/messages", &order(json!(["Awa", "S00042", "15 000 CFA"])))
        .await;
    assert_eq!(status, 202, "a paused template's sends are queued and held: {queued}");
    let held = d
        .eventually("the send held", || async {
            let (_, m) = d.api(&format!("/api/messages/{}", queued["id"])).await;
            m.to_string().contains("held: template").then_some(m)
        })
        .await;
    assert_ne!(held["status"], "sent", "{held}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        fake.accepted().is_empty(),
        "nothing reached Meta while the template is paused"
    );

    // Meta unpauses it: the held send goes out at once, once.
    fake.set_template_status("order_created", "fr", "APPROVED");
    d.deliver_ok(&status_webhook(&id, "order_created", "fr", "REINSTATED", "NONE"))
        .await;
    d.wait_status(&queued["id"], "sent").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.accepted_count(), 1, "sent exactly once");
    let metrics = metrics_at(&d.http, &d.url("")).await;
    assert!(metrics.contains("walua_template_holds_total"), "{metrics}");
}

#[tokio::test]
async fn quality_category_and_component_webhooks_update_the_registry_and_red_quality_degrades_health() {
    let (fake, d) = shop("").await;
    let id = fake.add_template(
        WABA,
        "order_created",
        "fr",
        "UTILITY",
        "APPROVED",
        json!([{"type": "BODY", "text": "Bonjour {{1}}, votre commande {{2}} d'un montant de {{3}} a bien été enregistrée.",
                "example": {"body_text": [["Awa", "S1", "10"]]}}]),
    );
    d.api_post("/api/templates/sync", &json!({})).await;
    let change = |field: &str, value: Value| {
        let mut value = value;
        value["message_template_id"] = json!(id.parse::<u64>().unwrap());
        value["message_template_name"] = json!("order_created");
        value["message_template_language"] = json!("fr");
        json!({"object": "whatsapp_business_account",
               "entry": [{"id": WABA, "time": now(), "changes": [{"field": field, "value": value}]}]})
    };
    d.deliver_ok(&change(
        "message_template_quality_update",
        json!({"previous_quality_score": "GREEN", "new_quality_score": "RED"}),
    ))
    .await;
    d.deliver_ok(&change(
        "template_category_update",
        json!({"new_category": "MARKETING"}),
    ))
    .await;
    d.deliver_ok(&change(
        "message_template_components_update",
        json!({"message_template_element": "Bonjour {{1}}, votre commande {{2}} est prête."}),
    ))
    .await;
    d.settled().await;
    let (_, listed) = d.api("/api/templates").await;
    let t = &listed["templates"][0];
    assert_eq!(t["quality"], "RED", "{t}");
    assert_eq!(t["category"], "MARKETING", "{t}");
    assert_eq!(
        t["components"][0]["text"],
        "Bonjour {{1}}, votre commande {{2}} est prête."
    );
    // The new body takes two values: three are refused now.
    let (status, answer) = d
        .api_post("/api/messages", &order(json!(["Awa", "S00042", "15 000 CFA"])))
        .await;
    assert_eq!(status, 422, "{answer}");
    let (status, answer) = d.api_post("/api/messages", &order(json!(["Awa", "S00042"]))).await;
    assert_eq!(status, 202, "RED still sends, with a warning: {answer}");
    let (_, health) = d.api("/healthz").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health.to_string().contains("RED"), "{health}");
    let metrics = metrics_at(&d.http, &d.url("")).await;
    assert!(
        metrics.contains("walua_template_changes_total{what=\"quality\",to=\"RED\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn diff_shows_what_differs_and_push_respects_metas_edit_limits() {
    let (fake, d) = shop("").await;
    d.api_post("/api/templates/push", &json!({})).await;
    fake.set_template_status("order_created", "fr", "APPROVED");
    fake.set_template_status("invoice_posted", "fr", "APPROVED");
    // A template created in WhatsApp Manager, with no definition on disk.
    fake.add_template(
        WABA,
        "ancienne_promo",
        "fr",
        "MARKETING",
        "APPROVED",
        json!([{"type": "BODY", "text": "Une ancienne promotion de la boutique, merci."}]),
    );

    // The operator rewrites the body of order_created.
    let path = d.dir.path().join("templates/order_created.fr.toml");
    let edited = ORDER_CREATED.replace("Merci de la valider.", "Merci de la valider avant demain.");
    std::fs::write(&path, &edited).unwrap();
    let (_, diff) = d
        .eventually("the edited definition reloaded", || async {
            let (s, diff) = d.api("/api/templates/diff?sync=1").await;
            let row = diff["diff"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == "order_created")?
                .clone();
            (s == 200 && row["action"] == "edit").then_some((row, diff))
        })
        .await;
    let rows = diff["diff"].as_array().unwrap();
    let promo = rows.iter().find(|r| r["name"] == "ancienne_promo").unwrap();
    assert_eq!(promo["action"], "delete", "{promo}");
    assert_eq!(
        rows.iter().find(|r| r["name"] == "invoice_posted").unwrap()["action"],
        "none"
    );

    // push edits it (once), keeps what is only at Meta.
    let (_, pushed) = d.api_post("/api/templates/push", &json!({})).await;
    let result = |name: &str| {
        pushed["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["result"]
            .clone()
    };
    assert_eq!(result("order_created"), "edited", "{pushed}");
    assert_eq!(result("ancienne_promo"), "kept", "{pushed}");
    assert!(
        fake.templates()
            .iter()
            .any(|t| t.name == "ancienne_promo" && t.deleted.is_none())
    );

    // Approved again, then edited again the same day: Meta allows one edit a day.
    fake.set_template_status("order_created", "fr", "APPROVED");
    std::fs::write(&path, edited.replace("avant demain", "aujourd'hui")).unwrap();
    let row = d
        .eventually("the second edit flagged", || async {
            let (_, diff) = d.api("/api/templates/diff?sync=1").await;
            let row = diff["diff"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == "order_created")?
                .clone();
            (row["action"] == "blocked").then_some(row)
        })
        .await;
    assert!(row["note"].as_str().unwrap().contains("once in 24 hours"), "{row}");

    // A category change is never pushed.
    std::fs::write(
        d.dir.path().join("templates/invoice_posted.fr.toml"),
        INVOICE_POSTED.replace("UTILITY", "MARKETING"),
    )
    .unwrap();
    let row = d
        .eventually("the category change flagged", || async {
            let (_, diff) = d.api("/api/templates/diff").await;
            let row = diff["diff"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == "invoice_posted")?
                .clone();
            (row["action"] == "blocked").then_some(row)
        })
        .await;
    assert!(row["note"].as_str().unwrap().contains("category"), "{row}");

    // --delete deletes what has no definition; its name is then blocked for 30 days.
    let (_, pushed) = d.api_post("/api/templates/push?delete=1", &json!({})).await;
    assert!(pushed.to_string().contains("\"deleted\""), "{pushed}");
    assert!(
        fake.templates()
            .iter()
            .any(|t| t.name == "ancienne_promo" && t.deleted.is_some())
    );
    std::fs::write(
        d.dir.path().join("templates/ancienne_promo.fr.toml"),
        "name = \"ancienne_promo\"\nlanguage = \"fr\"\ncategory = \"MARKETING\"\n[body]\ntext = \"Une nouvelle promotion de la boutique, merci de votre fidélité.\"\n",
    )
    .unwrap();
    let row = d
        .eventually("the deleted name flagged", || async {
            let (_, diff) = d.api("/api/templates/diff").await;
            let row = diff["diff"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == "ancienne_promo")?
                .clone();
            (row["action"] == "blocked").then_some(row)
        })
        .await;
    assert!(row["note"].as_str().unwrap().contains("30 days"), "{row}");
}

#[tokio::test]
async fn before_any_sync_a_definition_checks_the_send_and_an_unknown_template_goes_with_a_warning() {
    // Dry run: no Meta, no registry.
    let dir = tempfile::tempdir().unwrap();
    write_definitions(dir.path());
    let text = config_text(dir.path(), DRY_RUN, "");
    let d = TestDaemon::start_in(dir, text).await;
    let (status, answer) = d.api_post("/api/messages", &order(json!(["Awa", "S00042"]))).await;
    assert_eq!(status, 422, "the definition takes 3 body values: {answer}");
    let (status, answer) = d
        .api_post(
            "/api/messages",
            &order(json!({"body": ["Awa Diop", "S00042", "15 000 CFA"]})),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = d
        .api_post(
            "/api/messages",
            &json!({"to": AWA, "type": "template", "name": "inconnu", "lang": "fr", "params": ["x"]}),
        )
        .await;
    assert_eq!(
        status, 202,
        "unknown templates still go (as before template management): {answer}"
    );
    let m = &d.messages_of(AWA).await;
    let unknown = m.iter().find(|m| m["raw"]["template"]["name"] == "inconnu").unwrap();
    assert_eq!(
        unknown["raw"]["template"]["components"],
        json!([{"type": "body", "parameters": [{"type": "text", "text": "x"}]}])
    );
    let (_, listed) = d.api("/api/templates").await;
    assert_eq!(listed["local_only"].as_array().unwrap().len(), 2, "{listed}");
}

#[tokio::test]
async fn scripts_send_templates_with_plain_values_and_read_them_with_env_templates_get() {
    let (fake, d) = shop("").await;
    fake.add_template(
        WABA,
        "order_created",
        "fr",
        "UTILITY",
        "APPROVED",
        json!([{"type": "BODY", "text": "Bonjour {{1}}, votre commande {{2}} d'un montant de {{3}} a bien été enregistrée.",
                "example": {"body_text": [["Awa", "S1", "10"]]}},
               {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Valider"}, {"type": "QUICK_REPLY", "text": "Annuler"}]}]),
    );
    d.api_post("/api/templates/sync", &json!({})).await;
    d.write_script(
        "on_message.lua",
        r#"return { run = function(msg)
  local t = env.templates.get("order_created", "fr")
  local missing = env.templates.get("nope") == nil
  env.whatsapp.send_text(msg.from, t.status .. "|" .. table.concat(t.parameters, ",") .. "|" .. tostring(missing) .. "|" .. t.text)
  env.whatsapp.send_template(msg.from, "order_created", "fr", { "Awa Diop", "S00042", "15 000 CFA" })
end }
"#,
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    d.deliver_ok(&text_delivery(AWA, "wamid.T1", "Bonjour", now())).await;
    let ran = d.dispatched(AWA, "wamid.T1").await;
    assert!(ran["script"]["error"].is_null(), "{ran}");
    let sent = fake.wait_for_accepted(2, Duration::from_secs(5)).await;
    assert_eq!(
        sent[0].1["text"]["body"],
        "APPROVED|1,2,3|true|Bonjour {{1}}, votre commande {{2}} d'un montant de {{3}} a bien été enregistrée."
    );
    assert_eq!(
        sent[1].1["template"]["components"][0]["parameters"][2]["text"],
        "15 000 CFA"
    );
    assert_eq!(
        sent[1].1["template"]["components"].as_array().unwrap().len(),
        1,
        "no payloads given"
    );
}

fn walua(conf: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_walua"))
        .arg("--config")
        .arg(conf)
        .args(args)
        .output()
        .unwrap()
}

async fn walua_async(conf: &Path, args: &[&str]) -> (bool, String) {
    let (conf, args): (std::path::PathBuf, Vec<String>) =
        (conf.to_path_buf(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = walua(&conf, &args);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

#[test]
fn check_reports_each_definition_that_breaks_metas_rules_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    write_definitions(dir.path());
    std::fs::write(
        dir.path().join("templates/relance.fr.toml"),
        "name = \"Relance-Client\"\nlanguage = \"fr\"\ncategory = \"UTILITY\"\n[body]\ntext = \"{{1}} doit {{2}}\"\nexample = [\"Awa\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("templates/casse.fr.toml"), "name = \"casse\"\n[body\n").unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    let conf = dir.path().join("walua.toml");
    std::fs::write(&conf, config_text(dir.path(), DRY_RUN, "")).unwrap();
    let out = walua(&conf, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("relance.fr.toml"), "{stdout}");
    assert!(
        stdout.contains("casse.fr.toml:2"),
        "the TOML error names its line: {stdout}"
    );
    assert!(stdout.contains("name"), "{stdout}");
    assert!(stdout.contains("example"), "{stdout}");
    assert!(stdout.contains("3 template definition(s)"), "{stdout}");

    std::fs::remove_file(dir.path().join("templates/relance.fr.toml")).unwrap();
    std::fs::remove_file(dir.path().join("templates/casse.fr.toml")).unwrap();
    let out = walua(&conf, &["check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn the_cli_lists_diffs_pushes_and_sends_templates_through_the_daemon() {
    let (fake, d) = shop("").await;
    let conf = d.dir.path().join("walua.toml");
    std::fs::write(&conf, d.config_text.replace("127.0.0.1:0", &d.addr.to_string())).unwrap();

    let (ok, out) = walua_async(&conf, &["templates", "diff", "--sync"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("order_created") && out.contains("create"), "{out}");
    let (ok, out) = walua_async(&conf, &["templates", "push"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("created"), "{out}");
    fake.set_template_status("order_created", "fr", "APPROVED");
    let (ok, out) = walua_async(&conf, &["templates", "sync"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("status PENDING → APPROVED"), "{out}");
    let (ok, out) = walua_async(&conf, &["templates", "list"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("APPROVED") && out.contains("PENDING") && out.contains(WABA),
        "{out}"
    );

    let (ok, out) = walua_async(
        &conf,
        &[
            "send",
            "--to",
            AWA,
            "--template",
            "order_created",
            "--param",
            "Awa",
            "--param",
            "S00042",
        ],
    )
    .await;
    assert!(!ok, "two values for three parameters: {out}");
    assert!(out.contains("3 body parameters"), "{out}");
    let (ok, out) = walua_async(
        &conf,
        &[
            "send",
            "--to",
            AWA,
            "--template",
            "order_created",
            "--param",
            "Awa",
            "--param",
            "S00042",
            "--param",
            "15 000 CFA",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let sent = fake.wait_for_accepted(1, Duration::from_secs(5)).await;
    assert_eq!(
        sent[0].1["template"]["components"][0]["parameters"][1]["text"],
        "S00042"
    );
}
