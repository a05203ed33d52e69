//! Detector throughput on decoded events, all default rules.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use divan::counter::ItemsCount;
use shoplake_detect::{Detector, Settings};
use shoplake_events::{Event, SystemClock};
use shoplake_simulate::{AttackSpec, Generator, Options};

fn main() {
    divan::main();
}

fn day() -> Vec<Event> {
    Generator::new(&Options {
        seed: 7,
        events: Some(1_000_000),
        network_fields: true,
        attacks: AttackSpec::default_mix(),
        ..Options::default()
    })
    .unwrap()
    .collect()
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn all_default_rules(bencher: divan::Bencher) {
    let events = day();
    bencher
        .counter(ItemsCount::new(events.len()))
        .with_inputs(|| Detector::new(Settings::default(), Arc::new(SystemClock)))
        .bench_local_values(|mut d| {
            d.process_all(&events);
            d.finish();
            d.take_changes().len()
        });
}
