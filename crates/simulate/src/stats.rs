//! Measures a stream of events against the calibration facts of DESIGN.md section 2.
//!
//! Used by the calibration test and by `bench/calibrate.sh`, which prints the same table for
//! any generated (or real) file.

use std::collections::{HashMap, HashSet};
use std::fmt;

use shoplake_events::time::{MICROS_PER_DAY, MICROS_PER_SECOND};
use shoplake_events::{Event, EventId, EventType};

#[derive(Default)]
struct SessionAcc {
    events: u64,
    first: i64,
    last: i64,
    cart: bool,
    purchase: bool,
}

/// Accumulates the statistics of an event stream.
#[derive(Default)]
pub struct Profile {
    rows: u64,
    by_type: [u64; 4],
    code_null: u64,
    brand_null: u64,
    purchase_prices: Vec<i64>,
    sessions: HashMap<String, SessionAcc>,
    users: HashSet<i64>,
    buyers: HashSet<i64>,
    products: HashSet<i64>,
    categories: HashSet<i64>,
    brands: HashSet<String>,
    duplicates: u64,
    second: i64,
    seen_in_second: HashSet<EventId>,
    unsorted: u64,
    last_time: i64,
    local_hours: [u64; 24],
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile").field("rows", &self.rows).finish()
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

impl Profile {
    /// An empty profile.
    pub fn new() -> Profile {
        Profile::default()
    }

    /// Adds one event.
    pub fn add(&mut self, e: &Event) {
        self.rows += 1;
        if e.event_time < self.last_time {
            self.unsorted += 1;
        }
        self.last_time = e.event_time;
        let second = e.event_time.div_euclid(MICROS_PER_SECOND);
        if second != self.second {
            self.second = second;
            self.seen_in_second.clear();
        }
        if !self.seen_in_second.insert(e.event_id()) {
            self.duplicates += 1;
        }
        self.by_type[EventType::ALL
            .iter()
            .position(|t| *t == e.event_type)
            .unwrap_or(0)] += 1;
        self.code_null += u64::from(e.category_code.is_none());
        self.brand_null += u64::from(e.brand.is_none());
        if e.event_type == EventType::Purchase {
            self.purchase_prices.push(e.price.cents());
            self.buyers.insert(e.user_id);
        }
        self.users.insert(e.user_id);
        self.products.insert(e.product_id);
        self.categories.insert(e.category_id);
        if let Some(b) = &e.brand
            && !self.brands.contains(b)
        {
            self.brands.insert(b.clone());
        }
        let local = e.event_time + 3 * 3600 * MICROS_PER_SECOND;
        self.local_hours
            [(local.rem_euclid(MICROS_PER_DAY) / (3600 * MICROS_PER_SECOND)) as usize] += 1;
        let key = e.user_session.clone().unwrap_or_default();
        let s = self.sessions.entry(key).or_insert_with(|| SessionAcc {
            first: e.event_time,
            ..SessionAcc::default()
        });
        s.events += 1;
        s.last = e.event_time;
        s.cart |= e.event_type == EventType::Cart;
        s.purchase |= e.event_type == EventType::Purchase;
    }

    /// The facts measured so far.
    pub fn facts(&self) -> Facts {
        let rows = self.rows.max(1) as f64;
        let mut prices: Vec<f64> = self
            .purchase_prices
            .iter()
            .map(|&c| c as f64 / 100.0)
            .collect();
        prices.sort_by(f64::total_cmp);
        let mut lengths: Vec<f64> = self.sessions.values().map(|s| s.events as f64).collect();
        lengths.sort_by(f64::total_cmp);
        let mut durations: Vec<f64> = self
            .sessions
            .values()
            .map(|s| (s.last - s.first) as f64 / MICROS_PER_SECOND as f64)
            .collect();
        durations.sort_by(f64::total_cmp);
        let cart_sessions = self.sessions.values().filter(|s| s.cart).count() as f64;
        let converted = self
            .sessions
            .values()
            .filter(|s| s.cart && s.purchase)
            .count() as f64;
        let sessions = self.sessions.len().max(1) as f64;
        let users = self.users.len().max(1) as f64;
        let hours = self.local_hours;
        let peak_hour = (0..24).max_by_key(|&h| hours[h]).unwrap_or(0);
        let trough_hour = (0..24).min_by_key(|&h| hours[h]).unwrap_or(0);
        Facts {
            rows: self.rows,
            view_share: self.by_type[0] as f64 / rows,
            cart_share: self.by_type[1] as f64 / rows,
            remove_share: self.by_type[2] as f64 / rows,
            purchase_share: self.by_type[3] as f64 / rows,
            category_code_null: self.code_null as f64 / rows,
            brand_null: self.brand_null as f64 / rows,
            price_min: prices.first().copied().unwrap_or(f64::NAN),
            price_median: quantile(&prices, 0.5),
            price_mean: prices.iter().sum::<f64>() / prices.len().max(1) as f64,
            price_p75: quantile(&prices, 0.75),
            price_max: prices.last().copied().unwrap_or(f64::NAN),
            session_mean: lengths.iter().sum::<f64>() / sessions,
            session_median: quantile(&lengths, 0.5),
            session_p90: quantile(&lengths, 0.9),
            session_p95: quantile(&lengths, 0.95),
            single_event_sessions: lengths.iter().filter(|&&l| l == 1.0).count() as f64 / sessions,
            session_duration_median_s: quantile(&durations, 0.5),
            users: self.users.len() as u64,
            sessions: self.sessions.len() as u64,
            products: self.products.len() as u64,
            categories: self.categories.len() as u64,
            brands: self.brands.len() as u64,
            sessions_per_user: sessions / users,
            events_per_user: rows / users,
            buyer_share: self.buyers.len() as f64 / users,
            cart_conversion: converted / cart_sessions.max(1.0),
            duplicate_share: self.duplicates as f64 / rows,
            unsorted: self.unsorted,
            peak_local_hour: peak_hour as u32,
            trough_local_hour: trough_hour as u32,
            peak_to_trough: hours[peak_hour] as f64 / hours[trough_hour].max(1) as f64,
        }
    }
}

/// Measured facts of an event stream.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct Facts {
    pub rows: u64,
    pub view_share: f64,
    pub cart_share: f64,
    pub remove_share: f64,
    pub purchase_share: f64,
    pub category_code_null: f64,
    pub brand_null: f64,
    pub price_min: f64,
    pub price_median: f64,
    pub price_mean: f64,
    pub price_p75: f64,
    pub price_max: f64,
    pub session_mean: f64,
    pub session_median: f64,
    pub session_p90: f64,
    pub session_p95: f64,
    pub single_event_sessions: f64,
    pub session_duration_median_s: f64,
    pub users: u64,
    pub sessions: u64,
    pub products: u64,
    pub categories: u64,
    pub brands: u64,
    pub sessions_per_user: f64,
    pub events_per_user: f64,
    pub buyer_share: f64,
    pub cart_conversion: f64,
    pub duplicate_share: f64,
    pub unsorted: u64,
    pub peak_local_hour: u32,
    pub trough_local_hour: u32,
    pub peak_to_trough: f64,
}

/// One fact against its target and tolerance band.
#[derive(Debug, Clone)]
pub struct Check {
    /// What is measured.
    pub name: &'static str,
    /// The real data's value (or the expectation).
    pub target: String,
    /// The accepted band, inclusive.
    pub band: (f64, f64),
    /// The measured value.
    pub value: f64,
}

impl Check {
    /// Whether the value is inside the band.
    pub fn ok(&self) -> bool {
        self.value >= self.band.0 && self.value <= self.band.1
    }
}

impl Facts {
    /// The calibration checks: each fact of DESIGN.md section 2 with its tolerance band.
    /// `remove_share` is the generator's configured share of `remove_from_cart` events.
    // Long: the table of DESIGN's facts, one entry per checked fact.
    pub fn checks(&self, remove_share: f64) -> Vec<Check> {
        let c = |name, target: &str, lo, hi, value| Check {
            name,
            target: target.to_owned(),
            band: (lo, hi),
            value,
        };
        // With removals, views give up their share; the other types keep the real mix.
        let view = 0.961 - remove_share;
        vec![
            c(
                "view share",
                &format!("{view:.3}"),
                view - 0.015,
                view + 0.015,
                self.view_share,
            ),
            c(
                "cart share",
                "0.022 (Oct) – 0.045 (Nov)",
                0.018,
                0.045,
                self.cart_share,
            ),
            c(
                "purchase share",
                "0.0175 (Oct) / 0.014 (Nov)",
                0.013,
                0.021,
                self.purchase_share,
            ),
            c(
                "remove_from_cart share",
                &format!("{remove_share}"),
                remove_share * 0.7,
                remove_share * 1.3,
                self.remove_share,
            ),
            c(
                "category_code null",
                "0.318",
                0.29,
                0.345,
                self.category_code_null,
            ),
            c("brand null", "0.144", 0.12, 0.17, self.brand_null),
            c("purchase price min", "0.77", 0.77, 5.0, self.price_min),
            c(
                "purchase price median",
                "174.78",
                140.0,
                210.0,
                self.price_median,
            ),
            c(
                "purchase price mean",
                "304.35",
                250.0,
                360.0,
                self.price_mean,
            ),
            c("purchase price p75", "374.72", 300.0, 450.0, self.price_p75),
            c(
                "purchase price max",
                "2574.07 (cap)",
                1500.0,
                2574.07,
                self.price_max,
            ),
            c(
                "events per session, mean",
                "4.6",
                4.0,
                5.2,
                self.session_mean,
            ),
            c(
                "events per session, median",
                "2",
                2.0,
                2.0,
                self.session_median,
            ),
            c("events per session, p90", "11", 9.0, 13.0, self.session_p90),
            c(
                "events per session, p95",
                "16",
                13.0,
                19.0,
                self.session_p95,
            ),
            c(
                "single-event sessions",
                "0.406",
                0.37,
                0.44,
                self.single_event_sessions,
            ),
            c(
                "session duration median (s)",
                "42",
                25.0,
                65.0,
                self.session_duration_median_s,
            ),
            c(
                "sessions per user",
                "3.06 (month)",
                1.3,
                3.5,
                self.sessions_per_user,
            ),
            c(
                "users who purchase",
                "0.115 (month)",
                0.04,
                0.14,
                self.buyer_share,
            ),
            c(
                "cart sessions converting",
                "0.37 – 0.49",
                0.37,
                0.49,
                self.cart_conversion,
            ),
            c(
                "exact-duplicate rows",
                "0.0034",
                0.0015,
                0.006,
                self.duplicate_share,
            ),
            c(
                "rows out of time order",
                "0",
                0.0,
                0.0,
                self.unsorted as f64,
            ),
            c(
                "busiest local hour (UTC+3)",
                "evening, 16–22",
                16.0,
                22.0,
                f64::from(self.peak_local_hour),
            ),
            c(
                "quietest local hour (UTC+3)",
                "night, 1–6",
                1.0,
                6.0,
                f64::from(self.trough_local_hour),
            ),
        ]
    }
}

/// Prints checks as an aligned table.
pub fn format_checks(checks: &[Check]) -> String {
    let mut out = format!(
        "{:<32} {:>12} {:>22} {:>26}\n",
        "fact", "measured", "band", "real data"
    );
    for c in checks {
        out.push_str(&format!(
            "{:<32} {:>12.4} {:>22} {:>26} {}\n",
            c.name,
            c.value,
            format!("[{}, {}]", trim(c.band.0), trim(c.band.1)),
            c.target,
            if c.ok() { "ok" } else { "OUT OF BAND" }
        ));
    }
    out
}

fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}
