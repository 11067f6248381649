//! The campaigns page of the console: every campaign with its progress, and one campaign's
//! report (the figures of `GET /api/campaigns/{id}`, failures by Meta code, skipped
//! recipients with their reasons). An admin creates one here from a CSV file (a draft, whose
//! report shows who is skipped before anything is sent), and starts, pauses, resumes and
//! cancels it; `walua campaign create` and the API can also create from an Odoo domain.

use std::fmt::Write as _;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::Value;

use super::accounts::{self, ConsoleSession};
use super::ops::{button, header, read_only_notice};
use super::pages::{attr, esc, layout, page, plain, redirect, url_segment};
use super::strings::{FR, Strings};
use crate::App;
use crate::campaign::Action;
use crate::http::HttpResponse;
use crate::store::campaigns::{CampaignStatus, RecipientState};

/// Skipped recipients listed on a report.
const SKIPPED_ROWS: usize = 50;

fn status_label(t: &Strings, status: &str) -> &'static str {
    match status {
        "draft" => t.campaign_status_draft,
        "scheduled" => t.campaign_status_scheduled,
        "running" => t.campaign_status_running,
        "paused" => t.campaign_status_paused,
        "held" => t.campaign_status_held,
        "cancelled" => t.campaign_status_cancelled,
        _ => t.campaign_status_done,
    }
}

fn progress(r: &Value) -> String {
    let p = (r["progress"].as_f64().unwrap_or(0.0) * 100.0).clamp(0.0, 100.0);
    format!("<progress max=\"100\" value=\"{p:.0}\">{p:.0} %</progress> {p:.0} %")
}

/// `GET /console/campaigns`.
pub(super) async fn list_page(app: &App, session: &ConsoleSession, query: &str) -> HttpResponse {
    let t = &FR;
    let Ok(all) = app.store.blocking(|s| s.campaigns()).await else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "store unavailable");
    };
    let mut body = format!("<h2>{}</h2>{}", t.ops_campaigns, header(t, "campaigns", query));
    if all.is_empty() {
        let _ = write!(body, "<p class=\"empty\">{}</p>", t.campaigns_none);
    } else {
        let _ = write!(
            body,
            "<div class=\"scroll\"><table id=\"campaigns\"><thead><tr><th>#</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
            t.col_name,
            t.col_template,
            t.col_state,
            t.col_progress,
            t.campaign_sent,
            t.campaign_read,
            t.campaign_failed,
            t.campaign_replied
        );
        for (c, counts) in &all {
            let r = crate::campaign::report(c, counts, crate::http::admin::campaign_rate(app, c));
            let _ = write!(
                body,
                "<tr data-id=\"{}\"><td>{}</td><td><a href=\"/console/campaigns/{}\">{}</a></td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                c.id,
                c.id,
                c.id,
                esc(&c.name),
                esc(&c.template),
                esc(&c.lang),
                status_label(t, c.status.as_str()),
                progress(&r),
                r["sent"],
                r["read"],
                r["failed"],
                r["replied"]
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str(&new_form(app, session));
    page(StatusCode::OK, &layout(t, t.ops_campaigns, Some(session), &body))
}

/// The form that creates a campaign (admins only): a name, an approved template, the CSV
/// file of recipients and, optionally, when it starts.
fn new_form(app: &App, session: &ConsoleSession) -> String {
    let t = &FR;
    if !session.role.can_administer() {
        return String::new();
    }
    let mut out = format!("<section id=\"new-campaign\"><h3>{}</h3>", t.campaign_new_title);
    let choices = app.outbox.templates().map(|c| c.choices(None)).unwrap_or_default();
    if choices.is_empty() {
        let _ = write!(out, "<p class=\"notice\">{}</p></section>", t.campaign_new_no_templates);
        return out;
    }
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/console/campaigns/new\" enctype=\"multipart/form-data\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><label>{} <input name=\"name\" id=\"campaign-name\" required maxlength=\"200\"></label><label>{} <select name=\"template\" id=\"campaign-template\" required>",
        attr(&session.csrf),
        t.campaign_new_name,
        t.campaign_new_template
    );
    for d in &choices {
        let (name, lang) = (d["name"].as_str().unwrap_or(""), d["language"].as_str().unwrap_or(""));
        let _ = write!(
            out,
            "<option value=\"{}\">{} ({}) — {}</option>",
            attr(&format!("{name}|{lang}")),
            esc(name),
            esc(lang),
            esc(d["category"].as_str().unwrap_or(""))
        );
    }
    let _ = write!(
        out,
        "</select></label><label>{} <input type=\"file\" name=\"csv\" id=\"campaign-csv\" accept=\".csv,text/csv\" required></label><label>{} <input name=\"at\" id=\"campaign-at\" placeholder=\"2026-12-24 09:00\"></label><button id=\"campaign-create\">{}</button></form></section>",
        t.campaign_new_csv, t.campaign_new_at, t.campaign_new_submit
    );
    out
}

/// `POST /console/campaigns/new` (multipart): creates a draft from the form, then shows its
/// report; a refusal (unknown template, nobody to send to, a bad time…) goes back to the
/// list with the reason, and nothing is recorded.
pub(super) async fn create(app: &App, session: &ConsoleSession, req: Request<Incoming>) -> HttpResponse {
    let t = &FR;
    let back = |e: &str| redirect(&format!("/console/campaigns?err={}", url_segment(e)));
    let form = match super::compose::read_multipart(app, req).await {
        Ok(f) => f,
        Err(e) => return back(&e),
    };
    if !accounts::csrf_ok(session, form.get("csrf")) {
        return plain(StatusCode::FORBIDDEN, "bad form token");
    }
    if !session.role.can_administer() {
        return plain(StatusCode::FORBIDDEN, t.forbidden);
    }
    let Some(file) = &form.file else {
        return back(t.campaign_csv_missing);
    };
    let Ok(csv) = std::str::from_utf8(&file.bytes) else {
        return back(t.campaign_csv_not_utf8);
    };
    let (template, lang) = form
        .get("template")
        .split_once('|')
        .unwrap_or((form.get("template"), ""));
    let at = form.get("at").trim();
    let spec = crate::campaign::audience::CampaignSpec {
        name: form.get("name").trim().to_string(),
        template: template.to_string(),
        lang: lang.to_string(),
        from: None,
        at: (!at.is_empty()).then(|| at.to_string()),
        start: false,
        recipients: None,
        csv: Some(csv.to_string()),
        odoo: None,
    };
    let by = format!("console:{}", session.user);
    match crate::campaign::create(app, spec, &by).await {
        Ok((c, _)) => {
            tracing::info!(user = %session.user, campaign = c.id, "campaign created in the console");
            redirect(&format!(
                "/console/campaigns/{}?ok={}",
                c.id,
                url_segment(t.campaign_created)
            ))
        }
        Err(e) => back(&e.to_string()),
    }
}

/// `GET /console/campaigns/{id}`.
pub(super) async fn report_page(app: &App, session: &ConsoleSession, id: &str, query: &str) -> HttpResponse {
    let t = &FR;
    let Ok(id) = id.parse::<u64>() else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let found = app
        .store
        .blocking(move |s| {
            Ok((
                s.campaign(id)?,
                s.campaign_recipients(id, 0, Some(RecipientState::Skipped), SKIPPED_ROWS)?,
            ))
        })
        .await;
    let (Some((c, counts)), skipped) = (match found {
        Ok(f) => f,
        Err(_) => return plain(StatusCode::SERVICE_UNAVAILABLE, "store unavailable"),
    }) else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let r = crate::campaign::report(&c, &counts, crate::http::admin::campaign_rate(app, &c));
    let mut body = format!(
        "<h2>{} — {}</h2>{}",
        t.ops_campaigns,
        esc(&c.name),
        header(t, "campaigns", query)
    );
    body.push_str(&read_only_notice(t, session));
    let _ = write!(
        body,
        "<p id=\"campaign-status\" data-status=\"{}\"><strong>{}</strong> · {} ({}) · {}</p>",
        c.status.as_str(),
        status_label(t, c.status.as_str()),
        esc(&c.template),
        esc(&c.lang),
        progress(&r)
    );
    if let Some(reason) = &c.reason {
        let _ = write!(body, "<p class=\"notice\">{}</p>", esc(reason));
    }
    if let (CampaignStatus::Scheduled, Some(at)) = (c.status, c.at_ms) {
        let _ = write!(
            body,
            "<p>{} {}</p>",
            t.campaign_starts_at,
            super::pages::local_time(app, at / 1000)
        );
    }
    if let Some(eta) = r["eta_seconds"].as_u64() {
        let _ = write!(body, "<p>{} {} min {} s</p>", t.campaign_eta, eta / 60, eta % 60);
    }
    let mut actions = String::new();
    let act = |name: &str, label: &str, class: &str| {
        button(session, &format!("/console/campaigns/{id}/{name}"), label, class)
    };
    match c.status {
        CampaignStatus::Draft | CampaignStatus::Scheduled => actions.push_str(&act("start", t.campaign_start, "start")),
        CampaignStatus::Paused => actions.push_str(&act("resume", t.campaign_resume, "resume")),
        _ => {}
    }
    if matches!(
        c.status,
        CampaignStatus::Running | CampaignStatus::Held | CampaignStatus::Scheduled
    ) {
        actions.push_str(&act("pause", t.campaign_pause, "secondary pause"));
    }
    if !c.status.is_final() {
        actions.push_str(&act("cancel", t.campaign_cancel, "secondary cancel"));
    }
    if !actions.is_empty() {
        let _ = write!(body, "<div class=\"bar\">{actions}</div>");
    }
    body.push_str("<div class=\"scroll\"><table id=\"report\"><tbody>");
    for (label, key) in [
        (t.campaign_total, "total"),
        (t.campaign_pending, "pending"),
        (t.campaign_queued, "queued"),
        (t.campaign_sent, "sent"),
        (t.campaign_delivered, "delivered"),
        (t.campaign_read, "read"),
        (t.campaign_failed, "failed"),
        (t.campaign_cancelled, "cancelled"),
        (t.campaign_skipped, "skipped"),
        (t.campaign_replied, "replied"),
        (t.campaign_opted_out, "opted_out"),
    ] {
        let _ = write!(body, "<tr data-key=\"{key}\"><th>{label}</th><td>{}</td></tr>", r[key]);
    }
    body.push_str("</tbody></table></div>");
    for (title, key) in [
        (t.campaign_failed_by_code, "failed_by_code"),
        (t.campaign_skipped_by_reason, "skipped_by_reason"),
    ] {
        if let Some(m) = r[key].as_object().filter(|m| !m.is_empty()) {
            let _ = write!(body, "<h3>{title}</h3><ul id=\"{key}\">");
            for (k, v) in m {
                let what = k
                    .parse::<i64>()
                    .ok()
                    .filter(|code| *code != 0)
                    .map(|code| format!(" — {}", crate::whatsapp::error::explain(code)))
                    .unwrap_or_default();
                let name = match k.as_str() {
                    "invalid" => t.skip_invalid,
                    "duplicate" => t.skip_duplicate,
                    "opted_out" => t.skip_opted_out,
                    "refused" => t.skip_refused,
                    code => code,
                };
                let _ = write!(body, "<li><strong>{}</strong> : {v}{}</li>", esc(name), esc(&what));
            }
            body.push_str("</ul>");
        }
    }
    if !skipped.is_empty() {
        let _ = write!(
            body,
            "<h3>{}</h3><div class=\"scroll\"><table id=\"skipped\"><tbody>",
            t.campaign_skipped_list
        );
        for (_, s) in &skipped {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(s.source.as_deref().unwrap_or("")),
                esc(&s.to),
                esc(s.reason.as_deref().unwrap_or(""))
            );
        }
        body.push_str("</tbody></table></div>");
    }
    page(StatusCode::OK, &layout(t, &c.name, Some(session), &body))
}

/// An admin's action on a campaign (start, pause, resume, cancel).
pub(super) async fn act(app: &App, session: &ConsoleSession, id: &str, action: &str) -> Result<String, String> {
    let t = &FR;
    let id = id.parse::<u64>().map_err(|_| t.unknown_action.to_string())?;
    let by = format!("console:{}", session.user);
    let action = match action {
        "start" => Some(Action::Start(None)),
        "pause" => Some(Action::Pause),
        "resume" => Some(Action::Resume),
        "cancel" => None,
        _ => return Err(t.unknown_action.to_string()),
    };
    let changed = app
        .store
        .blocking(move |s| {
            Ok(match action {
                Some(a) => crate::campaign::change(s, id, a, &by),
                None => s.campaign_cancel(id, &by),
            })
        })
        .await
        .map_err(|e| e.to_string())?;
    match changed {
        Ok(c) => {
            app.campaign_wake.notify_one();
            app.outbox.changed();
            Ok(format!(
                "{} {}",
                t.campaign_done_action,
                status_label(t, c.status.as_str())
            ))
        }
        Err(e) => Err(e.to_string()),
    }
}
