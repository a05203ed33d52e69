//! Decode+validate and encode throughput of the codecs, on the real REES46 sample repeated to
//! 100 k rows. `cargo bench -p shoplake-events` prints rows/s and bytes/s.

#![allow(clippy::expect_used, missing_docs)]

use std::sync::Arc;

use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use shoplake_events::json::encode_json;
use shoplake_events::{CsvDecoder, CsvEncoder, Event, FixedClock, JsonDecoder, Row, Validator};

const ROWS: usize = 100_000;

fn validator() -> Validator {
    Validator::new(Arc::new(FixedClock(1_795_824_000_000_000)))
}

fn sample_events() -> Vec<Event> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/rees46-2019-Oct-sample.csv"
    );
    let input = shoplake_events::io::open(std::path::Path::new(path)).expect("the REES46 sample");
    let base: Vec<Event> = CsvDecoder::new(input, validator())
        .expect("header")
        .filter_map(|r| match r {
            Ok(Row::Event(e)) => Some(e),
            _ => None,
        })
        .collect();
    (0..ROWS).map(|i| base[i % base.len()].clone()).collect()
}

fn csv_bytes() -> Vec<u8> {
    let mut enc = CsvEncoder::new(Vec::new(), false).expect("encoder");
    for e in sample_events() {
        enc.write(&e).expect("write");
    }
    enc.finish().expect("finish")
}

fn json_bytes() -> Vec<u8> {
    let mut out = Vec::new();
    for e in sample_events() {
        encode_json(&mut out, &e);
    }
    out
}

fn main() {
    divan::main();
}

#[divan::bench(sample_count = 20)]
fn csv_decode_validate(bencher: Bencher) {
    let data = csv_bytes();
    let v = validator();
    bencher
        .counter(ItemsCount::new(ROWS))
        .counter(BytesCount::new(data.len()))
        .bench(|| {
            let mut n = 0usize;
            for row in CsvDecoder::new(black_box(&data[..]), v.clone()).expect("header") {
                if let Ok(Row::Event(e)) = row {
                    n += e.price.cents() as usize & 1;
                }
            }
            n
        });
}

#[divan::bench(sample_count = 20)]
fn json_decode_validate(bencher: Bencher) {
    let data = json_bytes();
    let v = validator();
    bencher
        .counter(ItemsCount::new(ROWS))
        .counter(BytesCount::new(data.len()))
        .bench(|| {
            let mut n = 0usize;
            for row in JsonDecoder::new(black_box(&data[..]), v.clone()) {
                if let Ok(Row::Event(e)) = row {
                    n += e.price.cents() as usize & 1;
                }
            }
            n
        });
}

#[divan::bench(sample_count = 20)]
fn csv_encode(bencher: Bencher) {
    let events = sample_events();
    bencher.counter(ItemsCount::new(ROWS)).bench(|| {
        let mut enc = CsvEncoder::new(Vec::with_capacity(16 << 20), false).expect("encoder");
        for e in &events {
            enc.write(e).expect("write");
        }
        enc.finish().expect("finish").len()
    });
}

#[divan::bench(sample_count = 20)]
fn event_id(bencher: Bencher) {
    let events = sample_events();
    bencher.counter(ItemsCount::new(ROWS)).bench(|| {
        events
            .iter()
            .map(|e| e.event_id().0 as u64)
            .fold(0u64, u64::wrapping_add)
    });
}

#[divan::bench(sample_count = 10)]
fn to_arrow(bencher: Bencher) {
    let events = sample_events();
    bencher.counter(ItemsCount::new(ROWS)).bench(|| {
        shoplake_events::arrow::to_record_batch(&events)
            .expect("batch")
            .num_rows()
    });
}

/// The events as log records, one buffer each, in `format`.
fn records(format: shoplake_events::record::RecordFormat) -> Vec<Vec<u8>> {
    sample_events()
        .iter()
        .map(|e| {
            let mut buf = Vec::with_capacity(256);
            shoplake_events::record::encode(&mut buf, e, format);
            buf
        })
        .collect()
}

/// Decoding log records as delivery and the detector do, in each record format.
#[divan::bench(sample_count = 20, args = ["binary", "json"])]
fn log_record_decode(bencher: Bencher, format: &str) {
    let format = shoplake_events::record::RecordFormat::parse(format).expect("format");
    let data = records(format);
    let v = validator();
    bencher
        .counter(ItemsCount::new(ROWS))
        .counter(BytesCount::new(data.iter().map(Vec::len).sum::<usize>()))
        .bench(|| {
            let mut n = 0usize;
            for r in black_box(&data) {
                if let Ok(e) = shoplake_events::record::decode(r, &v) {
                    n += e.price.cents() as usize & 1;
                }
            }
            n
        });
}
