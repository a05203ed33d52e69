//! Integration tests of the lake (one binary, modules per topic).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod changes;
mod delivery;
mod import;
mod keyed;
mod lease;
mod maintenance;
mod snapshots;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, StringArray};
use shoplake_events::{CsvDecoder, CsvEncoder, Event, FixedClock, Row, Validator};
use shoplake_lake::{Lake, LakeOptions, TableName};
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

pub fn generated(n: u64, seed: u64, days: Option<u32>) -> Vec<Event> {
    Generator::new(&Options {
        seed,
        events: Some(n),
        days,
        ..Options::default()
    })
    .unwrap()
    .collect()
}

pub fn write_csv(path: &Path, events: &[Event], extra_lines: &[&str]) -> PathBuf {
    let mut enc = CsvEncoder::new(Vec::new(), false).unwrap();
    for e in events {
        enc.write(e).unwrap();
    }
    let mut bytes = enc.finish().unwrap();
    for l in extra_lines {
        bytes.extend_from_slice(l.as_bytes());
        bytes.push(b'\n');
    }
    std::fs::File::create(path)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    path.to_owned()
}

/// The distinct event ids of a file's valid rows.
pub fn expected_ids(path: &Path) -> HashSet<String> {
    let input = shoplake_events::io::open(path).unwrap();
    CsvDecoder::new(input, validator())
        .unwrap()
        .filter_map(|r| match r.unwrap() {
            Row::Event(e) => Some(e.event_id().to_string()),
            Row::Reject(_) => None,
        })
        .collect()
}

/// Every event id in the lake, with a check that none repeats.
pub async fn lake_ids(lake: &Lake) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut rows = 0;
    for b in lake
        .read_table(TableName::Events, &["event_id"])
        .await
        .unwrap()
    {
        let a = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..a.len() {
            rows += 1;
            out.insert(a.value(i).to_owned());
        }
    }
    assert_eq!(rows, out.len(), "the events table holds duplicates");
    out
}
