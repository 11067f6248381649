//! Console accounts, as the operator manages them: with the admin token (`/api/users`,
//! `walua user …` with the password piped in), then from the console as a signed-in admin
//! (session cookie and anti-CSRF token). Removing an account or changing its password signs
//! its sessions out; the last admin stays.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::*;
use walua::console::accounts::{CSRF_HEADER, SESSION_COOKIE, verify_password};
use walua::store::Store;

const PASSWORD: &str = "baobab-de-Thiès-2026";

/// `POST /api/users` with the admin token.
async fn add_user(d: &TestDaemon, name: &str, role: &str, password: &str) -> (u16, Value) {
    d.api_post(
        "/api/users",
        &json!({ "name": name, "role": role, "password": password }),
    )
    .await
}

/// `DELETE` with the admin token; returns (status, JSON).
async fn api_delete(d: &TestDaemon, path: &str) -> (u16, Value) {
    let r = d
        .http
        .delete(d.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Runs `walua --config CONF ARGS…` with `stdin` piped in; returns (success, stdout, stderr).
fn walua(conf: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_walua"))
        .arg("--config")
        .arg(conf)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_admin_token_creates_accounts_and_no_password_hash_ever_leaves() {
    let d = TestDaemon::start().await;
    let (status, awa) = add_user(&d, "awa", "agent", PASSWORD).await;
    assert_eq!(status, 201, "{awa}");
    assert_eq!(
        (awa["name"].as_str(), awa["role"].as_str()),
        (Some("awa"), Some("agent"))
    );
    assert!(
        awa["warning"].as_str().unwrap().contains("no admin account exists yet"),
        "a first account that is not an admin is created, with a hint: {awa}"
    );
    let (status, ibou) = add_user(&d, "ibou", "admin", PASSWORD).await;
    assert_eq!(status, 201, "{ibou}");
    assert!(ibou.get("warning").is_none(), "{ibou}");

    let (status, list) = d.api("/api/users").await;
    assert_eq!(status, 200);
    let rows: Vec<(&str, &str)> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap(), u["role"].as_str().unwrap()))
        .collect();
    assert_eq!(rows, [("awa", "agent"), ("ibou", "admin")]);
    assert!(
        list["users"][0]["created_at"].as_str().unwrap().ends_with('Z'),
        "{list}"
    );
    let text = list.to_string();
    assert!(!text.contains("argon2") && !text.contains("password"), "{text}");

    // Mistakes are refused with a reason.
    let (status, e) = add_user(&d, "awa", "viewer", PASSWORD).await;
    assert_eq!((status, e["error"].as_str()), (409, Some("user `awa` already exists")));
    let (status, e) = add_user(&d, "awa diop", "agent", PASSWORD).await;
    assert_eq!(status, 422, "{e}");
    let (status, e) = add_user(&d, "fatou", "boss", PASSWORD).await;
    assert_eq!(status, 422, "{e}");
    assert!(e["error"].as_str().unwrap().contains("expected admin, agent or viewer"));
    let (status, e) = add_user(&d, "fatou", "agent", "short").await;
    assert_eq!(status, 422, "{e}");
    assert!(e["error"].as_str().unwrap().contains("at least 10"), "{e}");
    let (status, _) = d.api_post("/api/users", &json!({ "name": "fatou" })).await;
    assert_eq!(status, 400);
    let r = d.http.get(d.url("/api/users")).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token, no cookie");
}

#[tokio::test]
async fn the_last_admin_stays_and_unknown_accounts_are_not_found() {
    let d = TestDaemon::start().await;
    assert_eq!(add_user(&d, "ibou", "admin", PASSWORD).await.0, 201);
    let (status, e) = api_delete(&d, "/api/users/ibou").await;
    assert_eq!(status, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("last admin"), "{e}");
    assert_eq!(add_user(&d, "fatou", "admin", PASSWORD).await.0, 201);
    assert_eq!(api_delete(&d, "/api/users/ibou").await.0, 200);
    assert_eq!(api_delete(&d, "/api/users/fatou").await.0, 409);
    assert_eq!(api_delete(&d, "/api/users/ibou").await.0, 404);
    let (status, _) = d
        .api_post("/api/users/nobody/password", &json!({ "password": PASSWORD }))
        .await;
    assert_eq!(status, 404);
    let (status, _) = d
        .api_post("/api/users/fatou/password", &json!({ "password": "short" }))
        .await;
    assert_eq!(status, 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn walua_user_manages_accounts_through_the_daemon_with_the_password_piped_in() {
    let d = TestDaemon::start().await;
    let conf = d.dir.path().join("cli.toml");
    std::fs::write(&conf, d.config_text.replace("127.0.0.1:0", &d.addr.to_string())).unwrap();

    let (ok, out, err) = walua(
        &conf,
        &["user", "add", "ibou", "--role", "admin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(ok, "{out}{err}");
    assert_eq!(out, "user ibou added (admin)\n");
    let (ok, out, err) = walua(&conf, &["user", "add", "awa", "--role", "agent"], "awa-password-1\r\n");
    assert!(ok, "{out}{err}");

    let (ok, out, _) = walua(&conf, &["user", "list"], "");
    assert!(ok);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["USER", "ROLE", "CREATED", "(UTC)"]);
    assert_eq!((lines[1][0], lines[1][1]), ("awa", "agent"));
    assert_eq!((lines[2][0], lines[2][1]), ("ibou", "admin"));
    assert!(!out.contains("argon2"), "{out}");

    let (ok, _, err) = walua(
        &conf,
        &["user", "add", "awa", "--role", "viewer"],
        &format!("{PASSWORD}\n"),
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = walua(&conf, &["user", "add", "fatou", "--role", "agent"], "tooshort\n");
    assert!(
        !ok && err.contains("too short"),
        "refused before asking the daemon: {err}"
    );
    let (ok, _, err) = walua(
        &conf,
        &["user", "add", "fatou", "--role", "boss"],
        &format!("{PASSWORD}\n"),
    );
    assert!(!ok && err.contains("boss"), "{err}");

    let (ok, out, err) = walua(&conf, &["user", "passwd", "awa"], "a-new-password-for-awa\n");
    assert!(ok, "{out}{err}");
    assert!(out.contains("password of awa changed"), "{out}");
    let (ok, _, err) = walua(&conf, &["user", "passwd", "nobody"], &format!("{PASSWORD}\n"));
    assert!(!ok && err.contains("no user `nobody`"), "{err}");

    let (ok, _, err) = walua(&conf, &["user", "remove", "ibou"], "");
    assert!(!ok && err.contains("last admin"), "{err}");
    let (ok, out, err) = walua(&conf, &["user", "remove", "awa"], "");
    assert!(ok, "{out}{err}");

    // What was stored: the new password works, the removed account is gone.
    let (dir, _) = d.stop().await;
    let store = Store::open(&dir.path().join("walua.redb")).unwrap();
    let ibou = store.user("ibou").unwrap().unwrap();
    assert!(verify_password(&ibou.password_hash, PASSWORD));
    assert!(store.user("awa").unwrap().is_none());
}

#[tokio::test]
async fn a_console_admin_manages_accounts_with_its_session_and_sessions_die_with_their_account() {
    let d = TestDaemon::start().await;
    for (name, role) in [("ibou", "admin"), ("fatou", "admin"), ("awa", "agent")] {
        assert_eq!(add_user(&d, name, role, PASSWORD).await.0, 201);
    }
    // Sessions as the console's sign-in opens them (the daemon holds the store: stopped).
    let (dir, text) = d.stop().await;
    let sessions = {
        let store = Store::open(&dir.path().join("walua.redb")).unwrap();
        let ttl = std::time::Duration::from_secs(3600);
        ["ibou", "fatou", "awa"].map(|name| store.session_create(name, ttl).unwrap())
    };
    let [(ibou, ibou_csrf), (fatou, _), (awa, _)] = &sessions;
    let d = TestDaemon::start_in(dir, text).await;
    let cookie = |token: &str| format!("theme=light; {SESSION_COOKIE}={token}");
    let get_users = |token: String| {
        let request = d.http.get(d.url("/api/users")).header("cookie", cookie(&token));
        async move { request.send().await.unwrap().status().as_u16() }
    };

    assert_eq!(
        get_users(ibou.clone()).await,
        200,
        "an admin's session reads the accounts"
    );
    assert_eq!(get_users(awa.clone()).await, 401, "an agent's does not");
    assert_eq!(get_users("forged".into()).await, 401);

    let new = json!({ "name": "moussa", "role": "viewer", "password": PASSWORD });
    let post = d
        .http
        .post(d.url("/api/users"))
        .header("cookie", cookie(ibou))
        .json(&new);
    assert_eq!(
        post.send().await.unwrap().status(),
        401,
        "a change needs the anti-CSRF token"
    );
    let post = d
        .http
        .post(d.url("/api/users"))
        .header("cookie", cookie(ibou))
        .header(CSRF_HEADER, "not-the-token")
        .json(&new);
    assert_eq!(post.send().await.unwrap().status(), 401);
    let post = d
        .http
        .post(d.url("/api/users"))
        .header("cookie", cookie(ibou))
        .header(CSRF_HEADER, ibou_csrf.as_str())
        .json(&new);
    assert_eq!(post.send().await.unwrap().status(), 201);

    // Removing fatou ends her session; a new password for ibou ends his.
    assert_eq!(get_users(fatou.clone()).await, 200);
    assert_eq!(api_delete(&d, "/api/users/fatou").await.0, 200);
    assert_eq!(get_users(fatou.clone()).await, 401, "the session died with the account");
    let (status, _) = d
        .api_post(
            "/api/users/ibou/password",
            &json!({ "password": "another-long-password" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(get_users(ibou.clone()).await, 401, "signed out by the password change");

    let (dir, _) = d.stop().await;
    let store = Store::open(&dir.path().join("walua.redb")).unwrap();
    assert!(
        store.session_get(awa).unwrap().is_some(),
        "other accounts stay signed in"
    );
    assert!(store.session_get(fatou).unwrap().is_none());
}
