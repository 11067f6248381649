//! The sd_notify protocol as systemd sees it: the real `walua` binary is started as a child
//! with `NOTIFY_SOCKET` pointing at a datagram socket this test reads, and `WATCHDOG_USEC`.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::free_port;

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_timeout = "5s"

[store]
path = "{store}"

[whatsapp]
dry_run = true

[scripts]
dir = "{scripts}"
hot_reload = false

[log]
format = "json"
"#,
        store = dir.join("walua.redb").display(),
        scripts = dir.join("scripts").display(),
    );
    let path = dir.join("walua.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, notify_socket: &str, watchdog_usec: Option<&str>) -> Daemon {
    let config = write_config(dir, free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walua"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .current_dir(dir)
        .env("NOTIFY_SOCKET", notify_socket)
        .env_remove("WATCHDOG_PID")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
    match watchdog_usec {
        Some(u) => cmd.env("WATCHDOG_USEC", u),
        None => cmd.env_remove("WATCHDOG_USEC"),
    };
    Daemon {
        child: cmd.spawn().expect("walua starts"),
    }
}

/// Reads notifications until one satisfies `pred`; returns every message read on the way.
fn wait_for(sock: &UnixDatagram, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    while start.elapsed() < timeout {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = pred(&msg);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    panic!("timed out waiting for {what}; got {seen:?}");
}

fn has(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

fn signal(d: &Daemon, sig: libc::c_int) {
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(d.child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill failed");
}

#[test]
fn ready_watchdog_reload_and_stop_are_notified() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut d = spawn(dir.path(), sock_path.to_str().unwrap(), Some("400000"));

    let seen = wait_for(&sock, "READY=1", Duration::from_secs(30), |m| has(m, "READY=1"));
    let ready = seen.last().unwrap();
    let status = ready
        .lines()
        .find(|l| l.starts_with("STATUS="))
        .expect("READY carries a STATUS");
    assert!(status.contains("serving: 0 scripts, outbox depth 0"), "{status}");

    // WATCHDOG=1 every 200 ms (half of 400 ms): at least 4 within 2 s.
    let start = Instant::now();
    let mut pings = 0;
    while pings < 4 {
        assert!(start.elapsed() < Duration::from_secs(3), "only {pings} watchdog pings");
        let got = wait_for(&sock, "WATCHDOG=1", Duration::from_secs(2), |m| has(m, "WATCHDOG=1"));
        pings += got.iter().filter(|m| has(m, "WATCHDOG=1")).count();
    }

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
    std::fs::write(
        dir.path().join("scripts/on_message.lua"),
        "return { run = function(m) end }\n",
    )
    .unwrap();
    signal(&d, libc::SIGHUP);
    let seen = wait_for(&sock, "RELOADING=1", Duration::from_secs(10), |m| has(m, "RELOADING=1"));
    let reloading = seen.last().unwrap();
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("RELOADING=1 carries MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);
    let seen = wait_for(&sock, "READY=1 after the reload", Duration::from_secs(10), |m| {
        has(m, "READY=1")
    });
    assert!(
        seen.last().unwrap().contains("serving: 1 scripts"),
        "the status shows the reloaded script: {seen:?}"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    signal(&d, libc::SIGTERM);
    wait_for(&sock, "STOPPING=1", Duration::from_secs(10), |m| has(m, "STOPPING=1"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "walua did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status:?}; log:\n{log}");
}

#[test]
fn abstract_socket_without_watchdog() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("walua-test-notify-{}-{}", std::process::id(), free_port());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let d = spawn(dir.path(), &format!("@{name}"), None);
    wait_for(&sock, "READY=1", Duration::from_secs(30), |m| has(m, "READY=1"));
    // No WATCHDOG_USEC: no pings for a while.
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(800) {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]);
            assert!(!has(&msg, "WATCHDOG=1"), "watchdog ping without WATCHDOG_USEC: {msg}");
        }
    }
    signal(&d, libc::SIGTERM);
    wait_for(&sock, "STOPPING=1", Duration::from_secs(10), |m| has(m, "STOPPING=1"));
}
