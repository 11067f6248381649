//! The browser harness of the console tests: Debian's chromedriver on a free port, a
//! headless Chromium session, and waits that say what they waited for. Included with
//! `#[path = "support/browser.rs"] mod browser;` by the tests that drive a browser.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::support::{TestDaemon, free_port};

/// The password every console test account gets.
pub const PASSWORD: &str = "correct horse battery";

/// A chromedriver on a free port; killed on drop.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn chromedriver() -> Option<Driver> {
    let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(binary) = binary else {
        if std::env::var("WALUA_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("chromedriver is missing (apt-get install chromium chromium-driver) and WALUA_REQUIRE_BROWSER=1");
        }
        eprintln!(
            "SKIPPED: chromedriver not found (apt-get install chromium chromium-driver); the browser tests did not run"
        );
        return None;
    };
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    Some(Driver { child, port })
}

pub async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=412,900", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars"],
               "binary": "/usr/bin/chromium"}),
    );
    let start = Instant::now();
    loop {
        match ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
        {
            Ok(c) => return c,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a browser session: {e}"),
        }
    }
}

pub async fn sign_in(c: &Client, d: &TestDaemon, user: &str) {
    c.goto(&d.url("/login")).await.unwrap();
    c.find(Locator::Id("user"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Id("sign-in")).await.unwrap().click().await.unwrap();
    wait_for(c, "the inbox", "#inbox").await;
}

/// Clicks the first element `css` selects, finding it again when the page re-rendered it
/// between the find and the click (live updates replace the inbox's fragment).
pub async fn click_live(c: &Client, what: &str, css: &str) {
    let start = Instant::now();
    loop {
        let found = wait_for(c, what, css).await;
        match found.click().await {
            Ok(()) => return,
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("clicking {what} ({css}): {e}"),
        }
    }
}

pub async fn wait_for(c: &Client, what: &str, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("waiting for {what} ({css}): {e}"))
}

pub async fn wait_text(c: &Client, what: &str, css: &str, needle: &str) {
    let start = Instant::now();
    loop {
        if let Ok(el) = c.find(Locator::Css(css)).await
            && let Ok(text) = el.text().await
            && text.contains(needle)
        {
            return;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let html = c.source().await.unwrap_or_default();
            panic!("waiting for {what}: `{needle}` in {css}\n{html}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Saves what the browser shows as `docs/screenshots/NAME.png` in the source tree, at
/// `width`×`height` CSS pixels: the README shows these, and every CI run takes them again.
pub async fn screenshot(c: &Client, name: &str, width: u32, height: u32) {
    c.set_window_size(width, height).await.expect("window resizes");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = c.screenshot().await.expect("screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&dir).expect("docs/screenshots");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
}

/// Desktop and phone widths of the README's screenshots.
pub const DESKTOP: (u32, u32) = (1280, 800);
/// A common phone's CSS width.
pub const PHONE: (u32, u32) = (412, 860);

/// Both screenshots of the current page.
pub async fn screenshots(c: &Client, name: &str) {
    screenshot(c, &format!("{name}-desktop"), DESKTOP.0, DESKTOP.1).await;
    screenshot(c, &format!("{name}-phone"), PHONE.0, PHONE.1).await;
}
