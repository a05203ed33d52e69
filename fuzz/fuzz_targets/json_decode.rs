//! Any bytes decode as JSON events without a panic.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use shoplake_events::{FixedClock, JsonDecoder, Validator};

fuzz_target!(|data: &[u8]| {
    let v = Validator::new(Arc::new(FixedClock(1_795_824_000_000_000)));
    for row in JsonDecoder::new(data, v) {
        if row.is_err() {
            break;
        }
    }
});
