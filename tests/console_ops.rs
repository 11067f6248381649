//! The console, part 2, in a real browser: the template picker of a closed window, an
//! attachment, resending and cancelling sends, and the operations pages (outbox, scripts,
//! parked runs, health), against the real daemon and the fake Graph API. These tests also
//! take the README's screenshots (docs/screenshots/).
//!
//! Without chromedriver the browser tests say so and pass, unless `WALUA_REQUIRE_BROWSER=1`
//! (set by `.ci/run`), which makes them fail.

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::time::Duration;

use browser::*;
use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use support::fake_graph::{FakeGraph, Scripted};
use support::*;

const AWA: &str = "221771234567";
const BINTA: &str = "221779876543";

/// A shop without a bot: the fake Graph API, the shipped template definitions, pair pacing
/// that lets two messages through to a customer and holds the third for an hour, and three
/// accounts (admin, agent, viewer).
async fn shop(scripts: &[(&str, &str)]) -> (FakeGraph, TestDaemon) {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"),
        &dir.path().join("templates"),
    );
    for (path, source) in scripts {
        put_script(dir.path(), path, source);
    }
    let text = config_text(
        dir.path(),
        &live_whatsapp(&fake.url(), "pair_burst = 2\npair_interval = \"1h\""),
        "",
    );
    let d = TestDaemon::start_in(dir, text).await;
    for (name, role) in [("aminata", "admin"), ("fatou", "agent"), ("moussa", "viewer")] {
        let (status, body) = d
            .api_post("/api/users", &json!({"name": name, "role": role, "password": PASSWORD}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    (fake, d)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

async fn send_text(d: &TestDaemon, to: &str, text: &str) -> Value {
    let (status, body) = d
        .api_post("/api/messages", &json!({"to": to, "type": "text", "text": text}))
        .await;
    assert_eq!(status, 202, "{body}");
    body["id"].clone()
}

async fn open(c: &Client, d: &TestDaemon, path: &str) {
    c.goto(&d.url(path)).await.unwrap();
}

async fn click(c: &Client, what: &str, css: &str) {
    wait_for(c, what, css).await.click().await.unwrap();
}

#[tokio::test]
async fn a_closed_window_offers_the_approved_templates_and_the_picker_sends_one_with_its_parameters() {
    let Some(driver) = chromedriver() else { return };
    let (fake, d) = shop(&[]).await;
    // Awa wrote two days ago: free text is no longer allowed.
    d.deliver_ok(&text_delivery(
        AWA,
        "wamid.OLD",
        "Merci pour la livraison",
        now() - 2 * 86_400,
    ))
    .await;
    d.settled().await;
    let c = browser(&driver).await;
    sign_in(&c, &d, "fatou").await;
    open(&c, &d, &format!("/c/{AWA}")).await;
    wait_text(&c, "the closed-window notice", "#window-closed", "24 heures").await;
    assert!(c.find(Locator::Id("reply")).await.is_err(), "no free text when closed");

    // The picker lists the shipped templates; choosing one shows its form (script submits).
    let select = wait_for(&c, "the picker", "#picker select#tpl").await;
    let options = select.text().await.unwrap();
    assert!(options.contains("order_created (fr)"), "{options}");
    assert!(options.contains("invoice_posted (fr)"), "{options}");
    select.select_by_value("order_created|fr").await.unwrap();
    wait_for(&c, "the parameter form", "#template-form #p-1").await;
    wait_text(&c, "the preview before typing", "#tpl-preview", "Bonjour {{1}}").await;
    for (id, value) in [("p-1", "Awa Diop"), ("p-2", "S00042"), ("p-3", "15 000 CFA")] {
        c.find(Locator::Id(id)).await.unwrap().send_keys(value).await.unwrap();
    }
    // The preview follows the typing, with the footer and the buttons.
    wait_text(&c, "the filled preview", "#tpl-preview", "Bonjour Awa Diop,").await;
    wait_text(
        &c,
        "the order in the preview",
        "#tpl-preview",
        "Votre commande S00042 d'un montant de 15 000 CFA",
    )
    .await;
    wait_text(&c, "the buttons in the preview", "#tpl-preview .buttons", "Voir détail").await;
    screenshots(&c, "template-picker").await;

    click(&c, "the send button", "#send-template").await;
    let sent = fake.wait_for_accepted(1, Duration::from_secs(10)).await;
    let body = &sent[0].1;
    assert_eq!(body["type"], "template");
    assert_eq!(body["template"]["name"], "order_created");
    assert_eq!(body["template"]["language"]["code"], "fr");
    let params: Vec<&str> = body["template"]["components"][0]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["Awa Diop", "S00042", "15 000 CFA"]);
    // The thread shows it, with its text filled in.
    wait_text(&c, "the template in the thread", "#messages", "Votre commande S00042").await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn the_picker_sends_a_template_with_a_document_header_uploaded_from_the_form() {
    let Some(driver) = chromedriver() else { return };
    let (fake, d) = shop(&[]).await;
    d.deliver_ok(&text_delivery(AWA, "wamid.OLD3", "Bonjour", now() - 3 * 86_400))
        .await;
    d.settled().await;
    let file = d.dir.path().join("INV-2026-00042.pdf");
    let pdf = b"%PDF-1.4\n% facture\n%%EOF\n".to_vec();
    std::fs::write(&file, &pdf).unwrap();
    let c = browser(&driver).await;
    sign_in(&c, &d, "fatou").await;
    open(&c, &d, &format!("/c/{AWA}")).await;
    wait_for(&c, "the picker", "#picker select#tpl")
        .await
        .select_by_value("invoice_posted|fr")
        .await
        .unwrap();
    wait_for(&c, "the header file field", "#template-form #hfile")
        .await
        .send_keys(file.to_str().unwrap())
        .await
        .unwrap();
    for (id, value) in [("p-1", "INV/2026/00042"), ("p-2", "25 000 CFA")] {
        c.find(Locator::Id(id)).await.unwrap().send_keys(value).await.unwrap();
    }
    wait_text(
        &c,
        "the preview",
        "#tpl-preview",
        "votre facture INV/2026/00042 d'un montant de 25 000 CFA",
    )
    .await;
    click(&c, "the send button", "#send-template").await;
    let sent = fake.wait_for_accepted(1, Duration::from_secs(10)).await;
    let uploads = fake.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].bytes, pdf);
    let components = sent[0].1["template"]["components"].as_array().unwrap().clone();
    let header = components
        .iter()
        .find(|c| c["type"] == "header")
        .expect("a header component");
    assert_eq!(header["parameters"][0]["type"], "document");
    assert_eq!(header["parameters"][0]["document"]["id"], uploads[0].id.as_str());
    assert_eq!(header["parameters"][0]["document"]["filename"], "INV-2026-00042.pdf");
    let body = components
        .iter()
        .find(|c| c["type"] == "body")
        .expect("a body component");
    assert_eq!(body["parameters"][0]["text"], "INV/2026/00042");
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_wrong_template_form_is_refused_with_the_reason_and_nothing_is_sent() {
    let Some(driver) = chromedriver() else { return };
    let (fake, d) = shop(&[]).await;
    d.deliver_ok(&text_delivery(AWA, "wamid.OLD2", "Bonjour", now() - 2 * 86_400))
        .await;
    d.settled().await;
    let c = browser(&driver).await;
    sign_in(&c, &d, "fatou").await;
    // The picker without script: the choice by the URL, then a form emptied by hand.
    open(&c, &d, &format!("/c/{AWA}?tpl=order_created%7Cfr")).await;
    wait_for(&c, "the parameter form", "#template-form #p-1").await;
    let status: Value = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               const form = document.getElementById('template-form');
               const data = new FormData(form);
               data.set('p.1', 'Awa'); data.set('p.2', ''); data.set('p.3', '1 000');
               fetch(form.action, {method: 'POST', body: data}).then(r => done(r.url));"#,
            vec![],
        )
        .await
        .unwrap();
    let url = status.as_str().unwrap().to_string();
    assert!(url.contains("err="), "back to the thread with the reason: {url}");
    c.goto(&url).await.unwrap();
    wait_text(&c, "the refusal", ".notice.error", "{{2}}").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.accepted_count(), 0, "nothing sent");
    c.close().await.unwrap();
}

#[tokio::test]
async fn an_agent_attaches_a_pdf_it_goes_up_as_media_then_out_as_a_document() {
    let Some(driver) = chromedriver() else { return };
    let (fake, d) = shop(&[]).await;
    d.deliver_ok(&text_delivery(
        AWA,
        "wamid.IN",
        "Vous pouvez m'envoyer la facture ?",
        now(),
    ))
    .await;
    d.settled().await;
    let file = d.dir.path().join("F2026-0042.pdf");
    let pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n".to_vec();
    std::fs::write(&file, &pdf).unwrap();
    let c = browser(&driver).await;
    sign_in(&c, &d, "fatou").await;
    open(&c, &d, &format!("/c/{AWA}")).await;
    wait_for(&c, "the file field", "form.attach #file")
        .await
        .send_keys(file.to_str().unwrap())
        .await
        .unwrap();
    c.find(Locator::Id("caption"))
        .await
        .unwrap()
        .send_keys("Votre facture de novembre")
        .await
        .unwrap();
    click(&c, "the attach button", "#attach").await;
    let sent = fake.wait_for_accepted(1, Duration::from_secs(10)).await;
    let uploads = fake.uploads();
    assert_eq!(uploads.len(), 1, "uploaded once");
    assert_eq!(uploads[0].bytes, pdf, "the file's bytes went up unchanged");
    assert_eq!(uploads[0].mime_type, "application/pdf");
    let body = &sent[0].1;
    assert_eq!(body["type"], "document");
    assert_eq!(body["document"]["id"], uploads[0].id.as_str());
    assert_eq!(body["document"]["filename"], "F2026-0042.pdf");
    assert_eq!(body["document"]["caption"], "Votre facture de novembre");
    wait_text(&c, "the document in the thread", "#messages", "F2026-0042.pdf").await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_failed_send_is_resent_and_a_queued_one_cancelled_from_the_thread() {
    let Some(driver) = chromedriver() else { return };
    let (fake, d) = shop(&[]).await;
    for (who, wamid) in [(AWA, "wamid.A"), (BINTA, "wamid.B")] {
        d.deliver_ok(&text_delivery(who, wamid, "Bonjour", now())).await;
    }
    d.settled().await;
    // Meta refuses Awa's first message for good.
    fake.push_response(Scripted::MetaError {
        http: 400,
        code: 131026,
        message: "Message undeliverable".into(),
        details: "Message Undeliverable.".into(),
    });
    let failed = send_text(&d, AWA, "Votre colis part demain.").await;
    d.wait_status(&failed, "failed").await;
    // Binta gets two messages, and the third waits for the pair pacing (an hour).
    for text in ["Un", "Deux"] {
        let id = send_text(&d, BINTA, text).await;
        d.wait_status(&id, "sent").await;
    }
    let queued = send_text(&d, BINTA, "Trois (à annuler)").await;

    let c = browser(&driver).await;
    sign_in(&c, &d, "fatou").await;
    open(&c, &d, &format!("/c/{AWA}")).await;
    wait_text(&c, "Meta's reason", "#messages .error", "131026").await;
    screenshots(&c, "thread-failed").await;
    click(&c, "the resend button", &format!("button.resend[data-id='{failed}']")).await;
    let sent = fake.wait_for_accepted(3, Duration::from_secs(10)).await;
    assert!(
        sent.iter()
            .any(|(_, b)| b["text"]["body"] == "Votre colis part demain."),
        "resent: {sent:?}"
    );
    d.wait_status(&failed, "sent").await;

    open(&c, &d, &format!("/c/{BINTA}")).await;
    click(&c, "the cancel button", &format!("button.cancel[data-id='{queued}']")).await;
    wait_for(&c, "the cancelled tick", ".msg.out [data-status='cancelled']").await;
    let (_, m) = d.api(&format!("/api/messages/{queued}")).await;
    assert_eq!(m["status"], "cancelled");
    assert!(
        m["error"]["explanation"].as_str().unwrap().contains("console:fatou"),
        "{m}"
    );
    let (_, outbox) = d.api("/api/outbox").await;
    assert_eq!(outbox["jobs"], json!([]), "the job is gone: {outbox}");
    assert_eq!(fake.accepted_count(), 3, "the cancelled message never left");
    c.close().await.unwrap();
}

const BROKEN_CRON: &str = r#"return { schedule = "* * * * * *", run = function()
  error("la facture F2026-0042 est introuvable dans Odoo")
end }
"#;

const FIXED_CRON: &str = r#"return { schedule = "0 0 0 1 1 *", run = function()
  env.store.set("relances", "faites")
end }
"#;

#[tokio::test]
async fn the_operations_pages_show_the_outbox_scripts_parked_runs_and_health_and_only_an_admin_acts() {
    let Some(driver) = chromedriver() else { return };
    let (fake, d) = shop(&[("cron/relances.lua", BROKEN_CRON)]).await;
    for (who, wamid, text) in [
        (AWA, "wamid.O1", "Bonjour, où en est ma commande ?"),
        (BINTA, "wamid.O2", "Je voudrais payer avec Wave"),
    ] {
        d.deliver_ok(&text_delivery(who, wamid, text, now())).await;
    }
    d.settled().await;
    fake.push_response(Scripted::MetaError {
        http: 400,
        code: 131026,
        message: "Message undeliverable".into(),
        details: "Message Undeliverable.".into(),
    });
    let failed = send_text(&d, AWA, "Votre commande est prête.").await;
    d.wait_status(&failed, "failed").await;
    for text in ["Lien de paiement Wave", "Reçu"] {
        let id = send_text(&d, BINTA, text).await;
        d.wait_status(&id, "sent").await;
    }
    let queued = send_text(&d, BINTA, "Merci !").await;
    // The broken cron job parks a run every second.
    d.eventually("a parked cron run", || async {
        let (_, v) = d.api("/api/parked").await;
        (!v["parked"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;

    // A viewer reads the pages but has no button, and a hand-made POST is refused.
    let c = browser(&driver).await;
    sign_in(&c, &d, "moussa").await;
    open(&c, &d, "/console/outbox").await;
    wait_for(&c, "the queued job", &format!("#jobs tr[data-id='{queued}']")).await;
    wait_text(&c, "the read-only notice", "main", "seul un administrateur").await;
    assert!(
        c.find(Locator::Css("#jobs button")).await.is_err(),
        "no button for a viewer"
    );
    let posted: Value = c
        .execute_async(
            &format!(
                r#"const done = arguments[arguments.length - 1];
                   const csrf = document.querySelector('input[name=csrf]').value;
                   fetch('/console/outbox/{queued}/cancel', {{method: 'POST', headers: {{'content-type': 'application/x-www-form-urlencoded'}},
                         body: 'csrf=' + encodeURIComponent(csrf), redirect: 'manual'}}).then(r => done(r.status));"#
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(posted, json!(403));
    c.close().await.unwrap();

    let c = browser(&driver).await;
    sign_in(&c, &d, "aminata").await;
    screenshots(&c, "inbox").await;
    // Outbox: the queued job and the failed send with Meta's reason.
    click(&c, "the operations link", "#nav-ops").await;
    wait_for(&c, "the queued job", &format!("#jobs tr[data-id='{queued}']")).await;
    wait_text(
        &c,
        "the failed send",
        &format!("#troubles tr[data-id='{failed}']"),
        "131026",
    )
    .await;
    screenshots(&c, "outbox").await;
    click(
        &c,
        "the cancel button",
        &format!("#jobs tr[data-id='{queued}'] button.cancel"),
    )
    .await;
    wait_text(&c, "the cancel notice", ".notice.ok", "annulé").await;
    wait_for(
        &c,
        "the cancelled send",
        &format!("#troubles tr[data-id='{queued}'][data-status='cancelled']"),
    )
    .await;
    click(
        &c,
        "the resend button",
        &format!("#troubles tr[data-id='{failed}'] button.resend"),
    )
    .await;
    wait_text(&c, "the resend notice", ".notice.ok", "Remis en file").await;
    d.wait_status(&failed, "sent").await;

    // Scripts: the cron job is listed; a broken save shows its error, the reload keeps it.
    click(&c, "the scripts tab", "#tab-scripts").await;
    wait_text(&c, "the cron job", "#scripts", "relances").await;
    d.write_script("on_message.lua", "return { run = function(msg) oops( end }");
    d.eventually("the broken script's error", || async {
        let (_, v) = d.api("/api/scripts").await;
        v.to_string().contains("on_message").then_some(())
    })
    .await;
    click(&c, "the reload button", "button.reload").await;
    wait_text(&c, "the reload outcome", ".notice.error", "on_message").await;
    wait_text(&c, "the error in the table", "#scripts tr.bad", "on_message").await;
    screenshots(&c, "scripts").await;

    // Parked runs: the failing cron run; once the script is fixed, a replay clears it.
    d.write_script("cron/relances.lua", FIXED_CRON);
    d.eventually("the fixed job loaded", || async {
        let (_, v) = d.api("/api/scripts").await;
        let fixed = v["scripts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "relances" && s["version"].as_u64() >= Some(2));
        fixed.then_some(())
    })
    .await;
    click(&c, "the parked tab", "#tab-parked").await;
    let row = wait_for(&c, "a parked run", "#parked tr[data-id^='cron:relances']").await;
    let id = row.attr("data-id").await.unwrap().unwrap();
    wait_text(&c, "the run's error", "#parked", "introuvable dans Odoo").await;
    screenshots(&c, "parked").await;
    click(
        &c,
        "the replay button",
        &format!("#parked tr[data-id='{id}'] button.replay"),
    )
    .await;
    wait_text(&c, "the replay notice", ".notice.ok", "Rejouée").await;
    let (_, v) = d.api("/api/parked?all=1").await;
    assert!(
        !v.to_string().contains(&format!("\"{id}\"")),
        "the replayed run is cleared: {v}"
    );

    // Health: the state with its reasons and the figures.
    click(&c, "the health tab", "#tab-health").await;
    let state = wait_for(&c, "the health state", "#health-state").await;
    assert_eq!(state.attr("data-state").await.unwrap().as_deref(), Some("degraded"));
    wait_text(&c, "the reasons", "ul.problems", "on_message").await;
    wait_text(&c, "the outbox depth", "#outbox-depth", "0").await;
    wait_text(&c, "the journal backlog", "#journal-backlog", "0").await;
    wait_text(&c, "Odoo", "#odoo", "non configuré").await;
    screenshots(&c, "health").await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn the_api_lists_the_outbox_and_cancels_only_a_queued_send() {
    let (fake, d) = shop(&[]).await;
    d.deliver_ok(&text_delivery(BINTA, "wamid.Q", "Bonjour", now())).await;
    d.settled().await;
    let mut ids = Vec::new();
    for text in ["Un", "Deux", "Trois"] {
        ids.push(send_text(&d, BINTA, text).await);
    }
    d.wait_status(&ids[1], "sent").await;
    let (_, outbox) = d.api("/api/outbox").await;
    assert_eq!(outbox["jobs"].as_array().unwrap().len(), 1, "{outbox}");
    assert_eq!(outbox["jobs"][0]["job"]["message_id"], ids[2]);

    let (status, body) = d
        .api_post(&format!("/api/messages/{}/cancel", ids[1]), &json!({}))
        .await;
    assert_eq!(status, 409, "a sent message cannot be cancelled: {body}");
    assert!(body["error"].as_str().unwrap().contains("sent"), "{body}");
    let (status, _) = d.api_post("/api/messages/999999/cancel", &json!({})).await;
    assert_eq!(status, 404);
    let (status, body) = d
        .api_post(&format!("/api/messages/{}/cancel", ids[2]), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    let (_, outbox) = d.api("/api/outbox").await;
    assert_eq!(outbox["jobs"], json!([]));
    assert_eq!(outbox["troubles"][0]["id"], ids[2], "{outbox}");
    // Cancelled, it can be queued again (it goes once the pacing allows).
    let (status, body) = d
        .api_post(&format!("/api/messages/{}/resend", ids[2]), &json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let (_, outbox) = d.api("/api/outbox").await;
    assert_eq!(outbox["jobs"][0]["job"]["message_id"], ids[2]);
    assert_eq!(fake.accepted_count(), 2);

    // Viewers and agents may not act on the operations pages, whatever they post.
    let r = d
        .http
        .post(d.url(&format!("/console/outbox/{}/cancel", ids[2])))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no session");
}
