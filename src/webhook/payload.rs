//! Meta's webhook payloads, parsed leniently into typed structs.
//!
//! Parsing never fails: a delivery is JSON (checked before it is journaled), and every part
//! that does not have the expected shape — an unknown message type, a field of the wrong
//! type, a new webhook field — is kept as raw JSON beside what could be understood.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One webhook delivery: every change of every entry, in order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivery {
    /// The changes the delivery carries (one per `entry[].changes[]`).
    pub changes: Vec<Change>,
}

/// One `entry[].changes[]` item.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "field_kind", rename_all = "snake_case")]
pub enum Change {
    /// `field = "messages"`: inbound messages, statuses of outbound ones, value-level errors.
    Messages(MessagesValue),
    /// Any other field (`message_template_status_update`, `account_update`, `calls`, …):
    /// kept raw and logged.
    Other {
        /// The webhook field name.
        field: String,
        /// The change's `value`, untouched.
        value: Value,
        /// `entry[].id`: the WhatsApp Business Account the change is about (template
        /// webhooks name their WABA only there).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entry_id: Option<String>,
    },
}

/// The `value` of a `messages` change.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MessagesValue {
    /// `metadata.phone_number_id`: which of the business's numbers this is about.
    pub phone_number_id: Option<String>,
    /// `metadata.display_phone_number`.
    pub display_phone_number: Option<String>,
    /// `contacts[]`: who the messages are from (profile name, phone, BSUID, username).
    pub contacts: Vec<ContactInfo>,
    /// `messages[]`: inbound messages.
    pub messages: Vec<InboundMessage>,
    /// `statuses[]`: delivery statuses of outbound messages.
    pub statuses: Vec<StatusUpdate>,
    /// `errors[]` at value level (out-of-band problems Meta reports).
    pub errors: Vec<MetaError>,
}

/// A `contacts[]` item: the sender's identity as Meta shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactInfo {
    /// Phone number (absent for users who hide it behind a username, since 2026).
    pub wa_id: Option<String>,
    /// Business-scoped user id (BSUID), e.g. `SN.13491208655302741918`.
    pub user_id: Option<String>,
    /// Parent BSUID shared across a business portfolio.
    pub parent_user_id: Option<String>,
    /// `profile.name`.
    pub name: Option<String>,
    /// `profile.username`.
    pub username: Option<String>,
}

impl ContactInfo {
    /// The key walua files this contact under: the BSUID when known, else the phone.
    pub fn key(&self) -> Option<&str> {
        self.user_id.as_deref().or(self.wa_id.as_deref())
    }
}

/// An error object as Meta puts it in webhooks (`code`, `title`, `message`, `error_data.details`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetaError {
    /// Meta's numeric error code (e.g. 131047).
    pub code: i64,
    /// Short title.
    pub title: Option<String>,
    /// Message.
    pub message: Option<String>,
    /// `error_data.details`.
    pub details: Option<String>,
    /// Link to Meta's documentation.
    pub href: Option<String>,
}

/// `context` of an inbound message.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MessageContext {
    /// The wamid of the message this one replies to (or the interactive message clicked).
    pub id: Option<String>,
    /// Who sent the message replied to.
    pub from: Option<String>,
    /// Forwarded once.
    #[serde(default)]
    pub forwarded: bool,
    /// Forwarded more than five times.
    #[serde(default)]
    pub frequently_forwarded: bool,
    /// The catalog product the customer asked about.
    pub referred_product: Option<ReferredProduct>,
}

/// `context.referred_product`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReferredProduct {
    /// Catalog id.
    pub catalog_id: Option<String>,
    /// Product retailer id.
    pub product_retailer_id: Option<String>,
}

/// `referral`: the ad or post that led the customer to write (click-to-WhatsApp).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Referral {
    /// Ad or post URL.
    pub source_url: Option<String>,
    /// Ad or post id.
    pub source_id: Option<String>,
    /// `ad` or `post`.
    pub source_type: Option<String>,
    /// Ad headline.
    pub headline: Option<String>,
    /// Ad body.
    pub body: Option<String>,
    /// Click id for conversion tracking.
    pub ctwa_clid: Option<String>,
}

/// An inbound media object (image, audio, video, document, sticker).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Media {
    /// Media id, to download it through the Graph API.
    pub id: Option<String>,
    /// MIME type.
    pub mime_type: Option<String>,
    /// SHA-256 of the file, base64.
    pub sha256: Option<String>,
    /// Caption (image, video, document).
    pub caption: Option<String>,
    /// File name (document).
    pub filename: Option<String>,
    /// Voice note (audio).
    pub voice: Option<bool>,
    /// Animated sticker.
    pub animated: Option<bool>,
    /// Direct URL when Meta includes one.
    pub url: Option<String>,
}

/// A shared or current location.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Location {
    /// Latitude.
    pub latitude: f64,
    /// Longitude.
    pub longitude: f64,
    /// Place name.
    pub name: Option<String>,
    /// Address.
    pub address: Option<String>,
    /// Map URL.
    pub url: Option<String>,
}

/// A catalog order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Order {
    /// Catalog id.
    pub catalog_id: Option<String>,
    /// Text the customer added.
    pub text: Option<String>,
    /// Items ordered.
    #[serde(default)]
    pub product_items: Vec<OrderItem>,
}

/// One item of an [`Order`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OrderItem {
    /// Product retailer id.
    pub product_retailer_id: Option<String>,
    /// Quantity.
    #[serde(default)]
    pub quantity: f64,
    /// Unit price.
    #[serde(default)]
    pub item_price: f64,
    /// Currency code.
    pub currency: Option<String>,
}

/// What an inbound message carries, by type.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    /// `text`.
    Text {
        /// The text.
        body: String,
    },
    /// `image`, `audio`, `video`, `document`, `sticker`.
    Media(Media),
    /// `location`.
    Location(Location),
    /// `contacts`: shared contact cards, kept as Meta sends them.
    Contacts {
        /// The cards.
        cards: Vec<Value>,
    },
    /// `interactive` / `button_reply`: a reply button was clicked.
    ButtonReply {
        /// The button id the business chose.
        id: String,
        /// The button title.
        title: String,
    },
    /// `interactive` / `list_reply`: a list row was chosen.
    ListReply {
        /// The row id.
        id: String,
        /// The row title.
        title: String,
        /// The row description.
        description: Option<String>,
    },
    /// `interactive` / `nfm_reply`: a WhatsApp Flow was completed.
    FlowReply {
        /// Flow name.
        name: Option<String>,
        /// Body text.
        body: Option<String>,
        /// The flow's answers (a JSON string, as Meta sends it).
        response_json: Option<String>,
    },
    /// Another `interactive` reply type (e.g. `call_permission_reply`).
    OtherInteractive {
        /// `interactive.type`, when present.
        interactive_type: Option<String>,
    },
    /// `button`: a template quick-reply button was clicked.
    Button {
        /// The payload the template defined (matched like a button id).
        payload: String,
        /// The button text.
        text: String,
    },
    /// `reaction` (an empty or missing emoji removes a reaction).
    Reaction {
        /// The wamid reacted to.
        message_id: Option<String>,
        /// The emoji.
        emoji: Option<String>,
    },
    /// `order`.
    Order(Order),
    /// `system` (number change, identity change).
    System {
        /// Human readable body.
        body: Option<String>,
        /// `system.type`.
        system_type: Option<String>,
        /// The new phone number, for `user_changed_number`.
        new_wa_id: Option<String>,
    },
    /// `unsupported`.
    Unsupported {
        /// `unsupported.type` when Meta says what it was.
        unsupported_type: Option<String>,
    },
    /// `revoke`: the customer deleted a message.
    Revoke {
        /// The deleted message.
        original_message_id: Option<String>,
    },
    /// `edit`: the customer edited a message.
    Edit {
        /// The edited message.
        original_message_id: Option<String>,
        /// The new message object.
        message: Value,
    },
    /// Any type walua does not know (yet); the raw message is kept.
    Unknown,
}

/// An inbound message (`messages[]`).
#[derive(Debug, Clone, Serialize)]
pub struct InboundMessage {
    /// The wamid.
    pub id: String,
    /// Sender's phone number (absent for username-only users).
    pub from: Option<String>,
    /// Sender's BSUID, when Meta gives it on the message.
    pub from_user_id: Option<String>,
    /// Unix seconds.
    pub timestamp: i64,
    /// Meta's `type`, as sent.
    #[serde(rename = "type")]
    pub kind: String,
    /// Reply / forward / product context.
    pub context: Option<MessageContext>,
    /// Click-to-WhatsApp referral.
    pub referral: Option<Referral>,
    /// The typed content.
    pub content: Content,
    /// Message-level errors (e.g. on `unsupported`).
    pub errors: Vec<MetaError>,
    /// The message object exactly as received.
    pub raw: Value,
}

/// A status of an outbound message (`statuses[]`).
#[derive(Debug, Clone, Serialize)]
pub struct StatusUpdate {
    /// The wamid of the outbound message.
    pub id: String,
    /// `sent`, `delivered`, `read`, `played`, `failed`, or a newer value.
    pub status: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// The recipient's phone (or group id).
    pub recipient_id: Option<String>,
    /// The recipient's BSUID.
    pub recipient_user_id: Option<String>,
    /// Errors of a `failed` status.
    pub errors: Vec<MetaError>,
    /// `conversation` (id, origin, expiration).
    pub conversation: Option<Value>,
    /// `pricing` (billable, model, category).
    pub pricing: Option<Value>,
    /// The status object exactly as received.
    pub raw: Value,
}

impl Delivery {
    /// Parses a delivery body. Never fails; what is not understood is kept raw.
    pub fn parse(body: &Value) -> Delivery {
        let mut changes = Vec::new();
        for entry in array(body.get("entry")) {
            for change in array(entry.get("changes")) {
                let field = string(change.get("field")).unwrap_or_default();
                let value = change.get("value").cloned().unwrap_or(Value::Null);
                if field == "messages" {
                    changes.push(Change::Messages(MessagesValue::parse(&value)));
                } else {
                    changes.push(Change::Other {
                        field,
                        value,
                        entry_id: string(entry.get("id")),
                    });
                }
            }
        }
        Delivery { changes }
    }
}

impl MessagesValue {
    fn parse(value: &Value) -> MessagesValue {
        let metadata = value.get("metadata");
        MessagesValue {
            phone_number_id: string(metadata.and_then(|m| m.get("phone_number_id"))),
            display_phone_number: string(metadata.and_then(|m| m.get("display_phone_number"))),
            contacts: array(value.get("contacts")).iter().map(parse_contact).collect(),
            messages: array(value.get("messages"))
                .iter()
                .filter_map(InboundMessage::parse)
                .collect(),
            statuses: array(value.get("statuses"))
                .iter()
                .filter_map(StatusUpdate::parse)
                .collect(),
            errors: parse_errors(value.get("errors")),
        }
    }

    /// The contact a message comes from: the `contacts[]` entry matching its sender, or the
    /// only one, or one built from the message's own `from` / `from_user_id`.
    pub fn sender_of(&self, message: &InboundMessage) -> Option<ContactInfo> {
        let matching = self.contacts.iter().find(|c| {
            (c.wa_id.is_some() && c.wa_id == message.from) || (c.user_id.is_some() && c.user_id == message.from_user_id)
        });
        let found = matching.or(if self.contacts.len() == 1 {
            self.contacts.first()
        } else {
            None
        });
        let mut contact = found.cloned().unwrap_or_default();
        if contact.wa_id.is_none() {
            contact.wa_id = message.from.clone();
        }
        if contact.user_id.is_none() {
            contact.user_id = message.from_user_id.clone();
        }
        contact.key().is_some().then_some(contact)
    }
}

fn parse_contact(v: &Value) -> ContactInfo {
    let profile = v.get("profile");
    ContactInfo {
        wa_id: string(v.get("wa_id")),
        user_id: string(v.get("user_id")),
        parent_user_id: string(v.get("parent_user_id")),
        name: string(profile.and_then(|p| p.get("name"))),
        username: string(profile.and_then(|p| p.get("username"))),
    }
}

impl InboundMessage {
    /// Parses one `messages[]` item; `None` only when it has no id at all.
    pub fn parse(v: &Value) -> Option<InboundMessage> {
        let id = string(v.get("id"))?;
        let kind = string(v.get("type")).unwrap_or_else(|| "unknown".into());
        let content = parse_content(&kind, v);
        Some(InboundMessage {
            id,
            from: string(v.get("from")),
            from_user_id: string(v.get("from_user_id")),
            timestamp: timestamp(v.get("timestamp")),
            context: typed(v.get("context")),
            referral: typed(v.get("referral")),
            content,
            errors: parse_errors(v.get("errors")),
            kind,
            raw: v.clone(),
        })
    }

    /// The id of the button or list row this message clicked, if it is such a reply.
    pub fn button_id(&self) -> Option<&str> {
        match &self.content {
            Content::ButtonReply { id, .. } | Content::ListReply { id, .. } => Some(id),
            Content::Button { payload, .. } => Some(payload),
            _ => None,
        }
    }

    /// The text of the message when it has one (text body, caption, button title).
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Text { body } => Some(body),
            Content::Media(m) => m.caption.as_deref(),
            Content::ButtonReply { title, .. } | Content::ListReply { title, .. } => Some(title),
            Content::Button { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A short readable summary of the content, for tables and logs.
    pub fn summary(&self) -> String {
        let s = match &self.content {
            Content::Text { body } => body.clone(),
            Content::Media(m) => {
                let mut s = format!("[{}]", self.kind);
                for part in [&m.filename, &m.caption].into_iter().flatten() {
                    s.push(' ');
                    s.push_str(part);
                }
                s
            }
            Content::Location(l) => format!(
                "[location] {}({:.5}, {:.5})",
                l.name.as_ref().map(|n| format!("{n} ")).unwrap_or_default(),
                l.latitude,
                l.longitude
            ),
            Content::Contacts { cards } => format!("[contacts] {} card(s)", cards.len()),
            Content::ButtonReply { id, title } => format!("[button] {title} ({id})"),
            Content::ListReply { id, title, .. } => format!("[list] {title} ({id})"),
            Content::FlowReply { name, .. } => format!("[flow] {}", name.as_deref().unwrap_or("")),
            Content::OtherInteractive { interactive_type } => {
                format!("[interactive] {}", interactive_type.as_deref().unwrap_or("?"))
            }
            Content::Button { payload, text } => format!("[button] {text} ({payload})"),
            Content::Reaction { emoji, .. } => match emoji.as_deref() {
                Some(e) if !e.is_empty() => format!("[reaction] {e}"),
                _ => "[reaction removed]".into(),
            },
            Content::Order(o) => format!("[order] {} item(s)", o.product_items.len()),
            Content::System { body, .. } => format!("[system] {}", body.as_deref().unwrap_or("")),
            Content::Unsupported { unsupported_type } => {
                format!("[unsupported] {}", unsupported_type.as_deref().unwrap_or(""))
            }
            Content::Revoke { .. } => "[deleted]".into(),
            Content::Edit { .. } => "[edited]".into(),
            Content::Unknown => format!("[{}]", self.kind),
        };
        truncate(s.trim(), 160)
    }
}

fn parse_content(kind: &str, v: &Value) -> Content {
    let part = v.get(kind);
    let parsed = match kind {
        "text" => string(part.and_then(|t| t.get("body"))).map(|body| Content::Text { body }),
        "image" | "audio" | "video" | "document" | "sticker" => typed::<Media>(part).map(Content::Media),
        "location" => typed::<Location>(part).map(Content::Location),
        "contacts" => Some(Content::Contacts {
            cards: array(part).to_vec(),
        }),
        "interactive" => part.map(parse_interactive),
        "button" => part.map(|b| Content::Button {
            payload: string(b.get("payload")).unwrap_or_default(),
            text: string(b.get("text")).unwrap_or_default(),
        }),
        "reaction" => part.map(|r| Content::Reaction {
            message_id: string(r.get("message_id")),
            emoji: string(r.get("emoji")),
        }),
        "order" => typed::<Order>(part).map(Content::Order),
        "system" => part.map(|s| Content::System {
            body: string(s.get("body")),
            system_type: string(s.get("type")),
            new_wa_id: string(s.get("wa_id")),
        }),
        "unsupported" => Some(Content::Unsupported {
            unsupported_type: string(part.and_then(|u| u.get("type"))),
        }),
        "revoke" => Some(Content::Revoke {
            original_message_id: string(part.and_then(|r| r.get("original_message_id"))),
        }),
        "edit" => Some(Content::Edit {
            original_message_id: string(part.and_then(|r| r.get("original_message_id"))),
            message: part.and_then(|r| r.get("message")).cloned().unwrap_or(Value::Null),
        }),
        _ => None,
    };
    parsed.unwrap_or(Content::Unknown)
}

fn parse_interactive(i: &Value) -> Content {
    let itype = string(i.get("type"));
    let part = itype.as_deref().and_then(|t| i.get(t));
    match (itype.as_deref(), part) {
        (Some("button_reply"), Some(b)) => Content::ButtonReply {
            id: string(b.get("id")).unwrap_or_default(),
            title: string(b.get("title")).unwrap_or_default(),
        },
        (Some("list_reply"), Some(l)) => Content::ListReply {
            id: string(l.get("id")).unwrap_or_default(),
            title: string(l.get("title")).unwrap_or_default(),
            description: string(l.get("description")),
        },
        (Some("nfm_reply"), Some(n)) => Content::FlowReply {
            name: string(n.get("name")),
            body: string(n.get("body")),
            response_json: string(n.get("response_json")),
        },
        _ => Content::OtherInteractive {
            interactive_type: itype,
        },
    }
}

impl StatusUpdate {
    /// Parses one `statuses[]` item; `None` when it lacks an id or a status.
    pub fn parse(v: &Value) -> Option<StatusUpdate> {
        Some(StatusUpdate {
            id: string(v.get("id"))?,
            status: string(v.get("status"))?.to_ascii_lowercase(),
            timestamp: timestamp(v.get("timestamp")),
            recipient_id: string(v.get("recipient_id")),
            recipient_user_id: string(v.get("recipient_user_id")),
            errors: parse_errors(v.get("errors")),
            conversation: v.get("conversation").cloned(),
            pricing: v.get("pricing").cloned(),
            raw: v.clone(),
        })
    }
}

fn parse_errors(v: Option<&Value>) -> Vec<MetaError> {
    array(v)
        .iter()
        .map(|e| MetaError {
            code: e.get("code").and_then(number_i64).unwrap_or(0),
            title: string(e.get("title")),
            message: string(e.get("message")),
            details: string(e.get("error_data").and_then(|d| d.get("details"))),
            href: string(e.get("href")),
        })
        .collect()
}

fn array(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// A string field; numbers are accepted and rendered (Meta is not always consistent).
fn string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number_i64(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Unix seconds from a string or a number; 0 when absent or unreadable.
fn timestamp(v: Option<&Value>) -> i64 {
    v.and_then(number_i64).unwrap_or(0)
}

fn typed<T: DeserializeOwned>(v: Option<&Value>) -> Option<T> {
    v.and_then(|v| T::deserialize(v).ok())
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_and_types_never_fail() {
        let body = json!({"entry":[{"changes":[
            {"field":"messages","value":{"messages":[{"id":"w1","type":"hologram","hologram":{"x":1},"timestamp":5}]}},
            {"field":"brand_new_field","value":{"a":[1,2]}},
            {"field":"messages","value":"not an object"}
        ]}]});
        let d = Delivery::parse(&body);
        assert_eq!(d.changes.len(), 3);
        let Change::Messages(m) = &d.changes[0] else { panic!() };
        assert_eq!(m.messages[0].content, Content::Unknown);
        assert_eq!(m.messages[0].timestamp, 5);
        assert!(matches!(&d.changes[1], Change::Other { field, .. } if field == "brand_new_field"));
    }

    #[test]
    fn wrongly_typed_parts_fall_back_to_unknown() {
        let m = InboundMessage::parse(&json!({"id":"w","type":"location","location":{"latitude":"north"}})).unwrap();
        assert_eq!(m.content, Content::Unknown);
        assert_eq!(m.summary(), "[location]");
    }

    #[test]
    fn button_ids_from_every_click_shape() {
        let b = InboundMessage::parse(&json!({"id":"a","type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"x","title":"X"}}})).unwrap();
        let t = InboundMessage::parse(&json!({"id":"b","type":"button","button":{"payload":"x","text":"X"}})).unwrap();
        let l = InboundMessage::parse(&json!({"id":"c","type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"x","title":"X"}}})).unwrap();
        for m in [b, t, l] {
            assert_eq!(m.button_id(), Some("x"));
        }
    }
}
