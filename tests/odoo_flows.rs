//! The default scripts, end to end: an Odoo record changes → the poll (or a push) fires →
//! the message reaches the fake Graph API → a button click webhook arrives → the fake Odoo
//! sees the write.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::odoo_world::*;
use support::*;

#[tokio::test]
async fn an_order_created_in_odoo_sends_valider_annuler_voir_detail_and_valider_confirms_it() {
    let w = world(true, |_| {}).await;
    let order = w.new_order();
    let name = w.odoo.get("sale.order", order)["name"].as_str().unwrap().to_string();
    let sent = w.sent(1).await;
    let msg = &sent[0];
    assert_eq!(msg["to"], PHONE);
    assert_eq!(msg["type"], "interactive");
    assert_eq!(
        body_text(msg),
        format!("Bonjour Awa Diop,\n\nVotre commande {name} a été créée.\n\nMontant : 27\u{a0}000\u{a0}CFA")
    );
    let buttons: Vec<(&str, &str)> = msg["interactive"]["action"]["buttons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["reply"]["id"].as_str().unwrap(),
                b["reply"]["title"].as_str().unwrap(),
            )
        })
        .collect();
    let ids = [
        format!("btn_validate_order_{order}"),
        format!("btn_cancel_order_{order}"),
        format!("btn_order_details_{order}"),
    ];
    assert_eq!(
        buttons,
        [
            (ids[0].as_str(), "Valider"),
            (ids[1].as_str(), "Annuler"),
            (ids[2].as_str(), "Voir détail")
        ]
    );

    // Voir détail: lines, quantities and totals.
    w.click("wamid.D1", &ids[2]).await;
    let sent = w.sent(2).await;
    let details = body_text(&sent[1]);
    assert!(
        details.contains(&format!("Boubou bazin × 2 = {}", xof(25000.0))),
        "{details}"
    );
    assert!(
        details.contains(&format!("Livraison Dakar × 1 = {}", xof(2000.0))),
        "{details}"
    );
    assert!(details.contains(&format!("Total : {}", xof(27000.0))), "{details}");

    // Every Odoo call and the hook's lag show in the metrics.
    let m = metrics_at(&w.daemon.http, &w.daemon.url("")).await;
    assert!(
        m.contains("walua_odoo_calls_total{model=\"sale.order\",method=\"search_read\"}"),
        "{m}"
    );
    let lags: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("walua_odoo_hook_lag_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(lags >= 1.0, "the hook's run is observed: {m}");
    assert!(m.contains("walua_odoo_up 1"), "{m}");

    // Valider: Odoo confirms the order, the customer is told and asked for the payment method.
    w.click("wamid.V1", &ids[0]).await;
    assert_eq!(w.odoo.get("sale.order", order)["state"], "sale");
    assert!(
        w.odoo
            .calls()
            .iter()
            .any(|c| c.method == "action_confirm" && c.args == json!([[order]]))
    );
    let sent = w.sent(4).await;
    assert_eq!(body_text(&sent[2]), format!("Commande {name} validée avec succès !"));
    assert_eq!(body_text(&sent[3]), "Choisissez votre méthode de paiement");
    assert_eq!(
        sent[3]["interactive"]["action"]["buttons"][0]["reply"]["id"],
        "wsc|payment_method|choose|wave"
    );

    // The seed's second step: Wave.
    w.click("wamid.P1", "wsc|payment_method|choose|wave").await;
    let sent = w.sent(5).await;
    assert_eq!(body_text(&sent[4]), "Merci ! Paiement par Wave noté.");

    // The state change is notified once (poll of the write hook).
    let sent = w.sent(6).await;
    assert_eq!(
        body_text(&sent[5]),
        format!("Votre commande {name} est maintenant : Confirmée ({}).", xof(27000.0))
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(w.graph.accepted().len(), 6, "each event fired once");
}

#[tokio::test]
async fn outside_the_window_the_template_carries_the_same_buttons_and_annuler_cancels() {
    let w = world(false, |_| {}).await;
    let order = w.new_order();
    let sent = w.sent(1).await;
    let t = &sent[0]["template"];
    assert_eq!(t["name"], "order_created");
    assert_eq!(t["language"]["code"], "fr");
    let comps = t["components"].as_array().unwrap();
    assert_eq!(comps[0]["parameters"][0]["text"], "Awa Diop");
    assert_eq!(comps[0]["parameters"][2]["text"], "27\u{a0}000\u{a0}CFA");
    let payloads: Vec<&str> = comps[1..]
        .iter()
        .map(|c| c["parameters"][0]["payload"].as_str().unwrap())
        .collect();
    assert_eq!(
        payloads,
        [
            format!("btn_validate_order_{order}"),
            format!("btn_cancel_order_{order}"),
            format!("btn_order_details_{order}")
        ]
    );

    // The customer taps the template's "Annuler" quick reply: a `button` message with the payload.
    let mut click = fixture("button.json");
    let m = &mut click["entry"][0]["changes"][0]["value"]["messages"][0];
    m["button"]["payload"] = json!(format!("btn_cancel_order_{order}"));
    m["button"]["text"] = json!("Annuler");
    m["timestamp"] = json!(now().to_string());
    let wamid = m["id"].as_str().unwrap().to_string();
    w.daemon.deliver_ok(&click).await;
    w.daemon.dispatched(PHONE, &wamid).await;
    assert_eq!(w.odoo.get("sale.order", order)["state"], "cancel");
    let name = w.odoo.get("sale.order", order)["name"].as_str().unwrap().to_string();
    let sent = w.sent(2).await;
    assert_eq!(body_text(&sent[1]), format!("Commande {name} annulée."));
}

#[tokio::test]
async fn a_posted_invoice_is_sent_as_its_pdf_and_payments_are_notified() {
    let w = world(true, |_| {}).await;
    w.odoo.advance(Duration::from_secs(1));
    let inv = w.odoo.insert(
        "account.move",
        json!({"move_type": "out_invoice", "partner_id": w.partner, "name": "INV/2026/00042", "amount_total": 27000, "amount_residual": 27000,
               "currency_id": XOF}),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(w.graph.accepted().is_empty(), "a draft invoice sends nothing");
    w.odoo.advance(Duration::from_secs(1));
    w.odoo.update("account.move", inv, json!({"state": "posted"}));
    let sent = w.sent(1).await;
    let doc = &sent[0]["document"];
    assert_eq!(doc["filename"], "INV_2026_00042.pdf");
    let total = w.odoo.get("account.move", inv)["amount_total"].as_f64().unwrap();
    let caption = doc["caption"].as_str().unwrap();
    assert!(
        caption.starts_with("Votre facture INV/2026/00042 — ") && caption.ends_with("\u{a0}CFA"),
        "{caption}"
    );
    assert_eq!(caption, format!("Votre facture INV/2026/00042 — {}", xof(total)));
    let uploads = w.graph.uploads();
    assert_eq!(uploads.len(), 1);
    assert!(
        uploads[0].bytes.starts_with(b"%PDF-"),
        "the invoice PDF from Odoo's portal"
    );
    assert_eq!(doc["id"], uploads[0].id.as_str());
    assert!(w.odoo.calls().iter().any(|c| c.method == "get_portal_url"));

    w.odoo.advance(Duration::from_secs(1));
    w.odoo.update(
        "account.move",
        inv,
        json!({"amount_residual": 7000, "payment_state": "partial"}),
    );
    let sent = w.sent(2).await;
    assert_eq!(
        body_text(&sent[1]),
        "Paiement reçu pour la facture INV/2026/00042. Reste à payer : 7\u{a0}000\u{a0}CFA."
    );
    w.odoo.advance(Duration::from_secs(1));
    w.odoo.update(
        "account.move",
        inv,
        json!({"amount_residual": 0, "payment_state": "paid"}),
    );
    let sent = w.sent(3).await;
    assert_eq!(
        body_text(&sent[2]),
        "Facture INV/2026/00042 soldée. Merci pour votre paiement !"
    );
}

#[tokio::test]
async fn unpaid_invoices_are_reminded_once_per_period() {
    // The shipped job runs daily at 09:00; the test runs the same script every second.
    let w = world(false, |scripts| {
        let path = scripts.join("cron/unpaid_invoice_reminders.lua");
        let src = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"0 0 9 * * *\"", "\"* * * * * *\"");
        std::fs::write(path, src).unwrap();
    })
    .await;
    let due = (chrono::Utc::now() - chrono::Duration::days(10))
        .format("%Y-%m-%d")
        .to_string();
    let recent = (chrono::Utc::now() - chrono::Duration::days(2))
        .format("%Y-%m-%d")
        .to_string();
    w.odoo.insert(
        "account.move",
        json!({"move_type": "out_invoice", "partner_id": w.partner, "name": "INV/2026/00050", "state": "posted",
               "amount_total": 10000, "amount_residual": 10000, "invoice_date_due": due, "currency_id": XOF}),
    );
    w.odoo.insert(
        "account.move",
        json!({"move_type": "out_invoice", "partner_id": w.partner, "name": "INV/2026/00051", "state": "posted",
               "amount_total": 5000, "amount_residual": 5000, "invoice_date_due": recent, "currency_id": XOF}),
    );
    let reminder_for = |name: &str| {
        w.graph
            .accepted()
            .into_iter()
            .map(|(_, b)| b)
            .filter(|b| b["template"]["name"] == "unpaid_invoice_reminder")
            .filter(|b| b["template"]["components"][0]["parameters"][0]["text"] == name)
            .collect::<Vec<Value>>()
    };
    let ours = w
        .daemon
        .eventually("the reminder", || async {
            let r = reminder_for("INV/2026/00050");
            (!r.is_empty()).then_some(r)
        })
        .await;
    assert_eq!(
        ours[0]["template"]["components"][0]["parameters"][1]["text"],
        "10\u{a0}000\u{a0}CFA"
    );
    assert_eq!(ours[0]["to"], PHONE);
    // The job keeps running every second: still one reminder for the period, none for the recent one.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(reminder_for("INV/2026/00050").len(), 1);
    assert!(reminder_for("INV/2026/00051").is_empty());
    let all: Vec<Value> = w.graph.accepted().into_iter().map(|(_, b)| b).collect();
    let mut names: Vec<&str> = all
        .iter()
        .filter_map(|b| b["template"]["components"][0]["parameters"][0]["text"].as_str())
        .collect();
    let total = names.len();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        total,
        "at most one reminder per invoice and period: {names:?}"
    );
}

#[tokio::test]
async fn a_push_from_odoo_fires_the_hook_once_and_needs_the_token() {
    let w = world(true, |_| {}).await;
    let order = w.new_order();
    let url = w.daemon.url("/hooks/odoo/sale_order_created");
    let payload =
        json!({"_model": "sale.order", "_id": order, "_action": "create", "name": "forged name, not trusted"});
    let refused = w
        .daemon
        .http
        .post(format!("{url}?token=wrong"))
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let r = w
        .daemon
        .http
        .post(format!("{url}?token={HOOK_TOKEN}"))
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The poll sees the same order: it does not fire again.
    let sent = w.sent(1).await;
    assert!(
        !body_text(&sent[0]).contains("forged"),
        "the record is read again from Odoo"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(w.graph.accepted().len(), 1, "one notification, push and poll together");
    let unknown = w
        .daemon
        .http
        .post(w.daemon.url(&format!("/hooks/odoo/nope?token={HOOK_TOKEN}")))
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn orders_created_while_walua_was_down_are_notified_when_it_comes_back() {
    let w = world(true, |_| {}).await;
    let World {
        odoo,
        graph,
        daemon,
        partner,
    } = w;
    let (dir, text) = daemon.stop().await;
    odoo.advance(Duration::from_secs(1));
    let a = odoo.insert("sale.order", json!({"partner_id": partner}));
    let b = odoo.insert("sale.order", json!({"partner_id": partner}));
    let daemon = TestDaemon::start_in(dir, text).await;
    let sent = graph.wait_for_accepted(2, Duration::from_secs(10)).await;
    let ids: Vec<String> = sent
        .iter()
        .map(|(_, m)| {
            m["interactive"]["action"]["buttons"][0]["reply"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        [format!("btn_validate_order_{a}"), format!("btn_validate_order_{b}")]
    );
    let daemon = daemon.restart().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(graph.accepted().len(), 2, "not again after another restart");
    drop(daemon);
}

#[tokio::test]
async fn the_seeds_two_step_scenario_validates_in_odoo_then_asks_wave_or_orange_money() {
    let w = world(true, |scripts| {
        std::fs::write(
            scripts.join("buttons/start_validation.lua"),
            "return { match = '^start_validation_(%d+)$', anyone = true, run = function(id)\n  env.scenario.start('order_validation', message.from, { order_id = tonumber(id) })\nend }",
        )
        .unwrap();
    })
    .await;
    let order = w.new_order();
    w.sent(1).await; // the creation notification
    w.click("wamid.SV1", &format!("start_validation_{order}")).await;
    let sent = w.sent(2).await;
    assert_eq!(body_text(&sent[1]), "Votre commande est prête. Valider ?");
    w.click("wamid.SV2", "wsc|order_validation|ask|yes").await;
    assert_eq!(w.odoo.get("sale.order", order)["state"], "sale");
    let sent = w.sent(4).await;
    assert_eq!(body_text(&sent[2]), "Commande validée !");
    assert_eq!(body_text(&sent[3]), "Choisissez votre méthode de paiement");
    w.click("wamid.SV3", "wsc|payment_method|choose|orange_money").await;
    let texts: Vec<String> = w.sent(5).await.iter().map(body_text).collect();
    assert!(
        texts.contains(&"Merci ! Paiement par Orange Money noté.".to_string()),
        "{texts:?}"
    );

    // A confirmed order can still be cancelled from WhatsApp (Odoo's cancel wizard is skipped).
    w.click("wamid.SV4", &format!("btn_cancel_order_{order}")).await;
    assert_eq!(w.odoo.get("sale.order", order)["state"], "cancel");
}
