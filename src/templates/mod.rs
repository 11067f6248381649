//! WhatsApp message templates: the messages Meta approves in advance, the only ones a
//! business may send outside the 24 h customer-service window.
//!
//! walua keeps each template as a TOML file in `templates/` (one per template and language,
//! `order_created.fr.toml`), so they live in version control beside the scripts that send
//! them, are checked against Meta's rules before Meta sees them, and can be pushed to Meta
//! and compared with what Meta holds.
//!
//! - [`definition`]: the TOML files: loading, Meta's rules ([`Definition::validate`]),
//!   Meta's creation JSON and the comparison with Meta's copy ([`differences`]).
//! - [`params`]: the parameters of a send: from a plain list or table (what Lua scripts
//!   give) to Meta's send components ([`build`]), and checking hand-written components
//!   ([`check`]) against a template's shape ([`shape`]).
//! - [`catalog`]: what a send knows: the registry (per WABA) and the definitions, and the
//!   check every template send passes before it is queued; PAUSED holds.
//! - [`sync`]: the registry against Meta: the periodic sync, `diff` and `push` within Meta's
//!   limits, and what a change does (log, metrics, release held sends).
//! - [`watch`]: hot reload of the definitions folder.
//!
//! The registry itself (Meta's view, keyed by template id) is a store table:
//! [`crate::store::templates`].

pub mod catalog;
pub mod definition;
pub mod params;
pub mod sync;
pub mod watch;

pub use definition::{
    Button, ButtonType, Category, Definition, DefinitionError, DefinitionSet, Example, Header, HeaderFormat,
    differences, load_dir, load_file, normalize_language,
};
pub use params::{ButtonKind, ButtonShape, HeaderShape, MediaKind, ParamError, TemplateShape, build, check, shape};
