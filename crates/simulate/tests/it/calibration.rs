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

#[test]
fn events_fill_the_requested_days() {
    let opts = Options {
        seed: 9,
        events: Some(300_000),
        days: Some(3),
        ..Options::default()
    };
    let day = shoplake_events::time::MICROS_PER_DAY;
    let mut per_day = [0u64; 4];
    let mut n = 0;
    for e in Generator::new(&opts).unwrap() {
        let d = ((e.event_time - opts.start) / day) as usize;
        per_day[d.min(3)] += 1;
        n += 1;
        assert!(e.event_time >= opts.start);
        // Sessions still in flight at the end may run a little past it.
        assert!(
            e.event_time < opts.start + 3 * day + day / 12,
            "{}",
            e.event_time
        );
    }
    assert_eq!(n, 300_000);
    for d in &per_day[..3] {
        assert!((80_000..120_000).contains(d), "{per_day:?}");
    }
}
