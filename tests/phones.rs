//! Phone numbers as people write them, through the real daemon: one canonical contact per
//! number whatever its format, invalid numbers refused with the reason, Meta's wa_id kept
//! when it differs, and contacts stored under a bad key by an older walua merged at start.

mod support;

use serde_json::{Value, json};
use support::fake_graph::FakeGraph;
use support::*;

const SN: &str = "[whatsapp]\ndefault_country = \"SN\"\n";

/// A live daemon (fake Graph API) whose numbers without country code are Senegalese.
async fn senegal() -> (FakeGraph, TestDaemon) {
    let graph = FakeGraph::start(ACCESS_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        dir.path(),
        &live_whatsapp(&graph.url(), "default_country = \"SN\"\nallow_outside_window = true"),
        "",
    );
    (graph, TestDaemon::start_in(dir, text).await)
}

async fn send(d: &TestDaemon, to: &str) -> (u16, Value) {
    d.api_post("/api/messages", &json!({"to": to, "type": "text", "text": "Bonjour"}))
        .await
}

#[tokio::test]
async fn one_contact_per_number_whatever_its_format() {
    let (graph, d) = senegal().await;
    for to in [
        "77 123 45 67",
        "00221771234567",
        "+221 77 123 45 67",
        "221771234567",
        "(77) 123-45-67",
    ] {
        let (status, v) = send(&d, to).await;
        assert_eq!(status, 202, "{to}: {v}");
    }
    let sent = graph.wait_for_accepted(5, std::time::Duration::from_secs(10)).await;
    assert!(sent.iter().all(|(_, b)| b["to"] == "221771234567"), "{sent:?}");
    let (_, convs) = d.api("/api/conversations").await;
    let contacts: Vec<&str> = convs["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["contact"].as_str().unwrap())
        .collect();
    assert_eq!(contacts, vec!["221771234567"]);
    // Looked up as a person types it.
    let (status, v) = d.api("/api/conversations/77%20123%2045%2067/messages").await;
    assert_eq!((status, v["messages"].as_array().unwrap().len()), (200, 5), "{v}");
}

#[tokio::test]
async fn an_invalid_number_is_refused_with_the_reason_and_nothing_is_recorded() {
    let (graph, d) = senegal().await;
    for (to, why) in [
        ("77 12", "`77 12` is not a valid phone number (region SN)"),
        ("(603)-996-3829", "not a valid phone number (region SN)"),
    ] {
        let (status, v) = send(&d, to).await;
        assert_eq!(status, 422, "{to}: {v}");
        assert!(v["error"].to_string().contains(why), "{to}: {v}");
    }
    // With its country code the US number goes, in Meta's form.
    let (status, _) = send(&d, "+1 (603) 996-3829 ext. 12").await;
    assert_eq!(status, 202);
    let sent = graph.wait_for_accepted(1, std::time::Duration::from_secs(10)).await;
    assert_eq!(sent[0].1["to"], "16039963829");
    let (_, convs) = d.api("/api/conversations").await;
    assert_eq!(convs["conversations"].as_array().unwrap().len(), 1, "{convs}");
}

#[tokio::test]
async fn scripts_normalise_numbers_with_env_phone() {
    let dir = tempfile::tempdir().unwrap();
    put_script(
        dir.path(),
        "on_message.lua",
        r#"return { run = function(msg)
  local a = env.phone.normalize("77 123 45 67")
  local b = env.phone.normalize("(603)-996-3829", "US")
  local c, why = env.phone.normalize("77 12")
  local d, none = env.phone.normalize(false)
  env.whatsapp.send_text(msg.from, table.concat({ a, b, tostring(c), why, tostring(d), none }, "|"))
end }"#,
    );
    let text = config_text(dir.path(), SN.trim_start_matches("[whatsapp]\n"), "");
    let d = TestDaemon::start_in(dir, text).await;
    d.deliver_ok(&text_delivery("221770000001", "wamid.P1", "numéros ?", now()))
        .await;
    let out = d
        .eventually("the reply", || async {
            d.outbound_of("221770000001").await.into_iter().next()
        })
        .await;
    assert_eq!(
        out["content"]["text"].as_str().or(out["summary"].as_str()).unwrap(),
        "221771234567|16039963829|nil|`77 12` is not a valid phone number (region SN): no such number in its country's numbering plan (too short, too long or an unused prefix)|nil|no phone number"
    );
}

#[tokio::test]
async fn metas_wa_id_wins_when_it_writes_the_number_otherwise() {
    let (graph, d) = senegal().await;
    // Meta knows this Brazilian mobile without its ninth digit.
    graph.knows_as("5511912345678", "551112345678");
    let (status, _) = send(&d, "+55 11 91234-5678").await;
    assert_eq!(status, 202);
    graph.wait_for_accepted(1, std::time::Duration::from_secs(10)).await;
    let (_, convs) = d
        .eventually("the contact moved to Meta's wa_id", || async {
            let (s, v) = d.api("/api/conversations").await;
            (v["conversations"][0]["contact"] == "551112345678").then_some((s, v))
        })
        .await;
    assert_eq!(convs["conversations"].as_array().unwrap().len(), 1, "{convs}");
    // The customer's reply, from Meta's wa_id, lands in the same conversation, and the
    // number as first written still finds it.
    d.deliver_ok(&text_delivery("551112345678", "wamid.BR1", "Oi", now()))
        .await;
    d.settled().await;
    let (_, v) = d.api("/api/conversations/%2B5511912345678/messages").await;
    assert_eq!(v["messages"].as_array().unwrap().len(), 2, "{v}");
}

#[tokio::test]
async fn contacts_an_older_walua_keyed_badly_are_merged_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        // What walua before libphonenumber stored for "77 123 45 67" and "00221771234567".
        let store = walua::store::Store::open(&dir.path().join("walua.redb")).unwrap();
        for (i, bad) in ["771234567", "00221771234567", "6039963829"].iter().enumerate() {
            store
                .enqueue_outbound(walua::store::outbox::NewOutbound {
                    id: store.allocate_message_id(),
                    recipient: bad.to_string(),
                    kind: "text".into(),
                    summary: format!("ancien {i}"),
                    content: json!({"type": "text", "text": format!("ancien {i}")}),
                    body: json!({"messaging_product": "whatsapp", "to": bad, "type": "text", "text": {"body": "x"}}),
                    free_form: true,
                    allow_outside_window: true,
                    dry_run: true,
                    origin: "api".into(),
                    reply_to: None,
                    phone_number_id: None,
                    record: None,
                    chatter_file: None,
                })
                .unwrap();
        }
    }
    let text = config_text(dir.path(), SN.trim_start_matches("[whatsapp]\n"), "");
    let d = TestDaemon::start_in(dir, text).await;
    let (_, convs) = d.api("/api/conversations").await;
    let mut contacts: Vec<(String, u64)> = convs["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["contact"].as_str().unwrap().to_string(),
                c["message_count"].as_u64().unwrap(),
            )
        })
        .collect();
    contacts.sort();
    assert_eq!(
        contacts,
        vec![("221771234567".to_string(), 2), ("6039963829".to_string(), 1)],
        "the two Senegalese forms merged; the US number without +1 cannot be read in SN and stays"
    );
    let (_, v) = d.api("/api/conversations/771234567/messages").await;
    assert_eq!(
        v["messages"].as_array().unwrap().len(),
        2,
        "the old key finds the merged conversation"
    );
}

#[tokio::test]
async fn a_parent_bsuid_is_the_contact_it_belongs_to() {
    let graph = FakeGraph::start(ACCESS_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), &live_whatsapp(&graph.url(), ""), "");
    let d = TestDaemon::start_in(dir, text).await;
    let parent = "SN.ENT.99990000111122223333";
    d.deliver_ok(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "221338601234", "phone_number_id": "1234567890"},
            "contacts": [{"profile": {"name": "Awa"}, "wa_id": "221771234567",
                          "user_id": "SN.13491208655302741918", "parent_user_id": parent}],
            "messages": [{"from": "221771234567", "id": "wamid.PARENT1", "timestamp": now().to_string(),
                          "type": "text", "text": {"body": "Bonjour"}}]
        }}]}]
    }))
    .await;
    d.settled().await;
    // A free-form reply addressed to the parent BSUID: inside the customer's window, and
    // sent to the person it belongs to.
    let (status, v) = send(&d, parent).await;
    assert_eq!(status, 202, "{v}");
    let sent = graph.wait_for_accepted(1, std::time::Duration::from_secs(10)).await;
    assert_eq!(sent[0].1["to"], "221771234567", "{:?}", sent[0].1);
    let (_, convs) = d.api("/api/conversations").await;
    assert_eq!(convs["conversations"].as_array().unwrap().len(), 1, "{convs}");
    let (_, v) = d.api(&format!("/api/conversations/{parent}/messages")).await;
    assert_eq!(v["messages"].as_array().unwrap().len(), 2, "{v}");
}
