//! The console in a real browser: headless Chromium driven through WebDriver (Debian's
//! `chromium` and `chromium-driver`) against the real daemon and the fake Graph API.
//!
//! Without chromedriver the tests say so and pass, unless `WALUA_REQUIRE_BROWSER=1` (set by
//! `.ci/run`), which makes them fail.

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::time::Duration;

use browser::*;
use fantoccini::Locator;
use serde_json::json;
use support::fake_graph::FakeGraph;
use support::*;

const AWA: &str = "221771234567";

/// A live shop: the fake Graph API, a bot that answers every text, and two accounts.
async fn shop() -> (FakeGraph, TestDaemon) {
    let fake = FakeGraph::start(ACCESS_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    put_script(
        dir.path(),
        "on_message.lua",
        r#"return { run = function(msg) env.whatsapp.send_text(msg.from, "Bot : bien reçu") end }"#,
    );
    let text = config_text(dir.path(), &live_whatsapp(&fake.url(), ""), "");
    let d = TestDaemon::start_in(dir, text).await;
    for (name, role) in [("fatou", "agent"), ("moussa", "viewer")] {
        let (status, body) = d
            .api_post("/api/users", &json!({"name": name, "role": role, "password": PASSWORD}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    (fake, d)
}

#[tokio::test]
async fn an_agent_signs_in_sees_a_message_arrive_live_answers_it_and_sees_the_tick_move() {
    let Some(driver) = chromedriver() else { return };
    let (fake, d) = shop().await;
    let c = browser(&driver).await;
    sign_in(&c, &d, "fatou").await;

    // A customer writes: the conversation appears without a reload.
    d.deliver_ok(&text_delivery(
        AWA,
        "wamid.IN1",
        "Bonjour, ma commande est prête ?",
        now(),
    ))
    .await;
    // (its last message is the bot's answer, which came at once)
    wait_for(
        &c,
        "the new conversation",
        "#inbox li.conv[data-contact='221771234567']",
    )
    .await;
    wait_text(&c, "the unread badge", "#inbox .badge.unread", "1").await;

    // Open it: the thread shows the message and what the bot did.
    click_live(&c, "the conversation", "#inbox li.conv a").await;
    wait_text(&c, "the message", "#messages", "ma commande est prête").await;
    wait_text(&c, "the script outcome", "#messages .script", "on_message").await;

    // Answer it.
    c.find(Locator::Id("reply"))
        .await
        .unwrap()
        .send_keys("Oui, elle vous attend au magasin.")
        .await
        .unwrap();
    c.find(Locator::Id("send")).await.unwrap().click().await.unwrap();
    let sent = fake.wait_for_accepted(2, Duration::from_secs(10)).await;
    let (wamid, _) = sent
        .iter()
        .find(|(_, b)| b["text"]["body"] == "Oui, elle vous attend au magasin.")
        .expect("the agent's reply reached the Graph API")
        .clone();
    wait_text(&c, "the reply in the thread", "#messages", "elle vous attend").await;

    // Meta says delivered, then read: the tick moves without a reload.
    d.deliver_ok(&status_delivery(&wamid, "delivered", now())).await;
    wait_for(&c, "the delivered tick", ".msg.out [data-status=\"delivered\"]").await;
    d.deliver_ok(&status_delivery(&wamid, "read", now())).await;
    wait_for(&c, "the read tick", ".msg.out [data-status=\"read\"]").await;
    // What it looks like on a phone (412 px wide), for whoever changes the pages.
    if let Ok(png) = c.screenshot().await {
        let _ = std::fs::write(std::env::temp_dir().join("walua-console-thread.png"), png);
    }
    c.close().await.unwrap();
}

#[tokio::test]
async fn taking_over_keeps_the_bot_quiet_and_giving_back_lets_it_answer_again() {
    let Some(driver) = chromedriver() else { return };
    let (fake, d) = shop().await;
    d.deliver_ok(&text_delivery(AWA, "wamid.H1", "Bonjour", now())).await;
    fake.wait_for_accepted(1, Duration::from_secs(10)).await;
    let c = browser(&driver).await;
    sign_in(&c, &d, "fatou").await;
    c.goto(&d.url(&format!("/c/{AWA}"))).await.unwrap();
    wait_for(&c, "the take-over button", "#take-over")
        .await
        .click()
        .await
        .unwrap();
    wait_text(&c, "the handover notice", "#handover", "fatou").await;

    d.deliver_ok(&text_delivery(AWA, "wamid.H2", "Je voudrais parler à quelqu'un", now()))
        .await;
    wait_text(&c, "the customer's message", "#messages", "parler à quelqu'un").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(fake.accepted_count(), 1, "the bot stayed quiet during the handover");

    wait_for(&c, "the give-back button", "#give-back")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&c, "the take-over button again", "#take-over").await;
    d.deliver_ok(&text_delivery(AWA, "wamid.H3", "Merci", now())).await;
    let sent = fake.wait_for_accepted(2, Duration::from_secs(10)).await;
    assert_eq!(sent[1].1["text"]["body"], "Bot : bien reçu", "the bot answers again");
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_viewer_cannot_send_in_the_page_nor_around_it() {
    let Some(driver) = chromedriver() else { return };
    let (fake, d) = shop().await;
    d.deliver_ok(&text_delivery(AWA, "wamid.V1", "Bonjour", now())).await;
    fake.wait_for_accepted(1, Duration::from_secs(10)).await;
    let c = browser(&driver).await;
    sign_in(&c, &d, "moussa").await;
    c.goto(&d.url(&format!("/c/{AWA}"))).await.unwrap();
    wait_text(&c, "the read-only notice", "main", "Lecture seule").await;
    assert!(c.find(Locator::Id("reply")).await.is_err(), "no reply box for a viewer");
    assert!(
        c.find(Locator::Id("take-over")).await.is_err(),
        "no take-over for a viewer"
    );

    // Posting the form by hand, with the viewer's own session and CSRF token, is refused.
    let posted: serde_json::Value = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               const csrf = document.querySelector('input[name=csrf]').value;
               fetch('/c/221771234567/reply', {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'},
                     body: 'csrf=' + encodeURIComponent(csrf) + '&text=pirate', redirect: 'manual'})
                 .then(r => done(r.status));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(posted, json!(403));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.accepted_count(), 1, "nothing sent");
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_customers_script_tag_is_shown_as_text() {
    let Some(driver) = chromedriver() else { return };
    let (_fake, d) = shop().await;
    let attack = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">";
    d.deliver_ok(&text_delivery(AWA, "wamid.X1", attack, now())).await;
    d.settled().await;
    let c = browser(&driver).await;
    sign_in(&c, &d, "fatou").await;
    wait_for(&c, "the conversation", "#inbox li.conv").await;
    c.goto(&d.url(&format!("/c/{AWA}"))).await.unwrap();
    wait_text(
        &c,
        "the message as text",
        "#messages",
        "<script>document.title='pwned'</script>",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_ne!(c.title().await.unwrap(), "pwned");
    assert!(c.find(Locator::Css("#messages script, #messages img")).await.is_err());
    c.close().await.unwrap();
}

#[tokio::test]
async fn pages_carry_a_content_security_policy_and_need_a_session() {
    let (_fake, d) = shop().await;
    let r = d.http.get(d.url("/")).send().await.unwrap();
    assert_eq!(r.url().path(), "/login", "redirected to sign in");
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let r = d
        .http
        .post(d.url(&format!("/c/{AWA}/reply")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("text=hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = d
        .http
        .post(d.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("user=fatou&password=wrong+password%21")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Identifiant ou mot de passe incorrect")
    );
}
