//! The hand-written timestamp and price parsers: no panic, and what parses formats back to
//! something that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoplake_events::time::{format_timestamp, parse_timestamp};
use shoplake_events::validate::price;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(t) = parse_timestamp(s) {
        assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t));
    }
    if let Ok(p) = price(s) {
        assert_eq!(price(&p.to_string()), Ok(p));
    }
});
