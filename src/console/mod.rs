//! The agents' web console: what its pages do to conversations, callable from the pages and
//! the admin API alike.
//!
//! - [`handover`]: "Prendre la main" / "Rendre au bot": an agent takes a conversation over
//!   and the scripts stay quiet for that contact until it is given back or lapses.

pub mod handover;
