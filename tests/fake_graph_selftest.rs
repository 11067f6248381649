mod support;

// Self-test of the fake Graph API used by the integration tests.

use std::time::Duration;

use serde_json::{Value, json};
use support::fake_graph::{FakeGraph, Scripted};

const TOKEN: &str = "fake-graph-token-1a2b";

fn text(to: &str, body: &str) -> Value {
    json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "text", "text": {"body": body}})
}

async fn post(fg: &FakeGraph, auth: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/106540352242922/messages", fg.url()))
        .json(body);
    if let Some(t) = auth {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn send(fg: &FakeGraph, body: &Value) -> (u16, Value) {
    post(fg, Some(TOKEN), body).await
}

/// GET `url` with the access token.
async fn get(url: &str) -> reqwest::Response {
    reqwest::Client::new().get(url).bearer_auth(TOKEN).send().await.unwrap()
}

#[tokio::test]
async fn success_shape_and_recording() {
    let fg = FakeGraph::start(TOKEN).await;
    assert!(fg.url().starts_with("http://127.0.0.1:") && fg.url().ends_with("/v21.0"));
    let (s, v) = send(&fg, &text("221771234567", "Bonjour")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"messaging_product": "whatsapp", "contacts": [{"input": "221771234567", "wa_id": "221771234567"}],
               "messages": [{"id": "wamid.FAKE1", "message_status": "accepted"}]})
    );
    let reqs = fg.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("POST", "/v21.0/106540352242922/messages")
    );
    assert_eq!(
        reqs[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        (reqs[0].outcome_status, reqs[0].wamid.as_deref()),
        (200, Some("wamid.FAKE1"))
    );
    assert_eq!(
        fg.accepted(),
        vec![("wamid.FAKE1".to_string(), text("221771234567", "Bonjour"))]
    );

    let bsuid =
        json!({"messaging_product": "whatsapp", "recipient": "SN.1349120865", "type": "text", "text": {"body": "x"}});
    let (s, v) = send(&fg, &bsuid).await;
    assert_eq!((s, &v["contacts"][0]["input"]), (200, &json!("SN.1349120865")));
    assert_eq!(fg.wait_for_accepted(2, Duration::from_secs(1)).await.len(), 2);

    let (s, v) = reqwest::get(format!("{}/1/unknown/edge", fg.url()))
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 404);
    assert_eq!(v.json::<Value>().await.unwrap()["error"]["type"], "OAuthException");
}

#[tokio::test]
async fn rejects_like_meta() {
    let fg = FakeGraph::start(TOKEN).await;
    let (s, v) = post(&fg, None, &text("221771234567", "x")).await;
    assert_eq!((s, &v["error"]["code"]), (401, &json!(190)), "{v}");
    let (s, _) = post(&fg, Some("wrong"), &text("221771234567", "x")).await;
    assert_eq!(s, 401);

    let mut b = text("221771234567", "x");
    b.as_object_mut().unwrap().remove("messaging_product");
    let (s, v) = send(&fg, &b).await;
    assert_eq!((s, &v["error"]["code"]), (400, &json!(100)));
    assert_eq!(
        v["error"]["message"],
        "(#100) The parameter messaging_product is required."
    );
    assert_eq!(v["error"]["error_data"]["messaging_product"], "whatsapp");
    assert!(v["error"]["fbtrace_id"].as_str().unwrap().starts_with("Afake"));

    let buttons: Vec<Value> = (0..4)
        .map(|i| json!({"type": "reply", "reply": {"id": format!("b{i}"), "title": format!("B{i}")}}))
        .collect();
    let four = json!({"messaging_product": "whatsapp", "to": "221771234567", "type": "interactive",
        "interactive": {"type": "button", "body": {"text": "?"}, "action": {"buttons": buttons}}});
    let (s, v) = send(&fg, &four).await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("buttons"), "{v}");

    let (s, v) = send(&fg, &text("221771234567", &"é".repeat(4097))).await;
    assert!(
        s == 400 && v["error"]["message"].as_str().unwrap().contains("text['body']"),
        "{v}"
    );
    let mut b = text("221771234567", "x");
    b["biz_opaque_callback_data"] = json!("o".repeat(513));
    let (s, v) = send(&fg, &b).await;
    assert!(
        s == 400
            && v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("biz_opaque_callback_data")
    );
    let mut b = text("221771234567", "x");
    b["type"] = json!("carousel");
    assert_eq!(send(&fg, &b).await.0, 400);
    assert!(fg.accepted().is_empty());
    assert!(fg.requests().iter().all(|r| r.wamid.is_none()));
}

#[tokio::test]
async fn mark_read_succeeds() {
    let fg = FakeGraph::start(TOKEN).await;
    let (s, v) = send(
        &fg,
        &json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"}),
    )
    .await;
    assert_eq!((s, v), (200, json!({"success": true})));
    assert!(fg.accepted().is_empty());
}

#[tokio::test]
async fn scripted_then_normal() {
    let fg = FakeGraph::start(TOKEN).await;
    fg.push_response(Scripted::RateLimited);
    fg.push_response(Scripted::MetaError {
        http: 400,
        code: 131047,
        message: "Re-engagement".into(),
        details: "24h".into(),
    });
    let (s, v) = send(&fg, &text("221771234567", "a")).await;
    assert_eq!((s, &v["error"]["code"]), (429, &json!(130429)));
    let (s, v) = send(&fg, &text("221771234567", "a")).await;
    assert_eq!(
        (s, &v["error"]["code"], &v["error"]["error_data"]["details"]),
        (400, &json!(131047), &json!("24h"))
    );
    let (s, v) = send(&fg, &text("221771234567", "a")).await;
    assert_eq!((s, &v["messages"][0]["id"]), (200, &json!("wamid.FAKE1")));
    let statuses: Vec<u16> = fg.requests().iter().map(|r| r.outcome_status).collect();
    assert_eq!(statuses, [429, 400, 200]);
}

#[tokio::test]
async fn failure_rate_on_and_off() {
    let fg = FakeGraph::start(TOKEN).await;
    fg.set_failure_rate(1.0, vec![Scripted::Status(500), Scripted::Status(503)]);
    for _ in 0..5 {
        let (s, v) = send(&fg, &text("221771234567", "a")).await;
        assert!(s == 500 || s == 503, "{s} {v}");
    }
    assert!(fg.accepted().is_empty());
    fg.set_failure_rate(0.0, vec![]);
    assert_eq!(send(&fg, &text("221771234567", "a")).await.0, 200);
    assert_eq!(fg.accepted().len(), 1);
}

#[tokio::test]
async fn media_upload_metadata_download() {
    let fg = FakeGraph::start(TOKEN).await;
    let http = reqwest::Client::new();
    let pdf = b"%PDF-1.4 fake invoice\r\n--not-a-boundary".to_vec();
    let part = reqwest::multipart::Part::bytes(pdf.clone())
        .file_name("F001.pdf")
        .mime_str("application/pdf")
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .text("messaging_product", "whatsapp")
        .text("type", "application/pdf")
        .part("file", part);
    let r = http
        .post(format!("{}/106540352242922/media", fg.url()))
        .bearer_auth(TOKEN)
        .multipart(form);
    let v: Value = r.send().await.unwrap().json().await.unwrap();
    assert_eq!(v, json!({"id": "media-1"}));
    let up = fg.uploads();
    assert_eq!(
        (up[0].filename.as_deref(), up[0].mime_type.as_str()),
        (Some("F001.pdf"), "application/pdf")
    );
    assert_eq!(up[0].bytes, pdf);

    let meta: Value = get(&format!("{}/media-1", fg.url())).await.json().await.unwrap();
    assert_eq!(
        (&meta["mime_type"], &meta["file_size"], &meta["id"]),
        (&json!("application/pdf"), &json!(pdf.len()), &json!("media-1"))
    );
    assert_eq!(meta["sha256"].as_str().unwrap().len(), 64);
    let url = meta["url"].as_str().unwrap();
    assert_eq!(http.get(url).send().await.unwrap().status(), 401);
    let got = get(url).await.bytes().await.unwrap();
    assert_eq!(got.as_ref(), pdf.as_slice());

    fg.add_media("img1", b"jpeg".to_vec(), "image/jpeg");
    let meta: Value = get(&format!("{}/img1", fg.url())).await.json().await.unwrap();
    assert_eq!(meta["mime_type"], "image/jpeg");
    let r = get(&format!("{}/unknown", fg.url())).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], 100);
}

#[tokio::test]
async fn hang_times_out_and_drop_closes() {
    let fg = FakeGraph::start(TOKEN).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = format!("{}/106540352242922/messages", fg.url());
    let request = || {
        http.post(&url)
            .bearer_auth(TOKEN)
            .json(&text("221771234567", "a"))
            .send()
    };
    fg.push_response(Scripted::Hang);
    let e = request().await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    fg.push_response(Scripted::Drop);
    let e = request().await.unwrap_err();
    assert!(!e.is_timeout(), "{e:?}");
    assert!(fg.accepted().is_empty());
    assert!(fg.requests().iter().all(|r| r.outcome_status == 0));

    fg.set_latency(Duration::from_millis(100));
    fg.push_response(Scripted::Delay(Duration::from_millis(100)));
    let t = std::time::Instant::now();
    assert_eq!(request().await.unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
}

/// walua's own client and message bodies, every kind, against the fake.
#[tokio::test]
async fn accepts_everything_walua_sends() {
    use walua::whatsapp::{Disposition, GraphClient, OutboundContent, Recipient};
    let fg = FakeGraph::start(TOKEN).await;
    // Over HTTP/2 without TLS (h2c), as walua speaks HTTP/2 to Meta over TLS.
    let client = GraphClient::new(
        &fg.url(),
        "106540352242922",
        TOKEN.into(),
        Duration::from_millis(500),
        true,
    )
    .unwrap();
    let kinds = [
        json!({"type":"text","text":"Bonjour","preview_url":true}),
        json!({"type":"image","link":"https://example.com/a.jpg","caption":"Photo"}),
        json!({"type":"audio","media":"1234"}),
        json!({"type":"video","media":"99","caption":"Clip"}),
        json!({"type":"sticker","link":"http://example.com/s.webp"}),
        json!({"type":"document","media":"MEDIA_ID","filename":"F001.pdf","caption":"Votre facture"}),
        json!({"type":"template","name":"hello_world","lang":"en_US"}),
        json!({"type":"buttons","body":"Valider ?","buttons":[{"id":"a","title":"Oui"},{"id":"b","title":"Non"}]}),
        json!({"type":"list","body":"Menu","button":"Choisir","sections":[{"title":"A","rows":[{"id":"r1","title":"x"}]},{"title":"B","rows":[{"id":"r2","title":"y"}]}]}),
        json!({"type":"cta_url","body":"Suivre","display_text":"Voir","url":"https://example.com/t/1"}),
        json!({"type":"location","latitude":14.7167,"longitude":-17.4677,"name":"Dakar"}),
        json!({"type":"contacts","contacts":[{"name":{"formatted_name":"Awa Ndiaye"},"phones":[{"phone":"+221771234567"}]}]}),
        json!({"type":"reaction","message_id":"wamid.X","emoji":"👍"}),
    ];
    let mut sent = 0;
    for to in ["221771234567", "SN.13491208655302741918"] {
        let to = Recipient::parse(to).unwrap();
        for k in &kinds {
            let content: OutboundContent = serde_json::from_value(k.clone()).unwrap();
            let mut body = content.graph_body(&to, Some("wamid.CTX")).unwrap();
            body["biz_opaque_callback_data"] = json!("walua:1");
            let ok = client.send(&body).await.unwrap_or_else(|e| panic!("{k}: {e}"));
            sent += 1;
            assert_eq!(ok.wamid, format!("wamid.FAKE{sent}"));
        }
    }
    let read: OutboundContent = serde_json::from_value(json!({"type":"mark_read","message_id":"wamid.X"})).unwrap();
    let ok = client
        .send(
            &read
                .graph_body(&Recipient::parse("221771234567").unwrap(), None)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ok.wamid, "");
    assert_eq!(fg.accepted().len(), sent);

    let id = client
        .upload_media(b"%PDF".to_vec(), "application/pdf", "F.pdf")
        .await
        .unwrap();
    let m = client.download_media(&id, 1024).await.unwrap();
    assert_eq!(
        (m.bytes.as_slice(), m.mime_type.as_str(), m.file_size),
        (&b"%PDF"[..], "application/pdf", Some(4))
    );

    let text = json!({"messaging_product":"whatsapp","to":"221771234567","type":"text","text":{"body":"x"}});
    for (s, retry) in [
        (Scripted::RateLimited, true),
        (Scripted::Status(500), true),
        (Scripted::Hang, true),
    ] {
        fg.push_response(s);
        let f = client.send(&text).await.unwrap_err();
        assert_eq!(f.disposition == Disposition::Retry, retry, "{f}");
    }
    let bad = GraphClient::new(
        &fg.url(),
        "106540352242922",
        "wrong".into(),
        Duration::from_secs(1),
        false,
    )
    .unwrap();
    assert_eq!(bad.send(&text).await.unwrap_err().http_status, Some(401));
}
