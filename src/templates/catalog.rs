//! What walua knows about templates when it sends one: the registry (Meta's view, per WABA)
//! and the definitions on disk, and the check every template send passes before it is
//! queued ([`TemplateCatalog::prepare`]).
//!
//! The order of authority: once a WABA has been synced, the registry decides (an unknown
//! template is refused); before, a definition on disk checks the parameters; a template that
//! neither knows is sent unchecked with a warning, so a daemon without template management
//! keeps working.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};

use super::definition::{Definition, DefinitionError, DefinitionSet, load_dir};
use super::params::{ParamError, TemplateShape, build, check, shape};
use crate::store::Store;
use crate::store::templates::TemplateRecord;
use crate::whatsapp::message::ValidationError;

/// Statuses a template can be sent in. FLAGGED (quality dropping) and LOCKED (no more edits)
/// still send; PAUSED sends are held (see [`TemplateCatalog::paused`]).
pub const SENDABLE: [&str; 3] = ["APPROVED", "FLAGGED", "LOCKED"];

/// The registry, the definitions and which WABA each business number belongs to.
pub struct TemplateCatalog {
    store: Store,
    /// (phone number id, its WABA), the default account first.
    numbers: Vec<(String, Option<String>)>,
    /// The definitions folder.
    dir: PathBuf,
    /// The definitions as last loaded (a file that fails to load keeps its previous version).
    definitions: RwLock<Arc<DefinitionSet>>,
}

/// A template send, checked: the components to send and what the operator should know.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckedSend {
    /// Meta's send components (built from `params`, or the ones given).
    pub components: Option<Value>,
    /// Sent, but with a warning (unknown template, RED quality, PAUSED…).
    pub warning: Option<String>,
}

/// Where a template's shape came from.
enum Known {
    /// The registry (Meta's view).
    Registry(Box<TemplateRecord>),
    /// A definition on disk (no sync yet).
    Definition(Box<Definition>),
    /// Neither; `synced` says whether the WABA was synced (then the template does not exist).
    Unknown { waba: Option<String>, synced: bool },
}

impl TemplateCatalog {
    /// A catalog of the accounts of `whatsapp`, with the definitions of `dir` loaded.
    pub fn new(store: Store, whatsapp: &crate::config::WhatsAppConfig, dir: &Path) -> TemplateCatalog {
        let catalog = TemplateCatalog {
            store,
            numbers: whatsapp
                .accounts
                .iter()
                .map(|a| (a.phone_number_id.clone(), a.waba_id.clone()))
                .collect(),
            dir: dir.to_path_buf(),
            definitions: RwLock::new(Arc::new(DefinitionSet::default())),
        };
        for e in catalog.reload() {
            tracing::warn!(error = %e, "template definition not loaded");
        }
        catalog
    }

    /// The definitions folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The definitions as loaded now.
    pub fn definitions(&self) -> Arc<DefinitionSet> {
        self.definitions.read().expect("not poisoned").clone()
    }

    /// Loads the definitions folder again. A file that no longer loads keeps its previous
    /// version (as scripts do); returns the errors of this load and the definitions' problems
    /// with Meta's rules.
    pub fn reload(&self) -> Vec<DefinitionError> {
        let mut fresh = load_dir(&self.dir);
        let old = self.definitions();
        for e in &fresh.errors {
            if let Some(previous) = old.definitions.iter().find(|d| d.path == e.path)
                && fresh.find(&previous.name, &previous.language).is_none()
            {
                fresh.definitions.push(previous.clone());
            }
        }
        let mut problems = fresh.errors.clone();
        problems.extend(fresh.problems());
        *self.definitions.write().expect("not poisoned") = Arc::new(fresh);
        problems
    }

    /// The WABA of business number `phone_number_id` (`None`: the default account's).
    pub fn waba_of(&self, phone_number_id: Option<&str>) -> Option<String> {
        match phone_number_id {
            None => self.numbers.first().and_then(|(_, w)| w.clone()),
            Some(n) => self.numbers.iter().find(|(p, _)| p == n).and_then(|(_, w)| w.clone()),
        }
    }

    fn known(&self, phone_number_id: Option<&str>, name: &str, lang: &str) -> Result<Known, ValidationError> {
        let store_error = |e: crate::store::StoreError| {
            ValidationError::new("name", format!("cannot read the template registry: {e}"))
        };
        let waba = self.waba_of(phone_number_id);
        if let Some(w) = &waba {
            if let Some(t) = self.store.template(w, name, lang).map_err(store_error)? {
                if t.components.is_some() || self.definitions().find(name, lang).is_none() {
                    return Ok(Known::Registry(Box::new(t)));
                }
                // Named by a webhook before any sync: its status from Meta, its shape from disk.
                let d = self.definitions().find(name, lang).cloned().expect("checked above");
                return Ok(Known::Registry(Box::new(TemplateRecord {
                    components: Some(d.components(None)),
                    ..t
                })));
            }
            if self.store.templates_synced_at(w).map_err(store_error)?.is_some() {
                return Ok(Known::Unknown { waba, synced: true });
            }
        }
        match self.definitions().find(name, lang) {
            Some(d) => Ok(Known::Definition(Box::new(d.clone()))),
            None => Ok(Known::Unknown { waba, synced: false }),
        }
    }

    /// Checks a template send from business number `phone_number_id` and builds its
    /// components: refused (422) when the template is unknown in a synced WABA, not sendable,
    /// or when the parameters do not fit it. `params` is a plain list or a table keyed by
    /// parameter name (see [`super::params::build`]); `components` are Meta's own.
    pub fn prepare(
        &self,
        phone_number_id: Option<&str>,
        name: &str,
        lang: &str,
        params: Option<&Value>,
        components: Option<&Value>,
    ) -> Result<CheckedSend, ValidationError> {
        if params.is_some() && components.is_some() {
            return Err(ValidationError::new(
                "params",
                "give either params (values, walua builds the components) or components (Meta's own), not both",
            ));
        }
        let mut warning = None;
        let template_shape: Option<TemplateShape> = match self.known(phone_number_id, name, lang)? {
            Known::Registry(t) => {
                let why = t.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
                if t.status == "PAUSED" {
                    warning = Some(format!(
                        "template `{name}` ({lang}) is PAUSED by Meta{why}: the message is held until Meta unpauses it, or fails at the retry horizon"
                    ));
                } else if !SENDABLE.contains(&t.status.as_str()) {
                    return Err(ValidationError::new(
                        "name",
                        format!(
                            "template `{name}` ({lang}) is {} at Meta{why}: it cannot be sent{}",
                            t.status,
                            match t.status.as_str() {
                                "PENDING" | "IN_APPEAL" => "; wait for Meta's review",
                                "REJECTED" => "; fix it and `walua templates push` again",
                                _ => "",
                            }
                        ),
                    ));
                }
                if t.quality == "RED" {
                    warning.get_or_insert(format!(
                        "template `{name}` ({lang}) has a RED quality rating at Meta: customers report or ignore it, and Meta may pause it"
                    ));
                }
                t.components.as_deref().map(|c| shape(c).with_name(name))
            }
            Known::Definition(d) => Some(shape(&d.components(None)).with_name(name)),
            Known::Unknown { waba, synced: true } => {
                let waba = waba.unwrap_or_default();
                let hint = if self.definitions().find(name, lang).is_some() {
                    "; it is defined on disk: `walua templates push` submits it to Meta"
                } else {
                    ""
                };
                return Err(ValidationError::new(
                    "name",
                    format!("template `{name}` ({lang}) does not exist in WhatsApp Business Account {waba}{hint}"),
                ));
            }
            Known::Unknown { synced: false, .. } => {
                warning = Some(format!(
                    "template `{name}` ({lang}) is unknown (no template registry synced, no definition in {}): sent unchecked",
                    self.dir.display()
                ));
                None
            }
        };
        let param_error = |e: ParamError| ValidationError::new("params", e.to_string());
        let components = match (&template_shape, params, components) {
            (Some(s), Some(p), _) => Some(Value::Array(build(s, p).map_err(param_error)?)),
            (Some(s), None, c) => {
                let sent: Vec<Value> = match c {
                    Some(Value::Array(a)) => a.clone(),
                    Some(_) => {
                        return Err(ValidationError::new(
                            "components",
                            "must be an array of Meta's component objects",
                        ));
                    }
                    None => Vec::new(),
                };
                check(s, &sent).map_err(|e| ValidationError::new("components", e.to_string()))?;
                c.cloned()
            }
            (None, Some(p), _) => Some(unchecked_components(p)?),
            (None, None, c) => c.cloned(),
        };
        Ok(CheckedSend { components, warning })
    }

    /// Why a queued send of template `name` must wait: Meta paused it (quality). `None`: send.
    pub fn paused(&self, phone_number_id: Option<&str>, name: &str, lang: &str) -> Option<String> {
        let waba = self.waba_of(phone_number_id)?;
        let t = self.store.template(&waba, name, lang).ok()??;
        (t.status == "PAUSED").then(|| {
            format!(
                "template `{name}` ({}) is PAUSED by Meta{}",
                t.language,
                t.reason.map(|r| format!(" ({r})")).unwrap_or_default()
            )
        })
    }

    /// The templates an agent may pick for a send from business number `phone_number_id`,
    /// each as [`TemplateCatalog::describe`] gives it, by name then language: the sendable
    /// ones of the number's WABA once synced (AUTHENTICATION left out: their codes are not
    /// typed by hand), else the definitions on disk.
    pub fn choices(&self, phone_number_id: Option<&str>) -> Vec<Value> {
        let waba = self.waba_of(phone_number_id);
        let synced = waba
            .as_deref()
            .is_some_and(|w| self.store.templates_synced_at(w).ok().flatten().is_some());
        let mut keys: Vec<(String, String)> = if synced {
            let waba = waba.unwrap_or_default();
            self.store
                .templates()
                .unwrap_or_default()
                .into_iter()
                .filter(|t| {
                    t.waba_id == waba && SENDABLE.contains(&t.status.as_str()) && t.category != "AUTHENTICATION"
                })
                .map(|t| (t.name, t.language))
                .collect()
        } else {
            self.definitions()
                .definitions
                .iter()
                .map(|d| (d.name.clone(), d.language.clone()))
                .collect()
        };
        keys.sort();
        keys.dedup();
        keys.iter()
            .filter_map(|(name, lang)| self.describe(phone_number_id, name, lang))
            .collect()
    }

    /// What `env.templates.get` returns: status, quality, category, texts and parameter
    /// names of template `name` in `lang` for the default account, or `None`.
    pub fn describe(&self, phone_number_id: Option<&str>, name: &str, lang: &str) -> Option<Value> {
        let (status, quality, category, components, source) = match self.known(phone_number_id, name, lang).ok()? {
            Known::Registry(t) => (
                t.status,
                t.quality,
                t.category,
                t.components.unwrap_or_default(),
                "meta",
            ),
            Known::Definition(d) => (
                "LOCAL".to_string(),
                "UNKNOWN".to_string(),
                d.category.as_str().to_string(),
                d.components(None),
                "definition",
            ),
            Known::Unknown { .. } => return None,
        };
        let part = |kind: &str| {
            components.iter().find(|c| {
                c.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case(kind))
            })
        };
        let text_of = |kind: &str| part(kind).and_then(|c| c.get("text")).cloned().unwrap_or(Value::Null);
        let s = shape(&components);
        Some(json!({
            "name": name,
            "language": crate::store::templates::normalize_language(lang),
            "status": status,
            "quality": quality,
            "category": category,
            "source": source,
            "header": text_of("HEADER"),
            "text": text_of("BODY"),
            "footer": text_of("FOOTER"),
            "buttons": part("BUTTONS").and_then(|b| b.get("buttons")).cloned().unwrap_or(json!([])),
            "parameters": s.body,
            "header_parameters": match &s.header {
                super::params::HeaderShape::Text(p) => json!(p),
                _ => json!([]),
            },
            "header_media": match &s.header {
                super::params::HeaderShape::Media(k) => json!(k.as_str()),
                _ => Value::Null,
            },
            "url_buttons": s.buttons.iter()
                .filter(|b| b.kind == (super::params::ButtonKind::Url { dynamic: true }))
                .map(|b| b.index)
                .collect::<Vec<_>>(),
            "named": s.named,
        }))
    }
}

/// A template nobody describes: a plain list becomes its body's text parameters (what
/// `walua send --param` always did); anything else cannot be built without knowing it.
pub fn unchecked_components(params: &Value) -> Result<Value, ValidationError> {
    match params {
        Value::Array(values) => {
            let parameters: Vec<Value> = values
                .iter()
                .map(|v| match v {
                    Value::String(s) => json!({"type": "text", "text": s}),
                    other => json!({"type": "text", "text": other.to_string()}),
                })
                .collect();
            Ok(json!([{ "type": "body", "parameters": parameters }]))
        }
        _ => Err(ValidationError::new(
            "params",
            "the template is unknown (no registry, no definition): only a plain list of body values can be sent",
        )),
    }
}
