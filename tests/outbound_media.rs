//! Voice notes, media headers on reply buttons and CTA URL messages, and the typing
//! indicator, through the real daemon (API and Lua) to the fake Graph API, which checks the
//! bodies in Meta's documented shapes and refuses others.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::fake_graph::FakeGraph;
use support::*;

const CUSTOMER: &str = "221771234567";
const PNID: &str = "1234567890";

/// A live daemon with `script` as `on_message.lua` (when given), and the customer's window
/// open (the delivery also runs the script once, with wamid `wamid.IN.OPEN`).
async fn live_with(script: Option<&str>) -> (FakeGraph, TestDaemon) {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), &live_whatsapp(&fake.url(), ""), "");
    if let Some(s) = script {
        put_script(dir.path(), "on_message.lua", s);
    }
    let d = TestDaemon::start_in(dir, text).await;
    d.deliver_ok(&text_delivery(CUSTOMER, "wamid.IN.OPEN", "Bonjour", now() - 60))
        .await;
    d.settled().await;
    (fake, d)
}

async fn send(d: &TestDaemon, body: Value) -> (u16, Value) {
    d.api_post("/api/messages", &body).await
}

/// Posts `body` straight to the fake, as a client that skipped walua's checks would.
async fn post_to_fake(fake: &FakeGraph, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/{PNID}/messages", fake.url()))
        .bearer_auth(ACCESS_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The body the fake accepted for queued message `id`.
async fn accepted_body(d: &TestDaemon, fake: &FakeGraph, id: &Value) -> Value {
    let m = d.wait_status(id, "sent").await;
    let wamid = m["wamid"].as_str().expect("wamid stored").to_string();
    fake.accepted()
        .into_iter()
        .find(|(w, _)| *w == wamid)
        .map(|(_, b)| b)
        .expect("the fake accepted it")
}

#[tokio::test]
async fn voice_notes_and_media_headers_reach_the_graph_api_in_metas_shape() {
    let (fake, d) = live_with(None).await;
    let cases = [
        (
            json!({"type": "audio", "media": "1013859600285441", "voice": true}),
            json!({"type": "audio", "audio": {"id": "1013859600285441", "voice": true}}),
        ),
        (
            json!({"type": "audio", "link": "https://exemple.sn/note.ogg", "voice": true}),
            json!({"type": "audio", "audio": {"link": "https://exemple.sn/note.ogg", "voice": true}}),
        ),
        (
            json!({"type": "buttons", "body": "Valider ?", "buttons": [{"id": "btn_yes", "title": "Oui"}],
                   "header": {"type": "image", "image": {"id": "2762702990552401"}}}),
            json!({"type": "interactive", "interactive": {"type": "button",
                   "header": {"type": "image", "image": {"id": "2762702990552401"}},
                   "body": {"text": "Valider ?"},
                   "action": {"buttons": [{"type": "reply", "reply": {"id": "btn_yes", "title": "Oui"}}]}}}),
        ),
        (
            json!({"type": "buttons", "body": "Votre facture", "buttons": [{"id": "pay", "title": "Payer"}],
                   "header": {"type": "document", "document": {"link": "https://exemple.sn/F1.pdf", "filename": "F1.pdf"}}}),
            json!({"type": "interactive", "interactive": {"type": "button",
                   "header": {"type": "document", "document": {"link": "https://exemple.sn/F1.pdf", "filename": "F1.pdf"}},
                   "body": {"text": "Votre facture"},
                   "action": {"buttons": [{"type": "reply", "reply": {"id": "pay", "title": "Payer"}}]}}}),
        ),
        (
            json!({"type": "cta_url", "body": "Suivre la livraison", "display_text": "Suivre", "url": "https://exemple.sn/suivi/42",
                   "header": {"type": "video", "video": {"link": "https://exemple.sn/livraison.mp4"}}}),
            json!({"type": "interactive", "interactive": {"type": "cta_url",
                   "header": {"type": "video", "video": {"link": "https://exemple.sn/livraison.mp4"}},
                   "body": {"text": "Suivre la livraison"},
                   "action": {"name": "cta_url", "parameters": {"display_text": "Suivre", "url": "https://exemple.sn/suivi/42"}}}}),
        ),
    ];
    for (mut request, expected) in cases {
        request["to"] = json!(CUSTOMER);
        let (status, answer) = send(&d, request.clone()).await;
        assert_eq!(status, 202, "{request}: {answer}");
        let body = accepted_body(&d, &fake, &answer["id"]).await;
        for (k, v) in expected.as_object().unwrap() {
            assert_eq!(&body[k], v, "{request}: {k}");
        }
        assert_eq!(body["to"], CUSTOMER);
    }
}

#[tokio::test]
async fn meta_limits_are_checked_before_anything_is_queued() {
    let (fake, d) = live_with(None).await;
    let refused = [
        (
            json!({"type": "list", "body": "Menu", "button": "Choisir", "sections": [{"rows": [{"id": "r", "title": "t"}]}],
                   "header": {"type": "image", "image": {"link": "https://exemple.sn/a.png"}}}),
            "header",
        ),
        (
            json!({"type": "audio", "link": "https://exemple.sn/chanson.mp3", "voice": true}),
            "voice",
        ),
        (
            json!({"type": "buttons", "body": "b", "buttons": [{"id": "a", "title": "x"}],
                   "header": {"type": "image", "image": {"id": "1", "link": "https://exemple.sn/a.png"}}}),
            "header.image",
        ),
        (
            json!({"type": "cta_url", "body": "b", "display_text": "d", "url": "https://exemple.sn",
                   "header": {"type": "image", "image": {"id": "123"}}}),
            "header.image.id",
        ),
    ];
    for (mut request, field) in refused {
        request["to"] = json!(CUSTOMER);
        let (status, answer) = send(&d, request.clone()).await;
        assert_eq!(status, 422, "{request}: {answer}");
        assert!(answer.to_string().contains(field), "{request}: {answer}");
    }
    // A header of an unknown shape is refused when the request is read.
    let (status, answer) = send(
        &d,
        json!({"to": CUSTOMER, "type": "buttons", "body": "b", "buttons": [{"id": "a", "title": "x"}],
               "header": {"type": "audio", "audio": {"link": "https://exemple.sn/a.ogg"}}}),
    )
    .await;
    assert!((400..500).contains(&status), "{answer}");
    assert!(fake.accepted().is_empty(), "nothing reached Meta");
}

#[tokio::test]
async fn the_typing_indicator_is_a_read_receipt_with_typing_indicator() {
    let (fake, d) = live_with(None).await;
    let (status, a) = send(
        &d,
        json!({"to": CUSTOMER, "type": "typing", "message_id": "wamid.IN.OPEN"}),
    )
    .await;
    assert_eq!(status, 202, "{a}");
    let r = d
        .eventually("typing sent", || async {
            fake.requests().into_iter().find(|r| r.body["status"] == "read")
        })
        .await;
    assert_eq!(
        r.body,
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN.OPEN",
               "typing_indicator": {"type": "text"}})
    );
    assert_eq!(r.outcome_status, 200);
    let m = d.wait_status(&a["id"], "sent").await;
    assert_eq!(m["type"], "typing", "{m}");
}

#[tokio::test]
async fn the_fake_refuses_bodies_meta_would_refuse() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let msg = |extra: Value| {
        let mut b = json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    let buttons = json!({"buttons": [{"type": "reply", "reply": {"id": "a", "title": "x"}}]});
    let bad = [
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X", "typing_indicator": {"type": "audio"}}),
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X", "typing_indicator": true}),
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X", "typing": true}),
        msg(json!({"type": "audio", "audio": {"id": "1", "voice": "yes"}})),
        msg(json!({"type": "audio", "audio": {"id": "1", "link": "https://e.sn/a.ogg"}})),
        msg(json!({"type": "audio", "audio": {"id": "1", "caption": "c"}})),
        msg(
            json!({"type": "interactive", "interactive": {"type": "list", "body": {"text": "b"},
            "header": {"type": "image", "image": {"link": "https://e.sn/a.png"}},
            "action": {"button": "B", "sections": [{"rows": [{"id": "r", "title": "t"}]}]}}}),
        ),
        msg(
            json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "b"},
            "header": {"type": "image", "link": "https://e.sn/a.png"}, "action": buttons}}),
        ),
        msg(
            json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "b"},
            "header": {"type": "image", "image": {"link": "https://e.sn/a.png", "filename": "a.png"}}, "action": buttons}}),
        ),
        msg(
            json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "b"},
            "header": {"type": "audio", "audio": {"link": "https://e.sn/a.ogg"}}, "action": buttons}}),
        ),
    ];
    for body in bad {
        let (status, answer) = post_to_fake(&fake, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], 100, "{answer}");
    }
    let good = [
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X", "typing_indicator": {"type": "text"}}),
        msg(json!({"type": "audio", "audio": {"id": "1", "voice": true}})),
        msg(
            json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "b"},
            "header": {"type": "document", "document": {"id": "9", "filename": "F.pdf"}}, "action": buttons}}),
        ),
    ];
    for body in good {
        let (status, answer) = post_to_fake(&fake, &body).await;
        assert_eq!(status, 200, "{body}: {answer}");
    }
}

const SCRIPT: &str = r#"
return {
  run = function(message)
    env.whatsapp.typing(message)
    env.whatsapp.send_audio(message.from, { media = "77001", voice = true })
    env.whatsapp.send_buttons(message.from, "Votre facture", { { id = "pay", title = "Payer" } }, {
      header = { type = "document", document = { link = "https://exemple.sn/F1.pdf", filename = "F1.pdf" } },
      footer = "Boutique",
    })
    env.whatsapp.send_buttons(message.from, "Encore ?", { { id = "again", title = "Oui" } }, { header = "Texte" })
    -- Not OGG/OPUS: refused before any upload.
    local ok, err = pcall(env.whatsapp.send_audio, message.from, { bytes = "ID3 not an ogg file", voice = true })
    env.whatsapp.send_text(message.from, "voice: " .. tostring(ok) .. " " .. tostring(err))
  end,
}
"#;

#[tokio::test]
async fn lua_sends_voice_notes_media_headers_and_the_typing_indicator() {
    let (fake, d) = live_with(Some(SCRIPT)).await;
    let sent = fake.wait_for_accepted(4, Duration::from_secs(10)).await;
    let typing = d
        .eventually("typing sent", || async {
            fake.requests().into_iter().find(|r| r.body["status"] == "read")
        })
        .await;
    assert_eq!(
        typing.body,
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN.OPEN",
               "typing_indicator": {"type": "text"}})
    );
    let of_type = |t: &str| -> Vec<Value> { sent.iter().map(|(_, b)| b.clone()).filter(|b| b["type"] == t).collect() };
    assert_eq!(of_type("audio")[0]["audio"], json!({"id": "77001", "voice": true}));
    let buttons = of_type("interactive");
    assert_eq!(
        buttons[0]["interactive"]["header"],
        json!({"type": "document", "document": {"link": "https://exemple.sn/F1.pdf", "filename": "F1.pdf"}})
    );
    assert_eq!(buttons[0]["interactive"]["footer"], json!({"text": "Boutique"}));
    assert_eq!(
        buttons[1]["interactive"]["header"],
        json!({"type": "text", "text": "Texte"})
    );
    let text = of_type("text")[0]["text"]["body"].as_str().unwrap().to_string();
    assert!(text.starts_with("voice: false") && text.contains("OGG"), "{text}");
    assert!(fake.uploads().is_empty(), "nothing was uploaded");
}
