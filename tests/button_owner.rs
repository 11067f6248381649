//! A button acts only for the customer walua sent it to: someone else sending its id (an
//! order id guessed, a crafted payload) gets a polite refusal and nothing happens in Odoo.
//! The rule follows the customer when Meta starts sending their BSUID, and clicks on
//! messages sent before walua kept the index are accepted.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::odoo_world::*;
use support::*;

const BSUID: &str = "SN.77770000111122223333";

fn click_with_bsuid(wamid: &str, button_id: &str) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "221338601234", "phone_number_id": "1234567890"},
            "contacts": [{"profile": {"name": "Awa Diop"}, "wa_id": PHONE, "user_id": BSUID}],
            "messages": [{"from": PHONE, "id": wamid, "timestamp": now().to_string(), "type": "interactive",
                          "context": {"from": "221338601234", "id": "wamid.PREVIOUS"},
                          "interactive": {"type": "button_reply", "button_reply": {"id": button_id, "title": "Valider"}}}]
        }}]}]
    })
}

fn confirms(w: &World) -> usize {
    w.odoo.calls().iter().filter(|c| c.method == "action_confirm").count()
}

#[tokio::test]
async fn another_contact_sending_the_button_id_is_refused_politely_and_the_order_stays_a_quote() {
    let w = world(true, |_| {}).await;
    let order = w.new_order();
    w.sent(1).await;
    let intruder = "221770000009";
    w.daemon
        .deliver_ok(&click_delivery(
            intruder,
            "wamid.INTRUDER",
            &format!("btn_validate_order_{order}"),
            "Valider",
        ))
        .await;
    let m = w.daemon.dispatched(intruder, "wamid.INTRUDER").await;
    assert_eq!(
        m["script"]["scripts"],
        json!(["refused: button not sent to this contact"]),
        "{m}"
    );
    let sent = w.sent(2).await;
    assert_eq!(sent[1]["to"], intruder);
    assert!(
        body_text(&sent[1]).starts_with("Désolé, ce bouton ne correspond à aucun message"),
        "{}",
        body_text(&sent[1])
    );
    assert_eq!(confirms(&w), 0, "nothing reached Odoo");
    assert_eq!(w.odoo.get("sale.order", order)["state"], "draft");

    // The customer it was sent to confirms it.
    w.click("wamid.AWA", &format!("btn_validate_order_{order}")).await;
    w.sent(3).await;
    assert_eq!(confirms(&w), 1);
    assert_eq!(w.odoo.get("sale.order", order)["state"], "sale");
}

#[tokio::test]
async fn the_rule_follows_the_customer_to_their_bsuid() {
    let w = world(true, |_| {}).await;
    let order = w.new_order();
    w.sent(1).await;
    // Meta now sends Awa's BSUID too: her phone-keyed conversation moves under it.
    w.daemon
        .deliver_ok(&click_with_bsuid("wamid.BSUID", &format!("btn_validate_order_{order}")))
        .await;
    let m = w.daemon.dispatched(BSUID, "wamid.BSUID").await;
    assert_eq!(m["script"]["scripts"], json!(["buttons/validate_order"]), "{m}");
    w.daemon
        .eventually("the order confirmed", || async {
            (w.odoo.get("sale.order", order)["state"] == "sale").then_some(())
        })
        .await;
}

#[tokio::test]
async fn clicks_on_messages_sent_before_the_upgrade_are_accepted_and_scripts_may_allow_anyone() {
    let dir = tempfile::tempdir().unwrap();
    put_script(
        dir.path(),
        "buttons/ping.lua",
        r#"return { match = "^ping$", run = function() env.whatsapp.send_text(message.from, "pong") end }"#,
    );
    put_script(
        dir.path(),
        "buttons/poster.lua",
        r#"return { match = "^promo_", anyone = true, run = function() env.whatsapp.send_text(message.from, "promo") end }"#,
    );
    let text = config_text(dir.path(), "allow_outside_window = true", "");
    let d = TestDaemon::start_in(dir, text).await;
    // A message sent by an older walua, which kept no index of the buttons it sent.
    let (status, v) = d
        .api_post(
            "/api/messages",
            &json!({"to": PHONE, "type": "buttons", "body": "Ping ?", "buttons": [{"id": "other", "title": "Autre"}]}),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    let (_, stored) = d.api(&format!("/api/messages/{}", v["id"])).await;
    let old_wamid = "wamid.OLD.SENT";
    let (tmp, _) = d.stop().await;
    {
        // Meta's acceptance gives it a wamid the click will refer to.
        let store = walua::store::Store::open(&tmp.path().join("walua.redb")).unwrap();
        store
            .outbox_accepted(
                stored["id"].as_u64().unwrap(),
                old_wamid,
                json!({}),
                &walua::explain_error,
            )
            .unwrap();
    }
    {
        // What an older walua left: no index of sent buttons, and no date it started.
        use redb::TableDefinition;
        let db = redb::Database::open(tmp.path().join("walua.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
            meta.remove("sent_buttons_since").unwrap();
            let mut sent = txn
                .open_table(TableDefinition::<(&str, &str), i64>::new("sent_buttons"))
                .unwrap();
            sent.retain(|_, _| false).unwrap();
        }
        txn.commit().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let text = config_text(tmp.path(), "allow_outside_window = true", "");
    let d = TestDaemon::start_in(tmp, text).await;
    let click = |wamid: &str, id: &str, context: &str| {
        let mut c = click_delivery(PHONE, wamid, id, "?");
        c["entry"][0]["changes"][0]["value"]["messages"][0]["context"]["id"] = json!(context);
        c
    };
    d.deliver_ok(&click("wamid.LEGACY", "ping", old_wamid)).await;
    let m = d.dispatched(PHONE, "wamid.LEGACY").await;
    assert_eq!(
        m["script"]["scripts"],
        json!(["buttons/ping"]),
        "legacy click accepted: {m}"
    );
    d.deliver_ok(&click("wamid.NEW", "ping", "wamid.UNKNOWN")).await;
    let m = d.dispatched(PHONE, "wamid.NEW").await;
    assert_eq!(
        m["script"]["scripts"],
        json!(["refused: button not sent to this contact"]),
        "{m}"
    );
    d.deliver_ok(&click("wamid.PROMO", "promo_noel", "wamid.UNKNOWN")).await;
    let m = d.dispatched(PHONE, "wamid.PROMO").await;
    assert_eq!(m["script"]["scripts"], json!(["buttons/poster"]), "{m}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// What the index of sent buttons costs: `cargo test --release --test button_owner --
/// --ignored --nocapture`. Prints figures; asserts none (README, issue notes).
#[test]
#[ignore]
fn cost_of_the_sent_buttons_index() {
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("walua.redb");
    let (messages, contacts) = (30_000u64, 3_000u64);
    {
        let store = walua::store::Store::open(&path).unwrap();
        for i in 0..messages {
            let to = format!("2217700{:05}", i % contacts);
            let ids: Vec<Value> = (0..3)
                .map(|b| json!({"type": "reply", "reply": {"id": format!("btn_{}_order_{i}", ["validate", "cancel", "details"][b]), "title": "x"}}))
                .collect();
            store
                .enqueue_outbound(walua::store::outbox::NewOutbound {
                    id: store.allocate_message_id(),
                    recipient: to.clone(),
                    kind: "interactive".into(),
                    summary: "Commande".into(),
                    content: json!({}),
                    body: json!({"messaging_product": "whatsapp", "to": to, "type": "interactive",
                                 "interactive": {"type": "button", "body": {"text": "Votre commande"}, "action": {"buttons": ids}}}),
                    free_form: true,
                    allow_outside_window: true,
                    dry_run: true,
                    origin: "hook".into(),
                    reply_to: None,
                    phone_number_id: None,
                    record: None,
                    chatter_file: None,
                })
                .unwrap();
        }
        let started = std::time::Instant::now();
        let n = 100_000u64;
        for i in 0..n {
            let to = format!("2217700{:05}", i % contacts);
            let _ = store
                .button_sent_to(&to, &format!("btn_validate_order_{}", i % messages))
                .unwrap();
        }
        println!(
            "button_sent_to: {:.1} µs per click check",
            started.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let stats = |name: &str, t: redb::TableStats| {
        let bytes = t.stored_bytes() + t.metadata_bytes() + t.fragmented_bytes();
        println!(
            "{name}: {} B stored + {} B metadata + {} B fragmented = {:.0} B per message",
            t.stored_bytes(),
            t.metadata_bytes(),
            t.fragmented_bytes(),
            bytes as f64 / messages as f64
        );
    };
    stats(
        "sent_buttons",
        txn.open_table(TableDefinition::<(&str, &str), i64>::new("sent_buttons"))
            .unwrap()
            .stats()
            .unwrap(),
    );
    stats(
        "messages",
        txn.open_table(TableDefinition::<u64, &[u8]>::new("messages"))
            .unwrap()
            .stats()
            .unwrap(),
    );
}
