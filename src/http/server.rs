//! The HTTP server loop: accepts connections under a cap, serves each with hyper (HTTP/1 or
//! HTTP/2, auto-detected), enforces the per-connection time limits, and drains on shutdown.
//!
//! What it protects against, and how:
//!
//! - **Too many connections.** At most [`Limits::max_connections`] are served at once (by
//!   default a little below the process's open-file limit). One more is accepted, answered
//!   `503` with `Retry-After` and closed; when even that cannot be afforded (more than
//!   [`REFUSAL_SLOTS`] refusals in progress) it is closed at once. Connections that are idle
//!   keep-alives are closed sooner while the server is under pressure (above three quarters
//!   of the cap).
//! - **Accept errors** (`EMFILE`, `ENFILE`, ...): the loop backs off, 10 ms doubling to 1 s,
//!   and logs at most one line per [`ACCEPT_LOG_EVERY`] with the count of errors not logged.
//! - **Slow or silent clients** (slowloris). Each connection has a watchdog that looks at
//!   what the connection is doing, not at how long it has been open:
//!   - a connection that has not delivered a complete request head within
//!     `header_read_timeout` (from its accept, or from its first byte after an idle pause)
//!     is closed;
//!   - a request body is read within `body_read_timeout`, else `408` (in the handlers,
//!     [`super::read_body`]);
//!   - a keep-alive connection with **no request in progress** is closed after
//!     `idle_timeout` (HTTP/2: with a GOAWAY first). A request counts as in progress from
//!     its head until its response body has been handed to the socket, so a response that
//!     streams for a long time (the console's live updates) is never idle;
//!   - a response the client does not read (the socket's send buffer stays full) is cut
//!     after `idle_timeout`.
//! - **HTTP/2**: at most `http2_max_concurrent_streams` requests per connection, keep-alive
//!   pings (`http2_keep_alive_interval`, closed when unanswered within
//!   `http2_keep_alive_timeout`), a header list of at most `max_header_bytes`. HTTP/1: at most
//!   `max_headers` header fields and a head of at most `max_header_bytes` (431 otherwise).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::App;
use crate::config::ServerConfig;

/// The default cap on connections when the open-file limit allows it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Open files kept for the daemon itself below the open-file limit when the connection cap
/// is computed: the store, journal segments, the script watcher, outbound connections to
/// Meta and Odoo, media files, and the refusals in progress.
pub const FD_RESERVE: usize = 64;
/// Connections over the cap that may be in the middle of their `503` at once; beyond, a
/// connection over the cap is closed without an answer.
pub const REFUSAL_SLOTS: usize = 16;
/// At most one log line per this interval for accept errors, and one for refusals.
pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);
/// How long a refusal may take (answer, then drain what the client sent) before the socket
/// is closed anyway.
const REFUSAL_BUDGET: Duration = Duration::from_secs(1);
/// The answer to a connection over the cap.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 40\r\n\
\r\n\
too many connections, retry in a second\n";

/// The limits in force, resolved from `[server]` and the process's open-file limit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// See [`ServerConfig::header_read_timeout`].
    pub header_read_timeout: Duration,
    /// See [`ServerConfig::idle_timeout`].
    pub idle_timeout: Duration,
    /// How often each connection's watchdog looks at it.
    pub tick: Duration,
}

impl Limits {
    /// Resolves the limits; `fd_soft_limit` is the process's `RLIMIT_NOFILE` soft limit
    /// (`None` when unknown). Returns a warning when a configured `max_connections` is above
    /// what the limit allows (it is lowered).
    pub fn resolve(config: &ServerConfig, fd_soft_limit: Option<u64>) -> (Limits, Option<String>) {
        let affordable = fd_soft_limit.map(|n| (n as usize).saturating_sub(FD_RESERVE).max(1));
        let (max_connections, warning) = match (config.max_connections, affordable) {
            (None, _) => (default_max_connections(fd_soft_limit), None),
            (Some(n), Some(max)) if n > max => (
                max,
                Some(format!(
                    "server.max_connections = {n} is above what the open-file limit ({}) allows \
                     with {FD_RESERVE} kept for the daemon: using {max} (raise LimitNOFILE= or ulimit -n)",
                    fd_soft_limit.unwrap_or(0)
                )),
            ),
            (Some(n), _) => (n, None),
        };
        let shortest = config.header_read_timeout.min(config.idle_timeout);
        let limits = Limits {
            max_connections,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            tick: (shortest / 4).clamp(Duration::from_millis(25), Duration::from_secs(1)),
        };
        (limits, warning)
    }
}

/// `min(1024, open-file soft limit − 64)`, at least 1; 1024 when the limit is unknown.
pub fn default_max_connections(fd_soft_limit: Option<u64>) -> usize {
    match fd_soft_limit {
        Some(n) => (n.min(usize::MAX as u64) as usize)
            .saturating_sub(FD_RESERVE)
            .clamp(1, DEFAULT_MAX_CONNECTIONS),
        None => DEFAULT_MAX_CONNECTIONS,
    }
}

/// The process's `RLIMIT_NOFILE` soft limit (`None` if it cannot be read or is unlimited).
pub fn fd_soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    #[allow(clippy::unnecessary_cast, reason = "rlim_t is not u64 on every platform")]
    let current = limit.rlim_cur as u64;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(current)
}

/// The hyper connection builder with walua's protocol limits.
fn builder(config: &ServerConfig) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The watchdog enforces `header_read_timeout` and `idle_timeout` (hyper's header
        // timer also runs while a keep-alive connection is idle, so it would cut idle
        // connections at the header timeout); hyper's stays as a backstop behind both.
        .header_read_timeout(config.header_read_timeout + config.idle_timeout)
        .max_headers(config.max_headers)
        .max_buf_size(config.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .max_header_list_size(config.max_header_bytes.min(u32::MAX as usize) as u32)
        .keep_alive_interval(config.http2_keep_alive_interval)
        .keep_alive_timeout(config.http2_keep_alive_timeout);
    builder
}

/// Exponential backoff after accept errors: 10 ms doubling to 1 s, reset by a success.
#[derive(Debug)]
pub struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// A backoff at its first step.
    pub fn new() -> AcceptBackoff {
        AcceptBackoff { next: Self::FIRST }
    }

    /// The pause after one more error.
    pub fn failed(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        pause
    }

    /// An accept succeeded.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff::new()
    }
}

/// Lets one log line through per interval and counts the ones held back.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// One line per `every`.
    pub fn new(every: Duration) -> LogLimiter {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged now (`n` lines were held back since the last
    /// one), `None` when this one is held back.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Accepts connections until `shutdown` fires, then stops accepting, asks every connection
/// to finish (HTTP/1: after its current response; HTTP/2: GOAWAY), and closes what is still
/// open after `drain`.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: CancellationToken, drain: Duration) {
    let fd_limit = fd_soft_limit();
    let (limits, warning) = Limits::resolve(&app.config.server, fd_limit);
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    tracing::info!(
        max_connections = limits.max_connections,
        fd_soft_limit = ?fd_limit,
        header_read_timeout = ?limits.header_read_timeout,
        idle_timeout = ?limits.idle_timeout,
        body_read_timeout = ?app.config.server.body_read_timeout,
        "HTTP limits"
    );
    let limits = Arc::new(limits);
    let builder = Arc::new(builder(&app.config.server));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSAL_SLOTS));
    let tracker = TaskTracker::new();
    // `hard` cuts whatever is still open once the drain time is over.
    let hard = CancellationToken::new();
    let mut backoff = AcceptBackoff::new();
    let mut accept_log = LogLimiter::new(ACCEPT_LOG_EVERY);
    let mut refusal_log = LogLimiter::new(ACCEPT_LOG_EVERY);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => {
                backoff.reset();
                conn
            }
            Err(e) => {
                // EMFILE and friends: the pending connection stays in the backlog; pause
                // (doubling) instead of spinning, and keep the log readable.
                app.metrics.http_accept_error();
                let pause = backoff.failed();
                if let Some(suppressed) = accept_log.allow(Instant::now()) {
                    tracing::warn!(
                        error = %e,
                        suppressed,
                        retry_in = ?pause,
                        open = limits.max_connections - slots.available_permits(),
                        "accept failed (the open-file limit may be too low for server.max_connections); `suppressed` more since the last such line"
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            app.metrics.http_refused();
            if let Some(suppressed) = refusal_log.allow(Instant::now()) {
                tracing::warn!(
                    %peer,
                    max_connections = limits.max_connections,
                    suppressed,
                    "connection refused: server.max_connections reached; `suppressed` more since the last such line"
                );
            }
            match refusals.clone().try_acquire_owned() {
                Ok(refusal) => {
                    tracker.spawn(async move {
                        refuse(stream).await;
                        drop(refusal);
                    });
                }
                // Even a 503 is too much now: close at once.
                Err(_) => drop(stream),
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            app: app.clone(),
            builder: builder.clone(),
            limits: limits.clone(),
            slots: slots.clone(),
            shutdown: shutdown.clone(),
            hard: hard.clone(),
        };
        app.metrics.http_connections(1);
        let metrics_app = app.clone();
        tracker.spawn(async move {
            conn.run(stream, peer).await;
            metrics_app.metrics.http_connections(-1);
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    tokio::select! {
        _ = tracker.wait() => tracing::debug!("all connections closed"),
        _ = tokio::time::sleep(drain) => {
            tracing::warn!(?drain, open = tracker.len(), "connections still open after the drain timeout; closing them");
            hard.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
        }
    }
}

/// Answers a connection over the cap with `503` and `Retry-After`, then closes it after
/// draining what the client sent (closing with unread input would reset the connection and
/// could destroy the answer before the client reads it).
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_BUDGET, async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// One accepted connection and what it needs to be served.
struct Connection {
    app: Arc<App>,
    builder: Arc<Builder<TokioExecutor>>,
    limits: Arc<Limits>,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    hard: CancellationToken,
}

/// What the watchdog decided about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Leave it.
    Keep,
    /// Idle keep-alive for too long: shut it down gracefully (HTTP/2: GOAWAY).
    Idle,
    /// No complete request head in time: close it.
    HeaderTimeout,
    /// The client has not read the response for too long: close it.
    WriteStalled,
}

/// What a connection's watchdog sees, in milliseconds since the accept.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Requests whose response body has not been handed to the socket yet.
    pub in_flight: usize,
    /// A request was ever received on this connection.
    pub served: bool,
    /// The connection speaks HTTP/2.
    pub h2: bool,
    /// When `in_flight` last dropped to 0 (0: the accept).
    pub idle_since: u64,
    /// The first byte received since then, if any (HTTP/1: a request head is arriving).
    pub head_started: Option<u64>,
    /// Since when a write has been waiting for room in the socket, if one is.
    pub write_blocked_since: Option<u64>,
}

/// The watchdog's rule; `pressure`: the server is above three quarters of its cap, so an
/// idle keep-alive gets `header_read_timeout` instead of `idle_timeout`.
pub fn verdict(s: &Snapshot, limits: &Limits, pressure: bool, now: u64) -> Verdict {
    let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
    if let Some(since) = s.write_blocked_since
        && now.saturating_sub(since) > ms(limits.idle_timeout)
    {
        return Verdict::WriteStalled;
    }
    if s.in_flight > 0 {
        // A request is being read, handled or answered (maybe streaming): its own limits
        // (body_read_timeout, the handler's) apply, not the connection's.
        // The console's live updates (server-sent events) will be a response that stays
        // in flight; their heartbeats keep the socket writable, and a client that stops
        // reading is cut by the write-stall rule above.
        return Verdict::Keep;
    }
    let header_limit = ms(limits.header_read_timeout);
    // A new connection must deliver its first request head in time; HTTP/1 keep-alives their
    // next one once its first byte arrived. (HTTP/2 reads frames between requests, such as
    // ping answers, so only the idle rule applies to it.)
    let head_since = if !s.served {
        Some(0)
    } else if !s.h2 {
        s.head_started
    } else {
        None
    };
    if let Some(since) = head_since {
        return if now.saturating_sub(since) > header_limit {
            Verdict::HeaderTimeout
        } else {
            Verdict::Keep
        };
    }
    let idle_limit = if pressure {
        header_limit.min(ms(limits.idle_timeout))
    } else {
        ms(limits.idle_timeout)
    };
    if now.saturating_sub(s.idle_since) > idle_limit {
        Verdict::Idle
    } else {
        Verdict::Keep
    }
}

const NONE: u64 = u64::MAX;

/// Shared between a connection's I/O, its requests and its watchdog.
#[derive(Debug)]
struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    served: AtomicBool,
    h2: AtomicBool,
    idle_since: AtomicU64,
    head_started: AtomicU64,
    write_blocked_since: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            write_blocked_since: AtomicU64::new(NONE),
        }
    }

    fn now(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// A request arrived; it is in flight until the guard (moved into its response body)
    /// is dropped.
    fn begin(self: &Arc<Self>, version: Version) -> ActiveGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.served.store(true, Ordering::Relaxed);
        if version == Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        ActiveGuard(self.clone())
    }

    fn snapshot(&self) -> Snapshot {
        let opt = |v: u64| (v != NONE).then_some(v);
        Snapshot {
            in_flight: self.in_flight.load(Ordering::SeqCst),
            served: self.served.load(Ordering::Relaxed),
            h2: self.h2.load(Ordering::Relaxed),
            idle_since: self.idle_since.load(Ordering::SeqCst),
            head_started: opt(self.head_started.load(Ordering::SeqCst)),
            write_blocked_since: opt(self.write_blocked_since.load(Ordering::SeqCst)),
        }
    }
}

/// Keeps a request counted as in flight.
#[derive(Debug)]
struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            a.head_started.store(NONE, Ordering::SeqCst);
            a.idle_since.store(a.now(), Ordering::SeqCst);
        }
    }
}

/// A response body that keeps its request in flight until hyper drops it (after handing its
/// last bytes to the socket, or when the connection ends).
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _active: ActiveGuard,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting for the watchdog when bytes arrive between requests and when writes
/// wait for room.
struct TrackedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl TrackedIo {
    fn wrote<T>(&self, result: &Poll<std::io::Result<T>>) {
        let a = &self.activity;
        match result {
            Poll::Pending => {
                let _ = a
                    .write_blocked_since
                    .compare_exchange(NONE, a.now(), Ordering::SeqCst, Ordering::SeqCst);
            }
            Poll::Ready(_) => a.write_blocked_since.store(NONE, Ordering::SeqCst),
        }
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let a = &self.activity;
            if a.in_flight.load(Ordering::SeqCst) == 0 {
                let _ = a
                    .head_started
                    .compare_exchange(NONE, a.now(), Ordering::SeqCst, Ordering::SeqCst);
            }
        }
        result
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr) {
        let activity = Arc::new(Activity::new());
        let service = {
            let (app, activity) = (self.app.clone(), activity.clone());
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let active = activity.begin(req.version());
                let app = app.clone();
                async move {
                    let response: super::HttpResponse = super::route(app, peer, req).await;
                    Ok::<_, Infallible>(response.map(|inner| TrackedBody { inner, _active: active }))
                }
            })
        };
        let io = TokioIo::new(TrackedIo {
            inner: stream,
            activity: activity.clone(),
        });
        let conn = self.builder.serve_connection(io, service);
        tokio::pin!(conn);
        let mut tick = tokio::time::interval(self.limits.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut draining = false;
        // When the connection was asked to finish because it was idle; if it has not by the
        // next header timeout, it is closed.
        let mut closing_since: Option<u64> = None;
        let limits = &self.limits;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = self.hard.cancelled() => return,
                _ = tick.tick() => {
                    let now = activity.now();
                    let open = limits.max_connections - self.slots.available_permits();
                    let pressure = open * 4 > limits.max_connections * 3;
                    match verdict(&activity.snapshot(), limits, pressure, now) {
                        Verdict::Keep => {}
                        Verdict::Idle => match closing_since {
                            None => {
                                self.app.metrics.http_closed("idle");
                                closing_since = Some(now);
                                conn.as_mut().graceful_shutdown();
                            }
                            Some(since) if now.saturating_sub(since) > limits.header_read_timeout.as_millis() as u64 => {
                                return;
                            }
                            Some(_) => {}
                        },
                        Verdict::HeaderTimeout => {
                            self.app.metrics.http_closed("header_timeout");
                            tracing::debug!(%peer, "closing a connection that sent no complete request head in time");
                            return;
                        }
                        Verdict::WriteStalled => {
                            self.app.metrics.http_closed("write_stalled");
                            tracing::debug!(%peer, "closing a connection whose client does not read its response");
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 100,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            tick: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_default_cap_stays_below_the_fd_limit() {
        assert_eq!(default_max_connections(Some(256)), 192);
        assert_eq!(default_max_connections(Some(1024)), 960);
        assert_eq!(default_max_connections(Some(65536)), 1024);
        assert_eq!(default_max_connections(Some(10)), 1);
        assert_eq!(default_max_connections(None), 1024);
        let mut c = crate::Config::embedded_default().server;
        c.max_connections = Some(5000);
        let (l, warning) = Limits::resolve(&c, Some(1024));
        assert_eq!(l.max_connections, 960);
        assert!(warning.unwrap().contains("server.max_connections"));
        c.max_connections = Some(10);
        assert_eq!(Limits::resolve(&c, Some(1024)).0.max_connections, 10);
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::new();
        let pauses: Vec<u64> = (0..9).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.failed(), Duration::from_millis(10));
    }

    #[test]
    fn log_limiter_lets_one_line_through_per_interval_with_the_count_held_back() {
        let mut l = LogLimiter::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        for i in 1..=100 {
            assert_eq!(l.allow(t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(l.allow(t0 + Duration::from_secs(5)), Some(100));
        assert_eq!(l.allow(t0 + Duration::from_secs(6)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(11)), Some(1));
    }

    #[test]
    fn watchdog_rules() {
        let l = limits();
        let fresh = Snapshot::default();
        assert_eq!(verdict(&fresh, &l, false, 9_000), Verdict::Keep);
        assert_eq!(
            verdict(&fresh, &l, false, 10_001),
            Verdict::HeaderTimeout,
            "nothing but a trickle of header bytes since the accept"
        );
        let busy = Snapshot {
            in_flight: 1,
            served: true,
            ..fresh
        };
        assert_eq!(
            verdict(&busy, &l, true, 3_600_000),
            Verdict::Keep,
            "a response in flight (e.g. a stream) is never idle"
        );
        let stalled = Snapshot {
            write_blocked_since: Some(1_000),
            ..busy
        };
        assert_eq!(verdict(&stalled, &l, false, 61_001), Verdict::WriteStalled);
        assert_eq!(verdict(&stalled, &l, false, 60_000), Verdict::Keep);
        let idle = Snapshot {
            served: true,
            idle_since: 5_000,
            ..fresh
        };
        assert_eq!(verdict(&idle, &l, false, 64_000), Verdict::Keep);
        assert_eq!(verdict(&idle, &l, false, 65_001), Verdict::Idle);
        assert_eq!(
            verdict(&idle, &l, true, 15_001),
            Verdict::Idle,
            "under pressure an idle keep-alive gets the header timeout"
        );
        let next_head = Snapshot {
            head_started: Some(20_000),
            ..idle
        };
        assert_eq!(verdict(&next_head, &l, false, 30_001), Verdict::HeaderTimeout);
        let h2 = Snapshot { h2: true, ..next_head };
        assert_eq!(
            verdict(&h2, &l, false, 30_001),
            Verdict::Keep,
            "HTTP/2 frames between requests are no request head"
        );
        assert_eq!(verdict(&h2, &l, false, 65_001), Verdict::Idle);
    }
}
