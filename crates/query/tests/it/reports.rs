//! Every report against an independent, straightforward computation of its definition over
//! the rows in memory (DESIGN.md section 4), in UTC and in a zone across a daylight-saving
//! change, over all data and over a bounded range.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use chrono::{NaiveDate, TimeZone, Timelike};
use chrono_tz::Tz;
use shoplake_lake::TableName;
use shoplake_query::reports::{
    AbandonmentOptions, BrandClass, BrandsOptions, Bucketing, CategoriesOptions, Level, Metric,
    ReportScope, Source, abandonment, brands, categories, visitors,
};
use shoplake_query::{Engine, ReportRange};

use crate::*;

fn local(tz: Tz, t: i64) -> chrono::NaiveDateTime {
    tz.from_utc_datetime(
        &chrono::DateTime::from_timestamp_micros(t)
            .unwrap()
            .naive_utc(),
    )
    .naive_local()
}

fn day(tz: Tz, t: i64) -> NaiveDate {
    local(tz, t).date()
}

fn in_range(range: &ReportRange, t: i64) -> bool {
    let d = day(range.tz, t);
    range.from.is_none_or(|f| d >= f) && range.to.is_none_or(|to| d <= to)
}

fn category(code: &Option<String>, level: usize) -> String {
    match code {
        Some(c) if !c.is_empty() => {
            if level == 0 {
                c.clone()
            } else {
                c.split('.').take(level).collect::<Vec<_>>().join(".")
            }
        }
        _ => "(unknown)".into(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn ranges() -> Vec<ReportRange> {
    vec![
        ReportRange::default(),
        ReportRange::parse(None, None, Some("Europe/Berlin")).unwrap(),
        ReportRange::parse(
            Some("2019-10-27"),
            Some("2019-10-27"),
            Some("Europe/Berlin"),
        )
        .unwrap(),
        ReportRange::parse(
            Some("2019-10-26"),
            Some("2019-10-27"),
            Some("America/New_York"),
        )
        .unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_match_the_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let events = distinct(&dataset());
    let lake = lake_with(dir.path(), &events).await;
    let engine = Engine::open(&lake).await.unwrap();
    for range in ranges() {
        let scope = ReportScope {
            range,
            all_traffic: false,
            source: Source::Events,
        };
        check_visitors(&engine, &scope, &events).await;
        check_abandonment(&engine, &scope, &events).await;
        for (by, level, metric) in [
            (Bucketing::Hour, Level::One, Metric::Views),
            (Bucketing::Weekday, Level::Full, Metric::Revenue),
            (Bucketing::Hour, Level::Two, Metric::Visitors),
        ] {
            let options = CategoriesOptions {
                by,
                level,
                top: 4,
                metric,
            };
            check_categories(&engine, &scope, &options, &events).await;
        }
        check_brands(&engine, &scope, &events).await;
    }

    // The same reports from the marts, for every zone they hold.
    let zones: Vec<Tz> = ranges().iter().map(|r| r.tz).collect();
    let done = shoplake_query::marts::refresh(&lake, &zones).await.unwrap();
    assert_eq!(done.len(), 3, "UTC, Europe/Berlin, America/New_York");
    let engine = Engine::open(&lake).await.unwrap();
    for range in ranges() {
        let scope = ReportScope {
            range,
            all_traffic: false,
            source: Source::Marts,
        };
        check_visitors(&engine, &scope, &events).await;
        check_abandonment(&engine, &scope, &events).await;
        for (by, level, metric) in [
            (Bucketing::Hour, Level::One, Metric::Visitors),
            (Bucketing::Weekday, Level::Full, Metric::Revenue),
            (Bucketing::Weekday, Level::Two, Metric::Views),
            (Bucketing::Weekday, Level::Three, Metric::Visitors),
            (Bucketing::Hour, Level::Full, Metric::Visitors),
        ] {
            let options = CategoriesOptions {
                by,
                level,
                top: 4,
                metric,
            };
            check_categories(&engine, &scope, &options, &events).await;
        }
        check_brands(&engine, &scope, &events).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marts_follow_imports_and_stale_marts_are_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let all = distinct(&dataset());
    let (first, second) = all.split_at(all.len() / 2);
    let lake = lake_with(dir.path(), first).await;
    shoplake_query::marts::refresh(&lake, &[]).await.unwrap();
    let engine = Engine::open(&lake).await.unwrap();
    let marts = ReportScope {
        source: Source::Marts,
        ..ReportScope::default()
    };
    check_visitors(&engine, &marts, first).await;

    // More data lands: the marts are stale; Auto computes from events, Marts refuses.
    let csv = dir.path().join("second.csv");
    let mut enc = CsvEncoder::new(std::fs::File::create(&csv).unwrap(), false).unwrap();
    for e in second {
        enc.write(e).unwrap();
    }
    enc.finish().unwrap();
    lake.import(vec![ImportSource::Path(csv)])
        .with_validator(validator())
        .await
        .unwrap();
    let engine = Engine::open(&lake).await.unwrap();
    let err = visitors(&engine, &marts).await.unwrap_err().to_string();
    assert!(err.contains("marts rebuild"), "{err}");
    check_visitors(&engine, &ReportScope::default(), &all).await;

    // Refreshed, they answer for all the data.
    shoplake_query::marts::refresh(&lake, &[]).await.unwrap();
    let engine = Engine::open(&lake).await.unwrap();
    check_visitors(&engine, &marts, &all).await;
    check_abandonment(&engine, &marts, &all).await;

    // Marts stamped with another layout (an older release) are never read, though the
    // `events` version matches; a refresh brings them back.
    let columns = [
        "zone",
        "day",
        "events_version",
        "marts_format",
        "visitors",
        "sessions",
        "events",
        "new_visitors",
        "session_starts",
        "cart_sessions",
        "abandoned_sessions",
        "newest_event",
        "flags_version",
        "marts_versions",
    ];
    let daily = lake
        .read_table(TableName::MartDaily, &columns)
        .await
        .unwrap();
    assert!(!daily.is_empty());
    let older: Vec<RecordBatch> = daily
        .iter()
        .map(|b| {
            let i = b.schema().index_of("marts_format").unwrap();
            let mut columns = b.columns().to_vec();
            columns[i] = Arc::new(Int64Array::from(vec![
                shoplake_query::marts::FORMAT - 1;
                b.num_rows()
            ]));
            RecordBatch::try_new(b.schema(), columns).unwrap()
        })
        .collect();
    lake.ensure(TableName::MartDaily)
        .await
        .unwrap()
        .write(older)
        .with_save_mode(deltalake::protocol::SaveMode::Overwrite)
        .await
        .unwrap();
    let engine = Engine::open(&lake).await.unwrap();
    let err = visitors(&engine, &marts).await.unwrap_err().to_string();
    assert!(err.contains("marts rebuild"), "{err}");
    shoplake_query::marts::refresh(&lake, &[]).await.unwrap();
    let engine = Engine::open(&lake).await.unwrap();
    check_visitors(&engine, &marts, &all).await;
}

async fn check_visitors(engine: &Engine, scope: &ReportScope, events: &[Event]) {
    let tz = scope.range.tz;
    let mut first: HashMap<i64, i64> = HashMap::new();
    for e in events {
        let f = first.entry(e.user_id).or_insert(e.event_time);
        *f = (*f).min(e.event_time);
    }
    let mut days: BTreeMap<NaiveDate, (HashSet<i64>, HashSet<&str>, u64)> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| in_range(&scope.range, e.event_time))
    {
        let d = days.entry(day(tz, e.event_time)).or_default();
        d.0.insert(e.user_id);
        if let Some(s) = &e.user_session {
            d.1.insert(s);
        }
        d.2 += 1;
    }
    let got = visitors(engine, scope).await.unwrap();
    assert_eq!(got.len(), days.len(), "{scope:?}");
    for (row, (d, (users, sessions, n))) in got.iter().zip(&days) {
        let fresh = first.values().filter(|&&t| day(tz, t) == *d).count() as u64;
        assert_eq!(row.day, d.to_string());
        assert_eq!(row.visitors, users.len() as u64, "{d}");
        assert_eq!(row.sessions, sessions.len() as u64, "{d}");
        assert_eq!(row.events, *n, "{d}");
        assert_eq!(row.new_visitors, fresh, "{d}");
    }
}

async fn check_abandonment(engine: &Engine, scope: &ReportScope, events: &[Event]) {
    let tz = scope.range.tz;
    let window = 24 * HOUR;
    // Sessions: all their events; the day of the first one.
    let mut sessions: HashMap<&str, (i64, bool, bool)> = HashMap::new();
    for e in events {
        let Some(s) = &e.user_session else { continue };
        let x = sessions.entry(s).or_insert((e.event_time, false, false));
        x.0 = x.0.min(e.event_time);
        x.1 |= e.event_type == EventType::Cart;
        x.2 |= e.event_type == EventType::Purchase;
    }
    let mut by_day: BTreeMap<NaiveDate, (u64, u64)> = BTreeMap::new();
    for (first, cart, purchase) in sessions.values() {
        if !in_range(&scope.range, *first) {
            continue;
        }
        let d = by_day.entry(day(tz, *first)).or_default();
        d.0 += u64::from(*cart);
        d.1 += u64::from(*cart && !*purchase);
    }
    // Items: the first cart in the range of each (user, product).
    let newest = events.iter().map(|e| e.event_time).max().unwrap();
    let mut items: BTreeMap<(i64, i64), &Event> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.event_type == EventType::Cart && in_range(&scope.range, e.event_time))
    {
        let slot = items.entry((e.user_id, e.product_id)).or_insert(e);
        if (e.event_time, e.price) < (slot.event_time, slot.price) {
            *slot = e;
        }
    }
    let purchases: HashMap<(i64, i64), Vec<i64>> = events
        .iter()
        .filter(|e| e.event_type == EventType::Purchase)
        .fold(HashMap::new(), |mut m, e| {
            m.entry((e.user_id, e.product_id))
                .or_default()
                .push(e.event_time);
            m
        });
    let mut counts: HashMap<&str, (u64, i64)> = HashMap::new();
    let mut abandoned: Vec<(i64, i64, i64, i64)> = Vec::new();
    let mut brands: HashMap<String, u64> = HashMap::new();
    for ((user, product), cart) in &items {
        let t = cart.event_time;
        let recovered = purchases
            .get(&(*user, *product))
            .is_some_and(|ts| ts.iter().any(|&p| p >= t && p <= t + window));
        let status = if recovered {
            "recovered"
        } else if t + window > newest {
            "pending"
        } else {
            "abandoned"
        };
        let c = counts.entry(status).or_default();
        c.0 += 1;
        c.1 += cart.price.cents();
        if status == "abandoned" {
            abandoned.push((t, *user, *product, cart.price.cents()));
            if let Some(b) = &cart.brand {
                *brands.entry(b.clone()).or_default() += 1;
            }
        }
    }
    abandoned.sort();

    let options = AbandonmentOptions {
        window: Duration::from_secs(24 * 3600),
        top: 5,
        retarget_limit: None,
    };
    let got = abandonment(engine, scope, &options).await.unwrap();
    assert_eq!(got.sessions.len(), by_day.len(), "{scope:?}");
    for (row, (d, (carts, left))) in got.sessions.iter().zip(&by_day) {
        assert_eq!(row.day, d.to_string());
        assert_eq!(
            (row.cart_sessions, row.abandoned_sessions),
            (*carts, *left),
            "{d}"
        );
    }
    for s in &got.items {
        let (n, cents) = counts.get(s.status.as_str()).copied().unwrap_or_default();
        assert_eq!(s.items, n, "{} {scope:?}", s.status);
        assert!(
            close(s.value, cents as f64 / 100.0),
            "{} {}",
            s.value,
            cents
        );
    }
    assert_eq!(got.retarget_total, abandoned.len() as u64);
    for (r, (t, user, product, cents)) in got.retarget.iter().zip(&abandoned) {
        assert_eq!((r.user_id, r.product_id), (*user, *product));
        assert_eq!(r.carted_at, shoplake_events::time::format_rfc3339(*t));
        assert!(close(r.price, *cents as f64 / 100.0));
    }
    if let Some(top) = got.top_brands.first() {
        assert_eq!(Some(&top.items), brands.values().max());
    }
    // A cut list is the head of the whole one.
    let cut = abandonment(
        engine,
        scope,
        &AbandonmentOptions {
            retarget_limit: Some(3),
            ..options
        },
    )
    .await
    .unwrap();
    assert_eq!(cut.retarget_total, got.retarget_total);
    assert_eq!(cut.retarget[..], got.retarget[..got.retarget.len().min(3)]);
    // The item carted on two days: abandoned from its first cart, recovered from its second.
    let twice = got.retarget.iter().any(|r| r.product_id == 99_000_006);
    match scope.range.from {
        None => assert!(twice, "{scope:?}"),
        Some(f) if f == NaiveDate::from_ymd_opt(2019, 10, 27).unwrap() => {
            assert!(!twice, "{scope:?}")
        }
        Some(_) => {}
    }
    if scope.range.from.is_none() {
        // The edge cases: the pending cart and the recovered one are there.
        let pending = counts.get("pending").map_or(0, |c| c.0);
        assert!(pending >= 1);
        assert!(!got.retarget.iter().any(|r| r.product_id == 99_000_004));
        assert!(got.retarget.iter().any(|r| r.product_id == 99_000_005));
    }
}

async fn check_categories(
    engine: &Engine,
    scope: &ReportScope,
    options: &CategoriesOptions,
    events: &[Event],
) {
    let tz = scope.range.tz;
    #[derive(Default)]
    struct Cell {
        views: u64,
        carts: u64,
        purchases: u64,
        cents: i64,
        users: HashSet<i64>,
    }
    let mut cells: BTreeMap<(i64, String), Cell> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| in_range(&scope.range, e.event_time))
    {
        let l = local(tz, e.event_time);
        let bucket = match options.by {
            Bucketing::Hour => i64::from(l.hour()),
            Bucketing::Weekday => i64::from(chrono::Datelike::weekday(&l).num_days_from_monday()),
        };
        let c = cells
            .entry((bucket, category(&e.category_code, options.level.depth())))
            .or_default();
        match e.event_type {
            EventType::View => c.views += 1,
            EventType::Cart => c.carts += 1,
            EventType::Purchase => {
                c.purchases += 1;
                c.cents += e.price.cents();
            }
            EventType::RemoveFromCart => {}
        }
        c.users.insert(e.user_id);
    }
    let metric = |c: &Cell| -> i64 {
        match options.metric {
            Metric::Views => c.views as i64,
            Metric::Carts => c.carts as i64,
            Metric::Purchases => c.purchases as i64,
            Metric::Revenue => c.cents,
            Metric::Visitors => c.users.len() as i64,
        }
    };
    let buckets: BTreeSet<i64> = cells.keys().map(|k| k.0).collect();
    let mut expected = Vec::new();
    for b in buckets {
        let mut in_bucket: Vec<(&String, &Cell)> = cells
            .iter()
            .filter(|(k, _)| k.0 == b)
            .map(|(k, c)| (&k.1, c))
            .collect();
        let total: i64 = in_bucket.iter().map(|(_, c)| metric(c)).sum();
        in_bucket.sort_by(|x, y| metric(y.1).cmp(&metric(x.1)).then(x.0.cmp(y.0)));
        for (rank, (name, c)) in in_bucket.into_iter().take(options.top).enumerate() {
            expected.push((
                b,
                (*name).clone(),
                c.views,
                c.carts,
                c.purchases,
                c.cents,
                c.users.len() as u64,
                rank as u32 + 1,
                (total != 0).then(|| metric(c) as f64 / total as f64),
            ));
        }
    }
    let got = categories(engine, scope, options).await.unwrap();
    assert_eq!(got.len(), expected.len(), "{scope:?} {options:?}");
    for (row, e) in got.iter().zip(&expected) {
        let label = match options.by {
            Bucketing::Hour => format!("{:02}", e.0),
            Bucketing::Weekday => shoplake_query::reports::WEEKDAYS[e.0 as usize].to_owned(),
        };
        assert_eq!(row.bucket, label);
        assert_eq!(row.category, e.1, "{label}");
        assert_eq!(
            (row.views, row.carts, row.purchases),
            (e.2, e.3, e.4),
            "{label} {}",
            e.1
        );
        assert!(close(row.revenue, e.5 as f64 / 100.0));
        assert_eq!(row.visitors, e.6);
        assert_eq!(row.rank, e.7);
        match (row.share, e.8) {
            (Some(a), Some(b)) => assert!(close(a, b)),
            (a, b) => assert_eq!(a, b),
        }
    }
    if options.level == Level::One && scope.range.from.is_none() {
        assert!(
            got.iter().any(|r| r.category == "(unknown)"),
            "empty codes are a category"
        );
    }
}

async fn check_brands(engine: &Engine, scope: &ReportScope, events: &[Event]) {
    #[derive(Default)]
    struct B {
        views: u64,
        carts: u64,
        purchases: u64,
        cents: i64,
        view_cents: i64,
        by_category: BTreeMap<String, (u64, u64)>,
    }
    let min_views = 20;
    let mut brands_seen: BTreeMap<String, B> = BTreeMap::new();
    let mut category_views: HashMap<String, u64> = HashMap::new();
    for e in events
        .iter()
        .filter(|e| in_range(&scope.range, e.event_time))
    {
        let Some(brand) = &e.brand else { continue };
        let b = brands_seen.entry(brand.clone()).or_default();
        let cat = category(&e.category_code, 1);
        let bc = b.by_category.entry(cat.clone()).or_default();
        bc.1 += 1;
        match e.event_type {
            EventType::View => {
                b.views += 1;
                b.view_cents += e.price.cents();
                bc.0 += 1;
                *category_views.entry(cat).or_default() += 1;
            }
            EventType::Cart => b.carts += 1,
            EventType::Purchase => {
                b.purchases += 1;
                b.cents += e.price.cents();
            }
            EventType::RemoveFromCart => {}
        }
    }
    struct Row {
        brand: String,
        category: String,
        views: f64,
        conversion: f64,
        share: f64,
        price: f64,
    }
    let mut rows = Vec::new();
    for (name, b) in &brands_seen {
        if b.views < min_views {
            continue;
        }
        // Most views; ties to the first name (BTreeMap order, first wins).
        let mut best: Option<(&String, u64)> = None;
        for (c, (v, _)) in &b.by_category {
            if best.is_none_or(|(_, bv)| *v > bv) {
                best = Some((c, *v));
            }
        }
        let (cat, v) = best.unwrap();
        rows.push(Row {
            brand: name.clone(),
            category: cat.clone(),
            views: b.views as f64,
            conversion: b.purchases as f64 / b.views as f64,
            share: v as f64 / category_views[cat] as f64,
            price: if b.purchases > 0 {
                b.cents as f64 / 100.0 / b.purchases as f64
            } else {
                b.view_cents as f64 / 100.0 / b.views as f64
            },
        });
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let got = brands(engine, scope, &BrandsOptions { min_views })
        .await
        .unwrap();
    assert_eq!(got.len(), rows.len(), "{scope:?}");
    let by_name: HashMap<&str, &shoplake_query::reports::BrandRow> =
        got.iter().map(|r| (r.brand.as_str(), r)).collect();
    for r in &rows {
        let peers: Vec<&Row> = rows.iter().filter(|p| p.category == r.category).collect();
        let mc = med(peers.iter().map(|p| p.conversion).collect());
        let ms = med(peers.iter().map(|p| p.share).collect());
        let mv = med(peers.iter().map(|p| p.views).collect());
        let (class, opportunity) = match (r.conversion >= mc, r.share >= ms) {
            (true, false) => (
                BrandClass::UnderExposed,
                Some((mv - r.views) * r.conversion * r.price),
            ),
            (false, true) => (
                BrandClass::UnderConverting,
                Some(r.views * (mc - r.conversion) * r.price),
            ),
            (true, true) => (BrandClass::Star, None),
            (false, false) => (BrandClass::Weak, None),
        };
        let g = by_name[r.brand.as_str()];
        assert_eq!(g.category, r.category, "{}", r.brand);
        assert!(close(g.conversion, r.conversion));
        assert!(
            close(g.view_share, r.share),
            "{} {} {}",
            r.brand,
            g.view_share,
            r.share
        );
        assert_eq!(g.class, class, "{}", r.brand);
        match (g.opportunity, opportunity) {
            (Some(a), Some(b)) => assert!(close(a, b), "{} {a} {b}", r.brand),
            (a, b) => assert_eq!(a, b, "{}", r.brand),
        }
    }
    // Ranked by opportunity, those without one last.
    let ops: Vec<Option<f64>> = got.iter().map(|r| r.opportunity).collect();
    let first_none = ops.iter().position(Option::is_none).unwrap_or(ops.len());
    assert!(ops[first_none..].iter().all(Option::is_none));
    assert!(
        ops[..first_none]
            .windows(2)
            .all(|w| w[0].unwrap() >= w[1].unwrap())
    );
    if scope.range.from.is_none() {
        let no_sales = by_name["zz-no-sales"];
        assert_eq!((no_sales.views, no_sales.purchases), (150, 0));
        assert_eq!(no_sales.conversion, 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn categories_from_events_fall_back_to_spilling_under_a_small_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let events = distinct(&dataset());
    let lake = lake_with(dir.path(), &events).await;
    let plenty = Engine::open(&lake).await.unwrap();
    let tight = Engine::open_with_memory(&lake, 2 << 20).await.unwrap();
    let scope = ReportScope {
        source: Source::Events,
        ..ReportScope::default()
    };
    let options = CategoriesOptions {
        by: Bucketing::Hour,
        level: Level::Full,
        top: 50,
        metric: Metric::Visitors,
    };
    assert_eq!(
        categories(&tight, &scope, &options).await.unwrap(),
        categories(&plenty, &scope, &options).await.unwrap()
    );
}
