//! WhatsApp Cloud API (Meta Graph API) integration.
//!
//! Submodules:
//! - [`message`]: the outbound message model ([`OutboundContent`], [`Recipient`]),
//!   validated against Meta's limits and rendered into exact Graph API JSON.
//! - [`error`]: Meta's error payloads ([`GraphError`]), operator explanations
//!   ([`explain`]) and the retry/fail decision ([`classify`], [`Disposition`]).
//! - [`client`]: the HTTP client ([`GraphClient`]) that sends messages and
//!   uploads/downloads media, never leaking the access token.

#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod message;
pub mod version;

pub use client::{ClientError, DownloadedMedia, GraphClient, SendAccepted, SendFailure};
pub use error::{Disposition, GraphError, classify, explain};
pub use message::{ListRow, ListSection, OutboundContent, Recipient, ReplyButton, ValidationError};
