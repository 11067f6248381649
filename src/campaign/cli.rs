//! `walua campaign create | start | pause | resume | cancel | show | list`, through the
//! running daemon's admin API; `show --follow` (and `start --follow`) draws a progress bar
//! with the rate and the ETA until the campaign ends.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{AdminClient, CliError, table};

/// The campaign subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CampaignCommand {
    /// Create a campaign (a draft unless --start or --at): its audience is checked, and the
    /// recipients that will be skipped are counted with their reasons.
    Create {
        /// The campaign's name.
        #[arg(long)]
        name: String,
        /// The template it sends.
        #[arg(long)]
        template: String,
        /// The template's language.
        #[arg(long, default_value = "fr")]
        lang: String,
        /// The audience as a CSV file: a `to` column (phone or BSUID), one column per template
        /// parameter (`1`, `2`… or the parameters' names).
        #[arg(long, conflicts_with_all = ["odoo_domain", "to"])]
        csv: Option<PathBuf>,
        /// The audience as Odoo partners: a res.partner domain in JSON, e.g.
        /// '[["category_id.name","=","VIP"]]'.
        #[arg(long, conflicts_with = "to")]
        odoo_domain: Option<String>,
        /// With --odoo-domain: the partner field of each template parameter, in order (repeat),
        /// or NAME=FIELD for named parameters.
        #[arg(long = "odoo-param", value_name = "FIELD or NAME=FIELD")]
        odoo_params: Vec<String>,
        /// The audience as recipients on the command line (repeat), without parameters.
        #[arg(long)]
        to: Vec<String>,
        /// The account it goes out from (name or phone number id).
        #[arg(long)]
        from: Option<String>,
        /// Start it at this time: `2026-12-01 09:00` (in [scripts] timezone) or RFC 3339.
        #[arg(long)]
        at: Option<String>,
        /// Start it now.
        #[arg(long, conflicts_with = "at")]
        start: bool,
    },
    /// Start a draft now (or at --at), or a scheduled campaign now.
    Start {
        /// The campaign's id.
        id: u64,
        /// Start it at this time instead.
        #[arg(long)]
        at: Option<String>,
        /// Draw its progress until it ends.
        #[arg(long)]
        follow: bool,
    },
    /// Pause: nothing more goes out, not even what was already queued.
    Pause {
        /// The campaign's id.
        id: u64,
    },
    /// Resume a paused campaign.
    Resume {
        /// The campaign's id.
        id: u64,
    },
    /// Cancel: nobody else receives it.
    Cancel {
        /// The campaign's id.
        id: u64,
    },
    /// A campaign's report: queued, sent, delivered, read, failed by Meta code, replied,
    /// opted out, skipped by reason.
    Show {
        /// The campaign's id.
        id: u64,
        /// Draw its progress (with the ETA) until it ends, then the report.
        #[arg(long)]
        follow: bool,
    },
    /// Every campaign, newest first.
    List,
}

/// Runs a campaign subcommand; `Ok(false)` when the command did its job but reports a
/// failure (a campaign that ended cancelled while followed).
pub async fn run(client: &AdminClient, cmd: CampaignCommand) -> Result<bool, CliError> {
    match cmd {
        CampaignCommand::Create {
            name,
            template,
            lang,
            csv,
            odoo_domain,
            odoo_params,
            to,
            from,
            at,
            start,
        } => {
            let mut body = json!({ "name": name, "template": template, "lang": lang, "start": start });
            if let Some(from) = from {
                body["from"] = json!(from);
            }
            if let Some(at) = at {
                body["at"] = json!(at);
            }
            if let Some(path) = csv {
                let text = std::fs::read_to_string(&path).map_err(|e| CliError::Api {
                    status: 0,
                    message: format!("cannot read {}: {e}", path.display()),
                })?;
                body["csv"] = json!(text);
            } else if let Some(domain) = odoo_domain {
                let domain: Value = serde_json::from_str(&domain).map_err(|e| CliError::Api {
                    status: 0,
                    message: format!("--odoo-domain is not JSON: {e}"),
                })?;
                let named = odoo_params.iter().any(|p| p.contains('='));
                let params = if named {
                    let mut map = serde_json::Map::new();
                    for p in &odoo_params {
                        let (k, v) = p.split_once('=').unwrap_or((p.as_str(), p.as_str()));
                        map.insert(k.trim().to_string(), json!(v.trim()));
                    }
                    Value::Object(map)
                } else {
                    json!(odoo_params)
                };
                body["odoo"] = json!({ "domain": domain, "params": params });
            } else {
                body["recipients"] = to.iter().map(|t| json!({ "to": t })).collect();
            }
            let answer = client
                .request(reqwest::Method::POST, "/api/campaigns", Some(&body))
                .await?;
            print!("{}", render(&answer));
            Ok(true)
        }
        CampaignCommand::Start { id, at, follow } => {
            let body = at.map(|at| json!({ "at": at })).unwrap_or(json!({}));
            let answer = client
                .request(
                    reqwest::Method::POST,
                    &format!("/api/campaigns/{id}/start"),
                    Some(&body),
                )
                .await?;
            if follow {
                return follow_progress(client, id).await;
            }
            print!("{}", render(&answer));
            Ok(true)
        }
        CampaignCommand::Pause { id } | CampaignCommand::Resume { id } | CampaignCommand::Cancel { id } => {
            let action = match cmd {
                CampaignCommand::Pause { .. } => "pause",
                CampaignCommand::Resume { .. } => "resume",
                _ => "cancel",
            };
            let answer = client
                .request(reqwest::Method::POST, &format!("/api/campaigns/{id}/{action}"), None)
                .await?;
            print!("{}", render(&answer));
            Ok(true)
        }
        CampaignCommand::Show { id, follow: true } => follow_progress(client, id).await,
        CampaignCommand::Show { id, follow: false } => {
            let answer = client
                .request(reqwest::Method::GET, &format!("/api/campaigns/{id}"), None)
                .await?;
            print!("{}", render(&answer));
            Ok(true)
        }
        CampaignCommand::List => {
            let answer = client.request(reqwest::Method::GET, "/api/campaigns", None).await?;
            print!("{}", render_list(&answer));
            Ok(true)
        }
    }
}

/// Draws the campaign's progress until it is done or cancelled (or paused, or held by
/// Meta: then it says so and returns), then prints the report.
async fn follow_progress(client: &AdminClient, id: u64) -> Result<bool, CliError> {
    let path = format!("/api/campaigns/{id}");
    let mut report = client.request(reqwest::Method::GET, &path, None).await?;
    let total = report["total"].as_u64().unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {per_sec} ETA {eta} {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("campaign {id}"));
    loop {
        let handled =
            total.saturating_sub(report["pending"].as_u64().unwrap_or(0) + report["queued"].as_u64().unwrap_or(0));
        bar.set_position(handled);
        bar.set_message(format!(
            "{} — sent {}, failed {}, skipped {}",
            report["status"].as_str().unwrap_or("?"),
            report["sent"],
            report["failed"],
            report["skipped"]
        ));
        if let Some("done" | "cancelled" | "paused" | "held" | "draft") = report["status"].as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        report = client.request(reqwest::Method::GET, &path, None).await?;
    }
    bar.finish();
    print!("{}", render(&report));
    Ok(report["status"] != "cancelled")
}

fn n(v: &Value) -> String {
    v.as_u64().map_or_else(|| "0".into(), |n| n.to_string())
}

/// A campaign's report as text.
pub fn render(r: &Value) -> String {
    let mut out = format!(
        "campaign {} \"{}\": {} ({} {}), {}\n",
        r["id"],
        r["name"].as_str().unwrap_or(""),
        r["status"].as_str().unwrap_or("?"),
        r["template"].as_str().unwrap_or(""),
        r["lang"].as_str().unwrap_or(""),
        match (r["reason"].as_str(), r["at"].as_str()) {
            (Some(reason), _) => reason.to_string(),
            (None, Some(at)) => format!("starts at {at}"),
            _ => format!("created {}", r["created_at"].as_str().unwrap_or("")),
        }
    );
    let rows = [
        "total",
        "pending",
        "queued",
        "sent",
        "delivered",
        "read",
        "failed",
        "unknown",
        "cancelled",
        "skipped",
        "replied",
        "opted_out",
    ]
    .iter()
    .map(|k| vec![k.to_string(), n(&r[*k])])
    .collect::<Vec<_>>();
    out.push_str(&table(&["", "recipients"], &rows));
    for (title, key) in [
        ("failed, by Meta code", "failed_by_code"),
        ("skipped, by reason", "skipped_by_reason"),
    ] {
        if let Some(m) = r[key].as_object().filter(|m| !m.is_empty()) {
            out.push_str(&format!("{title}: "));
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out.push_str(&parts.join(", "));
            out.push('\n');
        }
    }
    if let Some(eta) = r["eta_seconds"].as_u64() {
        out.push_str(&format!("about {eta} s left at the number's rate\n"));
    }
    out
}

/// Every campaign as a table.
pub fn render_list(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["campaigns"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            vec![
                c["id"].to_string(),
                c["name"].as_str().unwrap_or("").to_string(),
                c["template"].as_str().unwrap_or("").to_string(),
                c["status"].as_str().unwrap_or("").to_string(),
                format!("{:.0} %", c["progress"].as_f64().unwrap_or(0.0) * 100.0),
                n(&c["total"]),
                n(&c["sent"]),
                n(&c["delivered"]),
                n(&c["read"]),
                n(&c["failed"]),
                n(&c["skipped"]),
                n(&c["replied"]),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "TEMPLATE",
            "STATUS",
            "DONE",
            "TOTAL",
            "SENT",
            "DELIVERED",
            "READ",
            "FAILED",
            "SKIPPED",
            "REPLIED",
        ],
        &rows,
    )
}
