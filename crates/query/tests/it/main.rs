//! Integration tests of the query engine and the reports (one binary, modules per topic).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod incremental;
mod reports;
mod slt;
mod sql;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use shoplake_events::{CsvEncoder, Event, EventType, FixedClock, Price, Validator};
use shoplake_lake::{ImportSource, Lake, LakeOptions};
use shoplake_simulate::{Generator, Options};

pub fn validator() -> Validator {
    Validator::new(Arc::new(FixedClock(1_795_824_000_000_000)))
}

pub fn lake(dir: &Path) -> Lake {
    Lake::open(LakeOptions {
        root: dir.join("lake").display().to_string(),
        ..LakeOptions::default()
    })
    .unwrap()
}

/// 2019-10-26 00:00 UTC: three days across the end of daylight saving time in Europe.
pub const START: i64 = 1_572_048_000_000_000;
pub const HOUR: i64 = 3_600_000_000;

pub(crate) fn event(
    t: i64,
    kind: EventType,
    product: i64,
    brand: Option<&str>,
    cents: i64,
    user: i64,
) -> Event {
    Event {
        event_time: t,
        event_type: kind,
        product_id: product,
        category_id: 2_053_013_555_631_882_655,
        category_code: Some("electronics.smartphone".into()),
        brand: brand.map(str::to_owned),
        price: Price(cents),
        user_id: user,
        user_session: Some(format!("edge-session-{user}")),
        client_ip: None,
        user_agent: None,
        ingest_time: None,
    }
}

/// Generated traffic over three days plus the edge cases the definitions name: a brand with
/// views and no purchases, a purchase without a cart, a cart pending at the end of the data,
/// events without a category or brand (plenty in generated data), an item carted again on a
/// later day.
pub fn dataset() -> Vec<Event> {
    let mut events: Vec<Event> = Generator::new(&Options {
        seed: 11,
        start: START,
        events: Some(60_000),
        days: Some(3),
        ..Options::default()
    })
    .unwrap()
    .collect();
    let last = events.iter().map(|e| e.event_time).max().unwrap();
    for i in 0..150 {
        events.push(event(
            START + HOUR + i * 60_000_000,
            EventType::View,
            99_000_001,
            Some("zz-no-sales"),
            4_999,
            900_000_000 + i % 40,
        ));
    }
    // A purchase with no cart before it.
    events.push(event(
        START + 30 * HOUR,
        EventType::Purchase,
        99_000_002,
        Some("samsung"),
        12_345,
        900_001_000,
    ));
    // A cart an hour before the newest event: pending with a 24 h window.
    events.push(event(
        last - HOUR,
        EventType::Cart,
        99_000_003,
        Some("apple"),
        99_900,
        900_002_000,
    ));
    // A cart recovered the next day, and one abandoned on the first day.
    events.push(event(
        START + 2 * HOUR,
        EventType::Cart,
        99_000_004,
        Some("apple"),
        50_000,
        900_003_000,
    ));
    events.push(event(
        START + 20 * HOUR,
        EventType::Purchase,
        99_000_004,
        Some("apple"),
        50_000,
        900_003_000,
    ));
    events.push(event(
        START + 3 * HOUR,
        EventType::Cart,
        99_000_005,
        None,
        1_000,
        900_004_000,
    ));
    // Carted on two days and bought 35 h after the first cart, 14 h after the second: abandoned
    // over all data, recovered in a range starting on the second day.
    for (t, kind) in [
        (START + 5 * HOUR, EventType::Cart),
        (START + 26 * HOUR, EventType::Cart),
        (START + 40 * HOUR, EventType::Purchase),
    ] {
        events.push(event(
            t,
            kind,
            99_000_006,
            Some("apple"),
            7_000,
            900_005_000,
        ));
    }
    // Exact duplicates are dropped by the lake; the expected values dedupe the same way.
    let dup = events[10].clone();
    events.push(dup);
    events.sort_by_key(|e| e.event_time);
    events
}

/// Distinct events, as the lake keeps them.
pub fn distinct(events: &[Event]) -> Vec<Event> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e.event_id()))
        .cloned()
        .collect()
}

/// A lake holding the events, imported from CSV.
pub async fn lake_with(dir: &Path, events: &[Event]) -> Lake {
    let csv = dir.join("events.csv");
    let mut enc = CsvEncoder::new(std::fs::File::create(&csv).unwrap(), false).unwrap();
    for e in events {
        enc.write(e).unwrap();
    }
    enc.finish().unwrap();
    let lake = lake(dir);
    let summary = lake
        .import(vec![ImportSource::Path(csv)])
        .with_validator(validator())
        .await
        .unwrap();
    assert_eq!(summary[0].rows_rejected, 0);
    lake
}
