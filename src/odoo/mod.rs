//! Odoo over its external API (Odoo 16+), from outside Odoo: nothing is installed in Odoo.
//!
//! [`OdooClient`] speaks JSON-RPC to `/jsonrpc` (`common.login`, `object.execute_kw`) with an
//! API key (preferred) or a password, and downloads PDFs: invoices (and quotations) through
//! the portal link `get_portal_url` gives, which works with an API key; any report through a
//! web session (`/web/session/authenticate` + `/report/pdf/…`), which needs a password
//! because Odoo 16 refuses API keys for interactive sessions.
//!
//! Facts from the Odoo 16 transcripts (`fixtures/odoo16/`) this module relies on:
//!
//! - every error comes back with HTTP 200 and a JSON-RPC `error` object
//!   (`code` 200, `message` "Odoo Server Error", `data.name` = the Python exception,
//!   `data.message` = the text); an expired web session is `code` 100 with `id: null`;
//! - `common.login` with a wrong password or key answers `result: false`, not an error;
//! - `execute_kw` with a wrong key answers the fault `odoo.exceptions.AccessDenied`;
//! - datetimes are strings `"YYYY-MM-DD HH:MM:SS"` (UTC) truncated to the second, while the
//!   database compares and orders with microseconds: `write_date > "…:09"` still returns the
//!   records written during second `…:09`. An incremental cursor on `write_date` with `>`
//!   re-reads the records of its last second (duplicates, never misses) and must dedupe by
//!   `(id, write_date)`.

mod client;

pub mod chatter;
pub mod hooks;
pub mod partners;

pub use client::{OdooClient, OdooError, READ_ONLY_METHODS};
