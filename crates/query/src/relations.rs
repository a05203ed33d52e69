//! The relations reports and the marts read besides the tables: SQL shared by both.

/// `events` without the flagged user-days: the relation "humans only" reports and the marts
/// read.
pub(crate) const HUMAN_EVENTS: &str = "(SELECT * FROM events WHERE NOT EXISTS (
    SELECT 1 FROM bot_flags WHERE bot_flags.user_id = events.user_id
                              AND bot_flags.day = events.event_date)) AS events";

/// CTEs `daily (day, visitors, sessions, events)` over a CTE `e (day, user_id, user_session)`
/// (`user_id` is never null), two scans of `e`:
/// distinct counts as nested group-bys, which spill to disk under the engine's memory limit
/// where `COUNT(DISTINCT)` sets cannot (a month has millions of sessions).
pub(crate) const DAILY_CTES: &str = "
    by_user AS (SELECT day, user_id, COUNT(*) AS n FROM e GROUP BY day, user_id),
    users AS (SELECT day, COUNT(*) AS visitors, SUM(n) AS events FROM by_user GROUP BY day),
    sessions AS (
        SELECT day, COUNT(*) AS sessions
        FROM (SELECT day, user_session FROM e WHERE user_session IS NOT NULL
              GROUP BY day, user_session) GROUP BY day),
    daily AS (
        SELECT users.day AS day, visitors, COALESCE(sessions, 0) AS sessions, events
        FROM users LEFT JOIN sessions ON users.day = sessions.day)";
