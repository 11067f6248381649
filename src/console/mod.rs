//! The operator console at `/`: agents and admins follow and answer conversations from a
//! browser (DESIGN.md, "Console").
//!
//! - [`accounts`]: console accounts and roles, passwords (argon2id), sign-in with its
//!   throttle, session cookies and the anti-CSRF token.

pub mod accounts;
