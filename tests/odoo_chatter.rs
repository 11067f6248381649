//! Inside Odoo, through the real daemon, the shipped scripts, the fake Odoo (which answers
//! `message_post` and `ir.attachment` like the real Odoo 16 of
//! `tests/fixtures/odoo16/chatter/`) and the fake Graph API: contacts linked to their partner,
//! and every WhatsApp exchange about a record on that record's chatter.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fake_graph::Scripted;
use support::odoo_world::*;
use support::*;

/// The shipped scripts with the partner sync and the chatter on (their defaults).
async fn shop(window_open: bool, odoo_extra: &str) -> World {
    world_odoo(window_open, |_| {}, "", odoo_extra).await
}

/// Waits for a note on `model`/`id` whose body contains `needle`; returns the body.
async fn note(w: &World, model: &str, id: i64, needle: &str) -> (String, Vec<i64>) {
    let start = Instant::now();
    loop {
        let posted = w.odoo.messages_posted();
        if let Some((_, _, body, atts)) = posted
            .iter()
            .find(|(m, r, body, _)| m == model && *r == id && body.contains(needle))
        {
            return (body.clone(), atts.clone());
        }
        if start.elapsed() > Duration::from_secs(15) {
            panic!("no note on {model} {id} containing {needle:?}; posted: {posted:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn conversation(w: &World) -> Value {
    let (_, v) = w.daemon.api("/api/conversations").await;
    v["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["wa_id"] == PHONE)
        .cloned()
        .unwrap_or_else(|| panic!("no conversation with {PHONE}: {v}"))
}

#[tokio::test]
async fn an_order_created_in_odoo_is_noted_on_its_chatter_and_valider_is_noted_too() {
    let w = shop(true, "").await;
    let order = w.new_order();
    let sent = w.sent(1).await;
    assert_eq!(sent[0]["type"], "interactive");
    let name = w.odoo.get("sale.order", order)["name"].as_str().unwrap().to_string();
    let (body, atts) = note(&w, "sale.order", order, "Message WhatsApp envoyé à +221771234567").await;
    assert!(body.starts_with("<p>") && body.ends_with("</p>"), "{body}");
    assert!(body.contains("depuis le numéro 1234567890"), "{body}");
    assert!(body.contains(&name), "what was sent is in the note: {body}");
    assert!(atts.is_empty());

    // The customer taps Valider: the order is confirmed and the decision noted.
    w.click("wamid.VALIDER", &format!("btn_validate_order_{order}")).await;
    assert_eq!(w.odoo.get("sale.order", order)["state"], "sale");
    note(
        &w,
        "sale.order",
        order,
        "Le client a validé la commande par WhatsApp (221771234567)",
    )
    .await;
    // Every note is an internal note: no e-mail to the followers.
    let calls = w.odoo.calls();
    let posts: Vec<_> = calls.iter().filter(|c| c.method == "message_post").collect();
    assert!(!posts.is_empty());
    for c in posts {
        assert_eq!(c.kwargs["message_type"], "comment", "{:?}", c.kwargs);
        assert_eq!(c.kwargs["subtype_xmlid"], "mail.mt_note", "{:?}", c.kwargs);
    }
}

#[tokio::test]
async fn a_posted_invoice_is_noted_with_its_pdf_attached() {
    let w = shop(true, "").await;
    w.odoo.advance(Duration::from_secs(1));
    let inv = w.odoo.insert(
        "account.move",
        json!({"move_type": "out_invoice", "partner_id": w.partner, "name": "INV/2026/00042", "amount_total": 27000, "amount_residual": 27000,
               "currency_id": XOF}),
    );
    w.odoo.advance(Duration::from_secs(1));
    w.odoo.update("account.move", inv, json!({"state": "posted"}));
    w.sent(1).await;
    let pdf = w.graph.uploads()[0].bytes.clone();
    let (body, atts) = note(&w, "account.move", inv, "INV_2026_00042.pdf").await;
    assert_eq!(atts.len(), 1, "the PDF is attached: {body}");
    let attachment = w
        .odoo
        .attachments()
        .into_iter()
        .find(|a| a.id == atts[0])
        .expect("the attachment exists");
    assert_eq!(attachment.name, "INV_2026_00042.pdf");
    assert_eq!(
        (attachment.res_model.as_str(), attachment.res_id),
        ("account.move", inv)
    );
    assert_eq!(attachment.mimetype, "application/pdf");
    assert_eq!(attachment.bytes, pdf, "the very bytes the customer got");
}

#[tokio::test]
async fn a_send_that_meta_refuses_is_noted_with_metas_explanation() {
    let w = shop(true, "").await;
    w.graph.push_response(Scripted::MetaError {
        http: 400,
        code: 131026,
        message: "Message undeliverable".into(),
        details: "Message Undeliverable.".into(),
    });
    let order = w.new_order();
    note(&w, "sale.order", order, "Échec de l'envoi WhatsApp à +221771234567").await;
    let (body, _) = note(&w, "sale.order", order, "131026").await;
    assert!(body.contains("WhatsApp"), "Meta's explanation is in the note: {body}");
}

#[tokio::test]
async fn odoo_down_never_delays_a_send_and_the_note_follows_when_odoo_is_back() {
    let w = shop(true, "").await;
    let before = w.odoo.messages_posted().len();
    w.daemon.write_script(
        "buttons/noter.lua",
        r#"return { match = "^noter$", anyone = true, run = function()
  env.whatsapp.send_text(message.from, "C'est noté", { record = { model = "res.partner", id = 1 } })
end }"#,
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    w.odoo.fail_next(3);
    w.daemon
        .deliver_ok(&click_delivery(PHONE, "wamid.NOTER", "noter", "Noter"))
        .await;
    // The message goes at once, whatever Odoo does.
    let sent = w.sent(1).await;
    assert_eq!(body_text(&sent[0]), "C'est noté");
    // The note is retried (scripts.retry_first) and lands once Odoo answers again.
    note(&w, "res.partner", 1, "C'est noté").await;
    assert_eq!(w.odoo.messages_posted().len(), before + 1, "posted once");
}

#[tokio::test]
async fn a_note_odoo_refuses_is_parked_and_replayed_once_the_record_exists() {
    let w = shop(true, "").await;
    w.daemon.write_script(
        "buttons/noter.lua",
        r#"return { match = "^noter_(%d+)$", anyone = true, run = function(id)
  env.odoo.log("sale.order", tonumber(id), "Note pour une commande " .. id)
  env.whatsapp.send_text(message.from, "ok")
end }"#,
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    w.daemon
        .deliver_ok(&click_delivery(PHONE, "wamid.MISSING", "noter_424242", "Noter"))
        .await;
    w.sent(1).await;
    // MissingError is definite: parked at once, with Odoo's message.
    let parked = w
        .daemon
        .eventually("the parked note", || async {
            let (_, v) = w.daemon.api("/api/parked").await;
            v["parked"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["kind"] == "chatter")
                .cloned()
        })
        .await;
    assert!(
        parked["error"].as_str().unwrap().contains("Record does not exist"),
        "{parked}"
    );
    let id = parked["id"].as_str().unwrap().to_string();
    let (_, h) = w.daemon.api("/healthz").await;
    assert!(h["problems"].to_string().contains(&id), "{h}");
    // The record appears in Odoo (restored); the operator replays the note.
    w.odoo.insert_reserved(
        "sale.order",
        424242,
        json!({"partner_id": w.partner, "name": "S424242"}),
    );
    let (status, body) = w.daemon.api_post(&format!("/api/parked/{id}/replay"), &json!({})).await;
    assert_eq!(status, 202, "{body}");
    note(&w, "sale.order", 424242, "Note pour une commande 424242").await;
    let (_, v) = w.daemon.api("/api/parked?all=1").await;
    assert!(!v.to_string().contains(&id), "cleared once posted: {v}");
}

#[tokio::test]
async fn a_contact_is_linked_to_its_partner_by_number_and_a_shared_number_is_reported() {
    let w = shop(true, "").await;
    w.daemon.write_script(
        "buttons/qui.lua",
        r#"return { match = "^qui$", anyone = true, run = function()
  env.whatsapp.send_text(message.from, tostring(contact.partner_id) .. " " .. tostring(contact.partner_name))
end }"#,
    );
    // Two people have this mobile in the fake's demo data: Brandon Freeman (15, the older
    // record) and Awa Diop (the world's partner). The oldest individual is chosen, the other
    // reported.
    let c = w
        .daemon
        .eventually("the partner link", || async {
            let c = conversation(&w).await;
            c["partner_id"].as_i64().map(|_| c)
        })
        .await;
    assert_eq!(c["partner_id"], 15, "{c}");
    assert_eq!(c["partner_ambiguous"], json!([w.partner]));
    // Brandon is archived in Odoo: Awa is the one.
    w.odoo.advance(Duration::from_secs(1));
    w.odoo.archive("res.partner", 15);
    let c = w
        .daemon
        .eventually("the archived partner dropped", || async {
            let c = conversation(&w).await;
            (c["partner_id"] == json!(w.partner)).then_some(c)
        })
        .await;
    assert_eq!(c["partner_name"], "Awa Diop");
    assert_eq!(c["partner_ambiguous"], json!([]));
    let (ok, out) = w.daemon.cli(&["conversations"]).await;
    assert!(
        ok && out.contains("ODOO PARTNER") && out.contains(&format!("{} Awa Diop", w.partner)),
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.click("wamid.QUI", "qui").await;
    let sent = w.sent(1).await;
    assert_eq!(body_text(&sent[0]), format!("{} Awa Diop", w.partner));

    // Her shop, a company, has the same number on its `phone`: she stays the one, and the
    // company is reported.
    w.odoo.advance(Duration::from_secs(1));
    let company = w.odoo.insert(
        "res.partner",
        json!({"name": "Boutique Diop SARL", "is_company": true, "phone": "+221 77 123 45 67"}),
    );
    let c = w
        .daemon
        .eventually("the ambiguity", || async {
            let c = conversation(&w).await;
            (c["partner_ambiguous"] == json!([company])).then_some(c)
        })
        .await;
    assert_eq!(c["partner_id"], w.partner);

    // Archived in Odoo, she is no longer matched: the company is.
    w.odoo.advance(Duration::from_secs(1));
    w.odoo.update("res.partner", w.partner, json!({"active": false}));
    let c = w
        .daemon
        .eventually("the archived partner dropped", || async {
            let c = conversation(&w).await;
            (c["partner_id"] == json!(company)).then_some(c)
        })
        .await;
    assert_eq!(c["partner_ambiguous"], json!([]));
    assert_eq!(c["partner_name"], "Boutique Diop SARL");
}

#[tokio::test]
async fn with_chatter_inbound_a_linked_partners_messages_go_on_the_partners_chatter() {
    let w = shop(false, "chatter_inbound = true\n").await;
    // The fake's demo data gives Awa's mobile to Brandon Freeman too: archived here.
    w.odoo.advance(Duration::from_secs(1));
    w.odoo.archive("res.partner", 15);
    // Two partner polls after the archive: the index has it.
    let polls = |w: &World| {
        w.odoo
            .calls()
            .iter()
            .filter(|c| c.model.as_deref() == Some("res.partner") && c.method == "search_read")
            .count()
    };
    let before = polls(&w);
    w.daemon
        .eventually("two partner polls", || async {
            (polls(&w) >= before + 2).then_some(())
        })
        .await;
    w.daemon
        .deliver_ok(&text_delivery(
            PHONE,
            "wamid.IN",
            "Bonjour, <b>ma</b> commande\nest prête ?",
            now(),
        ))
        .await;
    let (body, _) = note(&w, "res.partner", w.partner, "Message WhatsApp reçu de +221771234567").await;
    assert!(
        body.contains("Bonjour, &lt;b&gt;ma&lt;/b&gt; commande<br>est prête ?"),
        "escaped, line breaks kept: {body}"
    );
    // A stranger's message is not noted anywhere.
    let n = w.odoo.messages_posted().len();
    w.daemon
        .deliver_ok(&text_delivery("221770000009", "wamid.STRANGER", "Bonjour", now()))
        .await;
    w.daemon.settled().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(w.odoo.messages_posted().len(), n);
}

#[tokio::test]
async fn with_the_chatter_off_nothing_is_posted_and_env_odoo_log_says_false() {
    let w = shop(true, "chatter = false\n").await;
    w.daemon.write_script(
        "buttons/noter.lua",
        r#"return { match = "^noter$", anyone = true, run = function()
  env.whatsapp.send_text(message.from, tostring(env.odoo.log("res.partner", 1, "x")))
end }"#,
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    w.click("wamid.OFF", "noter").await;
    let sent = w.sent(1).await;
    assert_eq!(body_text(&sent[0]), "false");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(w.odoo.messages_posted().is_empty());
}
