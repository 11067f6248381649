//! Several business numbers in one daemon (`[[whatsapp.accounts]]`): a shop with a number in
//! Dakar and one in Thiès, the second in another Meta app (its own token, app secret and
//! verify token). Each customer is answered from the number they wrote to, each number's
//! messages carry its own token, and each number has its own 24 h window.

mod support;

use serde_json::{Value, json};
use support::fake_graph::FakeGraph;
use support::*;

const DAKAR: &str = "1111111111";
const THIES: &str = "2222222222";
const DAKAR_TOKEN: &str = "token-dakar-7f3a";
const THIES_TOKEN: &str = "token-thies-91c2";
const THIES_APP_SECRET: &str = "thies-app-secret-4b8e";
const THIES_VERIFY_TOKEN: &str = "thies-verify-token-0d6f";

const AWA: &str = "221771110001";
const MODOU: &str = "221772220002";

const REPLY: &str = r#"
return {
  run = function(msg)
    env.whatsapp.send_text(msg.from, "Bonjour, merci pour votre message")
  end,
}
"#;

/// The daemon, two accounts; the Dakar number shares `[whatsapp]`'s app secret and verify
/// token, the Thiès number has its own.
async fn two_numbers() -> (FakeGraph, TestDaemon) {
    two_numbers_with(REPLY).await
}

/// [`two_numbers`] with `on_message` as the on_message script.
async fn two_numbers_with(on_message: &str) -> (FakeGraph, TestDaemon) {
    shop(on_message, 500).await
}

/// The two-number shop, with `on_message` and the Thiès number's `max_per_second`.
async fn shop(on_message: &str, thies_rate: u32) -> (FakeGraph, TestDaemon) {
    let fake = FakeGraph::start(DAKAR_TOKEN).await;
    fake.add_number(THIES, THIES_TOKEN);
    let dir = tempfile::tempdir().unwrap();
    put_script(dir.path(), "on_message.lua", on_message);
    let accounts = format!(
        r#"
[[whatsapp.accounts]]
name = "dakar"
phone_number_id = "{DAKAR}"
access_token = "{DAKAR_TOKEN}"

[[whatsapp.accounts]]
name = "thies"
phone_number_id = "{THIES}"
access_token = "{THIES_TOKEN}"
app_secret = "{THIES_APP_SECRET}"
verify_token = "{THIES_VERIFY_TOKEN}"
max_per_second = {thies_rate}
"#
    );
    let text = config_text(dir.path(), &live_whatsapp(&fake.url(), ""), &accounts);
    // With accounts, the number and its token live in each account, not in [whatsapp].
    let text = text
        .replace("phone_number_id = \"1234567890\"\n", "")
        .replace(&format!("access_token = \"{ACCESS_TOKEN}\"\n"), "");
    let d = TestDaemon::start_in(dir, text).await;
    (fake, d)
}

/// A text from `from` to business number `to_number`.
fn text_to(to_number: &str, from: &str, wamid: &str) -> Value {
    let mut d = text_delivery(from, wamid, "Bonjour", now());
    d["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = json!(to_number);
    d
}

/// POSTs a delivery signed with `app_secret`; returns the HTTP status.
async fn deliver_signed(d: &TestDaemon, body: &Value, app_secret: &str) -> u16 {
    let bytes = serde_json::to_vec(body).unwrap();
    let sig = walua::webhook::signature::sign(app_secret.as_bytes(), &bytes);
    d.http
        .post(d.url("/webhook"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(bytes)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The accepted sends to `to`, as (path, authorization) of the requests that carried them.
fn sends_to(fake: &FakeGraph, to: &str) -> Vec<(String, String)> {
    fake.requests()
        .into_iter()
        .filter(|r| r.wamid.is_some() && r.body["to"] == to)
        .map(|r| (r.path, r.authorization.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn each_customer_is_answered_from_the_number_they_wrote_to_with_that_numbers_token() {
    let (fake, d) = two_numbers().await;
    assert_eq!(
        deliver_signed(&d, &text_to(DAKAR, AWA, "wamid.AWA1"), APP_SECRET).await,
        200
    );
    assert_eq!(
        deliver_signed(&d, &text_to(THIES, MODOU, "wamid.MODOU1"), THIES_APP_SECRET).await,
        200,
        "the Thiès app signs with its own secret"
    );

    let (awa, modou) = d
        .eventually("both replies accepted", || async {
            let (a, m) = (sends_to(&fake, AWA), sends_to(&fake, MODOU));
            (!a.is_empty() && !m.is_empty()).then_some((a, m))
        })
        .await;
    assert_eq!(
        awa,
        vec![(format!("/v21.0/{DAKAR}/messages"), format!("Bearer {DAKAR_TOKEN}"))]
    );
    assert_eq!(
        modou,
        vec![(format!("/v21.0/{THIES}/messages"), format!("Bearer {THIES_TOKEN}"))]
    );

    // The store says which number each message came to and went out from.
    let inbound = d.dispatched(MODOU, "wamid.MODOU1").await;
    assert_eq!(inbound["phone_number_id"], THIES);
    let reply = d.outbound_of(MODOU).await.remove(0);
    assert_eq!(reply["phone_number_id"], THIES);
    let reply = d.wait_status(&reply["id"], "sent").await;
    assert_eq!(reply["raw"]["to"], MODOU);
}

#[tokio::test]
async fn the_api_sends_from_a_named_account_and_each_number_keeps_its_own_window() {
    let (fake, d) = two_numbers().await;
    assert_eq!(
        deliver_signed(&d, &text_to(DAKAR, AWA, "wamid.AWA2"), APP_SECRET).await,
        200
    );
    d.dispatched(AWA, "wamid.AWA2").await;

    // A template goes out from any number, here the one named.
    let (status, sent) = d
        .api_post(
            "/api/messages",
            &json!({"to": AWA, "from": "thies", "type": "template", "name": "order_confirmation", "lang": "fr"}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let sent = d.wait_status(&sent["id"], "sent").await;
    assert_eq!(sent["phone_number_id"], THIES);
    assert!(
        sends_to(&fake, AWA).contains(&(format!("/v21.0/{THIES}/messages"), format!("Bearer {THIES_TOKEN}"))),
        "{:?}",
        sends_to(&fake, AWA)
    );

    // Awa wrote to Dakar only: free text from Thiès is outside that number's window.
    let (status, refused) = d
        .api_post(
            "/api/messages",
            &json!({"to": AWA, "from": THIES, "type": "text", "text": "Bonjour"}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], 131026, "{refused}");
    assert!(
        refused["error"]["details"]
            .as_str()
            .unwrap()
            .contains("never written to this number"),
        "{refused}"
    );
    let (_, recorded) = d.api(&format!("/api/messages/{}", refused["id"])).await;
    assert_eq!(recorded["status"], "failed", "kept, with the reason");
    assert_eq!(recorded["phone_number_id"], THIES);

    // Without `from`, free text goes from the number she wrote to.
    let (status, reply) = d
        .api_post(
            "/api/messages",
            &json!({"to": AWA, "type": "text", "text": "Votre commande est prête"}),
        )
        .await;
    assert_eq!(status, 202, "{reply}");
    let reply = d.wait_status(&reply["id"], "sent").await;
    assert_eq!(reply["phone_number_id"], DAKAR);

    // An account that does not exist is refused before anything is recorded.
    let before = d.outbound_of(AWA).await.len();
    let (status, err) = d
        .api_post(
            "/api/messages",
            &json!({"to": AWA, "from": "ziguinchor", "type": "text", "text": "x"}),
        )
        .await;
    assert_eq!(status, 422);
    let err = err.to_string();
    assert!(err.contains("ziguinchor") && err.contains("dakar, thies"), "{err}");
    assert_eq!(d.outbound_of(AWA).await.len(), before);
}

#[tokio::test]
async fn deliveries_signed_by_an_unknown_app_are_refused_and_both_apps_can_subscribe() {
    let (_fake, d) = two_numbers().await;
    assert_eq!(
        deliver_signed(&d, &text_to(DAKAR, AWA, "wamid.FORGED"), "not-our-app-secret").await,
        403
    );
    d.settled().await;
    assert!(d.messages_of(AWA).await.is_empty(), "a refused delivery stores nothing");

    for (token, want) in [(VERIFY_TOKEN, 200), (THIES_VERIFY_TOKEN, 200), ("guess", 403)] {
        let r = d
            .http
            .get(d.url(&format!(
                "/webhook?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "verify token {token}");
        if want == 200 {
            assert_eq!(r.text().await.unwrap(), "1158201444");
        }
    }
}

#[tokio::test]
async fn a_message_queued_from_a_number_removed_from_the_configuration_fails_with_the_reason() {
    let (fake, d) = two_numbers().await;
    // Meta is down while the message is first tried: it stays queued for a retry.
    for _ in 0..20 {
        fake.push_response(support::fake_graph::Scripted::Status(500));
    }
    let (status, queued) = d
        .api_post(
            "/api/messages",
            &json!({"to": AWA, "from": "thies", "type": "template", "name": "order_confirmation", "lang": "fr"}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    d.eventually("a first attempt", || async {
        let (_, m) = d.api(&format!("/api/messages/{}", queued["id"])).await;
        (m["attempts"].as_u64() >= Some(1)).then_some(())
    })
    .await;

    // The operator removes the Thiès number and restarts.
    let (dir, text) = d.stop().await;
    let (kept, _) = text.split_once("[[whatsapp.accounts]]\nname = \"thies\"").unwrap();
    let d = TestDaemon::start_in(dir, kept.to_string()).await;
    let failed = d.wait_status(&queued["id"], "failed").await;
    let title = failed["error"]["title"].as_str().unwrap();
    assert!(title.contains(THIES) && title.contains("not configured"), "{failed}");
    assert!(
        fake.requests().iter().all(|r| r.wamid.is_none() || r.body["to"] != AWA),
        "never sent from another number"
    );
}

const ROUTED: &str = r#"
return {
  run = function(msg)
    local w = env.whatsapp.window_open
    env.whatsapp.send_text(msg.from, string.format("to %s: dakar=%s thies=%s", msg.phone_number_id,
      tostring(w(msg.from, "dakar")), tostring(w(msg.from, "thies"))))
    if msg.from == "221772220002" then
      env.whatsapp.send_template(msg.from, "order_confirmation", "fr", nil, { from = "thies" })
      -- A receipt for another contact's message goes from the number that message came to.
      env.whatsapp.mark_read("wamid.AWA-T")
    end
  end,
}
"#;

#[tokio::test]
async fn a_script_replies_from_the_number_each_message_came_to_and_can_choose_another() {
    let (fake, d) = two_numbers_with(ROUTED).await;
    // Awa writes to Thiès, then to Dakar, in one delivery: the conversation's last number is
    // Dakar, yet the reply to her first message goes out from Thiès.
    let mut both = text_to(THIES, AWA, "wamid.AWA-T");
    let mut to_dakar = text_to(DAKAR, AWA, "wamid.AWA-D");
    to_dakar["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = json!((now() + 1).to_string());
    let second = to_dakar["entry"][0].clone();
    both["entry"].as_array_mut().unwrap().push(second);
    assert_eq!(deliver_signed(&d, &both, APP_SECRET).await, 200);
    assert_eq!(
        deliver_signed(&d, &text_to(DAKAR, MODOU, "wamid.MODOU-D"), APP_SECRET).await,
        200
    );

    let texts = d
        .eventually("four sends accepted", || async {
            let sent: Vec<(String, String, Value)> = fake
                .requests()
                .into_iter()
                .filter(|r| r.wamid.is_some())
                .map(|r| {
                    (
                        r.path.clone(),
                        r.body["to"].as_str().unwrap_or("").to_string(),
                        r.body.clone(),
                    )
                })
                .collect();
            (sent.len() == 4).then_some(sent)
        })
        .await;
    let path = |n: &str| format!("/v21.0/{n}/messages");
    let text_of = |b: &Value| b["text"]["body"].as_str().unwrap_or("").to_string();
    let mut seen: Vec<(String, String, String)> = texts
        .iter()
        .map(|(p, to, b)| {
            (
                p.clone(),
                to.clone(),
                b["type"]
                    .as_str()
                    .map(|t| if t == "text" { text_of(b) } else { t.to_string() })
                    .unwrap_or_default(),
            )
        })
        .collect();
    seen.sort();
    let mut want = vec![
        (
            path(DAKAR),
            AWA.to_string(),
            format!("to {DAKAR}: dakar=true thies=true"),
        ),
        (
            path(THIES),
            AWA.to_string(),
            format!("to {THIES}: dakar=true thies=true"),
        ),
        (
            path(DAKAR),
            MODOU.to_string(),
            format!("to {DAKAR}: dakar=true thies=false"),
        ),
        (path(THIES), MODOU.to_string(), "template".to_string()),
    ];
    want.sort();
    assert_eq!(seen, want);

    let receipt = d
        .eventually("the read receipt", || async {
            fake.requests().into_iter().find(|r| r.body["status"] == "read")
        })
        .await;
    assert_eq!(receipt.body["message_id"], "wamid.AWA-T");
    assert_eq!(
        (receipt.path.as_str(), receipt.authorization.as_deref()),
        (path(THIES).as_str(), Some(format!("Bearer {THIES_TOKEN}").as_str()))
    );
}

const MEDIA_REPLY: &str = r#"
return {
  run = function(msg)
    -- The invoice goes back from the number the photo came to, its PDF uploaded there too.
    env.whatsapp.send_document(msg.from, { bytes = "%PDF-1.4 facture", filename = "F001.pdf" })
    -- An alert to someone else is not a reply: it goes from the default number.
    env.whatsapp.send_template("221771110001", "order_confirmation", "fr")
  end,
}
"#;

#[tokio::test]
async fn media_come_in_and_go_out_through_the_number_that_received_the_message() {
    let (fake, d) = two_numbers_with(MEDIA_REPLY).await;
    fake.add_media_of(THIES, "media-thies-1", b"\xff\xd8\xff photo".to_vec(), "image/jpeg");
    let mut photo = text_to(THIES, MODOU, "wamid.PHOTO");
    photo["entry"][0]["changes"][0]["value"]["messages"][0] = json!({
        "from": MODOU, "id": "wamid.PHOTO", "timestamp": now().to_string(), "type": "image",
        "image": {"id": "media-thies-1", "mime_type": "image/jpeg"}
    });
    assert_eq!(deliver_signed(&d, &photo, THIES_APP_SECRET).await, 200);

    // Downloaded with the Thiès token (the fake refuses any other for this file).
    let stored = d
        .eventually("the photo saved", || async {
            d.messages_of(MODOU)
                .await
                .into_iter()
                .find(|m| m["wamid"] == "wamid.PHOTO" && m["media_file"].is_string())
        })
        .await;
    let file = d.dir.path().join(stored["media_file"].as_str().unwrap());
    assert_eq!(std::fs::read(file).unwrap(), b"\xff\xd8\xff photo");

    let sent = d
        .eventually("the document and the alert accepted", || async {
            let sent: Vec<_> = fake.requests().into_iter().filter(|r| r.wamid.is_some()).collect();
            (sent.len() == 2).then_some(sent)
        })
        .await;
    let upload = fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/media") && r.method == "POST")
        .expect("the PDF was uploaded");
    assert_eq!(
        (upload.path.as_str(), upload.authorization.as_deref()),
        (
            format!("/v21.0/{THIES}/media").as_str(),
            Some(format!("Bearer {THIES_TOKEN}").as_str())
        )
    );
    let document = sent.iter().find(|r| r.body["type"] == "document").unwrap();
    assert_eq!(document.path, format!("/v21.0/{THIES}/messages"));
    assert_eq!(document.body["to"], MODOU);
    let alert = sent.iter().find(|r| r.body["type"] == "template").unwrap();
    assert_eq!(
        (alert.path.as_str(), alert.body["to"].as_str()),
        (format!("/v21.0/{DAKAR}/messages").as_str(), Some(AWA))
    );
}

#[tokio::test]
async fn each_number_has_its_own_rate_limit() {
    let (fake, d) = shop(REPLY, 5).await;
    let recipient = |i: usize| format!("2217755{i:05}");
    for (from, first) in [("thies", 0), ("dakar", 100)] {
        for i in first..first + 12 {
            let (status, body) = d
                .api_post(
                    "/api/messages",
                    &json!({"to": recipient(i), "from": from, "type": "template", "name": "order_confirmation", "lang": "fr"}),
                )
                .await;
            assert_eq!(status, 202, "{body}");
        }
    }
    fake.wait_for_accepted(24, std::time::Duration::from_secs(15)).await;
    let sent: Vec<_> = fake.requests().into_iter().filter(|r| r.wamid.is_some()).collect();
    let at = |number: &str| -> Vec<std::time::Instant> {
        sent.iter()
            .filter(|r| r.path == format!("/v21.0/{number}/messages"))
            .map(|r| r.at)
            .collect()
    };
    let (thies, dakar) = (at(THIES), at(DAKAR));
    assert_eq!((thies.len(), dakar.len()), (12, 12));
    let worst = thies
        .iter()
        .map(|start| {
            thies
                .iter()
                .filter(|t| **t >= *start && t.duration_since(*start) < std::time::Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        worst <= 6,
        "{worst} Thiès sends within one second at max_per_second = 5"
    );
    // Queued after Thiès's, Dakar's go at their own pace, not Thiès's.
    assert!(
        dakar.iter().max() < thies.get(6),
        "Dakar's 12 sends should all precede Thiès's 7th"
    );
}
