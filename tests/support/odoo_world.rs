//! The shipped scripts against a fake Odoo and a fake Graph API, as the Odoo stories use
//! them (`tests/odoo_flows.rs`, `tests/odoo_outages.rs`).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::fake_graph::FakeGraph;
use super::fake_odoo::FakeOdoo;
use super::*;

pub const KEY: &str = "odoo-api-key-5be1";
pub const HOOK_TOKEN: &str = "hook-token-81f0";
pub const PHONE: &str = "221771234567";
/// The fake's res.currency ids (the real Odoo 16's): EUR, USD, XOF (CFA franc BCEAO).
pub const EUR: i64 = 1;
pub const USD: i64 = 2;
pub const XOF: i64 = 42;
/// The fake's res.lang ids: en_US, fr_FR.
pub const EN_US: i64 = 1;
pub const FR_FR: i64 = 28;
/// The no-break space Odoo puts between an amount and its symbol, and fr_FR's thousands
/// separator.
pub const NBSP: &str = "\u{a0}";

pub struct World {
    pub odoo: FakeOdoo,
    pub graph: FakeGraph,
    pub daemon: TestDaemon,
    pub partner: i64,
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// A daemon running the shipped scripts against a fake Odoo and a fake Graph API.
pub async fn world(window_open: bool, tweak: impl FnOnce(&Path)) -> World {
    world_with(window_open, tweak, "").await
}

/// [`world`] with more configuration (e.g. a `[scripts]` key, added under the section).
///
/// The partner sync and the chatter writer are off: their Odoo calls would take the failures
/// and fill the call counts these tests script. `tests/odoo_chatter.rs` turns them on
/// ([`world_odoo`]).
pub async fn world_with(window_open: bool, tweak: impl FnOnce(&Path), scripts_extra: &str) -> World {
    world_odoo(window_open, tweak, scripts_extra, "partners = false\nchatter = false\n").await
}

/// [`world_with`] with more `[odoo]` keys (`odoo_extra`).
pub async fn world_odoo(window_open: bool, tweak: impl FnOnce(&Path), scripts_extra: &str, odoo_extra: &str) -> World {
    world_full(window_open, tweak, scripts_extra, odoo_extra, "").await
}

/// [`world_odoo`] with more `[vars]` (`vars_extra`).
pub async fn world_full(
    window_open: bool,
    tweak: impl FnOnce(&Path),
    scripts_extra: &str,
    odoo_extra: &str,
    vars_extra: &str,
) -> World {
    let odoo = FakeOdoo::start(KEY, "unused-password").await;
    let graph = FakeGraph::start(ACCESS_TOKEN).await;
    // A shop in Dakar: XOF and French activated in Odoo (both ship inactive), a customer
    // who speaks French.
    odoo.update("res.currency", XOF, json!({"active": true}));
    odoo.update("res.lang", FR_FR, json!({"active": true}));
    let partner = odoo.insert(
        "res.partner",
        json!({"name": "Awa Diop", "mobile": "+221 77 123 45 67", "lang": "fr_FR"}),
    );
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts"),
        &dir.path().join("scripts"),
    );
    tweak(&dir.path().join("scripts"));
    // The shipped template definitions too: the shipped scripts' sends are checked against them.
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"),
        &dir.path().join("templates"),
    );
    let vars = r#"[vars]
auto_send_order_creation = true
auto_send_unpaid_invoices = true
unpaid_invoice_days = 7
order_created_template = "order_created"
unpaid_invoice_template = "unpaid_invoice_reminder"
invoice_template = "invoice_posted"
"#
    .to_string()
        + vars_extra;
    let odoo_section = format!(
        "{scripts_extra}\n[odoo]\nurl = \"{}\"\ndb = \"{}\"\nlogin = \"{}\"\napi_key = \"{KEY}\"\npoll_interval = \"150ms\"\nhook_token = \"{HOOK_TOKEN}\"\n{odoo_extra}\n{vars}\n",
        odoo.url(),
        odoo.db(),
        odoo.login()
    );
    let text = config_text(dir.path(), &live_whatsapp(&graph.url(), ""), &odoo_section);
    let daemon = TestDaemon::start_in(dir, text).await;
    if window_open {
        daemon
            .deliver_ok(&text_delivery(PHONE, "wamid.HELLO", "Bonjour", now() - 60))
            .await;
        daemon.settled().await;
    }
    let w = World {
        odoo,
        graph,
        daemon,
        partner,
    };
    w.hooks_ready().await;
    w
}

impl World {
    /// Waits until every hook has started its cursor (one poll pass done).
    pub async fn hooks_ready(&self) {
        let hooks = std::fs::read_dir(self.daemon.dir.path().join("scripts/hooks"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "lua"))
                    .count()
            })
            .unwrap_or(0);
        self.daemon
            .eventually("hook cursors started", || async {
                let calls = self.odoo.calls();
                let n = calls
                    .iter()
                    .filter(|c| {
                        c.method == "search_read"
                            && c.kwargs["limit"] == 1
                            && c.kwargs["order"].as_str().is_some_and(|o| o.ends_with("desc"))
                    })
                    .count();
                (n >= hooks).then_some(())
            })
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// An order of 27 000 XOF for the world's partner (2 × 12 500 + 1 × 2 000).
    pub fn new_order(&self) -> i64 {
        self.new_order_with(json!({"currency_id": XOF}))
    }

    /// [`World::new_order`] with other values (e.g. another currency or partner). In Odoo the
    /// currency comes from the order's pricelist; the fake takes it as given.
    pub fn new_order_with(&self, values: Value) -> i64 {
        self.odoo.advance(Duration::from_secs(1));
        let mut order = json!({"partner_id": self.partner, "order_line": [
            [0, 0, {"name": "Boubou bazin", "product_uom_qty": 2, "price_unit": 12500}],
            [0, 0, {"name": "Livraison Dakar", "product_uom_qty": 1, "price_unit": 2000}]
        ]});
        for (k, v) in values.as_object().unwrap() {
            order[k] = v.clone();
        }
        self.odoo.insert("sale.order", order)
    }

    pub async fn sent(&self, n: usize) -> Vec<Value> {
        self.graph
            .wait_for_accepted(n, Duration::from_secs(10))
            .await
            .into_iter()
            .map(|(_, b)| b)
            .collect()
    }

    pub async fn click(&self, wamid: &str, id: &str) {
        self.daemon
            .deliver_ok(&click_delivery(PHONE, wamid, id, "Bouton"))
            .await;
        self.daemon.dispatched(PHONE, wamid).await;
    }
}

/// An XOF amount for a French partner, as Odoo 16 writes it: 27000.0 -> "27 000 CFA", the
/// spaces no-break (U+00A0: fr_FR's thousands separator, then format_amount's before the
/// symbol), no decimals (XOF's rounding is 1.0), Odoo's XOF symbol "CFA" after the amount.
pub fn xof(amount: f64) -> String {
    let digits = (amount.round() as i64).to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push_str(NBSP);
        }
        out.push(c);
    }
    format!("{out}{NBSP}CFA")
}

/// A text with its no-break spaces shown as "_" (assertion messages).
pub fn show_nbsp(s: &str) -> String {
    s.replace(NBSP, "_")
}

pub fn body_text(m: &Value) -> String {
    m["text"]["body"]
        .as_str()
        .or(m["interactive"]["body"]["text"].as_str())
        .unwrap_or("")
        .to_string()
}
