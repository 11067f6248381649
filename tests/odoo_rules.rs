//! The shipped scripts follow Odoo's own rules, through the real daemon against the fake
//! Odoo: amounts in the record's currency (res.currency: symbol, position, rounding) with the
//! partner's language separators (res.lang), section and note lines left out of order
//! details, and the buttons refusing what Odoo's form would not offer (cancelling a locked
//! order, confirming a cancelled one…) with a reply saying why.

mod support;

use serde_json::{Value, json};
use support::odoo_world::*;

/// Waits for a message whose text matches; returns that text.
async fn text_like(w: &World, what: &str, pred: impl Fn(&str) -> bool) -> String {
    w.daemon
        .eventually(what, || async {
            w.graph
                .accepted()
                .into_iter()
                .map(|(_, b)| body_text(&b))
                .find(|t| pred(t))
        })
        .await
}

/// Waits until walua has sent the customer a message offering this button (the order's
/// creation message): only then is a click on it one the customer could make.
async fn offered(w: &World, button_id: &str) {
    let quoted = format!("\"{button_id}\"");
    w.daemon
        .eventually(&format!("{button_id} offered"), || async {
            w.graph
                .accepted()
                .iter()
                .any(|(_, b)| b.to_string().contains(&quoted))
                .then_some(())
        })
        .await
}

/// Clicks an order button once walua has offered it.
async fn tap(w: &World, wamid: &str, button_id: &str) {
    offered(w, button_id).await;
    w.click(wamid, button_id).await;
}

fn name_of(w: &World, order: i64) -> String {
    w.odoo.get("sale.order", order)["name"].as_str().unwrap().to_string()
}

/// "a_b" with "_" standing for a no-break space.
fn nb(s: &str) -> String {
    s.replace('_', NBSP)
}

/// The Odoo calls on `model` (and `method`) received so far.
fn calls_to(w: &World, model: &str, method: &str) -> Vec<support::fake_odoo::RecordedCall> {
    w.odoo
        .calls()
        .into_iter()
        .filter(|c| c.model.as_deref() == Some(model) && c.method == method)
        .collect()
}

async fn details_of(w: &World, order: i64, wamid: &str) -> String {
    let name = name_of(w, order);
    let before = w.graph.accepted_count();
    tap(w, wamid, &format!("btn_order_details_{order}")).await;
    let prefix = format!("Détail de la commande {name} :");
    w.daemon
        .eventually("the details", || async {
            w.graph
                .accepted()
                .into_iter()
                .skip(before)
                .map(|(_, b)| body_text(&b))
                .find(|t| t.starts_with(&prefix))
        })
        .await
}

#[tokio::test]
async fn an_xof_order_for_a_french_partner_is_written_as_odoo_writes_it_reading_the_currency_once() {
    let w = world(true, |_| {}).await;
    let order = w.new_order();
    let name = name_of(&w, order);
    let created = text_like(&w, "the creation message", |t| t.contains(&name)).await;
    assert!(
        created.ends_with(&nb("Montant : 27_000_CFA")),
        "{}",
        show_nbsp(&created)
    );

    // Three amounts, one read of the currency, of the language and of the partner.
    w.odoo.clear_calls();
    let details = details_of(&w, order, "wamid.D1").await;
    assert_eq!(
        details,
        nb(&format!(
            "Détail de la commande {name} :\n• Boubou bazin × 2 = 25_000_CFA\n• Livraison Dakar × 1 = 2_000_CFA\nTotal : 27_000_CFA\nÉtat : Devis"
        ))
    );
    let currency = calls_to(&w, "res.currency", "read");
    assert_eq!(currency.len(), 1, "{currency:?}");
    assert_eq!(currency[0].args[0], json!([XOF]));
    let langs = calls_to(&w, "res.lang", "search_read");
    assert_eq!(langs.len(), 1, "{langs:?}");
    assert!(langs[0].args.to_string().contains("fr_FR"), "{langs:?}");
    assert_eq!(calls_to(&w, "res.partner", "read").len(), 1);

    // The symbol is Odoo's: a shop that writes XOF "F CFA" in Odoo gets "27 000 F CFA".
    w.odoo.update("res.currency", XOF, json!({"symbol": "F CFA"}));
    let order = w.new_order();
    let name = name_of(&w, order);
    let created = text_like(&w, "the second creation message", |t| t.contains(&name)).await;
    assert!(
        created.ends_with(&nb("Montant : 27_000_F CFA")),
        "{}",
        show_nbsp(&created)
    );
}

#[tokio::test]
async fn a_usd_order_for_an_english_partner_is_written_like_odoo_en_us() {
    let w = world(true, |_| {}).await;
    w.odoo.update("res.partner", w.partner, json!({"lang": "en_US"}));
    let order = w.new_order_with(json!({"currency_id": USD, "order_line": [
        [0, 0, {"name": "Office Chair", "product_uom_qty": 1.5, "price_unit": 823}],
        [0, 0, {"name": "Delivery", "product_uom_qty": 1, "price_unit": 0}]
    ]}));
    let name = name_of(&w, order);
    let created = text_like(&w, "the creation message", |t| t.contains(&name)).await;
    assert!(
        created.ends_with(&nb("Montant : $_1,234.50")),
        "{}",
        show_nbsp(&created)
    );
    let details = details_of(&w, order, "wamid.D1").await;
    assert_eq!(
        details,
        nb(&format!(
            "Détail de la commande {name} :\n• Office Chair × 1.5 = $_1,234.50\n• Delivery × 1 = $_0.00\nTotal : $_1,234.50\nÉtat : Devis"
        ))
    );
    // The state notification too.
    tap(&w, "wamid.V1", &format!("btn_validate_order_{order}")).await;
    let state = text_like(&w, "the state notification", |t| t.contains("est maintenant")).await;
    assert_eq!(
        state,
        nb(&format!(
            "Votre commande {name} est maintenant : Confirmée ($_1,234.50)."
        ))
    );
}

#[tokio::test]
async fn eur_for_a_french_partner_and_any_currency_for_a_partner_without_language_use_french_separators() {
    let w = world(true, |_| {}).await;
    let order = w.new_order_with(json!({"currency_id": EUR, "order_line": [
        [0, 0, {"name": "Chaise de bureau", "product_uom_qty": 1.5, "price_unit": 823}]
    ]}));
    let name = name_of(&w, order);
    let details = details_of(&w, order, "wamid.D1").await;
    assert_eq!(
        details,
        nb(&format!(
            "Détail de la commande {name} :\n• Chaise de bureau × 1,5 = 1_234,50_€\nTotal : 1_234,50_€\nÉtat : Devis"
        ))
    );

    // No language on the partner (false in Odoo): fr_FR's separators, the currency's symbol
    // and position as they are.
    w.odoo.update("res.partner", w.partner, json!({"lang": false}));
    let order = w.new_order_with(json!({"currency_id": USD, "order_line": [
        [0, 0, {"name": "Office Chair", "product_uom_qty": 1.5, "price_unit": 823}]
    ]}));
    let name = name_of(&w, order);
    let created = text_like(&w, "the creation message", |t| t.contains(&name)).await;
    assert!(
        created.ends_with(&nb("Montant : $_1_234,50")),
        "{}",
        show_nbsp(&created)
    );
}

#[tokio::test]
async fn money_follows_odoos_rounding_grouping_and_sign() {
    let probe = r#"
local b = require "boutique"
return { match = "^money_probe$", anyone = true, run = function()
  local indian = { thousands_sep = ",", decimal_point = ".", grouping = "[3,2,0]" }
  local none = { thousands_sep = false, decimal_point = ",", grouping = "[]" }
  env.whatsapp.send_text(message.from, table.concat({
    b.money(27000, 42, "fr_FR"),
    b.money(-27000, { 42, "XOF" }, "fr_FR"),
    b.money(1234.5, 42, "fr_FR"),
    b.money(1234567.891, 2, "en_US"),
    b.money(1234567.5, 1, "fr_FR"),
    b.money(1234567, 42, indian),
    b.money(1234567, 42, none),
    b.money(27000, false, "fr_FR"),
    b.money(12.5, false, "en_US"),
    b.money(27000, 42, "xx_XX"),
    b.format_qty(2.0, b.lang("en_US")),
    b.format_qty(0.125, b.lang("fr_FR")),
  }, "|"))
end }
"#;
    let w = world(true, |s| {
        std::fs::write(s.join("buttons/money_probe.lua"), probe).unwrap();
    })
    .await;
    w.click("wamid.M1", "money_probe").await;
    let text = text_like(&w, "the probe", |t| t.contains('|')).await;
    assert_eq!(
        show_nbsp(&text),
        // HALF-UP rounding to the currency (1234.5 XOF -> 1 235), Odoo's grouping lists
        // ([3,2,0]: 12,34,567; []: none), no symbol without a currency, an unknown
        // language -> French.
        "27_000_CFA|-27_000_CFA|1_235_CFA|$_1,234,567.89|1_234_567,50_€|12,34,567_CFA|1234567_CFA|27_000|12.50|27_000_CFA|2|0,125"
    );
}

#[tokio::test]
async fn section_and_note_lines_are_not_listed() {
    let w = world(true, |_| {}).await;
    let order = w.new_order_with(json!({"currency_id": XOF, "order_line": [
        [0, 0, {"display_type": "line_section", "name": "Tenues"}],
        [0, 0, {"name": "Boubou bazin", "product_uom_qty": 2, "price_unit": 12500}],
        [0, 0, {"display_type": "line_note", "name": "Retouches offertes\nà la boutique"}],
        [0, 0, {"display_type": "line_section", "name": "Livraison"}],
        [0, 0, {"name": "Livraison Dakar", "product_uom_qty": 1, "price_unit": 2000}]
    ]}));
    let rec = w.odoo.get("sale.order", order);
    assert_eq!(rec["order_line"].as_array().unwrap().len(), 5);
    assert_eq!(rec["amount_total"], json!(27000.0));
    let name = name_of(&w, order);
    let details = details_of(&w, order, "wamid.D1").await;
    assert_eq!(
        details,
        nb(&format!(
            "Détail de la commande {name} :\n• Boubou bazin × 2 = 25_000_CFA\n• Livraison Dakar × 1 = 2_000_CFA\nTotal : 27_000_CFA\nÉtat : Devis"
        ))
    );
}

const SHOP: &str = "Pour toute question, merci de contacter directement la boutique.";

#[tokio::test]
async fn annuler_on_a_locked_order_says_why_and_leaves_it_locked_and_valider_does_not_confirm_it() {
    let w = world(true, |_| {}).await;
    let order = w.new_order();
    let name = name_of(&w, order);
    text_like(&w, "the creation message", |t| t.contains("a été créée")).await;
    // Confirmed, delivered and locked in Odoo (action_confirm, then action_done: "done").
    w.odoo.advance(std::time::Duration::from_secs(1));
    w.odoo.update("sale.order", order, json!({"state": "done"}));
    text_like(&w, "the lock notification", |t| t.contains("Verrouillée")).await;

    tap(&w, "wamid.C1", &format!("btn_cancel_order_{order}")).await;
    let reply = text_like(&w, "the refusal", |t| t.starts_with("Désolé")).await;
    assert_eq!(
        reply,
        format!(
            "Désolé, la commande {name} ne peut plus être annulée : elle est verrouillée (déjà livrée ou clôturée). {SHOP}"
        )
    );
    assert_eq!(w.odoo.get("sale.order", order)["state"], "done");
    assert!(calls_to(&w, "sale.order", "action_cancel").is_empty());

    tap(&w, "wamid.V1", &format!("btn_validate_order_{order}")).await;
    let reply = text_like(&w, "the refusal to confirm", |t| t.contains("plus rien à valider")).await;
    assert_eq!(
        reply,
        format!(
            "La commande {name} est déjà validée et verrouillée (livrée ou clôturée) : il n'y a plus rien à valider. {SHOP}"
        )
    );
    assert!(calls_to(&w, "sale.order", "action_confirm").is_empty());
    assert_eq!(w.odoo.get("sale.order", order)["state"], "done");
}

#[tokio::test]
async fn a_cancelled_order_is_neither_cancelled_again_nor_confirmed_and_a_confirmed_one_not_twice() {
    let w = world(true, |_| {}).await;
    let order = w.new_order();
    let name = name_of(&w, order);
    text_like(&w, "the creation message", |t| t.contains("a été créée")).await;
    tap(&w, "wamid.C1", &format!("btn_cancel_order_{order}")).await;
    text_like(&w, "the cancellation", |t| t == format!("Commande {name} annulée.")).await;
    assert_eq!(w.odoo.get("sale.order", order)["state"], "cancel");
    tap(&w, "wamid.C2", &format!("btn_cancel_order_{order}")).await;
    text_like(&w, "already cancelled", |t| {
        t == format!("La commande {name} est déjà annulée.")
    })
    .await;
    tap(&w, "wamid.V1", &format!("btn_validate_order_{order}")).await;
    let reply = text_like(&w, "the refusal", |t| t.contains("ne peut plus être validée")).await;
    assert_eq!(
        reply,
        format!(
            "La commande {name} a été annulée : elle ne peut plus être validée. Pour commander à nouveau, merci de contacter la boutique."
        )
    );
    assert_eq!(calls_to(&w, "sale.order", "action_cancel").len(), 1);
    assert!(calls_to(&w, "sale.order", "action_confirm").is_empty());
    assert_eq!(w.odoo.get("sale.order", order)["state"], "cancel");

    // A confirmed order: Valider again only says so.
    let order = w.new_order();
    let name = name_of(&w, order);
    tap(&w, "wamid.V2", &format!("btn_validate_order_{order}")).await;
    text_like(&w, "the confirmation", |t| {
        t == format!("Commande {name} validée avec succès !")
    })
    .await;
    tap(&w, "wamid.V3", &format!("btn_validate_order_{order}")).await;
    text_like(&w, "already confirmed", |t| {
        t == format!("La commande {name} est déjà validée. Merci !")
    })
    .await;
    let confirms: Vec<Value> = calls_to(&w, "sale.order", "action_confirm")
        .into_iter()
        .map(|c| c.args)
        .collect();
    assert_eq!(confirms, vec![json!([[order]])]);
}

#[tokio::test]
async fn the_validation_scenario_follows_the_same_rules() {
    let w = world(true, |scripts| {
        std::fs::write(
            scripts.join("buttons/start_validation.lua"),
            "return { match = '^start_validation_(%d+)$', anyone = true, run = function(id)\n  env.scenario.start('order_validation', message.from, { order_id = tonumber(id) })\nend }",
        )
        .unwrap();
    })
    .await;
    // A locked order: "Annuler" in the scenario says why and ends it.
    let order = w.new_order();
    let name = name_of(&w, order);
    text_like(&w, "the creation message", |t| t.contains(&name)).await;
    w.odoo.advance(std::time::Duration::from_secs(1));
    w.odoo.update("sale.order", order, json!({"state": "done"}));
    text_like(&w, "the lock notification", |t| t.contains("Verrouillée")).await;
    w.click("wamid.S1", &format!("start_validation_{order}")).await;
    text_like(&w, "the scenario", |t| t == "Votre commande est prête. Valider ?").await;
    w.click("wamid.S2", "wsc|order_validation|ask|no").await;
    text_like(&w, "the refusal", |t| t.starts_with("Désolé") && t.contains(&name)).await;
    assert_eq!(w.odoo.get("sale.order", order)["state"], "done");
    assert!(calls_to(&w, "sale.order", "action_cancel").is_empty());
    // The scenario is over: a late "Valider" on it does nothing.
    let before = w.graph.accepted_count();
    w.click("wamid.S3", "wsc|order_validation|ask|yes").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(calls_to(&w, "sale.order", "action_confirm").is_empty());
    assert_eq!(w.graph.accepted_count(), before);

    // A cancelled order: "Valider" says why, no payment step.
    let order = w.new_order();
    let name = name_of(&w, order);
    w.odoo.advance(std::time::Duration::from_secs(1));
    w.odoo.update("sale.order", order, json!({"state": "cancel"}));
    w.click("wamid.S4", &format!("start_validation_{order}")).await;
    w.click("wamid.S5", "wsc|order_validation|ask|yes").await;
    text_like(&w, "the refusal to confirm", |t| {
        t.contains(&name) && t.contains("ne peut plus être validée")
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let texts: Vec<String> = w.graph.accepted().iter().map(|(_, b)| body_text(b)).collect();
    assert!(
        !texts.iter().any(|t| t == "Choisissez votre méthode de paiement"),
        "{texts:?}"
    );
    assert!(calls_to(&w, "sale.order", "action_confirm").is_empty());
}

#[tokio::test]
async fn a_partners_number_without_country_code_is_read_in_the_partners_country() {
    let w = world(true, |_| {}).await;
    let moussa = w.odoo.insert(
        "res.partner",
        json!({"name": "Moussa Ndiaye", "mobile": "77 000 11 22", "country_id": 204, "lang": "fr_FR"}),
    );
    let deco = w.odoo.insert(
        "res.partner",
        json!({"name": "Deco Addict", "phone": "(603)-996-3829", "country_id": 233}),
    );
    for partner in [moussa, deco] {
        w.odoo.advance(std::time::Duration::from_secs(1));
        w.odoo.insert(
            "sale.order",
            json!({"partner_id": partner, "order_line": [[0, 0, {"name": "Boubou", "product_uom_qty": 1, "price_unit": 5000}]]}),
        );
    }
    let sent = w.sent(2).await;
    let mut to: Vec<&str> = sent.iter().map(|m| m["to"].as_str().unwrap()).collect();
    to.sort();
    assert_eq!(to, vec!["16039963829", "221770001122"], "{sent:?}");
}
