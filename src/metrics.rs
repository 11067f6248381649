//! The daemon's Prometheus metrics, served as text on `GET /metrics`.
//!
//! One [`Metrics`] per running daemon, held by [`crate::App`] and handed to the parts that
//! count (webhook handler, processor, outbox, dispatcher, Lua runtime). Gauges that describe
//! the store (`walua_outbox_depth`) are read from the store at scrape time, so they are
//! right even after a restart.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `walua_webhook_deliveries_total` | `result` | POST /webhook answers: `accepted`, `bad_signature`, `too_large`, `invalid_json`, `journal_error`, `body_timeout` |
//! | `walua_messages_in_total` | `type` | new inbound messages stored (redeliveries not counted) |
//! | `walua_messages_out_total` | `type`, `status`, `number` | outbound status transitions: `queued`, `sent`, `failed`, `dry_run`, by sending number (phone number id; `default` when none was chosen) |
//! | `walua_status_webhooks_total` | `status`, `number` | status objects in Meta's webhooks (`sent`, `delivered`, `read`, `failed`, …), by business number, redeliveries included |
//! | `walua_outbox_depth` | | send jobs waiting or in flight |
//! | `walua_failed_runs` | `state` | hook, cron and message runs that failed: `retrying` or `parked` (`walua parked list`) |
//! | `walua_outbox_retries_total` | | sends that failed and were scheduled again |
//! | `walua_script_runs_total` | `script` | script runs (`buttons/x`, `scenarios/y:step`, `on_message`) |
//! | `walua_script_errors_total` | `script` | runs that failed (their effects were dropped) |
//! | `walua_odoo_calls_total` / `walua_odoo_errors_total` | `model`, `method` | Odoo `execute_kw` calls |
//! | `walua_odoo_seconds` | | histogram: one Odoo call, retries and re-login included |
//! | `walua_odoo_up` | | 1 when Odoo answered the last call (even with a fault), 0 when it could not be reached |
//! | `walua_odoo_hook_lag_seconds` | | histogram: from a record's `write_date` in Odoo to its hook run |
//! | `walua_ingest_seconds` | | POST /webhook handler time, journal commit included |
//! | `walua_send_seconds` | | one Graph API send request |
//! | `walua_script_seconds` | | the scripts of one inbound message |
//! | `walua_handover_requests_total` | | script runs that asked for a human agent (`env.handover`) |
//! | `walua_http_connections` | | client connections open |
//! | `walua_http_connections_refused_total` | | connections over `server.max_connections` (503 or closed) |
//! | `walua_http_connections_closed_total` | `reason` | connections closed by a limit: `header_timeout`, `idle`, `write_stalled` |
//! | `walua_http_accept_errors_total` | | failed accepts (`EMFILE`, ...) |

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label set: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

type Counters = Family<Labels, Counter>;

/// Every metric of one daemon. See the module docs for the list.
pub struct Metrics {
    registry: Registry,
    deliveries: Counters,
    messages_in: Counters,
    messages_out: Counters,
    status_webhooks: Counters,
    /// Send jobs in the outbox; set from the store at scrape time.
    pub outbox_depth: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Failed runs being retried / parked; set from the store at scrape time.
    pub failed_runs: prometheus_client::metrics::family::Family<
        [(&'static str, &'static str); 1],
        Gauge<i64, std::sync::atomic::AtomicI64>,
    >,
    /// The health state at the last check: 0 ok, 1 degraded, 2 failing.
    health: Gauge<i64, std::sync::atomic::AtomicI64>,
    outbox_retries: Counter,
    script_runs: Counters,
    script_errors: Counters,
    odoo_calls: Counters,
    odoo_errors: Counters,
    odoo_seconds: Histogram,
    odoo_up: Gauge<i64, std::sync::atomic::AtomicI64>,
    hook_lag_seconds: Histogram,
    ingest_seconds: Histogram,
    send_seconds: Histogram,
    script_seconds: Histogram,
    http: HttpMetrics,
    template_changes: Counters,
    /// Templates in the registry by status; set from the store at scrape time.
    pub templates: Family<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    template_holds: Counter,
    handover_requests: Counter,
}

/// The HTTP server's connection metrics.
struct HttpMetrics {
    open: Gauge<i64, std::sync::atomic::AtomicI64>,
    refused: Counter,
    closed: Counters,
    accept_errors: Counter,
}

/// Why the server closes a connection itself (`walua_http_connections_closed_total`).
pub const HTTP_CLOSE_REASONS: [&str; 3] = ["header_timeout", "idle", "write_stalled"];

impl HttpMetrics {
    fn register(registry: &mut Registry) -> HttpMetrics {
        let m = HttpMetrics {
            open: Gauge::default(),
            refused: Counter::default(),
            closed: Counters::default(),
            accept_errors: Counter::default(),
        };
        registry.register("walua_http_connections", "Client connections open", m.open.clone());
        registry.register(
            "walua_http_connections_refused",
            "Connections refused over server.max_connections",
            m.refused.clone(),
        );
        registry.register(
            "walua_http_connections_closed",
            "Connections closed by a server limit, by reason",
            m.closed.clone(),
        );
        registry.register(
            "walua_http_accept_errors",
            "Failed accepts (e.g. too many open files)",
            m.accept_errors.clone(),
        );
        for reason in HTTP_CLOSE_REASONS {
            let _ = m.closed.get_or_create(&vec![("reason", reason.to_string())]);
        }
        m
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The results a webhook delivery is counted under.
pub const DELIVERY_RESULTS: [&str; 6] = [
    "accepted",
    "bad_signature",
    "too_large",
    "invalid_json",
    "journal_error",
    "body_timeout",
];

fn seconds_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered (at zero).
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let deliveries = Counters::default();
        let messages_in = Counters::default();
        let messages_out = Counters::default();
        let status_webhooks = Counters::default();
        let outbox_depth = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        let health = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        let failed_runs = prometheus_client::metrics::family::Family::<
            [(&'static str, &'static str); 1],
            Gauge<i64, std::sync::atomic::AtomicI64>,
        >::default();
        let outbox_retries = Counter::<u64, AtomicU64>::default();
        let script_runs = Counters::default();
        let script_errors = Counters::default();
        let odoo_calls = Counters::default();
        let odoo_errors = Counters::default();
        let odoo_seconds = Histogram::new(seconds_buckets());
        let hook_lag_seconds = Histogram::new(vec![
            0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
        ]);
        let odoo_up = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        odoo_up.set(1);
        let ingest_seconds = Histogram::new(seconds_buckets());
        let send_seconds = Histogram::new(seconds_buckets());
        let script_seconds = Histogram::new(seconds_buckets());
        let template_changes = Counters::default();
        let templates = Family::<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        let template_holds = Counter::<u64, AtomicU64>::default();
        let handover_requests = Counter::<u64, AtomicU64>::default();
        registry.register(
            "walua_handover_requests",
            "Script runs that asked for a human agent (env.handover)",
            handover_requests.clone(),
        );
        registry.register(
            "walua_template_changes",
            "Changes Meta made to templates (sync or webhooks), by what changed and the new value",
            template_changes.clone(),
        );
        registry.register(
            "walua_templates",
            "Templates in the registry, by WABA, status and quality",
            templates.clone(),
        );
        registry.register(
            "walua_template_holds",
            "Template sends held because Meta paused the template",
            template_holds.clone(),
        );
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "walua_webhook_deliveries",
            "Webhook deliveries by result",
            deliveries.clone(),
        );
        registry.register(
            "walua_messages_in",
            "New inbound messages stored, by type",
            messages_in.clone(),
        );
        registry.register(
            "walua_messages_out",
            "Outbound message status transitions, by type, status and sending number",
            messages_out.clone(),
        );
        registry.register(
            "walua_status_webhooks",
            "Status objects received in Meta's webhooks, by status and business number (redeliveries included)",
            status_webhooks.clone(),
        );
        registry.register(
            "walua_outbox_depth",
            "Send jobs waiting or in flight",
            outbox_depth.clone(),
        );
        registry.register(
            "walua_failed_runs",
            "Hook, cron and message runs that failed, by state: retrying or parked",
            failed_runs.clone(),
        );
        registry.register(
            "walua_health",
            "Health at the last check (/healthz, the status line, metrics scrapes): 0 ok, 1 degraded, 2 failing",
            health.clone(),
        );
        registry.register(
            "walua_outbox_retries",
            "Sends that failed and were scheduled again",
            outbox_retries.clone(),
        );
        registry.register("walua_script_runs", "Script runs by script", script_runs.clone());
        registry.register(
            "walua_script_errors",
            "Script runs that failed, by script",
            script_errors.clone(),
        );
        registry.register(
            "walua_odoo_calls",
            "Odoo execute_kw calls by model and method",
            odoo_calls.clone(),
        );
        registry.register(
            "walua_odoo_seconds",
            "Time in seconds of one Odoo call, retries and re-login included",
            odoo_seconds.clone(),
        );
        registry.register(
            "walua_odoo_hook_lag_seconds",
            "Time in seconds from a record's write_date in Odoo to its hook run",
            hook_lag_seconds.clone(),
        );
        registry.register(
            "walua_odoo_up",
            "1 when Odoo answered the last call (even with a fault), 0 when it could not be reached",
            odoo_up.clone(),
        );
        registry.register(
            "walua_odoo_errors",
            "Odoo JSON-RPC calls that failed, by method",
            odoo_errors.clone(),
        );
        registry.register(
            "walua_ingest_seconds",
            "POST /webhook handler time in seconds, journal commit included",
            ingest_seconds.clone(),
        );
        registry.register(
            "walua_send_seconds",
            "Graph API send request time in seconds",
            send_seconds.clone(),
        );
        registry.register(
            "walua_script_seconds",
            "Time in seconds of the scripts of one inbound message",
            script_seconds.clone(),
        );
        let http = HttpMetrics::register(&mut registry);
        // Known label values start at zero, so that rates work from the first scrape.
        for result in DELIVERY_RESULTS {
            let _ = deliveries.get_or_create(&vec![("result", result.to_string())]);
        }

        Metrics {
            registry,
            deliveries,
            messages_in,
            messages_out,
            status_webhooks,
            outbox_depth,
            failed_runs,
            health,
            outbox_retries,
            script_runs,
            script_errors,
            odoo_calls,
            odoo_errors,
            odoo_seconds,
            odoo_up,
            hook_lag_seconds,
            ingest_seconds,
            send_seconds,
            script_seconds,
            http,
            template_changes,
            templates,
            template_holds,
            handover_requests,
        }
    }

    /// A client connection was opened (`+1`) or closed (`-1`).
    pub fn http_connections(&self, delta: i64) {
        self.http.open.inc_by(delta);
    }

    /// Counts a connection refused over `server.max_connections`.
    pub fn http_refused(&self) {
        self.http.refused.inc();
    }

    /// Counts a connection the server closed itself (`reason`: one of [`HTTP_CLOSE_REASONS`]).
    pub fn http_closed(&self, reason: &str) {
        self.http
            .closed
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// Counts a failed accept.
    pub fn http_accept_error(&self) {
        self.http.accept_errors.inc();
    }

    /// Counts a webhook delivery (`result`: one of [`DELIVERY_RESULTS`]) and its handler time.
    pub fn delivery(&self, result: &str, elapsed: Duration) {
        self.deliveries
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
        self.ingest_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts a new inbound message of `kind`.
    pub fn message_in(&self, kind: &str) {
        self.messages_in.get_or_create(&vec![("type", kind.to_string())]).inc();
    }

    /// Counts an outbound status transition of a message sent from business number
    /// `number` (phone number id; `None`: the default account).
    pub fn message_out(&self, kind: &str, status: &str, number: Option<&str>) {
        self.messages_out
            .get_or_create(&vec![
                ("type", kind.to_string()),
                ("status", status.to_string()),
                ("number", number_label(number)),
            ])
            .inc();
    }

    /// Counts a status object of a webhook about business number `number`.
    pub fn status_webhook(&self, status: &str, number: &str) {
        self.status_webhooks
            .get_or_create(&vec![
                ("status", status.to_string()),
                ("number", number_label(Some(number))),
            ])
            .inc();
    }

    /// Counts a change Meta made to a template (`what`: status, quality, category,
    /// components, new, deleted; `to`: the new value).
    pub fn template_change(&self, what: &str, to: &str) {
        let to = if what == "components" { "changed" } else { to };
        self.template_changes
            .get_or_create(&vec![("what", what.to_string()), ("to", to.to_string())])
            .inc();
    }

    /// Counts a send held because its template is paused.
    pub fn template_hold(&self) {
        self.template_holds.inc();
    }

    /// Counts a script run that asked for a human agent (`env.handover`).
    pub fn handover_request(&self) {
        self.handover_requests.inc();
    }

    /// Counts a send scheduled again after a retryable failure.
    pub fn outbox_retry(&self) {
        self.outbox_retries.inc();
    }

    /// Times one Graph API send.
    pub fn send_time(&self, elapsed: Duration) {
        self.send_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts a run of `script`, failed or not.
    pub fn script_run(&self, script: &str, failed: bool) {
        let labels = vec![("script", script_label(script).to_string())];
        self.script_runs.get_or_create(&labels).inc();
        if failed {
            self.script_errors.get_or_create(&labels).inc();
        }
    }

    /// Times the scripts of one inbound message.
    pub fn script_time(&self, elapsed: Duration) {
        self.script_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts an Odoo call of `model.method`, failed or not, its time, and whether Odoo
    /// could be reached.
    pub fn odoo_call(&self, model: &str, method: &str, failed: bool, elapsed: Duration, reached: bool) {
        let labels = vec![("model", model.to_string()), ("method", method.to_string())];
        self.odoo_calls.get_or_create(&labels).inc();
        if failed {
            self.odoo_errors.get_or_create(&labels).inc();
        }
        self.odoo_seconds.observe(elapsed.as_secs_f64());
        self.odoo_up.set(reached.into());
    }

    /// Observes the lag of a fired Odoo hook event.
    pub fn hook_lag(&self, lag: Duration) {
        self.hook_lag_seconds.observe(lag.as_secs_f64());
    }

    /// Records the health state found by the last check.
    pub fn health(&self, state: crate::http::HealthState) {
        self.health.set(state as i64);
    }

    /// Counts the scripts of a dispatch outcome: every script that ran, and the error on
    /// the last one (the one that failed).
    pub fn script_outcome(&self, outcome: &crate::store::ScriptOutcome) {
        let last = outcome.scripts.len().saturating_sub(1);
        for (i, script) in outcome.scripts.iter().enumerate() {
            // "handover: agent NAME" says why the scripts stayed quiet: it is not a script.
            if script.starts_with("handover:") {
                continue;
            }
            self.script_run(script, outcome.error.is_some() && i == last);
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

/// The `number` label: the phone number id, `default` when none is known.
fn number_label(number: Option<&str>) -> String {
    match number {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => "default".to_string(),
    }
}

/// The label of a script: `scenarios/order:ask` → `scenarios/order` (steps would make the
/// label set grow with every scenario edit).
fn script_label(script: &str) -> &str {
    match script.split_once(':') {
        Some((name, _)) => name,
        None => script,
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed_with_its_name() {
        let m = Metrics::new();
        m.delivery("accepted", Duration::from_millis(3));
        m.message_in("text");
        m.message_out("text", "dry_run", Some("1234567890"));
        m.status_webhook("delivered", "1234567890");
        m.script_run("scenarios/order:ask", true);
        m.odoo_call("sale.order", "search_read", false, Duration::from_millis(40), true);
        m.odoo_call("sale.order", "action_confirm", true, Duration::from_millis(40), false);
        let text = m.encode();
        for needle in [
            "walua_webhook_deliveries_total{result=\"accepted\"} 1",
            "walua_webhook_deliveries_total{result=\"bad_signature\"} 0",
            "walua_messages_in_total{type=\"text\"} 1",
            "walua_messages_out_total{type=\"text\",status=\"dry_run\",number=\"1234567890\"} 1",
            "walua_status_webhooks_total{status=\"delivered\",number=\"1234567890\"} 1",
            "walua_outbox_depth 0",
            "walua_outbox_retries_total 0",
            "walua_script_runs_total{script=\"scenarios/order\"} 1",
            "walua_script_errors_total{script=\"scenarios/order\"} 1",
            "walua_odoo_calls_total{model=\"sale.order\",method=\"search_read\"} 1",
            "walua_odoo_errors_total{model=\"sale.order\",method=\"action_confirm\"} 1",
            "walua_odoo_seconds_count 2",
            "walua_odoo_up 0",
            "walua_ingest_seconds_count 1",
            "walua_send_seconds_count 0",
            "walua_script_seconds_count 0",
            "walua_http_connections 0",
            "walua_http_connections_refused_total 0",
            "walua_http_connections_closed_total{reason=\"header_timeout\"} 0",
            "walua_http_accept_errors_total 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
