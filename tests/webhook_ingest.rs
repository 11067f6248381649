//! Meta's webhook, through the real daemon: verification, signatures, limits, every message
//! type, redeliveries, statuses and restarts.

mod support;

use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn meta_subscription_check_echoes_the_challenge_only_with_the_right_token() {
    let d = TestDaemon::start().await;
    let ok = d
        .http
        .get(d.url(&format!(
            "/webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");

    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        &format!("hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"),
        "hub.challenge=1",
    ] {
        let r = d.http.get(d.url(&format!("/webhook?{query}"))).send().await.unwrap();
        assert_eq!(r.status(), 403, "{query}");
    }
}

#[tokio::test]
async fn deliveries_need_a_valid_signature_and_a_refused_one_stores_nothing() {
    let d = TestDaemon::start().await;
    let body = serde_json::to_vec(&text_delivery("221771234567", "wamid.SIG1", "Bonjour", now())).unwrap();

    let missing = d.http.post(d.url("/webhook")).body(body.clone()).send().await.unwrap();
    assert_eq!(missing.status(), 403);
    let wrong_key = walua::webhook::signature::sign(b"not-the-secret", &body);
    let bad = d
        .http
        .post(d.url("/webhook"))
        .header("x-hub-signature-256", wrong_key)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
    let garbage = d
        .http
        .post(d.url("/webhook"))
        .header("x-hub-signature-256", "sha256=nothex")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 403);
    d.settled().await;
    assert!(
        d.messages_of("221771234567").await.is_empty(),
        "a refused delivery was stored"
    );

    assert_eq!(d.deliver(&body).await.status(), 200);
    let msgs = d
        .eventually("message stored", || async {
            let m = d.messages_of("221771234567").await;
            (!m.is_empty()).then_some(m)
        })
        .await;
    assert_eq!(msgs[0]["summary"], "Bonjour");
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_refused() {
    let d = TestDaemon::start().await; // body_limit = 65536 in tests
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000));
    assert_eq!(d.deliver(big.as_bytes()).await.status(), 413);

    // Without Content-Length (chunked): the limit still holds while streaming.
    let sig = walua::webhook::signature::sign(APP_SECRET.as_bytes(), big.as_bytes());
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big.as_bytes().chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let streamed = d
        .http
        .post(d.url("/webhook"))
        .header("x-hub-signature-256", sig)
        .body(reqwest::Body::wrap_stream(futures_stream(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);

    for bad in [&b"{not json"[..], b"", b"[1,2,3]", b"\"just a string\""] {
        let r = d.deliver(bad).await;
        assert_eq!(r.status(), 400, "{:?}", String::from_utf8_lossy(bad));
        let err: Value = r.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains("JSON"), "{err}");
    }
    let (_, h) = d.api("/healthz").await;
    assert_eq!(h["journal_backlog"], 0);
    let (_, conversations) = d.api("/api/conversations").await;
    assert_eq!(conversations["conversations"].as_array().unwrap().len(), 0);
}

fn futures_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    tokio_stream::iter(chunks)
}

/// (fixture, expected type, expected summary fragment)
const MESSAGE_FIXTURES: &[(&str, &str, &str)] = &[
    ("text.json", "text", "Bonjour, je voudrais commander"),
    ("text_preview_url.json", "text", "https://"),
    ("image.json", "image", "[image] Photo du produit"),
    ("audio.json", "audio", "[audio]"),
    ("video.json", "video", "[video]"),
    ("document.json", "document", "bon_de_commande.pdf"),
    ("sticker.json", "sticker", "[sticker]"),
    ("location.json", "location", "Marché Sandaga"),
    ("contacts.json", "contacts", "2 card(s)"),
    (
        "interactive_button_reply.json",
        "interactive",
        "Valider (btn_validate_order_42)",
    ),
    ("interactive_list_reply.json", "interactive", "Wave (pay_wave)"),
    ("interactive_nfm_reply.json", "interactive", "[flow]"),
    ("button.json", "button", "Valider (btn_validate_order_42)"),
    ("reaction.json", "reaction", "👍"),
    ("order.json", "order", "[order] 2 item(s)"),
    ("system.json", "system", "[system]"),
    ("referral.json", "text", ""),
    ("unsupported.json", "unsupported", "[unsupported]"),
    ("unknown_type.json", "hologram", "[hologram]"),
    ("context_reply.json", "text", ""),
    ("context_forwarded.json", "text", ""),
    ("context_referred_product.json", "text", ""),
    ("username_only.json", "text", ""),
];

fn first_message(fixture_value: &Value) -> &Value {
    &fixture_value["entry"][0]["changes"][0]["value"]["messages"][0]
}

#[tokio::test]
async fn every_inbound_message_type_is_stored_with_its_type_summary_and_raw_copy() {
    let d = TestDaemon::start().await;
    for (file, _, _) in MESSAGE_FIXTURES {
        d.deliver_ok(&fixture(file)).await;
    }
    d.settled().await;
    for (file, kind, fragment) in MESSAGE_FIXTURES {
        let f = fixture(file);
        let m = first_message(&f);
        let wamid = m["id"].as_str().unwrap();
        let contact = m["from"].as_str().or(m["from_user_id"].as_str()).unwrap();
        let stored = d.messages_of(contact).await;
        let found = stored
            .iter()
            .find(|s| s["wamid"] == wamid)
            .unwrap_or_else(|| panic!("{file}: {wamid} not stored under {contact}"));
        assert_eq!(found["type"], *kind, "{file}");
        assert_eq!(found["direction"], "inbound", "{file}");
        assert_eq!(found["status"], "received", "{file}");
        assert!(
            found["summary"].as_str().unwrap().contains(fragment),
            "{file}: {}",
            found["summary"]
        );
        assert_eq!(found["raw"], *m, "{file}: the raw copy differs");
        let (status, one) = d.api(&format!("/api/messages/{}", found["id"])).await;
        assert_eq!(status, 200);
        assert_eq!(one["wamid"], wamid);
    }

    // Typed content and context survive into the store.
    let by = |file: &str| {
        let f = fixture(file);
        first_message(&f)["id"].as_str().unwrap().to_string()
    };
    let all = d.messages_of("221771234567").await;
    let get = |wamid: String| all.iter().find(|m| m["wamid"] == wamid.as_str()).cloned().unwrap();
    assert_eq!(
        get(by("interactive_button_reply.json"))["content"]["id"],
        "btn_validate_order_42"
    );
    assert_eq!(get(by("button.json"))["content"]["payload"], "btn_validate_order_42");
    assert_eq!(get(by("location.json"))["content"]["latitude"], 14.6928);
    assert_eq!(get(by("context_forwarded.json"))["context"]["forwarded"], true);
    assert!(get(by("context_reply.json"))["context"]["id"].is_string());
    assert!(get(by("context_referred_product.json"))["context"]["referred_product"]["product_retailer_id"].is_string());
    assert_eq!(get(by("unsupported.json"))["error"]["code"], 131051);
}

#[tokio::test]
async fn a_username_only_contact_is_keyed_by_its_bsuid() {
    let d = TestDaemon::start().await;
    d.deliver_ok(&fixture("username_only.json")).await;
    d.settled().await;
    let (_, list) = d.api("/api/conversations").await;
    let c = &list["conversations"][0];
    assert_eq!(c["contact"], "SN.99887766554433221100");
    assert!(c["wa_id"].is_null());
    assert_eq!(c["username"], "@moussa.shop");
    // the username works as a contact reference too
    assert_eq!(d.messages_of("@moussa.shop").await.len(), 1);
}

#[tokio::test]
async fn a_phone_keyed_conversation_merges_into_the_bsuid_one_on_first_sight_of_both() {
    let d = TestDaemon::start().await;
    d.deliver_ok(&fixture("phone_then_bsuid_a.json")).await;
    d.settled().await;
    let (_, list) = d.api("/api/conversations").await;
    assert_eq!(list["conversations"][0]["contact"], "221775550000");

    d.deliver_ok(&fixture("phone_then_bsuid_b.json")).await;
    d.settled().await;
    let (_, list) = d.api("/api/conversations").await;
    let convs = list["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 1, "{list}");
    assert_eq!(convs[0]["contact"], "SN.11112222333344445555");
    assert_eq!(convs[0]["wa_id"], "221775550000");
    assert_eq!(convs[0]["message_count"], 2);
    // both forms reach the same two messages
    let by_phone = d.messages_of("+221 77 555 00 00").await;
    let by_bsuid = d.messages_of("SN.11112222333344445555").await;
    assert_eq!(by_phone.len(), 2);
    let ids = |msgs: &[Value]| msgs.iter().map(|m| m["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&by_phone), ids(&by_bsuid));
    assert!(by_phone.iter().all(|m| m["contact"] == "SN.11112222333344445555"));
}

#[tokio::test]
async fn a_redelivered_wamid_is_stored_once() {
    let d = TestDaemon::start().await;
    let body = text_delivery("221770000001", "wamid.DUP1", "Une fois", now());
    for _ in 0..5 {
        d.deliver_ok(&body).await;
    }
    // and again after the first copies were processed
    d.settled().await;
    d.deliver_ok(&body).await;
    d.settled().await;
    let msgs = d.messages_of("221770000001").await;
    assert_eq!(msgs.len(), 1);
    let (_, list) = d.api("/api/conversations").await;
    assert_eq!(list["conversations"][0]["message_count"], 1);
}

#[tokio::test]
async fn a_batch_delivery_stores_every_message_of_every_entry() {
    let d = TestDaemon::start().await;
    d.deliver_ok(&fixture("batch_two_messages.json")).await;
    d.settled().await;
    let (_, list) = d.api("/api/conversations").await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), 2, "{list}");
}

#[tokio::test]
async fn other_webhook_fields_and_value_errors_are_kept_raw() {
    let d = TestDaemon::start().await;
    for f in [
        "template_status_update.json",
        "account_update.json",
        "value_errors.json",
    ] {
        d.deliver_ok(&fixture(f)).await;
    }
    d.settled().await;
    let (_, events) = d.api("/api/events").await;
    let fields: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["message_template_status_update", "account_update", "messages.errors"]
    );
    assert_eq!(
        events["events"][0]["value"],
        fixture("template_status_update.json")["entry"][0]["changes"][0]["value"]
    );
}

#[tokio::test]
async fn every_shared_real_shaped_fixture_is_accepted_and_processed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/webhooks");
    let mut files = Vec::new();
    for sub in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let p = sub.path();
        let entries: Vec<_> = if p.is_dir() {
            std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()).collect()
        } else {
            vec![p]
        };
        files.extend(
            entries
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "json")),
        );
    }
    if files.is_empty() {
        eprintln!("../shared/fixtures/webhooks not present; skipping");
        return;
    }
    files.sort();
    let d = TestDaemon::start().await;
    let mut expected_messages = std::collections::HashSet::new();
    for f in &files {
        let body = std::fs::read(f).unwrap();
        let r = d.deliver(&body).await;
        assert_eq!(r.status(), 200, "{} refused: {}", f.display(), r.text().await.unwrap());
        let v: Value = serde_json::from_slice(&body).unwrap();
        for e in v["entry"].as_array().into_iter().flatten() {
            for c in e["changes"].as_array().into_iter().flatten() {
                if c["field"] == "messages" {
                    for m in c["value"]["messages"].as_array().into_iter().flatten() {
                        expected_messages.insert(m["id"].as_str().unwrap().to_string());
                    }
                }
            }
        }
    }
    d.settled().await;
    let (dir, _) = d.stop().await;
    let store = walua::store::Store::open(&dir.path().join("walua.redb")).unwrap();
    for wamid in &expected_messages {
        assert!(store.message_by_wamid(wamid).unwrap().is_some(), "{wamid} not stored");
    }
    assert!(store.events(1000).unwrap().len() >= 20, "non-message fields kept raw");
    let journal = walua::webhook::journal::DeliveryLog::open(
        &walua::webhook::journal::dir_for_store(&dir.path().join("walua.redb")),
        store.journal_applied().unwrap(),
    )
    .unwrap();
    assert_eq!(journal.files().backlog(store.journal_applied().unwrap()), 0);
}

#[tokio::test]
async fn a_status_for_an_unknown_wamid_is_kept_not_dropped() {
    let d = TestDaemon::start().await;
    d.deliver_ok(&status_delivery("wamid.NOT.YET.KNOWN", "delivered", now()))
        .await;
    d.deliver_ok(&status_delivery("wamid.NOT.YET.KNOWN", "sent", now() - 1))
        .await;
    d.settled().await;
    let (dir, _) = d.stop().await;
    let store = walua::store::Store::open(&dir.path().join("walua.redb")).unwrap();
    let kept = store.orphan_statuses("wamid.NOT.YET.KNOWN").unwrap();
    let names: Vec<&str> = kept.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(names, ["delivered", "sent"]);
}

#[tokio::test]
async fn journaled_but_unprocessed_deliveries_are_processed_after_a_restart() {
    let d = TestDaemon::start().await;
    d.deliver_ok(&text_delivery("221770000002", "wamid.BEFORE", "avant", now()))
        .await;
    d.settled().await;
    let (dir, text) = d.stop().await;

    // As if the daemon had answered 200 for these and then died before processing them.
    journal_unprocessed(
        dir.path(),
        &[
            &text_delivery("221770000002", "wamid.CRASH1", "un", now()),
            &text_delivery("221770000002", "wamid.CRASH2", "deux", now()),
            &text_delivery("221770000002", "wamid.BEFORE", "avant", now()),
        ],
    );

    let d = TestDaemon::start_in(dir, text).await;
    let msgs = d
        .eventually("journal replayed", || async {
            let m = d.messages_of("221770000002").await;
            (m.len() >= 3).then_some(m)
        })
        .await;
    d.settled().await;
    let wamids: Vec<&str> = msgs.iter().map(|m| m["wamid"].as_str().unwrap()).collect();
    assert_eq!(wamids, ["wamid.BEFORE", "wamid.CRASH1", "wamid.CRASH2"]);
    let d = d.restart().await;
    d.settled().await;
    assert_eq!(d.messages_of("221770000002").await.len(), 3, "processed exactly once");
}

#[tokio::test]
async fn the_admin_api_requires_the_bearer_token() {
    let d = TestDaemon::start().await;
    let none = d.http.get(d.url("/api/conversations")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let wrong = d
        .http
        .get(d.url("/api/conversations"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let (status, _) = d.api("/api/conversations").await;
    assert_eq!(status, 200);
    let (status, _) = d.api("/api/messages/999999").await;
    assert_eq!(status, 404);
    let (status, _) = d.api("/api/messages/abc").await;
    assert_eq!(status, 400);
    let (status, _) = d.api("/api/conversations/221700000000/messages").await;
    assert_eq!(status, 404);
    // /healthz needs no token
    let h = d.http.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 200);
}

#[tokio::test]
async fn conversations_are_listed_newest_first_with_counts_and_the_window_time() {
    let d = TestDaemon::start().await;
    let t = now();
    d.deliver_ok(&text_delivery("221770000010", "wamid.A1", "ancien", t - 3600))
        .await;
    d.deliver_ok(&text_delivery("221770000011", "wamid.B1", "récent", t))
        .await;
    d.deliver_ok(&text_delivery("221770000010", "wamid.A2", "encore", t - 1800))
        .await;
    d.settled().await;
    let (_, list) = d.api("/api/conversations").await;
    let convs = list["conversations"].as_array().unwrap();
    assert_eq!(convs[0]["contact"], "221770000011");
    assert_eq!(convs[1]["contact"], "221770000010");
    assert_eq!(convs[1]["message_count"], 2);
    assert_eq!(convs[1]["last_inbound_at"], t - 1800);
    assert_eq!(convs[1]["last_summary"], "encore");
    let msgs = d.messages_of("221770000010").await;
    assert_eq!(msgs[0]["summary"], "ancien");
    assert_eq!(msgs[1]["summary"], "encore");
}

#[test]
fn the_cli_prints_conversations_and_messages_tables() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = config_text(dir.path(), DRY_RUN, "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let conf = dir.path().join("walua.toml");
    std::fs::write(&conf, &text).unwrap();
    let config = walua::Config::from_toml(&conf, &text).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let l = rt
        .block_on(tokio::net::TcpListener::bind(config.server.listen))
        .unwrap();
    let daemon = rt.spawn(async move {
        walua::run(config, l, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let body = serde_json::to_vec(&json!(text_delivery(
        "221771112233",
        "wamid.CLI1",
        "Salut depuis le CLI",
        now()
    )))
    .unwrap();
    rt.block_on(async {
        let sig = walua::webhook::signature::sign(APP_SECRET.as_bytes(), &body);
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/webhook"))
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    });
    let bin = env!("CARGO_BIN_EXE_walua");
    let out = std::process::Command::new(bin)
        .args(["--config", conf.to_str().unwrap(), "conversations"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("CONTACT"), "{stdout}");
    assert!(
        stdout.contains("221771112233") && stdout.contains("Salut depuis le CLI"),
        "{stdout}"
    );
    let out = std::process::Command::new(bin)
        .args(["--config", conf.to_str().unwrap(), "messages", "221771112233"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("<-") && stdout.contains("received") && stdout.contains("Salut depuis le CLI"),
        "{stdout}"
    );
    let out = std::process::Command::new(bin)
        .args(["--config", conf.to_str().unwrap(), "messages", "221700000000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no conversation"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = stop.send(());
    rt.block_on(daemon).unwrap();
}

#[tokio::test]
async fn applied_journal_segments_are_deleted_and_nothing_is_processed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), DRY_RUN, "").replace("[store]\n", "[store]\njournal_segment_bytes = 4096\n");
    let d = TestDaemon::start_in(dir, text).await;
    for i in 0..40 {
        let wamid = format!("wamid.SEG{i}");
        d.deliver_ok(&text_delivery("221770000003", &wamid, &format!("message {i}"), now()))
            .await;
    }
    d.settled().await;
    assert_eq!(d.messages_of("221770000003").await.len(), 40);
    // 40 deliveries of ~600 bytes fill several 4 KiB segments; the applied ones are gone.
    let segments = || {
        std::fs::read_dir(d.dir.path().join("walua.journal"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log"))
            .count()
    };
    let left = segments();
    assert!(left <= 2, "{left} segments left");
    let d = d.restart().await;
    d.settled().await;
    assert_eq!(d.messages_of("221770000003").await.len(), 40, "processed exactly once");
    let (_, h) = d.api("/healthz").await;
    assert_eq!(h["journal_backlog"], 0, "{h}");
}
