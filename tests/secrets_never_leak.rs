//! Secrets never leak: the real binary runs at `RUST_LOG=trace` with literal, distinctive
//! secrets, is driven through every path that touches them (webhook verification, signature
//! checks, the admin API, dry-run sends, `walua check`, configuration errors), and then no
//! secret may appear in its logs, in any HTTP answer, nor in the raw bytes of the store and
//! media directory.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::free_port;

const ACCESS_TOKEN: &str = "EAAG-leak-canary-ACCESS-5d1f9a";
const APP_SECRET: &str = "leak-canary-APPSECRET-83c2e7";
const ADMIN_TOKEN: &str = "leak-canary-ADMIN-0b7e44";
const VERIFY_TOKEN: &str = "leak-canary-VERIFY-6a9d12";
const ODOO_KEY: &str = "leak-canary-ODOOKEY-f3e8b5";
const SECRETS: [&str; 5] = [ACCESS_TOKEN, APP_SECRET, ADMIN_TOKEN, VERIFY_TOKEN, ODOO_KEY];

fn config(state: &Path, port: u16, odoo_port: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_token = "{ADMIN_TOKEN}"
shutdown_timeout = "5s"

[store]
path = "{store}"

[whatsapp]
phone_number_id = "1234567890"
access_token = "{ACCESS_TOKEN}"
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
api_base = "http://127.0.0.1:{odoo_port}/v21.0"
dry_run = true
allow_outside_window = true

[odoo]
url = "http://127.0.0.1:{odoo_port}"
db = "prod"
login = "bot@example.com"
api_key = "{ODOO_KEY}"

[scripts]
dir = "{scripts}"

[log]
format = "json"
"#,
        store = state.join("walua.redb").display(),
        scripts = state.join("scripts").display(),
    )
}

const SCRIPT: &str = r#"
return {
  run = function(msg)
    logger.info("vars", env.vars, "message", msg.id, msg.text)
    env.whatsapp.send_text(msg.from, "Réponse à " .. (msg.text or ""))
    env.store.set("last", msg.text)
    local ok, err = pcall(env.odoo.search_read, "res.partner", {})
    logger.warn("odoo:", tostring(err))
  end,
}
"#;

fn assert_clean(what: &str, bytes: &[u8]) {
    for secret in SECRETS {
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(
            !found,
            "secret {secret} leaked into {what}:\n{}",
            String::from_utf8_lossy(bytes).chars().take(4000).collect::<String>()
        );
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn walua(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_walua"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "trace")
        .env_remove("WALUA_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test]
async fn no_secret_in_logs_answers_store_or_media() {
    let tmp = tempfile::tempdir().unwrap();
    let conf_dir = tmp.path().join("etc");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::create_dir_all(state.join("scripts")).unwrap();
    std::fs::write(state.join("scripts/on_message.lua"), SCRIPT).unwrap();
    let port = free_port();
    let closed = free_port();
    let conf = conf_dir.join("walua.toml");
    std::fs::write(&conf, config(&state, port, closed)).unwrap();

    let log_out = tmp.path().join("stdout.log");
    let log_err = tmp.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_walua"))
        .args(["serve", "--config", conf.to_str().unwrap()])
        .current_dir(tmp.path())
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log_out).unwrap())
        .stderr(std::fs::File::create(&log_err).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let start = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "daemon did not start");
        assert!(child.try_wait().unwrap().is_none(), "daemon exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut answers: Vec<(String, Vec<u8>)> = Vec::new();
    macro_rules! keep {
        ($what:expr, $resp:expr) => {{
            let r = $resp.send().await.unwrap();
            let status = r.status().as_u16();
            let headers = format!("{:?}", r.headers());
            let body = r.bytes().await.unwrap().to_vec();
            answers.push(($what.to_string(), [headers.into_bytes(), body.clone()].concat()));
            (status, body)
        }};
    }

    // Webhook verification: a wrong token, a right one.
    let (s, _) = keep!(
        "verify (wrong)",
        http.get(format!(
            "{base}/webhook?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=123"
        ))
    );
    assert_eq!(s, 403);
    let (s, body) = keep!(
        "verify (right)",
        http.get(format!(
            "{base}/webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=4242"
        ))
    );
    assert_eq!((s, body.as_slice()), (200, b"4242".as_slice()));

    // Deliveries: no signature, a garbage one, one made with another key, then a good one.
    let delivery = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "221338601234", "phone_number_id": "1234567890"},
            "contacts": [{"profile": {"name": "Client"}, "wa_id": "221770000077"}],
            "messages": [{"from": "221770000077", "id": "wamid.LEAK.1", "timestamp": "1760000000",
                          "type": "text", "text": {"body": "Bonjour"}}]
        }}]}]
    });
    let body = serde_json::to_vec(&delivery).unwrap();
    let (s, _) = keep!("unsigned", http.post(format!("{base}/webhook")).body(body.clone()));
    assert_eq!(s, 403);
    let (s, _) = keep!(
        "garbage signature",
        http.post(format!("{base}/webhook"))
            .header("x-hub-signature-256", "sha256=deadbeef")
            .body(body.clone())
    );
    assert_eq!(s, 403);
    let wrong = walua::webhook::signature::sign(b"another-key", &body);
    let (s, _) = keep!(
        "wrong-key signature",
        http.post(format!("{base}/webhook"))
            .header("x-hub-signature-256", wrong)
            .body(body.clone())
    );
    assert_eq!(s, 403);
    let good = walua::webhook::signature::sign(APP_SECRET.as_bytes(), &body);
    let (s, _) = keep!(
        "signed delivery",
        http.post(format!("{base}/webhook"))
            .header("x-hub-signature-256", good)
            .body(body.clone())
    );
    assert_eq!(s, 200);

    // Admin API: no token, a wrong one, then the right one.
    let (s, _) = keep!("admin (no token)", http.get(format!("{base}/api/conversations")));
    assert!(s == 401 || s == 403, "{s}");
    let (s, _) = keep!(
        "admin (wrong token)",
        http.get(format!("{base}/api/conversations")).bearer_auth("wrong-token")
    );
    assert!(s == 401 || s == 403, "{s}");
    let (s, body) = keep!(
        "send (dry run)",
        http.post(format!("{base}/api/messages"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"to": "221770000077", "type": "text", "text": "Votre facture"}))
    );
    assert!((200..300).contains(&s), "{s} {}", String::from_utf8_lossy(&body));
    let id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"].clone();
    keep!(
        "message",
        http.get(format!("{base}/api/messages/{id}")).bearer_auth(ADMIN_TOKEN)
    );
    // Wait for the script to have run (its reply is the contact's 3rd message).
    let start = Instant::now();
    loop {
        let (_, body) = keep!(
            "conversation",
            http.get(format!("{base}/api/conversations/221770000077/messages"))
                .bearer_auth(ADMIN_TOKEN)
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if v["messages"].as_array().map_or(0, Vec::len) >= 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the script never replied: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    keep!(
        "conversations",
        http.get(format!("{base}/api/conversations")).bearer_auth(ADMIN_TOKEN)
    );
    keep!(
        "scripts",
        http.get(format!("{base}/api/scripts")).bearer_auth(ADMIN_TOKEN)
    );
    keep!(
        "events",
        http.get(format!("{base}/api/events")).bearer_auth(ADMIN_TOKEN)
    );
    keep!("healthz", http.get(format!("{base}/healthz")));
    keep!("metrics", http.get(format!("{base}/metrics")));

    // `walua check`, and configuration errors next to literal secrets.
    let mut outputs = Vec::new();
    outputs.push((
        "check",
        walua(&["check", "--config", conf.to_str().unwrap()], tmp.path()),
    ));
    let bad = conf_dir.join("bad.toml");
    let broken = [
        // a syntax error on the line of a secret
        format!("[whatsapp]\naccess_token = \"{ACCESS_TOKEN}\" oops\n"),
        // a wrong type next to secrets
        format!("[server]\nadmin_token = \"{ADMIN_TOKEN}\"\nlisten = 8080\n"),
        // a secret in the wrong place
        format!("[whatsapp]\napp_secret = [\"{APP_SECRET}\"]\n"),
        format!("[odoo]\nurl = \"http://x\"\napi_key = \"{ODOO_KEY}\"\n"),
        format!("[whatsapp]\nverify_token = \"{VERIFY_TOKEN}\"\nunknown_key = 1\n"),
    ];
    for text in &broken {
        std::fs::write(&bad, text).unwrap();
        let out = walua(&["check", "--config", bad.to_str().unwrap()], tmp.path());
        assert!(!out.status.success(), "{text} was accepted");
        outputs.push(("check (config error)", out));
        let out = walua(&["serve", "--config", bad.to_str().unwrap()], tmp.path());
        assert!(!out.status.success());
        outputs.push(("serve (config error)", out));
    }
    // The CLI client against the running daemon.
    outputs.push((
        "conversations",
        walua(&["conversations", "--config", conf.to_str().unwrap()], tmp.path()),
    ));
    // Wrong-token CLI.
    std::fs::write(
        &bad,
        config(&state, port, closed).replace(ADMIN_TOKEN, "wrong-admin-token"),
    )
    .unwrap();
    outputs.push((
        "conversations (wrong token)",
        walua(&["conversations", "--config", bad.to_str().unwrap()], tmp.path()),
    ));

    // Stop the daemon.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");

    let stderr = std::fs::read(&log_err).unwrap();
    assert!(
        String::from_utf8_lossy(&stderr).contains("TRACE") || String::from_utf8_lossy(&stderr).contains("trace"),
        "the daemon logged at trace level"
    );
    assert!(
        String::from_utf8_lossy(&stderr).contains("wamid.LEAK.1"),
        "the delivery was logged"
    );
    assert_clean("daemon stderr", &stderr);
    // Logged to a file (as under systemd), the lines carry no terminal colour codes.
    assert!(!stderr.contains(&0x1b), "escape codes in a log written to a file");
    assert_clean("daemon stdout", &std::fs::read(&log_out).unwrap());
    for (what, body) in &answers {
        assert_clean(&format!("HTTP answer: {what}"), body);
    }
    for (what, out) in &outputs {
        assert_clean(&format!("{what} stdout"), &out.stdout);
        assert_clean(&format!("{what} stderr"), &out.stderr);
    }
    let mut files = Vec::new();
    files_under(&state, &mut files);
    assert!(files.iter().any(|f| f.ends_with("walua.redb")), "{files:?}");
    for f in &files {
        assert_clean(&f.display().to_string(), &std::fs::read(f).unwrap());
    }
}
