//! Unique visitors per day: for each local day, distinct users, distinct sessions, events,
//! and new visitors (users whose first event in the lake is that day).

use serde::{Deserialize, Serialize};

use super::{Columns, DAILY_CTES, ReportScope, count};
use crate::engine::Engine;
use crate::error::Result;

/// One local day. JSON fields: `day, visitors, sessions, events, new_visitors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorsDay {
    /// The local day, `YYYY-MM-DD`.
    pub day: String,
    /// Distinct `user_id`.
    pub visitors: u64,
    /// Distinct `user_session` (missing sessions not counted).
    pub sessions: u64,
    /// Events.
    pub events: u64,
    /// Users whose first event in the whole lake falls on this day.
    pub new_visitors: u64,
}

/// The visitors report, one row per local day with events, in day order.
pub async fn visitors(engine: &Engine, scope: &ReportScope) -> Result<Vec<VisitorsDay>> {
    let range = &scope.range;
    let tz = range.zone_sql();
    let (_, end) = range.utc_bounds();
    let before_end = end.map_or("TRUE".to_owned(), |e| {
        format!("CAST(event_time AS BIGINT) < {e}")
    });
    let events = super::events_relation(engine, scope).await?;
    let sql = if super::use_marts(engine, scope).await? {
        format!(
            "SELECT CAST(day AS VARCHAR) AS day, visitors, sessions, events, new_visitors
             FROM mart_daily WHERE zone = {tz} AND {days} ORDER BY day",
            days = range.day_sql()
        )
    } else {
        format!(
            "WITH e AS (
            SELECT user_id, user_session, local_day(event_time, {tz}) AS day
            FROM {events} WHERE {range}),
         {DAILY_CTES},
         firsts AS (
            SELECT user_id, MIN(event_time) AS first FROM {events} WHERE {before_end}
            GROUP BY user_id),
         fresh AS (
            SELECT local_day(first, {tz}) AS first_day, COUNT(*) AS new_visitors
            FROM firsts GROUP BY 1)
         SELECT CAST(daily.day AS VARCHAR) AS day, visitors, sessions, events,
                COALESCE(new_visitors, 0) AS new_visitors
         FROM daily LEFT JOIN fresh ON daily.day = fresh.first_day
         ORDER BY 1",
            range = range.sql(),
        )
    };
    let out = engine.run(&sql).await?;
    let mut rows = Vec::new();
    for b in &out.batches {
        let c = Columns::new(b);
        let (day, v, s, e, n) = (
            c.str("day")?,
            c.i64("visitors")?,
            c.i64("sessions")?,
            c.i64("events")?,
            c.i64("new_visitors")?,
        );
        for i in 0..b.num_rows() {
            rows.push(VisitorsDay {
                day: day[i].clone().unwrap_or_default(),
                visitors: count(v[i]),
                sessions: count(s[i]),
                events: count(e[i]),
                new_visitors: count(n[i]),
            });
        }
    }
    Ok(rows)
}
