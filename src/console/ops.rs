//! The operations pages: the outbox, the scripts, the parked runs and the health, for the
//! people who keep walua running. Everyone signed in reads them; only an admin acts (resend,
//! cancel, reload, replay), and that is checked here, on the server.

use std::fmt::Write as _;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

use super::accounts::{self, ConsoleSession};
use super::compose::answer_text;
use super::pages::{attr, esc, field, form, layout, local_time, page, plain, redirect, url_segment};
use super::strings::{FR, Strings};
use crate::App;
use crate::http::HttpResponse;
use crate::store::MessageRecord;

/// Rows shown per operations table.
const ROWS: usize = 100;

/// Whether `segs` is an operations route (`/console/outbox`, …).
pub fn is_ops(segs: &[&str]) -> bool {
    matches!(
        segs,
        ["console", "outbox" | "scripts" | "parked" | "health" | "campaigns", ..]
    )
}

/// Routes an operations request (the session is checked by the caller).
pub async fn route(
    app: &App,
    session: &ConsoleSession,
    method: &Method,
    segs: &[&str],
    query: &str,
    req: Request<Incoming>,
) -> HttpResponse {
    match (method, segs) {
        (&Method::GET, ["console", "outbox"]) => outbox_page(app, session, query).await,
        (&Method::GET, ["console", "scripts"]) => scripts_page(app, session, query).await,
        (&Method::GET, ["console", "parked"]) => parked_page(app, session, query).await,
        (&Method::GET, ["console", "health"]) => health_page(app, session).await,
        (&Method::GET, ["console", "campaigns"]) => super::campaigns::list_page(app, session, query).await,
        (&Method::GET, ["console", "campaigns", id]) => super::campaigns::report_page(app, session, id, query).await,
        (&Method::POST, ["console", "campaigns", "new"]) => super::campaigns::create(app, session, req).await,
        (&Method::POST, ["console", page, rest @ ..]) => {
            let f = form(req).await;
            if !accounts::csrf_ok(session, field(&f, "csrf")) {
                return plain(StatusCode::FORBIDDEN, "bad form token");
            }
            if !session.role.can_administer() {
                return plain(StatusCode::FORBIDDEN, FR.forbidden);
            }
            let back = match (*page, rest) {
                ("campaigns", [id, _]) => format!("/console/campaigns/{id}"),
                _ => format!("/console/{page}"),
            };
            let outcome = act(app, session, page, rest).await;
            tracing::info!(user = %session.user, page, action = ?rest, ok = outcome.is_ok(), "console operation");
            match outcome {
                Ok(done) => redirect(&format!("{back}?ok={}", url_segment(&done))),
                Err(e) => redirect(&format!("{back}?err={}", url_segment(&e))),
            }
        }
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

/// An admin's action; `Ok` carries what to tell them.
async fn act(app: &App, session: &ConsoleSession, page: &str, rest: &[&str]) -> Result<String, String> {
    let t = &FR;
    let id = |s: &str| s.parse::<u64>().map_err(|_| t.no_such_message.to_string());
    match (page, rest) {
        ("outbox", [m, "resend"]) => match crate::http::admin::resend(app, id(m)?).await {
            Ok(m) => Ok(format!("{} {}", t.resent, m.id)),
            Err(r) => Err(answer_text(r).await),
        },
        ("outbox", [m, "cancel"]) => {
            let by = format!("console:{}", session.user);
            match crate::http::admin::cancel_send(app, id(m)?, &by).await {
                Ok(m) => Ok(format!("{} {}", t.cancelled, m.id)),
                Err(r) => Err(answer_text(r).await),
            }
        }
        ("scripts", ["reload"]) => {
            let scripts = app.scripts.clone();
            let r = tokio::task::spawn_blocking(move || scripts.reload_all())
                .await
                .map_err(|e| e.to_string())?;
            let mut text = format!("{} : {} {}", t.reloaded, r.loaded.len(), t.scripts_loaded);
            if !r.errors.is_empty() {
                let errors: Vec<String> = r.errors.iter().map(|e| e.message.clone()).collect();
                return Err(format!("{text} — {} : {}", t.script_error, errors.join(" ; ")));
            }
            text.push('.');
            Ok(text)
        }
        ("scripts", [m, "dispatch"]) => {
            let m = id(m)?;
            match app.store.blocking(move |s| s.dispatch_release(m)).await {
                Ok(true) => {
                    app.dispatch_wake.notify_one();
                    Ok(format!("{} {m}", t.dispatched))
                }
                Ok(false) => Err(t.no_such_message.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
        ("campaigns", [c, action]) => super::campaigns::act(app, session, c, action).await,
        ("parked", [run, "replay"]) => {
            let r = crate::http::admin::replay_parked(app, run).await;
            if r.status() == StatusCode::OK {
                Ok(format!("{} {run}", t.replayed))
            } else {
                Err(answer_text(r).await)
            }
        }
        _ => Err(t.unknown_action.to_string()),
    }
}

/// The operations pages' title bar: the tabs, and the outcome of the last action.
pub(super) fn header(t: &Strings, current: &str, query: &str) -> String {
    let mut out = String::from("<nav class=\"tabs\">");
    for (key, label) in [
        ("outbox", t.ops_outbox),
        ("scripts", t.ops_scripts),
        ("parked", t.ops_parked),
        ("health", t.ops_health),
        ("campaigns", t.ops_campaigns),
    ] {
        let _ = write!(
            out,
            "<a href=\"/console/{key}\" id=\"tab-{key}\"{}>{label}</a>",
            if key == current { " class=\"on\"" } else { "" }
        );
    }
    out.push_str("</nav>");
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "ok" => {
                let _ = write!(out, "<p class=\"notice ok\" role=\"status\">{}</p>", esc(&v));
            }
            "err" => {
                let _ = write!(out, "<p class=\"notice error\" role=\"alert\">{}</p>", esc(&v));
            }
            _ => {}
        }
    }
    out
}

/// A POST button of an admin action (absent for other roles).
pub(super) fn button(session: &ConsoleSession, action: &str, label: &str, class: &str) -> String {
    if !session.role.can_administer() {
        return String::new();
    }
    format!(
        "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button class=\"{class}\">{label}</button></form>",
        attr(action),
        attr(&session.csrf)
    )
}

pub(super) fn read_only_notice(t: &Strings, session: &ConsoleSession) -> String {
    if session.role.can_administer() {
        String::new()
    } else {
        format!("<p class=\"notice\">{}</p>", t.ops_read_only)
    }
}

pub(super) fn contact_link(contact: &str) -> String {
    format!("<a href=\"/c/{}\">{}</a>", url_segment(contact), esc(contact))
}

fn error_cell(m: &MessageRecord) -> String {
    m.error
        .as_ref()
        .map(|e| {
            format!(
                "<strong>{}</strong> {} <span class=\"why\">{}</span>",
                e.code,
                esc(&e.title),
                esc(&e.explanation)
            )
        })
        .unwrap_or_default()
}

async fn outbox_page(app: &App, session: &ConsoleSession, query: &str) -> HttpResponse {
    let t = &FR;
    let before = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "before")
        .and_then(|(_, v)| v.parse::<u64>().ok());
    let found = app
        .store
        .blocking(move |s| {
            let jobs = s.outbox_jobs(ROWS)?;
            let troubles = s.outbound_troubles(before, crate::http::admin::TROUBLE_SCAN, ROWS)?;
            Ok((jobs, troubles))
        })
        .await;
    let Ok((jobs, troubles)) = found else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "store unavailable");
    };
    let mut body = format!("<h2>{}</h2>{}", t.ops_outbox, header(t, "outbox", query));
    body.push_str(&read_only_notice(t, session));
    let _ = write!(body, "<h3>{} ({})</h3>", t.outbox_queue, jobs.len());
    if jobs.is_empty() {
        let _ = write!(body, "<p class=\"empty\">{}</p>", t.outbox_empty);
    } else {
        let _ = write!(
            body,
            "<div class=\"scroll\"><table id=\"jobs\"><thead><tr><th>#</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr></thead><tbody>",
            t.col_to, t.col_message, t.col_state, t.col_attempts, t.col_reason
        );
        for (job, m) in &jobs {
            let state = match job.state {
                crate::store::outbox::JobState::Sending => t.status_sending,
                _ if job
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(crate::store::outbox::HELD_PREFIX)) =>
                {
                    t.status_held
                }
                _ => t.status_queued,
            };
            let _ = write!(
                body,
                "<tr data-id=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{state}<br><small>{}</small></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                job.message_id,
                job.message_id,
                contact_link(m.as_ref().map(|m| m.contact.as_str()).unwrap_or(&job.recipient)),
                esc(m.as_ref().map(|m| m.summary.as_str()).unwrap_or("")),
                local_time(app, job.next_attempt_ms / 1000),
                job.attempts,
                esc(job.last_error.as_deref().unwrap_or("")),
                if job.state == crate::store::outbox::JobState::Queued {
                    button(
                        session,
                        &format!("/console/outbox/{}/cancel", job.message_id),
                        t.cancel_send,
                        "secondary cancel",
                    )
                } else {
                    String::new()
                }
            );
        }
        body.push_str("</tbody></table></div>");
    }
    let _ = write!(body, "<h3>{}</h3>", t.outbox_troubles);
    if troubles.messages.is_empty() {
        let _ = write!(body, "<p class=\"empty\">{}</p>", t.outbox_no_trouble);
    } else {
        let _ = write!(
            body,
            "<div class=\"scroll\"><table id=\"troubles\"><thead><tr><th>#</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr></thead><tbody>",
            t.col_to, t.col_message, t.col_state, t.col_reason
        );
        for m in &troubles.messages {
            let state = match m.status.as_str() {
                "failed" => t.status_failed,
                "cancelled" => t.status_cancelled,
                _ => t.status_unknown,
            };
            let resendable = m.status != "unknown" || m.wamid.is_none();
            let _ = write!(
                body,
                "<tr data-id=\"{}\" data-status=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{state}<br><small>{}</small></td><td>{}</td><td>{}</td></tr>",
                m.id,
                attr(&m.status),
                m.id,
                contact_link(&m.contact),
                esc(&m.summary),
                local_time(app, m.timestamp),
                error_cell(m),
                if resendable {
                    button(
                        session,
                        &format!("/console/outbox/{}/resend", m.id),
                        t.resend,
                        "secondary resend",
                    )
                } else {
                    String::new()
                }
            );
        }
        body.push_str("</tbody></table></div>");
    }
    if let Some(next) = troubles.next_before {
        let _ = write!(
            body,
            "<p><a class=\"more\" href=\"/console/outbox?before={next}\">{}</a></p>",
            t.older
        );
    }
    page(StatusCode::OK, &layout(t, t.ops_outbox, Some(session), &body))
}

async fn scripts_page(app: &App, session: &ConsoleSession, query: &str) -> HttpResponse {
    let t = &FR;
    let status = app.scripts.registry.read().expect("not poisoned").status();
    let quarantined = app
        .store
        .blocking(|s| s.quarantined_messages(ROWS))
        .await
        .unwrap_or_default();
    let mut body = format!("<h2>{}</h2>{}", t.ops_scripts, header(t, "scripts", query));
    body.push_str(&read_only_notice(t, session));
    body.push_str(&button(session, "/console/scripts/reload", t.reload, "reload"));
    let _ = write!(
        body,
        "<div class=\"scroll\"><table id=\"scripts\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        t.col_script, t.col_kind, t.col_version, t.col_loaded, t.col_error
    );
    for s in &status {
        let kind = serde_json::to_value(s.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = write!(
            body,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            if s.last_error.is_some() { "bad" } else { "" },
            esc(&s.name),
            esc(&kind),
            s.version,
            s.loaded_at
                .map(|at| local_time(app, at.timestamp()))
                .unwrap_or_else(|| t.never.to_string()),
            esc(s.last_error.as_deref().unwrap_or(""))
        );
    }
    body.push_str("</tbody></table></div>");
    let _ = write!(body, "<h3>{} ({})</h3>", t.quarantined, quarantined.len());
    if quarantined.is_empty() {
        let _ = write!(body, "<p class=\"empty\">{}</p>", t.quarantined_none);
    } else {
        let _ = write!(
            body,
            "<div class=\"scroll\"><table id=\"quarantined\"><thead><tr><th>#</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr></thead><tbody>",
            t.col_from, t.col_message, t.col_error
        );
        for m in &quarantined {
            let error = m.script.as_ref().and_then(|s| s.error.clone()).unwrap_or_default();
            let _ = write!(
                body,
                "<tr data-id=\"{}\"><td>{}</td><td>{}</td><td>{}<br><small>{}</small></td><td><pre>{}</pre></td><td>{}</td></tr>",
                m.id,
                m.id,
                contact_link(&m.contact),
                esc(&m.summary),
                local_time(app, m.timestamp),
                esc(&error),
                button(
                    session,
                    &format!("/console/scripts/{}/dispatch", m.id),
                    t.run_again,
                    "secondary"
                )
            );
        }
        body.push_str("</tbody></table></div>");
    }
    page(StatusCode::OK, &layout(t, t.ops_scripts, Some(session), &body))
}

async fn parked_page(app: &App, session: &ConsoleSession, query: &str) -> HttpResponse {
    let t = &FR;
    let runs = app.store.blocking(|s| s.failed_runs("")).await.unwrap_or_default();
    let now = crate::store::now_ms();
    let mut body = format!("<h2>{}</h2>{}", t.ops_parked, header(t, "parked", query));
    body.push_str(&read_only_notice(t, session));
    let _ = write!(body, "<p>{}</p>", t.parked_help);
    if runs.is_empty() {
        let _ = write!(body, "<p class=\"empty\">{}</p>", t.parked_none);
    } else {
        let _ = write!(
            body,
            "<div class=\"scroll\"><table id=\"parked\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr></thead><tbody>",
            t.col_run, t.col_state, t.col_attempts, t.col_when, t.col_error
        );
        for r in runs.iter().take(ROWS) {
            let expired = r.expires_ms.is_some_and(|e| e <= now);
            let state = match (r.parked(), expired) {
                (_, true) => t.parked_expired,
                (true, false) => t.parked_state,
                (false, false) => t.retrying_state,
            };
            let _ = write!(
                body,
                "<tr data-id=\"{}\"><td><code>{}</code></td><td>{state}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td><td>{}</td></tr>",
                attr(&r.id),
                esc(&r.id),
                r.attempts,
                local_time(app, r.last_failed_ms / 1000),
                esc(&r.error),
                if expired {
                    String::new()
                } else {
                    button(
                        session,
                        &format!("/console/parked/{}/replay", url_segment(&r.id)),
                        t.replay,
                        "secondary replay",
                    )
                }
            );
        }
        body.push_str("</tbody></table></div>");
    }
    page(StatusCode::OK, &layout(t, t.ops_parked, Some(session), &body))
}

async fn health_page(app: &App, session: &ConsoleSession) -> HttpResponse {
    let t = &FR;
    let h = crate::http::check_health(app).await;
    let mut body = format!("<h2>{}</h2>{}", t.ops_health, header(t, "health", ""));
    let (label, class) = match h.status {
        crate::http::HealthState::Ok => (t.health_ok, "ok"),
        crate::http::HealthState::Degraded => (t.health_degraded, "degraded"),
        crate::http::HealthState::Failing => (t.health_failing, "failing"),
    };
    let _ = write!(
        body,
        "<p class=\"health {class}\" id=\"health-state\" data-state=\"{}\">{label}</p>",
        h.status.as_str()
    );
    if !h.problems.is_empty() {
        body.push_str("<ul class=\"problems\">");
        for p in &h.problems {
            let _ = write!(body, "<li>{}</li>", esc(p));
        }
        body.push_str("</ul>");
    }
    let odoo = match &app.hooks {
        None => t.odoo_not_configured.to_string(),
        Some(hooks) => match hooks.odoo.unavailable() {
            None => t.odoo_reachable.to_string(),
            Some(e) => format!("{} : {e}", t.odoo_unreachable),
        },
    };
    let count = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd id=\"journal-backlog\">{}</dd><dt>{}</dt><dd id=\"outbox-depth\">{}</dd><dt>{}</dt><dd>{} / {}</dd><dt>{}</dt><dd id=\"odoo\">{}</dd>",
        t.health_store,
        esc(if h.store == "writable" { t.writable } else { &h.store }),
        t.health_journal,
        esc(if h.journal == "writable" {
            t.writable
        } else {
            &h.journal
        }),
        t.health_backlog,
        count(h.journal_backlog),
        t.health_outbox,
        count(h.outbox_depth),
        t.health_scripts,
        h.scripts["loaded"],
        h.scripts["errors"],
        t.health_odoo,
        esc(&odoo)
    );
    let now = crate::store::now_ms();
    if app.config.whatsapp.wabas().is_empty() {
        let _ = write!(
            body,
            "<dt>{}</dt><dd class=\"sync\">{}</dd>",
            t.health_templates_none_title, t.health_templates_none
        );
    }
    for (waba, _) in app.config.whatsapp.wabas() {
        let w = waba.to_string();
        let synced = app
            .store
            .blocking(move |s| s.templates_synced_at(&w))
            .await
            .ok()
            .flatten();
        let age = match synced {
            Some(at) => format!("{} {}", super::pages::duration_fr(t, (now - at).max(0) / 1000), t.ago),
            None => t.never.to_string(),
        };
        let _ = write!(
            body,
            "<dt>{} {}</dt><dd class=\"sync\">{}</dd>",
            t.health_templates,
            esc(waba),
            esc(&age)
        );
    }
    body.push_str("</dl>");
    page(StatusCode::OK, &layout(t, t.ops_health, Some(session), &body))
}
