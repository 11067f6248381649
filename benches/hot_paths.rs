//! Micro-benchmarks of the hot paths (`cargo bench`): payload parsing on every fixture,
//! the X-Hub-Signature-256 check, and one Lua dispatch (button click → script → effects)
//! through the library API. The end-to-end figures come from `benches/run.sh`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use walua::Config;
use walua::store::Store;
use walua::webhook::payload::Delivery;
use walua::webhook::signature;

/// The daemon's allocator (`src/main.rs`), so that these figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "json").then(|| {
                (
                    p.file_stem().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
        })
        .collect();
    out.sort();
    out
}

fn parsing(c: &mut Criterion) {
    let all = fixtures();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(all.len() as u64));
    g.bench_function("all_fixtures_bytes_to_delivery", |b| {
        b.iter(|| {
            for (_, body) in &all {
                let v: Value = serde_json::from_slice(body).unwrap();
                black_box(Delivery::parse(&v));
            }
        })
    });
    for name in [
        "text",
        "interactive_button_reply",
        "status_delivered",
        "batch_two_messages",
    ] {
        let body = &all.iter().find(|(n, _)| n == name).unwrap().1;
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter(|| {
                let v: Value = serde_json::from_slice(black_box(body)).unwrap();
                black_box(Delivery::parse(&v))
            })
        });
    }
    g.finish();
}

fn signatures(c: &mut Criterion) {
    let body = fixtures().into_iter().find(|(n, _)| n == "text").unwrap().1;
    let header = signature::sign(b"bench-app-secret", &body);
    let mut g = c.benchmark_group("signature");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("verify_text_fixture", |b| {
        b.iter(|| signature::verify(b"bench-app-secret", black_box(&body), Some(header.as_bytes())).unwrap())
    });
    g.bench_function("check_json_text_fixture", |b| {
        let bytes = bytes::Bytes::from(body.clone());
        b.iter(|| walua::webhook::check_json(black_box(&bytes)).unwrap())
    });
    g.finish();
}

// Like the shipped button scripts, it requires a module from `scripts/lib/`.
const SCRIPT: &str = r#"
local shop = require "shop"
return {
  match = "^btn_validate_order_(%d+)$",
  anyone = true, -- the bench clicks a button walua never sent
  run = function(order_id)
    local count = (env.store.get("validations") or 0) + 1
    env.store.set("validations", count)
    env.whatsapp.send_text(message.from, shop.validated(order_id, contact.name))
  end,
}
"#;

const LIB: &str = r#"
local M = {}
function M.fcfa(amount)
  local s = string.format("%d", math.floor(amount + 0.5))
  return (s:reverse():gsub("(%d%d%d)", "%1 "):reverse():gsub("^ ", "")) .. " F CFA"
end
function M.validated(order_id, name)
  return "Commande " .. order_id .. " validée, merci " .. (name or "") .. " (" .. M.fcfa(25000) .. ")"
end
return M
"#;

fn dispatch(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts/buttons")).unwrap();
    std::fs::write(dir.path().join("scripts/buttons/validate_order.lua"), SCRIPT).unwrap();
    std::fs::create_dir_all(dir.path().join("scripts/lib")).unwrap();
    std::fs::write(dir.path().join("scripts/lib/shop.lua"), LIB).unwrap();
    let text = format!(
        "[store]\npath = \"{}\"\n[whatsapp]\nphone_number_id = \"1234567890\"\ndry_run = true\n[scripts]\ndir = \"{}\"\nworkers = 1\nhot_reload = false\n",
        dir.path().join("walua.redb").display(),
        dir.path().join("scripts").display()
    );
    let config = Config::from_toml(&dir.path().join("walua.toml"), &text).unwrap();
    let store = Store::open(&config.store.path).unwrap();
    let click = serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "221338601234", "phone_number_id": "1234567890"},
            "contacts": [{"profile": {"name": "Awa Diop"}, "wa_id": "221771234567"}],
            "messages": [{"from": "221771234567", "id": "wamid.BENCH1", "timestamp": "1760000000", "type": "interactive",
                          "interactive": {"type": "button_reply", "button_reply": {"id": "btn_validate_order_42", "title": "Valider"}}}]
        }}]}]
    });
    let report = store
        .apply_deliveries(&[(1, Delivery::parse(&click))], &walua::explain_error, false)
        .unwrap();
    let pending = store
        .messages_for_dispatch(&report.new_messages)
        .unwrap()
        .remove(0)
        .1
        .unwrap()
        .unwrap();
    let (record, conversation) = (pending.message.clone(), pending.conversation.clone());
    let outbox = walua::outbox::Outbox::new(store.clone(), Arc::default(), true, false);
    let scripts = walua::script::Scripts::start(
        &config,
        store.clone(),
        outbox,
        None,
        None,
        std::sync::Arc::new(walua::metrics::Metrics::new()),
    )
    .unwrap();
    let runtime = scripts.runtime.clone();

    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("button_click_to_effects", |b| {
        b.iter_batched(
            || (record.clone(), conversation.clone()),
            |(record, conversation)| {
                runtime
                    .exec_blocking(move |w| {
                        let outcome = w.dispatch(record, conversation.as_ref());
                        assert!(outcome.error.is_none(), "{outcome:?}");
                        (outcome, w.take_effects())
                    })
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    // As the dispatcher runs them: a batch of clicks per hand-over to the Lua thread.
    g.throughput(Throughput::Elements(64));
    g.bench_function("button_clicks_in_a_batch_of_64", |b| {
        b.iter_batched(
            || vec![(pending.message.id, Ok(Some(pending.clone()))); 64],
            |records| {
                runtime
                    .exec_blocking(move |w| {
                        let (effects, outcomes) = w.dispatch_records(records);
                        assert!(outcomes.iter().all(|(_, o)| o.error.is_none()), "{outcomes:?}");
                        (effects, outcomes)
                    })
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    drop(runtime);
    scripts.stop();
}

criterion_group!(benches, parsing, signatures, dispatch);
criterion_main!(benches);
