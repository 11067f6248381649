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
//! - [`compose`]: answers beyond text: the template picker of a closed window, attachments,
//!   resend and cancel.
//! - [`ops`]: the operations pages (outbox, scripts, parked runs, health); admins act.
//! - [`stats`]: the statistics page (figures, SVG charts drawn on the server, tables).
//! - [`handover`]: "Prendre la main" / "Rendre au bot": an agent takes a conversation over
//!   and the scripts stay quiet for that contact until it is given back or lapses.

pub mod accounts;
pub mod campaigns;
pub mod compose;
pub mod handover;
pub mod live;
pub mod ops;
pub mod pages;
pub mod stats;
pub mod strings;
