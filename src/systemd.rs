//! The systemd notification protocol (`sd_notify(3)`), for `Type=notify` units.
//!
//! walua tells systemd:
//!
//! - `READY=1` once the store is open and the scripts are loaded, right before it accepts
//!   connections (so `systemctl start` returns when the webhook really answers);
//! - `RELOADING=1` with `MONOTONIC_USEC=…` when a SIGHUP reload starts, then `READY=1`;
//! - `STOPPING=1` when a graceful shutdown starts;
//! - `WATCHDOG=1` every half `WATCHDOG_USEC` from a task on the tokio event loop (so a wedged
//!   event loop stops the pings and systemd restarts the daemon), only when systemd asked
//!   for it (`WatchdogSec=` sets `WATCHDOG_USEC`, and `WATCHDOG_PID` is ours or absent);
//! - `STATUS=serving: N scripts, outbox depth D`, shown by `systemctl status`.
//!
//! Written here rather than with a crate: it is one datagram to `$NOTIFY_SOCKET`, which may
//! be a path or an abstract socket name (starting with `@`). Without `NOTIFY_SOCKET`
//! (not under systemd) every function does nothing.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The environment variable systemd sets to its notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends one notification (newline-separated `KEY=value` assignments). Returns `Ok(false)`
/// when not running under systemd (`NOTIFY_SOCKET` unset).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let path = path.into_encoded_bytes();
    let socket = UnixDatagram::unbound()?;
    match path.first() {
        Some(b'@') => {
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(&path[1..])?;
                socket.connect_addr(&addr)?;
            }
            #[cfg(not(target_os = "linux"))]
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract NOTIFY_SOCKET names exist on Linux only",
            ));
        }
        Some(b'/') => {
            use std::os::unix::ffi::OsStrExt;
            socket.connect(std::ffi::OsStr::from_bytes(&path))?;
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "NOTIFY_SOCKET is neither a path nor an abstract name",
            ));
        }
    }
    let sent = socket.send(state.as_bytes())?;
    if sent != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "incomplete notification"));
    }
    Ok(true)
}

fn send(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state = state.lines().next().unwrap_or(""), "cannot notify systemd");
    }
}

/// `STATUS=` text must be one line.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={}\n", one_line(status)));
}

/// `STOPPING=1`.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping\n");
}

/// `RELOADING=1` with `MONOTONIC_USEC` (required by systemd 253+ with `Type=notify-reload`,
/// harmless before).
pub fn reloading() {
    let usec = monotonic_usec();
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading scripts\n"
    ));
}

/// `STATUS=` alone.
pub fn status(status: &str) {
    send(&format!("STATUS={}\n", one_line(status)));
}

/// The current `CLOCK_MONOTONIC` time in microseconds, as systemd expects it.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC`), when it is meant for this
/// process (`WATCHDOG_PID` absent or equal to our pid).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

/// Whether walua runs under a service manager that listens (`NOTIFY_SOCKET` set).
pub fn enabled() -> bool {
    std::env::var_os(NOTIFY_SOCKET).is_some()
}

/// Pings the watchdog every half `WATCHDOG_USEC` (when set) and refreshes `STATUS=` with
/// `status()` until `shutdown`. Runs on the event loop on purpose: if the loop is wedged the
/// pings stop and systemd restarts walua. They also stop while `stuck()` names a reason
/// (a Lua worker thread that cannot be stopped), so that systemd restarts walua then too.
pub async fn keepalive<F, Fut>(status: F, stuck: impl Fn() -> Option<String>, shutdown: CancellationToken)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    if !enabled() {
        return;
    }
    let watchdog = watchdog_interval();
    let period = match watchdog {
        Some(w) => (w / 2).max(Duration::from_millis(10)),
        None => Duration::from_secs(30),
    };
    if let Some(w) = watchdog {
        tracing::info!(timeout_ms = w.as_millis() as u64, "systemd watchdog enabled");
    }
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let line = one_line(&status().await);
        if let Some(reason) = stuck() {
            tracing::error!(reason = %reason, "not feeding the systemd watchdog: walua needs a restart");
            send(&format!("STATUS={}\n", one_line(&reason)));
        } else if watchdog.is_some() {
            send(&format!("WATCHDOG=1\nSTATUS={line}\n"));
        } else {
            send(&format!("STATUS={line}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(2));
        assert!(monotonic_usec() > a);
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(one_line("a\nb\r"), "a b ");
    }
}
