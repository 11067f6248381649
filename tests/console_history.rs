//! The console on a long history, through the real daemon: the inbox and threads page by
//! cursor (every conversation once, even while messages arrive), unread counts shared by the
//! team, search by name, phone, username and message text (accents folded), and a store
//! written before the console indexes migrated in place to the same inbox.

mod support;

use std::collections::HashSet;

use serde_json::{Value, json};
use support::*;
use walua::store::Store;

const PASSWORD: &str = "baobab-de-Thiès-2026";

/// Meta's envelope around one `messages` change.
fn envelope(value: Value) -> Value {
    let mut v = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "221338601234", "phone_number_id": "1234567890"},
    });
    v.as_object_mut().unwrap().extend(value.as_object().unwrap().clone());
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": v}]}]})
}

/// One delivery with a text from each of `(phone, name, text)`, at `ts`, `ts + 1`…
fn texts(from: &[(String, String, String)], ts: i64, tag: &str) -> Value {
    let contacts: Vec<Value> = from
        .iter()
        .map(|(p, n, _)| json!({"profile": {"name": n}, "wa_id": p}))
        .collect();
    let messages: Vec<Value> = from
        .iter()
        .enumerate()
        .map(|(i, (p, _, t))| {
            json!({"from": p, "id": format!("wamid.{tag}.{i}"), "timestamp": (ts + i as i64).to_string(),
                   "type": "text", "text": {"body": t}})
        })
        .collect();
    envelope(json!({"contacts": contacts, "messages": messages}))
}

/// A signed-in console agent (session cookie).
struct Agent {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Agent {
    async fn sign_in(d: &TestDaemon, name: &str) -> Agent {
        let (status, body) = d
            .api_post(
                "/api/users",
                &json!({"name": name, "role": "agent", "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = http
            .post(d.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("user", name)
                    .append_pair("password", PASSWORD)
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        Agent {
            http,
            base: format!("http://{}", d.addr),
            cookie,
        }
    }

    async fn get(&self, path: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.text().await.unwrap()
    }
}

/// The values of attribute occurrences introduced by `before` (e.g. `data-contact="`).
fn values(html: &str, before: &str) -> Vec<String> {
    html.split(before)
        .skip(1)
        .map(|s| s.split('"').next().unwrap().replace("&amp;", "&"))
        .collect()
}

fn inbox_contacts(html: &str) -> Vec<String> {
    values(html, "<li class=\"conv\" data-contact=\"")
}

fn older_link(html: &str) -> Option<String> {
    values(html, "id=\"older\" href=\"").into_iter().next()
}

/// The unread badge of `contact`'s row, if it has one.
fn unread_of(html: &str, contact: &str) -> Option<String> {
    let row = html.split(&format!("data-contact=\"{contact}\"")).nth(1)?;
    let row = row.split("</li>").next()?;
    let badge = row.split("<span class=\"badge unread\">").nth(1)?;
    Some(badge.split(' ').next()?.to_string())
}

fn phone(i: usize) -> String {
    format!("22177{i:07}")
}

/// `count` conversations, one message each, oldest first (phone(0) is the oldest).
async fn many_conversations(d: &TestDaemon, count: usize) -> i64 {
    let ts = now() - 3600;
    let people: Vec<(String, String, String)> = (0..count)
        .map(|i| (phone(i), format!("Client {i}"), format!("message {i}")))
        .collect();
    d.deliver_ok(&texts(&people, ts, "many")).await;
    d.settled().await;
    ts
}

#[tokio::test]
async fn the_inbox_pages_by_cursor_and_shows_every_conversation_once_while_messages_arrive() {
    let d = TestDaemon::start().await;
    let ts = many_conversations(&d, 230).await;
    let agent = Agent::sign_in(&d, "awa").await;

    let first = agent.get("/").await;
    let mut pages = vec![inbox_contacts(&first)];
    assert_eq!(pages[0].len(), 100, "a page holds 100 conversations");
    assert_eq!(pages[0][0], phone(229), "most recent first");
    let mut next = older_link(&first).expect("a link to older conversations");
    assert!(next.starts_with("/?after="), "{next}");

    // While the agent pages: a conversation already seen writes again, one not seen yet
    // writes (it moves to the top), and a new contact writes.
    let movers = vec![
        (phone(200), "Client 200".to_string(), "encore moi".to_string()),
        (phone(50), "Client 50".to_string(), "je remonte".to_string()),
        (phone(999), "Nouveau".to_string(), "bonjour".to_string()),
    ];
    d.deliver_ok(&texts(&movers, ts + 1000, "movers")).await;
    d.settled().await;

    loop {
        let html = agent.get(&next).await;
        pages.push(inbox_contacts(&html));
        match older_link(&html) {
            Some(n) => next = n,
            None => break,
        }
    }
    let paged: Vec<String> = pages.concat();
    let unique: HashSet<&String> = paged.iter().collect();
    assert_eq!(unique.len(), paged.len(), "no conversation twice across pages");
    // Every conversation is on a page, or on the (live) first page now that it moved up.
    let fresh: HashSet<String> = inbox_contacts(&agent.get("/console/inbox").await).into_iter().collect();
    for i in (0..230).chain([999]) {
        assert!(
            unique.contains(&phone(i)) || fresh.contains(&phone(i)),
            "{} is on no page",
            phone(i)
        );
    }
    assert!(
        !unique.contains(&phone(50)),
        "it moved above the cursor before its page was read"
    );
    assert_eq!(
        &inbox_contacts(&agent.get("/console/inbox").await)[..3],
        [phone(999), phone(50), phone(200)],
        "the writers are on top of the first page"
    );

    // The JSON API pages by the same cursor.
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let (status, body) = d.api(&format!("/api/conversations?limit=64{after}")).await;
        assert_eq!(status, 200, "{body}");
        for c in body["conversations"].as_array().unwrap() {
            seen.push(c["contact"].as_str().unwrap().to_string());
        }
        match body["next"].as_str() {
            Some(n) => after = format!("&after={}", url_encode(n)),
            None => break,
        }
    }
    assert_eq!(seen.len(), 231);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 231);
}

fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_thread_pages_back_by_cursor() {
    let d = TestDaemon::start().await;
    let who = phone(1);
    let ts = now() - 3600;
    let mut sent = 0;
    for chunk in 0..3 {
        let batch: Vec<(String, String, String)> = (0..50)
            .map(|i| (who.clone(), "Awa".to_string(), format!("ligne {}", chunk * 50 + i)))
            .collect();
        d.deliver_ok(&texts(&batch, ts + chunk * 100, &format!("t{chunk}")))
            .await;
        sent += batch.len();
    }
    d.settled().await;
    let agent = Agent::sign_in(&d, "awa").await;
    let latest = agent.get(&format!("/c/{who}")).await;
    let mut ids = values(&latest, "data-id=\"");
    assert_eq!(ids.len(), 100, "the latest 100");
    let before = values(&latest, "id=\"older-messages\" href=\"");
    assert_eq!(before.len(), 1, "a link to older messages");
    assert!(latest.contains("data-live="), "the latest page refreshes live");
    let older = agent.get(&before[0]).await;
    assert!(
        !older.contains("data-live="),
        "an older page does not jump to the latest"
    );
    assert!(
        values(&older, "id=\"older-messages\" href=\"").is_empty(),
        "the oldest page"
    );
    let mut all = values(&older, "data-id=\"");
    all.append(&mut ids);
    let numbers: Vec<u64> = all.iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(numbers.len(), sent);
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "every message once, in order");
}

#[tokio::test]
async fn unread_counts_are_shared_by_the_team() {
    let d = TestDaemon::start().await;
    let who = phone(7);
    let three: Vec<(String, String, String)> = (0..3)
        .map(|i| (who.clone(), "Awa".to_string(), format!("question {i}")))
        .collect();
    d.deliver_ok(&texts(&three, now() - 60, "q")).await;
    d.deliver_ok(&texts(
        &[(phone(8), "Ibou".into(), "salut".into())],
        now() - 30,
        "other",
    ))
    .await;
    d.settled().await;
    let awa = Agent::sign_in(&d, "awa").await;
    let ibou = Agent::sign_in(&d, "ibou").await;
    assert_eq!(unread_of(&awa.get("/").await, &who).as_deref(), Some("3"));
    assert_eq!(unread_of(&ibou.get("/").await, &who).as_deref(), Some("3"));
    assert!(inbox_contacts(&ibou.get("/?f=unread").await).contains(&who));

    awa.get(&format!("/c/{who}")).await;
    let inbox = ibou.get("/").await;
    assert_eq!(unread_of(&inbox, &who), None, "read by one agent, read for all");
    assert_eq!(
        unread_of(&inbox, &phone(8)).as_deref(),
        Some("1"),
        "the other one is still unread"
    );
    assert!(!inbox_contacts(&ibou.get("/?f=unread").await).contains(&who));

    d.deliver_ok(&texts(&[(who.clone(), "Awa".into(), "encore".into())], now(), "again"))
        .await;
    d.settled().await;
    assert_eq!(unread_of(&ibou.get("/").await, &who).as_deref(), Some("1"));
}

/// Contacts and messages to search in.
async fn searchable(d: &TestDaemon) {
    let aissatou = json!({
        "contacts": [{"profile": {"name": "Aïssatou Ndiaye"}, "wa_id": "221771112233"}],
        "messages": [{"from": "221771112233", "id": "wamid.s1", "timestamp": (now() - 50).to_string(),
                      "type": "text", "text": {"body": "Réclamation : le colis est arrivé abîmé"}}]
    });
    let moussa = json!({
        "contacts": [{"profile": {"name": "Moussa Fall", "username": "@moussa.shop"}, "user_id": "SN.99887766554433221100"}],
        "messages": [{"from_user_id": "SN.99887766554433221100", "id": "wamid.s2", "timestamp": (now() - 40).to_string(),
                      "type": "image", "image": {"id": "media-1", "mime_type": "image/jpeg", "caption": "Voici la facture de décembre"}}]
    });
    let fatou = json!({
        "contacts": [{"profile": {"name": "Fatou Sow"}, "wa_id": "221765550000"}],
        "messages": [{"from": "221765550000", "id": "wamid.s3", "timestamp": (now() - 30).to_string(),
                      "type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "b1", "title": "Livraison à domicile"}}}]
    });
    for body in [aissatou, moussa, fatou] {
        d.deliver_ok(&envelope(body)).await;
    }
    d.settled().await;
}

/// The contacts and the message ids a search page shows.
fn found(html: &str) -> (Vec<String>, Vec<String>) {
    (
        values(html, "<li class=\"conv found\" data-contact=\""),
        values(html, "<li class=\"hit\" data-contact=\""),
    )
}

#[tokio::test]
async fn search_finds_names_phones_usernames_and_words_and_nothing_else() {
    let d = TestDaemon::start().await;
    searchable(&d).await;
    let agent = Agent::sign_in(&d, "awa").await;
    let bsuid = "SN.99887766554433221100".to_string();
    let search = |q: &str| format!("/?q={}", url_encode(q));

    for (q, contact) in [
        ("aissatou", "221771112233"),
        ("Aïssatou ndia", "221771112233"),
        ("NDIAYE", "221771112233"),
        ("+221 77 111", "221771112233"),
        ("77 111 22 33", "221771112233"),
        ("@moussa", bsuid.as_str()),
        ("moussa.shop", bsuid.as_str()),
        ("SN.998877", bsuid.as_str()),
        ("fatou", "221765550000"),
    ] {
        let (contacts, messages) = found(&agent.get(&search(q)).await);
        assert_eq!(contacts, [contact.to_string()], "contacts for {q:?}");
        assert!(messages.is_empty(), "no message text matches {q:?}: {messages:?}");
    }
    for (q, contact) in [
        ("reclamation", "221771112233"),
        ("Réclamation", "221771112233"),
        ("abime colis", "221771112233"),
        ("decembre", bsuid.as_str()),
        ("factu", bsuid.as_str()),
        ("livraison", "221765550000"),
        ("domicile", "221765550000"),
    ] {
        let (contacts, messages) = found(&agent.get(&search(q)).await);
        assert!(contacts.is_empty(), "no contact matches {q:?}: {contacts:?}");
        assert_eq!(messages, [contact.to_string()], "messages for {q:?}");
    }
    for q in ["zzzz", "colis facture", "+221 70", "aissatou fatou"] {
        let html = agent.get(&search(q)).await;
        assert_eq!(found(&html), (vec![], vec![]), "nothing for {q:?}");
        assert!(html.contains("Aucun résultat."), "{q:?}");
    }

    // A message result opens the thread at that message.
    let html = agent.get(&search("abîmé")).await;
    let href = values(&html, "href=\"/c/221771112233?around=")[0].clone();
    let id = href.split('#').next().unwrap().to_string();
    let thread = agent.get(&format!("/c/221771112233?around={id}")).await;
    assert!(
        thread.contains(&format!("class=\"msg in found\" id=\"m{id}\" data-id=\"{id}\"")),
        "{thread}"
    );

    // The JSON API answers the same.
    let (status, body) = d.api("/api/search?q=reclam").await;
    assert_eq!(status, 200);
    assert_eq!(body["messages"][0]["contact"], "221771112233", "{body}");
    assert!(body["messages"][0]["snippet"].as_str().unwrap().contains("Réclamation"));
    assert_eq!(body["conversations"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_store_from_before_the_indexes_is_migrated_to_the_same_inbox() {
    let d = TestDaemon::start().await;
    many_conversations(&d, 120).await;
    searchable(&d).await;
    let agent = Agent::sign_in(&d, "awa").await;
    agent.get(&format!("/c/{}", phone(119))).await;
    d.deliver_ok(&texts(
        &[(phone(119), "Client 119".into(), "re".into())],
        now(),
        "after-read",
    ))
    .await;
    d.settled().await;
    let before_pages = (agent.get("/").await, agent.get("/?f=unread").await);
    let summary = |html: &str| -> Vec<(String, Option<String>)> {
        inbox_contacts(html)
            .into_iter()
            .map(|c| {
                let u = unread_of(html, &c);
                (c, u)
            })
            .collect()
    };
    assert_eq!(unread_of(&before_pages.0, &phone(119)).as_deref(), Some("1"));

    let (dir, text) = d.stop().await;
    {
        let store = Store::open(&dir.path().join("walua.redb")).unwrap();
        store.strip_console_indexes().unwrap();
    }
    let d = TestDaemon::start_in(dir, text).await;
    let agent = Agent::sign_in(&d, "ibou").await;
    let after = (agent.get("/").await, agent.get("/?f=unread").await);
    assert_eq!(summary(&after.0), summary(&before_pages.0), "the same inbox");
    assert_eq!(summary(&after.1), summary(&before_pages.1), "the same unread filter");
    assert_eq!(older_link(&after.0).is_some(), older_link(&before_pages.0).is_some());
    let (contacts, messages) = found(&agent.get("/?q=reclamation").await);
    assert_eq!((contacts.len(), messages.len()), (0, 1), "message words indexed again");
    let (contacts, _) = found(&agent.get("/?q=moussa").await);
    assert_eq!(contacts.len(), 1, "contact words indexed again");
}

/// The search indexer follows the store in the background: a message is found shortly after
/// it arrives, without waiting for anything but the search itself.
#[tokio::test]
async fn search_finds_a_message_shortly_after_it_arrives() {
    let d = TestDaemon::start().await;
    let t0 = std::time::Instant::now();
    d.deliver_ok(&texts(
        &[(phone(3), "Client 3".into(), "Le boubou brodé est prêt".into())],
        now(),
        "fresh",
    ))
    .await;
    let hits = d
        .eventually("the new message found by search", || async {
            let (_, body) = d.api("/api/search?q=brode").await;
            let hits = body["messages"].as_array().cloned().unwrap_or_default();
            (!hits.is_empty()).then_some(hits)
        })
        .await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["contact"], phone(3));
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(3),
        "searchable {:?} after the delivery",
        t0.elapsed()
    );
    let (_, h) = d.api("/healthz").await;
    assert_eq!(h["search_backlog"], 0, "{h}");
}

/// A message stored just before a crash, its words not indexed yet (its text waits in the
/// search queue, committed with the message), is indexed when walua starts again.
#[tokio::test]
async fn a_message_stored_before_a_crash_is_indexed_at_the_next_start() {
    use walua::store::inbox::HistoryItem;
    use walua::webhook::payload::Delivery;

    let d = TestDaemon::start().await;
    let (dir, text) = d.stop().await;
    {
        // What a crash right after the delivery's commit leaves: the message stored and its
        // text queued, the indexer never run.
        let store = Store::open(&dir.path().join("walua.redb")).unwrap();
        let body = texts(
            &[(
                phone(4),
                "Client 4".into(),
                "Commande de thiéboudienne pour samedi".into(),
            )],
            now(),
            "crash",
        );
        store
            .import_history(&[HistoryItem::Delivery(1, Delivery::parse(&body))])
            .unwrap();
        store.probe_writable().unwrap();
        assert_eq!(store.search_backlog().unwrap(), 1, "queued, not indexed");
        assert!(store.search("thieboudienne", 10).unwrap().messages.is_empty());
    }
    let d = TestDaemon::start_in(dir, text).await;
    d.eventually("the queued message indexed after the restart", || async {
        let (_, body) = d.api("/api/search?q=thieboudienne").await;
        (body["messages"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;
    let (_, h) = d.api("/healthz").await;
    assert_eq!(h["search_backlog"], 0, "{h}");
}
