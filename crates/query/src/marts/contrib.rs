//! What one user and one session contribute to the marts, computed from their state: their
//! human events folded to the marts' grain, per UTC day (the grain of a bot verdict).
//!
//! `mart_daily` and `mart_category_visitors` are sums of these contributions over users and
//! sessions, and `mart_items` the union of each user's rows. So when new rows or new verdicts
//! change a few users, a refresh subtracts those users' old contributions and adds their new
//! ones, and reads nothing else of history. (`mart_brands` and `mart_categories` are sums over
//! events and need no state.)

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{Array, RecordBatch};

use crate::columns::Columns;
use crate::error::Result;
use crate::folds::{Cart, CartRow, keep_first, text};
use crate::udf::category_at;

/// A user's human events on one local day that fell on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserDay {
    /// The UTC day, days since the epoch.
    pub utc_day: i32,
    /// The local day, days since the epoch.
    pub day: i32,
    /// How many events.
    pub events: i64,
    /// The first one's time, µs since the epoch.
    pub first: i64,
}

/// A user's events in one local hour under one full category code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cell {
    pub utc_day: i32,
    pub day: i32,
    /// The local hour, 0–23.
    pub hour: u8,
    /// The full category code (`(unknown)` without one).
    pub code: String,
    pub events: i64,
}

/// A user's first cart of a product on a local day, among that UTC day's carts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DayCart {
    pub product: i64,
    pub utc_day: i32,
    pub day: i32,
    pub cart: Cart,
}

/// A user's purchase of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Purchase {
    pub product: i64,
    pub utc_day: i32,
    /// µs since the epoch.
    pub at: i64,
}

/// A user's state in one zone: what the marts need of their human events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UserState {
    pub days: Vec<UserDay>,
    pub cells: Vec<Cell>,
    pub carts: Vec<DayCart>,
    pub purchases: Vec<Purchase>,
}

/// A session's human events of one user on one local day that fell on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionPart {
    pub user: i64,
    pub utc_day: i32,
    pub day: i32,
    pub events: i64,
    /// The first one's time, µs since the epoch.
    pub first: i64,
    pub carts: i64,
    pub purchases: i64,
}

/// A session's state in one zone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionState {
    pub parts: Vec<SessionPart>,
}

/// One local day's figures of `mart_daily` (or a change to them).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Daily {
    pub visitors: i64,
    pub sessions: i64,
    pub events: i64,
    pub new_visitors: i64,
    pub session_starts: i64,
    pub cart_sessions: i64,
    pub abandoned_sessions: i64,
}

impl Daily {
    /// Adds another day's figures (or change) to these.
    pub(crate) fn add(&mut self, d: &Daily) {
        self.visitors += d.visitors;
        self.sessions += d.sessions;
        self.events += d.events;
        self.new_visitors += d.new_visitors;
        self.session_starts += d.session_starts;
        self.cart_sessions += d.cart_sessions;
        self.abandoned_sessions += d.abandoned_sessions;
    }
}

/// How a bucket of `mart_category_visitors` is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum By {
    Hour,
    Weekday,
}

impl By {
    pub(crate) fn name(self) -> &'static str {
        match self {
            By::Hour => "hour",
            By::Weekday => "weekday",
        }
    }
}

/// A row key of `mart_category_visitors`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct VisitorKey {
    pub level: u8,
    pub by: By,
    pub bucket: u8,
    pub category: String,
    pub day: i32,
    pub prev_day: Option<i32>,
}

/// A row of `mart_items` (its zone aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemRow {
    pub day: i32,
    pub user: i64,
    pub product: i64,
    pub cart: Cart,
    pub prev_day: Option<i32>,
    pub next_purchase: Option<i64>,
}

/// Changes to the summed marts, signed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Sums {
    pub daily: BTreeMap<i32, Daily>,
    pub visitors: HashMap<VisitorKey, i64>,
}

impl Sums {
    fn day(&mut self, day: i32) -> &mut Daily {
        self.daily.entry(day).or_default()
    }

    /// Drops the entries that came to zero.
    pub(crate) fn settle(&mut self) {
        self.daily.retain(|_, d| *d != Daily::default());
        self.visitors.retain(|_, n| *n != 0);
    }
}

/// The weekday of a day since the epoch, Monday 0 (1970-01-01 was a Thursday).
pub(crate) fn weekday(day: i32) -> u8 {
    (day + 3).rem_euclid(7) as u8
}

impl UserState {
    /// Adds this user's contribution to the summed marts, times `sign` (+1 to add, -1 to
    /// take away).
    pub(crate) fn contribute(&self, sign: i64, sums: &mut Sums) {
        let mut days: BTreeMap<i32, i64> = BTreeMap::new();
        let mut first: Option<(i64, i32)> = None;
        for d in self.days.iter().filter(|d| d.events > 0) {
            *days.entry(d.day).or_default() += d.events;
            if first.is_none_or(|(t, _)| d.first < t) {
                first = Some((d.first, d.day));
            }
        }
        for (day, events) in days {
            let row = sums.day(day);
            row.visitors += sign;
            row.events += sign * events;
        }
        if let Some((_, day)) = first {
            sums.day(day).new_visitors += sign;
        }
        self.category_visitors(sign, sums);
    }

    /// Each (bucket, category) chain of the days this user was seen in it: a row per day,
    /// under the previous such day.
    fn category_visitors(&self, sign: i64, sums: &mut Sums) {
        let seen: BTreeSet<(i32, u8, &str)> = self
            .cells
            .iter()
            .filter(|c| c.events > 0)
            .map(|c| (c.day, c.hour, c.code.as_str()))
            .collect();
        for level in 0..4u8 {
            let mut chains: BTreeMap<(By, u8, &str), BTreeSet<i32>> = BTreeMap::new();
            for &(day, hour, code) in &seen {
                let category = category_at(Some(code), usize::from(level));
                chains
                    .entry((By::Hour, hour, category))
                    .or_default()
                    .insert(day);
                chains
                    .entry((By::Weekday, weekday(day), category))
                    .or_default()
                    .insert(day);
            }
            for ((by, bucket, category), days) in chains {
                let mut prev = None;
                for day in days {
                    let key = VisitorKey {
                        level,
                        by,
                        bucket,
                        category: category.to_owned(),
                        day,
                        prev_day: prev,
                    };
                    *sums.visitors.entry(key).or_default() += sign;
                    prev = Some(day);
                }
            }
        }
    }

    /// This user's rows of `mart_items`: per product and local day with a cart, the day's first
    /// cart, the previous such day and the first purchase at or after that cart.
    pub(crate) fn items(&self, user: i64) -> Vec<ItemRow> {
        let mut firsts: BTreeMap<(i64, i32), Option<Cart>> = BTreeMap::new();
        for c in &self.carts {
            keep_first(firsts.entry((c.product, c.day)).or_default(), c.cart.row());
        }
        let mut purchases: HashMap<i64, Vec<i64>> = HashMap::new();
        for p in &self.purchases {
            purchases.entry(p.product).or_default().push(p.at);
        }
        for times in purchases.values_mut() {
            times.sort_unstable();
        }
        let mut out = Vec::new();
        let mut last: Option<(i64, i32)> = None;
        for ((product, day), cart) in firsts {
            let Some(cart) = cart else { continue };
            let prev_day = last.filter(|(p, _)| *p == product).map(|(_, d)| d);
            let next_purchase = purchases.get(&product).and_then(|times| {
                let at = times.partition_point(|&t| t < cart.at);
                times.get(at).copied()
            });
            out.push(ItemRow {
                day,
                user,
                product,
                cart,
                prev_day,
                next_purchase,
            });
            last = Some((product, day));
        }
        out
    }

    /// Forgets everything of these UTC days (their user-days were judged bots).
    pub(crate) fn drop_days(&mut self, utc_days: &BTreeSet<i32>) {
        self.days.retain(|d| !utc_days.contains(&d.utc_day));
        self.cells.retain(|c| !utc_days.contains(&c.utc_day));
        self.carts.retain(|c| !utc_days.contains(&c.utc_day));
        self.purchases.retain(|p| !utc_days.contains(&p.utc_day));
    }

    /// Keeps a cart if it is the first of its product, UTC day and local day.
    pub(crate) fn keep_cart(&mut self, product: i64, utc_day: i32, day: i32, row: CartRow<'_>) {
        match self
            .carts
            .iter_mut()
            .find(|c| c.product == product && c.utc_day == utc_day && c.day == day)
        {
            Some(c) if row < c.cart.row() => c.cart = row.to_cart(),
            Some(_) => {}
            None => self.carts.push(DayCart {
                product,
                utc_day,
                day,
                cart: row.to_cart(),
            }),
        }
    }

    /// Folds in one more human event.
    pub(crate) fn add(&mut self, e: &EventFacts<'_>) {
        match self
            .days
            .iter_mut()
            .find(|d| d.utc_day == e.utc_day && d.day == e.day)
        {
            Some(d) => {
                d.events += 1;
                d.first = d.first.min(e.at);
            }
            None => self.days.push(UserDay {
                utc_day: e.utc_day,
                day: e.day,
                events: 1,
                first: e.at,
            }),
        }
        match self.cells.iter_mut().find(|c| {
            c.utc_day == e.utc_day && c.day == e.day && c.hour == e.hour && c.code == e.code
        }) {
            Some(c) => c.events += 1,
            None => self.cells.push(Cell {
                utc_day: e.utc_day,
                day: e.day,
                hour: e.hour,
                code: e.code.to_owned(),
                events: 1,
            }),
        }
        match e.kind {
            Kind::Cart => {
                let row = CartRow {
                    at: e.at,
                    cents: e.cents,
                    brand: e.brand,
                    category_code: e.category_code,
                };
                self.keep_cart(e.product, e.utc_day, e.day, row);
            }
            Kind::Purchase => self.purchases.push(Purchase {
                product: e.product,
                utc_day: e.utc_day,
                at: e.at,
            }),
            Kind::Other => {}
        }
    }
}

impl SessionState {
    /// Adds this session's contribution to `mart_daily`, times `sign`.
    pub(crate) fn contribute(&self, sign: i64, sums: &mut Sums) {
        let live = || self.parts.iter().filter(|p| p.events > 0);
        let days: BTreeSet<i32> = live().map(|p| p.day).collect();
        for day in days {
            sums.day(day).sessions += sign;
        }
        let Some(start) = live().min_by_key(|p| p.first) else {
            return;
        };
        let carts: i64 = live().map(|p| p.carts).sum();
        let purchases: i64 = live().map(|p| p.purchases).sum();
        let row = sums.day(start.day);
        row.session_starts += sign;
        if carts > 0 {
            row.cart_sessions += sign;
            if purchases == 0 {
                row.abandoned_sessions += sign;
            }
        }
    }

    /// Forgets a user's parts on these UTC days (judged a bot there).
    pub(crate) fn drop_days(&mut self, user: i64, utc_days: &BTreeSet<i32>) {
        self.parts
            .retain(|p| p.user != user || !utc_days.contains(&p.utc_day));
    }

    /// Folds in one more human event of the session.
    pub(crate) fn add(&mut self, e: &EventFacts<'_>) {
        let at = match self
            .parts
            .iter()
            .position(|p| p.user == e.user && p.utc_day == e.utc_day && p.day == e.day)
        {
            Some(at) => at,
            None => {
                self.parts.push(SessionPart {
                    user: e.user,
                    utc_day: e.utc_day,
                    day: e.day,
                    events: 0,
                    first: e.at,
                    carts: 0,
                    purchases: 0,
                });
                self.parts.len() - 1
            }
        };
        let part = &mut self.parts[at];
        part.events += 1;
        part.first = part.first.min(e.at);
        match e.kind {
            Kind::Cart => part.carts += 1,
            Kind::Purchase => part.purchases += 1,
            Kind::Other => {}
        }
    }
}

/// What a mart needs of an event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Cart,
    Purchase,
    Other,
}

impl Kind {
    pub(crate) fn of(event_type: &str) -> Kind {
        match event_type {
            "cart" => Kind::Cart,
            "purchase" => Kind::Purchase,
            _ => Kind::Other,
        }
    }
}

/// One event as the state folds it, in a zone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventFacts<'a> {
    pub user: i64,
    pub product: i64,
    pub kind: Kind,
    /// µs since the epoch.
    pub at: i64,
    pub utc_day: i32,
    pub day: i32,
    pub hour: u8,
    /// The full category code (`(unknown)` without one).
    pub code: &'a str,
    /// The raw category code, as a cart keeps it.
    pub category_code: Option<&'a str>,
    pub brand: Option<&'a str>,
    pub cents: i64,
}

/// The scan of `events` (or a relation like it) whose rows [`States::add_batch`] folds, for
/// one zone.
pub(crate) fn scan_sql(zone: &str, events: &str) -> String {
    let z = format!("'{zone}'");
    format!(
        "SELECT user_id, user_session, product_id, event_type,
                CAST(event_time AS BIGINT) AS t,
                CAST(CAST(event_date AS INT) AS BIGINT) AS utc_day,
                CAST(CAST(local_day(event_time, {z}) AS INT) AS BIGINT) AS day,
                CAST(date_part('hour', local_time(event_time, {z})) AS BIGINT) AS hour,
                category_level(category_code, 0) AS code, category_code, brand,
                CAST(price * 100 AS BIGINT) AS cents
         FROM {events}"
    )
}

/// Users' and sessions' states in one zone, as scans of their events fold them.
#[derive(Debug, Default)]
pub(crate) struct States {
    pub users: HashMap<i64, UserState>,
    pub sessions: HashMap<String, SessionState>,
}

impl States {
    /// Folds in a batch of [`scan_sql`]'s rows, each one human event.
    pub(crate) fn add_batch(&mut self, b: &RecordBatch) -> Result<()> {
        let c = Columns::new(b);
        let user = c.int64_array("user_id")?;
        let session = c.string_view_array("user_session")?;
        let product = c.int64_array("product_id")?;
        let kind = c.string_view_array("event_type")?;
        let t = c.int64_array("t")?;
        let utc_day = c.int64_array("utc_day")?;
        let day = c.int64_array("day")?;
        let hour = c.int64_array("hour")?;
        let code = c.string_view_array("code")?;
        let category_code = c.string_view_array("category_code")?;
        let brand = c.string_view_array("brand")?;
        let cents = c.int64_array("cents")?;
        for i in 0..b.num_rows() {
            let e = EventFacts {
                user: user.value(i),
                product: product.value(i),
                kind: Kind::of(kind.value(i)),
                at: t.value(i),
                utc_day: utc_day.value(i) as i32,
                day: day.value(i) as i32,
                hour: hour.value(i).clamp(0, 23) as u8,
                code: code.value(i),
                category_code: text(&category_code, i),
                brand: text(&brand, i),
                cents: if cents.is_valid(i) { cents.value(i) } else { 0 },
            };
            self.users.entry(e.user).or_default().add(&e);
            if let Some(s) = text(&session, i) {
                match self.sessions.get_mut(s) {
                    Some(state) => state.add(&e),
                    None => {
                        let mut state = SessionState::default();
                        state.add(&e);
                        self.sessions.insert(s.to_owned(), state);
                    }
                }
            }
        }
        Ok(())
    }

    /// Every user's and session's contribution to the summed marts.
    #[cfg(test)]
    pub(crate) fn sums(&self) -> Sums {
        let mut sums = Sums::default();
        for u in self.users.values() {
            u.contribute(1, &mut sums);
        }
        for s in self.sessions.values() {
            s.contribute(1, &mut sums);
        }
        sums.settle();
        sums
    }

    /// Every user's rows of `mart_items`.
    #[cfg(test)]
    pub(crate) fn items(&self) -> Vec<ItemRow> {
        self.users
            .iter()
            .flat_map(|(user, state)| state.items(*user))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;
    const HOUR: i64 = 3_600_000_000;

    /// An event in UTC: day, hour, kind, product, code.
    fn event(
        user: i64,
        day: i32,
        hour: u8,
        kind: Kind,
        product: i64,
        code: &str,
    ) -> EventFacts<'_> {
        EventFacts {
            user,
            product,
            kind,
            at: i64::from(day) * DAY + i64::from(hour) * HOUR + product,
            utc_day: day,
            day,
            hour,
            code,
            category_code: Some(code),
            brand: None,
            cents: 100 * product,
        }
    }

    /// The contributions of a set of users and sessions, each folded from its events.
    fn sums_of(events: &[EventFacts<'_>]) -> (Sums, Vec<ItemRow>) {
        let mut users: BTreeMap<i64, UserState> = BTreeMap::new();
        let mut sessions: BTreeMap<i64, SessionState> = BTreeMap::new();
        for e in events {
            users.entry(e.user).or_default().add(e);
            sessions
                .entry(e.user * 10 + i64::from(e.day))
                .or_default()
                .add(e);
        }
        let mut sums = Sums::default();
        let mut items = Vec::new();
        for (user, state) in &users {
            state.contribute(1, &mut sums);
            items.extend(state.items(*user));
        }
        for s in sessions.values() {
            s.contribute(1, &mut sums);
        }
        sums.settle();
        (sums, items)
    }

    #[test]
    fn a_user_counts_once_a_day_and_is_new_on_the_first() {
        let events = [
            event(1, 10, 3, Kind::Other, 1, "a.b"),
            event(1, 10, 4, Kind::Other, 2, "a.b"),
            event(1, 12, 3, Kind::Cart, 3, "a.c"),
            event(2, 12, 3, Kind::Other, 1, "a.b"),
        ];
        let (sums, _) = sums_of(&events);
        let d10 = sums.daily[&10];
        assert_eq!((d10.visitors, d10.events, d10.new_visitors), (1, 2, 1));
        let d12 = sums.daily[&12];
        assert_eq!((d12.visitors, d12.events, d12.new_visitors), (2, 2, 1));
        assert_eq!(
            (d12.sessions, d12.session_starts, d12.cart_sessions),
            (2, 2, 1)
        );
        assert_eq!(d12.abandoned_sessions, 1);
        // Level 1 ("a"), by hour 3: user 1 on days 10 and 12, user 2 on day 12.
        let at = |day, prev_day| VisitorKey {
            level: 1,
            by: By::Hour,
            bucket: 3,
            category: "a".into(),
            day,
            prev_day,
        };
        assert_eq!(sums.visitors[&at(10, None)], 1);
        assert_eq!(sums.visitors[&at(12, Some(10))], 1);
        assert_eq!(sums.visitors[&at(12, None)], 1);
    }

    #[test]
    fn taking_away_an_old_contribution_and_adding_the_new_is_recomputing() {
        let before = [
            event(1, 10, 3, Kind::Cart, 5, "x"),
            event(1, 11, 3, Kind::Other, 1, "x"),
        ];
        let more = [
            event(1, 9, 3, Kind::Other, 2, "x"),
            event(1, 12, 2, Kind::Purchase, 5, "x"),
            event(1, 12, 3, Kind::Cart, 5, "x"),
        ];
        let mut state = UserState::default();
        before.iter().for_each(|e| state.add(e));
        let mut sums = sums_of(&before).0;
        state.contribute(-1, &mut sums);
        more.iter().for_each(|e| state.add(e));
        state.contribute(1, &mut sums);
        // Sessions are per (user, day) here and untouched but for the new days.
        let all: Vec<EventFacts<'_>> = before.iter().chain(&more).copied().collect();
        let mut want = sums_of(&all).0;
        for day in [9, 12] {
            let mut s = SessionState::default();
            all.iter().filter(|e| e.day == day).for_each(|e| s.add(e));
            s.contribute(-1, &mut want);
        }
        want.settle();
        sums.settle();
        assert_eq!(sums, want);
        // The cart of day 10 is recovered by the purchase on day 12; day 12's own cart
        // (after that purchase) is not.
        let items = state.items(1);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].next_purchase, Some(12 * DAY + 2 * HOUR + 5));
        assert_eq!(
            (items[1].prev_day, items[1].next_purchase),
            (Some(10), None)
        );
    }

    #[test]
    fn a_bot_day_dropped_leaves_the_rest() {
        let mut state = UserState::default();
        let events = [
            event(1, 10, 3, Kind::Cart, 5, "x"),
            event(1, 11, 3, Kind::Purchase, 5, "x"),
        ];
        events.iter().for_each(|e| state.add(e));
        state.drop_days(&BTreeSet::from([11]));
        let mut rest = UserState::default();
        rest.add(&events[0]);
        assert_eq!(state, rest);
        assert_eq!(state.items(1)[0].next_purchase, None);
        let mut s = SessionState::default();
        events.iter().for_each(|e| s.add(e));
        s.drop_days(1, &BTreeSet::from([10]));
        assert_eq!(s.parts.len(), 1);
        let mut sums = Sums::default();
        s.contribute(1, &mut sums);
        assert_eq!(sums.daily[&11].session_starts, 1);
        assert_eq!(sums.daily[&11].cart_sessions, 0);
    }

    /// Folding every user's and session's events and summing their contributions gives the
    /// marts the full build writes, in zones with whole and half-hour offsets and with bot
    /// verdicts in the lake.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contributions_summed_over_everyone_are_the_full_build() {
        use shoplake_lake::{BotFlag, ImportSource, Lake, LakeOptions};

        let dir = tempfile::tempdir().unwrap();
        let events: Vec<shoplake_events::Event> =
            shoplake_simulate::Generator::new(&shoplake_simulate::Options {
                seed: 5,
                events: Some(40_000),
                days: Some(3),
                ..shoplake_simulate::Options::default()
            })
            .unwrap()
            .collect();
        let csv = dir.path().join("events.csv");
        let mut enc =
            shoplake_events::CsvEncoder::new(std::fs::File::create(&csv).unwrap(), false).unwrap();
        events.iter().for_each(|e| enc.write(e).unwrap());
        enc.finish().unwrap();
        let lake = Lake::open(LakeOptions {
            root: dir.path().join("lake").display().to_string(),
            ..LakeOptions::default()
        })
        .unwrap();
        let clock = std::sync::Arc::new(shoplake_events::FixedClock(1_795_824_000_000_000));
        lake.import(vec![ImportSource::Path(csv)])
            .with_validator(shoplake_events::Validator::new(clock))
            .await
            .unwrap();
        let flags: Vec<BotFlag> = events
            .iter()
            .step_by(997)
            .map(|e| BotFlag {
                user_id: e.user_id,
                day: BotFlag::day_of(e.event_time),
                rule: "user_burst".into(),
                incident_id: format!("i-{}", e.user_id),
                flagged_at: 1,
            })
            .collect();
        lake.add_bot_flags(&flags).await.unwrap();
        let zones = [chrono_tz::Tz::Europe__Berlin, chrono_tz::Tz::Asia__Kolkata];
        crate::marts::refresh(&lake, &zones).await.unwrap();
        let engine = crate::Engine::open(&lake).await.unwrap();
        let day = |c: &str| format!("CAST(CAST({c} AS INT) AS BIGINT) AS {c}");
        for zone in ["UTC", "Europe/Berlin", "Asia/Kolkata"] {
            let mut states = States::default();
            let sql = scan_sql(zone, crate::relations::HUMAN_EVENTS);
            for b in engine.run(&sql).await.unwrap().batches {
                states.add_batch(&b).unwrap();
            }
            let sums = states.sums();

            let out = engine
                .run(&format!(
                    "SELECT {d}, visitors, sessions, events, new_visitors, session_starts,
                            cart_sessions, abandoned_sessions
                     FROM mart_daily WHERE zone = '{zone}'",
                    d = day("day")
                ))
                .await
                .unwrap();
            let mut daily = BTreeMap::new();
            for b in &out.batches {
                let c = Columns::new(b);
                let col = |n: &str| c.i64(n).unwrap();
                let (d, v, s, e, n) = (
                    col("day"),
                    col("visitors"),
                    col("sessions"),
                    col("events"),
                    col("new_visitors"),
                );
                let (st, cs, ab) = (
                    col("session_starts"),
                    col("cart_sessions"),
                    col("abandoned_sessions"),
                );
                for i in 0..b.num_rows() {
                    let row = Daily {
                        visitors: v[i].unwrap(),
                        sessions: s[i].unwrap(),
                        events: e[i].unwrap(),
                        new_visitors: n[i].unwrap(),
                        session_starts: st[i].unwrap(),
                        cart_sessions: cs[i].unwrap(),
                        abandoned_sessions: ab[i].unwrap(),
                    };
                    daily.insert(d[i].unwrap() as i32, row);
                }
            }
            assert!(daily.len() >= 3, "{zone}: {daily:?}");
            assert_eq!(daily, sums.daily, "mart_daily in {zone}");

            let out = engine
                .run(&format!(
                    "SELECT level, \"by\", bucket, category, {d}, {p}, visitors
                     FROM mart_category_visitors WHERE zone = '{zone}'",
                    d = day("day"),
                    p = day("prev_day")
                ))
                .await
                .unwrap();
            let mut visitors = HashMap::new();
            for b in &out.batches {
                let c = Columns::new(b);
                let (level, by, bucket) = (
                    c.i64("level").unwrap(),
                    c.str("by").unwrap(),
                    c.i64("bucket").unwrap(),
                );
                let (category, d, p, n) = (
                    c.str("category").unwrap(),
                    c.i64("day").unwrap(),
                    c.i64("prev_day").unwrap(),
                    c.i64("visitors").unwrap(),
                );
                for i in 0..b.num_rows() {
                    let key = VisitorKey {
                        level: level[i].unwrap() as u8,
                        by: if by[i].as_deref() == Some(By::Hour.name()) {
                            By::Hour
                        } else {
                            By::Weekday
                        },
                        bucket: bucket[i].unwrap() as u8,
                        category: category[i].clone().unwrap(),
                        day: d[i].unwrap() as i32,
                        prev_day: p[i].map(|p| p as i32),
                    };
                    visitors.insert(key, n[i].unwrap());
                }
            }
            assert_eq!(visitors.len(), sums.visitors.len(), "{zone}");
            assert_eq!(visitors, sums.visitors, "mart_category_visitors in {zone}");

            let out = engine
                .run(&format!(
                    "SELECT {d}, user_id, product_id, carted, price_cents, brand, category_code,
                            {p}, next_purchase
                     FROM mart_items WHERE zone = '{zone}'",
                    d = day("day"),
                    p = day("prev_day")
                ))
                .await
                .unwrap();
            type Row = (
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
            let mut items: Vec<Row> = Vec::new();
            for b in &out.batches {
                let c = Columns::new(b);
                let (d, u, p, t, cents) = (
                    c.i64("day").unwrap(),
                    c.i64("user_id").unwrap(),
                    c.i64("product_id").unwrap(),
                    c.i64("carted").unwrap(),
                    c.i64("price_cents").unwrap(),
                );
                let (brand, code, prev, next) = (
                    c.str("brand").unwrap(),
                    c.str("category_code").unwrap(),
                    c.i64("prev_day").unwrap(),
                    c.i64("next_purchase").unwrap(),
                );
                for i in 0..b.num_rows() {
                    items.push((
                        d[i].unwrap() as i32,
                        u[i].unwrap(),
                        p[i].unwrap(),
                        t[i].unwrap(),
                        cents[i].unwrap(),
                        brand[i].clone(),
                        code[i].clone(),
                        prev[i].map(|p| p as i32),
                        next[i],
                    ));
                }
            }
            let mut want: Vec<Row> = states
                .items()
                .into_iter()
                .map(|r| {
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
                })
                .collect();
            items.sort();
            want.sort();
            assert!(!items.is_empty());
            assert_eq!(items, want, "mart_items in {zone}");
        }
    }

    #[test]
    fn weekdays_start_on_monday() {
        // 2019-10-01 (day 18,170) was a Tuesday.
        assert_eq!(weekday(18_170), 1);
        assert_eq!(weekday(0), 3);
        assert_eq!(weekday(-1), 2);
    }
}
