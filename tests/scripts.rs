//! Lua scripts through the real daemon: button actions, scenarios, templates, on_message,
//! the sandbox, budgets, hot reload and exactly-once dispatch.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

const AWA: &str = "221771234567";

async fn daemon_with(scripts: &[(&str, &str)]) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    for (path, source) in scripts {
        put_script(dir.path(), path, source);
    }
    let text = config_text(
        dir.path(),
        DRY_RUN,
        "[vars]\nshop = \"Boutique Awa\"\ncurrency = \"F CFA\"\n",
    );
    TestDaemon::start_in(dir, text).await
}

/// Sends a click and waits for its dispatch; returns the inbound message.
async fn click(d: &TestDaemon, wamid: &str, id: &str) -> Value {
    d.deliver_ok(&click_delivery(AWA, wamid, id, "Bouton")).await;
    d.dispatched(AWA, wamid).await
}

async fn texts_sent(d: &TestDaemon) -> Vec<String> {
    d.outbound_of(AWA)
        .await
        .iter()
        .map(|m| {
            let raw = &m["raw"];
            raw["text"]["body"]
                .as_str()
                .or(raw["interactive"]["body"]["text"].as_str())
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

const VALIDATE: &str = r#"
return {
  match = "^btn_validate_order_(%d+)$",
  anyone = true,
  run = function(order_id)
    local count = (env.store.get("validations") or 0) + 1
    env.store.set("validations", count)
    env.whatsapp.send_text(message.from, "Commande " .. order_id .. " validée (" .. count .. "), merci " .. contact.name .. " — " .. env.vars.shop)
  end,
}
"#;

#[tokio::test]
async fn a_button_click_runs_the_matching_action_with_its_captures() {
    let d = daemon_with(&[("buttons/validate_order.lua", VALIDATE)]).await;
    let m = click(&d, "wamid.C1", "btn_validate_order_42").await;
    assert_eq!(m["script"]["scripts"][0], "buttons/validate_order");
    assert!(m["script"]["error"].is_null(), "{}", m["script"]);
    click(&d, "wamid.C2", "btn_validate_order_43").await;
    let sent = texts_sent(&d).await;
    assert_eq!(
        sent,
        [
            "Commande 42 validée (1), merci Awa Diop — Boutique Awa",
            "Commande 43 validée (2), merci Awa Diop — Boutique Awa"
        ]
    );
    let out = d.outbound_of(AWA).await;
    assert_eq!(out[0]["status"], "dry_run");
    assert_eq!(out[0]["origin"], "script:buttons/validate_order");
    // A click that no script matches runs nothing.
    let m = click(&d, "wamid.C3", "btn_unknown").await;
    assert_eq!(m["script"]["scripts"].as_array().unwrap().len(), 0);
}

const RAW_READER: &str = r#"
return {
  match = "^btn_raw_",
  anyone = true,
  run = function()
    local listed = false
    for k in pairs(message) do if k == "raw" then listed = true end end
    local raw = message.raw
    env.whatsapp.send_text(message.from, raw.interactive.button_reply.id .. " " .. raw.type .. " " .. tostring(message.raw == raw) .. " " .. tostring(listed))
  end,
}
"#;

#[tokio::test]
async fn a_script_reads_the_raw_message_as_meta_sent_it() {
    let d = daemon_with(&[("buttons/raw.lua", RAW_READER)]).await;
    let m = click(&d, "wamid.R1", "btn_raw_7").await;
    assert!(m["script"]["error"].is_null(), "{}", m["script"]);
    // `message.raw` is built on first read (`pairs` reads it too), then kept.
    assert_eq!(texts_sent(&d).await, ["btn_raw_7 interactive true true"]);
}

#[tokio::test]
async fn a_template_quick_reply_is_matched_like_a_button() {
    let d = daemon_with(&[("buttons/validate_order.lua", VALIDATE)]).await;
    let mut delivery = fixture("button.json");
    let m = &mut delivery["entry"][0]["changes"][0]["value"]["messages"][0];
    m["timestamp"] = Value::String(now().to_string());
    let wamid = m["id"].as_str().unwrap().to_string();
    d.deliver_ok(&delivery).await;
    let m = d.dispatched(AWA, &wamid).await;
    assert_eq!(m["script"]["scripts"][0], "buttons/validate_order");
    assert!(texts_sent(&d).await[0].starts_with("Commande 42 validée"));
}

const ON_MESSAGE_WITH_TEMPLATE: &str = r#"
return {
  run = function(msg)
    if msg.text == "facture" then
      env.notify(msg.from, "invoice_ready", { name = "INV/2026/0001", amount = 15000 })
    else
      env.whatsapp.send_text(msg.from, "Reçu : " .. (msg.text or msg.type))
    end
  end,
}
"#;

const INVOICE_TEMPLATE: &str = r#"
return function(invoice)
  return {
    type = "buttons",
    body = string.format("Votre facture %s de %d F CFA est prête.", invoice.name, invoice.amount),
    buttons = { { id = "btn_pay_" .. invoice.name, title = "Payer" } },
  }
end
"#;

#[tokio::test]
async fn on_message_handles_the_rest_and_notify_renders_a_template() {
    let d = daemon_with(&[
        ("on_message.lua", ON_MESSAGE_WITH_TEMPLATE),
        ("templates/invoice_ready.lua", INVOICE_TEMPLATE),
    ])
    .await;
    d.deliver_ok(&text_delivery(AWA, "wamid.T1", "bonjour", now())).await;
    d.dispatched(AWA, "wamid.T1").await;
    d.deliver_ok(&text_delivery(AWA, "wamid.T2", "facture", now())).await;
    let m = d.dispatched(AWA, "wamid.T2").await;
    assert!(m["script"]["error"].is_null(), "{}", m["script"]);
    let out = d.outbound_of(AWA).await;
    assert_eq!(out[0]["raw"]["text"]["body"], "Reçu : bonjour");
    assert_eq!(out[1]["type"], "buttons");
    assert_eq!(
        out[1]["raw"]["interactive"]["body"]["text"],
        "Votre facture INV/2026/0001 de 15000 F CFA est prête."
    );
    assert_eq!(
        out[1]["raw"]["interactive"]["action"]["buttons"][0]["reply"]["id"],
        "btn_pay_INV/2026/0001"
    );
}

const START_FLOW: &str = r#"
return {
  match = "^btn_start_(%d+)$",
  anyone = true,
  run = function(order)
    env.scenario.start("order_validation", message.from, { order = tonumber(order) })
  end,
}
"#;

const ORDER_VALIDATION: &str = r#"
return {
  start = "ask",
  steps = {
    ask = {
      body = "Votre commande est prête. Valider ?",
      buttons = {
        { id = "yes", title = "Valider", next = "address" },
        { id = "no", title = "Annuler", reply = "Commande annulée." },
      },
    },
    address = {
      body = "Quelle est votre adresse de livraison ?",
      run = function(msg, vars)
        vars.address = msg.text
        return "payment"
      end,
    },
    payment = {
      body = "Choisissez votre méthode de paiement",
      buttons = {
        { id = "wave", title = "Wave", next = "scenario:receipt",
          run = function(vars) vars.method = "Wave" end },
        { id = "om", title = "Orange Money", next = "scenario:receipt",
          run = function(vars) vars.method = "Orange Money" end },
      },
    },
  },
}
"#;

const RECEIPT: &str = r#"
return {
  start = "confirm",
  steps = {
    confirm = {
      body = "Paiement enregistré. Voulez-vous un reçu ?",
      buttons = {
        { id = "ok", title = "Oui", run = function(vars)
            env.whatsapp.send_text(message.from,
              string.format("Reçu commande %d, %s, livraison : %s", vars.order, vars.method, vars.address))
          end },
        { id = "no", title = "Non", reply = "Très bien." },
      },
    },
  },
}
"#;

#[tokio::test]
async fn a_three_step_scenario_hands_over_to_a_second_one_and_survives_a_restart() {
    let d = daemon_with(&[
        ("buttons/start_flow.lua", START_FLOW),
        ("scenarios/order_validation.lua", ORDER_VALIDATION),
        ("scenarios/receipt.lua", RECEIPT),
    ])
    .await;
    click(&d, "wamid.S1", "btn_start_42").await;
    let out = d.outbound_of(AWA).await;
    let ask = &out[0]["raw"]["interactive"];
    assert_eq!(ask["body"]["text"], "Votre commande est prête. Valider ?");
    let yes = ask["action"]["buttons"][0]["reply"]["id"].as_str().unwrap().to_string();
    assert_eq!(yes, "wsc|order_validation|ask|yes");

    click(&d, "wamid.S2", &yes).await;
    assert_eq!(
        texts_sent(&d).await.last().unwrap(),
        "Quelle est votre adresse de livraison ?"
    );

    // The contact is in the `address` step: free text goes to the step's code.
    d.deliver_ok(&text_delivery(AWA, "wamid.S3", "Rue 10, Médina", now()))
        .await;
    let m = d.dispatched(AWA, "wamid.S3").await;
    assert_eq!(m["script"]["scripts"][0], "scenarios/order_validation:address");
    let out = d.outbound_of(AWA).await;
    let payment = out.last().unwrap()["raw"]["interactive"].clone();
    assert_eq!(payment["body"]["text"], "Choisissez votre méthode de paiement");

    // The scenario state is durable.
    let d = d.restart().await;

    click(&d, "wamid.S4", "wsc|order_validation|payment|wave").await;
    let out = d.outbound_of(AWA).await;
    let confirm = out.last().unwrap()["raw"]["interactive"].clone();
    assert_eq!(confirm["body"]["text"], "Paiement enregistré. Voulez-vous un reçu ?");
    assert_eq!(confirm["action"]["buttons"][0]["reply"]["id"], "wsc|receipt|confirm|ok");

    click(&d, "wamid.S5", "wsc|receipt|confirm|ok").await;
    assert_eq!(
        texts_sent(&d).await.last().unwrap(),
        "Reçu commande 42, Wave, livraison : Rue 10, Médina"
    );

    // The scenario is over: an old button does nothing.
    let before = d.outbound_of(AWA).await.len();
    click(&d, "wamid.S6", "wsc|order_validation|ask|yes").await;
    assert_eq!(d.outbound_of(AWA).await.len(), before);
}

/// Each attempt is a Lua expression that must raise an error or yield nil / false.
const ESCAPES: &[&str] = &[
    "io.open('/etc/passwd')",
    "io",
    "os.execute('id')",
    "os.exit(1)",
    "os.getenv('HOME')",
    "os.remove('/tmp/walua-escape')",
    "os.rename('/tmp/a', '/tmp/b')",
    "os.tmpname()",
    "debug.getinfo(1)",
    "debug",
    "string.dump(function() end)",
    "dofile('/etc/passwd')",
    "loadfile('/etc/passwd')",
    "load('\\27Lua\\84\\0')",
    "require('os')",
    "require('../../etc/passwd')",
    "package",
    "package and package.loadlib",
    "getmetatable('').__index",
    "collectgarbage('stop') and false",
    "rawget(_G, 'io')",
    "load('return io')()",
    "coroutine.wrap(function() return os.execute end)()",
];

#[tokio::test]
async fn sandbox_escape_attempts_are_all_refused() {
    let mut scripts = Vec::new();
    for (i, attempt) in ESCAPES.iter().enumerate() {
        scripts.push((
            format!("buttons/escape_{i:02}.lua"),
            format!(
                "return {{ match = \"^escape_{i:02}$\", anyone = true, run = function()\n  local ok, result = pcall(function() return {attempt} end)\n  if ok and result then env.whatsapp.send_text(message.from, \"ESCAPED {i}\") end\nend }}\n"
            ),
        ));
    }
    // State changed in one run must not leak into the next.
    scripts.push((
        "buttons/poison.lua".into(),
        "return { match = '^poison$', anyone = true, run = function()\n  string.upper = nil; leaked = true\n  env.whatsapp.send_text = nil; logger.info = nil\n  rawset(env.vars, 'shop', 'X'); env.vars = nil\nend }".into(),
    ));
    scripts.push((
        "buttons/check.lua".into(),
        "return { match = '^check$', anyone = true, run = function()\n  if leaked or string.upper == nil or logger.info == nil or env.vars.shop ~= 'Boutique Awa' then env.whatsapp.send_text(message.from, 'ESCAPED leak') end\n  local writable = pcall(function() env.vars.shop = 'Y' end)\n  if writable then env.whatsapp.send_text(message.from, 'ESCAPED vars') end\n  env.whatsapp.send_text(message.from, string.upper('ok'))\nend }".into(),
    ));
    let refs: Vec<(&str, &str)> = scripts.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let d = daemon_with(&refs).await;
    let (_, listed) = d.api("/api/scripts").await;
    let errors: Vec<&Value> = listed["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["last_error"].is_null())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    for i in 0..ESCAPES.len() {
        let m = click(&d, &format!("wamid.E{i}"), &format!("escape_{i:02}")).await;
        assert_eq!(m["script"]["scripts"][0], format!("buttons/escape_{i:02}"));
    }
    click(&d, "wamid.P1", "poison").await;
    click(&d, "wamid.P2", "check").await;
    let sent = texts_sent(&d).await;
    assert!(!sent.iter().any(|t| t.starts_with("ESCAPED")), "{sent:?}");
    assert_eq!(sent, ["OK"]);
    assert!(ESCAPES.len() >= 15);
}

#[tokio::test]
async fn an_infinite_loop_and_a_memory_bomb_are_stopped_while_other_messages_flow() {
    let dir = tempfile::tempdir().unwrap();
    for (path, source) in [
        (
            "buttons/loop.lua",
            "return { match = '^loop$', anyone = true, run = function() while true do end end }",
        ),
        (
            "buttons/bomb.lua",
            "return { match = '^bomb$', anyone = true, run = function() local t = {} while true do t[#t+1] = string.rep('x', 1e6) .. #t end end }",
        ),
        ("buttons/validate_order.lua", VALIDATE),
    ] {
        put_script(dir.path(), path, source);
    }
    // The CPU budget counts time spent inside C functions (allocating, copying) too: a
    // generous one, so that on a loaded machine the bomb reaches 32 MiB first.
    let text = config_text(
        dir.path(),
        DRY_RUN,
        "[vars]\nshop = \"Boutique Awa\"\ncurrency = \"F CFA\"\n",
    )
    .replace("[scripts]\n", "[scripts]\ncpu_budget = \"2s\"\n");
    let d = TestDaemon::start_in(dir, text).await;
    d.deliver_ok(&click_delivery(AWA, "wamid.L1", "loop", "x")).await;
    d.deliver_ok(&click_delivery(AWA, "wamid.B1", "bomb", "x")).await;
    d.deliver_ok(&click_delivery(AWA, "wamid.V1", "btn_validate_order_7", "x"))
        .await;
    let loop_msg = d.dispatched(AWA, "wamid.L1").await;
    assert!(
        loop_msg["script"]["error"]
            .as_str()
            .unwrap()
            .contains("CPU budget of 2000 ms")
    );
    let err = loop_msg["script"]["error"].as_str().unwrap();
    assert!(err.contains("CPU budget"), "{err}");
    assert!(err.contains("buttons/loop.lua:1"), "{err}");
    let bomb = d.dispatched(AWA, "wamid.B1").await;
    assert!(
        bomb["script"]["error"].as_str().unwrap().contains("memory"),
        "{}",
        bomb["script"]
    );
    let ok = d.dispatched(AWA, "wamid.V1").await;
    assert!(ok["script"]["error"].is_null());
    assert_eq!(texts_sent(&d).await.len(), 1, "only the healthy script sent something");
}

#[tokio::test]
async fn a_script_error_names_file_and_line_and_drops_that_runs_effects() {
    let d = daemon_with(&[(
        "buttons/broken.lua",
        "return { match = '^broken$', anyone = true, run = function()\n  env.whatsapp.send_text(message.from, 'avant')\n  local x = nil\n  return x.field\nend }",
    )])
    .await;
    let m = click(&d, "wamid.X1", "broken").await;
    let err = m["script"]["error"].as_str().unwrap();
    assert!(err.contains("buttons/broken.lua:4"), "{err}");
    assert!(d.outbound_of(AWA).await.is_empty(), "a failed run sends nothing");
    let m = click(&d, "wamid.X2", "broken").await;
    assert!(m["script"]["error"].is_string(), "the daemon keeps going");
}

#[tokio::test]
async fn odoo_calls_fail_clearly_when_odoo_is_not_configured() {
    let d = daemon_with(&[(
        "buttons/odoo.lua",
        "return { match = '^odoo$', anyone = true, run = function() env.odoo.search_read('sale.order', {}, {'name'}) end }",
    )])
    .await;
    let m = click(&d, "wamid.O1", "odoo").await;
    assert!(
        m["script"]["error"]
            .as_str()
            .unwrap()
            .contains("Odoo is not configured"),
        "{}",
        m["script"]
    );
}

#[tokio::test]
async fn hot_reload_uses_new_versions_keeps_the_old_on_a_broken_save_and_unregisters_deleted_scripts() {
    let d = daemon_with(&[(
        "buttons/hello.lua",
        "return { match = '^hello$', anyone = true, run = function() env.whatsapp.send_text(message.from, 'v1') end }",
    )])
    .await;
    click(&d, "wamid.H1", "hello").await;

    // An atomic save (temp file + rename), as most editors do.
    d.write_script(
        "buttons/hello.lua",
        "return { match = '^hello$', anyone = true, run = function() env.whatsapp.send_text(message.from, 'v2') end }",
    );
    wait_for_version(&d, "hello", 2).await;
    click(&d, "wamid.H2", "hello").await;

    // A broken save keeps v2 and shows the error with file:line.
    std::fs::write(
        d.dir.path().join("scripts/buttons/hello.lua"),
        "return { match = '^hello$', anyone = true, run = function(\n",
    )
    .unwrap();
    let err = d
        .eventually("error visible", || async {
            let (_, s) = d.api("/api/scripts").await;
            s["scripts"][0]["last_error"].as_str().map(str::to_string)
        })
        .await;
    assert!(err.contains("buttons/hello.lua:"), "{err}");
    click(&d, "wamid.H3", "hello").await;

    // A new script appears without a restart.
    d.write_script(
        "buttons/bye.lua",
        "return { match = '^bye$', anyone = true, run = function() env.whatsapp.send_text(message.from, 'bye') end }",
    );
    d.eventually("bye registered", || async {
        let (_, s) = d.api("/api/scripts").await;
        s["scripts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "bye")
            .then_some(())
    })
    .await;
    click(&d, "wamid.H4", "bye").await;

    // Deleted: unregistered.
    std::fs::remove_file(d.dir.path().join("scripts/buttons/bye.lua")).unwrap();
    d.eventually("bye unregistered", || async {
        let (_, s) = d.api("/api/scripts").await;
        (!s["scripts"].as_array().unwrap().iter().any(|s| s["name"] == "bye")).then_some(())
    })
    .await;
    let m = click(&d, "wamid.H5", "bye").await;
    assert_eq!(m["script"]["scripts"].as_array().unwrap().len(), 0);

    assert_eq!(texts_sent(&d).await, ["v1", "v2", "v2", "bye"]);
}

async fn wait_for_version(d: &TestDaemon, name: &str, version: u64) {
    d.eventually(&format!("{name} v{version}"), || async {
        let (_, s) = d.api("/api/scripts").await;
        s["scripts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == name && s["version"].as_u64() >= Some(version))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn each_message_is_dispatched_exactly_once_across_restarts() {
    let d = daemon_with(&[("buttons/validate_order.lua", VALIDATE)]).await;
    let (dir, text) = d.stop().await;
    // Deliveries acknowledged just before a crash: journaled, not yet processed nor dispatched.
    let a = click_delivery(AWA, "wamid.R1", "btn_validate_order_1", "Valider");
    let b = click_delivery(AWA, "wamid.R2", "btn_validate_order_2", "Valider");
    journal_unprocessed(dir.path(), &[&a, &b, &a]);
    let d = TestDaemon::start_in(dir, text).await;
    d.dispatched(AWA, "wamid.R2").await;
    // Meta redelivers one of them too.
    d.deliver_ok(&click_delivery(AWA, "wamid.R1", "btn_validate_order_1", "Valider"))
        .await;
    d.settled().await;
    let d = d.restart().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = texts_sent(&d).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
}

#[tokio::test]
async fn send_buttons_and_send_list_pass_their_options() {
    let d = daemon_with(&[(
        "buttons/menu.lua",
        r#"return { match = "^menu$", anyone = true, run = function()
  env.whatsapp.send_buttons(message.from, "Que voulez-vous ?", { { id = "a", title = "Commander" } },
    { header = "Menu", footer = "Boutique Awa", reply_to = message.id })
  env.whatsapp.send_list(message.from, "Paiement", "Choisir",
    { { title = "Mobile", rows = { { id = "wave", title = "Wave" } } } }, { footer = "Merci" })
end }"#,
    )])
    .await;
    click(&d, "wamid.M1", "menu").await;
    let out = d.outbound_of(AWA).await;
    let buttons = &out[0]["raw"];
    assert_eq!(buttons["interactive"]["header"]["text"], "Menu");
    assert_eq!(buttons["interactive"]["footer"]["text"], "Boutique Awa");
    assert_eq!(buttons["context"]["message_id"], "wamid.M1");
    let list = &out[1]["raw"];
    assert_eq!(list["interactive"]["type"], "list");
    assert_eq!(list["interactive"]["footer"]["text"], "Merci");
    assert_eq!(list["interactive"]["action"]["sections"][0]["rows"][0]["id"], "wave");
}

// A lib module that, while loading, renders a template which requires the same module (in
// the template's own environment): the rest of the module must still see the run's globals.
const REENTERED_LIB: &str = r#"
local M = { greeting = "Bonjour" }
-- Only in a run: not in the template (no `message`), nor when scripts are checked at load
-- (where env.notify refuses).
if message and pcall(env.notify, message.from, "welcome", { name = "Awa" }) then
  M.sender = message.from -- still the run's `message` after the template required this module
end
return M
"#;

const WELCOME_TEMPLATE: &str = r#"
local shop = require "shop"
return function(record)
  return { type = "text", text = (shop.greeting or "?") .. " " .. record.name }
end
"#;

const USES_SHOP: &str = r#"
local shop = require "shop"
return {
  run = function(msg)
    env.whatsapp.send_text(msg.from, "pour " .. shop.sender)
  end,
}
"#;

#[tokio::test]
async fn a_module_required_again_while_it_loads_keeps_its_own_run_globals() {
    let d = daemon_with(&[
        ("lib/shop.lua", REENTERED_LIB),
        ("templates/welcome.lua", WELCOME_TEMPLATE),
        ("on_message.lua", USES_SHOP),
    ])
    .await;
    // Lib modules are kept compiled once their file is a few seconds old: let it settle, so
    // that the template's `require` gets the module the run is still loading.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    d.deliver_ok(&text_delivery(AWA, "wamid.R1", "bonjour", now())).await;
    let m = d.dispatched(AWA, "wamid.R1").await;
    assert!(m["script"]["error"].is_null(), "{}", m["script"]);
    let texts = texts_sent(&d).await;
    assert_eq!(texts, vec!["Bonjour Awa".to_string(), format!("pour {AWA}")]);
}
