//! The client side of the CLI commands that talk to a running daemon's admin API.

use serde_json::Value;

use crate::Config;

/// Errors of CLI client commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The daemon could not be reached.
    #[error("cannot reach walua at {url}: {reason} (is `walua serve` running with this config?)")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// The daemon answered with an error.
    #[error("walua answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error message it gave.
        message: String,
    },
}

/// A small client of the admin API, built from the same configuration as the daemon.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    /// Targets the daemon that `config` describes (a wildcard listen address means loopback).
    pub fn new(config: &Config) -> AdminClient {
        let mut addr = config.server.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        AdminClient {
            base: format!("http://{addr}"),
            token: config.server.admin_token.as_ref().map(|t| t.expose().to_string()),
            http: reqwest::Client::new(),
        }
    }

    /// Sends a request to the admin API and returns its JSON answer.
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(req).await
    }

    /// Uploads a local file through `POST /api/media`, through the number that will send it
    /// to `to` (the account `from` names, if given); returns the daemon's answer (`id`, and the
    /// `from` to send it with).
    pub async fn upload(
        &self,
        filename: &str,
        from: Option<&str>,
        to: &str,
        bytes: Vec<u8>,
    ) -> Result<Value, CliError> {
        let encode = |s| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC);
        let mut url = format!(
            "{}/api/media?filename={}&to={}",
            self.base,
            encode(filename),
            encode(to)
        );
        if let Some(from) = from {
            url.push_str(&format!("&from={}", encode(from)));
        }
        self.send(self.http.post(&url).body(bytes)).await
    }

    /// Adds the admin token, sends, and turns an error answer into [`CliError::Api`].
    async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(CliError::Api {
                status: status.as_u16(),
                message: error_message(&value),
            });
        }
        Ok(value)
    }
}

/// The readable reason of an admin API error answer (`{"error": "…"}` or a failed message).
fn error_message(answer: &Value) -> String {
    match answer.get("error") {
        Some(Value::String(s)) => s.clone(),
        Some(e @ Value::Object(_)) => {
            let mut m = format!(
                "message {} {}: error {}: {}",
                answer["id"],
                answer["status"].as_str().unwrap_or("failed"),
                e["code"],
                e["title"].as_str().unwrap_or("")
            );
            if let Some(d) = e["details"].as_str() {
                m.push_str(&format!(" ({d})"));
            }
            if let Some(x) = e["explanation"].as_str() {
                m.push_str(&format!("\n{x}"));
            }
            m
        }
        _ => "no details".into(),
    }
}

/// Formats rows as an aligned text table with a header.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

fn time(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_i64)
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A contact's Odoo partner: `42 Awa Diop`, with `(+2 more)` when the number is shared.
fn partner(c: &Value) -> String {
    match c.get("partner_id").and_then(Value::as_i64) {
        None => "-".into(),
        Some(id) => {
            let mut out = format!("{id} {}", c["partner_name"].as_str().unwrap_or(""));
            let others = c["partner_ambiguous"].as_array().map_or(0, Vec::len);
            if others > 0 {
                out.push_str(&format!(" (+{others} more)"));
            }
            out
        }
    }
}

/// Renders `GET /api/conversations` as a table.
pub fn render_conversations(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["conversations"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|c| {
            vec![
                s(c, "contact"),
                s(c, "wa_id"),
                s(c, "name"),
                partner(c),
                c["opted_out"]["scope"].as_str().unwrap_or("-").to_string(),
                s(c, "message_count"),
                time(c, "last_message_at"),
                s(c, "last_summary"),
            ]
        })
        .collect();
    table(
        &[
            "CONTACT",
            "PHONE",
            "NAME",
            "ODOO PARTNER",
            "OPTED OUT",
            "MESSAGES",
            "LAST (UTC)",
            "LAST MESSAGE",
        ],
        &rows,
    )
}

/// Renders `GET /api/conversations/{contact}/messages` as a table; with a `NUMBER` column
/// (the business number each message came to or went from) when there is more than one.
pub fn render_messages(answer: &Value) -> String {
    let messages = answer["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let numbers: std::collections::BTreeSet<String> = messages.iter().map(|m| s(m, "phone_number_id")).collect();
    let several = numbers.len() > 1;
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|m| {
            let dir = if m["direction"] == "inbound" { "<-" } else { "->" };
            let mut row = vec![s(m, "id"), time(m, "timestamp"), dir.to_string()];
            if several {
                row.push(s(m, "phone_number_id"));
            }
            row.extend([s(m, "type"), s(m, "status"), s(m, "summary")]);
            row
        })
        .collect();
    if several {
        table(
            &["ID", "TIME (UTC)", "DIR", "NUMBER", "TYPE", "STATUS", "CONTENT"],
            &rows,
        )
    } else {
        table(&["ID", "TIME (UTC)", "DIR", "TYPE", "STATUS", "CONTENT"], &rows)
    }
}

/// A path segment, percent-encoded (ids like `hook:invoice_posted:42` are safe as they are,
/// but a name may hold anything).
pub fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn time_ms(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_i64)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Renders `GET /api/templates` as a table (and the definitions Meta does not have yet).
pub fn render_templates(answer: &Value) -> String {
    let list = |k: &str| answer[k].as_array().cloned().unwrap_or_default();
    let mut rows: Vec<Vec<String>> = list("templates")
        .iter()
        .map(|t| {
            vec![
                s(t, "name"),
                s(t, "language"),
                s(t, "category"),
                match t["reason"].as_str() {
                    Some(r) => format!("{} ({r})", s(t, "status")),
                    None => s(t, "status"),
                },
                s(t, "quality"),
                format!("{} {}", s(t, "waba_id"), s(t, "account")),
                s(t, "synced_at"),
            ]
        })
        .collect();
    rows.extend(list("local_only").iter().map(|t| {
        vec![
            s(t, "name"),
            s(t, "language"),
            s(t, "category"),
            "LOCAL (not at Meta: walua templates push)".into(),
            "-".into(),
            "-".into(),
            s(t, "file"),
        ]
    }));
    let mut out = table(
        &[
            "NAME",
            "LANG",
            "CATEGORY",
            "STATUS",
            "QUALITY",
            "WABA / ACCOUNTS",
            "SYNCED (UTC)",
        ],
        &rows,
    );
    for w in list("wabas") {
        out.push_str(&format!(
            "WABA {}: last synced {}\n",
            s(&w, "waba_id"),
            s(&w, "synced_at")
        ));
    }
    out
}

/// Renders `POST /api/templates/sync`.
pub fn render_template_sync(answer: &Value) -> String {
    let mut out = String::new();
    for r in answer["synced"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let changes = r["changes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        out.push_str(&format!(
            "WABA {}: {} templates in {} page(s), {} change(s)\n",
            s(r, "waba_id"),
            r["templates"],
            r["pages"],
            changes.len()
        ));
        for c in changes {
            out.push_str(&format!(
                "  {} ({}): {} {} → {}\n",
                s(c, "name"),
                s(c, "language"),
                s(c, "what"),
                s(c, "from"),
                s(c, "to")
            ));
        }
    }
    out
}

/// Renders `GET /api/templates/diff`: local and Meta side by side, and what push would do.
pub fn render_template_diff(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["diff"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|r| {
            let diffs: Vec<String> = r["differences"]
                .as_array()
                .map(|d| d.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default();
            let mut what = diffs.join("; ");
            if let Some(n) = r["note"].as_str() {
                what = if what.is_empty() {
                    n.to_string()
                } else {
                    format!("{what} — {n}")
                };
            }
            vec![
                s(r, "name"),
                s(r, "language"),
                if r["local"].is_string() {
                    "yes".into()
                } else {
                    "-".into()
                },
                match (r["status"].as_str(), r["category"].as_str()) {
                    (Some(st), Some(c)) => format!("{st} {c}"),
                    _ => "-".into(),
                },
                s(r, "action"),
                if what.is_empty() { "-".into() } else { what },
            ]
        })
        .collect();
    table(
        &["NAME", "LANG", "LOCAL", "META", "PUSH WOULD", "DIFFERENCES / NOTES"],
        &rows,
    )
}

/// Renders `POST /api/templates/push`.
pub fn render_template_push(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|r| vec![s(r, "name"), s(r, "language"), s(r, "result"), s(r, "detail")])
        .collect();
    table(&["NAME", "LANG", "RESULT", "DETAIL"], &rows)
}

/// Renders `GET /api/parked` as a table.
pub fn render_parked(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["parked"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|r| {
            let state = if r["expired"] == true {
                "expired".to_string()
            } else if r["parked"] == true {
                "parked".to_string()
            } else {
                format!("retry at {}", time_ms(r, "next_attempt_ms"))
            };
            let kind = if r["transient"] == true {
                "transient"
            } else {
                "definite"
            };
            vec![
                s(r, "id"),
                state,
                s(r, "attempts"),
                time_ms(r, "first_failed_ms"),
                format!("{kind}: {}", s(r, "error")),
            ]
        })
        .collect();
    table(&["ID", "STATE", "ATTEMPTS", "SINCE (UTC)", "LAST ERROR"], &rows)
}

/// Renders `GET /api/cron` as a table.
pub fn render_cron(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["jobs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|j| {
            let mut failed = Vec::new();
            if j["retrying"].as_u64().unwrap_or(0) > 0 {
                failed.push(format!("{} retrying", j["retrying"]));
            }
            if j["parked"].as_u64().unwrap_or(0) > 0 {
                failed.push(format!("{} parked", j["parked"]));
            }
            vec![
                s(j, "name"),
                format!("{} ({})", s(j, "schedule"), s(j, "timezone")),
                s(j, "next_run"),
                s(j, "last_run"),
                match j["last_error"].as_str() {
                    Some(e) => e.to_string(),
                    None => "-".into(),
                },
                if failed.is_empty() {
                    "-".into()
                } else {
                    failed.join(", ")
                },
            ]
        })
        .collect();
    table(
        &[
            "JOB",
            "SCHEDULE",
            "NEXT RUN (UTC)",
            "LAST RUN (UTC)",
            "LAST ERROR",
            "FAILED RUNS",
        ],
        &rows,
    )
}

/// Renders `GET /api/users` as a table.
pub fn render_users(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["users"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|u| vec![s(u, "name"), s(u, "role"), s(u, "created_at")])
        .collect();
    table(&["USER", "ROLE", "CREATED (UTC)"], &rows)
}

/// The first line of `input` without its line ending: how `walua user add|passwd` read a
/// password that is piped in. Spaces are kept (they may be part of it); an empty line is
/// refused.
pub fn read_password_line(mut input: impl std::io::BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no password on standard input (one line expected)",
        ));
    }
    Ok(password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piped_password_is_its_first_line_without_the_line_ending() {
        let read = |s: &str| read_password_line(s.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(read("s3cret pass \n").unwrap(), "s3cret pass ");
        assert_eq!(read("windows-line\r\nsecond\n").unwrap(), "windows-line");
        assert_eq!(read("no newline").unwrap(), "no newline");
        assert!(read("\n").unwrap_err().contains("no password"));
        assert!(read("").is_err());
    }

    #[test]
    fn the_users_table_shows_names_roles_and_creation_only() {
        let out = render_users(&serde_json::json!({"users": [
            {"name": "ibou", "role": "admin", "created_at": "2026-05-01T08:00:00Z"},
            {"name": "awa", "role": "agent", "created_at": "2026-05-02T09:30:00Z"},
        ]}));
        assert_eq!(
            out,
            "USER  ROLE   CREATED (UTC)\nibou  admin  2026-05-01T08:00:00Z\nawa   agent  2026-05-02T09:30:00Z\n"
        );
    }

    #[test]
    fn messages_show_the_business_number_only_when_there_are_several() {
        let one = serde_json::json!({"messages": [
            {"id": 1, "timestamp": 0, "direction": "inbound", "type": "text", "status": "received", "summary": "Bonjour", "phone_number_id": "111"},
            {"id": 2, "timestamp": 0, "direction": "outbound", "type": "text", "status": "sent", "summary": "Merci", "phone_number_id": "111"},
        ]});
        assert!(!render_messages(&one).contains("NUMBER"));
        let mut two = one.clone();
        two["messages"][1]["phone_number_id"] = serde_json::json!("222");
        let out = render_messages(&two);
        assert!(out.lines().next().unwrap().contains("NUMBER"), "{out}");
        assert!(out.contains("222"), "{out}");
    }
}
