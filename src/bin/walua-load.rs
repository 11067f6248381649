//! `walua-load`: a load generator for walua's webhook, and a bare hyper server as reference.
//!
//! ```sh
//! walua-load --url http://127.0.0.1:8080/webhook --app-secret S --connections 64 --duration 10
//! walua-load --rate 5000 --duration 10 --kind button --contacts 200
//! walua-load --bare --listen 127.0.0.1:9099 --duration 60     # answers 200 to everything
//! ```
//!
//! Deliveries are signed like Meta's (`X-Hub-Signature-256`), each with a unique wamid, sent
//! over N keep-alive HTTP/1.1 connections. `--rate 0` sends as fast as the connections allow
//! (closed loop); `--rate R` schedules request i at `start + i / R` (open loop) and measures
//! latency from that scheduled instant, so a stalled server shows up in the percentiles
//! instead of silently slowing the generator down. The run stops after `--duration` seconds
//! or `--count` deliveries, whichever comes first.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Kind {
    /// Inbound text messages.
    Text,
    /// Reply-button clicks with id `btn_validate_order_<n>`.
    Button,
}

/// Load generator for walua's webhook (and a bare hyper reference server with --bare).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The webhook URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080/webhook")]
    url: String,
    /// Signs deliveries with this app secret (X-Hub-Signature-256); unsigned when absent.
    #[arg(long, env = "WALUA_APP_SECRET")]
    app_secret: Option<String>,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Deliveries per second (open loop); 0 sends as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many deliveries (0: no limit but the duration).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// What the deliveries carry.
    #[arg(long, value_enum, default_value_t = Kind::Text)]
    kind: Kind,
    /// Distinct contacts the messages come from.
    #[arg(long, default_value_t = 100)]
    contacts: u64,
    /// Prefix of the wamids (defaults to one unique to this run).
    #[arg(long)]
    wamid_prefix: Option<String>,
    /// Worker threads of the generator (it shares the machine with the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON line instead of the text report.
    #[arg(long)]
    json: bool,
    /// Run a bare hyper server that answers 200 to everything, as the reference.
    #[arg(long)]
    bare: bool,
    /// Address of the bare server.
    #[arg(long, default_value = "127.0.0.1:9099")]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    if args.bare {
        rt.block_on(bare(args.listen, Duration::from_secs_f64(args.duration)))
    } else {
        rt.block_on(load(args))
    }
}

/// Answers `200 EVENT_RECEIVED` to every request after reading its body, for `duration`.
async fn bare(listen: SocketAddr, duration: Duration) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("bare hyper server on {listen} for {duration:?}");
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(c) => c, Err(_) => continue },
            _ = &mut deadline => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
            let _ = req.into_body().collect().await;
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(Full::new(Bytes::from_static(b"EVENT_RECEIVED")))
                    .expect("valid response"),
            )
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

struct Shared {
    next: AtomicU64,
    stop: AtomicBool,
    hist: Mutex<Histogram<u64>>,
    statuses: Mutex<BTreeMap<String, u64>>,
}

struct Plan {
    host: String,
    path: String,
    addr: String,
    secret: Option<Vec<u8>>,
    kind: Kind,
    contacts: u64,
    prefix: String,
    rate: f64,
    count: u64,
    start: Instant,
    end: Instant,
}

/// The body of delivery `n`.
fn payload(plan: &Plan, n: u64) -> String {
    let from = 221_770_000_000u64 + n % plan.contacts.max(1);
    let ts = chrono::Utc::now().timestamp();
    let message = match plan.kind {
        Kind::Text => format!(
            r#"{{"from":"{from}","id":"wamid.{p}.{n}","timestamp":"{ts}","type":"text","text":{{"body":"Bonjour, commande {n}"}}}}"#,
            p = plan.prefix
        ),
        Kind::Button => format!(
            r#"{{"from":"{from}","id":"wamid.{p}.{n}","timestamp":"{ts}","type":"interactive","context":{{"from":"221338601234","id":"wamid.PREVIOUS"}},"interactive":{{"type":"button_reply","button_reply":{{"id":"btn_validate_order_{n}","title":"Valider"}}}}}}"#,
            p = plan.prefix
        ),
    };
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"WABA","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"221338601234","phone_number_id":"1234567890"}},"contacts":[{{"profile":{{"name":"Client {c}"}},"wa_id":"{from}"}}],"messages":[{message}]}}}}]}}]}}"#,
        c = n % plan.contacts.max(1)
    )
}

async fn load(args: Args) -> anyhow::Result<()> {
    let url = url::Url::parse(&args.url)?;
    anyhow::ensure!(url.scheme() == "http", "only http:// URLs are supported");
    let host = url.host_str().unwrap_or("127.0.0.1").to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let start = Instant::now();
    let plan = Arc::new(Plan {
        addr: format!("{host}:{port}"),
        host: format!("{host}:{port}"),
        path: url.path().to_string(),
        secret: args.app_secret.as_ref().map(|s| s.as_bytes().to_vec()),
        kind: args.kind,
        contacts: args.contacts,
        prefix: args.wamid_prefix.clone().unwrap_or_else(|| {
            format!(
                "L{:x}{:04x}",
                chrono::Utc::now().timestamp_millis(),
                rand::random::<u16>()
            )
        }),
        rate: args.rate,
        count: args.count,
        start,
        end: start + Duration::from_secs_f64(args.duration),
    });
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        hist: Mutex::new(Histogram::new_with_bounds(1, 120_000_000, 3)?),
        statuses: Mutex::new(BTreeMap::new()),
    });
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let (plan, shared) = (plan.clone(), shared.clone());
        tasks.push(tokio::spawn(async move { connection(plan, shared).await }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().max(Duration::from_millis(1));
    let hist = shared.hist.lock().expect("not poisoned");
    let statuses = shared.statuses.lock().expect("not poisoned");
    let ok = statuses.get("200").copied().unwrap_or(0);
    let total: u64 = statuses.values().sum();
    let secs = elapsed.as_secs_f64();
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "sent": total, "ok": ok, "seconds": secs, "throughput": ok as f64 / secs,
                "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": hist.max() as f64 / 1000.0,
                "statuses": *statuses, "rate": args.rate, "connections": args.connections,
                "kind": format!("{:?}", args.kind).to_lowercase(), "wamid_prefix": plan.prefix,
            })
        );
    } else {
        println!(
            "{total} sent, {ok} ok in {secs:.2}s: {:.0}/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ok as f64 / secs,
            q(0.5),
            q(0.99),
            hist.max() as f64 / 1000.0
        );
        for (status, n) in statuses.iter() {
            println!("  {status}: {n}");
        }
    }
    Ok(())
}

/// One keep-alive connection: takes the next delivery number, waits for its slot (open
/// loop), sends it, records the status and latency; reconnects after a transport error.
async fn connection(plan: Arc<Plan>, shared: Arc<Shared>) {
    let mut sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> = None;
    let mut local = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
    let mut local_statuses: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if plan.count > 0 && n >= plan.count {
            break;
        }
        let scheduled = if plan.rate > 0.0 {
            let at = plan.start + Duration::from_secs_f64(n as f64 / plan.rate);
            if at >= plan.end {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
            at
        } else {
            Instant::now()
        };
        if Instant::now() >= plan.end {
            shared.stop.store(true, Ordering::Relaxed);
            break;
        }
        let body = payload(&plan, n);
        let mut req = Request::post(&plan.path)
            .header("host", &plan.host)
            .header("content-type", "application/json");
        if let Some(secret) = &plan.secret {
            req = req.header(
                "x-hub-signature-256",
                walua::webhook::signature::sign(secret, body.as_bytes()),
            );
        }
        let req = req.body(Full::new(Bytes::from(body))).expect("valid request");
        let status = match send(&plan, &mut sender, req).await {
            Ok(s) => s.to_string(),
            Err(e) => {
                sender = None;
                tokio::time::sleep(Duration::from_millis(10)).await;
                format!("error: {e}")
            }
        };
        let _ = local.record(scheduled.elapsed().as_micros().max(1) as u64);
        *local_statuses.entry(status).or_default() += 1;
    }
    shared
        .hist
        .lock()
        .expect("not poisoned")
        .add(&local)
        .expect("same bounds");
    let mut st = shared.statuses.lock().expect("not poisoned");
    for (k, v) in local_statuses {
        *st.entry(k).or_default() += v;
    }
}

async fn send(
    plan: &Plan,
    sender: &mut Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<u16> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = TcpStream::connect(&plan.addr).await?;
        stream.set_nodelay(true)?;
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *sender = Some(s);
    }
    let s = sender.as_mut().expect("connected above");
    s.ready().await?;
    let resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}
