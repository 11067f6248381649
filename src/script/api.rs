//! The Rust functions behind a run's `env` and `logger`: one `register_*` per API area
//! (`env.whatsapp`, `env.store`, `env.scenario`, `env.notify`, `env.handover`, `env.odoo`,
//! `env.phone`, `logger`).
//!
//! They are built once per Lua worker into one table (`api`); each run sees it through
//! per-run read-through tables (see `runtime::ENV_BUILDER`), so a script that overwrites
//! `env.whatsapp.send_text` changes nothing for the next run. Sends, `env.store` writes and
//! scenario moves are buffered in the worker's effects, committed by the caller with the
//! dispatch; Odoo calls and media uploads happen at once, outside the CPU budget.

use std::sync::Arc;

use mlua::{FromLuaMulti, Function, IntoLuaMulti, Lua, LuaSerdeExt, Table, Value as LuaValue, Variadic};
use serde_json::{Value, json};

use super::registry::ScriptKind;
use super::runtime::{Shared, compiled, contact_key, default_from, lua_err, queue, queue_with_file, start_scenario};
use super::sandbox::charge_written;
use crate::store::chatter::{ChatterFile, ChatterNote, MAX_CHATTER_FILE, RecordRef};
use crate::store::now_ms;
use crate::whatsapp::message::{check_audio_size, check_voice_bytes};

/// Builds the API functions once per worker: `api.whatsapp`, `api.store`, `api.scenario`,
/// `api.notify`, `api.odoo` and `api.__logger` (the run's `logger`, not part of `env`).
pub(super) fn build_api(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let api = lua.create_table()?;
    api.set("whatsapp", register_whatsapp(lua, shared)?)?;
    api.set("store", register_store(lua, shared)?)?;
    api.set("scenario", register_scenario(lua, shared)?)?;
    register_notify(lua, &api, shared)?;
    register_handover(lua, &api, shared)?;
    api.set("odoo", register_odoo(lua, shared)?)?;
    api.set("phone", register_phone(lua, shared)?)?;
    api.set("templates", register_templates(lua, shared)?)?;
    api.set("__logger", register_logger(lua, shared)?)?;
    Ok(api)
}

/// Sets `table[name]` to a Rust function that sees the worker's [`Shared`] state.
fn add<A, R>(
    lua: &Lua,
    table: &Table,
    name: &str,
    shared: &Arc<Shared>,
    f: impl Fn(&Lua, &Shared, A) -> mlua::Result<R> + Send + 'static,
) -> mlua::Result<()>
where
    A: FromLuaMulti,
    R: IntoLuaMulti,
{
    let s = shared.clone();
    table.set(name, lua.create_function(move |lua, args: A| f(lua, &s, args))?)
}

/// Validates and buffers a send, charging its payload to the run's memory budget.
fn send(lua: &Lua, s: &Shared, req: Value) -> mlua::Result<u64> {
    charge_written(lua, json_size(&req))?;
    queue(s, req).map_err(lua_err)
}

/// The size of `v` as JSON, without building the text.
fn json_size(v: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// The largest `env.store` value, as JSON (documented in the README).
pub const MAX_STORE_VALUE: usize = 1024 * 1024;
/// The longest `env.store` key.
pub const MAX_STORE_KEY: usize = 512;

/// `env.whatsapp`: every send is validated like `POST /api/messages` and buffered; the
/// function returns the message id.
fn register_whatsapp(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let whatsapp = lua.create_table()?;
    add(
        lua,
        &whatsapp,
        "send_text",
        shared,
        |lua, s, (to, body, opts): (String, String, Option<Table>)| {
            let mut req = json!({ "to": to, "type": "text", "text": body });
            if let Some(p) = opts
                .as_ref()
                .map(|o| o.get::<Option<bool>>("preview_url"))
                .transpose()?
                .flatten()
            {
                req["preview_url"] = json!(p);
            }
            record_opt(lua, &mut req, opts.as_ref())?;
            string_opts(&mut req, opts, &["reply_to", "from"])?;
            send(lua, s, req)
        },
    )?;
    for (name, kind) in [
        ("send_image", "image"),
        ("send_document", "document"),
        ("send_video", "video"),
        ("send_audio", "audio"),
    ] {
        add(
            lua,
            &whatsapp,
            name,
            shared,
            move |lua, s, (to, spec): (String, Table)| {
                let bytes: Option<mlua::LuaString> = spec.get("bytes")?;
                let spec_copy = lua.create_table()?;
                for pair in spec.pairs::<LuaValue, LuaValue>() {
                    let (k, v) = pair?;
                    if k.as_string().is_some_and(|k| k.as_bytes().as_ref() == b"bytes") {
                        continue;
                    }
                    spec_copy.set(k, v)?;
                }
                let mut req: Value = lua.from_value(LuaValue::Table(spec_copy))?;
                if !req.is_object() {
                    req = json!({});
                }
                let voice = kind == "audio" && req.get("voice").and_then(Value::as_bool) == Some(true);
                if let Some(bytes) = bytes {
                    // Meta's limits on the file itself, before anything is uploaded.
                    if voice {
                        check_voice_bytes(&bytes.as_bytes()).map_err(|e| lua_err(format!("{name}: {e}")))?;
                    } else if kind == "audio" {
                        check_audio_size(bytes.as_bytes().len()).map_err(|e| lua_err(format!("{name}: {e}")))?;
                    }
                    let filename = req
                        .get("filename")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| match kind {
                            "document" => "document.pdf".to_string(),
                            _ if voice => "voice.ogg".to_string(),
                            _ => format!("{kind}.bin"),
                        });
                    // Uploaded through the number that sends it: media ids belong to a number.
                    let from = req
                        .get("from")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .or_else(|| default_from(s, &to));
                    let number = s.ctx.outbox.sender(from.as_deref(), &to).map_err(lua_err)?;
                    if let Some(n) = &number {
                        req["from"] = json!(n);
                    }
                    let id = upload_bytes(lua, s, number.as_deref(), bytes.as_bytes().to_vec(), &filename)?;
                    req["media"] = json!(id);
                    if kind == "document" {
                        req["filename"] = json!(filename);
                    }
                    // A file sent about an Odoo record is attached to its chatter note.
                    if req.get("record").is_some() && bytes.as_bytes().len() <= MAX_CHATTER_FILE {
                        let mime = crate::media::mime_for(&filename);
                        let file = ChatterFile::new(&filename, mime, &bytes.as_bytes());
                        req["to"] = json!(to);
                        req["type"] = json!(kind);
                        charge_written(lua, json_size(&req))?;
                        return queue_with_file(s, req, Some(file)).map_err(lua_err);
                    }
                }
                req["to"] = json!(to);
                req["type"] = json!(kind);
                send(lua, s, req)
            },
        )?;
    }
    add(
        lua,
        &whatsapp,
        "send_template",
        shared,
        |lua, s, (to, name, lang, values, opts): (String, String, Option<String>, Option<LuaValue>, Option<Table>)| {
            let mut req =
                json!({ "to": to, "type": "template", "name": name, "lang": lang.unwrap_or_else(|| "fr".into()) });
            if let Some(v) = values {
                // A list of tables that carry `type` is Meta's components, passed through;
                // anything else is the parameter values (a list, or a table keyed by name).
                let v: Value = lua.from_value(v)?;
                let is_components = v
                    .as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(|c| c.get("type").is_some_and(Value::is_string)));
                req[if is_components { "components" } else { "params" }] = v;
            }
            record_opt(lua, &mut req, opts.as_ref())?;
            string_opts(&mut req, opts, &["from"])?;
            send(lua, s, req)
        },
    )?;
    add(
        lua,
        &whatsapp,
        "send_buttons",
        shared,
        |lua, s, (to, body, buttons, opts): (String, String, LuaValue, Option<Table>)| {
            let mut req =
                json!({ "to": to, "type": "buttons", "body": body, "buttons": lua.from_value::<Value>(buttons)? });
            header_opt(lua, &mut req, opts.as_ref())?;
            record_opt(lua, &mut req, opts.as_ref())?;
            string_opts(&mut req, opts, INTERACTIVE_OPTS)?;
            send(lua, s, req)
        },
    )?;
    add(
        lua,
        &whatsapp,
        "send_list",
        shared,
        |lua, s, (to, body, button, sections, opts): (String, String, String, LuaValue, Option<Table>)| {
            let mut req = json!({ "to": to, "type": "list", "body": body, "button": button, "sections": lua.from_value::<Value>(sections)? });
            header_opt(lua, &mut req, opts.as_ref())?;
            record_opt(lua, &mut req, opts.as_ref())?;
            string_opts(&mut req, opts, INTERACTIVE_OPTS)?;
            send(lua, s, req)
        },
    )?;
    add(
        lua,
        &whatsapp,
        "send",
        shared,
        |lua, s, (to, spec): (String, LuaValue)| {
            let mut req: Value = lua.from_value(spec)?;
            req["to"] = json!(to);
            send(lua, s, req)
        },
    )?;
    // The receipt goes from the number the message came to, whoever calls it.
    add(lua, &whatsapp, "mark_read", shared, |lua, s, wamid: String| {
        let req = read_receipt(s, "mark_read", &wamid)?;
        send(lua, s, req)
    })?;
    // Marks the message read and shows the typing indicator; takes the run's `message` or a wamid.
    add(lua, &whatsapp, "typing", shared, |lua, s, message: LuaValue| {
        let wamid = match &message {
            LuaValue::String(w) => w.to_str()?.to_string(),
            LuaValue::Table(t) => t
                .get::<Option<String>>("id")?
                .ok_or_else(|| lua_err("typing: the message table has no id (wamid)"))?,
            other => {
                return Err(lua_err(format!(
                    "typing: expected the run's message or a wamid, got {}",
                    other.type_name()
                )));
            }
        };
        let req = read_receipt(s, "typing", &wamid)?;
        send(lua, s, req)
    })?;
    add(
        lua,
        &whatsapp,
        "window_open",
        shared,
        |_, s, (to, from): (String, Option<String>)| {
            let from_name = from.clone();
            let number = match from {
                Some(f) => Some(s.ctx.outbox.sender_number(&f).map_err(lua_err)?),
                None => None,
            };
            let to = s.ctx.outbox.canonical_contact(&to, from_name.as_deref()).unwrap_or(to);
            let conv = s.ctx.store.conversation(&to).map_err(lua_err)?;
            Ok(crate::store::outbox::window_open(
                conv.as_ref(),
                number.as_deref(),
                now_ms() / 1000,
            ))
        },
    )?;
    add(
        lua,
        &whatsapp,
        "upload",
        shared,
        |lua, s, (bytes, filename, from, ttl): (mlua::LuaString, String, Option<String>, Option<u32>)| {
            if let Some(t) = ttl
                && !crate::whatsapp::client::TTL_MINUTES.contains(&t)
            {
                return Err(lua_err(format!(
                    "upload: ttl_minutes must be from 60 to 43200 (30 days), not {t}"
                )));
            }
            upload_bytes_for(lua, s, from.as_deref(), bytes.as_bytes().to_vec(), &filename, ttl)
        },
    )?;
    Ok(whatsapp)
}

/// `env.store`: the scripts' durable key/value store. Writes are buffered with the run's
/// other effects; reads see the batch's earlier writes first.
fn register_store(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let store = lua.create_table()?;
    add(lua, &store, "get", shared, |lua, s, key: String| {
        let overlay = {
            let e = s.effects.lock().expect("not poisoned");
            e.kv.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
        };
        let value = match overlay {
            Some(v) => v,
            None => s.ctx.store.kv_get(&key).map_err(lua_err)?,
        };
        match value {
            Some(v) => lua.to_value(&v),
            None => Ok(LuaValue::Nil),
        }
    })?;
    add(
        lua,
        &store,
        "set",
        shared,
        |lua, s, (key, value): (String, LuaValue)| {
            if key.len() > MAX_STORE_KEY {
                return Err(lua_err(format!(
                    "env.store.set: the key is {} bytes long, the limit is {MAX_STORE_KEY}",
                    key.len()
                )));
            }
            // A long string is refused before it is copied.
            if let LuaValue::String(s) = &value
                && s.as_bytes().len() > MAX_STORE_VALUE
            {
                return Err(lua_err(format!(
                    "env.store.set: the value is {} bytes long, the limit is {MAX_STORE_VALUE} (1 MiB)",
                    s.as_bytes().len()
                )));
            }
            let v: Value = lua.from_value(value)?;
            let size = json_size(&v);
            if size > MAX_STORE_VALUE {
                return Err(lua_err(format!(
                    "env.store.set: the value is {size} bytes as JSON, the limit is {MAX_STORE_VALUE} (1 MiB)"
                )));
            }
            charge_written(lua, size + key.len())?;
            let v = if v.is_null() { None } else { Some(v) };
            s.effects.lock().expect("not poisoned").kv.push((key, v));
            Ok(())
        },
    )?;
    add(lua, &store, "delete", shared, |_, s, key: String| {
        s.effects.lock().expect("not poisoned").kv.push((key, None));
        Ok(())
    })?;
    Ok(store)
}

/// `env.scenario.start(name, to, vars)`: puts a contact at a scenario's first step and sends
/// that step's message.
fn register_scenario(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let scenario = lua.create_table()?;
    add(
        lua,
        &scenario,
        "start",
        shared,
        |lua, s, (name, to, vars): (String, String, Option<LuaValue>)| {
            let vars: Value = match vars {
                Some(v) => lua.from_value(v)?,
                None => json!({}),
            };
            let key = contact_key(s, &to);
            start_scenario(s, &key, &to, &name, vars).map_err(lua_err)
        },
    )?;
    Ok(scenario)
}

/// `env.notify(to, template, record)`: renders a notification template script
/// (`scripts/templates/NAME.lua`) with `record` and queues the message it returns.
fn register_notify(lua: &Lua, api: &Table, shared: &Arc<Shared>) -> mlua::Result<()> {
    add(
        lua,
        api,
        "notify",
        shared,
        |lua, s, (to, template, record, opts): (String, String, LuaValue, Option<Table>)| {
            let file = {
                let reg = s.ctx.registry.read().expect("not poisoned");
                reg.get(ScriptKind::Template, &template).cloned()
            }
            .ok_or_else(|| lua_err(format!("notify: template `{template}` is not loaded")))?;
            let chunk = compiled(s, lua, &file)?;
            let env: Table = s.make_env.call(())?;
            chunk.set_environment(env)?;
            let render: Function = chunk.call(())?;
            let spec: LuaValue = render.call(record)?;
            let mut req: Value = lua.from_value(spec)?;
            if !req.is_object() {
                return Err(lua_err(format!(
                    "{}: the template must return a message table",
                    file.chunk_name
                )));
            }
            req["to"] = json!(to);
            record_opt(lua, &mut req, opts.as_ref())?;
            send(lua, s, req)
        },
    )
}

/// The longest reason `env.handover` takes, in bytes: a line for the agents, not a transcript.
pub const MAX_HANDOVER_REASON: usize = 1000;

/// `env.handover(reason)`: flags the conversation of the run's contact as needing a human
/// (a [`crate::store::HelpRequest`], shown by the console until an agent takes it over or
/// dismisses it). Buffered with the run's other effects: a failing run asks for no one. Only
/// runs about a customer's message have a conversation; hook and cron runs get an error.
fn register_handover(lua: &Lua, api: &Table, shared: &Arc<Shared>) -> mlua::Result<()> {
    add(lua, api, "handover", shared, |_, s, reason: String| {
        let Some(contact) = s.run_contact.lock().expect("not poisoned").clone() else {
            return Err(lua_err(
                "env.handover: only a run about a customer's message (on_message, a button action, a scenario step) has a conversation to hand to an agent; hook and cron runs have none",
            ));
        };
        let reason = reason.trim().to_string();
        if reason.is_empty() {
            return Err(lua_err(
                "env.handover: give the agents a reason (\"le client demande un humain\")",
            ));
        }
        if reason.len() > MAX_HANDOVER_REASON {
            return Err(lua_err(format!(
                "env.handover: the reason is {} bytes long, the limit is {MAX_HANDOVER_REASON}",
                reason.len()
            )));
        }
        let script = s.label.lock().expect("not poisoned").clone();
        tracing::info!(target: "walua::lua", %script, contact = %contact, reason = %reason, "a script asks for a human agent");
        let request = crate::store::HelpRequest {
            reason,
            at_ms: now_ms(),
            by_script: script,
        };
        s.effects.lock().expect("not poisoned").help.push((contact, request));
        Ok(())
    })
}

/// `env.phone`: phone numbers with libphonenumber's rules ([`crate::phone`]).
/// `normalize(text[, country])` gives Meta's `wa_id` form (`221771234567`), reading a number
/// without country code in `country` (an Odoo partner's, `SN`) or `[whatsapp]
/// default_country`; an invalid number gives `nil, reason`.
fn register_phone(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let phone = lua.create_table()?;
    add(
        lua,
        &phone,
        "normalize",
        shared,
        |lua, s, (text, country): (LuaValue, Option<String>)| {
            let text = match text {
                LuaValue::String(t) => t.to_str()?.to_string(),
                LuaValue::Integer(i) => i.to_string(),
                LuaValue::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{n:.0}"),
                // Odoo sends `false` for an empty phone.
                LuaValue::Nil | LuaValue::Boolean(false) => {
                    return Ok((LuaValue::Nil, Some("no phone number".to_string())));
                }
                other => {
                    return Err(lua_err(format!(
                        "env.phone.normalize: expected a string, got {}",
                        other.type_name()
                    )));
                }
            };
            let region = country
                .filter(|c| !c.trim().is_empty())
                .or_else(|| s.ctx.outbox.region(None));
            match crate::phone::normalize(&text, region.as_deref()) {
                Ok(n) => Ok((LuaValue::String(lua.create_string(&n)?), None)),
                Err(e) => Ok((LuaValue::Nil, Some(e.to_string()))),
            }
        },
    )?;
    Ok(phone)
}

/// `env.templates.get(name, lang)`: what walua knows of a template (Meta's status, quality,
/// category, texts and parameter names, or a definition on disk not at Meta yet), or nil.
fn register_templates(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let templates = lua.create_table()?;
    add(
        lua,
        &templates,
        "get",
        shared,
        |lua, s, (name, lang, opts): (String, Option<String>, Option<Table>)| {
            let from = match opts {
                Some(o) => o.get::<Option<String>>("from")?,
                None => None,
            };
            let number = match from {
                Some(f) => Some(s.ctx.outbox.sender_number(&f).map_err(lua_err)?),
                None => None,
            };
            let described = s
                .ctx
                .outbox
                .templates()
                .and_then(|c| c.describe(number.as_deref(), &name, lang.as_deref().unwrap_or("fr")));
            match described {
                Some(v) => lua.to_value(&v),
                None => Ok(LuaValue::Nil),
            }
        },
    )?;
    Ok(templates)
}

/// `env.odoo`: JSON-RPC calls to the configured Odoo, made at once (they are not part of the
/// run's buffered effects) and not charged to the CPU budget.
fn register_odoo(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let odoo = lua.create_table()?;
    // A note on a record's chatter, posted after the run commits (never blocks the run).
    // Through `add_odoo` like its neighbours: ODOO_WRAP expects `(ok, value)`.
    add_odoo(
        lua,
        &odoo,
        "log",
        shared,
        |lua, s, (model, id, body, attachment): (String, i64, String, Option<Table>)| {
            // Off (no [odoo], or `[odoo] chatter = false`): nothing to do, and the shipped
            // scripts need not check.
            if !s.ctx.outbox.chatter_on() {
                return Ok(false);
            }
            let record = RecordRef { model, id };
            record.check().map_err(|e| lua_err(format!("log: {e}")))?;
            if body.trim().is_empty() {
                return Err(lua_err("log: the note's text is empty"));
            }
            let file = match attachment {
                None => None,
                Some(t) => {
                    let name: Option<String> = t.get("name")?;
                    let data: Option<mlua::LuaString> = t.get("data")?;
                    let (Some(name), Some(data)) = (name, data) else {
                        return Err(lua_err(
                            "log: the attachment needs `name` and `data` (the file's bytes)",
                        ));
                    };
                    crate::http::admin::check_filename(&name)
                        .map_err(|e| lua_err(format!("log: attachment name {e}")))?;
                    if data.as_bytes().len() > MAX_CHATTER_FILE {
                        return Err(lua_err(format!(
                            "log: the attachment is {} bytes; at most {MAX_CHATTER_FILE} are attached to a note",
                            data.as_bytes().len()
                        )));
                    }
                    let mime: Option<String> = t.get("mimetype")?;
                    let mime = mime.unwrap_or_else(|| crate::media::mime_for(&name).to_string());
                    Some(ChatterFile::new(&name, &mime, &data.as_bytes()))
                }
            };
            charge_written(lua, body.len() + file.as_ref().map_or(0, |f| f.data_b64.len()))?;
            s.effects
                .lock()
                .expect("not poisoned")
                .chatter
                .push(ChatterNote::new(record, body, file));
            Ok(true)
        },
    )?;
    add_odoo(
        lua,
        &odoo,
        "call",
        shared,
        |lua, s, (model, method, args, kwargs): (String, String, Option<LuaValue>, Option<LuaValue>)| {
            let args = match args {
                Some(a) => as_array_value(lua, a)?,
                None => json!([]),
            };
            let kwargs: Value = match kwargs {
                Some(k) => lua.from_value(k)?,
                None => json!({}),
            };
            let kwargs = if kwargs.is_object() { kwargs } else { json!({}) };
            let what = format!("call({model}, {method})");
            let v = odoo_call(lua, s, &what, move |c| {
                Box::pin(async move { c.call(&model, &method, args, kwargs).await })
            })?;
            lua.to_value(&v)
        },
    )?;
    add_odoo(
        lua,
        &odoo,
        "search_read",
        shared,
        |lua, s, (model, domain, fields, opts): (String, Option<LuaValue>, Option<Vec<String>>, Option<LuaValue>)| {
            let domain = match domain {
                Some(d) => as_array_value(lua, d)?,
                None => json!([]),
            };
            let fields = fields.unwrap_or_default();
            let opts: Value = match opts {
                Some(o) => lua.from_value(o)?,
                None => json!({}),
            };
            let opts = if opts.is_object() { opts } else { json!({}) };
            let v = odoo_call(lua, s, "search_read", move |c| {
                Box::pin(async move {
                    let f: Vec<&str> = fields.iter().map(String::as_str).collect();
                    c.search_read(&model, domain, &f, opts).await
                })
            })?;
            lua.to_value(&v)
        },
    )?;
    add_odoo(
        lua,
        &odoo,
        "read",
        shared,
        |lua, s, (model, ids, fields): (String, LuaValue, Option<Vec<String>>)| {
            let ids = record_ids(lua, ids)?;
            let fields = fields.unwrap_or_default();
            let v = odoo_call(lua, s, "read", move |c| {
                Box::pin(async move {
                    let f: Vec<&str> = fields.iter().map(String::as_str).collect();
                    c.read(&model, &ids, &f).await
                })
            })?;
            lua.to_value(&v)
        },
    )?;
    add_odoo(
        lua,
        &odoo,
        "write",
        shared,
        |lua, s, (model, ids, values): (String, LuaValue, LuaValue)| {
            let ids = record_ids(lua, ids)?;
            let values: Value = lua.from_value(values)?;
            odoo_call(lua, s, "write", move |c| {
                Box::pin(async move { c.write(&model, &ids, values).await })
            })
        },
    )?;
    add_odoo(
        lua,
        &odoo,
        "create",
        shared,
        |lua, s, (model, values): (String, LuaValue)| {
            let values: Value = lua.from_value(values)?;
            odoo_call(lua, s, "create", move |c| {
                Box::pin(async move { c.create(&model, values).await })
            })
        },
    )?;
    add_odoo(lua, &odoo, "invoice_pdf", shared, |lua, s, move_id: i64| {
        let bytes = odoo_call(lua, s, "invoice_pdf", move |c| {
            Box::pin(async move { c.invoice_pdf(move_id).await })
        })?;
        lua.create_string(&bytes)
    })?;
    add_odoo(
        lua,
        &odoo,
        "report_pdf",
        shared,
        |lua, s, (report, id): (String, i64)| {
            let bytes = odoo_call(lua, s, "report_pdf", move |c| {
                Box::pin(async move { c.report_pdf(&report, id).await })
            })?;
            lua.create_string(&bytes)
        },
    )?;
    Ok(odoo)
}

/// Sets `table[name]` to an `env.odoo` function: it returns `true, result`, or `false, err`
/// when Odoo failed (a table: `message`, `transient`, `kind`, `exception`), which
/// [`ODOO_WRAP`] turns into a raised error value scripts can inspect.
fn add_odoo<A, R>(
    lua: &Lua,
    table: &Table,
    name: &str,
    shared: &Arc<Shared>,
    f: impl Fn(&Lua, &Shared, A) -> mlua::Result<R> + Send + 'static,
) -> mlua::Result<()>
where
    A: FromLuaMulti,
    R: mlua::IntoLua,
{
    add(lua, table, name, shared, move |lua, s, args: A| match f(lua, s, args) {
        Ok(v) => Ok((true, v.into_lua(lua)?)),
        Err(mlua::Error::ExternalError(e)) if e.downcast_ref::<OdooFailure>().is_some() => {
            let failure = e.downcast_ref::<OdooFailure>().expect("checked");
            let t = lua.create_table()?;
            t.set("message", failure.message.as_str())?;
            t.set("transient", failure.transient)?;
            t.set("kind", failure.kind)?;
            t.set("exception", failure.exception.as_deref())?;
            Ok((false, LuaValue::Table(t)))
        }
        Err(e) => Err(e),
    })
}

/// Wraps the raw `env.odoo` functions (see [`add_odoo`]): a failure is raised as a table with
/// the metatable `OdooError` (`tostring(err)` gives its message), at the caller's level.
pub(super) const ODOO_WRAP: &str = r#"
local raw, error, setmetatable, pairs = ...
local mt = { __name = "OdooError", __tostring = function(e) return e.message end }
local out = {}
for name, f in pairs(raw) do
  out[name] = function(...)
    local ok, v = f(...)
    if ok then return v end
    error(setmetatable(v, mt), 2)
  end
end
return out
"#;

/// Records the run's first transient failure (see [`Shared::transient`]).
pub(super) fn note_transient(s: &Shared, message: &str) {
    let mut t = s.transient.lock().expect("not poisoned");
    if t.is_none() {
        *t = Some(message.to_string());
    }
}

/// `logger.debug|info|warn|error(...)`: the daemon's log, target `walua::lua`, with the
/// running script's name.
fn register_logger(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<Table> {
    let logger = lua.create_table()?;
    for level in ["debug", "info", "warn", "error"] {
        add(lua, &logger, level, shared, move |_, s, args: Variadic<LuaValue>| {
            let text: Vec<String> = args
                .iter()
                .map(|v| v.to_string().unwrap_or_else(|_| "?".into()))
                .collect();
            let text = text.join(" ");
            let script = s.label.lock().expect("not poisoned").clone();
            match level {
                "debug" => tracing::debug!(target: "walua::lua", %script, "{text}"),
                "info" => tracing::info!(target: "walua::lua", %script, "{text}"),
                "warn" => tracing::warn!(target: "walua::lua", %script, "{text}"),
                _ => tracing::error!(target: "walua::lua", %script, "{text}"),
            }
            Ok(())
        })?;
    }
    Ok(logger)
}

/// Runs an Odoo call from a Lua thread, outside the CPU budget.
fn odoo_call<T>(
    lua: &Lua,
    s: &Shared,
    what: &str,
    f: impl FnOnce(
        Arc<crate::odoo::OdooClient>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, crate::odoo::OdooError>> + Send>>,
) -> mlua::Result<T> {
    let ctx = &s.ctx;
    let (Some(client), Some(handle)) = (&ctx.odoo, &ctx.handle) else {
        return Err(lua_err(format!(
            "env.odoo.{what}: Odoo is not configured (add an [odoo] section to the configuration)"
        )));
    };
    let client = client.clone();
    let started = std::time::Instant::now();
    let result = match super::sandbox::wait_outside_budget(lua, handle, f(client)) {
        Ok(r) => r,
        Err(cap) => {
            tracing::warn!(call = what, "odoo call cut at the run's wall-clock cap");
            return Err(lua_err(format!("env.odoo.{what}: {cap}")));
        }
    };
    match &result {
        Ok(_) => tracing::debug!(
            call = what,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "odoo call"
        ),
        Err(e) => tracing::warn!(call = what, error = %e, transient = e.is_transient(), "odoo call failed"),
    }
    result.map_err(|e| {
        let failure = OdooFailure {
            message: format!("env.odoo.{what}: {e}"),
            transient: e.is_transient(),
            kind: e.kind(),
            exception: match &e {
                crate::odoo::OdooError::Fault { name, .. } | crate::odoo::OdooError::AccessDenied { name, .. } => {
                    Some(name.clone())
                }
                _ => None,
            },
        };
        if failure.transient {
            note_transient(s, &failure.message);
        }
        mlua::Error::external(failure)
    })
}

/// An Odoo call's failure on its way to the script, where it becomes a table
/// (`err.transient`, `err.kind`, `err.exception`, `err.message`; `tostring(err)` is the
/// message): see [`wrap_odoo`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(super) struct OdooFailure {
    message: String,
    transient: bool,
    kind: &'static str,
    exception: Option<String>,
}

/// The options of an interactive send (`header`, `footer`, `reply_to`, `from`).
const INTERACTIVE_OPTS: &[&str] = &["footer", "reply_to", "from"];

/// `opts.header` of an interactive send: a text, or a table in Meta's header shape
/// (`{ type = "image", image = { link = "https://…" } }`).
fn header_opt(lua: &Lua, req: &mut Value, opts: Option<&Table>) -> mlua::Result<()> {
    if let Some(o) = opts {
        match o.get::<LuaValue>("header")? {
            LuaValue::Nil => {}
            v @ (LuaValue::String(_) | LuaValue::Table(_)) => req["header"] = lua.from_value(v)?,
            other => {
                return Err(lua_err(format!(
                    "header: expected a text or a table, got {}",
                    other.type_name()
                )));
            }
        }
    }
    Ok(())
}

/// A `mark_read` or `typing` request for inbound message `wamid`, from the number it came to.
fn read_receipt(s: &Shared, kind: &str, wamid: &str) -> mlua::Result<Value> {
    let message = s.ctx.store.message_by_wamid(wamid).map_err(lua_err)?;
    let Some((sender, number)) = message.and_then(|m| Some((m.from?, m.phone_number_id))) else {
        return Err(lua_err(format!("{kind}: no inbound message {wamid}")));
    };
    let mut req = json!({ "to": sender, "type": kind, "message_id": wamid });
    if let Some(n) = number.filter(|n| s.ctx.outbox.sends_from(n)) {
        req["from"] = json!(n);
    }
    Ok(req)
}

/// `opts.record` of a send: the Odoo record it is about (`{ model = "sale.order", id = 42 }`).
fn record_opt(lua: &Lua, req: &mut Value, opts: Option<&Table>) -> mlua::Result<()> {
    if let Some(o) = opts {
        match o.get::<LuaValue>("record")? {
            LuaValue::Nil => {}
            v @ LuaValue::Table(_) => req["record"] = lua.from_value(v)?,
            other => {
                return Err(lua_err(format!(
                    "record: expected a table {{ model = \"sale.order\", id = 42 }}, got {}",
                    other.type_name()
                )));
            }
        }
    }
    Ok(())
}

/// Copies the string options `keys` of a send's `opts` table into its request.
fn string_opts(req: &mut Value, opts: Option<Table>, keys: &[&str]) -> mlua::Result<()> {
    if let Some(o) = opts {
        for &k in keys {
            if let Some(v) = o.get::<Option<String>>(k)? {
                req[k] = json!(v);
            }
        }
    }
    Ok(())
}

/// Odoo record ids from Lua: one id or a list of ids.
fn record_ids(lua: &Lua, ids: LuaValue) -> mlua::Result<Vec<i64>> {
    match ids {
        LuaValue::Integer(i) => Ok(vec![i]),
        LuaValue::Number(n) => Ok(vec![n as i64]),
        other => lua.from_value(other),
    }
}

fn as_array_value(lua: &Lua, v: LuaValue) -> mlua::Result<Value> {
    lua.from_value_with(
        v,
        mlua::serde::DeserializeOptions::new().encode_empty_tables_as_array(true),
    )
}

/// Uploads `bytes` as media through the account `from` names (default: the first), or keeps
/// them beside the store in dry run, and returns the media id to send.
fn upload_bytes(lua: &Lua, s: &Shared, from: Option<&str>, bytes: Vec<u8>, filename: &str) -> mlua::Result<String> {
    upload_bytes_for(lua, s, from, bytes, filename, None)
}

/// [`upload_bytes`] with Meta's `ttl_minutes` (numbers with "No Storage").
fn upload_bytes_for(
    lua: &Lua,
    s: &Shared,
    from: Option<&str>,
    bytes: Vec<u8>,
    filename: &str,
    ttl_minutes: Option<u32>,
) -> mlua::Result<String> {
    charge_written(lua, bytes.len())?;
    let ctx = &s.ctx;
    let mime = crate::media::mime_for(filename);
    let graph = match &ctx.graph {
        Some(clients) => {
            let number = from.map(|f| ctx.outbox.sender_number(f)).transpose().map_err(lua_err)?;
            Some(clients.for_number(number.as_deref()).ok_or_else(|| {
                lua_err(format!(
                    "upload: business number {} has no access token",
                    number.unwrap_or_default()
                ))
            })?)
        }
        None => None,
    };
    match (graph, &ctx.handle) {
        (Some(graph), Some(handle)) => {
            match super::sandbox::wait_outside_budget(
                lua,
                handle,
                graph.upload_media_for(bytes, mime, filename, ttl_minutes),
            ) {
                Ok(Ok(id)) => Ok(id),
                Ok(Err(e)) => {
                    // The failure's own "(will retry)" is the outbox's wording: here it is the
                    // run that is retried, and only if the script lets the error through.
                    let text = e.to_string();
                    let text = text
                        .trim_end_matches(" (will retry)")
                        .trim_end_matches(" (not retried)");
                    if e.disposition == crate::whatsapp::error::Disposition::Retry {
                        let message = format!("media upload failed (transient): {text}");
                        note_transient(s, &message);
                        Err(lua_err(message))
                    } else {
                        Err(lua_err(format!("media upload failed: {text}")))
                    }
                }
                Err(cap) => Err(lua_err(cap)),
            }
        }
        _ => crate::media::save_local(&ctx.store_path, filename, &bytes).map_err(lua_err),
    }
}
