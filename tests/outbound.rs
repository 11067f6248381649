//! Outbound messages through the real daemon to a fake Graph API: every type's JSON,
//! retries, definite failures, the 24 h window, rate limits, restarts and statuses.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::fake_graph::{FakeGraph, Scripted};
use support::*;

const CUSTOMER: &str = "221771234567";

/// A daemon sending to a fake Graph API, with a customer whose 24 h window is open.
async fn live(extra: &str) -> (FakeGraph, TestDaemon) {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let d = TestDaemon::start_live(&fake.url(), extra).await;
    d.deliver_ok(&text_delivery(CUSTOMER, "wamid.IN.OPEN", "Bonjour", now() - 60))
        .await;
    d.settled().await;
    (fake, d)
}

async fn send(d: &TestDaemon, body: Value) -> (u16, Value) {
    d.api_post("/api/messages", &body).await
}

async fn message(d: &TestDaemon, id: &Value) -> Value {
    d.api(&format!("/api/messages/{id}")).await.1
}

#[tokio::test]
async fn each_message_type_reaches_the_graph_api_with_metas_json() {
    let (fake, d) = live("").await;
    let cases = vec![
        (
            json!({"to": CUSTOMER, "type": "text", "text": "Votre commande est prête", "reply_to": "wamid.IN.OPEN"}),
            json!({"type": "text", "text": {"body": "Votre commande est prête"}, "context": {"message_id": "wamid.IN.OPEN"}}),
        ),
        (
            json!({"to": CUSTOMER, "type": "image", "link": "https://exemple.sn/p.jpg", "caption": "Photo"}),
            json!({"type": "image", "image": {"link": "https://exemple.sn/p.jpg", "caption": "Photo"}}),
        ),
        (
            json!({"to": CUSTOMER, "type": "document", "media": "123456", "filename": "F001.pdf", "caption": "Votre facture"}),
            json!({"type": "document", "document": {"id": "123456", "filename": "F001.pdf", "caption": "Votre facture"}}),
        ),
        (
            json!({"to": CUSTOMER, "type": "template", "name": "order_created", "lang": "fr",
                   "components": [{"type": "body", "parameters": [{"type": "text", "text": "S00042"}]}]}),
            json!({"type": "template", "template": {"name": "order_created", "language": {"code": "fr"},
                   "components": [{"type": "body", "parameters": [{"type": "text", "text": "S00042"}]}]}}),
        ),
        (
            json!({"to": CUSTOMER, "type": "buttons", "body": "Valider ?", "footer": "Boutique",
                   "buttons": [{"id": "btn_yes", "title": "Oui"}, {"id": "btn_no", "title": "Non"}]}),
            json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "Valider ?"}, "footer": {"text": "Boutique"},
                   "action": {"buttons": [{"type": "reply", "reply": {"id": "btn_yes", "title": "Oui"}},
                                          {"type": "reply", "reply": {"id": "btn_no", "title": "Non"}}]}}}),
        ),
        (
            json!({"to": CUSTOMER, "type": "list", "body": "Paiement", "button": "Choisir",
                   "sections": [{"title": "Mobile", "rows": [{"id": "pay_wave", "title": "Wave"}, {"id": "pay_om", "title": "Orange Money", "description": "OM"}]}]}),
            json!({"type": "interactive", "interactive": {"type": "list", "body": {"text": "Paiement"},
                   "action": {"button": "Choisir", "sections": [{"title": "Mobile", "rows": [{"id": "pay_wave", "title": "Wave"}, {"id": "pay_om", "title": "Orange Money", "description": "OM"}]}]}}}),
        ),
    ];
    let mut ids = Vec::new();
    for (request, _) in &cases {
        let (status, answer) = send(&d, request.clone()).await;
        assert_eq!(status, 202, "{request}: {answer}");
        assert_eq!(answer["status"], "queued");
        ids.push(answer["id"].clone());
    }
    let accepted = fake.wait_for_accepted(cases.len(), Duration::from_secs(10)).await;
    for ((request, expected), id) in cases.iter().zip(&ids) {
        let m = d.wait_status(id, "sent").await;
        let wamid = m["wamid"].as_str().expect("wamid stored");
        let (_, body) = accepted.iter().find(|(w, _)| w == wamid).expect("the fake accepted it");
        assert_eq!(body["messaging_product"], "whatsapp");
        assert_eq!(body["to"], CUSTOMER);
        assert_eq!(body["biz_opaque_callback_data"], format!("walua:{id}"));
        for (k, v) in expected.as_object().unwrap() {
            assert_eq!(&body[k], v, "{request}: field {k}");
        }
        assert_eq!(m["raw"], *body, "the stored raw copy is the request sent");
    }
    // Every request carried the bearer token.
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {ACCESS_TOKEN}")[..]))
    );
}

#[tokio::test]
async fn a_bsuid_recipient_goes_out_as_recipient_not_to() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let d = TestDaemon::start_live(&fake.url(), "allow_outside_window = true").await;
    let (status, a) = send(
        &d,
        json!({"to": "SN.99887766554433221100", "type": "text", "text": "Salut"}),
    )
    .await;
    assert_eq!(status, 202, "{a}");
    let accepted = fake.wait_for_accepted(1, Duration::from_secs(10)).await;
    assert_eq!(accepted[0].1["recipient"], "SN.99887766554433221100");
    assert!(accepted[0].1.get("to").is_none());
}

#[tokio::test]
async fn meta_limits_are_checked_before_anything_is_queued() {
    let (fake, d) = live("").await;
    let too_many = json!({"to": CUSTOMER, "type": "buttons", "body": "?", "buttons": [
        {"id": "a", "title": "A"}, {"id": "b", "title": "B"}, {"id": "c", "title": "C"}, {"id": "d", "title": "D"}]});
    let (status, answer) = send(&d, too_many).await;
    assert_eq!(status, 422);
    assert!(answer["error"].as_str().unwrap().contains("buttons"), "{answer}");
    let long_title = json!({"to": CUSTOMER, "type": "buttons", "body": "?", "buttons": [{"id": "a", "title": "Un titre beaucoup trop long"}]});
    let (status, answer) = send(&d, long_title).await;
    assert_eq!(status, 422);
    assert!(answer["error"].as_str().unwrap().contains("20"), "{answer}");
    let (status, _) = send(&d, json!({"to": "not a phone", "type": "text", "text": "x"})).await;
    assert_eq!(status, 422);
    let (status, _) = send(&d, json!({"to": CUSTOMER, "type": "hologram"})).await;
    assert_eq!(status, 400);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fake.requests().is_empty(), "nothing reached Meta");
}

#[tokio::test]
async fn a_429_and_a_500_are_retried_then_the_message_is_sent_once() {
    let (fake, d) = live("").await;
    fake.push_response(Scripted::RateLimited);
    fake.push_response(Scripted::Status(500));
    let (_, a) = send(&d, json!({"to": CUSTOMER, "type": "text", "text": "Réessayez"})).await;
    let m = d.wait_status(&a["id"], "sent").await;
    assert_eq!(m["attempts"], 3);
    let retries = m["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "retry")
        .count();
    assert_eq!(retries, 2);
    assert_eq!(fake.accepted().len(), 1);
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn a_message_reads_sending_while_meta_has_not_answered_then_sent_with_its_attempt_count() {
    let (fake, d) = live("").await;
    fake.push_response(Scripted::Delay(Duration::from_millis(1500)));
    let (_, a) = send(&d, json!({"to": CUSTOMER, "type": "text", "text": "Patience"})).await;
    let m = d.wait_status(&a["id"], "sending").await;
    assert_eq!(m["wamid"], Value::Null);
    let m = d.wait_status(&a["id"], "sent").await;
    assert_eq!(m["attempts"], 1);
    assert_eq!(fake.accepted().len(), 1);
}

#[tokio::test]
async fn a_definite_meta_error_fails_the_message_with_its_explanation_and_no_retry() {
    let (fake, d) = live("").await;
    fake.push_response(Scripted::MetaError {
        http: 400,
        code: 131047,
        message: "Re-engagement message".into(),
        details: "Message failed to send because more than 24 hours have passed".into(),
    });
    let (_, a) = send(&d, json!({"to": CUSTOMER, "type": "text", "text": "Bonjour"})).await;
    let m = d.wait_status(&a["id"], "failed").await;
    assert_eq!(m["error"]["code"], 131047);
    assert_eq!(m["error"]["title"], "Re-engagement message");
    assert!(
        m["error"]["explanation"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("template"),
        "{m}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.requests().len(), 1, "never resent after a definite answer");
}

#[tokio::test]
async fn retries_stop_at_the_horizon_with_a_clear_failure() {
    let (fake, d) = live("retry_horizon = \"300ms\"").await;
    fake.set_failure_rate(1.0, vec![Scripted::Status(503)]);
    let (_, a) = send(&d, json!({"to": CUSTOMER, "type": "text", "text": "Bonjour"})).await;
    let m = d.wait_status(&a["id"], "failed").await;
    assert!(m["error"]["title"].as_str().unwrap().contains("gave up"), "{m}");
    assert!(fake.accepted().is_empty());
}

#[tokio::test]
async fn outside_the_24h_window_free_form_fails_fast_but_templates_go() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let d = TestDaemon::start_live(&fake.url(), "").await;
    // a customer who wrote 25 hours ago
    d.deliver_ok(&text_delivery(
        "221770000099",
        "wamid.OLD",
        "Bonjour",
        now() - 25 * 3600,
    ))
    .await;
    d.settled().await;
    for to in ["221770000099", "221770000100"] {
        let (status, a) = send(&d, json!({"to": to, "type": "text", "text": "Promo"})).await;
        assert_eq!(status, 422, "{a}");
        assert_eq!(a["status"], "failed");
        assert_eq!(a["error"]["code"], 131026);
        assert!(a["error"]["explanation"].as_str().unwrap().contains("template"), "{a}");
    }
    let (status, a) = send(
        &d,
        json!({"to": "221770000099", "type": "template", "name": "relance", "lang": "fr"}),
    )
    .await;
    assert_eq!(status, 202, "{a}");
    d.wait_status(&a["id"], "sent").await;
    assert_eq!(fake.accepted().len(), 1);
}

#[tokio::test]
async fn the_rate_limit_holds_per_one_second_window() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let d = TestDaemon::start_live(&fake.url(), "max_per_second = 5\nallow_outside_window = true").await;
    for i in 0..16 {
        let (status, _) = send(
            &d,
            json!({"to": format!("2217700001{i:02}"), "type": "text", "text": "Hello"}),
        )
        .await;
        assert_eq!(status, 202);
    }
    fake.wait_for_accepted(16, Duration::from_secs(15)).await;
    let times: Vec<_> = fake.requests().iter().map(|r| r.at).collect();
    let mut worst = 0;
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .filter(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        worst = worst.max(in_window);
    }
    assert!(worst <= 6, "{worst} requests within one second with max_per_second = 5");
    let span = times.last().unwrap().duration_since(times[0]);
    assert!(
        span >= Duration::from_millis(2500),
        "16 messages at 5/s took only {span:?}"
    );
}

#[tokio::test]
async fn one_recipient_is_not_burst_beyond_the_pair_rate_and_order_is_kept() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let d = TestDaemon::start_live(
        &fake.url(),
        "pair_burst = 2\npair_interval = \"700ms\"\nallow_outside_window = true",
    )
    .await;
    for i in 1..=4 {
        send(
            &d,
            json!({"to": CUSTOMER, "type": "text", "text": format!("message {i}")}),
        )
        .await;
    }
    let accepted = fake.wait_for_accepted(4, Duration::from_secs(10)).await;
    let texts: Vec<&str> = accepted
        .iter()
        .map(|(_, b)| b["text"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["message 1", "message 2", "message 3", "message 4"]);
    let times: Vec<_> = fake.requests().iter().map(|r| r.at).collect();
    assert!(
        times[2].duration_since(times[0]) >= Duration::from_millis(600),
        "third message came too soon"
    );
    assert!(
        times[3].duration_since(times[2]) >= Duration::from_millis(600),
        "fourth message came too soon"
    );
}

#[tokio::test]
async fn status_webhooks_update_the_sent_message_and_never_go_backwards() {
    let (fake, d) = live("").await;
    let (_, a) = send(&d, json!({"to": CUSTOMER, "type": "text", "text": "Suivi"})).await;
    let m = d.wait_status(&a["id"], "sent").await;
    let wamid = m["wamid"].as_str().unwrap().to_string();
    let t = now() + 10; // Meta's clock, after the API's acceptance
    d.deliver_ok(&status_delivery(&wamid, "read", t + 2)).await;
    d.deliver_ok(&status_delivery(&wamid, "delivered", t + 1)).await;
    d.deliver_ok(&status_delivery(&wamid, "sent", t)).await;
    d.settled().await;
    let m = message(&d, &a["id"]).await;
    assert_eq!(m["status"], "read");
    let history: Vec<&str> = m["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert!(history.ends_with(&["read", "delivered", "sent"]), "{history:?}");
    let mut failed = status_delivery(&wamid, "failed", t + 3);
    failed["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"] =
        json!([{"code": 131031, "title": "Account locked", "message": "Account locked"}]);
    d.deliver_ok(&failed).await;
    d.deliver_ok(&status_delivery(&wamid, "read", t + 4)).await;
    d.settled().await;
    let m = message(&d, &a["id"]).await;
    assert_eq!(m["status"], "failed", "failed is final");
    assert_eq!(m["error"]["code"], 131031);
    assert!(!m["error"]["explanation"].as_str().unwrap().is_empty());
    drop(fake);
}

#[tokio::test]
async fn dry_run_records_the_exact_json_and_sends_nothing() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let d = TestDaemon::start_live(&fake.url(), "dry_run = true").await;
    d.deliver_ok(&text_delivery(CUSTOMER, "wamid.DRY", "Bonjour", now()))
        .await;
    d.settled().await;
    let (status, a) = send(
        &d,
        json!({"to": CUSTOMER, "type": "buttons", "body": "Valider ?", "buttons": [{"id": "ok", "title": "OK"}]}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(a["status"], "dry_run");
    let m = message(&d, &a["id"]).await;
    assert_eq!(m["raw"]["interactive"]["action"]["buttons"][0]["reply"]["id"], "ok");
    assert_eq!(m["raw"]["to"], CUSTOMER);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_restart_with_queued_jobs_sends_each_exactly_once() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let d = TestDaemon::start_live(&fake.url(), "allow_outside_window = true").await;
    let (dir, text) = d.stop().await;
    // Jobs queued (durably) that the previous run never got to send.
    {
        let store = walua::store::Store::open(&dir.path().join("walua.redb")).unwrap();
        let outbox = walua::outbox::Outbox::new(store.clone(), Default::default(), false, true);
        for i in 0..5 {
            let req: walua::outbox::SendRequest = serde_json::from_value(
                json!({"to": format!("22177000020{i}"), "type": "text", "text": format!("en attente {i}")}),
            )
            .unwrap();
            outbox.enqueue_blocking(&req, "test").unwrap();
        }
        assert_eq!(store.outbox_len().unwrap(), 5);
    }
    let d = TestDaemon::start_in(dir, text).await;
    fake.wait_for_accepted(5, Duration::from_secs(10)).await;
    let d = d.restart().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fake.accepted().len(),
        5,
        "each sent once, none again after another restart"
    );
    let mut bodies: Vec<String> = fake
        .accepted()
        .iter()
        .map(|(_, b)| b["text"]["body"].as_str().unwrap().to_string())
        .collect();
    bodies.sort();
    assert_eq!(bodies, (0..5).map(|i| format!("en attente {i}")).collect::<Vec<_>>());
    drop(d);
}

#[tokio::test]
async fn a_send_interrupted_by_a_crash_is_not_resent_and_is_reconciled_by_its_status() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let d = TestDaemon::start_live(&fake.url(), "allow_outside_window = true").await;
    let (dir, text) = d.stop().await;
    let id = {
        let store = walua::store::Store::open(&dir.path().join("walua.redb")).unwrap();
        let outbox = walua::outbox::Outbox::new(store.clone(), Default::default(), false, true);
        let req: walua::outbox::SendRequest =
            serde_json::from_value(json!({"to": CUSTOMER, "type": "text", "text": "peut-être envoyé"})).unwrap();
        let m = outbox.enqueue_blocking(&req, "test").unwrap();
        // The worker marked it `sending`, called Meta, and died before recording the answer.
        store.outbox_mark_sending(m.id).unwrap();
        m.id
    };
    let d = TestDaemon::start_in(dir, text).await;
    let m = d.wait_status(&json!(id), "unknown").await;
    assert!(
        m["error"]["explanation"].as_str().unwrap().contains("NOT resent"),
        "{m}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.requests().is_empty(), "not resent blindly");

    // Meta had accepted it: its status webhook carries walua's callback data.
    let mut status = status_delivery("wamid.FROM.META", "delivered", now());
    status["entry"][0]["changes"][0]["value"]["statuses"][0]["biz_opaque_callback_data"] = json!(format!("walua:{id}"));
    d.deliver_ok(&status).await;
    let m = d.wait_status(&json!(id), "delivered").await;
    assert_eq!(m["wamid"], "wamid.FROM.META");
    assert!(m["error"].is_null());

    // The operator can resend a failed or unknown message explicitly.
    let (dir, text) = d.stop().await;
    let other = {
        let store = walua::store::Store::open(&dir.path().join("walua.redb")).unwrap();
        let outbox = walua::outbox::Outbox::new(store.clone(), Default::default(), false, true);
        let req: walua::outbox::SendRequest =
            serde_json::from_value(json!({"to": CUSTOMER, "type": "text", "text": "à renvoyer"})).unwrap();
        let m = outbox.enqueue_blocking(&req, "test").unwrap();
        store.outbox_mark_sending(m.id).unwrap();
        m.id
    };
    let d = TestDaemon::start_in(dir, text).await;
    d.wait_status(&json!(other), "unknown").await;
    let (status, _) = d.api_post(&format!("/api/messages/{other}/resend"), &json!({})).await;
    assert_eq!(status, 202);
    d.wait_status(&json!(other), "sent").await;
    assert_eq!(fake.accepted().len(), 1);
}

#[tokio::test]
async fn inbound_media_is_downloaded_beside_the_store_and_linked() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    fake.add_media("65463453", b"\xff\xd8\xff\xe0 fake jpeg".to_vec(), "image/jpeg");
    let d = TestDaemon::start_live(&fake.url(), "").await;
    let mut delivery = fixture("image.json");
    delivery["entry"][0]["changes"][0]["value"]["messages"][0]["image"]["id"] = json!("65463453");
    d.deliver_ok(&delivery).await;
    let m = d
        .eventually("media linked", || async {
            let msgs = d.messages_of("221771234567").await;
            msgs.into_iter().find(|m| m["media_file"].is_string())
        })
        .await;
    let path = d.dir.path().join(m["media_file"].as_str().unwrap());
    assert_eq!(std::fs::read(path).unwrap(), b"\xff\xd8\xff\xe0 fake jpeg");
}

#[tokio::test]
async fn a_local_document_is_uploaded_as_media_then_sent() {
    let (fake, d) = live("").await;
    let r = d
        .http
        .post(d.url("/api/media?filename=F001.pdf"))
        .bearer_auth(ADMIN_TOKEN)
        .body(b"%PDF-1.4 facture".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let media: Value = r.json().await.unwrap();
    let uploads = fake.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].bytes, b"%PDF-1.4 facture");
    assert_eq!(uploads[0].mime_type, "application/pdf");
    let (status, a) = send(
        &d,
        json!({"to": CUSTOMER, "type": "document", "media": media["id"], "filename": "F001.pdf"}),
    )
    .await;
    assert_eq!(status, 202);
    d.wait_status(&a["id"], "sent").await;
    assert_eq!(fake.accepted()[0].1["document"]["id"], media["id"]);
}

#[tokio::test]
async fn an_upload_can_ask_meta_to_keep_the_media_longer_for_numbers_without_storage() {
    let (fake, d) = live("").await;
    let upload = |query: &'static str| {
        d.http
            .post(d.url(&format!("/api/media?filename=promo.pdf&{query}")))
            .bearer_auth(ADMIN_TOKEN)
            .body(b"%PDF-1.4 promo".to_vec())
            .send()
    };
    let r = upload("ttl_minutes=1440").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(fake.uploads()[0].ttl_minutes, Some(1440));
    for bad in ["ttl_minutes=10", "ttl_minutes=43201", "ttl_minutes=un%20jour"] {
        let r = upload(bad).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("from 60 to 43200"), "{body}");
    }
    assert_eq!(fake.uploads().len(), 1, "refused before reaching Meta");
    // Without it, nothing is sent for the field (Meta's default: one hour).
    upload("mime=application/pdf").await.unwrap();
    assert_eq!(fake.uploads()[1].ttl_minutes, None);
}

#[tokio::test]
async fn a_script_sends_a_document_from_bytes_uploaded_as_media_first() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    put_script(
        dir.path(),
        "buttons/invoice.lua",
        r#"return { match = "^btn_invoice$", anyone = true, run = function()
  local pdf = "%PDF-1.4\n\0\255 binary invoice"
  env.whatsapp.send_document(message.from, { bytes = pdf, filename = "INV-2026-0001.pdf", caption = "Votre facture" })
end }"#,
    );
    let text = config_text(dir.path(), &live_whatsapp(&fake.url(), ""), "");
    let d = TestDaemon::start_in(dir, text).await;
    d.deliver_ok(&click_delivery(CUSTOMER, "wamid.INV1", "btn_invoice", "Facture"))
        .await;
    let accepted = fake.wait_for_accepted(1, Duration::from_secs(10)).await;
    let uploads = fake.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].bytes, b"%PDF-1.4\n\0\xff binary invoice");
    assert_eq!(uploads[0].mime_type, "application/pdf");
    let doc = &accepted[0].1["document"];
    assert_eq!(doc["id"], uploads[0].id.as_str());
    assert_eq!(doc["filename"], "INV-2026-0001.pdf");
    assert_eq!(doc["caption"], "Votre facture");
}

#[tokio::test]
async fn walua_send_queues_text_template_and_uploads_a_local_document() {
    let (fake, d) = live("").await;
    // The CLI reads a configuration that points at the running daemon.
    let conf = d.dir.path().join("cli.toml");
    std::fs::write(
        &conf,
        d.config_text
            .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{}\"", d.addr)),
    )
    .unwrap();
    let pdf = d.dir.path().join("facture F001.pdf");
    std::fs::write(&pdf, b"%PDF-1.4 facture").unwrap();
    let run = |args: Vec<String>| {
        let conf = conf.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_walua"))
                    .arg("--config")
                    .arg(&conf)
                    .args(&args)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let out = run(s(&["send", "--to", CUSTOMER, "--text", "Bonjour du CLI"])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("queued"));
    let out = run(s(&[
        "send",
        "--to",
        CUSTOMER,
        "--template",
        "relance",
        "--lang",
        "fr",
        "--param",
        "S00042",
    ]))
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(s(&[
        "send",
        "--to",
        CUSTOMER,
        "--document",
        pdf.to_str().unwrap(),
        "--caption",
        "Votre facture",
    ]))
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sent = fake.wait_for_accepted(3, Duration::from_secs(10)).await;
    assert_eq!(sent[0].1["text"]["body"], "Bonjour du CLI");
    assert_eq!(
        sent[1].1["template"]["components"][0]["parameters"][0]["text"],
        "S00042"
    );
    let uploads = fake.uploads();
    assert_eq!(uploads[0].bytes, b"%PDF-1.4 facture");
    assert_eq!(sent[2].1["document"]["id"], uploads[0].id.as_str());
    assert_eq!(sent[2].1["document"]["filename"], "facture F001.pdf");
    // A refused send says why.
    let out = run(s(&["send", "--to", "221770009999", "--text", "hors fenêtre"])).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("131026"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_other_message_types_reach_the_graph_api_too() {
    let (fake, d) = live("").await;
    let contacts = json!([{"name": {"formatted_name": "Boutique Awa", "first_name": "Awa"}, "phones": [{"phone": "+221338601234", "type": "WORK"}]}]);
    let cases = vec![
        (
            json!({"type": "audio", "media": "77001"}),
            "audio",
            json!({"id": "77001"}),
        ),
        (
            json!({"type": "video", "link": "https://exemple.sn/v.mp4", "caption": "Vidéo"}),
            "video",
            json!({"link": "https://exemple.sn/v.mp4", "caption": "Vidéo"}),
        ),
        (
            json!({"type": "sticker", "media": "77002"}),
            "sticker",
            json!({"id": "77002"}),
        ),
        (
            json!({"type": "location", "latitude": 14.6928, "longitude": -17.4467, "name": "Marché Sandaga", "address": "Dakar"}),
            "location",
            json!({"latitude": 14.6928, "longitude": -17.4467, "name": "Marché Sandaga", "address": "Dakar"}),
        ),
        (
            json!({"type": "contacts", "contacts": contacts}),
            "contacts",
            contacts.clone(),
        ),
        (
            json!({"type": "reaction", "message_id": "wamid.IN.OPEN", "emoji": "👍"}),
            "reaction",
            json!({"message_id": "wamid.IN.OPEN", "emoji": "👍"}),
        ),
    ];
    for (mut request, _, _) in cases.clone() {
        request["to"] = json!(CUSTOMER);
        let (status, a) = send(&d, request.clone()).await;
        assert_eq!(status, 202, "{request}: {a}");
    }
    let (status, a) = send(&d, json!({"to": CUSTOMER, "type": "cta_url", "body": "Suivre la livraison", "display_text": "Suivre", "url": "https://exemple.sn/suivi/42"})).await;
    assert_eq!(status, 202, "{a}");
    let (status, a) = send(
        &d,
        json!({"to": CUSTOMER, "type": "mark_read", "message_id": "wamid.IN.OPEN"}),
    )
    .await;
    assert_eq!(status, 202, "{a}");
    let accepted = fake.wait_for_accepted(cases.len() + 1, Duration::from_secs(10)).await;
    for (i, (_, kind, part)) in cases.iter().enumerate() {
        let body = &accepted[i].1;
        assert_eq!(body["type"], *kind);
        assert_eq!(body[*kind], *part, "{kind}");
        assert_eq!(body["to"], CUSTOMER);
    }
    let cta = &accepted[cases.len()].1;
    assert_eq!(cta["interactive"]["type"], "cta_url");
    assert_eq!(
        cta["interactive"]["action"]["parameters"]["url"],
        "https://exemple.sn/suivi/42"
    );
    // Mark-as-read is a status call, not a message.
    let read = d
        .eventually("mark_read sent", || async {
            fake.requests().into_iter().find(|r| r.body["status"] == "read")
        })
        .await;
    assert_eq!(read.body["message_id"], "wamid.IN.OPEN");
    assert_eq!(read.outcome_status, 200);
}
