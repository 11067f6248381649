//! Graph API versions: the default walua uses, and when each version stops working.
//!
//! Meta keeps a version usable for two years after the *next* version's release; after
//! that, calls to it fail. [`VERSIONS`] lists the versions walua knows with their release
//! dates; [`check`] tells the operator (at start, in `walua check`, in `/healthz`) when the
//! configured `api_base` has less than [`WARN_DAYS`] days left. To move to a new version:
//! read Meta's changelog for the WhatsApp Cloud API between the two versions, change the
//! version in `[whatsapp] api_base`, run `walua check`, then restart.

use chrono::NaiveDate;

/// The version walua's default `api_base` uses.
pub const DEFAULT_VERSION: &str = "v26.0";

/// Days before a version's end of life from which walua warns.
pub const WARN_DAYS: i64 = 60;

/// A date as (year, month, day).
pub type Ymd = (i32, u32, u32);

/// Graph API versions and their release dates (Meta's changelog), oldest first. A date
/// walua's authors could not confirm is `None`: the version before it gets no end date (it is
/// then at least two years away, as that release is recent). Add each new version here.
pub const VERSIONS: &[(&str, Option<Ymd>)] = &[
    ("v18.0", Some((2023, 9, 12))),
    ("v19.0", Some((2024, 1, 23))),
    ("v20.0", Some((2024, 5, 21))),
    ("v21.0", Some((2024, 10, 2))),
    ("v22.0", Some((2025, 1, 21))),
    ("v23.0", Some((2025, 5, 29))),
    ("v24.0", Some((2025, 10, 8))),
    ("v25.0", None),
    ("v26.0", None),
];

/// The last day a version is usable, when known: two years after the next version's
/// release. `None` for the newest version walua knows (its end is not scheduled yet), or
/// when the next release date is not in the table.
pub fn end_of_life(version: &str) -> Option<NaiveDate> {
    let i = VERSIONS.iter().position(|(v, _)| *v == version)?;
    let (_, next) = VERSIONS.get(i + 1)?;
    let (y, m, d) = (*next)?;
    NaiveDate::from_ymd_opt(y + 2, m, d)
}

/// The version in an `api_base` (`https://graph.facebook.com/v21.0` → `v21.0`).
pub fn version_of(api_base: &str) -> Option<&str> {
    let last = api_base.trim_end_matches('/').rsplit('/').next()?;
    let rest = last.strip_prefix('v')?;
    let (major, minor) = rest.split_once('.')?;
    (major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok()).then_some(last)
}

/// What the operator must hear about the configured version on `today`, if anything: past
/// its end of life, or within [`WARN_DAYS`] of it, or older than walua knows. Only Meta's
/// hosts are checked (a test fake on loopback is not versioned by Meta).
pub fn check(api_base: &str, today: NaiveDate) -> Option<String> {
    let host = api_base
        .split("://")
        .nth(1)
        .unwrap_or(api_base)
        .split('/')
        .next()
        .unwrap_or("");
    if !host.ends_with("facebook.com") {
        return None;
    }
    let Some(version) = version_of(api_base) else {
        return Some(format!(
            "whatsapp.api_base `{api_base}` names no Graph API version (e.g. /{DEFAULT_VERSION}): Meta would pick its oldest usable one"
        ));
    };
    let known = VERSIONS.iter().any(|(v, _)| *v == version);
    if !known {
        let newest = VERSIONS.last().map(|(v, _)| *v).unwrap_or(DEFAULT_VERSION);
        let number = |v: &str| -> f64 { v.trim_start_matches('v').parse().unwrap_or(0.0) };
        if number(version) > number(newest) {
            return None;
        }
        return Some(format!(
            "Graph API {version} is older than the versions walua knows ({}): it may no longer work; move whatsapp.api_base to {DEFAULT_VERSION}",
            VERSIONS.first().map(|(v, _)| *v).unwrap_or(DEFAULT_VERSION)
        ));
    }
    let eol = end_of_life(version)?;
    let left = (eol - today).num_days();
    if left < 0 {
        Some(format!(
            "Graph API {version} stopped working on {eol} (Meta keeps a version two years after the next one): every send fails; move whatsapp.api_base to {DEFAULT_VERSION}"
        ))
    } else if left < WARN_DAYS {
        Some(format!(
            "Graph API {version} stops working on {eol}, in {left} days: move whatsapp.api_base to {DEFAULT_VERSION} (README, \"Graph API versions\")"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn v21_has_52_days_left_on_the_30th_of_november_2026() {
        assert_eq!(end_of_life("v21.0"), Some(day(2027, 1, 21)));
        let w = check("https://graph.facebook.com/v21.0", day(2026, 11, 30)).unwrap();
        assert!(w.contains("stops working on 2027-01-21, in 52 days"), "{w}");
        assert!(
            check("https://graph.facebook.com/v21.0", day(2026, 11, 20)).is_none(),
            "62 days: no warning"
        );
        let gone = check("https://graph.facebook.com/v19.0/", day(2026, 11, 30)).unwrap();
        assert!(gone.contains("stopped working on 2026-05-21"), "{gone}");
    }

    #[test]
    fn the_default_and_newer_versions_are_fine_and_fakes_are_not_checked() {
        let default = format!("https://graph.facebook.com/{DEFAULT_VERSION}");
        assert_eq!(check(&default, day(2026, 11, 30)), None);
        assert_eq!(end_of_life(DEFAULT_VERSION), None, "the newest known has no end yet");
        assert_eq!(check("https://graph.facebook.com/v30.0", day(2026, 11, 30)), None);
        assert_eq!(check("http://127.0.0.1:9999/v19.0", day(2026, 11, 30)), None);
        assert!(
            check("https://graph.facebook.com/v12.0", day(2026, 11, 30))
                .unwrap()
                .contains("older than")
        );
        assert!(
            check("https://graph.facebook.com", day(2026, 11, 30))
                .unwrap()
                .contains("names no Graph API version")
        );
        assert_eq!(version_of("https://graph.facebook.com/v22.0/"), Some("v22.0"));
        assert_eq!(
            VERSIONS.last().map(|(v, _)| *v),
            Some(DEFAULT_VERSION),
            "the default is the newest known"
        );
    }
}
