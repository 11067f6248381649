//! Test support: run the real daemon on an ephemeral port with a temporary store, and talk
//! to it over HTTP like Meta and an operator would.
#![allow(dead_code)]

pub mod fake_graph;
pub mod fake_odoo;
pub mod odoo_world;
pub mod serve;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use walua::Config;

pub const APP_SECRET: &str = "test-app-secret-3f9a";
pub const VERIFY_TOKEN: &str = "test-verify-token-77c1";
pub const ADMIN_TOKEN: &str = "test-admin-token-b8e2";
pub const ACCESS_TOKEN: &str = "test-access-token-9d4c";

/// A daemon under test. Dropping it stops the daemon.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub addr: std::net::SocketAddr,
    pub config_text: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub http: reqwest::Client,
}

/// The base configuration of tests: literal secrets, store in the temp dir.
/// `extra_whatsapp` goes in `[whatsapp]` (it must set `dry_run`, see [`DRY_RUN`]); `extra`
/// is appended (TOML) and may add sections such as `[vars]`.
pub fn config_text(dir: &Path, extra_whatsapp: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_token = "{ADMIN_TOKEN}"
body_limit = 65536
shutdown_timeout = "5s"

[store]
path = "{store}"

[whatsapp]
phone_number_id = "1234567890"
access_token = "{ACCESS_TOKEN}"
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
{extra_whatsapp}

[templates]
dir = "{templates}"

[scripts]
dir = "{scripts}"

{extra}
"#,
        store = dir.join("walua.redb").display(),
        scripts = dir.join("scripts").display(),
        templates = dir.join("templates").display(),
    )
}

impl TestDaemon {
    /// Starts a daemon with the default test configuration.
    pub async fn start() -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text(dir.path(), DRY_RUN, "");
        TestDaemon::start_in(dir, text).await
    }

    /// Starts a daemon that sends for real, to the fake Graph API at `api_base`, with quick
    /// retries. `extra_whatsapp` adds or overrides `[whatsapp]` keys.
    pub async fn start_live(api_base: &str, extra_whatsapp: &str) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text(dir.path(), &live_whatsapp(api_base, extra_whatsapp), "");
        TestDaemon::start_in(dir, text).await
    }

    /// Starts a daemon in `dir` with the given configuration text.
    pub async fn start_in(dir: tempfile::TempDir, config_text: String) -> TestDaemon {
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        let config = Config::from_toml(&dir.path().join("walua.toml"), &config_text).expect("test config is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            walua::run(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("daemon runs");
        });
        TestDaemon {
            dir,
            addr,
            config_text,
            stop: Some(stop),
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("walua.redb")
    }

    /// Stops the daemon gracefully and waits for it; returns the temp dir for a restart.
    /// Runs the `walua` binary against this daemon's admin API (its address and token in a
    /// configuration of its own), off the test's runtime; returns success and stdout+stderr.
    pub async fn cli(&self, args: &[&str]) -> (bool, String) {
        let addr = self
            .url("")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("walua.toml");
        std::fs::write(
            &conf,
            format!("[server]\nlisten = \"{addr}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\n[whatsapp]\ndry_run = true\n"),
        )
        .unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_walua"))
                .arg("--config")
                .arg(&conf)
                .args(&args)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        drop(dir);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        (out.status.success(), format!("{stdout}{stderr}"))
    }

    pub async fn stop(mut self) -> (tempfile::TempDir, String) {
        self.shutdown().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.config_text.clone())
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("daemon stops cleanly");
        }
    }

    /// Stops and starts again on the same store and configuration.
    pub async fn restart(self) -> TestDaemon {
        let (dir, text) = self.stop().await;
        TestDaemon::start_in(dir, text).await
    }

    /// POSTs a delivery signed with the test app secret.
    pub async fn deliver(&self, body: &[u8]) -> reqwest::Response {
        let sig = walua::webhook::signature::sign(APP_SECRET.as_bytes(), body);
        self.http
            .post(self.url("/webhook"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// POSTs a signed delivery and asserts 200.
    pub async fn deliver_ok(&self, body: &Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        let r = self.deliver(&bytes).await;
        assert_eq!(r.status(), 200, "delivery refused: {}", r.text().await.unwrap());
    }

    /// GET on the admin API with the admin token; returns (status, JSON).
    pub async fn api(&self, path: &str) -> (u16, Value) {
        admin_call(self.http.get(self.url(path))).await
    }

    /// POST on the admin API with the admin token; returns (status, JSON).
    pub async fn api_post(&self, path: &str, body: &Value) -> (u16, Value) {
        admin_call(self.http.post(self.url(path)).json(body)).await
    }

    /// A contact's messages through the admin API (empty when unknown).
    pub async fn messages_of(&self, contact: &str) -> Vec<Value> {
        let (status, body) = self
            .api(&format!("/api/conversations/{contact}/messages?limit=1000"))
            .await;
        if status == 404 {
            return vec![];
        }
        assert_eq!(status, 200, "{body}");
        body["messages"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `probe` returns Some, polling; panics after 10 s.
    pub async fn eventually<T, F, Fut>(&self, what: &str, probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        self.eventually_within(what, Duration::from_secs(10), probe).await
    }

    /// [`TestDaemon::eventually`] with its own limit (e.g. two periods of a cron schedule).
    pub async fn eventually_within<T, F, Fut>(&self, what: &str, limit: Duration, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            if start.elapsed() > limit {
                panic!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until message `id` has status `want`; returns it as `GET /api/messages/{id}` does.
    pub async fn wait_status(&self, id: &Value, want: &str) -> Value {
        self.eventually(&format!("message {id} {want}"), || async {
            let (_, m) = self.api(&format!("/api/messages/{id}")).await;
            (m["status"] == want).then_some(m)
        })
        .await
    }

    /// Waits until the journal is empty (every delivery processed) and the search indexer
    /// has caught up (every stored message searchable).
    pub async fn settled(&self) {
        self.eventually("journal drained and messages searchable", || async {
            let (_, h) = self.api("/healthz").await;
            (h["journal_backlog"] == 0 && h["search_backlog"] == 0).then_some(())
        })
        .await;
    }
}

/// Sends an admin API request with the admin token; returns (status, JSON or `Null`).
async fn admin_call(request: reqwest::RequestBuilder) -> (u16, Value) {
    let r = request.bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A free loopback port, for the real binary, which must be told where to listen.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `[whatsapp]` keys of a dry-run test daemon.
pub const DRY_RUN: &str = "dry_run = true";

/// `[whatsapp]` keys of a live test daemon against `api_base`; `extra` keys win.
pub fn live_whatsapp(api_base: &str, extra: &str) -> String {
    let mut keys = vec![
        ("dry_run", "false".to_string()),
        ("api_base", format!("\"{api_base}\"")),
        ("retry_base", "\"50ms\"".to_string()),
        ("request_timeout", "\"2s\"".to_string()),
        ("max_per_second", "1000".to_string()),
        ("pair_burst", "1000".to_string()),
        ("pair_interval", "\"1ms\"".to_string()),
    ];
    for line in extra.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').expect("key = value");
        keys.retain(|(name, _)| *name != k.trim());
        keys.push((Box::leak(k.trim().to_string().into_boxed_str()), v.trim().to_string()));
    }
    keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
}

/// Reads a fixture under tests/fixtures/webhooks/.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhooks")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Meta's webhook envelope around one `messages` change to the test number; `fields` are the
/// change's `contacts`, `messages` or `statuses`.
fn delivery(fields: Value) -> Value {
    let mut value = serde_json::json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "221338601234", "phone_number_id": "1234567890"},
    });
    value
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]
    })
}

/// A minimal inbound text delivery from `from` (phone) with wamid `wamid`.
pub fn text_delivery(from: &str, wamid: &str, body: &str, ts: i64) -> Value {
    delivery(serde_json::json!({
        "contacts": [{"profile": {"name": "Client"}, "wa_id": from}],
        "messages": [{"from": from, "id": wamid, "timestamp": ts.to_string(), "type": "text", "text": {"body": body}}]
    }))
}

/// A status delivery for `wamid`.
pub fn status_delivery(wamid: &str, status: &str, ts: i64) -> Value {
    delivery(serde_json::json!({
        "statuses": [{"id": wamid, "status": status, "timestamp": ts.to_string(), "recipient_id": "221771234567"}]
    }))
}

/// Unix seconds now.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A reply-button click (`interactive` / `button_reply`) from `from`.
pub fn click_delivery(from: &str, wamid: &str, button_id: &str, title: &str) -> Value {
    delivery(serde_json::json!({
        "contacts": [{"profile": {"name": "Awa Diop"}, "wa_id": from}],
        "messages": [{"from": from, "id": wamid, "timestamp": now().to_string(), "type": "interactive",
                      "context": {"from": "221338601234", "id": "wamid.PREVIOUS"},
                      "interactive": {"type": "button_reply", "button_reply": {"id": button_id, "title": title}}}]
    }))
}

impl TestDaemon {
    /// Writes a script file under the daemon's scripts directory (atomically: temp + rename).
    pub fn write_script(&self, relative: &str, source: &str) {
        let path = self.dir.path().join("scripts").join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("lua.tmp-save");
        std::fs::write(&tmp, source).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// The outbound messages of a contact, oldest first.
    pub async fn outbound_of(&self, contact: &str) -> Vec<Value> {
        self.messages_of(contact)
            .await
            .into_iter()
            .filter(|m| m["direction"] == "outbound")
            .collect()
    }

    /// Waits until the inbound message `wamid` has a script outcome, and returns the message.
    pub async fn dispatched(&self, contact: &str, wamid: &str) -> Value {
        self.eventually(&format!("scripts ran for {wamid}"), || async {
            self.messages_of(contact)
                .await
                .into_iter()
                .find(|m| m["wamid"] == wamid && m["script"].is_object())
        })
        .await
    }
}

/// Writes a script file into a scripts dir before a daemon starts.
pub fn put_script(dir: &Path, relative: &str, source: &str) {
    let path = dir.join("scripts").join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, source).unwrap();
}

/// Journals `deliveries` in a stopped daemon's directory as if it had answered 200 for
/// them and died before processing them.
#[allow(dead_code)]
pub fn journal_unprocessed(dir: &Path, deliveries: &[&Value]) {
    let store_path = dir.join("walua.redb");
    let applied = walua::store::Store::open(&store_path)
        .unwrap()
        .journal_applied()
        .unwrap();
    let mut log =
        walua::webhook::journal::DeliveryLog::open(&walua::webhook::journal::dir_for_store(&store_path), applied)
            .unwrap();
    let bodies: Vec<Vec<u8>> = deliveries.iter().map(|d| serde_json::to_vec(d).unwrap()).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    log.append(&refs).unwrap();
}

/// The Prometheus text of `GET {base}/metrics`.
pub async fn metrics_at(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Starts the real `walua serve` binary with `dir/walua.toml` (quiet, no stdin), as systemd
/// would: for tests that kill it or limit its resources.
pub fn spawn_serve(dir: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_walua"))
        .arg("--config")
        .arg(dir.join("walua.toml"))
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("walua starts")
}
