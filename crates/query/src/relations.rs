//! The relations reports and the marts read besides the tables: SQL shared by both.

/// `events` without the flagged user-days: the relation "humans only" reports and the marts
/// read.
pub(crate) const HUMAN_EVENTS: &str = "(SELECT * FROM events WHERE NOT EXISTS (
    SELECT 1 FROM bot_flags WHERE bot_flags.user_id = events.user_id
                              AND bot_flags.day = events.event_date)) AS events";
