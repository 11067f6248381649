//! Console accounts and their sessions (see [`crate::console::accounts`]).
//!
//! A session token is only ever known to the browser holding it: the store keeps the SHA-256
//! of the token, so a copy of the store does not sign anyone in. A session's lifetime slides
//! with use, written at most once a minute so that a busy console does not cost a write per
//! request.

use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::{Result, Store, decode, encode, now_ms};
use crate::console::accounts::Role;

/// Console accounts: user name → JSON [`User`].
pub(super) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// Signed-in console sessions: SHA-256 (hex) of the session token → JSON [`SessionRecord`].
pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");

/// A session's expiry and last use are written again only when this much time passed since
/// the last write (one write a minute at most per session, not one per request).
pub const SESSION_SLIDE_EVERY_MS: i64 = 60_000;

/// A console account. Its `Debug` leaves the password hash out (logs never need it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The name it signs in with (1–64 letters, digits, `.`, `_`, `-`; see
    /// [`crate::console::accounts::validate_user_name`]).
    pub name: String,
    /// What it may do in the console.
    pub role: Role,
    /// The argon2id PHC string of its password (see
    /// [`crate::console::accounts::hash_password`]); never leaves the daemon.
    pub password_hash: String,
    /// When the account was created (unix ms).
    pub created_ms: i64,
    /// When the account (its role or password) last changed (unix ms).
    pub updated_ms: i64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_ms", &self.created_ms)
            .field("updated_ms", &self.updated_ms)
            .finish_non_exhaustive()
    }
}

/// A signed-in session, stored under the hash of its token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The account it belongs to.
    pub user: String,
    /// The session's anti-CSRF token: forms and API calls made with the cookie carry it back.
    pub csrf: String,
    /// When it was signed in (unix ms).
    pub created_ms: i64,
    /// When it was last seen, to the minute (unix ms).
    pub last_seen_ms: i64,
    /// When it ends unless used again (unix ms): `last_seen_ms` plus the session's lifetime.
    pub expires_ms: i64,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("user", &self.user)
            .field("created_ms", &self.created_ms)
            .field("last_seen_ms", &self.last_seen_ms)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// What [`Store::user_remove_keeping_an_admin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserRemoval {
    /// The account and its sessions are gone.
    Removed,
    /// There is no such account.
    Unknown,
    /// It is the last admin: removing it would leave nobody to manage the accounts from the
    /// console.
    LastAdmin,
}

/// 32 random bytes, base64url without padding (43 characters).
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The key a session is stored under: the SHA-256 of its token, in hex.
fn token_key(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Removes every session of `user` in `txn`; returns how many.
fn delete_sessions_of(txn: &WriteTransaction, user: &str) -> Result<usize> {
    let mut sessions = txn.open_table(SESSIONS)?;
    let mut doomed = Vec::new();
    for row in sessions.iter()? {
        let (k, v) = row?;
        let record: SessionRecord = decode("sessions", v.value())?;
        if record.user == user {
            doomed.push(k.value().to_string());
        }
    }
    for key in &doomed {
        sessions.remove(key.as_str())?;
    }
    Ok(doomed.len())
}

/// Removes every session expired at `now` in `txn`; returns how many.
fn delete_expired_sessions(txn: &WriteTransaction, now: i64) -> Result<usize> {
    let mut sessions = txn.open_table(SESSIONS)?;
    let mut doomed = Vec::new();
    for row in sessions.iter()? {
        let (k, v) = row?;
        // An unreadable record cannot sign anyone in either: it goes too.
        let expired = decode::<SessionRecord>("sessions", v.value()).map_or(true, |r| r.expires_ms <= now);
        if expired {
            doomed.push(k.value().to_string());
        }
    }
    for key in &doomed {
        sessions.remove(key.as_str())?;
    }
    Ok(doomed.len())
}

impl Store {
    /// Every console account, by name.
    pub fn users(&self) -> Result<Vec<User>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(USERS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(decode("users", v.value())?);
        }
        Ok(out)
    }

    /// One console account.
    pub fn user(&self, name: &str) -> Result<Option<User>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(USERS)?;
        let row = table.get(name)?;
        row.map(|v| decode("users", v.value())).transpose()
    }

    /// Writes an account, new or replacing the one of that name.
    pub fn user_put(&self, user: User) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        txn.open_table(USERS)?
            .insert(user.name.as_str(), encode(&user).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Creates an account unless one of that name exists (checked in the same transaction,
    /// so two creations at once cannot both succeed); returns whether it was created.
    pub fn user_add(&self, user: User) -> Result<bool> {
        let txn = self.db()?.begin_write()?;
        let created = {
            let mut table = txn.open_table(USERS)?;
            let exists = table.get(user.name.as_str())?.is_some();
            if !exists {
                table.insert(user.name.as_str(), encode(&user).as_slice())?;
            }
            !exists
        };
        txn.commit()?;
        Ok(created)
    }

    /// Replaces an account's password hash and signs out its sessions (someone who knew the
    /// old password must not stay signed in); returns whether the account exists.
    pub fn user_set_password(&self, name: &str, password_hash: String) -> Result<bool> {
        let txn = self.db()?.begin_write()?;
        let found = {
            let mut table = txn.open_table(USERS)?;
            let user: Option<User> = table.get(name)?.map(|v| decode("users", v.value())).transpose()?;
            match user {
                Some(mut user) => {
                    user.password_hash = password_hash;
                    user.updated_ms = now_ms();
                    table.insert(name, encode(&user).as_slice())?;
                    true
                }
                None => false,
            }
        };
        if found {
            delete_sessions_of(&txn, name)?;
        }
        txn.commit()?;
        Ok(found)
    }

    /// Removes an account and its sessions; returns whether it existed.
    pub fn user_remove(&self, name: &str) -> Result<bool> {
        let txn = self.db()?.begin_write()?;
        let found = txn.open_table(USERS)?.remove(name)?.is_some();
        delete_sessions_of(&txn, name)?;
        txn.commit()?;
        Ok(found)
    }

    /// Removes an account and its sessions, unless it is the last admin (checked in the same
    /// transaction, so two removals at once cannot leave no admin).
    pub fn user_remove_keeping_an_admin(&self, name: &str) -> Result<UserRemoval> {
        let txn = self.db()?.begin_write()?;
        let outcome = {
            let mut table = txn.open_table(USERS)?;
            let mut target = None;
            let mut admins = 0;
            for row in table.iter()? {
                let (_, v) = row?;
                let user: User = decode("users", v.value())?;
                if user.role == Role::Admin {
                    admins += 1;
                }
                if user.name == name {
                    target = Some(user);
                }
            }
            match target {
                None => UserRemoval::Unknown,
                Some(u) if u.role == Role::Admin && admins == 1 => UserRemoval::LastAdmin,
                Some(_) => {
                    table.remove(name)?;
                    UserRemoval::Removed
                }
            }
        };
        if outcome == UserRemoval::Removed {
            delete_sessions_of(&txn, name)?;
            txn.commit()?;
        }
        Ok(outcome)
    }

    /// Signs `user` in for `ttl` (sliding): returns the session token (for the cookie) and its
    /// anti-CSRF token, 32 random bytes each in base64url. Only the token's hash is stored.
    /// Expired sessions are cleared in the same transaction, so the table holds live sessions
    /// and those that expired since the last sign-in.
    pub fn session_create(&self, user: &str, ttl: Duration) -> Result<(String, String)> {
        self.session_create_at(user, ttl, now_ms())
    }

    fn session_create_at(&self, user: &str, ttl: Duration, now: i64) -> Result<(String, String)> {
        let (token, csrf) = (random_token(), random_token());
        let record = SessionRecord {
            user: user.to_string(),
            csrf: csrf.clone(),
            created_ms: now,
            last_seen_ms: now,
            expires_ms: now.saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64),
        };
        let txn = self.db()?.begin_write()?;
        delete_expired_sessions(&txn, now)?;
        txn.open_table(SESSIONS)?
            .insert(token_key(&token).as_str(), encode(&record).as_slice())?;
        txn.commit()?;
        Ok((token, csrf))
    }

    /// The account and session a session token belongs to: `None` when the token is unknown,
    /// expired, or its account was removed. Using a session pushes its expiry back by its
    /// lifetime, written at most once a minute ([`SESSION_SLIDE_EVERY_MS`]).
    pub fn session_get(&self, token: &str) -> Result<Option<(User, SessionRecord)>> {
        self.session_get_at(token, now_ms())
    }

    fn session_get_at(&self, token: &str, now: i64) -> Result<Option<(User, SessionRecord)>> {
        let key = token_key(token);
        let (user, mut record) = {
            let txn = self.db()?.begin_read()?;
            let Some(record) = txn.open_table(SESSIONS)?.get(key.as_str())? else {
                return Ok(None);
            };
            let record: SessionRecord = decode("sessions", record.value())?;
            if record.expires_ms <= now {
                return Ok(None);
            }
            let Some(user) = txn.open_table(USERS)?.get(record.user.as_str())? else {
                return Ok(None);
            };
            (decode::<User>("users", user.value())?, record)
        };
        if now - record.last_seen_ms >= SESSION_SLIDE_EVERY_MS {
            let lifetime = record.expires_ms - record.last_seen_ms;
            record.last_seen_ms = now;
            record.expires_ms = now.saturating_add(lifetime);
            // The session is valid whether or not its new expiry could be written (a full
            // disk): the next request tries again.
            if let Err(e) = self.session_touch(&key, &record) {
                tracing::warn!(user = %record.user, error = %e, "could not extend a console session");
            }
        }
        Ok(Some((user, record)))
    }

    /// Writes a session's slid expiry, unless it was deleted meanwhile (signed out).
    fn session_touch(&self, key: &str, record: &SessionRecord) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut sessions = txn.open_table(SESSIONS)?;
            let exists = sessions.get(key)?.is_some();
            if exists {
                sessions.insert(key, encode(record).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Signs a session out (its token no longer works). Unknown tokens are ignored.
    pub fn session_delete(&self, token: &str) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        txn.open_table(SESSIONS)?.remove(token_key(token).as_str())?;
        txn.commit()?;
        Ok(())
    }

    /// Removes every expired session; returns how many.
    pub fn sessions_purge_expired(&self) -> Result<usize> {
        let txn = self.db()?.begin_write()?;
        let purged = delete_expired_sessions(&txn, now_ms())?;
        txn.commit()?;
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        (dir, store)
    }

    fn user(name: &str, role: Role) -> User {
        User {
            name: name.into(),
            role,
            password_hash: "$argon2id$fake".into(),
            created_ms: 1,
            updated_ms: 1,
        }
    }

    #[test]
    fn a_session_is_stored_under_the_hash_of_its_token_and_finds_its_user() {
        let (_dir, store) = store();
        store.user_put(user("awa", Role::Agent)).unwrap();
        let (token, csrf) = store.session_create("awa", HOUR).unwrap();
        assert_eq!(token.len(), 43, "32 bytes in base64url without padding");
        assert_ne!(token, csrf);
        let (u, s) = store.session_get(&token).unwrap().expect("signed in");
        assert_eq!(
            (u.name.as_str(), u.role, s.csrf.as_str()),
            ("awa", Role::Agent, csrf.as_str())
        );
        let txn = store.db().unwrap().begin_read().unwrap();
        let sessions = txn.open_table(SESSIONS).unwrap();
        assert!(
            sessions.get(token.as_str()).unwrap().is_none(),
            "the token itself is not stored"
        );
        assert!(sessions.get(token_key(&token).as_str()).unwrap().is_some());
        assert!(store.session_get("not-a-token").unwrap().is_none());
    }

    #[test]
    fn a_session_expires_unless_used_and_slides_at_most_once_a_minute() {
        let (_dir, store) = store();
        store.user_put(user("awa", Role::Agent)).unwrap();
        let t0 = 1_000_000;
        let (token, _) = store.session_create_at("awa", HOUR, t0).unwrap();
        let hour = HOUR.as_millis() as i64;
        // Used 30 s later: valid, nothing written.
        let (_, s) = store.session_get_at(&token, t0 + 30_000).unwrap().unwrap();
        assert_eq!((s.last_seen_ms, s.expires_ms), (t0, t0 + hour));
        // Used 50 minutes later: the hour starts again from then.
        let later = t0 + 50 * 60_000;
        let (_, s) = store.session_get_at(&token, later).unwrap().unwrap();
        assert_eq!((s.last_seen_ms, s.expires_ms), (later, later + hour));
        let past_first_hour = t0 + hour + 1;
        assert!(store.session_get_at(&token, past_first_hour).unwrap().is_some(), "slid");
        assert!(
            store.session_get_at(&token, past_first_hour + hour).unwrap().is_none(),
            "an hour without use: expired"
        );
    }

    #[test]
    fn removing_a_user_or_changing_its_password_signs_its_sessions_out() {
        let (_dir, store) = store();
        store.user_put(user("awa", Role::Agent)).unwrap();
        store.user_put(user("ibou", Role::Admin)).unwrap();
        let (awa, _) = store.session_create("awa", HOUR).unwrap();
        let (ibou, _) = store.session_create("ibou", HOUR).unwrap();
        assert!(store.user_set_password("awa", "$argon2id$new".into()).unwrap());
        assert!(store.session_get(&awa).unwrap().is_none());
        assert_eq!(store.user("awa").unwrap().unwrap().password_hash, "$argon2id$new");
        let (awa, _) = store.session_create("awa", HOUR).unwrap();
        assert!(store.user_remove("awa").unwrap());
        assert!(!store.user_remove("awa").unwrap());
        assert!(store.session_get(&awa).unwrap().is_none());
        assert!(
            store.session_get(&ibou).unwrap().is_some(),
            "other users stay signed in"
        );
        assert!(!store.user_set_password("awa", "x".into()).unwrap());
    }

    #[test]
    fn the_last_admin_cannot_be_removed() {
        let (_dir, store) = store();
        store.user_put(user("ibou", Role::Admin)).unwrap();
        store.user_put(user("awa", Role::Agent)).unwrap();
        assert_eq!(
            store.user_remove_keeping_an_admin("ibou").unwrap(),
            UserRemoval::LastAdmin
        );
        assert_eq!(
            store.user_remove_keeping_an_admin("nobody").unwrap(),
            UserRemoval::Unknown
        );
        store.user_put(user("fatou", Role::Admin)).unwrap();
        assert_eq!(
            store.user_remove_keeping_an_admin("ibou").unwrap(),
            UserRemoval::Removed
        );
        assert_eq!(store.user_remove_keeping_an_admin("awa").unwrap(), UserRemoval::Removed);
        assert_eq!(
            store.user_remove_keeping_an_admin("fatou").unwrap(),
            UserRemoval::LastAdmin
        );
        let names: Vec<String> = store.users().unwrap().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["fatou"]);
    }

    #[test]
    fn an_existing_name_is_not_created_twice() {
        let (_dir, store) = store();
        assert!(store.user_add(user("awa", Role::Agent)).unwrap());
        assert!(!store.user_add(user("awa", Role::Admin)).unwrap());
        assert_eq!(store.user("awa").unwrap().unwrap().role, Role::Agent);
    }

    #[test]
    fn expired_sessions_are_purged_and_signing_in_clears_them_too() {
        let (_dir, store) = store();
        store.user_put(user("awa", Role::Agent)).unwrap();
        let now = now_ms();
        store.session_create_at("awa", HOUR, now - 2 * 3_600_000).unwrap();
        store.session_create_at("awa", HOUR, now - 3 * 3_600_000).unwrap();
        let (live, _) = store.session_create("awa", HOUR).unwrap();
        assert_eq!(store.sessions_purge_expired().unwrap(), 0, "cleared by the sign-in");
        store.session_create_at("awa", HOUR, now - 2 * 3_600_000).unwrap();
        assert_eq!(store.sessions_purge_expired().unwrap(), 1);
        assert!(store.session_get(&live).unwrap().is_some());
        store.session_delete(&live).unwrap();
        assert!(store.session_get(&live).unwrap().is_none());
    }

    #[test]
    fn debug_output_never_shows_a_hash_or_a_csrf_token() {
        let u = user("awa", Role::Agent);
        assert!(!format!("{u:?}").contains("argon2"));
        let s = SessionRecord {
            user: "awa".into(),
            csrf: "SECRET-CSRF".into(),
            created_ms: 0,
            last_seen_ms: 0,
            expires_ms: 0,
        };
        assert!(!format!("{s:?}").contains("SECRET"));
    }
}
