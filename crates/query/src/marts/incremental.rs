//! The incremental refresh: what changed since the marts' stamp (files `events` gained, bot
//! verdicts added or lifted), and applying it to a zone's marts at a cost that follows the
//! change, not the history.
//!
//! Let N be the rows of the files added since the stamped `events` version, F0 the flagged
//! user-days the marts reflect and F1 those flagged now, A = F1 − F0 and R = F0 − F1. The
//! marts gain the human rows N − F1 − R and every row of R's user-days, and lose the rows of
//! A's user-days they counted (all of them now but those in N). The additive marts
//! (`mart_brands`, `mart_categories`) take those signed sums as new rows; the users and
//! sessions touched have their old contribution to `mart_daily`, `mart_category_visitors`
//! and `mart_items` taken away and their new one added, from their state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake::protocol::SaveMode;
use shoplake_lake::{Changes, Lake, TableName, keyed};

use super::contrib::{Daily, ItemRow, States, Sums, scan_sql};
use super::{conform, state};
use crate::columns::Columns;
use crate::engine::Engine;
use crate::error::Result;
use crate::stamp::{FORMAT, STAMPED, parse_versions};

/// More new rows than this share of `events` are folded by a full rebuild instead.
const MAX_NEW_SHARE: f64 = 0.25;

/// More changed verdicts than this are applied by a full rebuild instead.
const MAX_FLAG_CHANGES: usize = 200_000;

/// What `mart_daily` says the marts reflect.
#[derive(Debug, Clone)]
pub(crate) struct Stamp {
    pub events: i64,
    pub flags: i64,
    pub versions: BTreeMap<String, i64>,
    pub newest: Option<i64>,
    /// Each zone's daily rows.
    pub daily: BTreeMap<String, BTreeMap<i32, Daily>>,
}

/// The stamp `mart_daily` holds, `None` when it holds none this release can build on (no
/// rows, another layout, or rows that disagree).
pub(crate) async fn read_stamp(engine: &Engine) -> Result<Option<Stamp>> {
    let daily = engine.context().table_provider("mart_daily").await?;
    if daily.schema().field_with_name("marts_versions").is_err() {
        return Ok(None);
    }
    let out = engine
        .run(
            "SELECT zone, CAST(CAST(day AS INT) AS BIGINT) AS day, events_version,
                    marts_format, flags_version, marts_versions, visitors, sessions, events,
                    new_visitors, session_starts, cart_sessions, abandoned_sessions,
                    newest_event
             FROM mart_daily",
        )
        .await?;
    let mut stamp: Option<Stamp> = None;
    let mut seen: Option<(i64, i64, i64, String, Option<i64>)> = None;
    for b in &out.batches {
        let c = Columns::new(b);
        let (zone, day, version, format, flags, versions) = (
            c.str("zone")?,
            c.i64("day")?,
            c.i64("events_version")?,
            c.i64("marts_format")?,
            c.i64("flags_version")?,
            c.str("marts_versions")?,
        );
        let newest = c.i64("newest_event")?;
        let rows = daily_of(b)?;
        for i in 0..b.num_rows() {
            let key = (
                version[i].unwrap_or(-2),
                format[i].unwrap_or(-2),
                flags[i].unwrap_or(-2),
                versions[i].clone().unwrap_or_default(),
                newest[i],
            );
            if seen.as_ref().is_some_and(|s| *s != key) {
                return Ok(None);
            }
            if seen.is_none() {
                if key.1 != FORMAT {
                    return Ok(None);
                }
                let Some(parsed) = parse_versions(&key.3) else {
                    return Ok(None);
                };
                stamp = Some(Stamp {
                    events: key.0,
                    flags: key.2,
                    versions: parsed,
                    newest: key.4,
                    daily: BTreeMap::new(),
                });
                seen = Some(key);
            }
            let Some(s) = stamp.as_mut() else {
                return Ok(None);
            };
            let row = rows[i];
            s.daily
                .entry(zone[i].clone().unwrap_or_default())
                .or_default()
                .insert(day[i].unwrap_or_default() as i32, row);
        }
    }
    Ok(stamp)
}

/// The figures of `mart_daily` rows.
fn daily_of(b: &RecordBatch) -> Result<Vec<Daily>> {
    let c = Columns::new(b);
    let v = |n: &str| c.i64(n);
    let (visitors, sessions, events, new_visitors) = (
        v("visitors")?,
        v("sessions")?,
        v("events")?,
        v("new_visitors")?,
    );
    let (starts, carts, abandoned) = (
        v("session_starts")?,
        v("cart_sessions")?,
        v("abandoned_sessions")?,
    );
    Ok((0..b.num_rows())
        .map(|i| Daily {
            visitors: visitors[i].unwrap_or_default(),
            sessions: sessions[i].unwrap_or_default(),
            events: events[i].unwrap_or_default(),
            new_visitors: new_visitors[i].unwrap_or_default(),
            session_starts: starts[i].unwrap_or_default(),
            cart_sessions: carts[i].unwrap_or_default(),
            abandoned_sessions: abandoned[i].unwrap_or_default(),
        })
        .collect())
}

/// The newest human event time once a change is applied, from the stamp's and the rows
/// folded in. Verdicts added take rows away: while those are all older than the stamp's
/// newest, it stays; when one is as new (it may have been the newest; in a live stream the
/// flagged attackers' events are the newest), the newest of `events` (the human relation)
/// from the newest human row folded in on, a day or so of partitions; `None` without such a
/// row (ask all of `events`).
pub(crate) async fn newest(
    engine: &Engine,
    stamp: &Stamp,
    delta: &Delta,
    events: &str,
) -> Result<Option<Option<i64>>> {
    let new = engine
        .scalar_i64(
            "SELECT MAX(CAST(event_time AS BIGINT)) AS newest FROM scratch.signed WHERE p = 1",
            "newest",
        )
        .await?;
    if !delta.added.is_empty() {
        let taken = engine
            .scalar_i64(
                "SELECT MAX(CAST(event_time AS BIGINT)) AS newest FROM scratch.signed
                 WHERE w = -1",
                "newest",
            )
            .await?;
        if taken.is_some() && taken >= stamp.newest {
            let Some(from) = new else {
                return Ok(None);
            };
            let sql = format!(
                "SELECT MAX(CAST(event_time AS BIGINT)) AS newest FROM {events}
                 WHERE event_date >= DATE '{day}' AND CAST(event_time AS BIGINT) >= {from}",
                day = crate::range::utc_date(from)
            );
            return Ok(Some(engine.scalar_i64(&sql, "newest").await?));
        }
    }
    Ok(Some(stamp.newest.max(new)))
}

/// What changed since a stamp.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    /// Rows of the files `events` gained (N).
    pub new_rows: usize,
    /// User-days flagged since (A), and no longer flagged (R).
    pub added: BTreeSet<(i64, i32)>,
    pub removed: BTreeSet<(i64, i32)>,
}

/// What changed since the stamp, with N, A and R registered in the engine as
/// `scratch.new_events`, `scratch.flags_added` and `scratch.flags_removed`; `None` when a full
/// rebuild is due (rows rewritten, marts written since the stamp by a refresh cut short, or
/// more change than an incremental refresh is worth).
pub(crate) async fn delta(lake: &Lake, engine: &Engine, stamp: &Stamp) -> Result<Option<Delta>> {
    let Some(version) = engine.events_version() else {
        return Ok(None);
    };
    for t in STAMPED {
        if lake.latest_version(t).await? != stamp.versions.get(t.as_str()).copied() {
            tracing::info!(table = %t, "a mart changed after its stamp: rebuilding the marts");
            return Ok(None);
        }
    }
    let files = match lake
        .changes(TableName::Events, stamp.events, version)
        .await?
    {
        Changes::Added(files) => files,
        Changes::Rewritten { reason } => {
            tracing::info!(%reason, "events were rewritten: rebuilding the marts");
            return Ok(None);
        }
    };
    let total = engine
        .scalar_i64("SELECT COUNT(*) AS n FROM events", "n")
        .await?
        .unwrap_or(0);
    let added_rows: i64 = files.iter().map(|f| f.rows.unwrap_or(0)).sum();
    if added_rows as f64 > MAX_NEW_SHARE * total as f64 {
        tracing::info!(
            added_rows,
            total,
            "events gained too much to fold in: rebuilding the marts"
        );
        return Ok(None);
    }
    let events_schema = engine.context().table_provider("events").await?.schema();
    let mut new_rows = Vec::new();
    for b in lake.read_added(TableName::Events, &files).await? {
        new_rows.push(conform(&b, &events_schema)?);
    }
    let mut delta = Delta {
        new_rows: new_rows.iter().map(RecordBatch::num_rows).sum(),
        ..Delta::default()
    };
    engine.scratch("new_events", events_schema, new_rows)?;

    if !verdicts(
        lake,
        engine,
        stamp,
        &mut delta,
        total - added_rows,
        added_rows,
    )
    .await?
    {
        return Ok(None);
    }
    // Every zone folds the same rows: computed once.
    let signed = engine.run(&signed_sql(&delta)).await?;
    engine.scratch("signed", signed.schema, signed.batches)?;
    Ok(Some(delta))
}

/// The verdicts added (A) and lifted (R) since the stamp, into `delta` and registered as
/// `scratch.flags_added` and `scratch.flags_removed`; `false` when a rebuild is due instead
/// (the stamped verdicts are gone, or they change too much).
async fn verdicts(
    lake: &Lake,
    engine: &Engine,
    stamp: &Stamp,
    delta: &mut Delta,
    old: i64,
    added_rows: i64,
) -> Result<bool> {
    let before = if stamp.flags >= 0 {
        match lake
            .read_table_at(TableName::BotFlags, stamp.flags, &["user_id", "day"])
            .await
        {
            Ok(batches) => flag_set(batches)?,
            Err(e) => {
                tracing::info!(error = %e, "the verdicts the marts reflect are gone: rebuilding");
                return Ok(false);
            }
        }
    } else {
        BTreeSet::new()
    };
    let now = flag_set(
        engine
            .run("SELECT user_id, day FROM bot_flags")
            .await?
            .batches,
    )?;
    delta.added = now.difference(&before).copied().collect();
    delta.removed = before.difference(&now).copied().collect();
    if delta.added.len() + delta.removed.len() > MAX_FLAG_CHANGES {
        tracing::info!("too many verdicts changed to fold in: rebuilding the marts");
        return Ok(false);
    }
    engine.scratch(
        "flags_added",
        flags_schema(),
        vec![flags_batch(&delta.added)?],
    )?;
    engine.scratch(
        "flags_removed",
        flags_schema(),
        vec![flags_batch(&delta.removed)?],
    )?;
    // The verdicts' user-days hold rows enough to fold in?
    if !(delta.added.is_empty() && delta.removed.is_empty()) {
        let both: BTreeSet<(i64, i32)> = delta.added.union(&delta.removed).copied().collect();
        engine.scratch("flags_changed", flags_schema(), vec![flags_batch(&both)?])?;
        let rows = engine
            .scalar_i64(
                &format!(
                    "SELECT COUNT(*) AS n FROM events e JOIN scratch.flags_changed c
                       ON e.user_id = c.user_id AND e.event_date = c.day WHERE {}",
                    dates_in(&both)
                ),
                "n",
            )
            .await?
            .unwrap_or(0);
        if (rows + added_rows) as f64 > MAX_NEW_SHARE * (old + added_rows) as f64 {
            tracing::info!(
                rows,
                "the verdicts changed too many rows: rebuilding the marts"
            );
            return Ok(false);
        }
    }
    Ok(true)
}

fn flags_schema() -> arrow::datatypes::SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("day", DataType::Date32, false),
    ]))
}

fn flags_batch(set: &BTreeSet<(i64, i32)>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        flags_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(set.iter().map(|(u, _)| *u))),
            Arc::new(Date32Array::from_iter_values(set.iter().map(|(_, d)| *d))),
        ],
    )?)
}

/// The (user, UTC day) pairs of `bot_flags` rows.
fn flag_set(batches: Vec<RecordBatch>) -> Result<BTreeSet<(i64, i32)>> {
    let mut out = BTreeSet::new();
    for b in &batches {
        let user = arrow::compute::cast(&b.columns()[0], &DataType::Int64)?;
        let day = arrow::compute::cast(&b.columns()[1], &DataType::Int32)?;
        let user = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(&user);
        let day = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int32Type>(&day);
        for (u, d) in user.iter().zip(day.iter()) {
            if let (Some(u), Some(d)) = (u, d) {
                out.insert((u, d));
            }
        }
    }
    Ok(out)
}

/// `event_date IN (…)` for the UTC days of some user-days (`FALSE` for none).
fn dates_in(pairs: &BTreeSet<(i64, i32)>) -> String {
    let days: BTreeSet<i32> = pairs.iter().map(|(_, d)| *d).collect();
    if days.is_empty() {
        return "FALSE".to_owned();
    }
    let list: Vec<String> = days.iter().map(|d| format!("CAST({d} AS DATE)")).collect();
    format!("e.event_date IN ({})", list.join(", "))
}

/// The rows to fold in, each with `w = 1` and `p = 1`: N's human rows outside R, and R's
/// rows.
fn plus_sql(delta: &Delta) -> String {
    let mut sql = "SELECT n.*, 1 AS w, 1 AS p FROM scratch.new_events n
         WHERE NOT EXISTS (SELECT 1 FROM bot_flags f
                           WHERE f.user_id = n.user_id AND f.day = n.event_date)
           AND NOT EXISTS (SELECT 1 FROM scratch.flags_removed r
                           WHERE r.user_id = n.user_id AND r.day = n.event_date)"
        .to_owned();
    if !delta.removed.is_empty() {
        sql.push_str(&format!(
            " UNION ALL SELECT e.*, 1 AS w, 1 AS p FROM events e JOIN scratch.flags_removed r
                ON e.user_id = r.user_id AND e.event_date = r.day WHERE {}",
            dates_in(&delta.removed)
        ));
    }
    sql
}

/// Every change to the additive marts, signed by `w`: the rows folded in (`p = 1`), and A's
/// rows the marts counted taken away (`p = 0`: all of A's rows now, less those in N, which
/// they never counted).
fn signed_sql(delta: &Delta) -> String {
    let mut sql = plus_sql(delta);
    if !delta.added.is_empty() {
        sql.push_str(&format!(
            " UNION ALL SELECT e.*, -1 AS w, 0 AS p FROM events e JOIN scratch.flags_added a
                ON e.user_id = a.user_id AND e.event_date = a.day WHERE {}
              UNION ALL SELECT n.*, 1 AS w, 0 AS p FROM scratch.new_events n
                JOIN scratch.flags_added a
                ON n.user_id = a.user_id AND n.event_date = a.day",
            dates_in(&delta.added)
        ));
    }
    sql
}

/// What applying a change to one zone wrote.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub daily: BTreeMap<i32, Daily>,
    pub brand_rows: usize,
    pub category_rows: usize,
    pub visitor_rows: usize,
    pub item_rows: usize,
    pub users: usize,
    pub sessions: usize,
}

/// Applies a change to one zone's marts and state; `daily` is the zone's `mart_daily` rows
/// as stamped, and comes back changed.
pub(crate) async fn apply(
    lake: &Lake,
    engine: &Engine,
    zone: &str,
    delta: &Delta,
    mut daily: BTreeMap<i32, Daily>,
) -> Result<Applied> {
    let mut laps = super::Laps::new();
    let (brand_rows, category_rows) = apply_additive(lake, engine, zone).await?;
    laps.lap("additive");
    let (rows, mut states) = touched(lake, engine, zone, delta, &mut laps).await?;
    let (sums, items) = refold(&mut states, delta, &rows)?;
    laps.lap("refold");
    let visitor_rows = append(
        lake,
        TableName::MartCategoryVisitors,
        &[visitors_batch(zone, &sums)?],
    )
    .await?;
    let item_rows = append(lake, TableName::MartItems, &[items_batch(zone, &items)?]).await?;
    laps.lap("visitors_items");
    write_state(lake, zone, &states).await?;
    laps.lap("state_written");
    tracing::debug!(zone, phases = laps.line(), "marts zone applied");
    for (day, d) in &sums.daily {
        daily.entry(*day).or_default().add(d);
    }
    daily.retain(|_, d| *d != Daily::default());
    Ok(Applied {
        daily,
        brand_rows,
        category_rows,
        visitor_rows,
        item_rows,
        users: states.users.len(),
        sessions: states.sessions.len(),
    })
}

/// Appends the signed change's sums to `mart_brands` and `mart_categories`; returns the rows
/// each took.
async fn apply_additive(lake: &Lake, engine: &Engine, zone: &str) -> Result<(usize, usize)> {
    let z = format!("'{zone}'");
    let signed = "scratch.signed AS events";
    let brands = engine
        .run(&format!(
            "SELECT {z} AS zone, local_day(event_time, {z}) AS day, brand,
                    category_level(category_code, 1) AS category, SUM(w) AS events,
                    SUM(CASE WHEN event_type = 'view' THEN w ELSE 0 END) AS views,
                    SUM(CASE WHEN event_type = 'cart' THEN w ELSE 0 END) AS carts,
                    SUM(CASE WHEN event_type = 'purchase' THEN w ELSE 0 END) AS purchases,
                    SUM(CASE WHEN event_type = 'purchase'
                             THEN w * CAST(price * 100 AS BIGINT) ELSE 0 END) AS revenue_cents,
                    SUM(CASE WHEN event_type = 'view'
                             THEN w * CAST(price * 100 AS BIGINT) ELSE 0 END) AS view_price_cents
             FROM {signed} WHERE brand IS NOT NULL GROUP BY 1, 2, 3, 4
             HAVING SUM(w) <> 0 OR SUM(CASE WHEN event_type = 'view' THEN w ELSE 0 END) <> 0"
        ))
        .await?;
    let brand_rows = append(lake, TableName::MartBrands, &brands.batches).await?;
    let levels: Vec<String> = (0..4)
        .map(|level| {
            format!(
                "SELECT {z} AS zone, local_day(event_time, {z}) AS day,
                        CAST(date_part('hour', local_time(event_time, {z})) AS BIGINT) AS hour,
                        CAST({level} AS BIGINT) AS level,
                        category_level(category_level(category_code, 0), {level}) AS category,
                        SUM(CASE WHEN event_type = 'view' THEN w ELSE 0 END) AS views,
                        SUM(CASE WHEN event_type = 'cart' THEN w ELSE 0 END) AS carts,
                        SUM(CASE WHEN event_type = 'purchase' THEN w ELSE 0 END) AS purchases,
                        SUM(CASE WHEN event_type = 'purchase'
                                 THEN w * COALESCE(CAST(price * 100 AS BIGINT), 0)
                                 ELSE 0 END) AS revenue_cents,
                        SUM(w) AS events
                 FROM {signed} GROUP BY 1, 2, 3, 4, 5"
            )
        })
        .collect();
    let categories = engine
        .run(&format!(
            "SELECT * FROM ({}) WHERE events <> 0 OR views <> 0 OR carts <> 0
                                   OR purchases <> 0 OR revenue_cents <> 0",
            levels.join(" UNION ALL ")
        ))
        .await?;
    let category_rows = append(lake, TableName::MartCategories, &categories.batches).await?;
    Ok((brand_rows, category_rows))
}

/// The rows to fold into a zone's state, and the state of the users and sessions they and
/// the new verdicts touch (empty for those without any yet).
async fn touched(
    lake: &Lake,
    engine: &Engine,
    zone: &str,
    delta: &Delta,
    laps: &mut super::Laps,
) -> Result<(Vec<RecordBatch>, States)> {
    let plus = "(SELECT * FROM scratch.signed WHERE p = 1) AS events";
    let rows = engine.run(&scan_sql(zone, plus)).await?.batches;
    laps.lap("rows");
    let mut users: BTreeSet<i64> = delta.added.iter().map(|(u, _)| *u).collect();
    let mut sessions: BTreeSet<String> = BTreeSet::new();
    for b in &rows {
        let c = Columns::new(b);
        users.extend(c.i64("user_id")?.into_iter().flatten());
        sessions.extend(c.str("user_session")?.into_iter().flatten());
    }
    if !delta.added.is_empty() {
        let out = engine
            .run(
                "SELECT DISTINCT CAST(user_session AS VARCHAR) AS s FROM scratch.signed
                 WHERE w = -1 AND user_session IS NOT NULL",
            )
            .await?;
        for b in &out.batches {
            sessions.extend(Columns::new(b).str("s")?.into_iter().flatten());
        }
    }
    let users: Vec<i64> = users.into_iter().collect();
    let sessions: Vec<String> = sessions.into_iter().collect();
    laps.lap("keys");
    let users_state = state::load_users(lake, zone, &users).await?;
    laps.lap("users_loaded");
    let sessions_state = state::load_sessions(lake, zone, &sessions).await?;
    laps.lap("sessions_loaded");
    let mut states = States {
        users: users_state,
        sessions: sessions_state,
    };
    for u in &users {
        states.users.entry(*u).or_default();
    }
    for s in &sessions {
        states.sessions.entry(s.clone()).or_default();
    }
    Ok((rows, states))
}

/// Takes the touched users' and sessions' contributions away, drops their newly flagged
/// days, folds in the rows and adds their contributions back: the change to the summed marts
/// and to `mart_items` (rows by weight).
fn refold(
    states: &mut States,
    delta: &Delta,
    rows: &[RecordBatch],
) -> Result<(Sums, BTreeMap<ItemKey, i64>)> {
    let mut sums = Sums::default();
    let mut items: BTreeMap<ItemKey, i64> = BTreeMap::new();
    for (u, s) in &states.users {
        s.contribute(-1, &mut sums);
        for row in s.items(*u) {
            *items.entry(item_key(row)).or_default() -= 1;
        }
    }
    for s in states.sessions.values() {
        s.contribute(-1, &mut sums);
    }
    let mut dropped: BTreeMap<i64, BTreeSet<i32>> = BTreeMap::new();
    for (u, d) in &delta.added {
        dropped.entry(*u).or_default().insert(*d);
    }
    for (u, days) in &dropped {
        if let Some(s) = states.users.get_mut(u) {
            s.drop_days(days);
        }
    }
    for s in states.sessions.values_mut() {
        let users: BTreeSet<i64> = s.parts.iter().map(|p| p.user).collect();
        for u in users {
            if let Some(days) = dropped.get(&u) {
                s.drop_days(u, days);
            }
        }
    }
    for b in rows {
        states.add_batch(b)?;
    }
    for (u, s) in &states.users {
        s.contribute(1, &mut sums);
        for row in s.items(*u) {
            *items.entry(item_key(row)).or_default() += 1;
        }
    }
    for s in states.sessions.values() {
        s.contribute(1, &mut sums);
    }
    sums.settle();
    items.retain(|_, w| *w != 0);
    Ok((sums, items))
}

/// Appends one run to each state table with the touched users' and sessions' whole state.
async fn write_state(lake: &Lake, zone: &str, states: &States) -> Result<()> {
    let run = |t: TableName| async move {
        Ok::<i64, crate::Error>(match lake.table(t).await? {
            Some(table) => keyed::runs(&table, zone)?
                .keys()
                .max()
                .copied()
                .unwrap_or(0),
            None => 0,
        })
    };
    let user_run = run(TableName::MartUserState).await? + 1;
    state::write_users(lake, zone, user_run, &states.users).await?;
    let session_run = run(TableName::MartSessionState).await? + 1;
    state::write_sessions(lake, zone, session_run, &states.sessions).await
}

/// A `mart_items` row as a sortable key.
type ItemKey = (
    i32,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<i64>,
);

fn item_key(r: ItemRow) -> ItemKey {
    (
        r.day,
        r.user,
        r.product,
        r.cart.at,
        r.cart.cents,
        r.cart.brand,
        r.cart.category_code,
        r.prev_day,
        r.next_purchase,
    )
}

fn items_batch(zone: &str, items: &BTreeMap<ItemKey, i64>) -> Result<RecordBatch> {
    let n = items.len();
    let keys = || items.keys();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![zone; n])),
        Arc::new(Date32Array::from_iter_values(keys().map(|k| k.0))),
        Arc::new(Int64Array::from_iter_values(keys().map(|k| k.1))),
        Arc::new(Int64Array::from_iter_values(keys().map(|k| k.2))),
        Arc::new(Int64Array::from_iter_values(keys().map(|k| k.3))),
        Arc::new(Int64Array::from_iter_values(keys().map(|k| k.4))),
        Arc::new(StringArray::from_iter(keys().map(|k| k.5.clone()))),
        Arc::new(StringArray::from_iter(keys().map(|k| k.6.clone()))),
        Arc::new(Date32Array::from_iter(keys().map(|k| k.7))),
        Arc::new(Int64Array::from_iter(keys().map(|k| k.8))),
        Arc::new(Int64Array::from_iter_values(items.values().copied())),
    ];
    Ok(RecordBatch::try_new(
        TableName::MartItems.schema(),
        columns,
    )?)
}

pub(crate) fn visitors_batch(zone: &str, sums: &Sums) -> Result<RecordBatch> {
    let rows: Vec<_> = sums.visitors.iter().collect();
    let n = rows.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![zone; n])),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|(k, _)| i64::from(k.level)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(k, _)| k.by.name()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|(k, _)| i64::from(k.bucket)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(k, _)| k.category.as_str()),
        )),
        Arc::new(Date32Array::from_iter_values(
            rows.iter().map(|(k, _)| k.day),
        )),
        Arc::new(Date32Array::from_iter(rows.iter().map(|(k, _)| k.prev_day))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, n)| **n))),
    ];
    Ok(RecordBatch::try_new(
        TableName::MartCategoryVisitors.schema(),
        columns,
    )?)
}

/// Appends rows to a mart in one commit (none: no commit).
async fn append(lake: &Lake, mart: TableName, batches: &[RecordBatch]) -> Result<usize> {
    let schema = mart.schema();
    let batches: Vec<RecordBatch> = batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| conform(b, &schema))
        .collect::<Result<_>>()?;
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    if rows == 0 {
        return Ok(0);
    }
    lake.ensure(mart)
        .await?
        .write(batches)
        .with_save_mode(SaveMode::Append)
        .await?;
    Ok(rows)
}

/// The marts that take appended changes, with what a collapse groups by and sums, and the
/// sum that says a row is live.
const COLLAPSIBLE: [(TableName, &str, &str, &str); 4] = [
    (
        TableName::MartBrands,
        "zone, day, brand, category",
        "SUM(events) AS events, SUM(views) AS views, SUM(carts) AS carts,
         SUM(purchases) AS purchases, SUM(revenue_cents) AS revenue_cents,
         SUM(view_price_cents) AS view_price_cents",
        "SUM(events) <> 0 OR SUM(views) <> 0",
    ),
    (
        TableName::MartCategories,
        "zone, day, hour, level, category",
        "SUM(views) AS views, SUM(carts) AS carts, SUM(purchases) AS purchases,
         SUM(revenue_cents) AS revenue_cents, SUM(events) AS events",
        "SUM(events) <> 0 OR SUM(views) <> 0 OR SUM(carts) <> 0 OR SUM(purchases) <> 0",
    ),
    (
        TableName::MartCategoryVisitors,
        "zone, level, \"by\", bucket, category, day, prev_day",
        "SUM(visitors) AS visitors",
        "SUM(visitors) <> 0",
    ),
    (
        TableName::MartItems,
        "zone, day, user_id, product_id, carted, price_cents, brand, category_code, prev_day,
         next_purchase",
        "SUM(weight) AS weight",
        "SUM(weight) <> 0",
    ),
];

/// Files past which a mart's appended changes are summed into one row per key.
const COLLAPSE_FILES: u64 = 48;

/// Sums each mart's appended changes into one row per key once they spread over more than
/// [`COLLAPSE_FILES`] files (one rewrite of that mart). Returns the marts collapsed. (A full
/// rebuild leaves nothing to collapse in the zones it replaced.)
pub(crate) async fn collapse(lake: &Lake) -> Result<Vec<TableName>> {
    let mut out = Vec::new();
    for (mart, keys, sums, live) in COLLAPSIBLE {
        if lake.latest_version(mart).await?.is_none() {
            continue;
        }
        if lake.table_info(mart).await?.files <= COLLAPSE_FILES {
            continue;
        }
        let engine = Engine::open(lake).await?;
        let rows = engine
            .run(&format!(
                "SELECT {keys}, {sums} FROM {mart} GROUP BY {keys} HAVING {live}"
            ))
            .await?;
        let schema = mart.schema();
        let batches: Vec<RecordBatch> = rows
            .batches
            .iter()
            .map(|b| conform(b, &schema))
            .collect::<Result<_>>()?;
        let batches = if batches.is_empty() {
            vec![RecordBatch::new_empty(schema)]
        } else {
            batches
        };
        lake.ensure(mart)
            .await?
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .await?;
        out.push(mart);
    }
    Ok(out)
}
