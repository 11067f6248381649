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
    // What the webhook acknowledged, the processor must be able to read.
    let value = walua::webhook::parse_body(data).expect("check_json accepted it");
    let d = Delivery::parse(&value);
    serde_json::to_value(&d).expect("a parsed delivery serializes");
});
