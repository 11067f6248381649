//! The HTTP edge under hostile or broken clients, through the real daemon: slowloris heads,
//! trickled bodies, idle floods under a low open-file limit, accept errors, HEAD, bad admin
//! inputs, and the admin API behind a same-host reverse proxy.
//!
//! Timeouts are set short in the configurations here (1–2 s) so that the tests end quickly;
//! the waits below are hang guards, never measures of speed.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The test configuration with `server` keys added to `[server]`, and without the admin
/// token when `token` is false.
fn config_with(dir: &Path, whatsapp: &str, server: &str, token: bool) -> String {
    let mut text = config_text(dir, whatsapp, "").replace(
        "shutdown_timeout = \"5s\"\n",
        &format!("shutdown_timeout = \"5s\"\n{server}\n"),
    );
    if !token {
        text = text.replace(&format!("admin_token = \"{ADMIN_TOKEN}\"\n"), "");
    }
    text
}

async fn daemon(server: &str, token: bool) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    let text = config_with(dir.path(), DRY_RUN, server, token);
    TestDaemon::start_in(dir, text).await
}

/// A signed delivery's raw HTTP/1.1 request head for a body of `len` bytes.
fn signed_head(body: &[u8]) -> String {
    let sig = walua::webhook::signature::sign(APP_SECRET.as_bytes(), body);
    format!(
        "POST /webhook HTTP/1.1\r\nhost: walua\r\ncontent-type: application/json\r\nx-hub-signature-256: {sig}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
}

/// Reads until the server closes the connection (EOF or reset) or `guard` passes; returns
/// what was read, or `None` when the connection was still open at the guard.
async fn read_until_closed(stream: &mut TcpStream, guard: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + guard;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP/1.1 response's status line and headers (up to the blank line).
async fn read_head(stream: &mut TcpStream, guard: Duration) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(guard, async {
        while !out.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            out.push(byte[0]);
        }
    })
    .await
    .expect("a response head within the guard");
    String::from_utf8(out).unwrap()
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_while_deliveries_still_get_200() {
    let d = daemon("header_read_timeout = \"1s\"", true).await;
    const SLOW: usize = 100;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(SLOW);
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let (addr, ready) = (d.addr, ready_tx.clone());
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // A head that never ends, one byte every 100 ms: the connection is never silent
            // for long, but its head is never complete.
            let head = b"POST /webhook HTTP/1.1\r\nhost: walua\r\nx-padding: aaaaaaaaaaaaaaaaaaaa\r\n";
            let mut bytes = head
                .iter()
                .chain(std::iter::repeat(b"x-more: 1\r\n").flatten())
                .copied();
            s.write_all(&[bytes.next().unwrap()]).await.unwrap();
            ready.send(()).await.unwrap();
            let started = Instant::now();
            let mut buf = [0u8; 1024];
            loop {
                tokio::select! {
                    read = s.read(&mut buf) => {
                        // Closed (EOF or reset), possibly after an error answer.
                        if matches!(read, Ok(0) | Err(_)) {
                            return Some(started.elapsed());
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if s.write_all(&[bytes.next().unwrap()]).await.is_err() {
                            return Some(started.elapsed());
                        }
                    }
                }
                if started.elapsed() > Duration::from_secs(30) {
                    return None; // hang guard: still open
                }
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..SLOW {
        ready_rx.recv().await.expect("every slow client connected");
    }
    // Meanwhile a normal delivery is answered.
    d.deliver_ok(&text_delivery("221770000101", "wamid.SLOW.1", "Bonjour", now()))
        .await;
    for task in slow {
        let closed = task.await.unwrap();
        assert!(closed.is_some(), "a slowloris connection was still open after 30 s");
    }
    let m = metrics_at(&d.http, &d.url("")).await;
    assert!(
        sample(&m, "walua_http_connections_closed_total{reason=\"header_timeout\"}") >= SLOW as f64,
        "{m}"
    );
    // And the daemon still serves.
    d.deliver_ok(&text_delivery("221770000101", "wamid.SLOW.2", "Encore", now()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_and_a_request_in_progress_is_never_idle() {
    let d = daemon(
        "header_read_timeout = \"1s\"\nidle_timeout = \"1s\"\nbody_read_timeout = \"4s\"",
        true,
    )
    .await;
    let body = serde_json::to_vec(&text_delivery("221770000102", "wamid.BODY.1", "Bonjour", now())).unwrap();

    // A body sent in pieces over about 2 s: longer than the idle and header timeouts, within
    // the body timeout. The request is in progress all along, so it is answered.
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    s.write_all(signed_head(&body).as_bytes()).await.unwrap();
    for chunk in body.chunks(body.len().div_ceil(10)) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(chunk).await.unwrap();
    }
    let head = read_head(&mut s, Duration::from_secs(10)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // The same keep-alive connection, now idle, is closed after the idle timeout.
    let rest = read_until_closed(&mut s, Duration::from_secs(20)).await;
    assert!(
        rest.is_some(),
        "an idle keep-alive connection was still open after 20 s"
    );

    // A body trickled slower than the body timeout: 408, and the connection is closed.
    let body = serde_json::to_vec(&text_delivery("221770000102", "wamid.BODY.2", "Lent", now())).unwrap();
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    s.write_all(signed_head(&body).as_bytes()).await.unwrap();
    let writer = {
        let (mut r, mut w) = s.into_split();
        let body = body.clone();
        let writer = tokio::spawn(async move {
            for b in body {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if w.write_all(&[b]).await.is_err() {
                    break;
                }
            }
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a trickled body held its connection for 30 s");
        let text = String::from_utf8_lossy(&got).to_string();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("body_read_timeout"), "{text}");
        writer
    };
    writer.abort();

    let m = metrics_at(&d.http, &d.url("")).await;
    assert!(
        sample(&m, "walua_http_connections_closed_total{reason=\"idle\"}") >= 1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "walua_webhook_deliveries_total{result=\"body_timeout\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "walua_webhook_deliveries_total{result=\"accepted\"}"),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn head_works_wherever_get_does() {
    let d = daemon("", true).await;
    d.deliver_ok(&text_delivery("221770000103", "wamid.HEAD.1", "Bonjour", now()))
        .await;
    d.settled().await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let verify = format!("/webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=4242");
    for path in [
        "/healthz",
        "/metrics",
        "/api/conversations",
        "/api/conversations/221770000103/messages",
        "/api/scripts",
        verify.as_str(),
    ] {
        let get = d
            .http
            .get(d.url(path))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        let (status, ct) = (get.status(), get.headers()["content-type"].clone());
        let len = get.bytes().await.unwrap().len();
        let head = d
            .http
            .head(d.url(path))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), status, "HEAD {path}");
        assert_eq!(status, 200, "GET {path}");
        assert_eq!(head.headers()["content-type"], ct, "HEAD {path}");
        if path != "/metrics" {
            // (the metrics text changes between two scrapes)
            assert_eq!(
                head.headers()["content-length"].to_str().unwrap(),
                len.to_string(),
                "HEAD {path} announces the GET body's length"
            );
        }
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path} has no body");
    }

    // On the wire: no body bytes after a HEAD answer, and the connection goes on.
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    s.write_all(b"HEAD /healthz HTTP/1.1\r\nhost: walua\r\n\r\nGET /nowhere HTTP/1.1\r\nhost: walua\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let all = read_until_closed(&mut s, Duration::from_secs(10)).await.unwrap();
    let text = String::from_utf8_lossy(&all);
    let (first, second) = text.split_once("\r\n\r\n").unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{text}");
    assert!(second.starts_with("HTTP/1.1 404"), "HEAD sent a body: {text}");

    // Other methods: 405 with Allow.
    let r = d.http.delete(d.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    let r = d.http.put(d.url("/webhook")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, POST");

    // HTTP/2 (cleartext, prior knowledge) too.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let get = h2.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(get.version(), reqwest::Version::HTTP_2);
    assert_eq!(get.status(), 200);
    let len = get.bytes().await.unwrap().len();
    let head = h2.head(d.url("/healthz")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"].to_str().unwrap(), len.to_string());
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_admin_inputs_get_a_4xx_never_a_500() {
    let d = daemon("", true).await;
    let post_media = |query: String, body: &'static [u8]| {
        let req = d
            .http
            .post(d.url(&format!("/api/media?{query}")))
            .bearer_auth(ADMIN_TOKEN)
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // The 5,000-character file name (it used to reach the file system and fail with 500).
    let long = format!("filename={}.pdf", "a".repeat(5000));
    let (status, body) = post_media(long, b"%PDF-1.4").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("filename"), "{body}");

    // Names that are long but allowed are kept (the stored name is shortened if needed).
    let (status, body) = post_media(format!("filename={}.pdf", "a".repeat(251)), b"%PDF-1.4").await;
    assert_eq!(status, 200, "{body}");
    let accented: String = "é".repeat(125) + ".pdf"; // 254 bytes, stored as 271 without shortening
    let encoded: String = form_urlencoded::byte_serialize(accented.as_bytes()).collect();
    let (status, body) = post_media(format!("filename={encoded}"), b"%PDF-1.5").await;
    assert_eq!(status, 200, "{body}");

    for (query, what) in [
        ("filename=", "empty name"),
        ("mime=application/pdf", "no name"),
        ("filename=..%2Fetc%2Fpasswd", "a path"),
        ("filename=a%5Cb.pdf", "a backslash path"),
        ("filename=..", "dot-dot"),
        ("filename=a%0Ab.pdf", "a control character"),
        ("filename=a.pdf&mime=not%20a%20type", "a bad MIME type"),
        (
            "filename=a.pdf&mime=text%2Fplain%0D%0AX-Injected%3A%201",
            "a MIME type with a line break",
        ),
    ] {
        let (status, body) = post_media(query.to_string(), b"data").await;
        assert_eq!(status, 400, "{what}: {body}");
    }
    let (status, body) = post_media("filename=empty.pdf".into(), b"").await;
    assert_eq!(status, 400, "empty file: {body}");

    // Other admin inputs: a 4xx each.
    let long_contact = "9".repeat(5000);
    for (method, path, body, want) in [
        ("GET", "/api/messages/abc".to_string(), None, 400),
        ("GET", "/api/messages/99999999999999999999999".into(), None, 400),
        ("GET", format!("/api/conversations/{long_contact}/messages"), None, 404),
        ("GET", "/api/conversations/%FF%FE/messages".into(), None, 404),
        ("GET", "/api/conversations?limit=-5".into(), None, 200),
        ("GET", format!("/api/{}", "x".repeat(20_000)), None, 404),
        ("POST", "/api/messages".into(), Some("{not json"), 400),
        ("POST", "/api/messages".into(), Some("[]"), 400),
        (
            "POST",
            "/api/messages".into(),
            Some("{\"to\": \"1\", \"type\": \"nope\"}"),
            400,
        ),
        ("POST", "/api/messages/abc/resend".into(), None, 400),
        ("POST", "/api/messages/12/resend".into(), None, 409),
        ("POST", "/api/messages/x/dispatch".into(), None, 400),
        ("DELETE", "/api/conversations".into(), None, 404),
    ] {
        let mut req = d
            .http
            .request(method.parse().unwrap(), d.url(&path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = req.send().await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            want,
            "{method} {}: {}",
            &path[..path.len().min(80)],
            r.text().await.unwrap()
        );
    }

    // Over-long heads: 431 from the HTTP layer, not a crash or a 500.
    let mut many = d.http.get(d.url("/healthz"));
    for i in 0..150 {
        many = many.header(format!("x-h{i}"), "1");
    }
    assert_eq!(many.send().await.unwrap().status(), 431);
    let big = d
        .http
        .get(d.url("/healthz"))
        .header("x-big", "b".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 431);
    // A body over the admin limit announced up front: 413 without reading it.
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    s.write_all(
        format!(
            "POST /api/messages HTTP/1.1\r\nhost: walua\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-length: 999999999999\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let head = read_head(&mut s, Duration::from_secs(10)).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[tokio::test]
async fn a_proxied_request_without_a_token_is_refused() {
    // Dry run without an admin token: loopback clients only...
    let d = daemon("", false).await;
    let r = d.http.get(d.url("/api/conversations")).send().await.unwrap();
    assert_eq!(r.status(), 200, "a local operator is let in");
    // ...but not what a proxy on the same host forwards from the internet.
    for (header, value) in [
        ("x-forwarded-for", "203.0.113.7"),
        ("X-Real-IP", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7;proto=https"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "walua.example.com"),
        ("via", "1.1 caddy"),
    ] {
        let r = d
            .http
            .get(d.url("/api/conversations"))
            .header(header, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{header}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("server.admin_token"), "{body}");
        let r = d
            .http
            .post(d.url("/api/messages"))
            .header(header, value)
            .json(&serde_json::json!({"to": "221770000104", "type": "text", "text": "pirate"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{header}");
        let r = d
            .http
            .post(d.url("/hooks/odoo/anything"))
            .header(header, value)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "Odoo push hooks: {header}");
    }
    // Public endpoints do not care.
    let r = d
        .http
        .get(d.url("/healthz"))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(d.outbound_of("221770000104").await.is_empty(), "nothing was queued");

    // With a token, a proxied request with the token is let in.
    let d = daemon("", true).await;
    let r = d
        .http
        .get(d.url("/api/conversations"))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = d
        .http
        .get(d.url("/api/conversations"))
        .header("x-forwarded-for", "203.0.113.7")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Waits for a child to exit within `guard`; kills it and fails otherwise.
fn exit_within(child: &mut Child, guard: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > guard {
            let _ = child.kill();
            panic!("walua was still running after {guard:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn live_mode_without_an_admin_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = config_with(dir.path(), &live_whatsapp("http://127.0.0.1:9", ""), "", false)
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    let conf = dir.path().join("walua.toml");
    std::fs::write(&conf, &text).unwrap();
    for command in ["serve", "check"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_walua"))
            .arg("--config")
            .arg(&conf)
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = exit_within(&mut child, Duration::from_secs(30));
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!status.success(), "{command} started: {said}");
        assert!(said.contains("server.admin_token"), "{command}: {said}");
        assert!(said.contains("walua.toml"), "{command}: {said}");
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens"
    );
    // The same file with a token starts.
    let with_token = text.replace("[server]\n", &format!("[server]\nadmin_token = \"{ADMIN_TOKEN}\"\n"));
    std::fs::write(&conf, with_token).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_walua"))
        .arg("--config")
        .arg(&conf)
        .arg("check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The real binary, its log in `dir/walua.log`; `ulimit`: run under `ulimit -n` of that.
fn spawn_walua(dir: &Path, ulimit: Option<u32>) -> Child {
    let log = std::fs::File::create(dir.join("walua.log")).unwrap();
    let mut cmd = match ulimit {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(env!("CARGO_BIN_EXE_walua"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_walua")),
    };
    cmd.arg("--config")
        .arg(dir.join("walua.toml"))
        .arg("serve")
        .env("RUST_LOG", "warn,walua::http=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("walua starts")
}

/// A spawned daemon, killed on drop.
struct Spawned {
    child: Child,
    dir: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Spawned {
    async fn start(server: &str, ulimit: Option<u32>) -> Spawned {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let text = config_with(dir.path(), DRY_RUN, server, true).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
        std::fs::write(dir.path().join("walua.toml"), &text).unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        let child = spawn_walua(dir.path(), ulimit);
        let s = Spawned {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        };
        let start = Instant::now();
        loop {
            if let Ok(r) = s.http.get(format!("{}/healthz", s.base)).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "walua did not come up: {}",
                s.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("walua.log")).unwrap_or_default()
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// Posts a signed delivery until it gets a 200 (503s with `Retry-After` and dropped
    /// connections are expected while the flood lasts, and the statuses in `also`); panics
    /// after `guard`.
    async fn deliver_eventually(&self, wamid: &str, also: &[u16], guard: Duration) -> Vec<String> {
        let body = serde_json::to_vec(&text_delivery("221770000105", wamid, "Bonjour", now())).unwrap();
        let sig = walua::webhook::signature::sign(APP_SECRET.as_bytes(), &body);
        // A new connection for each attempt, as Meta's would be.
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let answer = fresh
                .post(format!("{}/webhook", self.base))
                .header("x-hub-signature-256", &sig)
                .body(body.clone())
                .send()
                .await;
            match answer {
                Ok(r) if r.status() == 200 => return seen,
                Ok(r) => {
                    let status = r.status().as_u16();
                    let retry_after = r.headers().get("retry-after").cloned();
                    let text = r.text().await.unwrap_or_default();
                    if status == 503 && text.starts_with("too many connections") {
                        assert_eq!(retry_after.unwrap(), "1", "a refusal says when to retry");
                    } else {
                        assert!(also.contains(&status), "unexpected {status}: {text}");
                    }
                    seen.push(status.to_string());
                }
                Err(e) => seen.push(format!("error: {e}")),
            }
            assert!(
                start.elapsed() < guard,
                "no 200 within {guard:?}: {seen:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Opens `n` connections that send nothing; each task returns what the server sent before
/// closing it (`None`: still open at the guard).
async fn idle_flood(addr: &str, n: usize) -> Vec<tokio::task::JoinHandle<Option<Vec<u8>>>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        tasks.push(tokio::spawn(async move {
            read_until_closed(&mut s, Duration::from_secs(60)).await
        }));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_under_a_low_fd_limit_is_refused_gracefully() {
    let d = Spawned::start("header_read_timeout = \"2s\"", Some(256)).await;
    let log = d.log();
    assert!(
        log.contains("max_connections=192"),
        "the cap is computed below the 256-file limit: {log}"
    );

    // More idle connections than the cap (and than the open-file limit).
    let flood = idle_flood(&d.addr(), 300).await;
    // A delivery gets its 200 once idle connections have been refused or timed out.
    let started = Instant::now();
    let attempts = d
        .deliver_eventually("wamid.FLOOD.1", &[], Duration::from_secs(60))
        .await;
    let waited = started.elapsed();

    let (mut refused, mut closed_silently) = (0, 0);
    for task in flood {
        let got = task.await.unwrap().expect("every idle connection is closed");
        let text = String::from_utf8_lossy(&got);
        if text.starts_with("HTTP/1.1 503") {
            assert!(text.contains("retry-after: 1"), "{text}");
            refused += 1;
        } else {
            assert!(got.is_empty(), "an idle connection got {text}");
            closed_silently += 1;
        }
    }
    eprintln!(
        "idle flood: {refused} answered 503, {closed_silently} closed without an answer; the delivery waited {:?} ({} refused attempts)",
        waited,
        attempts.len()
    );
    assert!(refused >= 1, "connections over the cap are answered 503");
    assert!(closed_silently >= 150, "the served ones time out: {closed_silently}");
    let m = metrics_at(&d.http, &d.base).await;
    assert!(sample(&m, "walua_http_connections_refused_total") >= 100.0, "{m}");
    assert!(
        sample(&m, "walua_http_connections_closed_total{reason=\"header_timeout\"}") >= 150.0,
        "{m}"
    );
    let log = d.log();
    assert!(
        !log.contains("Too many open files"),
        "the cap keeps the daemon below its open-file limit: {log}"
    );
    let refusal_lines = log.matches("connection refused").count();
    assert!(
        (1..=6).contains(&refusal_lines),
        "refusals are logged, rate-limited ({refusal_lines} lines): {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_and_are_logged_rarely() {
    // The cap is computed from a generous limit, which is then lowered under the running
    // daemon: accepts fail with EMFILE, as when something else ate the files.
    let d = Spawned::start("header_read_timeout = \"2s\"", None).await;
    d.deliver_eventually("wamid.EMFILE.0", &[], Duration::from_secs(10))
        .await;
    let limit = libc::rlimit {
        rlim_cur: 128,
        rlim_max: 128,
    };
    // SAFETY: prlimit on our own child with a valid struct.
    let rc = unsafe {
        libc::prlimit(
            d.child.id() as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());

    let started = Instant::now();
    let flood = idle_flood(&d.addr(), 300).await;
    // (5xx: the journal could not open a file it needed; Meta retries those too.)
    d.deliver_eventually("wamid.EMFILE.1", &[500, 503], Duration::from_secs(90))
        .await;
    for task in flood {
        assert!(
            task.await.unwrap().is_some(),
            "every idle connection is closed in the end"
        );
    }
    let elapsed = started.elapsed();

    let m = metrics_at(&d.http, &d.base).await;
    let errors = sample(&m, "walua_http_accept_errors_total");
    let log = d.log();
    let lines = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(errors >= 1.0 && lines >= 1, "the flood hit the open-file limit: {log}");
    assert!(
        log.lines()
            .filter(|l| l.contains("accept failed"))
            .all(|l| l.contains("Too many open files")),
        "{log}"
    );
    // At most one line per 5 s (plus the first one), whatever the number of errors.
    eprintln!("EMFILE flood: {errors} accept errors, {lines} log lines, over {elapsed:?}");
    let allowed = (elapsed.as_secs() / 5 + 2) as usize;
    assert!(
        lines <= allowed,
        "{lines} accept-error lines in {elapsed:?} ({errors} errors): {log}"
    );
}
