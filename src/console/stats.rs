//! The statistics page, `/console/stats?from=&to=&group_by=`: the figures of
//! [`crate::stats`] for a period, as cards, two charts and tables. Every signed-in role reads
//! it (the figures carry no customer content). The charts are SVG drawn here, on the server:
//! no script, no external asset (the console's CSP allows neither), and they scale to a
//! phone's width.

use std::fmt::Write as _;

use hyper::StatusCode;

use super::accounts::ConsoleSession;
use super::pages::{attr, esc, layout, page, plain};
use super::strings::{FR, StatsStrings};
use crate::App;
use crate::http::HttpResponse;
use crate::stats::{GroupBy, StatsError, StatsQuery, StatsReport, percentile, rate};
use crate::store::stats::{Counts, Sender};

/// The chart's drawing box (SVG user units; the image scales to the page's width).
const W: f64 = 440.0;
const H: f64 = 200.0;
const LEFT: f64 = 46.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 26.0;
/// Colours: received, sent, delivered, read, failed, bot, agents.
const C_IN: &str = "#25d366";
const C_OUT: &str = "#075e54";
const C_DELIVERED: &str = "#1a7f37";
const C_READ: &str = "#0969da";
const C_FAILED: &str = "#cf222e";
const C_BOT: &str = "#8250df";
const C_HUMAN: &str = "#bf8700";

/// `GET /console/stats`.
pub async fn stats_page(app: &App, session: &ConsoleSession, query: &str) -> HttpResponse {
    let t = &FR.stats;
    let tz = app.config.scripts.timezone;
    let today = crate::stats::today(tz);
    let mut q = match StatsQuery::parse(Some(query), today) {
        Ok(q) => q,
        Err(e @ StatsError::Store(_)) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => {
            let body = format!(
                "<h2>{}</h2>{}<p class=\"notice error\" role=\"alert\" id=\"stats-error\">{}</p>",
                t.title,
                period_form(
                    t,
                    &StatsQuery::parse(None, today).expect("the defaults are valid"),
                    today
                ),
                esc(&error_fr(t, &e))
            );
            return page(StatusCode::BAD_REQUEST, &layout(&FR, t.title, Some(session), &body));
        }
    };
    if !q.group_by.is_time() {
        q.group_by = GroupBy::Day;
    }
    let found = app
        .store
        .blocking(move |s| {
            let main = crate::stats::report(s, tz, &q)?;
            let mut by = Vec::new();
            for g in [GroupBy::Template, GroupBy::Campaign, GroupBy::Script, GroupBy::Number] {
                let q = StatsQuery {
                    group_by: g,
                    ..q.clone()
                };
                by.push(crate::stats::report(s, tz, &q)?);
            }
            Ok((main, by))
        })
        .await;
    let Ok((report, by)) = found else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "store unavailable");
    };
    let mut body = format!("<h2>{}</h2>", t.title);
    body.push_str(&period_form(t, &report.query, today));
    if let Some((at, last)) = report.progress.backfill {
        let done = (at * 100).checked_div(last).unwrap_or(100);
        let _ = write!(
            body,
            "<p class=\"notice\" id=\"stats-progress\">{} ({done} %)</p>",
            t.rebuilding
        );
    } else if report.progress.pending > 0 {
        let _ = write!(
            body,
            "<p class=\"notice\" id=\"stats-progress\">{} {}</p>",
            report.progress.pending, t.pending
        );
    }
    if report.totals.is_empty() {
        let _ = write!(body, "<p class=\"empty\" id=\"stats-empty\">{}</p>", t.empty);
    }
    body.push_str(&cards(t, &report.totals));
    let _ = write!(body, "<p class=\"why\">{}</p>", t.help);
    body.push_str("<div class=\"charts\">");
    let _ = write!(
        body,
        "<section class=\"chart\" id=\"chart-volume\"><h3>{}</h3>{}<ul class=\"legend\"><li><span class=\"sw\" data-c=\"in\"></span>{}</li><li><span class=\"sw\" data-c=\"out\"></span>{}</li></ul></section>",
        t.chart_volume,
        volume_chart(&report),
        t.legend_in,
        t.legend_out
    );
    let _ = write!(
        body,
        "<section class=\"chart\" id=\"chart-rates\"><h3>{}</h3>{}<ul class=\"legend\"><li><span class=\"sw\" data-c=\"delivered\"></span>{}</li><li><span class=\"sw\" data-c=\"read\"></span>{}</li><li><span class=\"sw\" data-c=\"failed\"></span>{}</li></ul></section>",
        t.chart_rates,
        rates_chart(&report),
        t.delivered,
        t.read,
        t.failed
    );
    let _ = write!(
        body,
        "<section class=\"chart\" id=\"chart-response\"><h3>{}</h3>{}<ul class=\"legend\"><li><span class=\"sw\" data-c=\"bot\"></span>{}</li><li><span class=\"sw\" data-c=\"human\"></span>{}</li></ul></section>",
        t.chart_response,
        response_chart(&report),
        t.bot,
        t.human
    );
    body.push_str("</div>");
    for (r, title, col, id) in [
        (&by[0], t.per_template, t.col_template, "per-template"),
        (&by[1], t.per_campaign, t.col_campaign, "per-campaign"),
        (&by[2], t.per_script, t.col_script, "per-script"),
        (&by[3], t.per_number, t.col_number, "per-number"),
    ] {
        // Only numbers receive messages.
        body.push_str(&group_table(t, r, title, col, id, id == "per-number"));
    }
    body.push_str(&failures_table(t, &report.totals));
    body.push_str(&pricing_table(t, &report.totals));
    page(StatusCode::OK, &layout(&FR, t.title, Some(session), &body))
}

/// A refused period, in French.
fn error_fr(t: &StatsStrings, e: &StatsError) -> String {
    match e {
        StatsError::BadDate { value, .. } => format!("« {value} » {}", t.bad_date),
        StatsError::Reversed { from, to } => format!("{} ({from}) {} ({to}).", t.reversed.0, t.reversed.1),
        StatsError::TooLong(days) => format!("{days} {}", t.too_long),
        StatsError::UnknownGroup(g) => format!("« {g} » {}", t.unknown_group),
        StatsError::Store(e) => e.to_string(),
    }
}

/// The period form (dates, grouping) and the presets.
fn period_form(t: &StatsStrings, q: &StatsQuery, today: chrono::NaiveDate) -> String {
    let mut out = String::from("<form class=\"period\" method=\"get\" action=\"/console/stats\">");
    let _ = write!(
        out,
        "<label>{} <input type=\"date\" name=\"from\" id=\"stats-from\" value=\"{}\"></label><label>{} <input type=\"date\" name=\"to\" id=\"stats-to\" value=\"{}\"></label><label>{} <select name=\"group_by\" id=\"stats-group\">",
        t.from, q.from, t.to, q.to, t.group_by
    );
    for (g, label) in [
        (GroupBy::Day, t.by_day),
        (GroupBy::Week, t.by_week),
        (GroupBy::Month, t.by_month),
    ] {
        let _ = write!(
            out,
            "<option value=\"{}\"{}>{label}</option>",
            g.as_str(),
            if g == q.group_by { " selected" } else { "" }
        );
    }
    let _ = write!(
        out,
        "</select></label><button id=\"stats-show\">{}</button></form>",
        t.show
    );
    out.push_str("<nav class=\"tabs\">");
    for (days, group, label) in [
        (7, "day", format!("7 {}", t.last_days)),
        (30, "day", format!("30 {}", t.last_days)),
        (90, "week", format!("90 {}", t.last_days)),
        (365, "month", t.last_year.to_string()),
    ] {
        let from = today - chrono::Days::new(days - 1);
        let on = q.to == today && q.from == from;
        let _ = write!(
            out,
            "<a href=\"/console/stats?from={from}&amp;to={today}&amp;group_by={group}\"{}>{}</a>",
            if on { " class=\"on\"" } else { "" },
            esc(&label)
        );
    }
    out.push_str("</nav>");
    out
}

/// A rate as French text: `66,7 %`, or `–`.
fn pct(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{:.1} %", r * 100.0).replace('.', ","),
        None => "–".into(),
    }
}

/// A duration in seconds as French text: `42 s`, `12 min`, `3 h 05`.
fn secs_fr(s: Option<u32>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) if s < 7200 => format!("{} min", s / 60),
        Some(s) => format!("{} h {:02}", s / 3600, s % 3600 / 60),
    }
}

fn median_of(c: &Counts, who: Sender) -> Option<u32> {
    c.responses.get(who.as_str()).and_then(|r| percentile(r, 0.5))
}

fn sender_label(t: &StatsStrings, s: Sender) -> &'static str {
    match s {
        Sender::Bot => t.bot,
        Sender::Human => t.human,
        Sender::Integration => t.integration,
        Sender::Campaign => t.campaign,
        Sender::Notification => t.notification,
        Sender::Other => t.other,
    }
}

/// The period's key figures.
fn cards(t: &StatsStrings, c: &Counts) -> String {
    let mut out = String::from("<section class=\"cards\" id=\"stats-cards\">");
    let card = |out: &mut String, id: &str, label: &str, value: String, detail: String| {
        let _ = write!(
            out,
            "<div class=\"card\" id=\"card-{id}\"><span class=\"label\">{label}</span><strong>{value}</strong><span class=\"detail\">{detail}</span></div>"
        );
    };
    card(&mut out, "in", t.messages_in, c.messages_in.to_string(), String::new());
    let senders: Vec<String> = Sender::ALL
        .iter()
        .filter_map(|s| {
            let n = c.out_by_sender.get(s.as_str()).copied().unwrap_or(0);
            (n > 0).then(|| format!("{} {n}", sender_label(t, *s)))
        })
        .collect();
    card(
        &mut out,
        "out",
        t.messages_out,
        c.messages_out.to_string(),
        esc(&senders.join(" · ")).into_owned(),
    );
    card(
        &mut out,
        "delivered",
        t.delivered,
        pct(rate(c.delivered, c.attempted)),
        format!("{} {} {}", c.delivered, t.of, c.attempted),
    );
    card(
        &mut out,
        "read",
        t.read,
        pct(rate(c.read, c.delivered)),
        format!("{} {}", c.read, t.of_delivered),
    );
    card(
        &mut out,
        "failed",
        t.failed,
        pct(rate(c.failed, c.attempted)),
        format!("{} {} {}", c.failed, t.of, c.attempted),
    );
    let responses: Vec<String> = crate::stats::RESPONDERS
        .iter()
        .filter_map(|s| {
            let r = c.responses.get(s.as_str())?;
            Some(format!(
                "{} {} ({} {}, {} {})",
                sender_label(t, *s),
                secs_fr(percentile(r, 0.5)),
                r.count,
                t.answers,
                t.p90,
                secs_fr(percentile(r, 0.9))
            ))
        })
        .collect();
    let first = crate::stats::RESPONDERS
        .iter()
        .find_map(|s| median_of(c, *s).map(|m| format!("{} {}", sender_label(t, *s), secs_fr(Some(m)))));
    card(
        &mut out,
        "response",
        t.first_response,
        esc(&first.unwrap_or_else(|| "–".into())).into_owned(),
        esc(&responses.join(" · ")).into_owned(),
    );
    card(
        &mut out,
        "conversations",
        t.conversations,
        (c.started_by_customer + c.started_by_business).to_string(),
        format!(
            "{} {} · {} {}",
            c.started_by_customer, t.by_customers, c.started_by_business, t.by_business
        ),
    );
    let billable: Vec<String> = c.billable.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let free: i64 = c.free.values().sum();
    card(
        &mut out,
        "billable",
        t.billable,
        c.billable.values().sum::<i64>().to_string(),
        esc(format!("{} · {free} {}", billable.join(" · "), t.free).trim_start_matches(" · ")).into_owned(),
    );
    out.push_str("</section>");
    out
}

/// A short label of a group key on the x axis: `05/03`, `03/2026`.
fn x_label(group_by: GroupBy, key: &str) -> String {
    match group_by {
        GroupBy::Month => {
            let (y, m) = key.split_once('-').unwrap_or((key, ""));
            format!("{m}/{y}")
        }
        _ => {
            let parts: Vec<&str> = key.split('-').collect();
            match parts.as_slice() {
                [_, m, d] => format!("{d}/{m}"),
                _ => key.to_string(),
            }
        }
    }
}

/// A round axis for values up to `max`: its top and the step between grid lines (1, 2 or
/// 5 times a power of ten, at least 1; five intervals at most).
fn nice_axis(max: f64) -> (f64, f64) {
    let raw = (max / 5.0).max(1.0);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|s| s * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    (step * (max / step).ceil().max(1.0), step)
}

/// The frame of a chart: the horizontal grid every `step` up to `ymax` with its labels,
/// and the x labels (at most 8).
fn frame(report: &StatsReport, ymax: f64, step: f64, y_label: &dyn Fn(f64) -> String) -> String {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let mut out = String::new();
    let lines = (ymax / step).round() as usize;
    for i in 0..=lines {
        let v = step * i as f64;
        let y = TOP + ph - ph * v / ymax;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#d0d7de\" stroke-width=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"ax\">{}</text>",
            LEFT + pw,
            if i == 0 { 1.0 } else { 0.5 },
            LEFT - 4.0,
            y + 4.0,
            esc(&y_label(v))
        );
    }
    let n = report.groups.len().max(1);
    let every = n.div_ceil(8);
    for (i, (key, _)) in report.groups.iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let x = LEFT + pw * (i as f64 + 0.5) / n as f64;
        let _ = write!(
            out,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"ax\">{}</text>",
            H - 8.0,
            esc(&x_label(report.query.group_by, key))
        );
    }
    out
}

fn svg(id: &str, label: &str, inner: &str) -> String {
    format!(
        "<svg id=\"{id}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\" preserveAspectRatio=\"xMidYMid meet\">{inner}</svg>",
        attr(label)
    )
}

/// Messages received and sent per group, side by side.
fn volume_chart(report: &StatsReport) -> String {
    let t = &FR.stats;
    let max = report
        .groups
        .iter()
        .map(|(_, c)| c.messages_in.max(c.messages_out))
        .max()
        .unwrap_or(0);
    let (ymax, step) = nice_axis(max as f64);
    let mut inner = frame(report, ymax, step, &|v| format!("{}", v.round() as i64));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let n = report.groups.len().max(1) as f64;
    let band = pw / n;
    let bar = (band * 0.4).min(14.0);
    for (i, (key, c)) in report.groups.iter().enumerate() {
        let mid = LEFT + band * (i as f64 + 0.5);
        for (value, colour, dx, what) in [
            (c.messages_in, C_IN, -bar, t.legend_in),
            (c.messages_out, C_OUT, 0.0, t.legend_out),
        ] {
            if value <= 0 {
                continue;
            }
            let h = ph * value as f64 / ymax;
            let _ = write!(
                inner,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>{} : {what} {value}</title></rect>",
                mid + dx,
                TOP + ph - h,
                esc(key)
            );
        }
    }
    svg("svg-volume", t.chart_volume, &inner)
}

/// Lines of (x, y) points, broken where a value is missing.
fn polylines(points: &[Option<(f64, f64)>], colour: &str, class: &str) -> String {
    let mut out = String::new();
    let mut run: Vec<(f64, f64)> = Vec::new();
    let flush = |run: &mut Vec<(f64, f64)>, out: &mut String| {
        if run.len() > 1 {
            let pts: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = write!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" class=\"{class}\"/>",
                pts.join(" ")
            );
        }
        run.clear();
    };
    for p in points {
        match p {
            Some(p) => run.push(*p),
            None => flush(&mut run, &mut out),
        }
    }
    flush(&mut run, &mut out);
    if points.len() <= 31 {
        for (x, y) in points.iter().flatten() {
            let _ = write!(
                out,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{colour}\" class=\"{class}\"/>"
            );
        }
    }
    out
}

/// Delivery, read and failure rates per group, 0 to 100 %.
fn rates_chart(report: &StatsReport) -> String {
    let t = &FR.stats;
    let mut inner = frame(report, 100.0, 25.0, &|v| format!("{} %", v.round() as i64));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let n = report.groups.len().max(1) as f64;
    let at = |i: usize, r: Option<f64>| r.map(|r| (LEFT + pw * (i as f64 + 0.5) / n, TOP + ph - ph * r));
    for (colour, class, f) in [
        (
            C_DELIVERED,
            "delivered",
            (|c: &Counts| rate(c.delivered, c.attempted)) as fn(&Counts) -> Option<f64>,
        ),
        (C_READ, "read", |c: &Counts| rate(c.read, c.delivered)),
        (C_FAILED, "failed", |c: &Counts| rate(c.failed, c.attempted)),
    ] {
        let points: Vec<Option<(f64, f64)>> = report
            .groups
            .iter()
            .enumerate()
            .map(|(i, (_, c))| at(i, f(c)))
            .collect();
        inner.push_str(&polylines(&points, colour, class));
    }
    svg("svg-rates", t.chart_rates, &inner)
}

/// The median first response of the bot and of agents per group.
fn response_chart(report: &StatsReport) -> String {
    let t = &FR.stats;
    let max = report
        .groups
        .iter()
        .flat_map(|(_, c)| [median_of(c, Sender::Bot), median_of(c, Sender::Human)])
        .flatten()
        .max()
        .unwrap_or(0);
    let (unit, label): (f64, &str) = if max >= 7200 {
        (3600.0, "h")
    } else if max >= 120 {
        (60.0, "min")
    } else {
        (1.0, "s")
    };
    let (ymax, step) = nice_axis(max as f64 / unit);
    let mut inner = frame(report, ymax, step, &|v| format!("{} {label}", v.round() as i64));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let n = report.groups.len().max(1) as f64;
    for (who, colour, class) in [(Sender::Bot, C_BOT, "bot"), (Sender::Human, C_HUMAN, "human")] {
        let points: Vec<Option<(f64, f64)>> = report
            .groups
            .iter()
            .enumerate()
            .map(|(i, (_, c))| {
                median_of(c, who).map(|s| {
                    (
                        LEFT + pw * (i as f64 + 0.5) / n,
                        TOP + ph - ph * (s as f64 / unit) / ymax,
                    )
                })
            })
            .collect();
        inner.push_str(&polylines(&points, colour, class));
    }
    svg("svg-response", t.chart_response, &inner)
}

/// The figures per template, campaign, script or number.
fn group_table(t: &StatsStrings, r: &StatsReport, title: &str, col: &str, id: &str, inbound: bool) -> String {
    let mut out = format!("<h3>{title}</h3>");
    if r.groups.is_empty() {
        let _ = write!(out, "<p class=\"empty\" id=\"{id}-none\">{}</p>", t.none);
        return out;
    }
    let th_in = if inbound {
        format!("<th>{}</th>", t.col_in)
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "<div class=\"scroll\"><table id=\"{id}\"><thead><tr><th>{col}</th>{th_in}<th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        t.col_out, t.col_delivered, t.col_read, t.col_failed, t.col_billable, t.col_bot_reply, t.col_human_reply
    );
    for (key, c) in &r.groups {
        let name = if key.is_empty() { t.unknown_number } else { key.as_str() };
        let _ = write!(
            out,
            "<tr data-key=\"{}\"><td>{}</td>{}<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            attr(key),
            esc(name),
            if inbound {
                format!("<td class=\"n\">{}</td>", c.messages_in)
            } else {
                String::new()
            },
            c.messages_out,
            pct(rate(c.delivered, c.attempted)),
            pct(rate(c.read, c.delivered)),
            pct(rate(c.failed, c.attempted)),
            c.billable.values().sum::<i64>(),
            secs_fr(median_of(c, Sender::Bot)),
            secs_fr(median_of(c, Sender::Human)),
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

fn failures_table(t: &StatsStrings, c: &Counts) -> String {
    let mut out = format!("<h3>{}</h3>", t.failures);
    if c.failures.is_empty() {
        let _ = write!(out, "<p class=\"empty\">{}</p>", t.none);
        return out;
    }
    let mut rows: Vec<(i64, i64)> = c.failures.iter().map(|(k, v)| (*k, *v)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let _ = write!(
        out,
        "<div class=\"scroll\"><table id=\"failures\"><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        t.col_code, t.col_count, t.col_meaning
    );
    for (code, n) in rows {
        let _ = write!(
            out,
            "<tr data-code=\"{code}\"><td>{code}</td><td>{n}</td><td>{}</td></tr>",
            esc(crate::whatsapp::error::explain(code))
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

fn pricing_table(t: &StatsStrings, c: &Counts) -> String {
    let mut out = format!("<h3>{}</h3>", t.pricing);
    let mut categories: Vec<&String> = c.billable.keys().chain(c.free.keys()).collect();
    categories.sort();
    categories.dedup();
    if categories.is_empty() {
        let _ = write!(out, "<p class=\"empty\">{}</p>", t.none);
        return out;
    }
    let _ = write!(
        out,
        "<div class=\"scroll\"><table id=\"pricing\"><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        t.col_category, t.col_billable, t.col_free
    );
    for k in categories {
        let _ = write!(
            out,
            "<tr data-category=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
            attr(k),
            esc(k),
            c.billable.get(k).copied().unwrap_or(0),
            c.free.get(k).copied().unwrap_or(0)
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_round_up_and_labels_are_short() {
        assert_eq!(nice_axis(0.0), (1.0, 1.0));
        assert_eq!(nice_axis(3.0), (3.0, 1.0));
        assert_eq!(nice_axis(44.0), (50.0, 10.0));
        assert_eq!(nice_axis(420.0), (500.0, 100.0));
        assert_eq!(nice_axis(26.0), (30.0, 10.0));
        assert_eq!(x_label(GroupBy::Day, "2026-03-05"), "05/03");
        assert_eq!(x_label(GroupBy::Month, "2026-03"), "03/2026");
        assert_eq!(pct(Some(0.6667)), "66,7 %");
        assert_eq!(secs_fr(Some(601)), "10 min");
    }
}
