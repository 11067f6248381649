//! Property tests (run in CI): arbitrary JSON shaped like Meta's deliveries never panics the
//! parser, and what it parses converts to Lua values in a sandbox (the way scripts see a
//! message). The cargo-fuzz targets in `fuzz/` explore the same properties from raw bytes.

use std::path::PathBuf;
use std::time::Duration;

use mlua::LuaSerdeExt;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use walua::script::sandbox::{Limits, Sandbox};
use walua::webhook::payload::{Change, Delivery};

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("text"),
            Just("interactive"),
            Just("button"),
            Just("image"),
            Just("messages"),
            Just("button_reply")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Keys Meta uses, and some it does not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "id",
            "from",
            "timestamp",
            "type",
            "text",
            "body",
            "interactive",
            "button_reply",
            "list_reply",
            "button",
            "payload",
            "title",
            "context",
            "referral",
            "image",
            "caption",
            "mime_type",
            "errors",
            "code",
            "statuses",
            "status",
            "recipient_id",
            "contacts",
            "wa_id",
            "user_id",
            "profile",
            "name",
            "messages",
            "metadata",
            "location",
            "order",
            "product_items",
            "reaction",
            "emoji",
            "message_id",
            "conversation",
            "pricing",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,8}",
    ]
}

/// A message object: real keys with arbitrary values, plus arbitrary extra fields.
fn message() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just(json!("text")),
            Just(json!("interactive")),
            Just(json!("button")),
            Just(json!("image")),
            any_json()
        ],
        any_json(),
        any_json(),
        prop_oneof![".{0,20}".prop_map(Value::String), any_json()],
        prop::collection::btree_map(key(), any_json(), 0..4),
    )
        .prop_map(|(kind, content, ctx, id, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            m.insert("id".into(), id);
            m.insert("from".into(), json!("221771234567"));
            m.insert("timestamp".into(), json!("1760000000"));
            if let Some(k) = kind.as_str() {
                m.insert(k.to_string(), content);
            }
            m.insert("type".into(), kind);
            m.insert("context".into(), ctx);
            Value::Object(m)
        })
}

/// A delivery with Meta's envelope, whose parts are sometimes replaced by anything.
fn delivery() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(message(), 0..3),
        prop::collection::vec(any_json(), 0..3),
        any_json(),
        any_json(),
        prop_oneof![Just(json!("messages")), any_json()],
        any::<u8>(),
    )
        .prop_map(|(messages, statuses, contacts, other, field, mangle)| {
            let mut d = json!({
                "object": "whatsapp_business_account",
                "entry": [{"id": "WABA", "changes": [{"field": field, "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "221338601234", "phone_number_id": "1234567890"},
                    "contacts": contacts, "messages": messages, "statuses": statuses
                }}]}]
            });
            match mangle % 5 {
                0 => {
                    d["entry"][0]["changes"][0]["value"]["contacts"] = json!([{"wa_id": other, "profile": {"name": 7}}])
                }
                1 => d["entry"][0]["changes"] = other,
                2 => d["entry"] = json!([other]),
                _ => {}
            }
            d
        })
}

fn sandbox() -> Sandbox {
    let limits = Limits {
        cpu: Duration::from_secs(5),
        memory: 64 * 1024 * 1024,
        ..Limits::default()
    };
    Sandbox::new(limits, PathBuf::from("/nonexistent-walua-lib")).expect("sandbox")
}

/// The message as a script sees it (shape of the record walua stores), then into Lua.
fn to_lua(sb: &Sandbox, d: &Delivery) {
    for change in &d.changes {
        if let Change::Messages(v) = change {
            for m in &v.messages {
                let sender = v.sender_of(m);
                let record = json!({
                    "wamid": m.id, "from": m.from, "type": m.kind, "summary": m.summary(),
                    "button_id": m.button_id(), "text": m.text(),
                    "content": serde_json::to_value(&m.content).unwrap(),
                    "context": serde_json::to_value(&m.context).unwrap(),
                    "raw": m.raw, "contact": serde_json::to_value(&sender).unwrap(),
                });
                let lua_value = sb.lua().to_value(&record).expect("converts to Lua");
                let back: Value = sb.lua().from_value(lua_value).expect("converts back");
                assert_eq!(back["wamid"], record["wamid"]);
                assert_eq!(back["type"], record["type"]);
            }
        }
    }
    serde_json::to_value(d).expect("a parsed delivery serializes");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn meta_shaped_deliveries_parse_and_convert(body in delivery()) {
        let d = Delivery::parse(&body);
        // The bytes path as well: serialize, check as the webhook does, parse again.
        let bytes = serde_json::to_vec(&body).unwrap();
        prop_assert!(walua::webhook::check_json(&bytes::Bytes::from(bytes.clone())).is_ok());
        let again = Delivery::parse(&serde_json::from_slice(&bytes).unwrap());
        prop_assert_eq!(d.changes.len(), again.changes.len());
        to_lua(&sandbox(), &d);
    }

    #[test]
    fn the_webhook_acknowledges_exactly_what_the_processor_can_read(
        v in any_json(),
        cut in 0usize..64,
        noise in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        // Valid JSON of any shape, and the same cut short or with stray bytes appended.
        let full = serde_json::to_vec(&v).unwrap();
        let mut mangled = full[..full.len().saturating_sub(cut)].to_vec();
        mangled.extend(&noise);
        for bytes in [full, mangled] {
            let accepted = walua::webhook::check_json(&bytes::Bytes::from(bytes.clone())).is_ok();
            let readable = matches!(walua::webhook::parse_body(&bytes), Ok(Value::Object(_)));
            prop_assert_eq!(accepted, readable, "{}", String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn any_json_value_parses(v in any_json()) {
        let d = Delivery::parse(&v);
        to_lua(&sandbox(), &d);
    }
}
