//! Activity by hour of day and weekday: views, carts, purchases and revenue per (weekday,
//! hour) cell of local time, over a range (the dashboard's heatmap, and the range's totals).

use serde::{Deserialize, Serialize};

use super::{Columns, ReportScope, count, money};
use crate::engine::Engine;
use crate::error::Result;

/// One cell. JSON fields: `weekday` (0 = Monday … 6), `hour` (0–23), `views`, `carts`,
/// `purchases`, `revenue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityCell {
    /// 0 = Monday … 6 = Sunday, local.
    pub weekday: u8,
    /// 0–23, local.
    pub hour: u8,
    /// `view` events.
    pub views: u64,
    /// `cart` events.
    pub carts: u64,
    /// `purchase` events.
    pub purchases: u64,
    /// Sum of purchase prices.
    pub revenue: f64,
}

impl crate::output::Tabular for ActivityCell {
    const COLUMNS: &'static [&'static str] =
        &["weekday", "hour", "views", "carts", "purchases", "revenue"];
}

/// The cells with any event, by weekday then hour.
pub async fn activity(engine: &Engine, scope: &ReportScope) -> Result<Vec<ActivityCell>> {
    let range = &scope.range;
    let tz = range.zone_sql();
    let events = super::events_relation(engine, scope).await?;
    let sql = if super::use_marts(engine, scope).await? {
        // Level 1 holds every event once; day 0 (1970-01-01) was a Thursday.
        format!(
            "SELECT ((CAST(CAST(day AS INT) AS BIGINT) + 3) % 7 + 7) % 7 AS weekday, hour,
                    SUM(views) AS views, SUM(carts) AS carts, SUM(purchases) AS purchases,
                    SUM(revenue_cents) AS revenue_cents
             FROM mart_categories WHERE zone = {tz} AND level = 1 AND {days}
             GROUP BY 1, 2 HAVING SUM(events) <> 0 ORDER BY 1, 2",
            days = range.day_sql()
        )
    } else {
        format!(
            "SELECT (CAST(date_part('dow', t) AS BIGINT) + 6) % 7 AS weekday,
                    CAST(date_part('hour', t) AS BIGINT) AS hour,
                    COUNT(*) FILTER (WHERE event_type = 'view') AS views,
                    COUNT(*) FILTER (WHERE event_type = 'cart') AS carts,
                    COUNT(*) FILTER (WHERE event_type = 'purchase') AS purchases,
                    COALESCE(CAST(SUM(price) FILTER (WHERE event_type = 'purchase') * 100
                                  AS BIGINT), 0) AS revenue_cents
             FROM (SELECT local_time(event_time, {tz}) AS t, event_type, price
                   FROM {events} WHERE {range})
             GROUP BY 1, 2 ORDER BY 1, 2",
            range = range.sql()
        )
    };
    let out = engine.run(&sql).await?;
    let mut cells = Vec::new();
    for b in &out.batches {
        let c = Columns::new(b);
        let (w, h, v, ca, p, r) = (
            c.i64("weekday")?,
            c.i64("hour")?,
            c.i64("views")?,
            c.i64("carts")?,
            c.i64("purchases")?,
            c.i64("revenue_cents")?,
        );
        for i in 0..b.num_rows() {
            cells.push(ActivityCell {
                weekday: w[i].unwrap_or(0).clamp(0, 6) as u8,
                hour: h[i].unwrap_or(0).clamp(0, 23) as u8,
                views: count(v[i]),
                carts: count(ca[i]),
                purchases: count(p[i]),
                revenue: money(r[i].unwrap_or(0)),
            });
        }
    }
    Ok(cells)
}
