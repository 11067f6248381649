//! `/api/campaigns`: create, start, pause, resume, cancel and report campaigns
//! (`walua campaign …`; see [`crate::campaign`]).

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};

use super::{query_param, read_body, store_error};
use crate::App;
use crate::campaign::audience::{AudienceError, CampaignSpec};
use crate::campaign::{Action, report};
use crate::http::{HttpResponse, error, json};
use crate::store::campaigns::{Campaign, CampaignChangeError, CampaignCounts, RecipientState};

/// Who the admin API acts as in logs and reasons.
const BY: &str = "api";

/// The rate of the number a campaign sends from (for its ETA).
pub fn rate_of(app: &App, c: &Campaign) -> Option<u32> {
    let accounts = &app.config.whatsapp.accounts;
    accounts
        .iter()
        .find(|a| Some(&a.phone_number_id) == c.phone_number_id.as_ref())
        .or(accounts.first())
        .map(|a| a.max_per_second)
}

fn view(app: &App, c: &Campaign, counts: &CampaignCounts) -> Value {
    report(c, counts, rate_of(app, c))
}

fn change_error(e: CampaignChangeError) -> HttpResponse {
    match e {
        CampaignChangeError::Missing(_) => error(StatusCode::NOT_FOUND, e),
        CampaignChangeError::Conflict(_) => error(StatusCode::CONFLICT, e),
        CampaignChangeError::Store(e) => store_error(e),
    }
}

/// Routes `/api/campaigns…`; `None` when the path is not a campaign route.
pub(super) async fn route(app: &App, req: Request<Incoming>, segs: &[&str]) -> Option<HttpResponse> {
    let method = req.method().clone();
    let id = match segs.get(1).map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return Some(error(
                StatusCode::NOT_FOUND,
                format!("`{}` is not a campaign id", segs[1]),
            ));
        }
    };
    Some(match (&method, id, segs.get(2).copied(), segs.len()) {
        (&Method::GET, None, None, 1) => list(app).await,
        (&Method::POST, None, None, 1) => create(app, req).await,
        (&Method::GET, Some(id), None, 2) => show(app, id).await,
        (&Method::GET, Some(id), Some("recipients"), 3) => recipients(app, id, req.uri().query()).await,
        (&Method::POST, Some(id), Some(action @ ("start" | "pause" | "resume" | "cancel")), 3) => {
            let action = action.to_string();
            act(app, id, &action, req).await
        }
        _ => return None,
    })
}

async fn list(app: &App) -> HttpResponse {
    match app.store.blocking(|s| s.campaigns()).await {
        Ok(all) => {
            let list: Vec<Value> = all.iter().map(|(c, n)| view(app, c, n)).collect();
            json(StatusCode::OK, &json!({ "campaigns": list }))
        }
        Err(e) => store_error(e),
    }
}

async fn show(app: &App, id: u64) -> HttpResponse {
    match app.store.blocking(move |s| s.campaign(id)).await {
        Ok(Some((c, n))) => json(StatusCode::OK, &view(app, &c, &n)),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no campaign {id}")),
        Err(e) => store_error(e),
    }
}

/// `POST /api/campaigns` (DESIGN.md): 201 with the report; 422 with the reason when the
/// request, the template or every recipient is wrong (nothing is recorded then).
async fn create(app: &App, req: Request<Incoming>) -> HttpResponse {
    let body = match read_body(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let spec: CampaignSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid campaign: {e}")),
    };
    match crate::campaign::create(app, spec, BY).await {
        Ok((c, n)) => {
            app.outbox.changed();
            json(StatusCode::CREATED, &view(app, &c, &n))
        }
        Err(AudienceError::Invalid(why)) => error(StatusCode::UNPROCESSABLE_ENTITY, why),
        Err(e @ AudienceError::Odoo(_)) => error(StatusCode::BAD_GATEWAY, e),
        Err(AudienceError::Store(e)) => store_error(e),
    }
}

/// `GET /api/campaigns/{id}/recipients?state=skipped&from=N&limit=N`: recipients in order,
/// with why each was skipped and its message; `next` is the `from` of the next page.
async fn recipients(app: &App, id: u64, query: Option<&str>) -> HttpResponse {
    let state = match query_param(query, "state").as_deref() {
        None => None,
        Some("pending") => Some(RecipientState::Pending),
        Some("queued") => Some(RecipientState::Queued),
        Some("skipped") => Some(RecipientState::Skipped),
        Some("cancelled") => Some(RecipientState::Cancelled),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("state `{other}`: one of pending, queued, skipped, cancelled"),
            );
        }
    };
    let from = query_param(query, "from").and_then(|f| f.parse().ok()).unwrap_or(0);
    let limit = query_param(query, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100usize)
        .clamp(1, 1000);
    let read = app
        .store
        .blocking(move |s| Ok((s.campaign(id)?, s.campaign_recipients(id, from, state, limit)?)))
        .await;
    match read {
        Ok((None, _)) => error(StatusCode::NOT_FOUND, format!("no campaign {id}")),
        Ok((Some(_), rows)) => {
            let next = (rows.len() == limit).then(|| rows.last().map(|(i, _)| i + 1));
            let rows: Vec<Value> = rows
                .into_iter()
                .map(|(i, r)| {
                    let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
                    v["index"] = json!(i);
                    v
                })
                .collect();
            json(StatusCode::OK, &json!({ "recipients": rows, "next": next.flatten() }))
        }
        Err(e) => store_error(e),
    }
}

/// `POST /api/campaigns/{id}/start` (`{"at"}` optional), `/pause`, `/resume`, `/cancel`:
/// the report after the change; 409 when it does not apply.
async fn act(app: &App, id: u64, action: &str, req: Request<Incoming>) -> HttpResponse {
    let body = match read_body(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let at = if action == "start" && !body.iter().all(u8::is_ascii_whitespace) {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Start {
            at: Option<String>,
        }
        match serde_json::from_slice::<Start>(&body) {
            Ok(Start { at: Some(at) }) => match crate::campaign::audience::parse_at(&at, app.config.scripts.timezone) {
                Ok(t) => Some(t),
                Err(why) => return error(StatusCode::UNPROCESSABLE_ENTITY, why),
            },
            Ok(Start { at: None }) => None,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
        }
    } else {
        None
    };
    let action = match action {
        "start" => Some(Action::Start(at)),
        "pause" => Some(Action::Pause),
        "resume" => Some(Action::Resume),
        _ => None,
    };
    let changed = app
        .store
        .blocking(move |s| {
            Ok(match action {
                Some(a) => crate::campaign::change(s, id, a, BY),
                None => s.campaign_cancel(id, BY).inspect(|c| {
                    tracing::info!(campaign = c.id, by = BY, "campaign cancelled");
                }),
            })
        })
        .await;
    match changed {
        Ok(Ok(_)) => {
            app.campaign_wake.notify_one();
            app.outbox.changed();
            show(app, id).await
        }
        Ok(Err(e)) => change_error(e),
        Err(e) => store_error(e),
    }
}
