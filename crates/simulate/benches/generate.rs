//! Generator throughput, one core. `cargo bench -p shoplake-simulate` prints events/s.

#![allow(clippy::expect_used, missing_docs)]

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use shoplake_events::CsvEncoder;
use shoplake_simulate::{AttackSpec, Generator, Options};

const EVENTS: u64 = 500_000;

fn main() {
    divan::main();
}

fn options(attacks: AttackSpec) -> Options {
    Options {
        seed: 7,
        events: Some(EVENTS),
        attacks,
        ..Options::default()
    }
}

#[divan::bench(sample_count = 5)]
fn generate(bencher: Bencher) {
    let opts = options(AttackSpec::none());
    bencher.counter(ItemsCount::new(EVENTS)).bench(|| {
        Generator::new(&opts)
            .expect("options")
            .map(|e| black_box(e).price.cents())
            .sum::<i64>()
    });
}

#[divan::bench(sample_count = 5)]
fn generate_and_encode_csv(bencher: Bencher) {
    let opts = options(AttackSpec::none());
    bencher.counter(ItemsCount::new(EVENTS)).bench(|| {
        let mut enc = CsvEncoder::new(std::io::sink(), false).expect("encoder");
        for e in Generator::new(&opts).expect("options") {
            enc.write(&e).expect("write");
        }
    });
}

#[divan::bench(sample_count = 5)]
fn generate_with_attacks_and_network_fields(bencher: Bencher) {
    let mut opts = options(AttackSpec::default_mix());
    opts.network_fields = true;
    bencher.counter(ItemsCount::new(EVENTS)).bench(|| {
        let mut enc = CsvEncoder::new(std::io::sink(), true).expect("encoder");
        for e in Generator::new(&opts).expect("options") {
            enc.write(&e).expect("write");
        }
    });
}
