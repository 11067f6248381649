//! Fault injection on the outbound path: a Graph API that fails 30 % of the requests.
//!
//! # What walua guarantees, and what it cannot
//!
//! The Graph API has no idempotency key: a request that Meta accepted but whose answer never
//! reached walua cannot be told apart from one Meta never saw. walua retries 429, 5xx,
//! connection errors and timeouts, so only ONE case can produce a duplicate: a timeout on a
//! request Meta did accept. walua keeps that case rare and visible rather than impossible:
//! `whatsapp.request_timeout` (30 s by default) is far above Meta's answer times, Meta's
//! pair rate limits how fast a recipient could get copies, and every send carries
//! `biz_opaque_callback_data = "walua:<id>"`, so a duplicate shows in the status webhooks
//! with the same callback data. The first test keeps every injected delay under the
//! timeout and asserts exactly once; the second shows the duplicate a too-short timeout
//! makes, as documented.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fake_graph::{FakeGraph, Scripted};
use support::*;

fn callback_id(body: &Value) -> u64 {
    body["biz_opaque_callback_data"]
        .as_str()
        .and_then(|s| s.strip_prefix("walua:"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no walua callback data in {body}"))
}

async fn wait_final(d: &TestDaemon, ids: &[u64], limit: Duration) -> HashMap<u64, Value> {
    let start = Instant::now();
    let mut done = HashMap::new();
    loop {
        for id in ids {
            if done.contains_key(id) {
                continue;
            }
            let (status, m) = d.api(&format!("/api/messages/{id}")).await;
            assert_eq!(status, 200, "{m}");
            if matches!(m["status"].as_str(), Some("sent" | "failed")) {
                done.insert(*id, m);
            }
        }
        if done.len() == ids.len() {
            return done;
        }
        assert!(
            start.elapsed() < limit,
            "{} of {} messages still not final after {limit:?}",
            ids.len() - done.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_failures_every_message_sent_once_or_failed_with_a_reason() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    // Delays (the wamid is issued before the wait) stay well under the 2 s request timeout.
    fake.set_failure_rate(
        0.3,
        vec![
            Scripted::RateLimited,
            Scripted::Status(500),
            Scripted::Delay(Duration::from_millis(200)),
        ],
    );
    let d = TestDaemon::start_live(
        &fake.url(),
        "allow_outside_window = true\nretry_horizon = \"30s\"\nrequest_timeout = \"5s\"",
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..200u64 {
        let to = format!("2217710000{:02}", i % 20);
        let (status, body) = d
            .api_post(
                "/api/messages",
                &json!({"to": to, "type": "text", "text": format!("message {i}")}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_u64().unwrap());
    }
    let finals = wait_final(&d, &ids, Duration::from_secs(60)).await;

    // One accepted request per message at most, and its wamid is the one walua recorded.
    let mut accepted: HashMap<u64, Vec<String>> = HashMap::new();
    for (wamid, body) in fake.accepted() {
        accepted.entry(callback_id(&body)).or_default().push(wamid);
    }
    let (mut sent, mut failed) = (0, 0);
    for id in &ids {
        let m = &finals[id];
        let got = accepted.get(id).cloned().unwrap_or_default();
        match m["status"].as_str().unwrap() {
            "sent" => {
                sent += 1;
                assert_eq!(got.len(), 1, "message {id} accepted {} times: {got:?}", got.len());
                assert_eq!(m["wamid"], got[0], "message {id}");
            }
            _ => {
                failed += 1;
                assert!(got.is_empty(), "failed message {id} was accepted: {got:?}");
                let title = m["error"]["title"].as_str().unwrap_or_default();
                assert!(!title.is_empty(), "failed message {id} has no reason: {m}");
            }
        }
    }
    assert_eq!(sent + failed, ids.len());
    // Every accepted request belongs to one of our messages (none sent that walua forgot).
    assert_eq!(accepted.values().map(Vec::len).sum::<usize>(), sent);
    let requests = fake.requests().iter().filter(|r| r.path.ends_with("/messages")).count();
    assert!(requests > ids.len(), "the faults were injected ({requests} requests)");
    eprintln!(
        "faults: {sent} sent, {failed} failed, {requests} requests for {} messages",
        ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_on_a_request_meta_accepted_is_a_visible_duplicate() {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    // Meta accepts, but answers after walua gave up waiting.
    fake.push_response(Scripted::Delay(Duration::from_millis(1500)));
    let d = TestDaemon::start_live(&fake.url(), "allow_outside_window = true\nrequest_timeout = \"300ms\"").await;
    let (status, body) = d
        .api_post(
            "/api/messages",
            &json!({"to": "221771234567", "type": "text", "text": "bonjour"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_u64().unwrap();
    let m = wait_final(&d, &[id], Duration::from_secs(30))
        .await
        .remove(&id)
        .unwrap();
    assert_eq!(m["status"], "sent");
    let accepted = fake.accepted();
    // Two accepted copies, both carrying walua's callback data for the same message: the
    // status webhooks of both will name it, which is how an operator sees the duplicate.
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert!(accepted.iter().all(|(_, b)| callback_id(b) == id));
    assert_eq!(m["wamid"], accepted[1].0, "walua keeps the wamid of the answer it got");
    assert!(
        m["statuses"].as_array().unwrap().iter().any(|s| s["status"] == "retry"),
        "the timeout was retried: {m}"
    );
}
