//! The daemon in this process, for the benches that time it over loopback: started on a
//! configuration, with a console user added through the admin API and signed in.

use std::time::Duration;

use serde_json::json;

/// A running daemon and a signed-in console session.
pub struct BenchDaemon {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client that does not follow redirects (the console answers some posts with 303).
    pub http: reqwest::Client,
    /// `walua_session=…`: the session cookie of the signed-in user.
    pub cookie: String,
    stop: tokio::sync::oneshot::Sender<()>,
    daemon: tokio::task::JoinHandle<()>,
}

impl BenchDaemon {
    /// Runs `config` on a free port, waits until it answers, adds a console user of `role`
    /// with `password` (through `admin_token`) and signs it in.
    pub async fn start(config: walua::Config, admin_token: &str, role: &str, password: &str) -> BenchDaemon {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(async move {
            walua::run(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("daemon runs");
        });
        let base = format!("http://{addr}");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let user = format!("bench{}", std::process::id());
        let mut ready = false;
        for _ in 0..600 {
            if let Ok(r) = http
                .post(format!("{base}/api/users"))
                .bearer_auth(admin_token)
                .json(&json!({"name": user, "role": role, "password": password}))
                .send()
                .await
            {
                assert!(r.status().is_success(), "user add: {}", r.status());
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "the daemon answers");
        let r = http
            .post(format!("{base}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("user", &user)
                    .append_pair("password", password)
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        let cookie = r
            .headers()
            .get("set-cookie")
            .expect("signed in")
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        BenchDaemon {
            base,
            http,
            cookie,
            stop,
            daemon,
        }
    }

    /// Stops the daemon and waits for it to end.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.daemon.await;
    }
}
