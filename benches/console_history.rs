//! The console on a real history (`cargo bench --bench console_history`).
//!
//! (a) Generates a store of 100,000 conversations and 1,000,000 messages (French texts,
//! inbound and outbound, statuses with some failures, names, usernames, BSUID-only contacts)
//! through the store's own write paths, in big transactions; the store is kept under
//! `$CARGO_TARGET_DIR/console_history/` and reused by the next run. It also writes 40,000
//! messages into fresh stores with and without the console indexes: the write cost per message.
//! (b) Starts the real daemon on that store, creates a console user, signs in, and times the
//! inbox, its filters, its second page, threads and their older pages, and searches; prints
//! p50/p95/p99/max per route, the store's size and each index's bytes per message.
//!
//! `WALUA_HISTORY_CONVERSATIONS` / `WALUA_HISTORY_MESSAGES` shrink the history for a quick try;
//! `WALUA_HISTORY_MIGRATION=1` also times the migration of such a store written before the
//! console indexes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use walua::Config;
use walua::store::Store;
use walua::store::inbox::HistoryItem;
use walua::store::outbox::NewOutbound;
use walua::webhook::payload::Delivery;

/// The daemon's allocator (`src/main.rs`), so that these figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/daemon.rs"]
mod daemon;

const ADMIN_TOKEN: &str = "bench-admin-token";
const PASSWORD: &str = "baobab-de-Thiès-2026";
/// Messages per write transaction while generating.
const BATCH: usize = 20_000;
/// The history spans this many days, ending now.
const DAYS: i64 = 120;

const FIRST: &[&str] = &[
    "Awa",
    "Fatou",
    "Moussa",
    "Ibrahima",
    "Aïssatou",
    "Mamadou",
    "Khadija",
    "Ousmane",
    "Mariama",
    "Cheikh",
    "Ndèye",
    "Abdoulaye",
    "Coumba",
    "Babacar",
    "Élodie",
    "François",
    "Hélène",
    "Jérôme",
    "Adama",
    "Seynabou",
    "Pape",
    "Astou",
    "Modou",
    "Bineta",
    "Lamine",
    "Rokhaya",
    "Souleymane",
    "Dieynaba",
    "Thierno",
    "Maïmouna",
];
const LAST: &[&str] = &[
    "Diop", "Ndiaye", "Fall", "Sow", "Diallo", "Gueye", "Sarr", "Faye", "Ba", "Cissé", "Mbaye", "Thiam", "Kane",
    "Seck", "Niang", "Camara", "Touré", "Lô", "Dieng", "Wade",
];
const INBOUND: &[&str] = &[
    "Bonjour, je voudrais savoir si ma commande est prête",
    "Merci beaucoup pour la livraison rapide",
    "Est-ce que vous livrez à Thiès demain matin ?",
    "Ma facture n'est pas arrivée, pouvez-vous la renvoyer ?",
    "Je n'ai pas reçu le colis, c'est urgent",
    "Quel est le prix du sac de riz de 50 kg ?",
    "D'accord, je passe récupérer la commande ce soir",
    "Bonsoir, le magasin est ouvert dimanche ?",
    "Je souhaite annuler ma réservation",
    "Le paiement par Wave a été effectué",
    "Pouvez-vous m'appeler s'il vous plaît ?",
    "Il manque deux bouteilles d'huile dans la livraison",
    "Très satisfait du service, à la prochaine",
    "Où se trouve votre boutique à Dakar ?",
    "Je voudrais modifier l'adresse de livraison",
    "Avez-vous des pagnes en wax disponibles ?",
    "Merci, bonne journée",
    "C'est noté, à demain",
    "Le livreur est arrivé, tout est bon",
    "Je confirme la commande numéro",
];
const OUTBOUND: &[&str] = &[
    "Bonjour, votre commande est prête, elle vous attend en boutique",
    "Merci pour votre message, un conseiller vous répond rapidement",
    "Votre colis est en route, livraison prévue demain",
    "Voici votre facture, merci de votre confiance",
    "Nous sommes ouverts du lundi au samedi de 9 h à 19 h",
    "Le paiement a bien été reçu, merci",
    "Désolé pour le retard, le livreur passe cet après-midi",
    "Votre réservation est annulée",
];
const CITIES: &[&str] = &[
    "Dakar",
    "Thiès",
    "Saint-Louis",
    "Ziguinchor",
    "Kaolack",
    "Mbour",
    "Touba",
    "Rufisque",
];
/// Appears in about one message in 50,000.
const RARE: &str = "zygomorphe";

struct Contact {
    phone: Option<String>,
    bsuid: Option<String>,
    name: String,
    username: Option<String>,
}

fn contacts(n: usize, rng: &mut StdRng) -> Vec<Contact> {
    (0..n)
        .map(|i| {
            let first = FIRST[rng.random_range(0..FIRST.len())];
            let last = LAST[rng.random_range(0..LAST.len())];
            let bsuid_only = i % 12 == 5;
            let username = (bsuid_only || rng.random_bool(0.3)).then(|| {
                format!(
                    "@{}.{}{}",
                    walua::store::inbox::fold(first),
                    walua::store::inbox::fold(last),
                    i % 1000
                )
            });
            Contact {
                phone: (!bsuid_only).then(|| format!("2217{}{:07}", 6 + i % 3, i)),
                bsuid: bsuid_only.then(|| format!("SN.{:020}", 7_000_000_000_000_000_000u64 + i as u64 * 7919)),
                name: format!("{first} {last}"),
                username,
            }
        })
        .collect()
}

fn inbound_text(rng: &mut StdRng) -> String {
    let mut s = INBOUND[rng.random_range(0..INBOUND.len())].to_string();
    if rng.random_bool(0.3) {
        s.push_str(&format!(" {}", rng.random_range(1000..99999)));
    }
    if rng.random_bool(0.2) {
        s.push_str(&format!(" — {}", CITIES[rng.random_range(0..CITIES.len())]));
    }
    if rng.random_range(0..50_000) == 0 {
        s.push_str(&format!(" {RARE}"));
    }
    s
}

fn inbound(c: &Contact, wamid: &str, ts: i64, rng: &mut StdRng) -> Value {
    let mut contact = json!({"profile": {"name": c.name}});
    let mut message = json!({"id": wamid, "timestamp": ts.to_string()});
    if let Some(p) = &c.phone {
        contact["wa_id"] = json!(p);
        message["from"] = json!(p);
    }
    if let Some(b) = &c.bsuid {
        contact["user_id"] = json!(b);
        message["from_user_id"] = json!(b);
    }
    if let Some(u) = &c.username {
        contact["profile"]["username"] = json!(u);
    }
    match rng.random_range(0..20) {
        0 => {
            message["type"] = json!("interactive");
            message["interactive"] =
                json!({"type": "button_reply", "button_reply": {"id": "ok", "title": "Je confirme"}});
        }
        1 => {
            message["type"] = json!("image");
            message["image"] = json!({"id": "m1", "mime_type": "image/jpeg", "caption": inbound_text(rng)});
        }
        _ => {
            message["type"] = json!("text");
            message["text"] = json!({"body": inbound_text(rng)});
        }
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "221338601234", "phone_number_id": "1234567890"},
        "contacts": [contact], "messages": [message]}}]}]})
}

fn outbound(c: &Contact, id: u64, rng: &mut StdRng) -> NewOutbound {
    let to = c.phone.clone().or(c.bsuid.clone()).unwrap();
    let (kind, summary, body) = if rng.random_bool(0.25) {
        let amount = format!("{} FCFA", rng.random_range(1..200) * 500);
        let first = c.name.split(' ').next().unwrap().to_string();
        (
            "template",
            format!("order_ready: {first}, {amount}"),
            json!({"messaging_product": "whatsapp", "to": to, "type": "template", "template": {"name": "order_ready",
                "language": {"code": "fr"}, "components": [{"type": "body", "parameters": [
                    {"type": "text", "text": first}, {"type": "text", "text": amount}]}]}}),
        )
    } else {
        let text = OUTBOUND[rng.random_range(0..OUTBOUND.len())].to_string();
        (
            "text",
            text.clone(),
            json!({"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": text}}),
        )
    };
    NewOutbound {
        id,
        recipient: to,
        kind: kind.into(),
        summary,
        content: body.clone(),
        body,
        free_form: false,
        allow_outside_window: true,
        dry_run: false,
        origin: "bench".into(),
        reply_to: None,
        phone_number_id: Some("1234567890".into()),
        record: None,
        chatter_file: None,
    }
}

fn statuses(wamid: &str, ts: i64, recipient: &str, rng: &mut StdRng) -> Value {
    let mut list = vec![];
    if rng.random_range(0..100) < 3 {
        list.push(
            json!({"id": wamid, "status": "failed", "timestamp": (ts + 2).to_string(), "recipient_id": recipient,
            "errors": [{"code": 131026, "title": "Message undeliverable"}]}),
        );
    } else {
        list.push(
            json!({"id": wamid, "status": "delivered", "timestamp": (ts + 2).to_string(), "recipient_id": recipient}),
        );
        if rng.random_bool(0.7) {
            list.push(
                json!({"id": wamid, "status": "read", "timestamp": (ts + 60).to_string(), "recipient_id": recipient}),
            );
        }
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "221338601234", "phone_number_id": "1234567890"},
        "statuses": list}}]}]})
}

/// Writes `messages` messages over `conversations` contacts into `store`; returns the time
/// spent in the store's write transactions.
fn generate(store: &Store, conversations: usize, messages: usize, seed: u64, log: bool) -> Duration {
    let mut rng = StdRng::seed_from_u64(seed);
    let people = contacts(conversations, &mut rng);
    let now = chrono::Utc::now().timestamp();
    let start_ts = now - DAYS * 86_400;
    // Every contact writes first; the rest of the messages go to contacts at random, a few
    // contacts much more than others. Times increase with ids.
    let mut picks: Vec<usize> = (0..conversations.min(messages)).collect();
    while picks.len() < messages {
        let r: f64 = rng.random();
        picks.push(((r * r) * conversations as f64) as usize % conversations);
    }
    let step = (DAYS * 86_400) as f64 / messages as f64;
    let mut in_store = Duration::ZERO;
    let mut items = Vec::with_capacity(BATCH);
    for (delivery, (n, &who)) in (1u64..).zip(picks.iter().enumerate()) {
        let c = &people[who];
        let ts = start_ts + (n as f64 * step) as i64;
        let first_of_contact = n < conversations;
        if first_of_contact || rng.random_bool(0.6) {
            let body = inbound(c, &format!("wamid.in.{seed}.{n}"), ts, &mut rng);
            items.push(HistoryItem::Delivery(delivery, Delivery::parse(&body)));
        } else {
            let id = store.allocate_message_id();
            let wamid = format!("wamid.out.{seed}.{n}");
            items.push(HistoryItem::Outbound {
                new: Box::new(outbound(c, id, &mut rng)),
                at_ms: ts * 1000,
                wamid: wamid.clone(),
            });
            let recipient = c.phone.clone().or(c.bsuid.clone()).unwrap();
            items.push(HistoryItem::Delivery(
                delivery,
                Delivery::parse(&statuses(&wamid, ts, &recipient, &mut rng)),
            ));
        }
        if items.len() >= BATCH || n + 1 == picks.len() {
            let t = Instant::now();
            store.import_history(&items).expect("history is written");
            // The search indexer's work (the daemon does it in the background), counted in.
            while store.index_pending(walua::store::inbox::INDEX_BATCH).expect("indexed")
                == walua::store::inbox::INDEX_BATCH
            {}
            in_store += t.elapsed();
            items.clear();
            if log && (n + 1) % 100_000 < BATCH {
                eprintln!("  {:>9} messages, {:.1} s in the store", n + 1, in_store.as_secs_f64());
            }
        }
    }
    store.probe_writable().expect("durable");
    in_store
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p99 = percentile(&ms, 0.99);
    println!(
        "{name:<34} n={:<4} p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.95),
        p99,
        ms.last().unwrap()
    );
    p99
}

struct Client {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Client {
    async fn get(&self, path: &str) -> (f64, String) {
        let t = Instant::now();
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        assert!(status.is_success(), "{path}: {status}");
        (ms, body)
    }

    async fn time(&self, name: &str, paths: &[String]) -> f64 {
        let mut ms = Vec::with_capacity(paths.len());
        for p in paths {
            ms.push(self.get(p).await.0);
        }
        report(name, ms)
    }
}

fn attr_values(html: &str, before: &str) -> Vec<String> {
    html.split(before)
        .skip(1)
        .filter_map(|s| s.split('"').next().map(|v| v.replace("&amp;", "&")))
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let conversations: usize = std::env::var("WALUA_HISTORY_CONVERSATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let messages: usize = std::env::var("WALUA_HISTORY_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join(format!("console_history/{conversations}-{messages}"));
    let store_path = dir.join("walua.redb");
    let done = dir.join("complete");

    // (a) write cost per message, with and without the indexes, on fresh stores.
    for (label, on) in [
        ("without the console indexes", false),
        ("with the console indexes", true),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("w.redb")).unwrap();
        store.set_indexing(on);
        let n = 40_000;
        let took = generate(&store, 4_000, n, 7, false);
        println!(
            "write cost {label:<28} {:>6.1} µs per message ({n} messages, 4,000 conversations, batches of {BATCH})",
            took.as_secs_f64() * 1e6 / n as f64
        );
    }

    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        eprintln!(
            "generating {conversations} conversations, {messages} messages in {}",
            dir.display()
        );
        let store = Store::open(&store_path).unwrap();
        let t = Instant::now();
        let in_store = generate(&store, conversations, messages, 1, true);
        println!(
            "generated {messages} messages in {:.1} s ({:.1} s in store transactions: {:.1} µs per message)",
            t.elapsed().as_secs_f64(),
            in_store.as_secs_f64(),
            in_store.as_secs_f64() * 1e6 / messages as f64
        );
        drop(store);
        std::fs::write(&done, b"").unwrap();
    } else {
        println!("reusing {}", dir.display());
    }
    {
        let store = Store::open(&store_path).unwrap();
        let total = store.message_count().unwrap();
        println!(
            "store {:.1} MB on disk, {total} messages",
            std::fs::metadata(&store_path).unwrap().len() as f64 / 1e6
        );
        for (name, entries, stored, overhead) in store.console_index_sizes().unwrap() {
            println!(
                "  {name:<26} {entries:>9} rows {:>8.1} MB stored + {:>6.1} MB pages/fragments = {:>6.1} bytes per message",
                stored as f64 / 1e6,
                overhead as f64 / 1e6,
                (stored + overhead) as f64 / total as f64
            );
        }
    }

    // The write cost on a store of that size: 20,000 more messages, without then with the
    // indexes, on a copy (the cached store keeps complete indexes).
    {
        let tmp = tempfile::tempdir_in(&dir).unwrap();
        let copy = tmp.path().join("copy.redb");
        std::fs::copy(&store_path, &copy).unwrap();
        let store = Store::open(&copy).unwrap();
        for (label, on, seed) in [
            ("without the console indexes", false, 11),
            ("with the console indexes", true, 12),
        ] {
            store.set_indexing(on);
            let n = 20_000;
            let took = generate(&store, conversations, n, seed, false);
            println!(
                "write cost at scale {label:<28} {:>6.1} µs per message ({n} more messages)",
                took.as_secs_f64() * 1e6 / n as f64
            );
        }
    }

    // (b) the daemon on that store.
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let config_text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_token = "{ADMIN_TOKEN}"

[store]
path = "{store}"

[whatsapp]
phone_number_id = "1234567890"
access_token = "bench-access-token"
app_secret = "bench-app-secret"
verify_token = "bench-verify-token"
dry_run = true

[templates]
dir = "{templates}"

[scripts]
dir = "{scripts}"
"#,
        store = store_path.display(),
        scripts = dir.join("scripts").display(),
        templates = dir.join("templates").display(),
    );
    let config = Config::from_toml(&dir.join("walua.toml"), &config_text).unwrap();
    let d = daemon::BenchDaemon::start(config, ADMIN_TOKEN, "agent", PASSWORD).await;
    let (base, http, cookie) = (d.base.clone(), d.http.clone(), d.cookie.clone());
    let client = Client { http, base, cookie };

    let (_, first) = client.get("/").await;
    let contacts_on_first = attr_values(&first, "li class=\"conv\" data-contact=\"");
    let next = attr_values(&first, "id=\"older\" href=\"");
    assert!(!contacts_on_first.is_empty() && !next.is_empty(), "the inbox has pages");
    let mut rng = StdRng::seed_from_u64(99);
    let n = 200;
    println!("\nroute timings (client side over loopback; release build)");
    let mut worst_inbox: f64 = 0.0;
    worst_inbox = worst_inbox.max(client.time("GET /", &vec!["/".to_string(); n]).await);
    worst_inbox = worst_inbox.max(
        client
            .time(
                "GET /console/inbox (live refresh)",
                &vec!["/console/inbox".to_string(); n],
            )
            .await,
    );
    for f in ["unread", "open", "failed", "handover"] {
        worst_inbox = worst_inbox.max(
            client
                .time(&format!("GET /?f={f}"), &vec![format!("/?f={f}"); 100])
                .await,
        );
    }
    worst_inbox = worst_inbox.max(client.time("GET /?after= (page 2)", &vec![next[0].clone(); 100]).await);
    // Deeper pages: follow the cursor 50 times.
    let mut deep = Vec::new();
    let mut path = next[0].clone();
    for _ in 0..50 {
        let (ms, html) = client.get(&path).await;
        deep.push(ms);
        match attr_values(&html, "id=\"older\" href=\"").first() {
            Some(p) => path = p.clone(),
            None => break,
        }
    }
    worst_inbox = worst_inbox.max(report("GET /?after= (pages 2..51)", deep));

    // Threads of contacts across the history (found by phone through the API, as an agent
    // would from search), and their older pages.
    let mut threads = Vec::new();
    for _ in 0..n {
        let i = rng.random_range(0..conversations);
        let key = if i % 12 == 5 {
            format!("SN.{:020}", 7_000_000_000_000_000_000u64 + i as u64 * 7919)
        } else {
            format!("2217{}{:07}", 6 + i % 3, i)
        };
        threads.push(format!("/c/{}", key));
    }
    let mut worst_thread = client.time("GET /c/X", &threads).await;
    // The busiest conversations (the first contacts: see `generate`) have older pages.
    let mut older = Vec::new();
    for i in (0..conversations).filter(|i| i % 12 != 5).take(20) {
        let (_, html) = client.get(&format!("/c/2217{}{i:07}", 6 + i % 3)).await;
        older.extend(attr_values(&html, "id=\"older-messages\" href=\""));
    }
    if !older.is_empty() {
        let reps: Vec<String> = older.iter().cycle().take(100).cloned().collect();
        worst_thread = worst_thread.max(client.time("GET /c/X?before= (older page)", &reps).await);
    } else {
        println!("(no conversation on the first page has an older page)");
    }

    let phone_prefix = "/?q=%2B221%2076%200001".to_string();
    let searches = [
        ("search a name (Aïssatou Diop)", "/?q=A%C3%AFssatou%20Diop".to_string()),
        ("search a name prefix (mari)", "/?q=mari".to_string()),
        ("search a phone prefix (+221 76 0001)", phone_prefix),
        ("search a username (@awa.diop)", "/?q=%40awa.diop".to_string()),
        ("search a common word (livraison)", "/?q=livraison".to_string()),
        ("search two words (commande prete)", "/?q=commande%20prete".to_string()),
        ("search a rare word (zygomorphe)", format!("/?q={RARE}")),
        ("search nothing (xqzwv)", "/?q=xqzwv".to_string()),
    ];
    let mut worst_search: f64 = 0.0;
    for (name, path) in &searches {
        worst_search = worst_search.max(client.time(name, &vec![path.clone(); 50]).await);
        let (_, html) = client.get(path).await;
        println!(
            "    → {} contacts, {} messages",
            html.matches("class=\"conv found\"").count(),
            html.matches("class=\"hit\"").count()
        );
    }
    println!(
        "\nworst p99: inbox {worst_inbox:.1} ms (target 100), thread {worst_thread:.1} ms (target 100), search {worst_search:.1} ms (target 300)"
    );
    d.stop().await;

    // With WALUA_HISTORY_MIGRATION=1: how long a store of that size written before the
    // indexes takes to migrate at open (on a copy).
    if std::env::var("WALUA_HISTORY_MIGRATION").is_ok_and(|v| v == "1") {
        let tmp = tempfile::tempdir_in(&dir).unwrap();
        let copy = tmp.path().join("old.redb");
        std::fs::copy(&store_path, &copy).unwrap();
        Store::open(&copy).unwrap().strip_console_indexes().unwrap();
        let t = Instant::now();
        drop(Store::open(&copy).unwrap());
        println!(
            "migration at open of {messages} messages, {conversations} conversations: {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
}
