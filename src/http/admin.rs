//! The admin API: `/api/...`, behind the bearer admin token.
//!
//! Without a configured `server.admin_token` (only allowed in a dry run) the API answers
//! loopback peers only, and never a request that came through a reverse proxy (it carries
//! `Forwarded`, `X-Forwarded-For`, `X-Real-IP`, ...: see [`PROXY_HEADERS`]), so the dry-run
//! example works out of the box and neither a public listener nor a same-host proxy opens it.
//! `/api/users` also answers a signed-in console admin (`console::accounts::console_admin`).

mod campaigns;
pub use campaigns::rate_of as campaign_rate;
mod users;

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use percent_encoding::percent_decode_str;
use subtle::ConstantTimeEq;

use super::{HttpResponse, error, json};
use crate::App;
use crate::console::handover;

/// Default and maximum page sizes of list endpoints.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// Routes an `/api/...` request after checking the admin token (or, for `/api/users`, a
/// signed-in console admin).
pub async fn route(app: &App, peer: SocketAddr, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path().to_string();
    if let Err(denied) = authorize(app, peer, &req) {
        let accounts = path == "/api/users" || path.starts_with("/api/users/");
        if !(accounts && crate::console::accounts::console_admin(app, &req).await) {
            return denied;
        }
    }
    let segments: Vec<String> = path
        .trim_start_matches("/api/")
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let limit = query_limit(req.uri().query());
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (req.method(), segs.as_slice()) {
        (&Method::GET, ["conversations"]) => {
            let after = query_param(req.uri().query(), "after");
            let result = app
                .store
                .blocking(move |s| {
                    let (convs, next) = s.conversations_after(after.as_deref(), limit)?;
                    let extra = convs
                        .iter()
                        .map(|c| Ok((s.partner_for_contact(c)?, s.optout_of(&c.contact)?)))
                        .collect::<Result<Vec<_>, crate::store::StoreError>>()?;
                    Ok((convs, next, extra))
                })
                .await;
            respond(result.map(|(c, next, extra)| {
                let mut list = handover::conversations_json(&c);
                for (v, (p, o)) in list.iter_mut().zip(&extra) {
                    handover::add_partner(v, p.as_ref());
                    handover::add_optout(v, o.as_ref());
                }
                serde_json::json!({ "conversations": list, "next": next })
            }))
        }
        (&Method::GET, ["search"]) => {
            let q = query_param(req.uri().query(), "q").unwrap_or_default();
            let result = app.store.blocking(move |s| s.search(&q, limit)).await;
            respond(result.map(|hits| {
                let now = crate::store::now_ms();
                let messages: Vec<serde_json::Value> = hits
                    .messages
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "id": m.id,
                            "contact": m.contact,
                            "direction": m.direction,
                            "timestamp": m.timestamp,
                            "snippet": m.snippet,
                        })
                    })
                    .collect();
                let conversations: Vec<serde_json::Value> = hits
                    .conversations
                    .iter()
                    .map(|c| handover::conversation_json(c, now))
                    .collect();
                serde_json::json!({ "conversations": conversations, "messages": messages })
            }))
        }
        (&Method::GET, ["conversations", contact, "messages"]) => {
            // "77 123 45 67" finds 221771234567 (read in [whatsapp] default_country).
            let contact = app
                .outbox
                .canonical_contact(contact, None)
                .unwrap_or_else(|_| contact.to_string());
            let c2 = contact.clone();
            let read = app
                .store
                .blocking(move |s| {
                    let conv = s.conversation(&c2)?;
                    let partner = match &conv {
                        Some(c) => s.partner_for_contact(c)?,
                        None => None,
                    };
                    let optout = s.optout_of(&c2)?;
                    Ok((s.conversation_messages(&c2, limit)?, conv, (partner, optout)))
                })
                .await;
            match read {
                Ok((Some(messages), conv, (partner, optout))) => {
                    let now = crate::store::now_ms();
                    let conv = conv.map(|c| {
                        let mut v = handover::conversation_json(&c, now);
                        handover::add_partner(&mut v, partner.as_ref());
                        handover::add_optout(&mut v, optout.as_ref());
                        v
                    });
                    let field = |name: &str| conv.as_ref().map_or(serde_json::Value::Null, |c| c[name].clone());
                    json(
                        StatusCode::OK,
                        &serde_json::json!({
                            "contact": contact,
                            "handover": field("handover"),
                            "help": field("help"),
                            "partner_id": field("partner_id"),
                            "partner_name": field("partner_name"),
                            "partner_ambiguous": field("partner_ambiguous"),
                            "opted_out": field("opted_out"),
                            "messages": messages,
                        }),
                    )
                }
                Ok((None, _, _)) => error(StatusCode::NOT_FOUND, format!("no conversation with {contact}")),
                Err(e) => store_error(e),
            }
        }
        (&Method::POST, ["conversations", contact, "handover"]) => {
            let contact = contact.to_string();
            take_over(app, &contact, req).await
        }
        (&Method::DELETE, ["conversations", contact, "handover"]) => match handover::give_back(app, contact).await {
            Ok(held) => json(
                StatusCode::OK,
                &serde_json::json!({ "contact": contact, "released": held, "handover": null }),
            ),
            Err(e) => handover_error(e),
        },
        (&Method::DELETE, ["conversations", contact, "help"]) => match handover::dismiss_help(app, contact).await {
            Ok(had) => json(
                StatusCode::OK,
                &serde_json::json!({ "contact": contact, "dismissed": had, "help": null }),
            ),
            Err(e) => handover_error(e),
        },
        (&Method::GET, ["messages", id]) => {
            let Ok(id) = id.parse::<u64>() else {
                return error(StatusCode::BAD_REQUEST, format!("`{id}` is not a message id"));
            };
            match app.store.blocking(move |s| s.message(id)).await {
                Ok(Some(m)) => json(StatusCode::OK, &m),
                Ok(None) => error(StatusCode::NOT_FOUND, format!("no message {id}")),
                Err(e) => store_error(e),
            }
        }
        (&Method::POST, ["messages"]) => send_message(app, req).await,
        (&Method::POST, ["messages", id, "resend"]) => {
            let Ok(id) = id.parse::<u64>() else {
                return error(StatusCode::BAD_REQUEST, format!("`{id}` is not a message id"));
            };
            match resend(app, id).await {
                Ok(m) => json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({ "id": m.id, "status": m.status }),
                ),
                Err(r) => r,
            }
        }
        (&Method::POST, ["messages", id, "cancel"]) => {
            let Ok(id) = id.parse::<u64>() else {
                return error(StatusCode::BAD_REQUEST, format!("`{id}` is not a message id"));
            };
            match cancel_send(app, id, "the operator (API)").await {
                Ok(m) => json(StatusCode::OK, &serde_json::json!({ "id": m.id, "status": m.status })),
                Err(r) => r,
            }
        }
        (&Method::GET, ["outbox"]) => {
            let before = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "before")
                .and_then(|(_, v)| v.parse::<u64>().ok());
            let result = app
                .store
                .blocking(move |s| {
                    let jobs = s.outbox_jobs(limit)?;
                    let troubles = s.outbound_troubles(before, TROUBLE_SCAN, limit)?;
                    Ok((jobs, troubles))
                })
                .await;
            respond(result.map(|(jobs, troubles)| {
                serde_json::json!({
                    "jobs": jobs.iter().map(|(j, m)| crate::store::ops::job_json(j, m.as_ref())).collect::<Vec<_>>(),
                    "troubles": troubles.messages,
                    "next_before": troubles.next_before,
                })
            }))
        }
        (&Method::POST, ["messages", id, "dispatch"]) => {
            // Runs a quarantined inbound message's scripts again, once (the operator fixed
            // the script, or wants to see it fail again).
            let Ok(id) = id.parse::<u64>() else {
                return error(StatusCode::BAD_REQUEST, format!("`{id}` is not a message id"));
            };
            match app.store.blocking(move |s| s.dispatch_release(id)).await {
                Ok(true) => {
                    app.dispatch_wake.notify_one();
                    json(StatusCode::ACCEPTED, &serde_json::json!({ "id": id, "queued": true }))
                }
                Ok(false) => error(StatusCode::NOT_FOUND, format!("no inbound message {id}")),
                Err(e) => store_error(e),
            }
        }
        (&Method::POST, ["media"]) => upload_media(app, req).await,
        (&Method::GET, ["parked"]) => {
            let all = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "all=1" || p == "all=true"));
            match app.store.blocking(|s| s.failed_runs("")).await {
                Ok(runs) => {
                    let now = crate::store::now_ms();
                    let runs: Vec<serde_json::Value> = runs
                        .into_iter()
                        .filter(|r| all || r.parked())
                        .map(|r| {
                            let expired = r.expires_ms.is_some_and(|t| t <= now);
                            let mut v = serde_json::json!(r);
                            v["parked"] = serde_json::json!(r.parked());
                            v["expired"] = serde_json::json!(expired);
                            v
                        })
                        .collect();
                    json(StatusCode::OK, &serde_json::json!({ "parked": runs }))
                }
                Err(e) => store_error(e),
            }
        }
        (&Method::POST, ["parked", id, "replay"]) => replay_parked(app, id).await,
        (&Method::POST, ["scenarios", name, "start"]) => {
            let name = name.to_string();
            start_scenario(app, &name, req).await
        }
        (&Method::GET, ["cron"]) => match app.cron.jobs().await {
            Ok(jobs) => json(StatusCode::OK, &serde_json::json!({ "jobs": jobs })),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        (&Method::POST, ["cron", name, "run"]) => match app.cron.run_now(name).await {
            Ok(Ok(sent)) => json(
                StatusCode::OK,
                &serde_json::json!({ "job": name, "ok": true, "sent": sent }),
            ),
            Ok(Err(f)) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({ "job": name, "ok": false, "error": f.message, "transient": f.transient }),
            ),
            Err(e @ crate::scheduler::CronError::Unknown(_)) => error(StatusCode::NOT_FOUND, e),
            Err(e @ crate::scheduler::CronError::Busy(_)) => error(StatusCode::CONFLICT, e),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        (&Method::GET, ["scripts"]) => {
            let status = app.scripts.registry.read().expect("not poisoned").status();
            json(StatusCode::OK, &serde_json::json!({ "scripts": status }))
        }
        (&Method::POST, ["scripts", "reload"]) => {
            let scripts = app.scripts.clone();
            let report = tokio::task::spawn_blocking(move || scripts.reload_all()).await;
            match report {
                Ok(r) => json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "loaded": r.loaded.len(),
                        "removed": r.removed.len(),
                        "errors": r.errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
                    }),
                ),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        (&Method::GET, ["templates"]) => list_templates(app).await,
        (&Method::POST, ["templates", "sync"]) => match app.templates.sync_all().await {
            Ok(reports) => json(StatusCode::OK, &serde_json::json!({ "synced": reports })),
            Err(e) => template_error(e),
        },
        (&Method::GET, ["templates", "diff"]) => {
            let sync = query_flag(req.uri().query(), "sync");
            if sync && let Err(e) = app.templates.sync_all().await {
                return template_error(e);
            }
            let t = app.templates.clone();
            match tokio::task::spawn_blocking(move || t.diff()).await {
                Ok(Ok(rows)) => json(StatusCode::OK, &serde_json::json!({ "diff": rows })),
                Ok(Err(e)) => template_error(e),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        (&Method::POST, ["templates", "push"]) => {
            let delete = query_flag(req.uri().query(), "delete");
            match app.templates.push(delete).await {
                Ok(results) => json(StatusCode::OK, &serde_json::json!({ "results": results })),
                Err(e) => template_error(e),
            }
        }
        (_, ["campaigns", ..]) => match campaigns::route(app, req, &segs).await {
            Some(response) => response,
            None => error(StatusCode::NOT_FOUND, format!("no route for {path}")),
        },
        (&Method::GET, ["users"]) => users::list(app).await,
        (&Method::POST, ["users"]) => users::create(app, req).await,
        (&Method::POST, ["users", name, "password"]) => users::set_password(app, name, req).await,
        (&Method::DELETE, ["users", name]) => users::remove(app, name).await,
        (&Method::GET, ["stats"]) => crate::stats::api(app, req.uri().query()).await,
        (&Method::GET, ["events"]) => {
            let result = app.store.blocking(move |s| s.events(limit)).await;
            respond(result.map(|e| serde_json::json!({ "events": e })))
        }
        _ => error(StatusCode::NOT_FOUND, format!("no route for {} {path}", req.method())),
    }
}

/// `POST /api/conversations/{contact}/handover` `{"by": "agent", "reason"?: "…"}`: the agent
/// takes the conversation over; answers `{"contact", "handover"}`.
async fn take_over(app: &App, contact: &str, req: Request<Incoming>) -> HttpResponse {
    #[derive(serde::Deserialize)]
    struct TakeOver {
        by: String,
        #[serde(default)]
        reason: Option<String>,
    }
    let body = match super::read_body(app, req, MAX_HANDOVER_BODY).await {
        Ok(b) => b,
        Err(e) => return error(e.status(), e),
    };
    let asked: TakeOver = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"by\": \"agent name\", \"reason\"?: \"…\"}}: {e}"),
            );
        }
    };
    match handover::take_over(app, contact, &asked.by, asked.reason).await {
        Ok(h) => json(
            StatusCode::OK,
            &serde_json::json!({ "contact": contact, "handover": h }),
        ),
        Err(e) => handover_error(e),
    }
}

/// Largest `POST /api/conversations/{contact}/handover` body: a name and a reason.
const MAX_HANDOVER_BODY: usize = 16 * 1024;

fn handover_error(e: handover::HandoverError) -> HttpResponse {
    use handover::HandoverError;
    match e {
        HandoverError::UnknownContact(_) => error(StatusCode::NOT_FOUND, e),
        HandoverError::NoAgent => error(StatusCode::BAD_REQUEST, e),
        HandoverError::Store(e) => store_error(e),
    }
}

/// Largest admin request body (JSON or media upload).
const MAX_ADMIN_BODY: usize = 100 * 1024 * 1024;

async fn read_body(app: &App, req: Request<Incoming>) -> Result<bytes::Bytes, HttpResponse> {
    super::read_body(app, req, MAX_ADMIN_BODY)
        .await
        .map_err(|e| error(e.status(), e))
}

async fn send_message(app: &App, req: Request<Incoming>) -> HttpResponse {
    let body = match read_body(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let request: crate::outbox::SendRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid message request: {e}")),
    };
    match app.outbox.enqueue(request, "api".into()).await {
        Ok(m) if m.status == "failed" => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({ "id": m.id, "status": m.status, "error": m.error }),
        ),
        Ok(m) => json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "id": m.id, "status": m.status }),
        ),
        Err(crate::outbox::SendError::Invalid(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(crate::outbox::SendError::Store(e)) => store_error(e),
    }
}

/// `POST /api/media?filename=F&mime=M[&from=ACCOUNT][&to=CONTACT]` with the file as body:
/// uploads it to Meta through the number that will send it (the account `from` names, else
/// the one a message to `to` goes out from, else the first) and answers
/// `{"id": MEDIA_ID, "from": PHONE_NUMBER_ID}`: send it with that `from`, since media ids
/// belong to a number. In dry run the file is kept beside the store and a local id returned.
async fn upload_media(app: &App, req: Request<Incoming>) -> HttpResponse {
    let mut filename = None;
    let mut mime = None;
    let mut ttl_minutes = None;
    let mut from = None;
    let mut to = None;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "filename" => filename = Some(v.into_owned()),
            "mime" => mime = Some(v.into_owned()),
            "ttl_minutes" => match v.parse::<u32>() {
                Ok(n) if crate::whatsapp::client::TTL_MINUTES.contains(&n) => ttl_minutes = Some(n),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "query parameter `ttl_minutes` must be a whole number of minutes from 60 to 43200 (30 days), not `{v}`"
                        ),
                    );
                }
            },
            "from" => from = Some(v.into_owned()),
            "to" => to = Some(v.into_owned()),
            _ => {}
        }
    }
    let filename = match filename.as_deref().map(check_filename) {
        None => return error(StatusCode::BAD_REQUEST, "query parameter `filename` is required"),
        Some(Err(why)) => return error(StatusCode::BAD_REQUEST, format!("query parameter `filename` {why}")),
        Some(Ok(())) => filename.unwrap_or_default(),
    };
    let mime = mime.unwrap_or_else(|| crate::media::mime_for(&filename).to_string());
    if !is_mime_type(&mime) {
        return error(
            StatusCode::BAD_REQUEST,
            "query parameter `mime` is not a MIME type such as application/pdf",
        );
    }
    let body = match read_body(app, req).await {
        Ok(b) if !b.is_empty() => b,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "empty file"),
        Err(r) => return r,
    };
    match keep_media(app, body.to_vec(), &filename, &mime, from, to, ttl_minutes).await {
        Ok(KeptMedia {
            id,
            from,
            dry_run: false,
        }) => json(StatusCode::OK, &serde_json::json!({ "id": id, "from": from })),
        Ok(KeptMedia { id, .. }) => json(StatusCode::OK, &serde_json::json!({ "id": id, "dry_run": true })),
        Err(r) => r,
    }
}

/// A file uploaded as media, ready to send by id.
pub(crate) struct KeptMedia {
    /// The media id (Meta's, or a local one in dry run).
    pub id: String,
    /// The business number the media belongs to (send it from there).
    pub from: Option<String>,
    /// Kept beside the store, not uploaded (dry run or no Graph client).
    pub dry_run: bool,
}

/// Uploads `body` as media of the number a message to `to` goes out from (or `from`), or keeps
/// it beside the store in dry run: the admin API's and the console's upload.
pub(crate) async fn keep_media(
    app: &App,
    body: Vec<u8>,
    filename: &str,
    mime: &str,
    from: Option<String>,
    to: Option<String>,
    ttl_minutes: Option<u32>,
) -> Result<KeptMedia, HttpResponse> {
    let outbox = app.outbox.clone();
    let number = tokio::task::spawn_blocking(move || outbox.sender(from.as_deref(), to.as_deref().unwrap_or("")))
        .await
        .map_err(|e| e.to_string());
    let number = match number {
        Ok(Ok(n)) => n,
        Ok(Err(invalid)) => return Err(error(StatusCode::UNPROCESSABLE_ENTITY, invalid)),
        Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
    };
    let client = app.graph.as_ref().and_then(|c| c.for_number(number.as_deref()));
    match (client, app.config.whatsapp.dry_run) {
        (Some(client), false) => match client.upload_media_for(body.clone(), mime, filename, ttl_minutes).await {
            Ok(id) => {
                tracing::info!(media = %id, %filename, bytes = body.len(), from = ?number, "media uploaded");
                Ok(KeptMedia {
                    id,
                    from: number,
                    dry_run: false,
                })
            }
            Err(f) => {
                let info = crate::outbox::error_info(&f);
                Err(json(
                    StatusCode::BAD_GATEWAY,
                    &serde_json::json!({ "error": info.title, "code": info.code, "explanation": info.explanation }),
                ))
            }
        },
        _ => match crate::media::save_local(&app.config.store.path, filename, &body) {
            Ok(id) => Ok(KeptMedia {
                id,
                from: number,
                dry_run: true,
            }),
            Err(e) => Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot keep the file: {e}"),
            )),
        },
    }
}

/// `POST /api/scenarios/{name}/start` with `{"to", "vars"}`: the scenario's first step is
/// sent and the contact's state set (202 with the message ids; 422 when the scenario is not
/// loaded or the step cannot be sent).
async fn start_scenario(app: &App, name: &str, req: Request<Incoming>) -> HttpResponse {
    #[derive(serde::Deserialize)]
    struct Start {
        to: String,
        #[serde(default)]
        vars: Option<serde_json::Value>,
    }
    let body = match read_body(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let start: Start = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("expected {{\"to\", \"vars\"}}: {e}")),
    };
    let vars = start.vars.unwrap_or_else(|| serde_json::json!({}));
    if !vars.is_object() {
        return error(StatusCode::BAD_REQUEST, "`vars` must be a JSON object");
    }
    let to = app
        .outbox
        .canonical_contact(&start.to, None)
        .unwrap_or(start.to.clone());
    let (n, t) = (name.to_string(), to.clone());
    let effects = match app
        .scripts
        .runtime
        .exec(move |w| w.start_scenario_for(&n, &t, vars, "api:scenario"))
        .await
    {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("scenario `{name}`: {e}")),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let commit = effects.into_commit(Vec::new());
    match app.store.blocking(move |s| s.commit_script_runs(&commit)).await {
        Ok(sent) => {
            app.outbox.wake();
            app.live.bump();
            let failed: Vec<_> = sent.iter().filter(|m| m.status == "failed").collect();
            if let Some(m) = failed.first() {
                return json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &serde_json::json!({ "scenario": name, "to": to, "error": m.error, "id": m.id }),
                );
            }
            json(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "scenario": name, "to": to, "sent": sent.iter().map(|m| m.id).collect::<Vec<_>>() }),
            )
        }
        Err(e) => store_error(e),
    }
}

/// Messages read back per outbox page looking for failed, unknown and cancelled sends: the
/// page's cost stays fixed on a long history (`next_before` goes on from where it stopped).
pub const TROUBLE_SCAN: usize = 20_000;

/// Queues again outbound message `id` (failed, unknown without a wamid, or cancelled): 409
/// otherwise.
pub(crate) async fn resend(app: &App, id: u64) -> Result<crate::store::MessageRecord, HttpResponse> {
    match app.store.blocking(move |s| s.outbox_resend(id)).await {
        Ok(Some(m)) => {
            if !app.config.whatsapp.dry_run {
                app.outbox.wake();
            }
            app.live.bump();
            Ok(m)
        }
        Ok(None) => Err(error(
            StatusCode::CONFLICT,
            format!("message {id} is not an outbound message in status failed, cancelled or unknown without a wamid"),
        )),
        Err(e) => Err(store_error(e)),
    }
}

/// Cancels queued send `id` for `by`: 409 when it is no longer waiting, 404 when unknown.
pub(crate) async fn cancel_send(app: &App, id: u64, by: &str) -> Result<crate::store::MessageRecord, HttpResponse> {
    use crate::store::ops::Cancel;
    let who = by.to_string();
    match app.store.blocking(move |s| s.outbox_cancel(id, &who)).await {
        Ok(Cancel::Cancelled(m)) => {
            tracing::info!(message = id, by, "queued send cancelled");
            app.live.bump();
            Ok(*m)
        }
        Ok(Cancel::NotQueued(status)) => Err(error(
            StatusCode::CONFLICT,
            format!("message {id} is not waiting in the queue (it is {status}): only a queued send can be cancelled"),
        )),
        Ok(Cancel::Missing) => Err(error(StatusCode::NOT_FOUND, format!("no message {id}"))),
        Err(e) => Err(store_error(e)),
    }
}

/// Longest media file name accepted, in bytes (a file system's limit for a name).
pub const MAX_FILENAME_BYTES: usize = 255;

/// A media file name must be a plain name: not empty, no path, no control characters, at
/// most [`MAX_FILENAME_BYTES`] bytes.
pub(crate) fn check_filename(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("is empty".into())
    } else if name.len() > MAX_FILENAME_BYTES {
        Err(format!(
            "is {} bytes long; at most {MAX_FILENAME_BYTES} are allowed",
            name.len()
        ))
    } else if name.contains(['/', '\\']) || name == "." || name == ".." {
        Err("must be a file name, not a path".into())
    } else if name.chars().any(char::is_control) {
        Err("contains control characters".into())
    } else {
        Ok(())
    }
}

/// `type/subtype[; parameters]` with RFC 7230 token characters.
pub(crate) fn is_mime_type(mime: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let essence = mime.split(';').next().unwrap_or("").trim();
    mime.len() <= 255
        && !mime.chars().any(char::is_control)
        && essence.split_once('/').is_some_and(|(t, s)| token(t) && token(s))
}

/// `POST /api/parked/{id}/replay`: runs a failed hook or cron run again now (200 when it
/// succeeded, 422 with the new error when not, the entry kept), or puts a parked customer
/// message back in the dispatch queue (202; 410 once its reply expired).
pub(crate) async fn replay_parked(app: &App, id: &str) -> HttpResponse {
    use crate::store::parked::RunKind;
    let key = id.to_string();
    let entry = match app.store.blocking(move |s| s.failed_run(&key)).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no failed run `{id}` (see GET /api/parked)"),
            );
        }
        Err(e) => return store_error(e),
    };
    let failed = |message: String, transient: bool| {
        json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({ "id": entry.id, "replayed": false, "error": message, "transient": transient }),
        )
    };
    match entry.kind {
        RunKind::Hook => {
            let Some(hooks) = app.hooks.clone() else {
                return error(
                    StatusCode::CONFLICT,
                    "Odoo is not configured: hook runs cannot be replayed",
                );
            };
            match hooks.replay(&entry).await {
                Ok(crate::odoo::hooks::Fired::Ran) => {
                    json(StatusCode::OK, &serde_json::json!({ "id": entry.id, "replayed": true }))
                }
                Ok(crate::odoo::hooks::Fired::Retrying(e)) => failed(e, true),
                Ok(crate::odoo::hooks::Fired::Parked(e)) => failed(e, false),
                Err(e) => failed(e.to_string(), true),
            }
        }
        RunKind::Cron => match app.cron.replay(&entry).await {
            Ok(Ok(sent)) => json(
                StatusCode::OK,
                &serde_json::json!({ "id": entry.id, "replayed": true, "sent": sent }),
            ),
            Ok(Err(f)) => failed(f.message, f.transient),
            Err(e @ crate::scheduler::CronError::Busy(_)) => error(StatusCode::CONFLICT, e),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        RunKind::Chatter => {
            let Some(note) = entry.id.strip_prefix("chatter:").and_then(|n| n.parse::<u64>().ok()) else {
                return error(StatusCode::CONFLICT, format!("`{id}` names no chatter note"));
            };
            match app.store.blocking(move |s| s.chatter_replay(note)).await {
                Ok(true) => {
                    app.chatter_wake.notify_one();
                    json(
                        StatusCode::ACCEPTED,
                        &serde_json::json!({ "id": entry.id, "replayed": true, "queued": true }),
                    )
                }
                Ok(false) => error(StatusCode::NOT_FOUND, format!("no chatter note `{id}`")),
                Err(e) => store_error(e),
            }
        }
        RunKind::Message => {
            let now = crate::store::now_ms();
            if entry.expires_ms.is_some_and(|t| t <= now) {
                return error(
                    StatusCode::GONE,
                    format!(
                        "`{id}` expired: the customer wrote more than scripts.reply_expiry ago; an answer now would come too late"
                    ),
                );
            }
            let Some(message) = entry.message_id else {
                return error(StatusCode::CONFLICT, format!("`{id}` names no message"));
            };
            let key = entry.id.clone();
            let result = app
                .store
                .blocking(move |s| {
                    let found = s.dispatch_release(message)?;
                    if found {
                        s.failed_run_set(&key, None)?;
                    }
                    Ok(found)
                })
                .await;
            match result {
                Ok(true) => {
                    app.dispatch_wake.notify_one();
                    json(
                        StatusCode::ACCEPTED,
                        &serde_json::json!({ "id": entry.id, "replayed": true, "message": message }),
                    )
                }
                Ok(false) => error(StatusCode::NOT_FOUND, format!("message {message} is gone")),
                Err(e) => store_error(e),
            }
        }
    }
}

/// `POST /hooks/odoo/{name}`: an Odoo 17+ webhook action. Authorised by `?token=` equal to
/// `odoo.hook_token`, or by the admin bearer token.
pub async fn odoo_push(app: &App, peer: SocketAddr, req: Request<Incoming>) -> HttpResponse {
    let token_ok = match app.config.odoo.as_ref().and_then(|o| o.hook_token.as_ref()) {
        Some(expected) => form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .any(|(k, v)| k == "token" && bool::from(v.as_bytes().ct_eq(expected.expose().as_bytes()))),
        None => false,
    };
    if !token_ok && let Err(denied) = authorize(app, peer, &req) {
        return denied;
    }
    let name = percent_decode_str(req.uri().path().trim_start_matches("/hooks/odoo/"))
        .decode_utf8_lossy()
        .into_owned();
    let Some(hooks) = app.hooks.clone() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "Odoo is not configured");
    };
    let body = match read_body(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let payload: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("payload is not JSON: {e}")),
    };
    match hooks.push(&name, &payload).await {
        Ok(fired) => json(StatusCode::OK, &serde_json::json!({ "fired": fired })),
        Err(e @ crate::odoo::hooks::HookError::Unknown(_)) => error(StatusCode::NOT_FOUND, e),
        Err(e @ crate::odoo::hooks::HookError::BadPayload(_)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

/// `GET /api/templates`: every template of every WABA with its status, quality and when it
/// was synced, the accounts that send it, and the definitions Meta does not have yet.
async fn list_templates(app: &App) -> HttpResponse {
    let records = match app.store.blocking(|s| s.templates()).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let accounts_of = |waba: &str| -> Vec<String> {
        app.config
            .whatsapp
            .accounts
            .iter()
            .filter(|a| a.waba_id.as_deref() == Some(waba))
            .map(|a| a.name.clone())
            .collect()
    };
    let mut wabas = Vec::new();
    for (waba, _) in app.config.whatsapp.wabas() {
        let w = waba.to_string();
        let synced = app
            .store
            .blocking(move |s| s.templates_synced_at(&w))
            .await
            .ok()
            .flatten();
        wabas.push(serde_json::json!({ "waba_id": waba, "accounts": accounts_of(waba), "synced_at": synced.and_then(crate::scheduler::rfc3339) }));
    }
    let templates: Vec<serde_json::Value> = records
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id,
                "name": t.name,
                "language": t.language,
                "category": t.category,
                "status": t.status,
                "quality": t.quality,
                "reason": t.reason,
                "components": t.components,
                "waba_id": t.waba_id,
                "account": accounts_of(&t.waba_id).join(", "),
                "synced_at": t.synced_at_ms.and_then(crate::scheduler::rfc3339),
                "updated_at": crate::scheduler::rfc3339(t.updated_at_ms),
            })
        })
        .collect();
    let defs = app.outbox.templates().map(|c| c.definitions());
    let local: Vec<serde_json::Value> = defs
        .iter()
        .flat_map(|d| d.definitions.iter())
        .filter(|d| !records.iter().any(|t| t.name == d.name && t.language == d.language))
        .map(|d| {
            serde_json::json!({
                "name": d.name,
                "language": d.language,
                "category": d.category.as_str(),
                "status": "LOCAL",
                "file": d.path.display().to_string(),
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({ "templates": templates, "local_only": local, "wabas": wabas }),
    )
}

fn template_error(e: crate::templates::sync::TemplateError) -> HttpResponse {
    use crate::templates::sync::TemplateError;
    match e {
        TemplateError::NotConfigured(_) => error(StatusCode::CONFLICT, e),
        TemplateError::Meta { .. } => error(StatusCode::BAD_GATEWAY, e),
        TemplateError::Store(e) => store_error(e),
    }
}

/// Whether `name=1` (or `=true`) is in the query.
fn query_flag(query: Option<&str>, name: &str) -> bool {
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).any(|(k, v)| k == name && (v == "1" || v == "true"))
}

fn respond(result: Result<serde_json::Value, crate::store::StoreError>) -> HttpResponse {
    match result {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => store_error(e),
    }
}

fn store_error(e: crate::store::StoreError) -> HttpResponse {
    tracing::error!(error = %e, "admin API store error");
    error(StatusCode::INTERNAL_SERVER_ERROR, e)
}

/// A query parameter's value, if present.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

fn query_limit(query: Option<&str>) -> usize {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, MAX_LIMIT)
}

/// Headers a reverse proxy adds: a request carrying one came from somewhere else, whatever
/// its peer address (a proxy on the same host connects from loopback).
pub const PROXY_HEADERS: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-proto",
    "via",
];

/// The first proxy header `req` carries, if any.
fn forwarded_by<B>(req: &Request<B>) -> Option<&'static str> {
    PROXY_HEADERS.into_iter().find(|h| req.headers().contains_key(*h))
}

/// Checks the bearer token (constant time) or, without a configured token (only allowed in
/// a dry run), a loopback peer whose request did not come through a proxy.
#[allow(clippy::result_large_err)]
pub fn authorize<B>(app: &App, peer: SocketAddr, req: &Request<B>) -> Result<(), HttpResponse> {
    match &app.config.server.admin_token {
        Some(expected) => {
            let given = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            match given {
                Some(t) if bool::from(t.as_bytes().ct_eq(expected.expose().as_bytes())) => Ok(()),
                Some(_) => Err(error(StatusCode::UNAUTHORIZED, "wrong admin token")),
                None => Err(error(
                    StatusCode::UNAUTHORIZED,
                    "missing `Authorization: Bearer <admin token>`",
                )),
            }
        }
        None => match forwarded_by(req) {
            _ if !peer.ip().is_loopback() => Err(error(
                StatusCode::FORBIDDEN,
                "admin API disabled for non-loopback clients: set server.admin_token",
            )),
            Some(header) => Err(error(
                StatusCode::FORBIDDEN,
                format!("admin API disabled for proxied requests (`{header}` is set): set server.admin_token"),
            )),
            None => Ok(()),
        },
    }
}
