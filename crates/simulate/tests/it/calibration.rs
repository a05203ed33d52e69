//! The calibration test: on 1 M generated rows, every fact of DESIGN.md section 2 lands inside
//! its tolerance band. Run with `--nocapture` to see the table.

use shoplake_simulate::stats::{Profile, format_checks};
use shoplake_simulate::{Generator, Options};

fn measure(opts: &Options) -> shoplake_simulate::stats::Facts {
    let mut profile = Profile::new();
    for e in Generator::new(opts).unwrap() {
        profile.add(&e);
    }
    profile.facts()
}

#[test]
fn one_million_rows_match_the_real_data() {
    let opts = Options {
        seed: 7,
        events: Some(1_000_000),
        ..Options::default()
    };
    let facts = measure(&opts);
    let checks = facts.checks(opts.remove_share);
    let table = format_checks(&checks);
    println!("{table}");
    println!("{facts:#?}");
    assert_eq!(facts.rows, 1_000_000);
    let bad: Vec<_> = checks.iter().filter(|c| !c.ok()).map(|c| c.name).collect();
    assert!(bad.is_empty(), "out of band: {bad:?}\n{table}");
}

#[test]
fn zero_removals_reproduce_the_multi_category_store() {
    let opts = Options {
        seed: 3,
        events: Some(200_000),
        remove_share: 0.0,
        ..Options::default()
    };
    let facts = measure(&opts);
    assert_eq!(facts.remove_share, 0.0);
    assert!(
        (facts.view_share - 0.961).abs() < 0.015,
        "{}",
        facts.view_share
    );
}
