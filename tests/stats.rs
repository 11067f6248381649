//! Analytics through the real daemon. A day at a shop with two numbers (Dakar and Thiès):
//! customers write, the bot and an agent answer, templates go out through the API, one send
//! fails at Meta and one after it, and Meta's status webhooks bring deliveries, reads and
//! prices. `GET /api/stats`, `walua stats` and `/metrics` give exact figures for it, per day,
//! number, template and script; a store from before the statistics gets them at start (and
//! again for another time zone); bad queries are refused with the reason; and the console's
//! statistics page charts a month of traffic in a real browser (screenshots in
//! docs/screenshots/).

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use support::fake_graph::{FakeGraph, Scripted};
use support::*;

const DAKAR: &str = "1111111111";
const THIES: &str = "2222222222";
const DAKAR_TOKEN: &str = "token-dakar-7f3a";
const THIES_TOKEN: &str = "token-thies-91c2";

const AWA: &str = "221771234567";
const BINTA: &str = "221779876543";
const COUMBA: &str = "221770000003";

/// The bot greets whoever says "bonjour", and leaves everything else to people.
const BOT: &str = r#"
return {
  run = function(msg)
    if msg.text == "bonjour" then
      env.whatsapp.send_text(msg.from, "Bonjour ! Que puis-je faire pour vous ?")
    end
  end,
}
"#;

/// The configuration of the shop: two numbers, days in Dakar's time (UTC, no summer time).
fn shop_config(dir: &std::path::Path, fake: &FakeGraph, timezone: &str) -> String {
    let accounts = format!(
        r#"
[[whatsapp.accounts]]
name = "dakar"
phone_number_id = "{DAKAR}"
access_token = "{DAKAR_TOKEN}"

[[whatsapp.accounts]]
name = "thies"
phone_number_id = "{THIES}"
access_token = "{THIES_TOKEN}"
"#
    );
    config_text(dir, &live_whatsapp(&fake.url(), ""), &accounts)
        .replace("phone_number_id = \"1234567890\"\n", "")
        .replace(&format!("access_token = \"{ACCESS_TOKEN}\"\n"), "")
        .replace("[scripts]\n", &format!("[scripts]\ntimezone = \"{timezone}\"\n"))
}

/// Meta's envelope around one `messages` change to business number `number`.
fn to_number(number: &str, fields: Value) -> Value {
    let mut value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "221338601234", "phone_number_id": number},
    });
    value
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]})
}

/// A customer's text to `number`, sent at `ts`.
fn text(number: &str, from: &str, name: &str, wamid: &str, body: &str, ts: i64) -> Value {
    to_number(
        number,
        json!({
            "contacts": [{"profile": {"name": name}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": ts.to_string(), "type": "text", "text": {"body": body}}]
        }),
    )
}

fn free_service() -> Value {
    json!({"billable": false, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"})
}

fn marketing() -> Value {
    json!({"billable": true, "pricing_model": "PMP", "category": "marketing", "type": "regular"})
}

/// A status webhook about `wamid`, sent through `number`, with Meta's `pricing` object.
fn status_webhook(number: &str, wamid: &str, status: &str, recipient: &str, pricing: Option<Value>) -> Value {
    let mut s = json!({"id": wamid, "status": status, "timestamp": now().to_string(), "recipient_id": recipient});
    if let Some(p) = pricing {
        s["pricing"] = p;
    }
    if status == "failed" {
        s["errors"] = json!([{"code": 131026, "title": "Message undeliverable"}]);
    }
    to_number(number, json!({ "statuses": [s] }))
}

/// A signed-in console agent, answering from the thread page's form.
struct Agent {
    http: reqwest::Client,
    cookie: String,
}

impl Agent {
    async fn sign_in(d: &TestDaemon, name: &str) -> Agent {
        let (status, body) = d
            .api_post(
                "/api/users",
                &json!({"name": name, "role": "agent", "password": browser::PASSWORD}),
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
                    .append_pair("password", browser::PASSWORD)
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
        Agent { http, cookie }
    }

    async fn get(&self, d: &TestDaemon, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(d.url(path))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn reply(&self, d: &TestDaemon, contact: &str, text: &str) {
        let (_, page) = self.get(d, &format!("/c/{contact}")).await;
        let csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("the thread page carries its form token")
            .to_string();
        let r = self
            .http
            .post(d.url(&format!("/c/{contact}/reply")))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("csrf", &csrf)
                    .append_pair("text", text)
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "the reply is accepted");
    }
}

/// What happened during the shop's day, as the store recorded it.
struct Day {
    fake: FakeGraph,
    d: TestDaemon,
    /// Every message of the day, as `GET /api/conversations/{contact}/messages` shows it.
    messages: Vec<Value>,
    /// The day (UTC: Dakar's time) of the oldest message.
    first_day: chrono::NaiveDate,
}

fn day_of(ts: i64) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp(ts, 0).unwrap().date_naive()
}

async fn sent_to(d: &TestDaemon, contact: &str, n: usize) -> Vec<Value> {
    d.eventually(&format!("{n} send(s) to {contact} answered"), || async {
        let out = d.outbound_of(contact).await;
        (out.len() >= n && out.iter().all(|m| m["status"] != "queued" && m["status"] != "sending")).then_some(out)
    })
    .await
}

/// The shop's day:
/// 1. Awa wrote three days ago ("ancien": nobody answered), and again ten minutes ago
///    ("bonjour"): the bot greets her from Dakar.
/// 2. Coumba says "bonjour" to the Thiès number two minutes ago: the bot greets her from Thiès.
/// 3. The shop's integration sends Binta the `order_ready` template (a marketing message,
///    so a business-started conversation); Binta answers "humain" and the agent Fatou replies
///    from the console.
/// 4. The integration sends Awa the `invoice_ready` template, which Meta refuses (131009).
/// 5. Meta reports: the bot's greeting to Awa delivered and read (free: service), the template
///    to Binta delivered and read (billed: marketing), Fatou's reply delivered (free), and the
///    greeting to Coumba failed (131026).
async fn shop_day(timezone: &str) -> Day {
    let fake = FakeGraph::start(DAKAR_TOKEN).await;
    fake.add_number(THIES, THIES_TOKEN);
    let dir = tempfile::tempdir().unwrap();
    put_script(dir.path(), "on_message.lua", BOT);
    let text_ = shop_config(dir.path(), &fake, timezone);
    let d = TestDaemon::start_in(dir, text_).await;
    let t = now();

    d.deliver_ok(&text(DAKAR, AWA, "Awa Diop", "wamid.awa.old", "ancien", t - 3 * 86_400))
        .await;
    d.deliver_ok(&text(DAKAR, AWA, "Awa Diop", "wamid.awa.1", "bonjour", t - 600))
        .await;
    d.deliver_ok(&text(THIES, COUMBA, "Coumba Sow", "wamid.coumba.1", "bonjour", t - 120))
        .await;
    let greeting_awa = sent_to(&d, AWA, 1).await.remove(0);
    let greeting_coumba = sent_to(&d, COUMBA, 1).await.remove(0);

    let (status, sent) = d
        .api_post(
            "/api/messages",
            &json!({"to": BINTA, "type": "template", "name": "order_ready", "lang": "fr"}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let template_binta = d.wait_status(&sent["id"], "sent").await;
    d.deliver_ok(&text(DAKAR, BINTA, "Binta Fall", "wamid.binta.1", "humain", t))
        .await;
    d.settled().await;
    let fatou = Agent::sign_in(&d, "fatou").await;
    fatou.reply(&d, BINTA, "Bonjour Binta, je m'en occupe.").await;
    let reply_binta = sent_to(&d, BINTA, 2).await.remove(1);
    assert_eq!(reply_binta["origin"], "console:fatou");

    fake.push_response(Scripted::MetaError {
        http: 400,
        code: 131009,
        message: "(#131009) Parameter value is not valid".into(),
        details: "template invoice_ready does not exist in fr".into(),
    });
    let (status, sent) = d
        .api_post(
            "/api/messages",
            &json!({"to": AWA, "type": "template", "name": "invoice_ready", "lang": "fr"}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    d.wait_status(&sent["id"], "failed").await;

    let wamid = |m: &Value| m["wamid"].as_str().unwrap().to_string();
    for s in [
        status_webhook(DAKAR, &wamid(&greeting_awa), "delivered", AWA, Some(free_service())),
        status_webhook(DAKAR, &wamid(&greeting_awa), "read", AWA, Some(free_service())),
        status_webhook(DAKAR, &wamid(&template_binta), "delivered", BINTA, Some(marketing())),
        status_webhook(DAKAR, &wamid(&template_binta), "read", BINTA, Some(marketing())),
        status_webhook(DAKAR, &wamid(&reply_binta), "delivered", BINTA, Some(free_service())),
        status_webhook(THIES, &wamid(&greeting_coumba), "failed", COUMBA, None),
    ] {
        d.deliver_ok(&s).await;
    }
    d.settled().await;
    d.wait_status(&greeting_coumba["id"], "failed").await;
    d.wait_status(&reply_binta["id"], "delivered").await;

    let mut messages = Vec::new();
    for c in [AWA, BINTA, COUMBA] {
        messages.extend(d.messages_of(c).await);
    }
    assert_eq!(messages.len(), 9, "4 inbound, 5 outbound");
    Day {
        fake,
        d,
        messages,
        first_day: day_of(t - 3 * 86_400),
    }
}

impl Day {
    /// `GET /api/stats` from the first day to tomorrow (the day may end during the test).
    async fn stats(&self, group_by: &str) -> Value {
        let to = day_of(now()) + chrono::Days::new(1);
        let (status, body) = self
            .d
            .api(&format!(
                "/api/stats?from={}&to={to}&group_by={group_by}",
                self.first_day
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    fn outbound(&self, origin_prefix: &str) -> Vec<&Value> {
        self.messages
            .iter()
            .filter(|m| m["direction"] == "outbound" && m["origin"].as_str().unwrap().starts_with(origin_prefix))
            .collect()
    }

    fn inbound(&self, wamid: &str) -> &Value {
        self.messages.iter().find(|m| m["wamid"] == wamid).unwrap()
    }

    /// Seconds between a customer's message and the answer, as walua recorded both.
    fn waited(&self, wamid: &str, answer: &Value) -> i64 {
        answer["timestamp"].as_i64().unwrap() - self.inbound(wamid)["timestamp"].as_i64().unwrap()
    }
}

fn group<'a>(stats: &'a Value, key: &str) -> &'a Value {
    stats["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key)
        .unwrap_or_else(|| panic!("no group {key} in {stats:#}"))
}

#[tokio::test]
async fn a_day_at_the_shop_gives_exact_figures_per_day_number_template_and_script() {
    let day = shop_day("Africa/Dakar").await;
    let bot = day.outbound("script:");
    assert_eq!(bot.len(), 2);
    let (to_awa, to_coumba) = if bot[0]["to"] == AWA {
        (bot[0], bot[1])
    } else {
        (bot[1], bot[0])
    };
    let bot_awa = day.waited("wamid.awa.1", to_awa);
    let bot_coumba = day.waited("wamid.coumba.1", to_coumba);
    let human = day.waited("wamid.binta.1", day.outbound("console:")[0]);
    assert!(
        (600..700).contains(&bot_awa) && (120..220).contains(&bot_coumba),
        "{bot_awa} {bot_coumba}"
    );
    let bucket = |s: i64| walua::store::stats::response_bucket(s as u32);

    let stats = day.stats("day").await;
    assert_eq!(stats["timezone"], "Africa/Dakar");
    assert_eq!(stats["complete"], true, "counted before answering: {stats}");
    let totals = &stats["totals"];
    let expected = json!({
        "messages_in": 4,
        "messages_out": 5,
        "out_by_sender": {"bot": 2, "human": 1, "integration": 2, "campaign": 0, "notification": 0, "other": 0},
        "attempted": 5,
        "delivered": 3,
        "read": 2,
        "failed": 2,
        "delivery_rate": 0.6,
        "read_rate": 0.6667,
        "failure_rate": 0.4,
        "failures": [{"code": 131009, "count": 1}, {"code": 131026, "count": 1}],
        "first_response": {
            "bot": {
                "count": 2,
                "mean_s": (bot_awa + bot_coumba) as f64 / 2.0,
                "median_s": bucket(bot_awa.min(bot_coumba)),
                "p90_s": bucket(bot_awa.max(bot_coumba)),
            },
            "human": {"count": 1, "mean_s": human as f64, "median_s": bucket(human), "p90_s": bucket(human)},
            "integration": {"count": 0, "mean_s": null, "median_s": null, "p90_s": null},
        },
        // Awa three days ago and again today, Coumba; the template opened Binta's.
        "conversations": {"started_by_customer": 3, "started_by_business": 1},
        "billable": {"marketing": 1},
        "free": {"service": 2},
        "billable_total": 1,
    });
    assert_eq!(totals, &expected, "{totals:#}");

    // Every day of the range is a group; each message counts on its own day.
    let mut per_day: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for m in &day.messages {
        let e = per_day
            .entry(day_of(m["timestamp"].as_i64().unwrap()).to_string())
            .or_default();
        if m["direction"] == "inbound" {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    let groups = stats["groups"].as_array().unwrap();
    assert!(groups.len() >= 5, "{} days", groups.len());
    assert_eq!(groups[0]["key"], day.first_day.to_string());
    assert_eq!(
        (groups[0]["messages_in"].clone(), groups[0]["messages_out"].clone()),
        (json!(1), json!(0))
    );
    for g in groups {
        let (i, o) = per_day.get(g["key"].as_str().unwrap()).copied().unwrap_or_default();
        assert_eq!(
            (g["messages_in"].as_i64(), g["messages_out"].as_i64()),
            (Some(i), Some(o)),
            "{g}"
        );
    }
    let summed: i64 = groups
        .iter()
        .map(|g| g["conversations"]["started_by_customer"].as_i64().unwrap())
        .sum();
    assert_eq!(summed, 3);

    // Per number: Dakar had Awa and Binta, Thiès had Coumba.
    let numbers = day.stats("number").await;
    assert_eq!(numbers["groups"].as_array().unwrap().len(), 2);
    let dakar = group(&numbers, DAKAR);
    assert_eq!(
        (
            &dakar["messages_in"],
            &dakar["messages_out"],
            &dakar["attempted"],
            &dakar["delivered"],
            &dakar["read"],
            &dakar["failed"]
        ),
        (&json!(3), &json!(4), &json!(4), &json!(3), &json!(2), &json!(1))
    );
    assert_eq!(dakar["failures"], json!([{"code": 131009, "count": 1}]));
    assert_eq!(dakar["first_response"]["bot"]["count"], 1);
    assert_eq!(dakar["first_response"]["bot"]["median_s"], bucket(bot_awa));
    assert_eq!(dakar["first_response"]["human"]["count"], 1);
    assert_eq!(dakar["delivery_rate"], 0.75);
    let thies = group(&numbers, THIES);
    assert_eq!(
        (
            &thies["messages_in"],
            &thies["messages_out"],
            &thies["delivered"],
            &thies["failed"]
        ),
        (&json!(1), &json!(1), &json!(0), &json!(1))
    );
    assert_eq!(thies["failures"], json!([{"code": 131026, "count": 1}]));
    assert_eq!(thies["first_response"]["bot"]["mean_s"], bot_coumba as f64);
    assert_eq!(thies["conversations"]["started_by_customer"], 1);
    assert_eq!(
        numbers["totals"], stats["totals"],
        "the totals do not depend on the grouping"
    );

    // Per template: only template sends.
    let templates = day.stats("template").await;
    let keys: Vec<&str> = templates["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["invoice_ready", "order_ready"], "same volume: by name");
    let order_ready = group(&templates, "order_ready");
    assert_eq!(
        (
            &order_ready["messages_out"],
            &order_ready["delivered"],
            &order_ready["read"],
            &order_ready["billable"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!({"marketing": 1}))
    );
    assert_eq!(order_ready["conversations"]["started_by_business"], 1);
    let invoice_ready = group(&templates, "invoice_ready");
    assert_eq!(
        (&invoice_ready["failed"], &invoice_ready["failure_rate"]),
        (&json!(1), &json!(1.0))
    );
    assert_eq!(invoice_ready["out_by_sender"]["integration"], 1);

    // Per script: the bot's two greetings, one read, one failed.
    let scripts = day.stats("script").await;
    let script = to_awa["origin"].as_str().unwrap().strip_prefix("script:").unwrap();
    assert_eq!(scripts["groups"].as_array().unwrap().len(), 1);
    let g = group(&scripts, script);
    assert_eq!(
        (
            &g["messages_out"],
            &g["delivered"],
            &g["read"],
            &g["failed"],
            &g["first_response"]["bot"]["count"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(1), &json!(2))
    );
    // No campaign sent anything.
    assert_eq!(day.stats("campaign").await["groups"], json!([]));

    // Weeks and months hold the same messages.
    for by in ["week", "month"] {
        let s = day.stats(by).await;
        let sum: i64 = s["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["messages_in"].as_i64().unwrap())
            .sum();
        assert_eq!(sum, 4, "{by}");
    }
    drop(day.fake);
}

#[tokio::test]
async fn walua_stats_prints_the_figures_and_metrics_count_statuses_and_sends_per_number() {
    let day = shop_day("Africa/Dakar").await;
    let from = day.first_day.to_string();
    let to = (day_of(now()) + chrono::Days::new(1)).to_string();
    let (ok, out) = day
        .d
        .cli(&["stats", "--from", &from, "--to", &to, "--group-by", "number"])
        .await;
    assert!(ok, "{out}");
    let line = |start: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in\n{out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert!(
        out.starts_with(&format!("{from} → {to} (Africa/Dakar), by number")),
        "{out}"
    );
    assert_eq!(line("messages in"), ["messages", "in", "4"]);
    assert_eq!(
        line("messages out"),
        ["messages", "out", "5", "(bot", "2,", "human", "1,", "integration", "2)"]
    );
    assert_eq!(
        line("delivered"),
        ["delivered", "3", "of", "5", "attempted", "(60.0", "%)"]
    );
    assert_eq!(
        line("conversations"),
        [
            "conversations",
            "started",
            "by",
            "customers",
            "3,",
            "by",
            "the",
            "business",
            "1"
        ]
    );
    assert_eq!(line("billable"), ["billable", "marketing", "1"]);
    // NUMBER IN OUT DELIVERED READ FAILED …
    assert_eq!(
        line(DAKAR)[..9],
        [DAKAR, "3", "4", "75.0", "%", "66.7", "%", "25.0", "%"].map(String::from)
    );
    assert_eq!(
        line(THIES)[..8],
        [THIES, "1", "1", "0.0", "%", "-", "100.0", "%"].map(String::from)
    );
    assert_eq!(line("131009")[..2], ["131009", "1"].map(String::from));
    assert_eq!(line("service"), ["service", "0", "2"]);

    // A bad range through the CLI: the daemon's reason, exit 1.
    let (ok, out) = day.d.cli(&["stats", "--from", &to, "--to", &from]).await;
    assert!(!ok);
    assert!(
        out.contains(&format!("walua answered 400: `from` ({to}) is after `to` ({from})")),
        "{out}"
    );

    let metrics = metrics_at(&day.d.http, &day.d.url("")).await;
    for (series, value) in [
        (
            format!("walua_status_webhooks_total{{status=\"delivered\",number=\"{DAKAR}\"}}"),
            3,
        ),
        (
            format!("walua_status_webhooks_total{{status=\"read\",number=\"{DAKAR}\"}}"),
            2,
        ),
        (
            format!("walua_status_webhooks_total{{status=\"failed\",number=\"{THIES}\"}}"),
            1,
        ),
        (
            format!("walua_messages_out_total{{type=\"text\",status=\"sent\",number=\"{THIES}\"}}"),
            1,
        ),
        (
            format!("walua_messages_out_total{{type=\"text\",status=\"sent\",number=\"{DAKAR}\"}}"),
            2,
        ),
        (
            format!("walua_messages_out_total{{type=\"template\",status=\"sent\",number=\"{DAKAR}\"}}"),
            1,
        ),
        (
            format!("walua_messages_out_total{{type=\"template\",status=\"failed\",number=\"{DAKAR}\"}}"),
            1,
        ),
    ] {
        let line = format!("{series} {value}");
        assert!(metrics.lines().any(|l| l == line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_store_from_before_the_statistics_gets_them_at_start_and_again_for_another_time_zone() {
    let day = shop_day("Africa/Dakar").await;
    let mut before = BTreeMap::new();
    for by in ["day", "number", "template", "script"] {
        before.insert(by, day.stats(by).await);
    }
    let Day {
        fake,
        d,
        messages,
        first_day,
    } = day;
    let (dir, text_) = d.stop().await;
    {
        let store = walua::store::Store::open(&dir.path().join("walua.redb")).unwrap();
        store.strip_stats().unwrap();
        let progress = store.stats_progress(chrono_tz::Africa::Dakar).unwrap();
        assert!(progress.backfill.is_some(), "no statistics any more: {progress:?}");
    }
    let d = TestDaemon::start_in(dir, text_.clone()).await;
    let day = Day {
        fake,
        d,
        messages,
        first_day,
    };
    for (by, was) in &before {
        let now = day
            .d
            .eventually("the statistics rebuilt", || async {
                let s = day.stats(by).await;
                (s["complete"] == true).then_some(s)
            })
            .await;
        assert_eq!(&now, was, "group_by={by}");
    }

    // Days in New York: the aggregates are rebuilt for the new zone; nothing is lost.
    let Day {
        fake,
        d,
        messages,
        first_day,
    } = day;
    let (dir, _) = d.stop().await;
    let d = TestDaemon::start_in(dir, text_.replace("Africa/Dakar", "America/New_York")).await;
    let day = Day {
        fake,
        d,
        messages,
        first_day: first_day - chrono::Days::new(1),
    };
    let ny = day
        .d
        .eventually("the statistics rebuilt for New York", || async {
            let s = day.stats("day").await;
            (s["complete"] == true).then_some(s)
        })
        .await;
    assert_eq!(ny["timezone"], "America/New_York");
    assert_eq!(ny["totals"], before["day"]["totals"]);
    let old = ny["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["messages_in"] == 1 && g["messages_out"] == 0)
        .expect("Awa's old message has a day of its own");
    let ts = day.inbound("wamid.awa.old")["timestamp"].as_i64().unwrap();
    let in_ny = chrono::DateTime::from_timestamp(ts, 0)
        .unwrap()
        .with_timezone(&chrono_tz::America::New_York)
        .date_naive();
    assert_eq!(old["key"], in_ny.to_string());
}

#[tokio::test]
async fn bad_ranges_and_groupings_are_refused_with_the_reason() {
    let d = TestDaemon::start().await;
    for (query, reason) in [
        (
            "from=2026-02-01&to=2026-01-01",
            "`from` (2026-02-01) is after `to` (2026-01-01)",
        ),
        ("from=01/02/2026", "`from`: `01/02/2026` is not a date (YYYY-MM-DD)"),
        ("to=2026-02-30", "`to`: `2026-02-30` is not a date (YYYY-MM-DD)"),
        (
            "group_by=hour",
            "`group_by`: `hour` is not one of day, week, month, template, campaign, script, number",
        ),
        (
            "from=2010-01-01&to=2026-01-01",
            "the range covers 5845 days; at most 3660",
        ),
    ] {
        let (status, body) = d.api(&format!("/api/stats?{query}")).await;
        assert_eq!((status, body["error"].as_str()), (400, Some(reason)), "{query}");
    }
    // Without a range: the last 30 days, by day, every day present and empty.
    let (status, body) = d.api("/api/stats").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["groups"].as_array().unwrap().len(), 30);
    assert_eq!(body["to"], chrono::Utc::now().date_naive().to_string());
    assert_eq!(body["totals"]["messages_in"], 0);
    assert_eq!(body["totals"]["delivery_rate"], Value::Null);
    // The API needs its token.
    let r = d.http.get(d.url("/api/stats")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

/// A month of a shop's traffic written into a store before the daemon starts (as an older
/// walua would have left it): each day customers write, the bot and agents answer, the
/// integration and a campaign send templates, Meta delivers, reads, prices and sometimes fails.
fn a_month_of_traffic(store: &walua::store::Store) {
    use walua::store::inbox::HistoryItem;
    use walua::store::outbox::NewOutbound;
    use walua::webhook::payload::Delivery;
    let today = chrono::Utc::now().date_naive();
    let mut items = Vec::new();
    let mut n = 0u64;
    let mut rng: u64 = 7;
    let mut next = |m: u64| {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (rng >> 33) % m
    };
    for back in (0..30u64).rev() {
        let date = today - chrono::Days::new(back);
        let midnight = date.and_hms_opt(8, 0, 0).unwrap().and_utc().timestamp();
        let customers = 6 + next(10) + if back % 7 < 2 { 0 } else { 6 };
        for c in 0..customers {
            n += 1;
            let phone = format!("2217712{:05}", (n * 37 + c) % 400);
            let ts = midnight + (c as i64) * 1800 + next(900) as i64;
            let body = text(DAKAR, &phone, "Client", &format!("wamid.in.{n}"), "bonjour", ts);
            items.push(HistoryItem::Delivery(n, Delivery::parse(&body)));
            // Stored before the answer gets its id, as in the daemon.
            store.import_history(&items).unwrap();
            items.clear();
            let (origin, delay) = match next(10) {
                0..=5 => ("script:on_message/on_message", 2 + next(20) as i64),
                6..=8 => ("console:fatou", 120 + next(1500) as i64),
                _ => continue,
            };
            let id = store.allocate_message_id();
            let wamid = format!("wamid.out.{n}");
            let body =
                json!({"messaging_product": "whatsapp", "to": phone, "type": "text", "text": {"body": "Bonjour !"}});
            items.push(HistoryItem::Outbound {
                new: Box::new(NewOutbound {
                    id,
                    recipient: phone.clone(),
                    kind: "text".into(),
                    summary: "text: Bonjour !".into(),
                    content: json!({"type": "text", "text": "Bonjour !"}),
                    body,
                    free_form: false,
                    allow_outside_window: true,
                    dry_run: false,
                    origin: origin.into(),
                    reply_to: None,
                    phone_number_id: Some(DAKAR.into()),
                    record: None,
                    chatter_file: None,
                }),
                at_ms: (ts + delay) * 1000,
                wamid: wamid.clone(),
            });
            let failed = next(25) == 0;
            let statuses = if failed {
                json!([{"id": wamid, "status": "failed", "timestamp": (ts + delay + 2).to_string(), "recipient_id": phone,
                        "errors": [{"code": 131049, "title": "Not delivered to maintain healthy ecosystem engagement"}]}])
            } else {
                let mut s = vec![
                    json!({"id": wamid, "status": "delivered", "timestamp": (ts + delay + 2).to_string(), "recipient_id": phone, "pricing": free_service()}),
                ];
                if next(3) > 0 {
                    s.push(json!({"id": wamid, "status": "read", "timestamp": (ts + delay + 60).to_string(), "recipient_id": phone, "pricing": free_service()}));
                }
                json!(s)
            };
            n += 1;
            items.push(HistoryItem::Delivery(
                n,
                Delivery::parse(&to_number(DAKAR, json!({"statuses": statuses}))),
            ));
        }
        for (origin, template, count) in [
            ("api", "order_ready", 3 + next(5)),
            ("campaign:7", "promo_tabaski", if back % 10 == 3 { 25 } else { 0 }),
        ] {
            for k in 0..count {
                n += 1;
                let phone = format!("2217713{:05}", (n + k) % 900);
                let id = store.allocate_message_id();
                let wamid = format!("wamid.tpl.{n}");
                let at = midnight + 3600 * 6 + k as i64 * 30;
                let body = json!({"messaging_product": "whatsapp", "to": phone, "type": "template",
                                  "template": {"name": template, "language": {"code": "fr"}}});
                items.push(HistoryItem::Outbound {
                    new: Box::new(NewOutbound {
                        id,
                        recipient: phone.clone(),
                        kind: "template".into(),
                        summary: format!("template: {template} (fr)"),
                        content: json!({"type": "template", "name": template, "lang": "fr"}),
                        body,
                        free_form: false,
                        allow_outside_window: true,
                        dry_run: false,
                        origin: origin.into(),
                        reply_to: None,
                        phone_number_id: Some(DAKAR.into()),
                        record: None,
                        chatter_file: None,
                    }),
                    at_ms: at * 1000,
                    wamid: wamid.clone(),
                });
                let category = if origin == "api" { "utility" } else { "marketing" };
                let pricing =
                    json!({"billable": true, "pricing_model": "PMP", "category": category, "type": "regular"});
                let s = match next(20) {
                    0 => {
                        json!([{"id": wamid, "status": "failed", "timestamp": (at + 5).to_string(), "recipient_id": phone,
                                 "errors": [{"code": 131026, "title": "Message undeliverable"}]}])
                    }
                    1..=9 => {
                        json!([{"id": wamid, "status": "delivered", "timestamp": (at + 5).to_string(), "recipient_id": phone, "pricing": pricing}])
                    }
                    _ => {
                        json!([{"id": wamid, "status": "delivered", "timestamp": (at + 5).to_string(), "recipient_id": phone, "pricing": pricing},
                                {"id": wamid, "status": "read", "timestamp": (at + 300).to_string(), "recipient_id": phone, "pricing": pricing}])
                    }
                };
                n += 1;
                items.push(HistoryItem::Delivery(
                    n,
                    Delivery::parse(&to_number(DAKAR, json!({"statuses": s}))),
                ));
            }
        }
    }
    store.import_history(&items).unwrap();
    store.probe_writable().unwrap();
}

#[tokio::test]
async fn the_statistics_page_charts_a_month_of_traffic_on_a_desktop_and_a_phone() {
    let Some(driver) = browser::chromedriver() else { return };
    let fake = FakeGraph::start(DAKAR_TOKEN).await;
    fake.add_number(THIES, THIES_TOKEN);
    let dir = tempfile::tempdir().unwrap();
    a_month_of_traffic(&walua::store::Store::open(&dir.path().join("walua.redb")).unwrap());
    let text_ = shop_config(dir.path(), &fake, "Africa/Dakar");
    let d = TestDaemon::start_in(dir, text_).await;
    let (status, body) = d
        .api_post(
            "/api/users",
            &json!({"name": "moussa", "role": "viewer", "password": browser::PASSWORD}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let stats = d
        .eventually("the statistics built from the month", || async {
            let (_, s) = d.api("/api/stats").await;
            (s["complete"] == true).then_some(s)
        })
        .await;
    let totals = &stats["totals"];
    assert!(totals["messages_in"].as_i64().unwrap() > 300, "{totals}");
    assert!(totals["out_by_sender"]["campaign"].as_i64().unwrap() >= 50, "{totals}");

    // A viewer reads the page: the cards say what the API says.
    let c = browser::browser(&driver).await;
    browser::sign_in(&c, &d, "moussa").await;
    c.find(fantoccini::Locator::Id("nav-stats"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser::wait_for(&c, "the volume chart", "#svg-volume rect").await;
    browser::wait_text(
        &c,
        "messages received",
        "#card-in strong",
        &totals["messages_in"].to_string(),
    )
    .await;
    browser::wait_text(
        &c,
        "messages sent",
        "#card-out strong",
        &totals["messages_out"].to_string(),
    )
    .await;
    let delivered = format!("{:.1} %", totals["delivery_rate"].as_f64().unwrap() * 100.0).replace('.', ",");
    browser::wait_text(&c, "the delivery rate", "#card-delivered strong", &delivered).await;
    let bars = c
        .find_all(fantoccini::Locator::Css("#svg-volume rect"))
        .await
        .unwrap()
        .len();
    assert!(bars >= 50, "two bars a day: {bars}");
    browser::wait_for(&c, "the rates", "#svg-rates polyline.delivered").await;
    browser::wait_for(&c, "the campaign's row", "#per-campaign tr[data-key=\"7\"]").await;
    browser::wait_for(&c, "the templates", "#per-template tr[data-key=\"promo_tabaski\"]").await;
    browser::wait_for(&c, "the failures", "#failures tr[data-code=\"131049\"]").await;
    browser::wait_for(&c, "the pricing", "#pricing tr[data-category=\"marketing\"]").await;
    // Tall enough to show the cards and the charts.
    browser::screenshot(&c, "stats-desktop", 1280, 1500).await;
    browser::screenshot(&c, "stats-phone", 412, 2000).await;

    // By week, from the presets: the same totals.
    c.goto(&d.url("/console/stats?group_by=week")).await.unwrap();
    browser::wait_text(
        &c,
        "messages received by week",
        "#card-in strong",
        &totals["messages_in"].to_string(),
    )
    .await;
    c.close().await.unwrap();

    // A bad period in the page: the form again, with the reason in French.
    let agent = Agent::sign_in(&d, "fatou").await;
    let (status, page) = agent.get(&d, "/console/stats?from=2026-02-01&to=2026-01-01").await;
    assert_eq!(status, 400);
    assert!(
        page.contains("La date de début (2026-02-01) est après la date de fin (2026-01-01)."),
        "{page}"
    );
}
