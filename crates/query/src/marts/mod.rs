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
//! otherwise, so stale marts can make a report slower, never wrong; a report that may lag
//! (serve's, while a refresh catches up) reads instead the snapshot the stamp names, every
//! table pinned at its stamped version, exact for that `events` version. A refresh folds in
//! only what changed since the stamp (`incremental.rs`, with the users' and sessions' state
//! for the measures that depend on earlier history); a new zone, or marts that cannot be
//! brought forward, are rebuilt whole (`whole.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use chrono_tz::Tz;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::SaveMode;
use serde::Serialize;
use shoplake_lake::{Lake, TableName};

mod contrib;
mod incremental;
mod state;
mod whole;

use contrib::Daily;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::relations::HUMAN_EVENTS;
pub use crate::stamp::{FORMAT, fresh, zones};

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

/// The marts lease's time to live: its holder renews it while refreshing, so a refresher that
/// died (`kill -9`, a lost host) holds up the next one for at most this long.
const LEASE: Duration = Duration::from_secs(20);

/// How long a refresh waits for another process's refresh to end.
const LEASE_WAIT: Duration = Duration::from_secs(15 * 60);

/// One refresh at a time per lake, across processes (two folding the same change in would
/// count it twice): waits for the lease, then refreshes.
async fn refresh_in(
    lake: &Lake,
    resources: Option<&crate::EngineResources>,
    extra_zones: &[Tz],
    whole: bool,
) -> Result<Vec<MartsSummary>> {
    let deadline = Instant::now() + LEASE_WAIT;
    let mut waiting = false;
    let lease = loop {
        if let Some(lease) = lake.try_lease("marts-refresh", LEASE).await? {
            break lease;
        }
        if !waiting {
            tracing::info!("waiting for another process's marts refresh to end");
            waiting = true;
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
    let mut laps = Laps::new();
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
    laps.lap("zones");
    let stamp = match whole {
        true => None,
        false => incremental::read_stamp(engine).await?,
    };
    laps.lap("stamp");
    let delta = match &stamp {
        Some(s) => incremental::delta(lake, engine, s).await?,
        None => None,
    };
    laps.lap("delta");
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
    laps.lap("zones_applied");
    let newest = match (&stamp, &delta) {
        (Some(s), Some(d)) if all_incremental => incremental::newest(engine, s, d, events).await?,
        _ => None,
    };
    let newest = match newest {
        Some(n) => n,
        None => {
            let sql = format!("SELECT MAX(CAST(event_time AS BIGINT)) AS newest FROM {events}");
            engine.scalar_i64(&sql, "newest").await?
        }
    };
    laps.lap("newest");
    incremental::collapse(lake).await?;
    laps.lap("collapse");
    write_stamp(lake, version, flags, newest, &daily).await?;
    laps.lap("stamp_written");
    tracing::debug!(phases = laps.line(), "marts refresh phases");
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
    let rebuilt = whole::rebuild(lake, engine, zone, events).await?;
    let summary = MartsSummary {
        zone: zone.to_owned(),
        events_version: version,
        mode: "rebuild",
        daily_rows: rebuilt.daily.len(),
        brand_rows: rebuilt.brand_rows,
        category_rows: rebuilt.category_rows,
        visitor_rows: rebuilt.visitor_rows,
        item_rows: rebuilt.item_rows,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((summary, rebuilt.daily))
}

/// The time each phase of a refresh took, for the debug log.
pub(crate) struct Laps {
    last: Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Laps {
    pub(crate) fn new() -> Laps {
        Laps {
            last: Instant::now(),
            laps: Vec::new(),
        }
    }

    /// Ends the phase `name` (its time is since the previous lap).
    pub(crate) fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps
            .push((name, now.duration_since(self.last).as_secs_f64()));
        self.last = now;
    }

    /// `phase=seconds` pairs, rounded to milliseconds.
    pub(crate) fn line(&self) -> String {
        let laps: Vec<String> = self
            .laps
            .iter()
            .map(|(name, s)| format!("{name}={s:.3}"))
            .collect();
        laps.join(" ")
    }
}

/// What `mart_daily` stamps on every row.
struct Stamped {
    version: i64,
    flags: Option<i64>,
    newest: Option<i64>,
    versions: String,
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
