//! A campaign of 100,000 recipients at `max_per_second = 200`, against the fake Graph API,
//! while customers write in and the bot answers them:
//!
//! ```sh
//! cargo bench --bench campaign                      # 100,000 recipients (about 9 minutes)
//! CAMPAIGN_RECIPIENTS=20000 cargo bench --bench campaign
//! ```
//!
//! walua runs as its own process (the release `walua` binary) so that its RSS is its own;
//! the fake Graph API and the customers run here. Printed:
//!
//! - the campaign's send rate over the whole run and per 10 s window (it must hold
//!   `max_per_second` within ±5 %);
//! - the latency of the bot's answers to customers while it runs (webhook POST → the answer
//!   reaching the Graph API), p50 / p99 / max: answers go before the campaign's backlog;
//! - walua's RSS every 10 s (it must stay flat), and the time the audience took to check
//!   and record at creation.

#[allow(dead_code)]
#[path = "../tests/support/fake_graph.rs"]
mod fake_graph;
#[allow(dead_code)]
#[path = "../tests/support/serve.rs"]
mod serve;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "bench-access-token";
const SECRET: &str = "bench-app-secret";
const ADMIN: &str = "bench-admin";
const RATE: u32 = 200;
/// Customers writing in while the campaign runs, one every this often.
const CUSTOMER_EVERY: Duration = Duration::from_millis(250);

const PROMO: &str = r#"name = "promo_tabaski"
language = "fr"
category = "MARKETING"

[body]
text = "Bonjour {{1}}, profitez de nos offres de Tabaski cette semaine dans toutes nos boutiques."
example = ["Awa"]
"#;

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn inbound(from: &str, wamid: &str, text: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "1234567890"},
            "contacts": [{"profile": {"name": "Client"}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": chrono::Utc::now().timestamp().to_string(),
                          "type": "text", "text": {"body": text}}]}}]}]}),
    )
    .unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches: nothing to list here
    }
    let recipients: usize = std::env::var("CAMPAIGN_RECIPIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(recipients));
}

async fn run(recipients: usize) {
    let fake = fake_graph::FakeGraph::start(TOKEN).await;
    fake.set_latency(Duration::from_millis(20));
    let dir = tempfile::Builder::new()
        .prefix("walua-campaign-bench")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("scripts")).unwrap();
    std::fs::create_dir_all(d.join("templates")).unwrap();
    std::fs::write(d.join("templates/promo_tabaski.fr.toml"), PROMO).unwrap();
    std::fs::write(
        d.join("scripts/on_message.lua"),
        r#"return { run = function(msg) env.whatsapp.send_text(msg.from, "Bot : bien reçu") end }"#,
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::write(
        d.join("walua.toml"),
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
admin_token = "{ADMIN}"
[store]
path = "{store}"
[whatsapp]
dry_run = false
api_base = "{api}"
phone_number_id = "1234567890"
access_token = "{TOKEN}"
app_secret = "{SECRET}"
verify_token = "bench-verify"
max_per_second = {RATE}
[templates]
dir = "{templates}"
[scripts]
dir = "{scripts}"
[log]
level = "warn"
"#,
            store = d.join("walua.redb").display(),
            api = fake.url(),
            templates = d.join("templates").display(),
            scripts = d.join("scripts").display(),
        ),
    )
    .unwrap();
    let mut walua = std::process::Command::new(env!("CARGO_BIN_EXE_walua"))
        .arg("--config")
        .arg(d.join("walua.toml"))
        .arg("serve")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(d.join("walua.log")).unwrap())
        .spawn()
        .expect("walua starts");
    let pid = walua.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..500 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_start = rss_mb(pid);

    let list: Vec<Value> = (0..recipients)
        .map(|i| json!({"to": format!("22177{:07}", i), "params": [format!("Client {i}")]}))
        .collect();
    let created_at = Instant::now();
    let created: Value = http
        .post(format!("{base}/api/campaigns"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "bench", "template": "promo_tabaski", "lang": "fr", "recipients": list}))
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let create_secs = created_at.elapsed().as_secs_f64();
    let id = created["id"].clone();
    assert_eq!(created["status"], "draft", "{created}");
    let rss_created = rss_mb(pid);
    println!(
        "campaign of {recipients} recipients created (checked and recorded) in {create_secs:.1} s; walua RSS {rss_start:.1} MB at start, {rss_created:.1} MB after"
    );
    let _ = http
        .post(format!("{base}/api/campaigns/{id}/start"))
        .bearer_auth(ADMIN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let start = Instant::now();

    // Customers write in while it runs; each answer's latency is measured.
    let asked: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let customers = {
        let (http, base, asked) = (http.clone(), base.clone(), asked.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let from = format!("22176{:07}", i);
                let body = inbound(&from, &format!("wamid.BENCH.{i}"), "Bonjour, c'est ouvert ?");
                let sig = walua::webhook::signature::sign(SECRET.as_bytes(), &body);
                asked.lock().unwrap().insert(from, Instant::now());
                let _ = http
                    .post(format!("{base}/webhook"))
                    .header("x-hub-signature-256", sig)
                    .body(body)
                    .send()
                    .await;
                tokio::time::sleep(CUSTOMER_EVERY).await;
            }
        })
    };

    let mut seen = 0;
    let mut campaign_sends: Vec<Instant> = Vec::with_capacity(recipients);
    let mut answers: Vec<f64> = Vec::new();
    let mut rss: Vec<(u64, f64)> = Vec::new();
    let mut next_rss = Duration::ZERO;
    loop {
        for r in fake.requests_since(seen) {
            seen += 1;
            if r.wamid.is_none() {
                continue;
            }
            if r.body["type"] == "template" {
                campaign_sends.push(r.at);
            } else if let Some(to) = r.body["to"].as_str()
                && let Some(at) = asked.lock().unwrap().remove(to)
            {
                answers.push(r.at.saturating_duration_since(at).as_secs_f64() * 1000.0);
            }
        }
        if start.elapsed() >= next_rss {
            rss.push((start.elapsed().as_secs(), rss_mb(pid)));
            next_rss += Duration::from_secs(10);
        }
        if campaign_sends.len() >= recipients {
            break;
        }
        if start.elapsed() > Duration::from_secs(recipients as u64 / u64::from(RATE) * 3 + 120) {
            println!("gave up: {} of {recipients} sent", campaign_sends.len());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    customers.abort();
    let report: Value = http
        .get(format!("{base}/api/campaigns/{id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .map(|s| {
            let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
                + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
            ticks / 100.0
        })
        .unwrap_or(0.0);
    let _ = walua.kill();
    let _ = walua.wait();

    // The rate over the whole run (first to last send) and per 10 s window.
    let (first, last) = (campaign_sends[0], *campaign_sends.last().unwrap());
    let span = last.duration_since(first).as_secs_f64();
    let overall = (campaign_sends.len() - 1) as f64 / span;
    let mut windows: Vec<f64> = Vec::new();
    let mut w_start = first;
    let mut count = 0usize;
    for t in &campaign_sends {
        while t.duration_since(w_start) >= Duration::from_secs(10) {
            windows.push(count as f64 / 10.0);
            w_start += Duration::from_secs(10);
            count = 0;
        }
        count += 1;
    }
    let (wmin, wmax) = windows
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), w| (lo.min(*w), hi.max(*w)));
    answers.sort_by(f64::total_cmp);
    println!(
        "campaign: {} sends in {span:.1} s = {overall:.1}/s (target {RATE}/s: {:+.1} %); 10 s windows {wmin:.1}..{wmax:.1}/s ({:+.1} % .. {:+.1} %)",
        campaign_sends.len(),
        (overall / f64::from(RATE) - 1.0) * 100.0,
        (wmin / f64::from(RATE) - 1.0) * 100.0,
        (wmax / f64::from(RATE) - 1.0) * 100.0,
    );
    println!(
        "answers to customers while it ran: {} answered, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        answers.len(),
        percentile(&answers, 0.5),
        percentile(&answers, 0.99),
        answers.last().copied().unwrap_or(f64::NAN)
    );
    let shown: Vec<String> = rss.iter().map(|(t, m)| format!("{t}s {m:.0}")).collect();
    println!("walua RSS (MB) every 10 s: {}", shown.join(", "));
    println!(
        "walua CPU: {cpu:.1} s in all ({:.0} µs per campaign send, customers' messages included)",
        cpu / campaign_sends.len() as f64 * 1e6
    );
    println!(
        "report: sent {} failed {} skipped {} status {}",
        report["sent"], report["failed"], report["skipped"], report["status"]
    );
}
