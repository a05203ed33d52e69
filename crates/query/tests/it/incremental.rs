//! The incremental refresh never makes a report wrong: random sequences of small operations
//! on a small lake (imports of the next hours, late events for old days, re-sent duplicates,
//! bot verdicts added and lifted, compaction, vacuum), each followed by `marts::refresh`,
//! after which every report from the marts equals the same report from `events` (in one of
//! three zones, each in turn), over all days and over a bounded range. Each sequence is drawn from a seed the
//! failure message names.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono_tz::Tz;
use serde_json::Value;
use shoplake_lake::{BotFlag, Lake, TableName};
use shoplake_query::reports::{
    AbandonmentOptions, BrandsOptions, Bucketing, CategoriesOptions, Level, Metric, ReportScope,
    Source, abandonment, activity, brands, categories, visitors,
};
use shoplake_query::{Engine, ReportRange};
use shoplake_simulate::{Generator, Options};

use crate::*;

/// A small, seeded random number generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const ZONES: [Tz; 3] = [Tz::UTC, Tz::Europe__Berlin, Tz::Asia__Kolkata];

async fn import(lake: &Lake, dir: &std::path::Path, name: &str, events: &[Event]) {
    let csv = dir.join(format!("{name}.csv"));
    let mut enc = CsvEncoder::new(std::fs::File::create(&csv).unwrap(), false).unwrap();
    for e in events {
        enc.write(e).unwrap();
    }
    enc.finish().unwrap();
    lake.import(vec![ImportSource::Path(csv)])
        .with_validator(validator())
        .await
        .unwrap();
}

/// Two JSON answers equal, numbers within a relative 1e-9 (ratios are computed in another
/// order from the marts).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Every report of a scope, as JSON, by name.
async fn reports(engine: &Engine, scope: &ReportScope) -> Vec<(String, Value)> {
    let json = |v: serde_json::Result<Value>| v.unwrap();
    let mut out = vec![
        (
            "visitors".to_owned(),
            json(serde_json::to_value(visitors(engine, scope).await.unwrap())),
        ),
        (
            "activity".to_owned(),
            json(serde_json::to_value(activity(engine, scope).await.unwrap())),
        ),
        (
            "brands".to_owned(),
            json(serde_json::to_value(
                brands(engine, scope, &BrandsOptions { min_views: 5 })
                    .await
                    .unwrap(),
            )),
        ),
    ];
    let options = AbandonmentOptions {
        window: Duration::from_secs(6 * 3600),
        top: 5,
        retarget_limit: None,
    };
    out.push((
        "abandonment".to_owned(),
        json(serde_json::to_value(
            abandonment(engine, scope, &options).await.unwrap(),
        )),
    ));
    for (by, level, metric) in [
        (Bucketing::Hour, Level::One, Metric::Visitors),
        (Bucketing::Weekday, Level::Full, Metric::Revenue),
        (Bucketing::Hour, Level::Two, Metric::Views),
    ] {
        let options = CategoriesOptions {
            by,
            level,
            top: 6,
            metric,
        };
        out.push((
            format!("categories {by:?} {level:?} {metric:?}"),
            json(serde_json::to_value(
                categories(engine, scope, &options).await.unwrap(),
            )),
        ));
    }
    out
}

/// Every report from the marts equals the one from `events`, in one zone (each in turn),
/// over all days and over the second and third day.
async fn check(lake: &Lake, step: usize, what: &str) {
    let engine = Engine::open(lake).await.unwrap();
    for tz in [ZONES[step % ZONES.len()]] {
        for range in [
            ReportRange::parse(None, None, Some(tz.name())).unwrap(),
            ReportRange::parse(Some("2019-10-27"), Some("2019-10-28"), Some(tz.name())).unwrap(),
        ] {
            let scope = |source| ReportScope {
                range,
                all_traffic: false,
                source,
            };
            let marts = reports(&engine, &scope(Source::Marts)).await;
            let events = reports(&engine, &scope(Source::Events)).await;
            for ((name, m), (_, e)) in marts.iter().zip(&events) {
                assert!(
                    same(m, e),
                    "{what}: {name} in {} from {:?}: marts {m}\nevents {e}",
                    tz.name(),
                    range.from
                );
            }
        }
    }
}

async fn sequence(seed: u64) -> BTreeSet<&'static str> {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed);
    let mut pool: Vec<Event> = distinct(
        &Generator::new(&Options {
            seed,
            start: START,
            events: Some(6_000),
            days: Some(4),
            ..Options::default()
        })
        .unwrap()
        .collect::<Vec<_>>(),
    );
    pool.sort_by_key(|e| e.event_time);
    // One event in eight is held back, to arrive late.
    let (mut late, mut timely): (Vec<Event>, Vec<Event>) = (Vec::new(), Vec::new());
    for e in pool {
        if rng.below(8) == 0 {
            late.push(e);
        } else {
            timely.push(e);
        }
    }
    let lake = lake(dir.path());
    let mut at = timely.len() * 2 / 5;
    let mut sent: Vec<Event> = timely[..at].to_vec();
    import(&lake, dir.path(), "first", &sent).await;
    shoplake_query::marts::refresh(&lake, &ZONES[1..])
        .await
        .unwrap();
    for zone in 0..ZONES.len() {
        check(&lake, zone, &format!("seed {seed}, first import")).await;
    }
    let mut modes = BTreeSet::new();
    let mut flagged: Vec<i64> = Vec::new();
    for step in 0..10 {
        let op = rng.below(7);
        let what = match op {
            // The next hours, with a few events sent again.
            0 | 1 => {
                let n = 200 + rng.below(600);
                let mut batch: Vec<Event> = timely[at..(at + n).min(timely.len())].to_vec();
                at = (at + n).min(timely.len());
                for _ in 0..20 {
                    batch.push(sent[rng.below(sent.len())].clone());
                }
                import(&lake, dir.path(), &format!("next-{step}"), &batch).await;
                sent.extend(batch);
                "next hours"
            }
            2 => {
                let n = (late.len() / 3).max(1).min(late.len());
                let batch: Vec<Event> = late.drain(..n).collect();
                import(&lake, dir.path(), &format!("late-{step}"), &batch).await;
                sent.extend(batch);
                "late events"
            }
            3 => {
                let flags: Vec<BotFlag> = (0..1 + rng.below(8))
                    .map(|_| {
                        let e = &sent[rng.below(sent.len())];
                        BotFlag {
                            user_id: e.user_id,
                            day: BotFlag::day_of(e.event_time),
                            rule: "user_burst".into(),
                            incident_id: format!("i-{step}-{}", e.user_id),
                            flagged_at: 1,
                        }
                    })
                    .collect();
                flagged.extend(flags.iter().map(|f| f.user_id));
                lake.add_bot_flags(&flags).await.unwrap();
                "flags added"
            }
            4 if !flagged.is_empty() => {
                let user = flagged.swap_remove(rng.below(flagged.len()));
                lake.remove_bot_flags(&[user]).await.unwrap();
                "flags lifted"
            }
            5 => {
                lake.compact(TableName::Events).await.unwrap();
                "compaction"
            }
            _ => {
                lake.compact(TableName::Events).await.unwrap();
                lake.vacuum(TableName::Events, Duration::ZERO)
                    .await
                    .unwrap();
                "compaction and vacuum"
            }
        };
        let done = shoplake_query::marts::refresh(&lake, &[]).await.unwrap();
        assert_eq!(done.len(), ZONES.len());
        eprintln!("seed {seed}, step {step} ({what}): {}", done[0].mode);
        modes.extend(done.iter().map(|d| d.mode));
        check(&lake, step, &format!("seed {seed}, step {step} ({what})")).await;
    }
    modes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_marts_equal_reports_from_events_after_any_sequence() {
    let mut modes = BTreeSet::new();
    for seed in [7, 8] {
        modes.extend(sequence(seed).await);
    }
    // The sequences exercised the incremental path, not only rebuilds.
    assert!(modes.contains("incremental"), "{modes:?}");
}

/// Two refreshes of one lake at once (an import's and the server's) fold a change in once:
/// the lake's lease makes the second wait and then find nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_fold_a_change_in_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut pool: Vec<Event> = distinct(
        &Generator::new(&Options {
            seed: 3,
            start: START,
            events: Some(4_000),
            days: Some(3),
            ..Options::default()
        })
        .unwrap()
        .collect::<Vec<_>>(),
    );
    pool.sort_by_key(|e| e.event_time);
    let lake = lake(dir.path());
    let (first, rest) = pool.split_at(pool.len() * 9 / 10);
    import(&lake, dir.path(), "first", first).await;
    shoplake_query::marts::refresh(&lake, &[]).await.unwrap();
    import(&lake, dir.path(), "rest", rest).await;
    let (a, b) = tokio::join!(
        shoplake_query::marts::refresh(&lake, &[]),
        shoplake_query::marts::refresh(&lake, &[])
    );
    let modes: Vec<&str> = a
        .unwrap()
        .iter()
        .chain(&b.unwrap())
        .map(|s| s.mode)
        .collect();
    assert_eq!(modes, ["incremental", "incremental"]);
    check(&lake, 0, "after two refreshes at once").await;
    // A lease left by a process that died is taken over once it expires.
    let held = lake
        .try_lease("marts-refresh", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    assert!(
        lake.try_lease("marts-refresh", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none()
    );
    // Dropped unreleased: its renewals stop and its file stays, as a dead holder leaves it.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    shoplake_query::marts::refresh(&lake, &[]).await.unwrap();
}

/// What a refresh killed midway leaves (a mart written past the stamp, the stamp not yet
/// moved) is never read: reports compute from `events`, and the next refresh rebuilds.
/// 4,000 distinct generated events over three days.
fn three_days(seed: u64) -> Vec<Event> {
    distinct(
        &Generator::new(&Options {
            seed,
            start: START,
            events: Some(4_000),
            days: Some(3),
            ..Options::default()
        })
        .unwrap()
        .collect::<Vec<_>>(),
    )
}

/// The abandonment report's newest event, over all days in UTC.
async fn newest_event(engine: &Engine, source: Source) -> Option<String> {
    let scope = ReportScope {
        range: ReportRange::parse(None, None, None).unwrap(),
        all_traffic: false,
        source,
    };
    abandonment(engine, &scope, &AbandonmentOptions::default())
        .await
        .unwrap()
        .newest_event
}

/// A verdict over older user-days leaves the newest human event as it was (no scan of
/// `events` for it); one over the newest event's user-day takes it away, and the newest is
/// then the one before it, alone or beside new rows (as in a live stream, where the flagged
/// attackers' events are the newest): in each, the abandonment report's newest event (which
/// decides what is still pending) from the marts equals the one from `events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_over_the_newest_event_moves_the_newest_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut pool = three_days(6);
    pool.sort_by_key(|e| e.event_time);
    let (old, new) = pool.split_at(pool.len() * 9 / 10);
    let lake = lake(dir.path());
    import(&lake, dir.path(), "old", old).await;
    shoplake_query::marts::refresh(&lake, &[]).await.unwrap();
    let flag = |e: &Event| BotFlag {
        user_id: e.user_id,
        day: BotFlag::day_of(e.event_time),
        rule: "user_burst".into(),
        incident_id: format!("i-{}", e.user_id),
        flagged_at: 1,
    };
    // The newest of the old events no verdict covers yet.
    let newest_human = |flagged: &[BotFlag]| {
        old.iter()
            .rev()
            .find(|e| {
                !flagged
                    .iter()
                    .any(|f| f.user_id == e.user_id && f.day == BotFlag::day_of(e.event_time))
            })
            .unwrap()
            .clone()
    };
    let mut flagged: Vec<BotFlag> = Vec::new();
    for (what, with_new) in [
        ("the oldest", false),
        ("the newest", false),
        ("the newest, beside new rows", true),
    ] {
        let e = match what {
            "the oldest" => old[0].clone(),
            _ => newest_human(&flagged),
        };
        if with_new {
            import(&lake, dir.path(), "new", new).await;
        }
        flagged.push(flag(&e));
        lake.add_bot_flags(&flagged[flagged.len() - 1..])
            .await
            .unwrap();
        let done = shoplake_query::marts::refresh(&lake, &[]).await.unwrap();
        assert_eq!(done[0].mode, "incremental", "{what}");
        let engine = Engine::open(&lake).await.unwrap();
        let from_marts = newest_event(&engine, Source::Marts).await;
        let from_events = newest_event(&engine, Source::Events).await;
        assert_eq!(from_marts, from_events, "flagging {what} event's user-day");
        check(&lake, 0, &format!("flagging {what} event's user-day")).await;
    }
}

/// What a refresh killed after appending its change to `mart_brands` leaves: every row
/// again, past the version the stamp names.
async fn append_past_the_stamp(lake: &Lake) {
    let columns = [
        "zone",
        "day",
        "brand",
        "category",
        "events",
        "views",
        "carts",
        "purchases",
        "revenue_cents",
        "view_price_cents",
    ];
    let rows = lake
        .read_table(TableName::MartBrands, &columns)
        .await
        .unwrap();
    lake.ensure(TableName::MartBrands)
        .await
        .unwrap()
        .write(rows)
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_cut_short_is_never_read_and_the_next_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let pool = three_days(4);
    let lake = lake(dir.path());
    import(&lake, dir.path(), "all", &pool).await;
    shoplake_query::marts::refresh(&lake, &[]).await.unwrap();
    // The killed refresh had appended its change to `mart_brands` (here: every row again).
    append_past_the_stamp(&lake).await;
    let engine = Engine::open(&lake).await.unwrap();
    assert!(
        !shoplake_query::marts::fresh(&engine, Tz::UTC)
            .await
            .unwrap(),
        "a mart past its stamp makes the marts stale"
    );
    let done = shoplake_query::marts::refresh(&lake, &[]).await.unwrap();
    assert_eq!(done[0].mode, "rebuild");
    check(&lake, 0, "after a refresh cut short").await;
}

/// While the marts are behind `events` (new rows in, the refresh not done, even one cut short
/// past its stamp), a report that may lag answers from the snapshot they reflect: exact for
/// that `events` version, which it names; one that may not reads the latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_while_the_marts_catch_up_is_exact_for_the_version_they_reflect() {
    use shoplake_query::reports::{ReportParams, ReportRequest};
    let dir = tempfile::tempdir().unwrap();
    let pool = three_days(5);
    let (old, new) = pool.split_at(pool.len() * 2 / 3);
    let lake = lake(dir.path());
    import(&lake, dir.path(), "old", old).await;
    shoplake_query::marts::refresh(&lake, &[]).await.unwrap();
    let reflected = lake
        .latest_version(TableName::Events)
        .await
        .unwrap()
        .unwrap();
    import(&lake, dir.path(), "new", new).await;
    // A refresh cut short has appended to `mart_brands` past the stamp.
    append_past_the_stamp(&lake).await;
    let latest = Engine::open(&lake).await.unwrap();
    let latest_version = latest.events_version().unwrap();
    assert!(latest_version > reflected);
    let then = latest
        .at_versions([(TableName::Events, reflected)].into())
        .await
        .unwrap();
    let mut differs = false;
    for (kind, tz) in [
        ("visitors", "UTC"),
        ("brands", "UTC"),
        ("abandonment", "UTC"),
        ("categories", "UTC"),
        ("visitors", "Asia/Kolkata"),
    ] {
        let params = ReportParams {
            tz: Some(tz.to_owned()),
            min_views: Some(5),
            ..ReportParams::default()
        };
        let request = ReportRequest::parse(kind, &params).unwrap();
        let exact = |engine| {
            let mut r = request.clone();
            r.scope.source = Source::Events;
            async move { serde_json::to_value(r.run(engine).await.unwrap()).unwrap() }
        };
        let (answer, as_of) = request
            .run_recent(&latest, Duration::from_secs(600))
            .await
            .unwrap();
        if tz == "UTC" {
            // UTC's marts exist (behind); Kolkata's never did, so it reads the latest.
            assert_eq!(as_of.events_version, Some(reflected), "{kind}");
            assert!(as_of.lag.is_some(), "{kind}");
            let answer = serde_json::to_value(answer).unwrap();
            assert!(same(&answer, &exact(&then).await), "{kind}: {answer}");
            differs |= !same(&answer, &exact(&latest).await);
        } else {
            assert_eq!(as_of.events_version, Some(latest_version));
            assert_eq!(as_of.lag, None);
        }
        // No lag allowed: the latest, exactly.
        let (answer, as_of) = request.run_recent(&latest, Duration::ZERO).await.unwrap();
        assert_eq!(
            as_of,
            shoplake_query::reports::AsOf {
                events_version: Some(latest_version),
                lag: None
            }
        );
        let answer = serde_json::to_value(answer).unwrap();
        assert!(
            same(&answer, &exact(&latest).await),
            "{kind} latest: {answer}"
        );
    }
    assert!(differs, "the rows the marts lack change some report");
    // Caught up: the latest again.
    shoplake_query::marts::refresh(&lake, &[]).await.unwrap();
    let latest = Engine::open(&lake).await.unwrap();
    let request = ReportRequest::parse("visitors", &ReportParams::default()).unwrap();
    let (_, as_of) = request
        .run_recent(&latest, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(as_of.events_version, latest.events_version());
    assert_eq!(as_of.lag, None);
}
