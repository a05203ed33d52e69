//! Flagged users per day: from `bot_flags`, the users real-time detection (or `detect --flag`)
//! judged bots on each UTC day of the range. Small and fast; the dashboard adds it to the
//! humans-only visitors to show all traffic (exact for UTC days) without scanning `events`.

use serde::{Deserialize, Serialize};

use super::{Columns, ReportScope, count};
use crate::engine::Engine;
use crate::error::Result;

/// One UTC day. JSON fields: `day, flagged_users, flags`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotDay {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Distinct users flagged that day.
    pub flagged_users: u64,
    /// Flags (a user flagged by several incidents counts once per incident).
    pub flags: u64,
}

impl crate::output::Tabular for BotDay {
    const COLUMNS: &'static [&'static str] = &["day", "flagged_users", "flags"];
}

/// The days with flags in the range (its dates taken as UTC days), in day order.
pub async fn bots(engine: &Engine, scope: &ReportScope) -> Result<Vec<BotDay>> {
    if engine.bot_flags_version().is_none() {
        return Ok(Vec::new());
    }
    let out = engine
        .run(&format!(
            "SELECT CAST(day AS VARCHAR) AS day, COUNT(DISTINCT user_id) AS flagged_users,
                    COUNT(*) AS flags
             FROM bot_flags WHERE {} GROUP BY day ORDER BY day",
            scope.range.day_sql()
        ))
        .await?;
    let mut rows = Vec::new();
    for b in &out.batches {
        let c = Columns::new(b);
        let (day, users, flags) = (c.str("day")?, c.i64("flagged_users")?, c.i64("flags")?);
        for i in 0..b.num_rows() {
            rows.push(BotDay {
                day: day[i].clone().unwrap_or_default(),
                flagged_users: count(users[i]),
                flags: count(flags[i]),
            });
        }
    }
    Ok(rows)
}
