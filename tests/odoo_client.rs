mod support;

// The Odoo client against the fake Odoo 16 (tests/support/fake_odoo.rs).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fake_odoo::{FakeOdoo, PdfMode};
use walua::config::{OdooConfig, Secret};
use walua::odoo::{OdooClient, OdooError};

const KEY: &str = "client-test-api-key-71c0";
const PASSWORD: &str = "client-test-password-3ab9";

fn config(odoo: &FakeOdoo, key: Option<&str>, password: Option<&str>) -> OdooConfig {
    OdooConfig {
        url: odoo.url(),
        db: odoo.db().to_string(),
        login: odoo.login().to_string(),
        api_key: key.map(Secret::new),
        password: password.map(Secret::new),
        poll_interval: Duration::from_secs(30),
        hook_token: None,
        timeout: Duration::from_secs(5),
        rescan_window: Duration::from_secs(180),
        chatter: true,
        chatter_inbound: false,
        partners: true,
    }
}

async fn setup(key: Option<&str>, password: Option<&str>) -> (FakeOdoo, OdooClient) {
    let odoo = FakeOdoo::start(KEY, PASSWORD).await;
    let client = OdooClient::new(&config(&odoo, key, password)).unwrap();
    (odoo, client)
}

fn count(odoo: &FakeOdoo, method: &str) -> usize {
    odoo.calls().iter().filter(|c| c.method == method).count()
}

fn assert_no_secret(e: &OdooError) {
    let text = format!("{e} {e:?}");
    assert!(!text.contains(KEY) && !text.contains(PASSWORD), "secret leaked: {text}");
}

#[tokio::test]
async fn logs_in_with_an_api_key_or_a_password() {
    let (_odoo, client) = setup(Some(KEY), None).await;
    assert_eq!(client.login().await.unwrap(), 2);
    assert_eq!(client.version().await.unwrap()["server_serie"], "16.0");
    let (_odoo, client) = setup(None, Some(PASSWORD)).await;
    assert_eq!(client.login().await.unwrap(), 2);
    let debug = format!("{client:?}");
    assert!(!debug.contains(PASSWORD), "{debug}");
}

#[tokio::test]
async fn a_wrong_key_is_access_denied() {
    let (odoo, client) = setup(Some("not-the-key"), None).await;
    let e = client
        .search_read("res.partner", json!([]), &["name"], json!({}))
        .await
        .unwrap_err();
    match &e {
        OdooError::AccessDenied { name, .. } => assert_eq!(name, "odoo.exceptions.AccessDenied"),
        other => panic!("{other:?}"),
    }
    assert!(!e.to_string().contains("not-the-key"), "{e}");
    assert_eq!(count(&odoo, "search_read"), 0, "no execute_kw without a uid");

    // A key revoked after a successful login: execute_kw's fault, one login again, refused.
    let (odoo, client) = setup(Some(KEY), None).await;
    client.login().await.unwrap();
    odoo.set_api_key("a-new-key");
    let e = client.read("res.partner", &[1], &["name"]).await.unwrap_err();
    assert!(
        matches!(&e, OdooError::AccessDenied { name, .. } if name == "odoo.exceptions.AccessDenied"),
        "{e:?}"
    );
    assert_no_secret(&e);
    assert_eq!(count(&odoo, "login"), 2);
    assert_eq!(count(&odoo, "read"), 1);
}

#[tokio::test]
async fn search_read_read_write_create() {
    let (odoo, client) = setup(Some(KEY), None).await;
    let companies = client
        .search_read(
            "res.partner",
            json!([["is_company", "=", true]]),
            &["name", "phone", "mobile", "write_date"],
            json!({"limit": 3, "order": "id asc"}),
        )
        .await
        .unwrap();
    let names: Vec<&str> = companies.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["YourCompany", "Wood Corner", "Deco Addict"]);
    assert_eq!(companies[0]["mobile"], false, "empty fields are false");

    let lines = client
        .read("sale.order.line", &[43, 44], &["order_id", "price_subtotal"])
        .await
        .unwrap();
    assert_eq!(lines[0]["order_id"], json!([20, "S00020"]), "many2one is [id, name]");

    odoo.set_time("2026-11-26 08:00:00.000100");
    assert!(
        client
            .write("res.partner", &[10], json!({"mobile": "+221 77 000 00 10"}))
            .await
            .unwrap()
    );
    let p = odoo.get("res.partner", 10);
    assert_eq!(p["mobile"], "+221 77 000 00 10");
    assert_eq!(p["write_date"], "2026-11-26 08:00:00");

    let id = client
        .create(
            "sale.order",
            json!({"partner_id": 10, "order_line": [[0, 0, {"product_id": 1, "product_uom_qty": 3, "price_unit": 10}]]}),
        )
        .await
        .unwrap();
    assert_eq!(id, 21);
    let order = client
        .read("sale.order", &[id], &["name", "state", "amount_total", "partner_id"])
        .await
        .unwrap();
    assert_eq!(order[0]["name"], "S00021");
    assert_eq!(order[0]["state"], "draft");
    assert_eq!(order[0]["amount_total"], 30.0);
    assert_eq!(order[0]["partner_id"], json!([10, "Deco Addict"]));

    // Generic call: confirm, and cancel answering the wizard for a confirmed order.
    assert_eq!(
        client
            .call("sale.order", "action_confirm", json!([[id]]), json!({}))
            .await
            .unwrap(),
        true
    );
    let wizard = client
        .call("sale.order", "action_cancel", json!([[id]]), Value::Null)
        .await
        .unwrap();
    assert_eq!(wizard["res_model"], "sale.order.cancel");
    assert_eq!(count(&odoo, "login"), 1, "the uid is cached");
}

#[tokio::test]
async fn faults_carry_odoo_s_message_and_are_never_retried() {
    let (odoo, client) = setup(Some(KEY), None).await;
    let e = client
        .search_read("x.nope", json!([]), &[], json!({"limit": 1}))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        OdooError::Fault {
            name: "odoo.exceptions.UserError".into(),
            message: "Object x.nope doesn't exist".into(),
            code: 200
        }
    );
    assert_eq!(count(&odoo, "search_read"), 1, "a fault is not retried");

    let e = client
        .call("sale.order", "_action_cancel", json!([[1]]), json!({}))
        .await
        .unwrap_err();
    assert!(e.is_fault("odoo.exceptions.AccessError"), "{e:?}");
    assert!(
        e.to_string()
            .contains("Private methods (such as _action_cancel) cannot be called remotely.")
    );

    let e = client
        .search_read("sale.order", json!([["name", "=!", "x"]]), &["name"], json!({}))
        .await
        .unwrap_err();
    assert!(
        e.is_fault("builtins.ValueError") && e.to_string().contains("Invalid leaf"),
        "{e}"
    );

    // Odoo 16's read leaves out records that do not exist; writing one is a MissingError
    // (tests/fixtures/odoo16/session2).
    assert_eq!(
        client.read("sale.order", &[999], &["name"]).await.unwrap(),
        Vec::<serde_json::Value>::new()
    );
    let e = client
        .write("sale.order", &[999], json!({"client_order_ref": "x"}))
        .await
        .unwrap_err();
    assert!(e.is_fault("odoo.exceptions.MissingError"), "{e:?}");
    assert_no_secret(&e);
}

#[tokio::test]
async fn logs_in_again_when_the_uid_is_stale() {
    let (odoo, client) = setup(Some(KEY), None).await;
    client.login().await.unwrap();
    odoo.set_uid(7);
    let r = client.read("sale.order", &[1], &["name"]).await.unwrap();
    assert_eq!(r[0]["name"], "S00001");
    assert_eq!(count(&odoo, "login"), 2);
    assert_eq!(count(&odoo, "read"), 2, "the refused call and its retry");
}

#[tokio::test]
async fn web_session_is_renewed_once_when_it_expired() {
    let (odoo, client) = setup(Some(KEY), Some(PASSWORD)).await;
    let r = client
        .session_call(
            "sale.order",
            "search_read",
            json!([[]]),
            json!({"fields": ["name"], "limit": 1}),
        )
        .await
        .unwrap();
    assert_eq!(r[0]["name"], "S00016", "default order: date_order desc");
    odoo.expire_sessions();
    let r = client
        .session_call(
            "sale.order",
            "search_count",
            json!([[["state", "=", "draft"]]]),
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(r, 4);
    assert_eq!(count(&odoo, "authenticate"), 2);

    // A report through the session, renewed the same way.
    let pdf = client.report_pdf("sale.report_saleorder", 3).await.unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    odoo.expire_sessions();
    let pdf = client.report_pdf("account.report_invoice", 1).await.unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    assert_eq!(count(&odoo, "authenticate"), 3);
}

#[tokio::test]
async fn an_api_key_cannot_open_a_web_session() {
    let (odoo, client) = setup(Some(KEY), None).await;
    let e = client.report_pdf("stock.report_deliveryslip", 1).await.unwrap_err();
    assert!(matches!(e, OdooError::ReportNeedsPassword { .. }), "{e:?}");
    assert!(e.to_string().contains("odoo.password"), "{e}");
    // Invoices fall back to their portal link.
    let pdf = client
        .report_pdf("account.report_invoice_with_payments", 2)
        .await
        .unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    assert_eq!(count(&odoo, "authenticate"), 0);
    assert_eq!(count(&odoo, "get_portal_url"), 1);
}

#[tokio::test]
async fn invoice_pdf_goes_through_the_portal_link() {
    let (odoo, client) = setup(Some(KEY), None).await;
    let before = odoo.write_date_precise("account.move", 1).unwrap();
    let pdf = client.invoice_pdf(1).await.unwrap();
    assert!(pdf.starts_with(b"%PDF-1.4"));
    let call = odoo.calls().into_iter().find(|c| c.method == "get_portal_url").unwrap();
    assert_eq!(call.kwargs, json!({"report_type": "pdf", "download": true}));
    assert!(
        odoo.calls()
            .iter()
            .any(|c| c.service == "/my/invoices/1" && c.method == "GET")
    );
    // The first portal link writes the access token, which bumps write_date (once).
    let after = odoo.write_date_precise("account.move", 1).unwrap();
    assert!(after > before, "{before} → {after}");
    client.invoice_pdf(1).await.unwrap();
    assert_eq!(odoo.write_date_precise("account.move", 1).unwrap(), after);

    let e = client.invoice_pdf(999).await.unwrap_err();
    assert!(e.is_fault("odoo.exceptions.MissingError"), "{e:?}");
}

#[tokio::test]
async fn not_a_pdf_is_an_error() {
    let (odoo, client) = setup(Some(KEY), Some(PASSWORD)).await;
    odoo.set_pdf_mode(PdfMode::Html);
    match client.invoice_pdf(1).await.unwrap_err() {
        OdooError::NotPdf { content_type, snippet } => {
            assert!(content_type.starts_with("text/html"), "{content_type}");
            assert!(snippet.contains("Wkhtmltopdf"), "{snippet}");
        }
        other => panic!("{other:?}"),
    }
    odoo.set_pdf_mode(PdfMode::Json);
    match client.report_pdf("account.report_invoice", 1).await.unwrap_err() {
        OdooError::NotPdf { content_type, .. } => assert!(content_type.starts_with("application/json")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn transport_failures_are_retried_then_succeed() {
    let (odoo, client) = setup(Some(KEY), None).await;
    client.login().await.unwrap();
    odoo.fail_next(2);
    let r = client
        .search_read("sale.order", json!([["id", "=", 4]]), &["name"], json!({}))
        .await
        .unwrap();
    assert_eq!(r[0]["name"], "S00004");

    odoo.fail_next(10);
    let e = client.read("sale.order", &[4], &["name"]).await.unwrap_err();
    assert!(matches!(e, OdooError::Transport(_)), "{e:?}");
    assert_no_secret(&e);
    odoo.fail_next(0);

    // A create whose connection dropped is not sent again: Odoo might have committed it.
    odoo.fail_next(1);
    let e = client
        .create("res.partner", json!({"name": "Twice?"}))
        .await
        .unwrap_err();
    assert!(matches!(e, OdooError::Transport(_)), "{e:?}");
    assert_eq!(count(&odoo, "create"), 0);
}

#[tokio::test]
async fn slow_answers_time_out() {
    let odoo = FakeOdoo::start(KEY, PASSWORD).await;
    let mut cfg = config(&odoo, Some(KEY), None);
    cfg.timeout = Duration::from_millis(300);
    let client = OdooClient::new(&cfg).unwrap();
    odoo.set_latency(Duration::from_secs(2));
    let start = Instant::now();
    let e = client.login().await.unwrap_err();
    assert!(matches!(e, OdooError::Timeout { .. }), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "a timeout is not retried"
    );
}

#[tokio::test]
async fn write_date_cursor_rereads_the_last_second() {
    let (odoo, client) = setup(Some(KEY), None).await;
    odoo.set_time("2026-12-01 09:00:00.100000");
    odoo.update("sale.order", 7, json!({"state": "sent"}));
    let cursor = client
        .search_read(
            "sale.order",
            json!([["write_date", ">", "2026-11-25 01:08:57"]]),
            &["write_date"],
            json!({"order": "write_date asc, id asc"}),
        )
        .await
        .unwrap()
        .last()
        .unwrap()["write_date"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(cursor, "2026-12-01 09:00:00");
    odoo.advance(Duration::from_millis(300));
    odoo.update("sale.order", 2, json!({"state": "sent"}));
    // "> cursor" returns the record already seen (same second) and the new one: dedupe on
    // (id, write_date) — nothing written in that second is missed.
    let again = client
        .search_read(
            "sale.order",
            json!([["write_date", ">", cursor]]),
            &["write_date"],
            json!({"order": "write_date asc, id asc"}),
        )
        .await
        .unwrap();
    let ids: Vec<i64> = again.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![7, 2]);
}
