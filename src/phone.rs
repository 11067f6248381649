//! Phone numbers, parsed in one place with libphonenumber's rules (the `phonenumber` crate, a
//! port of Google's libphonenumber): no hand-written rules.
//!
//! The canonical form is Meta's `wa_id`: the E.164 digits without `+` (`221771234567`).
//! A number written without a country code takes the region given (an Odoo partner's
//! country, else `[whatsapp] default_country`): `77 123 45 67` in SN is `221771234567`.
//! `+` and `00` prefixes, national formats (`(603)-996-3829` in US), punctuation and
//! extensions (dropped) are handled; a number libphonenumber does not hold valid is refused
//! with the reason, never sent.

use phonenumber::country;

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Not an ISO 3166 region code libphonenumber knows.
    #[error("`{0}` is not a country code (ISO 3166 alpha-2, e.g. SN)")]
    BadRegion(String),
    /// The text does not parse, or parses to a number that cannot exist.
    #[error("`{input}` is not a valid phone number{}: {reason}", region.as_deref().map(|r| format!(" (region {r})")).unwrap_or_default())]
    Invalid {
        /// What was given.
        input: String,
        /// The region it was read in, if any.
        region: Option<String>,
        /// Why.
        reason: String,
    },
}

/// Loads libphonenumber's metadata (about 90 ms the first time in a release build, then a
/// few microseconds per number), so that no script run pays for it inside its CPU budget.
pub fn warm_up(region: Option<&str>) {
    let _ = normalize("+221 77 123 45 67", region);
    let _ = normalize("77 123 45 67", region.or(Some("SN")));
}

/// A region code, checked (`sn` → `SN`).
pub fn region(code: &str) -> Result<String, PhoneError> {
    let upper = code.trim().to_ascii_uppercase();
    upper
        .parse::<country::Id>()
        .map(|_| upper.clone())
        .map_err(|_| PhoneError::BadRegion(code.to_string()))
}

/// Whether `s` is written like a phone number (digits, `+`, spaces and punctuation, an
/// extension), rather than a BSUID (`SN.1349…`) or a username.
pub fn looks_like_phone(s: &str) -> bool {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    // An extension's marker may follow the number: "…67 ext. 12", "…67 x 3", "…67 poste 4".
    let number = ["ext", " x", "poste", "#"]
        .iter()
        .filter_map(|m| lower.find(m))
        .min()
        .map(|i| &t[..i])
        .unwrap_or(t);
    let digits = number.chars().filter(char::is_ascii_digit).count();
    digits >= 3
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().\u{a0}\u{202f}/".contains(c))
        && !number.trim_start().starts_with(['.', '-'])
}

/// Answers of [`normalize`] kept, at most (the table is emptied when full).
const NORMALIZED_CACHE: usize = 4096;

/// The canonical form (`wa_id` digits) of a phone number written in any usual way, read in
/// `region` when it has no country code.
///
/// Every send normalizes its recipient, and libphonenumber's parse and format cost a few
/// µs: the answers for the latest [`NORMALIZED_CACHE`] inputs are kept (a pure function of
/// its inputs and of the compiled-in metadata).
pub fn normalize(input: &str, region_code: Option<&str>) -> Result<String, PhoneError> {
    type Cache = std::collections::HashMap<(String, Option<String>), Result<String, PhoneError>>;
    static CACHE: std::sync::LazyLock<std::sync::Mutex<Cache>> = std::sync::LazyLock::new(Default::default);
    let key = (input.to_string(), region_code.map(str::to_string));
    if let Some(hit) = CACHE.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return hit.clone();
    }
    let answer = normalize_uncached(input, region_code);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= NORMALIZED_CACHE {
        cache.clear();
    }
    cache.insert(key, answer.clone());
    answer
}

fn normalize_uncached(input: &str, region_code: Option<&str>) -> Result<String, PhoneError> {
    let invalid = |reason: &str| PhoneError::Invalid {
        input: input.to_string(),
        region: region_code.map(str::to_string),
        reason: reason.to_string(),
    };
    let text = input.trim();
    if !looks_like_phone(text) {
        return Err(invalid(
            "only digits, spaces, + and ( ) - . / are allowed, with an optional extension",
        ));
    }
    let id = match region_code {
        Some(r) => Some(
            region(r)?
                .parse::<country::Id>()
                .map_err(|_| PhoneError::BadRegion(r.to_string()))?,
        ),
        None => None,
    };
    let international = text.starts_with('+') || text.starts_with("00");
    let text = match (id, text.strip_prefix("00")) {
        // Without a region libphonenumber does not know the 00 prefix: it is the
        // international prefix nearly everywhere walua's users are.
        (None, Some(rest)) => format!("+{rest}"),
        _ => text.to_string(),
    };
    let canonical = |n: &phonenumber::PhoneNumber| {
        n.format()
            .mode(phonenumber::Mode::E164)
            .to_string()
            .trim_start_matches('+')
            .to_string()
    };
    if let Ok(n) = phonenumber::parse(id, &text)
        && phonenumber::is_valid(&n)
    {
        return Ok(canonical(&n));
    }
    if !international {
        // Meta's own form: country code and number, without `+` (`221771234567`).
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        if let Ok(n) = phonenumber::parse(None, format!("+{digits}"))
            && phonenumber::is_valid(&n)
        {
            return Ok(canonical(&n));
        }
    }
    Err(match phonenumber::parse(id, &text) {
        _ if id.is_none() && !international => invalid("no country code (+221…), and no default_country to read it in"),
        Err(e) => invalid(&e.to_string()),
        Ok(_) => invalid("no such number in its country's numbering plan (too short, too long or an unused prefix)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_findings_of_the_real_run_are_normalised() {
        assert_eq!(normalize("77 123 45 67", Some("SN")).unwrap(), "221771234567");
        assert_eq!(normalize("00221771234567", Some("SN")).unwrap(), "221771234567");
        assert_eq!(normalize("00221771234567", None).unwrap(), "221771234567");
        assert_eq!(normalize("(603)-996-3829", Some("US")).unwrap(), "16039963829");
        assert_eq!(normalize("+221 77 123 45 67", None).unwrap(), "221771234567");
        assert_eq!(normalize("221771234567", None).unwrap(), "221771234567");
        assert_eq!(normalize("221771234567", Some("SN")).unwrap(), "221771234567");
        assert_eq!(normalize("+221-77.123.45.67", Some("FR")).unwrap(), "221771234567");
        assert_eq!(normalize("06 12 34 56 78", Some("fr")).unwrap(), "33612345678");
    }

    #[test]
    fn extensions_are_dropped() {
        assert_eq!(normalize("+1 603 996 3829 ext. 12", Some("SN")).unwrap(), "16039963829");
        assert_eq!(normalize("+221 77 123 45 67 x 3", None).unwrap(), "221771234567");
    }

    #[test]
    fn invalid_numbers_are_refused_with_a_reason() {
        let e = normalize("77 12", Some("SN")).unwrap_err();
        assert!(
            e.to_string()
                .contains("`77 12` is not a valid phone number (region SN)"),
            "{e}"
        );
        let e = normalize("(603)-996-3829", Some("SN")).unwrap_err();
        assert!(
            matches!(e, PhoneError::Invalid { .. }),
            "a US number read as Senegalese: {e}"
        );
        let e = normalize("771234567", None).unwrap_err();
        assert!(e.to_string().contains("no country code"), "{e}");
        assert_eq!(
            normalize("771234567", Some("XX")).unwrap_err(),
            PhoneError::BadRegion("XX".into())
        );
        assert!(normalize("SN.13491208655302741918", Some("SN")).is_err());
        assert!(normalize("Awa", Some("SN")).is_err());
    }

    #[test]
    fn phones_are_told_from_bsuids_and_usernames() {
        for p in [
            "+221 77 123 45 67",
            "(603)-996-3829",
            "221771234567",
            "+1 603 996 3829 ext. 12",
        ] {
            assert!(looks_like_phone(p), "{p}");
        }
        for p in ["SN.13491208655302741918", "@awa", "awa.diop", "", "12"] {
            assert!(!looks_like_phone(p), "{p}");
        }
    }
}
