//! Any bytes the webhook would journal (a JSON object) parse without panicking, and the
//! parsed delivery serializes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walua::webhook::payload::Delivery;

fuzz_target!(|data: &[u8]| {
    let bytes = bytes::Bytes::copy_from_slice(data);
    if walua::webhook::check_json(&bytes).is_err() {
        return;
    }
    let value: serde_json::Value = serde_json::from_slice(data).expect("check_json accepted it");
    let d = Delivery::parse(&value);
    serde_json::to_value(&d).expect("a parsed delivery serializes");
});
