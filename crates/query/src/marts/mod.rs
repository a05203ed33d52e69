//! Marts: small aggregate tables in the lake that answer reports without scanning `events`.
//!
//! - `mart_daily`: per report zone and local day, the visitors report (visitors, sessions,
//!   events, new visitors) and the cart sessions of the abandonment report (sessions started,
//!   cart sessions, abandoned sessions), stamped with the `events` version they reflect.
//! - `mart_brands`: per report zone, local day, brand and level-1 category, the sums the
//!   brands report classifies (events, views, carts, purchases, revenue, viewed prices).
//! - `mart_categories`: per report zone, local day, local hour and category at each level,
//!   views, carts, purchases and revenue.
//! - `mart_category_visitors`: per report zone, bucket (hour or weekday), level, category and
//!   local day, the visitors seen there that day by the previous day each was seen in that
//!   bucket and category, so that distinct visitors over any range are a sum.
//! - `mart_items`: per report zone, local day, user and product with a cart that day, the
//!   day's first cart, the previous day with a cart and the next purchase: the abandoned items
//!   of any range of days are a filter over it (the row whose previous cart day lies before
//!   the range), and the status for any window W a comparison.
//!
//! Each is additive over days or per day, so a report over any range of local days in a mart
//! zone equals the report computed from `events` (tested). They are refreshed after every
//! import (`shoplake import` does it) and rebuilt by `shoplake marts rebuild`; a report uses
//! them only when their stamp equals the current `events` and `bot_flags` versions and this
//! release's layout, and computes from `events`
//! otherwise, so stale marts can make a report slower, never wrong. New visitors and session
//! starts depend on all earlier data, so a refresh recomputes each zone whole (one pass of a
//! few group-bys over `events`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, AsArray, Date32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int32Type, Int64Type, SchemaRef};
use chrono_tz::Tz;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::SaveMode;
use futures::StreamExt;
use serde::Serialize;
use shoplake_lake::{Lake, TableName};

mod contrib;
mod incremental;
mod state;

use contrib::Daily;

use crate::columns::Columns;
use crate::engine::{Engine, QueryOutput};
use crate::error::{Error, Result};
use crate::folds::{Cart, CartOrPurchase, each_cart_or_purchase, keep_first};
use crate::relations::{DAILY_CTES, HUMAN_EVENTS};
pub use crate::stamp::{FORMAT, fresh, zones};
use crate::udf::category_at;

/// What a refresh did, per zone.
#[derive(Debug, Clone, Serialize)]
pub struct MartsSummary {
    /// The zone.
    pub zone: String,
    /// The `events` version the marts now reflect.
    pub events_version: i64,
    /// `incremental` (only what changed was folded in) or `rebuild` (recomputed whole).
    pub mode: &'static str,
    /// Rows written to `mart_daily`.
    pub daily_rows: usize,
    /// Rows written to `mart_brands`.
    pub brand_rows: usize,
    /// Rows written to `mart_categories`.
    pub category_rows: usize,
    /// Rows written to `mart_category_visitors`.
    pub visitor_rows: usize,
    /// Rows written to `mart_items`.
    pub item_rows: usize,
    /// Seconds taken.
    pub seconds: f64,
}

/// Brings the marts of each zone up to date with `events` and `bot_flags` (at the versions
/// the engine sees): only what changed since their stamp is folded in, and a zone they do
/// not hold yet (or marts that cannot be brought forward: rows rewritten, a refresh cut
/// short) is recomputed whole. Nothing to do without an `events` table.
pub async fn refresh(lake: &Lake, extra_zones: &[Tz]) -> Result<Vec<MartsSummary>> {
    refresh_in(lake, None, extra_zones, false).await
}

/// Recomputes every zone's marts whole from `events`.
pub async fn rebuild(lake: &Lake, extra_zones: &[Tz]) -> Result<Vec<MartsSummary>> {
    refresh_in(lake, None, extra_zones, true).await
}

/// [`refresh`] drawing on resources shared with other engines (a server's one memory pool
/// and spill budget, so that a refresh and the queries beside it stay within one bound).
pub async fn refresh_shared(
    lake: &Lake,
    extra_zones: &[Tz],
    resources: &crate::EngineResources,
) -> Result<Vec<MartsSummary>> {
    refresh_in(lake, Some(resources), extra_zones, false).await
}

/// How long a refresh may hold the lake's marts lease before another process takes it over.
const LEASE: Duration = Duration::from_secs(15 * 60);

/// One refresh at a time per lake, across processes (two folding the same change in would
/// count it twice): waits for the lease, then refreshes.
async fn refresh_in(
    lake: &Lake,
    resources: Option<&crate::EngineResources>,
    extra_zones: &[Tz],
    whole: bool,
) -> Result<Vec<MartsSummary>> {
    let deadline = Instant::now() + LEASE;
    let lease = loop {
        if let Some(lease) = lake.try_lease("marts-refresh", LEASE).await? {
            break lease;
        }
        if Instant::now() > deadline {
            return Err(Error::Argument(
                "another process has been refreshing the marts for 15 minutes".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The lake as it is under the lease (a refresh that just ended has written its stamp).
    let result = match resources {
        Some(r) => Engine::open_shared(lake, r).await,
        None => Engine::open(lake).await,
    };
    let result = match result {
        Ok(engine) => refresh_leased(lake, &engine, extra_zones, whole).await,
        Err(e) => Err(e),
    };
    lease.release().await?;
    result
}

async fn refresh_leased(
    lake: &Lake,
    engine: &Engine,
    extra_zones: &[Tz],
    whole: bool,
) -> Result<Vec<MartsSummary>> {
    let Some(version) = engine.events_version() else {
        return Ok(Vec::new());
    };
    let flags = engine.bot_flags_version();
    // Humans only, as the dashboard and the reports show by default: every mart leaves out
    // the user-days `bot_flags` flags (all-traffic reports read `events` while flags exist).
    let events = if engine.has_bot_flags().await? {
        HUMAN_EVENTS
    } else {
        "events"
    };
    let zones = zones(engine, extra_zones).await?;
    reset_outdated(lake).await?;
    let stamp = match whole {
        true => None,
        false => incremental::read_stamp(engine).await?,
    };
    let delta = match &stamp {
        Some(s) => incremental::delta(lake, engine, s).await?,
        None => None,
    };
    let mut out = Vec::new();
    let mut daily: BTreeMap<String, BTreeMap<i32, Daily>> = BTreeMap::new();
    let mut all_incremental = delta.is_some();
    for tz in zones {
        let started = Instant::now();
        let zone = tz.name();
        let old = stamp.as_ref().and_then(|s| s.daily.get(zone));
        let summary = match (&delta, old) {
            (Some(d), Some(old)) if !runs_overgrown(lake, zone).await? => {
                let (summary, rows) = refresh_zone(lake, engine, zone, version, d, old).await?;
                daily.insert(zone.to_owned(), rows);
                summary
            }
            _ => {
                all_incremental = false;
                let (summary, rows) = rebuild_zone(lake, engine, zone, version, events).await?;
                daily.insert(zone.to_owned(), rows);
                summary
            }
        };
        out.push(MartsSummary {
            seconds: started.elapsed().as_secs_f64(),
            ..summary
        });
    }
    let newest = match (&stamp, &delta) {
        (Some(s), Some(d)) if all_incremental => incremental::newest(engine, s, d).await?,
        _ => None,
    };
    let newest = match newest {
        Some(n) => n,
        None => {
            let sql = format!("SELECT MAX(CAST(event_time AS BIGINT)) AS newest FROM {events}");
            engine.scalar_i64(&sql, "newest").await?
        }
    };
    incremental::collapse(lake, whole).await?;
    write_stamp(lake, version, flags, newest, &daily).await?;
    Ok(out)
}

/// Writes `mart_daily` last, in one commit for every zone, stamped: a refresh cut short
/// leaves the marts at versions the old stamp does not name, so reports read `events` and
/// the next refresh rebuilds.
async fn write_stamp(
    lake: &Lake,
    version: i64,
    flags: Option<i64>,
    newest: Option<i64>,
    daily: &BTreeMap<String, BTreeMap<i32, Daily>>,
) -> Result<()> {
    let mut versions = BTreeMap::new();
    for t in crate::stamp::STAMPED {
        if let Some(v) = lake.latest_version(t).await? {
            versions.insert(t.as_str().to_owned(), v);
        }
    }
    let stamp = Stamped {
        version,
        flags,
        newest,
        versions: crate::stamp::versions_json(&versions),
    };
    let batches = daily
        .iter()
        .map(|(zone, rows)| daily_batch(zone, &stamp, rows))
        .collect::<Result<Vec<_>>>()?;
    let batches = if batches.is_empty() {
        vec![RecordBatch::new_empty(TableName::MartDaily.schema())]
    } else {
        batches
    };
    lake.ensure(TableName::MartDaily)
        .await?
        .write(batches)
        .with_save_mode(SaveMode::Overwrite)
        .await?;
    Ok(())
}

/// Folds a change into one zone's marts; returns its `mart_daily` rows, for the stamped write.
async fn refresh_zone(
    lake: &Lake,
    engine: &Engine,
    zone: &str,
    version: i64,
    d: &incremental::Delta,
    old: &BTreeMap<i32, Daily>,
) -> Result<(MartsSummary, BTreeMap<i32, Daily>)> {
    let started = Instant::now();
    let applied = incremental::apply(lake, engine, zone, d, old.clone()).await?;
    tracing::debug!(
        zone,
        new_rows = d.new_rows,
        flagged = d.added.len(),
        unflagged = d.removed.len(),
        users = applied.users,
        sessions = applied.sessions,
        seconds = started.elapsed().as_secs_f64(),
        "marts refreshed for a zone"
    );
    let summary = MartsSummary {
        zone: zone.to_owned(),
        events_version: version,
        mode: "incremental",
        daily_rows: applied.daily.len(),
        brand_rows: applied.brand_rows,
        category_rows: applied.category_rows,
        visitor_rows: applied.visitor_rows,
        item_rows: applied.item_rows,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((summary, applied.daily))
}

/// Whether a zone's state has gathered so many runs since its base that rebuilding it whole
/// is cheaper than merging them (a smaller pile is merged here).
async fn runs_overgrown(lake: &Lake, zone: &str) -> Result<bool> {
    let users = state::tidy_runs(lake, TableName::MartUserState, "user_id", zone).await?;
    let sessions =
        state::tidy_runs(lake, TableName::MartSessionState, "user_session", zone).await?;
    Ok(users || sessions)
}

/// Recomputes one zone's marts and state from `events` (at the version the engine reads)
/// and replaces that zone's rows; returns its `mart_daily` rows, for the stamped write.
async fn rebuild_zone(
    lake: &Lake,
    engine: &Engine,
    zone: &str,
    version: i64,
    events: &str,
) -> Result<(MartsSummary, BTreeMap<i32, Daily>)> {
    let started = Instant::now();
    let z = format!("'{zone}'");
    // Each mart is written as soon as it is computed, so its rows are not held while the
    // next is computed.
    let brands = engine
        .run(&format!(
            "SELECT {z} AS zone, local_day(event_time, {z}) AS day, brand,
                    category_level(category_code, 1) AS category, COUNT(*) AS events,
                    COUNT(*) FILTER (WHERE event_type = 'view') AS views,
                    COUNT(*) FILTER (WHERE event_type = 'cart') AS carts,
                    COUNT(*) FILTER (WHERE event_type = 'purchase') AS purchases,
                    SUM(CASE WHEN event_type = 'purchase'
                             THEN CAST(price * 100 AS BIGINT) ELSE 0 END) AS revenue_cents,
                    SUM(CASE WHEN event_type = 'view'
                             THEN CAST(price * 100 AS BIGINT) ELSE 0 END) AS view_price_cents
             FROM {events} WHERE brand IS NOT NULL GROUP BY 1, 2, 3, 4"
        ))
        .await?;
    let brand_rows = replace(lake, TableName::MartBrands, zone, &brands.batches).await?;
    drop(brands);
    let t_brands = started.elapsed();
    let items = items_batch(engine, zone, events).await?;
    let item_rows = replace(lake, TableName::MartItems, zone, &[items]).await?;
    let t_items = started.elapsed();
    let (categories, visitors) = category_cells(engine, zone, events).await?;
    let category_rows = replace(lake, TableName::MartCategories, zone, &categories).await?;
    let visitor_rows = replace(lake, TableName::MartCategoryVisitors, zone, &visitors).await?;
    drop((categories, visitors));
    let t_categories = started.elapsed();
    rebuild_state(lake, engine, zone, events).await?;
    let t_state = started.elapsed();
    let daily = daily_rows(engine, zone, events).await?;
    tracing::debug!(
        zone,
        brands_s = t_brands.as_secs_f64(),
        items_s = (t_items - t_brands).as_secs_f64(),
        categories_s = (t_categories - t_items).as_secs_f64(),
        state_s = (t_state - t_categories).as_secs_f64(),
        daily_s = (started.elapsed() - t_state).as_secs_f64(),
        "marts rebuilt for a zone"
    );
    let summary = MartsSummary {
        zone: zone.to_owned(),
        events_version: version,
        mode: "rebuild",
        daily_rows: daily.len(),
        brand_rows,
        category_rows,
        visitor_rows,
        item_rows,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((summary, daily))
}

/// Writes one zone's users' and sessions' state whole from `events`: the sorted scans under
/// a pool of their own (each sorts the zone's state and spills past it; the files they feed
/// are written as they fill).
async fn rebuild_state(lake: &Lake, engine: &Engine, zone: &str, events: &str) -> Result<()> {
    let state_engine = engine.alike(lake, STATE_MEMORY).await?;
    let scan = contrib::scan_sql(zone, events);
    let user_sql = state::user_state_sql(&scan);
    state::write_whole(
        lake,
        &state_engine,
        TableName::MartUserState,
        "user_id",
        zone,
        &user_sql,
    )
    .await?;
    let session_sql = state::session_state_sql(&scan);
    let sessions = TableName::MartSessionState;
    state::write_whole(
        lake,
        &state_engine,
        sessions,
        "user_session",
        zone,
        &session_sql,
    )
    .await?;
    Ok(())
}

/// The memory pool of a rebuild's state scans (bytes): a month's sort spills, and merging
/// its spill files back needs this much (256 MiB ran out on a week).
const STATE_MEMORY: usize = crate::engine::MEMORY_LIMIT;

/// What `mart_daily` stamps on every row.
struct Stamped {
    version: i64,
    flags: Option<i64>,
    newest: Option<i64>,
    versions: String,
}

/// Sets a query's day-keyed counts (`names`, in order) on the days' rows with `set`; the
/// days are created only when `create` (session and first days are days with events, which
/// the first query made).
fn fill(
    by_day: &mut BTreeMap<i64, Daily>,
    out: &QueryOutput,
    names: &[&str],
    create: bool,
    set: impl Fn(&mut Daily, &[i64]),
) -> Result<()> {
    for b in &out.batches {
        let c = Columns::new(b);
        let day = c.i64("day")?;
        let values = names
            .iter()
            .map(|name| c.i64(name))
            .collect::<Result<Vec<_>>>()?;
        let mut row_values = vec![0; names.len()];
        for (i, d) in day.iter().enumerate() {
            let d = d.unwrap_or_default();
            let row = match by_day.get_mut(&d) {
                Some(row) => row,
                None if create => by_day.entry(d).or_default(),
                None => continue,
            };
            for (slot, v) in row_values.iter_mut().zip(&values) {
                *slot = v[i].unwrap_or_default();
            }
            set(row, &row_values);
        }
    }
    Ok(())
}

/// A zone's `mart_daily` rows. Three queries one after the other, each with the whole memory
/// budget (as one statement, their six group-bys shared it and a month's sorts ran short),
/// joined here by day.
async fn daily_rows(engine: &Engine, zone: &str, events: &str) -> Result<BTreeMap<i32, Daily>> {
    let z = format!("'{zone}'");
    let day = |c: &str| format!("CAST(CAST({c} AS INT) AS BIGINT)");
    let daily = engine
        .run(&format!(
            "WITH e AS (
                SELECT user_id, user_session, local_day(event_time, {z}) AS day
                FROM {events}),
             {DAILY_CTES}
             SELECT {d} AS day, visitors, sessions, events FROM daily",
            d = day("day")
        ))
        .await?;
    let fresh = engine
        .run(&format!(
            "SELECT {d} AS day, COUNT(*) AS new_visitors
             FROM (SELECT local_day(MIN(event_time), {z}) AS first_day
                   FROM {events} GROUP BY user_id)
             GROUP BY 1",
            d = day("first_day")
        ))
        .await?;
    let sessions = engine
        .run(&format!(
            "WITH s AS (
                SELECT MIN(event_time) AS first,
                       MAX(CASE WHEN event_type = 'cart' THEN 1 ELSE 0 END) AS has_cart,
                       MAX(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) AS has_purchase
                FROM {events} WHERE user_session IS NOT NULL GROUP BY user_session)
             SELECT {d} AS day, COUNT(*) AS session_starts, SUM(has_cart) AS cart_sessions,
                    SUM(CASE WHEN has_cart = 1 AND has_purchase = 0 THEN 1 ELSE 0 END)
                        AS abandoned_sessions
             FROM s GROUP BY 1",
            d = day(&format!("local_day(first, {z})"))
        ))
        .await?;
    let mut by_day: BTreeMap<i64, Daily> = BTreeMap::new();
    fill(
        &mut by_day,
        &daily,
        &["visitors", "sessions", "events"],
        true,
        |r, v| {
            (r.visitors, r.sessions, r.events) = (v[0], v[1], v[2]);
        },
    )?;
    fill(&mut by_day, &fresh, &["new_visitors"], false, |r, v| {
        r.new_visitors = v[0];
    })?;
    let names = ["session_starts", "cart_sessions", "abandoned_sessions"];
    fill(&mut by_day, &sessions, &names, false, |r, v| {
        (r.session_starts, r.cart_sessions, r.abandoned_sessions) = (v[0], v[1], v[2]);
    })?;
    Ok(by_day.into_iter().map(|(d, r)| (d as i32, r)).collect())
}

/// `mart_daily`'s rows of a zone, stamped with the versions and layout they reflect.
fn daily_batch(zone: &str, stamp: &Stamped, by_day: &BTreeMap<i32, Daily>) -> Result<RecordBatch> {
    let n = by_day.len();
    let column = |of: fn(&Daily) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from(
            by_day.values().map(of).collect::<Vec<i64>>(),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![zone; n])),
        Arc::new(Date32Array::from(
            by_day.keys().copied().collect::<Vec<i32>>(),
        )),
        Arc::new(Int64Array::from(vec![stamp.version; n])),
        Arc::new(Int64Array::from(vec![FORMAT; n])),
        column(|r| r.visitors),
        column(|r| r.sessions),
        column(|r| r.events),
        column(|r| r.new_visitors),
        column(|r| r.session_starts),
        column(|r| r.cart_sessions),
        column(|r| r.abandoned_sessions),
        Arc::new(Int64Array::from(vec![stamp.newest; n])),
        Arc::new(Int64Array::from(vec![stamp.flags.unwrap_or(-1); n])),
        Arc::new(StringArray::from(vec![stamp.versions.as_str(); n])),
    ];
    Ok(RecordBatch::try_new(
        TableName::MartDaily.schema(),
        columns,
    )?)
}

/// A zone's `mart_items` rows: per local day, user and product with a cart, the day's first
/// cart (ties on time go to the lower price, as in the report from `events`), the previous
/// day with a cart of the pair and the pair's first purchase at or after that cart. Sorted by
/// product, so a report sums runs of one product and mostly one brand and category.
///
/// One scan of the carts and purchases (a few percent of `events`), folded per (user,
/// product) on both cores: as SQL (a first-value group-by, a window for the previous day and a
/// join for the next purchase) it sorted the month's carts under the memory budget and now
/// and then failed to get memory for it.
async fn items_batch(engine: &Engine, zone: &str, events: &str) -> Result<RecordBatch> {
    let sql = format!(
        "SELECT user_id, product_id, event_type, CAST(event_time AS BIGINT) AS t,
                CAST(CAST(local_day(event_time, '{zone}') AS INT) AS BIGINT) AS day,
                CAST(price * 100 AS BIGINT) AS price_cents, brand, category_code
         FROM {events} WHERE event_type IN ('cart', 'purchase')"
    );
    let days = engine
        .fold_merged(&sql, ItemDays::default, |s, b| s.add(&b), ItemDays::merge)
        .await?;
    days.finish(zone)
}

/// `mart_items` being built: per (user, product), the first cart of each local day with a
/// cart, and every purchase.
#[derive(Default)]
struct ItemDays {
    pairs: foldhash::HashMap<(i64, i64), ItemPair>,
}

/// A (user, product)'s first cart of each local day with a cart (days in the order seen),
/// and its purchase times.
#[derive(Default)]
struct ItemPair {
    days: Vec<DayCart>,
    purchases: Vec<i64>,
}

/// The first cart of a local day (days since the epoch).
struct DayCart {
    day: i32,
    first: Option<Cart>,
}

impl ItemPair {
    /// The slot of the first cart on a day.
    fn slot(&mut self, day: i32) -> &mut Option<Cart> {
        let at = match self.days.iter().position(|d| d.day == day) {
            Some(at) => at,
            None => {
                self.days.push(DayCart { day, first: None });
                self.days.len() - 1
            }
        };
        &mut self.days[at].first
    }
}

impl ItemDays {
    fn add(&mut self, b: &RecordBatch) -> Result<()> {
        let day = Columns::new(b).int64_array("day")?;
        each_cart_or_purchase(b, |i, key, row| {
            let pair = self.pairs.entry(key).or_default();
            match row {
                CartOrPurchase::Purchase(t) => pair.purchases.push(t),
                CartOrPurchase::Cart(cart) => keep_first(pair.slot(day.value(i) as i32), cart),
            }
        })
    }

    fn merge(&mut self, other: ItemDays) {
        for (key, theirs) in other.pairs {
            let pair = self.pairs.entry(key).or_default();
            pair.purchases.extend(theirs.purchases);
            for DayCart { day, first } in theirs.days {
                if let Some(cart) = first {
                    keep_first(pair.slot(day), cart.row());
                }
            }
        }
    }

    /// The rows, sorted by product, user and day.
    fn finish(self, zone: &str) -> Result<RecordBatch> {
        let mut pairs: Vec<_> = self
            .pairs
            .into_iter()
            .filter(|(_, pair)| !pair.days.is_empty())
            .collect();
        pairs.sort_unstable_by_key(|((user, product), _)| (*product, *user));
        let n = pairs.iter().map(|(_, pair)| pair.days.len()).sum();
        let mut day = Vec::with_capacity(n);
        let mut user = Vec::with_capacity(n);
        let mut product = Vec::with_capacity(n);
        let mut carted = Vec::with_capacity(n);
        let mut cents = Vec::with_capacity(n);
        let mut brand = Vec::with_capacity(n);
        let mut code = Vec::with_capacity(n);
        let mut prev_day = Vec::with_capacity(n);
        let mut next_purchase = Vec::with_capacity(n);
        for (
            (u, p),
            ItemPair {
                mut days,
                mut purchases,
            },
        ) in pairs
        {
            days.sort_unstable_by_key(|d| d.day);
            purchases.sort_unstable();
            let mut prev = None;
            for DayCart { day: d, first } in days {
                let Some(cart) = first else { continue };
                day.push(d);
                user.push(u);
                product.push(p);
                carted.push(cart.at);
                cents.push(cart.cents);
                brand.push(cart.brand);
                code.push(cart.category_code);
                prev_day.push(prev);
                let next = purchases.partition_point(|&x| x < cart.at);
                next_purchase.push(purchases.get(next).copied());
                prev = Some(d);
            }
        }
        let n = day.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![zone; n])),
            Arc::new(Date32Array::from(day)),
            Arc::new(Int64Array::from(user)),
            Arc::new(Int64Array::from(product)),
            Arc::new(Int64Array::from(carted)),
            Arc::new(Int64Array::from(cents)),
            Arc::new(StringArray::from(brand)),
            Arc::new(StringArray::from(code)),
            Arc::new(Date32Array::from(prev_day)),
            Arc::new(Int64Array::from(next_purchase)),
            Arc::new(Int64Array::from(vec![1i64; n])),
        ];
        Ok(RecordBatch::try_new(
            TableName::MartItems.schema(),
            columns,
        )?)
    }
}

/// A category cell's counts.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    events: i64,
    views: i64,
    carts: i64,
    purchases: i64,
    revenue_cents: i64,
}

impl Counts {
    /// Counts one event of this type (other types count nothing).
    fn count(&mut self, event_type: &str, cents: i64) {
        self.events += 1;
        match event_type {
            "view" => self.views += 1,
            "cart" => self.carts += 1,
            "purchase" => {
                self.purchases += 1;
                self.revenue_cents += cents;
            }
            _ => {}
        }
    }

    fn add(&mut self, other: Counts) {
        self.events += other.events;
        self.views += other.views;
        self.carts += other.carts;
        self.purchases += other.purchases;
        self.revenue_cents += other.revenue_cents;
    }
}

/// The users seen on one local day, as `(hour, code, user)` entries packed in a `u128`
/// ([`entry`]): appended as the scan goes and sorted and deduplicated whenever they double,
/// so a day holds about its distinct entries.
#[derive(Default)]
struct DayUsers {
    entries: Vec<u128>,
    distinct: usize,
}

impl DayUsers {
    fn push(&mut self, e: u128) {
        self.entries.push(e);
        if self.entries.len() >= 2 * self.distinct + (1 << 16) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        self.entries.sort_unstable();
        self.entries.dedup();
        self.distinct = self.entries.len();
    }

    /// The entries of one hour (after [`DayUsers::compact`]).
    fn hour(&self, hour: u32) -> &[u128] {
        let from = self
            .entries
            .partition_point(|e| (e >> 96) < u128::from(hour));
        let to = self
            .entries
            .partition_point(|e| (e >> 96) <= u128::from(hour));
        &self.entries[from..to]
    }
}

/// A user seen in an hour of a day under a full category code (its index).
fn entry(hour: u32, code: u32, user: i64) -> u128 {
    (u128::from(hour) << 96) | (u128::from(code) << 64) | u128::from(user as u64)
}

/// Builds a zone's `mart_categories` rows in one streamed pass over `events`, and its
/// `mart_category_visitors` rows from the distinct users of each day, hour and full category
/// code kept on the way (in Rust, not SQL, so memory stays near the size of those entries;
/// a bitmap per cell and level would hold a cell's few hundred users, spread over millions
/// of ids, in nearly one container each).
async fn category_cells(
    engine: &Engine,
    zone: &str,
    events: &str,
) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    let z = format!("'{zone}'");
    let mut stream = engine
        .stream(&format!(
            "SELECT local_day(event_time, {z}) AS day,
                    CAST(date_part('hour', local_time(event_time, {z})) AS BIGINT) AS hour,
                    category_level(category_code, 0) AS category, event_type,
                    CAST(price * 100 AS BIGINT) AS cents, user_id
             FROM {events}"
        ))
        .await?;
    let mut scan = CategoryScan::default();
    while let Some(batch) = stream.next().await {
        scan.add(&batch?)?;
    }
    scan.finish(zone)
}

/// What [`category_cells`] keeps from its scan.
#[derive(Default)]
struct CategoryScan {
    /// An id for each (level, name).
    names: HashMap<(i64, String), u32>,
    /// An index for each full code seen.
    code_index: HashMap<String, u32>,
    /// A full code's ids at levels 0–3, by its index.
    codes: Vec<[u32; 4]>,
    /// Counts per (day, hour, full code).
    sums: HashMap<(i32, u32, u32), Counts>,
    days: BTreeMap<i32, DayUsers>,
}

impl CategoryScan {
    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let col = |name: &str, to: &DataType| -> Result<ArrayRef> {
            let c = batch
                .column_by_name(name)
                .ok_or_else(|| Error::Argument(format!("mart query lacks column {name}")))?;
            Ok(arrow::compute::cast(c, to)?)
        };
        let day = col("day", &DataType::Int32)?;
        let day = day.as_primitive::<Int32Type>();
        let hour = col("hour", &DataType::Int64)?;
        let hour = hour.as_primitive::<Int64Type>();
        let category = col("category", &DataType::Utf8)?;
        let category = category.as_string::<i32>();
        let kind = col("event_type", &DataType::Utf8)?;
        let kind = kind.as_string::<i32>();
        let cents = col("cents", &DataType::Int64)?;
        let cents = cents.as_primitive::<Int64Type>();
        let user = col("user_id", &DataType::Int64)?;
        let user = user.as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let code = self.code(category.value(i));
            let (d, h) = (day.value(i), hour.value(i).clamp(0, 23) as u32);
            self.sums
                .entry((d, h, code))
                .or_default()
                .count(kind.value(i), cents.value(i));
            self.days
                .entry(d)
                .or_default()
                .push(entry(h, code, user.value(i)));
        }
        Ok(())
    }

    /// The index of a full category code, giving its four levels their ids when new.
    fn code(&mut self, full: &str) -> u32 {
        if let Some(code) = self.code_index.get(full) {
            return *code;
        }
        let mut ids = [0u32; 4];
        for (level, id) in ids.iter_mut().enumerate() {
            let name = category_at(Some(full), level);
            let next = self.names.len() as u32;
            *id = *self
                .names
                .entry((level as i64, name.to_owned()))
                .or_insert(next);
        }
        self.codes.push(ids);
        let code = (self.codes.len() - 1) as u32;
        self.code_index.insert(full.to_owned(), code);
        code
    }

    fn finish(mut self, zone: &str) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
        self.code_index = HashMap::new();
        for users in self.days.values_mut() {
            users.compact();
            users.entries.shrink_to_fit();
        }
        let mut by_id = vec![(0i64, String::new()); self.names.len()];
        for (name, id) in std::mem::take(&mut self.names) {
            by_id[id as usize] = name;
        }
        let sums = self.sums_batch(zone, &by_id)?;
        let visitors = self.visitors_batch(zone, &by_id)?;
        Ok((vec![sums], vec![visitors]))
    }

    /// `mart_categories`: sums per day, hour and category at each level.
    fn sums_batch(&mut self, zone: &str, by_id: &[(i64, String)]) -> Result<RecordBatch> {
        let mut cells: BTreeMap<(i32, u32, u32), Counts> = BTreeMap::new();
        for ((d, h, code), counts) in std::mem::take(&mut self.sums) {
            for id in self.codes[code as usize] {
                cells.entry((d, h, id)).or_default().add(counts);
            }
        }
        let n = cells.len();
        let mut day = Vec::with_capacity(n);
        let mut hour = Vec::with_capacity(n);
        let mut level = Vec::with_capacity(n);
        let mut category = Vec::with_capacity(n);
        let mut views = Vec::with_capacity(n);
        let mut carts = Vec::with_capacity(n);
        let mut purchases = Vec::with_capacity(n);
        let mut revenue = Vec::with_capacity(n);
        let mut events = Vec::with_capacity(n);
        for ((d, h, id), c) in cells {
            let (l, name) = &by_id[id as usize];
            day.push(d);
            hour.push(i64::from(h));
            level.push(*l);
            category.push(name.as_str());
            views.push(c.views);
            carts.push(c.carts);
            purchases.push(c.purchases);
            revenue.push(c.revenue_cents);
            events.push(c.events);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![zone; n])),
            Arc::new(Date32Array::from(day)),
            Arc::new(Int64Array::from(hour)),
            Arc::new(Int64Array::from(level)),
            Arc::new(StringArray::from(category)),
            Arc::new(Int64Array::from(views)),
            Arc::new(Int64Array::from(carts)),
            Arc::new(Int64Array::from(purchases)),
            Arc::new(Int64Array::from(revenue)),
            Arc::new(Int64Array::from(events)),
        ];
        Ok(RecordBatch::try_new(
            TableName::MartCategories.schema(),
            columns,
        )?)
    }

    /// `mart_category_visitors`: per bucket (hour or weekday) and level, each user seen on a
    /// day in a category counts once, under the previous day it was seen in that bucket and
    /// category.
    fn visitors_batch(&self, zone: &str, by_id: &[(i64, String)]) -> Result<RecordBatch> {
        let mut visitors = VisitorRows::default();
        let mut tuples: Vec<u128> = Vec::new();
        for level in 0..4 {
            for h in 0..24 {
                tuples.clear();
                for (d, users) in &self.days {
                    add_tuples(&mut tuples, users.hour(h), &self.codes, level, *d);
                }
                visitors.add("hour", i64::from(h), by_id, &mut tuples);
            }
            for weekday in 0..7 {
                tuples.clear();
                // Day 0 (1970-01-01) was a Thursday: Monday is 0.
                for (d, users) in self
                    .days
                    .iter()
                    .filter(|(d, _)| (*d + 3).rem_euclid(7) == weekday)
                {
                    add_tuples(&mut tuples, &users.entries, &self.codes, level, *d);
                }
                visitors.add("weekday", i64::from(weekday), by_id, &mut tuples);
            }
        }
        visitors.finish(zone)
    }
}

/// Appends `(category id at level, user, day)` tuples for a day's entries, packed to sort by
/// category, then user, then day.
fn add_tuples(
    tuples: &mut Vec<u128>,
    entries: &[u128],
    codes: &[[u32; 4]],
    level: usize,
    day: i32,
) {
    // The sign bit flipped, so days before 1970 sort first.
    let day = u128::from((day as u32) ^ (1 << 31));
    for e in entries {
        let code = ((e >> 64) as u32) as usize;
        let user = u128::from(*e as u64);
        tuples.push((u128::from(codes[code][level]) << 96) | (user << 32) | day);
    }
}

/// `mart_category_visitors` rows being built.
#[derive(Default)]
struct VisitorRows {
    level: Vec<i64>,
    by: Vec<&'static str>,
    bucket: Vec<i64>,
    category: Vec<String>,
    day: Vec<i32>,
    prev_day: Vec<Option<i32>>,
    visitors: Vec<i64>,
}

impl VisitorRows {
    /// Adds one bucket and level from its `(category id, user, day)` tuples ([`add_tuples`]):
    /// per category and day, the users by the previous day each was seen.
    fn add(&mut self, by: &'static str, bucket: i64, by_id: &[(i64, String)], tuples: &mut [u128]) {
        tuples.sort_unstable();
        let day_of = |t: u128| ((t as u32) ^ (1 << 31)) as i32;
        let mut counts: BTreeMap<(u32, i32, Option<i32>), i64> = BTreeMap::new();
        let mut last: Option<u128> = None;
        for &t in tuples.iter() {
            if last == Some(t) {
                continue;
            }
            let prev = last.filter(|l| l >> 32 == t >> 32).map(day_of);
            *counts
                .entry(((t >> 96) as u32, day_of(t), prev))
                .or_default() += 1;
            last = Some(t);
        }
        for ((id, day, prev), n) in counts {
            let (level, name) = &by_id[id as usize];
            self.level.push(*level);
            self.by.push(by);
            self.bucket.push(bucket);
            self.category.push(name.clone());
            self.day.push(day);
            self.prev_day.push(prev);
            self.visitors.push(n);
        }
    }

    fn finish(self, zone: &str) -> Result<RecordBatch> {
        let n = self.day.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![zone; n])),
            Arc::new(Int64Array::from(self.level)),
            Arc::new(StringArray::from(self.by)),
            Arc::new(Int64Array::from(self.bucket)),
            Arc::new(StringArray::from(self.category)),
            Arc::new(Date32Array::from(self.day)),
            Arc::new(Date32Array::from(self.prev_day)),
            Arc::new(Int64Array::from(self.visitors)),
        ];
        Ok(RecordBatch::try_new(
            TableName::MartCategoryVisitors.schema(),
            columns,
        )?)
    }
}

/// Casts a result to a mart's schema, column by column.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let c = batch
                .column_by_name(f.name())
                .ok_or_else(|| Error::Argument(format!("mart query lacks column {}", f.name())))?;
            Ok(arrow::compute::cast(c, f.data_type())?)
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Replaces one zone's rows of a mart in one commit (`replace_where zone = …`).
async fn replace(
    lake: &Lake,
    mart: TableName,
    zone: &str,
    batches: &[RecordBatch],
) -> Result<usize> {
    let table = lake.ensure(mart).await?;
    let schema = mart.schema();
    let batches: Vec<RecordBatch> = batches
        .iter()
        .map(|b| conform(b, &schema))
        .collect::<Result<_>>()?;
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    // Row groups of 64 Ki rows: a report scans a mart on both cores.
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(1 << 16))
        .build();
    table
        .write(batches)
        .with_writer_properties(properties)
        .with_save_mode(SaveMode::Overwrite)
        .with_replace_where(format!("zone = '{zone}'"))
        .await?;
    Ok(rows)
}

/// The marts and their state, stamped table first.
const MARTS: [TableName; 7] = [
    TableName::MartDaily,
    TableName::MartBrands,
    TableName::MartCategories,
    TableName::MartCategoryVisitors,
    TableName::MartItems,
    TableName::MartUserState,
    TableName::MartSessionState,
];

/// Marts are derived data: when a mart was written by an older release with other columns,
/// every mart is emptied under the current schemas (`mart_daily` first, so no stamp survives
/// to vouch for the others) before the refresh recomputes them.
async fn reset_outdated(lake: &Lake) -> Result<()> {
    let mut outdated = false;
    for mart in MARTS {
        if let Some(t) = lake.table(mart).await? {
            let have: Vec<String> = t
                .snapshot()?
                .schema()
                .fields()
                .map(|f| f.name().to_owned())
                .collect();
            let want: Vec<String> = mart
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().to_owned())
                .collect();
            let parts = t.snapshot()?.metadata().partition_columns().to_vec();
            outdated |= have != want || parts != mart.partition_columns();
        }
    }
    if !outdated {
        return Ok(());
    }
    tracing::info!("the marts were written with other columns: rebuilding them from scratch");
    for mart in MARTS {
        if let Some(t) = lake.table(mart).await? {
            t.write(vec![RecordBatch::new_empty(mart.schema())])
                .with_save_mode(SaveMode::Overwrite)
                .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
                .with_partition_columns(mart.partition_columns())
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_day_keeps_its_distinct_entries_through_compactions() {
        let mut day = DayUsers::default();
        let mut want = BTreeSet::new();
        // Far more than one compaction's worth, each entry several times, out of order.
        for i in 0..400_000u64 {
            let (hour, code, user) = ((i % 24) as u32, (i % 7) as u32, (i * 7919 % 50_000) as i64);
            day.push(entry(hour, code, user));
            want.insert(entry(hour, code, user));
        }
        assert!(day.distinct > 0, "compacted on the way");
        day.compact();
        assert_eq!(day.entries, want.iter().copied().collect::<Vec<_>>());
        let hour5: Vec<u128> = want.iter().copied().filter(|e| e >> 96 == 5).collect();
        assert_eq!(day.hour(5), hour5.as_slice());
        assert!(day.hour(24).is_empty());
    }

    #[test]
    fn visitors_count_once_under_their_previous_day() {
        let by_id = vec![(0, "a".to_owned()), (0, "b".to_owned())];
        let codes = [[0, 0, 0, 0], [1, 1, 1, 1]];
        let mut tuples = Vec::new();
        // User 1 in a on days 10, 12 (twice on 12); user 2 in a on day 12; user 1 in b on
        // day 12; one day before 1970.
        add_tuples(&mut tuples, &[entry(3, 0, 1)], &codes, 0, 10);
        add_tuples(
            &mut tuples,
            &[entry(3, 0, 1), entry(4, 0, 1)],
            &codes,
            0,
            12,
        );
        add_tuples(
            &mut tuples,
            &[entry(3, 0, 2), entry(3, 1, 1)],
            &codes,
            0,
            12,
        );
        add_tuples(&mut tuples, &[entry(3, 0, 2)], &codes, 0, -5);
        let mut rows = VisitorRows::default();
        rows.add("weekday", 2, &by_id, &mut tuples);
        let got: Vec<(String, i32, Option<i32>, i64)> = (0..rows.day.len())
            .map(|i| {
                (
                    rows.category[i].clone(),
                    rows.day[i],
                    rows.prev_day[i],
                    rows.visitors[i],
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".to_owned(), -5, None, 1),
                ("a".to_owned(), 10, None, 1),
                ("a".to_owned(), 12, Some(-5), 1),
                ("a".to_owned(), 12, Some(10), 1),
                ("b".to_owned(), 12, None, 1),
            ]
        );
    }
}
