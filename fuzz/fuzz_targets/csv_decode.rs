//! Any bytes, with or without a valid header, decode without a panic.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use shoplake_events::{CsvDecoder, FixedClock, Validator};

fuzz_target!(|data: &[u8]| {
    let v = Validator::new(Arc::new(FixedClock(1_795_824_000_000_000)));
    let with_header = [shoplake_events::csv::HEADER.as_bytes(), b"\n", data].concat();
    for input in [data, &with_header[..]] {
        if let Ok(dec) = CsvDecoder::new(input, v.clone()) {
            for row in dec {
                if row.is_err() {
                    break;
                }
            }
        }
    }
});
