//! Console accounts: roles, passwords, sign-in and sessions.
//!
//! - An account has a name, a [`Role`] and an argon2id password hash (kept in the store, see
//!   [`crate::store::users`]); accounts are managed with `walua user …` or `/api/users`.
//! - Signing in ([`sign_in`]) checks the password behind a [`SignInThrottle`] and opens a
//!   session: a random token in the `walua_session` cookie ([`session_cookie`]: `HttpOnly`,
//!   `SameSite=Strict`, `Secure` over HTTPS) and an anti-CSRF token that forms and API calls
//!   made with the cookie carry back ([`csrf_ok`], header [`CSRF_HEADER`]).
//! - A session lasts `[console] session_ttl` (12 h by default) after its last use, and ends
//!   when its account is removed or its password changed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use hyper::Request;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::App;
use crate::store::{Store, StoreError};

/// What an account may do in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything an agent does, plus the accounts, the scripts and the settings.
    Admin,
    /// Reads and answers conversations, takes them over from the bot.
    Agent,
    /// Reads only: a manager or an auditor following the conversations.
    Viewer,
}

/// A role name that is not `admin`, `agent` or `viewer`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: expected admin, agent or viewer")]
pub struct UnknownRole(pub String);

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 3] = [Role::Admin, Role::Agent, Role::Viewer];

    /// `admin`, `agent` or `viewer`: the name in the API, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Viewer => "viewer",
        }
    }

    /// May answer customers and take conversations over (admins and agents).
    pub fn can_reply(self) -> bool {
        matches!(self, Role::Admin | Role::Agent)
    }

    /// May manage accounts and the daemon from the console (admins).
    pub fn can_administer(self) -> bool {
        self == Role::Admin
    }

    /// The role's name in the console, which is in French.
    pub fn label_fr(self) -> &'static str {
        match self {
            Role::Admin => "Administrateur",
            Role::Agent => "Agent",
            Role::Viewer => "Lecture seule",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// Longest account name, in characters.
pub const MAX_USER_NAME_CHARS: usize = 64;

/// An account name is 1 to [`MAX_USER_NAME_CHARS`] ASCII letters, digits, `.`, `_` or `-`:
/// it appears in URLs, logs and the console without escaping.
pub fn validate_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("the user name is empty".into())
    } else if name.chars().count() > MAX_USER_NAME_CHARS {
        Err(format!("the user name is longer than {MAX_USER_NAME_CHARS} characters"))
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Err(format!(
            "the user name `{name}` contains {c:?}: use letters, digits, `.`, `_` or `-`"
        ))
    } else {
        Ok(())
    }
}

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted, in characters (hashing cost stays bounded).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Refuses passwords shorter than [`MIN_PASSWORD_CHARS`] or longer than
/// [`MAX_PASSWORD_CHARS`] characters.
pub fn validate_password(pw: &str) -> Result<(), String> {
    let n = pw.chars().count();
    if n < MIN_PASSWORD_CHARS {
        Err(format!(
            "the password is too short: {n} characters, at least {MIN_PASSWORD_CHARS} are needed"
        ))
    } else if n > MAX_PASSWORD_CHARS {
        Err(format!("the password is longer than {MAX_PASSWORD_CHARS} characters"))
    } else {
        Ok(())
    }
}

/// The argon2id PHC string of `pw` (default parameters: 19 MiB, 2 passes), with a random
/// salt. Slow on purpose (tens of milliseconds): call it off the async runtime.
pub fn hash_password(pw: &str) -> String {
    Argon2::default()
        .hash_password(pw.as_bytes())
        .expect("argon2 hashes any password of at most 4 GiB with the system's random salt")
        .to_string()
}

/// Whether `pw` matches `hash` (a PHC string from [`hash_password`]); false for a hash that
/// does not parse. As slow as [`hash_password`].
pub fn verify_password(hash: &str, pw: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(pw.as_bytes(), &parsed).is_ok())
}

/// Checked against when the account does not exist, so that an unknown name costs the same
/// time as a wrong password and timing does not tell which names exist.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| hash_password("walua: no such account"));

/// Failures allowed before sign-in attempts are delayed.
pub const FREE_FAILURES: u32 = 3;
/// The delay after the first failure past [`FREE_FAILURES`]; it doubles with each failure.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest delay between two attempts; an attempt that would have to wait longer (a
/// burst of attempts at once) is refused without checking the password.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Failures older than this are forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most user names and client addresses remembered; past it the oldest is dropped.
pub const MAX_THROTTLED: usize = 10_000;
/// Password checks running at once (argon2 takes 19 MiB each): more wait their turn.
pub const MAX_CONCURRENT_CHECKS: usize = 4;

/// Whom a throttle entry counts failures for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    /// An account name, as typed.
    User(String),
    /// A client address (an IPv6 client counts by its /64: one subscriber's network).
    Client(IpAddr),
}

/// Failures of one key.
#[derive(Debug, Clone, Copy)]
struct Failures {
    /// Failures in a row (forgotten after [`FORGET_AFTER`]).
    count: u32,
    /// When the last one was recorded.
    last: Instant,
    /// No attempt is checked before this: each failure pushes it back by its delay, so
    /// attempts made at once wait as if made one after the other.
    not_before: Instant,
}

/// Slows down password guessing, in memory, by account name and by client address:
/// [`FREE_FAILURES`] failures cost nothing, then each one delays the next attempt by
/// [`FIRST_DELAY`], doubling up to [`MAX_DELAY`]. A success clears both counts.
pub struct SignInThrottle {
    entries: Mutex<HashMap<ThrottleKey, Failures>>,
    /// Bounds the password checks running at once (see [`MAX_CONCURRENT_CHECKS`]).
    checks: tokio::sync::Semaphore,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        SignInThrottle {
            entries: Mutex::new(HashMap::new()),
            checks: tokio::sync::Semaphore::new(MAX_CONCURRENT_CHECKS),
        }
    }
}

/// The delay that `count` failures in a row impose on the next attempt.
fn delay_after(count: u32) -> Duration {
    match count.checked_sub(FREE_FAILURES + 1) {
        None => Duration::ZERO,
        Some(doublings) => FIRST_DELAY.saturating_mul(1 << doublings.min(16)).min(MAX_DELAY),
    }
}

fn keys(user: &str, ip: IpAddr) -> [ThrottleKey; 2] {
    let user: String = user.chars().take(MAX_USER_NAME_CHARS + 1).collect();
    let client = match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    };
    [ThrottleKey::User(user), ThrottleKey::Client(client)]
}

impl SignInThrottle {
    /// A throttle with no failures recorded.
    pub fn new() -> SignInThrottle {
        SignInThrottle::default()
    }

    /// How long to wait before checking a password for `user` from `ip`: zero while both
    /// have had at most [`FREE_FAILURES`] failures (in the last [`FORGET_AFTER`]).
    pub fn wait(&self, user: &str, ip: IpAddr) -> Duration {
        self.wait_at(user, ip, Instant::now())
    }

    fn wait_at(&self, user: &str, ip: IpAddr, now: Instant) -> Duration {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        keys(user, ip)
            .iter()
            .filter_map(|k| entries.get(k))
            .filter(|f| now.duration_since(f.last) < FORGET_AFTER)
            .map(|f| f.not_before.saturating_duration_since(now))
            .max()
            .unwrap_or_default()
    }

    /// Records a failed attempt for `user` and for `ip`.
    pub fn failed(&self, user: &str, ip: IpAddr) {
        self.failed_at(user, ip, Instant::now())
    }

    fn failed_at(&self, user: &str, ip: IpAddr, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys(user, ip) {
            if !entries.contains_key(&key) && entries.len() >= MAX_THROTTLED {
                entries.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
                if entries.len() >= MAX_THROTTLED
                    && let Some(oldest) = entries.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| k.clone())
                {
                    entries.remove(&oldest);
                }
            }
            let f = entries.entry(key).or_insert(Failures {
                count: 0,
                last: now,
                not_before: now,
            });
            if now.duration_since(f.last) >= FORGET_AFTER {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
            f.not_before = f.not_before.max(now) + delay_after(f.count);
        }
    }

    /// Clears the failures of `user` and of `ip` (the right password was given).
    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys(user, ip) {
            entries.remove(&key);
        }
    }
}

/// Why signing in failed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The name or the password is wrong (which one is not said), or too many attempts were
    /// made at once.
    #[error("wrong user name or password")]
    Refused,
    /// The store could not be read or the session written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Signs `user` in with `password` from the client at `ip` (see [`client_ip`]): waits what
/// the throttle asks, checks the password (off the async runtime, a few at a time), and
/// opens a session of `[console] session_ttl`. Returns the session token (for
/// [`session_cookie`]), its anti-CSRF token and the account's role.
///
/// Every failure answers [`SignInError::Refused`], whether the name is unknown or the
/// password wrong, after the same work (an unknown name is checked against a dummy hash).
/// The attempt counts as a failure from its start and is cleared when it succeeds, so
/// attempts sent at once are spaced as if sent one after the other.
pub async fn sign_in(app: &App, user: &str, password: &str, ip: IpAddr) -> Result<(String, String, Role), SignInError> {
    let ttl = app.config.console.session_ttl;
    sign_in_with(&app.store, &app.sign_in_throttle, ttl, user, password, ip).await
}

/// [`sign_in`] with the store, the throttle and the session lifetime given.
pub async fn sign_in_with(
    store: &Store,
    throttle: &SignInThrottle,
    ttl: Duration,
    user: &str,
    password: &str,
    ip: IpAddr,
) -> Result<(String, String, Role), SignInError> {
    let wait = throttle.wait(user, ip);
    if wait > MAX_DELAY {
        tracing::warn!(user = %user, client = %ip, "console sign-in refused unchecked: too many attempts at once");
        return Err(SignInError::Refused);
    }
    throttle.failed(user, ip);
    tokio::time::sleep(wait).await;
    let _turn = throttle.checks.acquire().await.map_err(|_| SignInError::Refused)?;
    let name = user.to_string();
    let account = store.blocking(move |s| s.user(&name)).await?;
    let (hash, pw) = (account.as_ref().map(|a| a.password_hash.clone()), password.to_string());
    let matches = tokio::task::spawn_blocking(move || {
        let hash = hash.as_deref().unwrap_or(DUMMY_HASH.as_str());
        verify_password(hash, &pw)
    })
    .await
    .map_err(|e| StoreError::Join(e.to_string()))?;
    let Some(account) = account.filter(|_| matches) else {
        tracing::info!(user = %user, client = %ip, "console sign-in refused");
        return Err(SignInError::Refused);
    };
    throttle.succeeded(user, ip);
    let name = account.name.clone();
    let (token, csrf) = store.blocking(move |s| s.session_create(&name, ttl)).await?;
    tracing::info!(user = %account.name, role = %account.role, client = %ip, "console sign-in");
    Ok((token, csrf, account.role))
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "walua_session";
/// The header a console page's API calls carry the session's anti-CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A signed-in console user, as a request handler sees it. Its `Debug` hides the tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// The account's name.
    pub user: String,
    /// The account's role now (a role change applies to open sessions at once).
    pub role: Role,
    /// The session's anti-CSRF token, to put in forms and check with [`csrf_ok`].
    pub csrf: String,
    /// The session token from the cookie, to sign out with [`crate::store::Store::session_delete`].
    pub token: String,
}

impl std::fmt::Debug for ConsoleSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSession")
            .field("user", &self.user)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The value of the `walua_session` cookie, if the request has one (HTTP/2 may split cookies
/// over several `Cookie` headers).
pub fn session_token<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The signed-in user of a request (its `walua_session` cookie), if the session is live.
pub async fn session_of<B>(app: &App, req: &Request<B>) -> Option<ConsoleSession> {
    let token = session_token(req)?.to_string();
    let t = token.clone();
    match app.store.blocking(move |s| s.session_get(&t)).await {
        Ok(found) => found.map(|(user, record)| ConsoleSession {
            user: user.name,
            role: user.role,
            csrf: record.csrf,
            token,
        }),
        Err(e) => {
            tracing::error!(error = %e, "cannot read console sessions");
            None
        }
    }
}

/// Whether a request comes from a signed-in console admin: for anything but `GET` and
/// `HEAD` it must also carry the session's anti-CSRF token in [`CSRF_HEADER`]. Lets the
/// console manage accounts (`/api/users`) without the admin token.
pub async fn console_admin<B>(app: &App, req: &Request<B>) -> bool {
    let Some(session) = session_of(app, req).await else {
        return false;
    };
    let safe = matches!(*req.method(), hyper::Method::GET | hyper::Method::HEAD);
    let csrf = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    session.role.can_administer() && (safe || csrf_ok(&session, csrf))
}

/// The `Set-Cookie` value that opens a session: `HttpOnly` (scripts cannot read it),
/// `SameSite=Strict` (other sites cannot send it), `Path=/`, `Max-Age` of `ttl`, and
/// `Secure` when the console is served over HTTPS (see [`request_is_https`]). The session
/// slides on the server; send the cookie again on page loads to slide it in the browser too.
pub fn session_cookie(token: &str, secure: bool, ttl: Duration) -> String {
    let mut cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        ttl.as_secs()
    );
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// The `Set-Cookie` value that removes the session cookie (signing out).
pub fn clear_cookie(secure: bool) -> String {
    session_cookie("", secure, Duration::ZERO)
}

/// Whether the client reached walua over HTTPS: walua serves plain HTTP itself, so only a
/// reverse proxy listed in `[console] trusted_proxies` can say so (`X-Forwarded-Proto:
/// https`); the header from anyone else is ignored.
pub fn request_is_https<B>(app: &App, peer: SocketAddr, req: &Request<B>) -> bool {
    forwarded_https(&app.config.console.trusted_proxies, peer, req)
}

/// [`request_is_https`] with the trusted proxies given.
pub fn forwarded_https<B>(trusted_proxies: &[IpAddr], peer: SocketAddr, req: &Request<B>) -> bool {
    trusted(trusted_proxies, peer.ip())
        && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The client's address, for the sign-in throttle and the logs: behind a trusted proxy the
/// last address in `X-Forwarded-For` that is not itself a trusted proxy (what the proxy
/// saw; earlier entries are the client's word), else the peer's.
pub fn client_ip<B>(app: &App, peer: SocketAddr, req: &Request<B>) -> IpAddr {
    forwarded_client(&app.config.console.trusted_proxies, peer, req)
}

/// [`client_ip`] with the trusted proxies given.
pub fn forwarded_client<B>(trusted_proxies: &[IpAddr], peer: SocketAddr, req: &Request<B>) -> IpAddr {
    if !trusted(trusted_proxies, peer.ip()) {
        return peer.ip();
    }
    let forwarded: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|a| a.trim().parse::<IpAddr>().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted(trusted_proxies, *ip))
        .unwrap_or(peer.ip())
}

fn trusted(trusted_proxies: &[IpAddr], ip: IpAddr) -> bool {
    trusted_proxies.iter().any(|p| p.to_canonical() == ip.to_canonical())
}

/// Whether `given` is the session's anti-CSRF token (compared in constant time).
pub fn csrf_ok(session: &ConsoleSession, given: &str) -> bool {
    !session.csrf.is_empty() && bool::from(session.csrf.as_bytes().ct_eq(given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let hash = hash_password("correct horse battery");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse batterY"));
        assert_ne!(hash, hash_password("correct horse battery"), "salted");
        assert!(!verify_password("not a hash", "correct horse battery"));
        assert!(!verify_password(&DUMMY_HASH, ""));
    }

    #[test]
    fn short_passwords_and_odd_names_are_refused() {
        assert!(validate_password("123456789").unwrap_err().contains("at least 10"));
        assert!(validate_password("1234567890").is_ok());
        assert!(validate_password("été à Dakar").is_ok(), "characters, not bytes");
        assert!(validate_password(&"x".repeat(MAX_PASSWORD_CHARS + 1)).is_err());
        for ok in ["awa", "awa.diop", "agent_2", "A-1"] {
            assert!(validate_user_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "awa diop", "awa/..", "élodie", &"a".repeat(65)] {
            assert!(validate_user_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_parse_and_say_what_they_allow() {
        assert_eq!("agent".parse::<Role>(), Ok(Role::Agent));
        assert_eq!(
            "boss".parse::<Role>().unwrap_err().to_string(),
            "unknown role `boss`: expected admin, agent or viewer"
        );
        assert_eq!(serde_json::to_string(&Role::Viewer).unwrap(), "\"viewer\"");
        let allowed: Vec<(bool, bool, &str)> = Role::ALL
            .iter()
            .map(|r| (r.can_reply(), r.can_administer(), r.label_fr()))
            .collect();
        assert_eq!(
            allowed,
            [
                (true, true, "Administrateur"),
                (true, false, "Agent"),
                (false, false, "Lecture seule")
            ]
        );
    }

    #[test]
    fn three_failures_are_free_then_the_delay_doubles_up_to_thirty_seconds() {
        let t = SignInThrottle::new();
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..10 {
            let wait = t.wait_at("awa", CLIENT, now);
            waits.push(wait.as_secs());
            now += wait;
            t.failed_at("awa", CLIENT, now);
        }
        assert_eq!(waits, [0, 0, 0, 0, 1, 2, 4, 8, 16, 30]);
        // Another name from the same address waits as long: the address is throttled too.
        let other = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(t.wait_at("ibou", CLIENT, now).as_secs(), 30);
        assert_eq!(
            t.wait_at("awa", other, now).as_secs(),
            30,
            "and the name, from anywhere"
        );
        assert_eq!(t.wait_at("ibou", other, now), Duration::ZERO);
        t.succeeded("awa", CLIENT);
        assert_eq!(t.wait_at("awa", CLIENT, now), Duration::ZERO);
        assert_eq!(t.wait_at("ibou", other, now), Duration::ZERO);
    }

    #[test]
    fn attempts_made_at_once_are_spaced_as_if_made_one_after_the_other() {
        let t = SignInThrottle::new();
        let now = Instant::now();
        let waits: Vec<u64> = (0..10)
            .map(|_| {
                let w = t.wait_at("awa", CLIENT, now);
                t.failed_at("awa", CLIENT, now);
                w.as_secs()
            })
            .collect();
        assert_eq!(waits, [0, 0, 0, 0, 1, 3, 7, 15, 31, 61]);
    }

    #[test]
    fn failures_are_forgotten_after_a_while_and_memory_stays_bounded() {
        let t = SignInThrottle::new();
        let now = Instant::now();
        for _ in 0..6 {
            t.failed_at("awa", CLIENT, now);
        }
        assert!(t.wait_at("awa", CLIENT, now) > Duration::ZERO);
        assert_eq!(t.wait_at("awa", CLIENT, now + FORGET_AFTER), Duration::ZERO);
        let t = SignInThrottle::new();
        for i in 0..(MAX_THROTTLED as u32 + 10) {
            t.failed_at("awa", IpAddr::V4(i.into()), now + Duration::from_millis(i as u64));
        }
        assert!(t.entries.lock().unwrap().len() <= MAX_THROTTLED);
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            keys("a", v6("2001:db8:1:2:aaaa::1"))[1],
            keys("a", v6("2001:db8:1:2:bbbb::2"))[1],
            "an IPv6 client counts by its /64"
        );
    }

    #[tokio::test]
    async fn signing_in_opens_a_session_and_a_wrong_name_or_password_says_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .user_put(crate::store::users::User {
                name: "awa".into(),
                role: Role::Agent,
                password_hash: hash_password("baobab-2026!"),
                created_ms: 0,
                updated_ms: 0,
            })
            .unwrap();
        let throttle = SignInThrottle::new();
        let ttl = Duration::from_secs(3600);
        let attempt = |user: &'static str, pw: &'static str| sign_in_with(&store, &throttle, ttl, user, pw, CLIENT);
        let wrong = attempt("awa", "baobab-2025!").await.unwrap_err().to_string();
        let unknown = attempt("ibou", "baobab-2026!").await.unwrap_err().to_string();
        assert_eq!(
            (wrong.as_str(), unknown.as_str()),
            ("wrong user name or password", "wrong user name or password")
        );
        assert_eq!(
            throttle
                .entries
                .lock()
                .unwrap()
                .get(&keys("awa", CLIENT)[1])
                .unwrap()
                .count,
            2
        );
        let (token, csrf, role) = attempt("awa", "baobab-2026!").await.unwrap();
        assert_eq!(role, Role::Agent);
        let (user, session) = store.session_get(&token).unwrap().unwrap();
        assert_eq!((user.name.as_str(), session.csrf), ("awa", csrf));
        let left: Vec<ThrottleKey> = throttle.entries.lock().unwrap().keys().cloned().collect();
        assert_eq!(
            left,
            [ThrottleKey::User("ibou".into())],
            "a sign-in clears the failures of its name and address"
        );
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_over_https() {
        let c = session_cookie("TOKEN", true, Duration::from_secs(12 * 3600));
        assert_eq!(
            c,
            "walua_session=TOKEN; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200; Secure"
        );
        assert!(!session_cookie("TOKEN", false, Duration::from_secs(60)).contains("Secure"));
        assert_eq!(
            clear_cookie(false),
            "walua_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        );
    }

    #[test]
    fn the_session_token_is_read_from_any_cookie_header() {
        let req = Request::builder()
            .header("cookie", "theme=dark")
            .header("cookie", "a=1; walua_session=abc-DEF_1; b=2")
            .body(())
            .unwrap();
        assert_eq!(session_token(&req), Some("abc-DEF_1"));
        let req = Request::builder().header("cookie", "walua_session=").body(()).unwrap();
        assert_eq!(session_token(&req), None);
    }

    #[test]
    fn https_and_the_client_address_come_from_trusted_proxies_only() {
        let proxy: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let trusted = ["10.0.0.2".parse().unwrap()];
        let req = Request::builder()
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-for", "1.2.3.4, 198.51.100.20, 10.0.0.2")
            .body(())
            .unwrap();
        assert!(forwarded_https(&trusted, proxy, &req));
        assert!(!forwarded_https(&trusted, stranger, &req), "anyone can send the header");
        assert!(!forwarded_https(&[], proxy, &req), "no proxy is trusted by default");
        let plain = Request::builder().header("x-forwarded-proto", "http").body(()).unwrap();
        assert!(!forwarded_https(&trusted, proxy, &plain));
        assert!(!forwarded_https(&trusted, proxy, &Request::new(())));
        assert_eq!(
            forwarded_client(&trusted, proxy, &req),
            "198.51.100.20".parse::<IpAddr>().unwrap(),
            "the address the proxy saw, not what the client claimed"
        );
        assert_eq!(forwarded_client(&trusted, stranger, &req), stranger.ip());
        assert_eq!(forwarded_client(&trusted, proxy, &Request::new(())), proxy.ip());
    }

    #[test]
    fn the_csrf_token_must_match_exactly() {
        let s = ConsoleSession {
            user: "awa".into(),
            role: Role::Agent,
            csrf: "Zm9vYmFy".into(),
            token: "SECRET-TOKEN".into(),
        };
        assert!(csrf_ok(&s, "Zm9vYmFy"));
        assert!(!csrf_ok(&s, "Zm9vYmF"));
        assert!(!csrf_ok(&s, ""));
        assert!(!format!("{s:?}").contains("SECRET") && !format!("{s:?}").contains("Zm9v"));
    }
}
