//! Parse, then hand each message to Lua the way a script sees it: a record-shaped JSON
//! (content, context, raw, contact) through mlua's serde conversion in walua's sandbox.
#![no_main]

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mlua::LuaSerdeExt;
use walua::script::sandbox::{Limits, Sandbox};
use walua::webhook::payload::{Change, Delivery};

thread_local! {
    static SANDBOX: RefCell<Sandbox> = RefCell::new(
        Sandbox::new(
            Limits { cpu: Duration::from_secs(5), memory: 64 * 1024 * 1024 },
            PathBuf::from("/nonexistent-walua-lib"),
        )
        .expect("sandbox"),
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let d = Delivery::parse(&value);
    SANDBOX.with(|sb| {
        let sb = sb.borrow();
        for change in &d.changes {
            if let Change::Messages(v) = change {
                for m in &v.messages {
                    let record = serde_json::json!({
                        "wamid": m.id, "from": m.from, "type": m.kind, "summary": m.summary(),
                        "button_id": m.button_id(), "text": m.text(),
                        "content": serde_json::to_value(&m.content).unwrap(),
                        "context": serde_json::to_value(&m.context).unwrap(),
                        "raw": m.raw, "contact": serde_json::to_value(v.sender_of(m)).unwrap(),
                    });
                    let lua_value = sb.lua().to_value(&record).expect("record converts to Lua");
                    let back: serde_json::Value = sb.lua().from_value(lua_value).expect("and back");
                    assert_eq!(back["wamid"], record["wamid"]);
                }
            }
        }
    });
});
