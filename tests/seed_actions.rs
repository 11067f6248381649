//! The Odoo module's remaining actions, through the real daemon, the shipped scripts, the
//! fake Odoo and the fake Graph API: invoice details and download, the quotation's PDF, the
//! payment choice with its link, sends to a partner by id, a scenario started from outside,
//! `walua send --buttons`, and what a migration from the module needs (its webhook URL, its
//! error codes, its advice about local links).

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::odoo_world::*;
use support::*;

/// The shipped scripts against the fake Odoo, window open, partner index and chatter on,
/// Wave's payment link in `[vars]`.
async fn shop() -> World {
    world_full(
        true,
        |_| {},
        "",
        "",
        "payment_link_wave = \"https://pay.wave.com/m/boutique?ref={order}\"\n",
    )
    .await
}

/// A posted invoice of 27 000 XOF for the world's partner.
fn invoice(w: &World) -> i64 {
    w.odoo.advance(Duration::from_secs(1));
    w.odoo.insert(
        "account.move",
        json!({"move_type": "out_invoice", "partner_id": w.partner, "name": "INV/2026/00077", "state": "posted",
               "amount_total": 27000, "amount_residual": 7000, "payment_state": "partial",
               "invoice_date": "2026-11-02", "invoice_date_due": "2026-12-02", "currency_id": XOF}),
    )
}

/// Offers buttons the way a script or an operator would (a click counts only on a button
/// sent to the customer), then waits for it to go.
async fn offer(w: &World, buttons: Value, n: usize) {
    let (status, body) = w
        .daemon
        .api_post(
            "/api/messages",
            &json!({"to": PHONE, "type": "buttons", "body": "Votre facture", "buttons": buttons}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    w.sent(n).await;
}

#[tokio::test]
async fn the_invoice_buttons_give_its_details_as_text_and_its_pdf_as_a_document() {
    let w = shop().await;
    let inv = invoice(&w);
    // The hooks see the posted invoice first: wait for their sends to settle.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = w.graph.accepted_count();
    offer(
        &w,
        json!([{"id": format!("btn_invoice_details_{inv}"), "title": "Détail"},
               {"id": format!("btn_invoice_pdf_{inv}"), "title": "Télécharger"}]),
        before + 1,
    )
    .await;
    w.click("wamid.DET", &format!("btn_invoice_details_{inv}")).await;
    let sent = w.sent(before + 2).await;
    assert_eq!(
        body_text(&sent[before + 1]),
        format!(
            "Facture INV/2026/00077 :\nDate : 2026-11-02\nÉchéance : 2026-12-02\nMontant : {}\nReste à payer : {}\nÉtat : partiellement payée",
            xof(27000.0),
            xof(7000.0)
        )
    );
    w.click("wamid.PDF", &format!("btn_invoice_pdf_{inv}")).await;
    let sent = w.sent(before + 3).await;
    let doc = &sent[before + 2]["document"];
    assert_eq!(doc["filename"], "INV_2026_00077.pdf");
    let upload = w.graph.uploads().into_iter().last().unwrap();
    assert!(upload.bytes.starts_with(b"%PDF-"), "Odoo's portal PDF");
    assert_eq!(doc["id"], upload.id.as_str());
}

#[tokio::test]
async fn the_quotation_button_sends_odoo_16s_portal_pdf_of_the_order() {
    let w = shop().await;
    let order = w.new_order();
    w.sent(1).await;
    offer(
        &w,
        json!([{"id": format!("btn_order_pdf_{order}"), "title": "Devis PDF"}]),
        2,
    )
    .await;
    w.click("wamid.OPDF", &format!("btn_order_pdf_{order}")).await;
    let sent = w.sent(3).await;
    let name = w.odoo.get("sale.order", order)["name"].as_str().unwrap().to_string();
    assert_eq!(sent[2]["document"]["caption"], format!("Devis {name}"));
    assert!(
        w.odoo
            .calls()
            .iter()
            .any(|c| c.model.as_deref() == Some("sale.order") && c.method == "get_portal_url"),
        "through the order's portal link (an API key cannot open a web session)"
    );
    assert!(w.graph.uploads().last().unwrap().bytes.starts_with(b"%PDF-"));
}

#[tokio::test]
async fn the_payment_choice_is_noted_in_odoo_with_its_link_and_the_link_sent() {
    let w = shop().await;
    let order = w.new_order();
    w.sent(1).await;
    w.click("wamid.V", &format!("btn_validate_order_{order}")).await;
    // "Commande validée", then the scenario's question with Wave / Orange Money.
    let sent = w.sent(3).await;
    let wave = sent[2]["interactive"]["action"]["buttons"][0]["reply"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.click("wamid.W", &wave).await;
    let name = w.odoo.get("sale.order", order)["name"].as_str().unwrap().to_string();
    let sent = w.sent(5).await;
    let texts: Vec<String> = sent[3..].iter().map(body_text).collect();
    let link = format!("https://pay.wave.com/m/boutique?ref={name}");
    assert!(texts.contains(&format!("Pour payer par Wave : {link}")), "{texts:?}");
    assert!(
        texts.contains(&"Merci ! Paiement par Wave noté.".to_string()),
        "{texts:?}"
    );
    let start = std::time::Instant::now();
    loop {
        let posted = w.odoo.messages_posted();
        if posted.iter().any(|(m, r, body, _)| {
            m == "sale.order" && *r == order && body.contains("Moyen de paiement choisi") && body.contains(&link)
        }) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no payment note: {posted:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_partner_is_reached_by_id_from_the_api_the_cli_and_lua() {
    let w = shop().await;
    w.daemon
        .eventually("the partner index", || async {
            let (s, _) = w
                .daemon
                .api_post(
                    "/api/messages",
                    &json!({"partner_id": w.partner, "type": "text", "text": "Bonjour Awa"}),
                )
                .await;
            (s == 202).then_some(())
        })
        .await;
    let sent = w.sent(1).await;
    assert_eq!(sent[0]["to"], PHONE);
    assert_eq!(body_text(&sent[0]), "Bonjour Awa");

    let (ok, out) = w
        .daemon
        .cli(&[
            "send",
            "--partner",
            &w.partner.to_string(),
            "--text",
            "Depuis la ligne de commande",
        ])
        .await;
    assert!(ok, "{out}");
    let sent = w.sent(2).await;
    assert_eq!(
        (sent[1]["to"].as_str(), body_text(&sent[1]).as_str()),
        (Some(PHONE), "Depuis la ligne de commande")
    );

    w.daemon.write_script(
        "buttons/partenaire.lua",
        &format!(
            r#"return {{ match = "^partenaire$", anyone = true, run = function()
  env.whatsapp.send_text("partner:{}", "Depuis Lua, par le partenaire")
end }}"#,
            w.partner
        ),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    w.click("wamid.P", "partenaire").await;
    let sent = w.sent(3).await;
    assert_eq!(body_text(&sent[2]), "Depuis Lua, par le partenaire");

    let (status, body) = w
        .daemon
        .api_post(
            "/api/messages",
            &json!({"partner_id": 987654, "type": "text", "text": "?"}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        body["error"].as_str().unwrap().contains("Odoo partner 987654"),
        "{body}"
    );
}

#[tokio::test]
async fn a_scenario_is_started_from_the_api_and_the_cli() {
    let w = shop().await;
    let order = w.new_order();
    w.sent(1).await;
    let (status, body) = w
        .daemon
        .api_post(
            "/api/scenarios/payment_method/start",
            &json!({"to": PHONE, "vars": {"order_id": order, "order_name": "S1"}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let sent = w.sent(2).await;
    assert_eq!(
        sent[1]["interactive"]["body"]["text"],
        "Choisissez votre méthode de paiement"
    );
    let (status, body) = w
        .daemon
        .api_post("/api/scenarios/no_such/start", &json!({"to": PHONE}))
        .await;
    assert_eq!(status, 422);
    assert!(body["error"].as_str().unwrap().contains("no_such"), "{body}");

    let (ok, out) = w
        .daemon
        .cli(&[
            "scenario",
            "start",
            "payment_method",
            "--to",
            PHONE,
            "--var",
            &format!("order_id={order}"),
        ])
        .await;
    assert!(ok, "{out}");
    assert!(out.contains("scenario payment_method started"), "{out}");
    w.sent(3).await;
}

#[tokio::test]
async fn walua_send_buttons_takes_id_colon_title_with_body_header_and_footer() {
    let w = shop().await;
    let (ok, out) = w
        .daemon
        .cli(&[
            "send",
            "--to",
            PHONE,
            "--buttons",
            "oui:Oui",
            "--buttons",
            "non:Non, merci",
            "--body",
            "Voulez-vous être livré demain ?",
            "--header",
            "Livraison",
            "--footer",
            "Boutique Diop",
        ])
        .await;
    assert!(ok, "{out}");
    let sent = w.sent(1).await;
    let i = &sent[0]["interactive"];
    assert_eq!(i["body"]["text"], "Voulez-vous être livré demain ?");
    assert_eq!(i["header"]["text"], "Livraison");
    assert_eq!(i["footer"]["text"], "Boutique Diop");
    assert_eq!(
        i["action"]["buttons"][1]["reply"],
        json!({"id": "non", "title": "Non, merci"})
    );
}

#[tokio::test]
async fn the_modules_webhook_url_answers_as_webhook_does() {
    let d = TestDaemon::start().await;
    for path in ["/webhook", "/whatsapp/webhook"] {
        let r = d
            .http
            .get(d.url(&format!(
                "{path}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), "1158201444");
    }
    let body = serde_json::to_vec(&text_delivery("221770000001", "wamid.MIG", "Bonjour", now())).unwrap();
    let signature = format!("sha256={}", hex_hmac(APP_SECRET, &body));
    let r = d
        .http
        .post(d.url("/whatsapp/webhook"))
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    d.dispatched("221770000001", "wamid.MIG").await;
    let unsigned = |path: &'static str| d.http.post(d.url(path)).body("{}").send();
    let (a, b) = (
        unsigned("/webhook").await.unwrap(),
        unsigned("/whatsapp/webhook").await.unwrap(),
    );
    assert_eq!(b.status(), a.status(), "unsigned: refused as /webhook refuses it");
    assert!(a.status().is_client_error());
}

#[tokio::test]
async fn a_link_meta_cannot_reach_is_refused_with_the_modules_advice_unless_allowed() {
    let d = TestDaemon::start().await;
    d.deliver_ok(&text_delivery("221770000002", "wamid.L", "Bonjour", now()))
        .await;
    for link in [
        "http://localhost:8069/web/content/42/facture.pdf",
        "http://192.168.1.20/f.pdf",
    ] {
        let (status, body) = d
            .api_post(
                "/api/messages",
                &json!({"to": "221770000002", "type": "document", "link": link, "filename": "f.pdf"}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        let why = body["error"].as_str().unwrap();
        assert!(
            why.contains("upload the file instead") && why.contains("allow_private_links"),
            "{why}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), "dry_run = true\nallow_private_links = true", "");
    let d = TestDaemon::start_in(dir, text).await;
    d.deliver_ok(&text_delivery("221770000002", "wamid.L2", "Bonjour", now()))
        .await;
    // Stored before the send: its window is open.
    d.dispatched("221770000002", "wamid.L2").await;
    let (status, body) = d
        .api_post(
            "/api/messages",
            &json!({"to": "221770000002", "type": "document", "link": "http://localhost:8069/f.pdf", "filename": "f.pdf"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

fn hex_hmac(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}
