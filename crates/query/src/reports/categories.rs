//! Top categories per hour of day or weekday (DESIGN.md section 4.3): per bucket and category
//! (at a level), views, carts, purchases, revenue (purchase prices) and distinct visitors; the
//! top N by a metric, ranked (ties by category name), with the share of the bucket's total of
//! that metric (the sum over all its categories, not only the top N).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Columns, ReportScope, count, money, ratio};
use crate::engine::{Engine, QueryOutput};
use crate::error::{Error, Result};

/// Weekday names, Monday first.
pub const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// How events are bucketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bucketing {
    /// Local hour of day, `00` to `23`.
    #[default]
    Hour,
    /// Local weekday, `Monday` to `Sunday`.
    Weekday,
}

impl FromStr for Bucketing {
    type Err = Error;
    fn from_str(s: &str) -> Result<Bucketing> {
        match s {
            "hour" => Ok(Bucketing::Hour),
            "weekday" => Ok(Bucketing::Weekday),
            _ => Err(Error::Argument(format!(
                "by {s:?}: expected hour or weekday"
            ))),
        }
    }
}

/// What ranks categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// `view` events.
    #[default]
    Views,
    /// `cart` events.
    Carts,
    /// `purchase` events.
    Purchases,
    /// Sum of purchase prices.
    Revenue,
    /// Distinct users.
    Visitors,
}

impl FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Metric> {
        Ok(match s {
            "views" => Metric::Views,
            "carts" => Metric::Carts,
            "purchases" => Metric::Purchases,
            "revenue" => Metric::Revenue,
            "visitors" => Metric::Visitors,
            _ => {
                return Err(Error::Argument(format!(
                    "metric {s:?}: expected views, carts, purchases, revenue or visitors"
                )));
            }
        })
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::Views => "views",
            Metric::Carts => "carts",
            Metric::Purchases => "purchases",
            Metric::Revenue => "revenue",
            Metric::Visitors => "visitors",
        })
    }
}

/// The depth of the category code a report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// The first segment (`electronics`).
    #[default]
    One,
    /// The first two (`electronics.smartphone`).
    Two,
    /// The first three.
    Three,
    /// The whole code.
    Full,
}

impl Level {
    /// The segments kept: 1, 2 or 3, or 0 for the whole code (as `category_at` takes it).
    pub fn depth(self) -> usize {
        match self {
            Level::One => 1,
            Level::Two => 2,
            Level::Three => 3,
            Level::Full => 0,
        }
    }
}

impl FromStr for Level {
    type Err = Error;
    fn from_str(s: &str) -> Result<Level> {
        match s.trim() {
            "1" => Ok(Level::One),
            "2" => Ok(Level::Two),
            "3" => Ok(Level::Three),
            "full" => Ok(Level::Full),
            _ => Err(Error::Argument(format!(
                "level {s:?}: expected 1, 2, 3 or full"
            ))),
        }
    }
}

/// Options of the categories report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CategoriesOptions {
    /// Hour or weekday.
    pub by: Bucketing,
    /// How much of the category code.
    pub level: Level,
    /// Categories per bucket.
    pub top: usize,
    /// The ranking metric.
    pub metric: Metric,
}

impl Default for CategoriesOptions {
    fn default() -> Self {
        CategoriesOptions {
            by: Bucketing::Hour,
            level: Level::One,
            top: 5,
            metric: Metric::Views,
        }
    }
}

/// One category in one bucket. JSON: `bucket, category, views, carts, purchases, revenue,
/// visitors, rank, share`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryRow {
    /// `00`–`23` or `Monday`–`Sunday`.
    pub bucket: String,
    /// The category at the level (`(unknown)` for an empty code).
    pub category: String,
    /// Views.
    pub views: u64,
    /// Carts.
    pub carts: u64,
    /// Purchases.
    pub purchases: u64,
    /// Sum of purchase prices.
    pub revenue: f64,
    /// Distinct users.
    pub visitors: u64,
    /// 1 for the top category of the bucket.
    pub rank: u32,
    /// The metric over the bucket's total of the metric (`null` when that is zero).
    pub share: Option<f64>,
}

impl crate::output::Tabular for CategoryRow {
    const COLUMNS: &'static [&'static str] = &[
        "bucket",
        "category",
        "views",
        "carts",
        "purchases",
        "revenue",
        "visitors",
        "rank",
        "share",
    ];
}

struct Cell {
    bucket: i64,
    category: String,
    views: u64,
    carts: u64,
    purchases: u64,
    revenue_cents: i64,
    visitors: u64,
}

impl Cell {
    fn metric(&self, m: Metric) -> i128 {
        match m {
            Metric::Views => i128::from(self.views),
            Metric::Carts => i128::from(self.carts),
            Metric::Purchases => i128::from(self.purchases),
            Metric::Revenue => i128::from(self.revenue_cents),
            Metric::Visitors => i128::from(self.visitors),
        }
    }
}

/// The categories report: buckets in order, each with its top categories by rank.
pub async fn categories(
    engine: &Engine,
    scope: &ReportScope,
    options: &CategoriesOptions,
) -> Result<Vec<CategoryRow>> {
    let events = super::events_relation(engine, scope).await?;
    if super::use_marts(engine, scope).await? {
        return from_marts(engine, scope, options).await;
    }
    let range = &scope.range;
    let tz = range.zone_sql();
    let bucket = match options.by {
        Bucketing::Hour => {
            format!("CAST(date_part('hour', local_time(event_time, {tz})) AS BIGINT)")
        }
        Bucketing::Weekday => {
            format!("(CAST(date_part('dow', local_time(event_time, {tz})) AS BIGINT) + 6) % 7")
        }
    };
    let e = format!(
        "e AS (
            SELECT event_type, price, user_id, {bucket} AS bucket,
                   category_level(category_code, {level}) AS category
            FROM {events} WHERE {range})",
        level = options.level.depth(),
        range = range.sql(),
    );
    // One pass with distinct-user sets per cell, and when those outgrow the memory limit, per
    // user first and then per cell (a group-by that spills to disk).
    let fast = format!(
        "WITH {e}
         SELECT bucket, category,
                COUNT(*) FILTER (WHERE event_type = 'view') AS views,
                COUNT(*) FILTER (WHERE event_type = 'cart') AS carts,
                COUNT(*) FILTER (WHERE event_type = 'purchase') AS purchases,
                SUM(CASE WHEN event_type = 'purchase' THEN CAST(price * 100 AS BIGINT) ELSE 0 END)
                    AS revenue_cents,
                COUNT(DISTINCT user_id) AS visitors
         FROM e GROUP BY bucket, category"
    );
    let spilling = format!(
        "WITH {e},
         u AS (
            SELECT bucket, category, user_id,
                   COUNT(*) FILTER (WHERE event_type = 'view') AS views,
                   COUNT(*) FILTER (WHERE event_type = 'cart') AS carts,
                   COUNT(*) FILTER (WHERE event_type = 'purchase') AS purchases,
                   SUM(CASE WHEN event_type = 'purchase' THEN CAST(price * 100 AS BIGINT)
                            ELSE 0 END) AS revenue_cents
            FROM e GROUP BY bucket, category, user_id)
         SELECT bucket, category, SUM(views) AS views, SUM(carts) AS carts,
                SUM(purchases) AS purchases, SUM(revenue_cents) AS revenue_cents,
                COUNT(*) AS visitors
         FROM u GROUP BY bucket, category"
    );
    let out = engine.run_or_spill(&fast, &spilling).await?;
    Ok(rank(cells(&out)?, options))
}

/// The same report from the marts: sums over the range's days from `mart_categories`, and
/// exact distinct visitors from `mart_category_visitors` (each visitor counted on its first
/// day in the range: the rows whose previous day lies before the range).
async fn from_marts(
    engine: &Engine,
    scope: &ReportScope,
    options: &CategoriesOptions,
) -> Result<Vec<CategoryRow>> {
    let range = &scope.range;
    let (tz, level, days) = (range.zone_sql(), options.level.depth(), range.day_sql());
    let bucket = match options.by {
        Bucketing::Hour => "hour",
        // Day 0 (1970-01-01) was a Thursday: Monday is 0.
        Bucketing::Weekday => "((CAST(CAST(day AS INT) AS BIGINT) + 3) % 7 + 7) % 7",
    };
    let by = match options.by {
        Bucketing::Hour => "hour",
        Bucketing::Weekday => "weekday",
    };
    let first = range.first_in_range_sql();
    let out = engine
        .run(&format!(
            "WITH s AS (
                SELECT {bucket} AS bucket, category, SUM(views) AS views, SUM(carts) AS carts,
                       SUM(purchases) AS purchases, SUM(revenue_cents) AS revenue_cents
                FROM mart_categories WHERE zone = {tz} AND level = {level} AND {days}
                GROUP BY 1, 2 HAVING SUM(events) <> 0),
             v AS (
                SELECT bucket, category, SUM(visitors) AS visitors FROM mart_category_visitors
                WHERE zone = {tz} AND level = {level} AND by = '{by}' AND {days} AND {first}
                GROUP BY 1, 2)
             SELECT s.bucket, s.category, views, carts, purchases, revenue_cents,
                    COALESCE(v.visitors, 0) AS visitors
             FROM s LEFT JOIN v ON s.bucket = v.bucket AND s.category = v.category"
        ))
        .await?;
    Ok(rank(cells(&out)?, options))
}

/// The cells of a result with columns `bucket, category, views, carts, purchases,
/// revenue_cents, visitors`.
fn cells(out: &QueryOutput) -> Result<Vec<Cell>> {
    let mut cells = Vec::new();
    for b in &out.batches {
        let c = Columns::new(b);
        let (bucket, category, views, carts, purchases, revenue, visitors) = (
            c.i64("bucket")?,
            c.str("category")?,
            c.i64("views")?,
            c.i64("carts")?,
            c.i64("purchases")?,
            c.i64("revenue_cents")?,
            c.i64("visitors")?,
        );
        for i in 0..b.num_rows() {
            cells.push(Cell {
                bucket: bucket[i].unwrap_or_default(),
                category: category[i].clone().unwrap_or_default(),
                views: count(views[i]),
                carts: count(carts[i]),
                purchases: count(purchases[i]),
                revenue_cents: revenue[i].unwrap_or_default(),
                visitors: count(visitors[i]),
            });
        }
    }
    Ok(cells)
}

fn rank(mut cells: Vec<Cell>, options: &CategoriesOptions) -> Vec<CategoryRow> {
    let metric = options.metric;
    let mut totals: HashMap<i64, i128> = HashMap::new();
    for c in &cells {
        *totals.entry(c.bucket).or_default() += c.metric(metric);
    }
    cells.sort_by(|a, b| {
        a.bucket
            .cmp(&b.bucket)
            .then(b.metric(metric).cmp(&a.metric(metric)))
            .then(a.category.cmp(&b.category))
    });
    let mut out = Vec::new();
    let mut current = None;
    let mut rank = 0u32;
    for c in cells {
        if current != Some(c.bucket) {
            current = Some(c.bucket);
            rank = 0;
        }
        rank += 1;
        if rank as usize > options.top {
            continue;
        }
        let total = totals.get(&c.bucket).copied().unwrap_or(0);
        out.push(CategoryRow {
            bucket: bucket_label(options.by, c.bucket),
            share: ratio(c.metric(metric) as f64, total as f64),
            category: c.category,
            views: c.views,
            carts: c.carts,
            purchases: c.purchases,
            revenue: money(c.revenue_cents),
            visitors: c.visitors,
            rank,
        });
    }
    out
}

/// The label of a bucket number.
pub fn bucket_label(by: Bucketing, bucket: i64) -> String {
    match by {
        Bucketing::Hour => format!("{bucket:02}"),
        Bucketing::Weekday => WEEKDAYS
            .get(bucket.clamp(0, 6) as usize)
            .copied()
            .unwrap_or_default()
            .to_owned(),
    }
}
