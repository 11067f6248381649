//! The operator console at `/`: agents and admins follow and answer conversations from a
//! browser (DESIGN.md, "Console"). Server-rendered HTML, one small embedded script for live
//! updates; no separate server, no build toolchain.
//!
//! - [`accounts`]: console accounts and roles, passwords (argon2id), sign-in with its
//!   throttle, session cookies and the anti-CSRF token.
//! - [`pages`]: the sign-in page, the inbox, a thread, replies and handover buttons; every
//!   route checks the session and the role.
//! - [`live`]: the change counter the pages listen to (Server-Sent Events).
//! - [`strings`]: every text the console shows (French).

pub mod accounts;
pub mod live;
pub mod pages;
pub mod strings;
