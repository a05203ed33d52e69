//! Unique visitors per day: for each local day, distinct users, distinct sessions, events,
//! and new visitors (users whose first event in the lake is that day).

use serde::{Deserialize, Serialize};

use arrow::array::{Array, RecordBatch};

use super::{Columns, ReportScope, count, day_string, uuid_bits};
use crate::engine::Engine;
use crate::error::Result;
use crate::udf::LocalDays;

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

impl crate::output::Tabular for VisitorsDay {
    const COLUMNS: &'static [&'static str] =
        &["day", "visitors", "sessions", "events", "new_visitors"];
}

/// The visitors report, one row per local day with events, in day order.
pub async fn visitors(engine: &Engine, scope: &ReportScope) -> Result<Vec<VisitorsDay>> {
    if !super::use_marts(engine, scope).await? {
        return from_events(engine, scope).await;
    }
    let range = &scope.range;
    let sql = format!(
        "SELECT CAST(day AS VARCHAR) AS day, visitors, sessions, events, new_visitors
         FROM mart_daily WHERE zone = {tz} AND {days} ORDER BY day",
        tz = range.zone_sql(),
        days = range.day_sql()
    );
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

/// The report from `events` in one scan: each scan partition keeps, per local day, the set of
/// users and of sessions and the event count, and each user's first event time (over
/// everything before the range's end: a new visitor is new to the whole lake); the partitions'
/// sets are then united. Three group-bys over the same rows in SQL (users and sessions per
/// day, first event per user) scanned the table three times and hashed every session string
/// twice.
async fn from_events(engine: &Engine, scope: &ReportScope) -> Result<Vec<VisitorsDay>> {
    let range = scope.range;
    let events = super::events_relation(engine, scope).await?;
    let sql = format!(
        "SELECT user_id, user_session, CAST(event_time AS BIGINT) AS t
         FROM {events} WHERE {before_end}",
        before_end = range.before_end_sql()
    );
    let from = range.utc_bounds().0.unwrap_or(i64::MIN);
    let all = engine
        .fold_merged(
            &sql,
            move || Visits::new(range.tz, from),
            |v, b| v.add(&b),
            Visits::merge,
        )
        .await?;
    Ok(all.finish())
}

/// One local day's distinct users and sessions, and its events.
#[derive(Default)]
struct Day {
    users: foldhash::HashSet<i64>,
    sessions: foldhash::HashSet<u128>,
    other_sessions: foldhash::HashSet<String>,
    events: u64,
}

/// What one scan partition (or all, once merged) saw.
struct Visits {
    local: LocalDays,
    /// Events from here on count for the days (the range's start, UTC micros).
    from: i64,
    days: Days,
    firsts: foldhash::HashMap<i64, i64>,
}

/// The days seen, with the one looked up last at hand (rows of a file share their day).
#[derive(Default)]
struct Days {
    days: Vec<(i32, Day)>,
    last: usize,
}

impl Days {
    fn get(&mut self, day: i32) -> &mut Day {
        if self.days.get(self.last).is_none_or(|d| d.0 != day) {
            self.last = match self.days.iter().position(|d| d.0 == day) {
                Some(i) => i,
                None => {
                    self.days.push((day, Day::default()));
                    self.days.len() - 1
                }
            };
        }
        &mut self.days[self.last].1
    }
}

impl Visits {
    fn new(tz: chrono_tz::Tz, from: i64) -> Visits {
        Visits {
            local: LocalDays::new(tz),
            from,
            days: Days::default(),
            firsts: foldhash::HashMap::default(),
        }
    }

    /// Records that `user` was seen at `t`.
    fn seen(&mut self, user: i64, t: i64) {
        self.firsts
            .entry(user)
            .and_modify(|f| *f = (*f).min(t))
            .or_insert(t);
    }

    fn add(&mut self, b: &RecordBatch) -> Result<()> {
        let c = Columns::new(b);
        let user = c.int64_array("user_id")?;
        let session = c.string_view_array("user_session")?;
        let time = c.int64_array("t")?;
        for i in 0..b.num_rows() {
            let (u, t) = (user.value(i), time.value(i));
            self.seen(u, t);
            if t < self.from {
                continue;
            }
            let d = self.days.get(self.local.day(t));
            d.events += 1;
            d.users.insert(u);
            if session.is_valid(i) {
                let s = session.value(i);
                match uuid_bits(s.as_bytes()) {
                    Some(bits) => {
                        d.sessions.insert(bits);
                    }
                    None => {
                        if !d.other_sessions.contains(s) {
                            d.other_sessions.insert(s.to_owned());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn merge(&mut self, other: Visits) {
        for (day, o) in other.days.days {
            let d = self.days.get(day);
            d.events += o.events;
            d.users.extend(o.users);
            d.sessions.extend(o.sessions);
            d.other_sessions.extend(o.other_sessions);
        }
        for (u, t) in other.firsts {
            self.seen(u, t);
        }
    }

    fn finish(mut self) -> Vec<VisitorsDay> {
        let mut fresh: foldhash::HashMap<i32, u64> = foldhash::HashMap::default();
        for &first in self.firsts.values() {
            *fresh.entry(self.local.day(first)).or_default() += 1;
        }
        self.days.days.sort_unstable_by_key(|d| d.0);
        self.days
            .days
            .into_iter()
            .map(|(day, d)| VisitorsDay {
                day: day_string(day),
                visitors: d.users.len() as u64,
                sessions: (d.sessions.len() + d.other_sessions.len()) as u64,
                events: d.events,
                new_visitors: fresh.get(&day).copied().unwrap_or(0),
            })
            .collect()
    }
}
