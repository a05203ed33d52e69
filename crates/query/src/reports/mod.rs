//! The four reports, exactly as defined in DESIGN.md section 4, computed with SQL over
//! `events`. Each returns plain structs (serialized with stable, documented field names) so
//! the CLI, the HTTP API and the dashboard share them.

mod abandonment;
mod activity;
mod bots;
mod brands;
mod categories;
mod request;
mod visitors;

pub use abandonment::{
    Abandonment, AbandonmentOptions, ItemStatus, Retarget, SessionDay, TopName, TopProduct,
};
pub use activity::{ActivityCell, activity};
pub use bots::{BotDay, bots};
pub use brands::{BrandClass, BrandRow, BrandsOptions, brands};
pub use categories::{
    Bucketing, CategoriesOptions, CategoryRow, Level, Metric, WEEKDAYS, bucket_label, categories,
};
pub use request::{
    AsOf, DEFAULT_RETARGET_ROWS, REPORTS, ReportAnswer, ReportKind, ReportParams, ReportRequest,
};
pub use visitors::{VisitorsDay, visitors};

pub use abandonment::abandonment;

pub use crate::columns::Columns;
use crate::error::Result;
use crate::range::ReportRange;
pub(crate) use crate::relations::HUMAN_EVENTS;

/// Where a report's figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// The marts when they are up to date for the zone, else `events`.
    #[default]
    Auto,
    /// Always `events`.
    Events,
    /// The marts; an error when they are not up to date for the zone.
    Marts,
}

impl std::str::FromStr for Source {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Source> {
        match s {
            "auto" => Ok(Source::Auto),
            "events" => Ok(Source::Events),
            "marts" => Ok(Source::Marts),
            _ => Err(crate::Error::Argument(format!(
                "source {s:?}: expected auto, events or marts"
            ))),
        }
    }
}

/// What every report takes: the range and zone, and whether to count bot traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportScope {
    /// Marts or `events` (parts of a report the marts do not hold always come from `events`).
    pub source: Source,
    /// Local days and zone.
    pub range: ReportRange,
    /// Count every event, also from users flagged as bots. By default (humans only) a report
    /// leaves out every event of a user on a UTC day `bot_flags` flags it for (real-time
    /// detection writes them, and `shoplake detect --flag` over history); a lake without
    /// flags gives the same numbers either way.
    pub all_traffic: bool,
}

/// A session's identity, exact and compact: a canonical lower-case UUID (every REES46 session
/// is one) as its 128 bits; any other text as itself.
pub(crate) fn uuid_bits(s: &[u8]) -> Option<u128> {
    let s: &[u8; 36] = s.try_into().ok()?;
    if s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
        return None;
    }
    // Table lookups at fixed places, no branch per character (this runs for every row).
    let mut bad = 0u8;
    let mut half = |places: &[usize; 16]| {
        let mut v = 0u64;
        for &i in places {
            let d = HEX[usize::from(s[i])];
            bad |= d;
            v = (v << 4) | u64::from(d & 0xf);
        }
        v
    };
    let hi = half(&[0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17]);
    let lo = half(&[
        19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35,
    ]);
    (bad & 0xf0 == 0).then_some((u128::from(hi) << 64) | u128::from(lo))
}

/// The value of each lower-case hex digit; `0xff` for every other byte.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// A small direct-mapped table in front of a large aggregation: rows of one key come close
/// together in `events` (a session's events lie minutes apart in files written in time
/// order), so most rows fold into an entry here, in the processor's cache, and the
/// large table (hundreds of megabytes, a cache miss per access) sees each key about once,
/// when its entry is evicted. Exact whatever the order: an evicted entry is merged, not lost.
pub(crate) struct FrontCache<K, V> {
    slots: Vec<Option<(K, V)>>,
}

/// Entries of a [`FrontCache`]: 16 Ki, a few hundred kilobytes.
const FRONT_SLOTS: usize = 1 << 14;

impl<K: PartialEq + Copy, V> FrontCache<K, V> {
    pub(crate) fn new() -> FrontCache<K, V> {
        FrontCache {
            slots: (0..FRONT_SLOTS).map(|_| None).collect(),
        }
    }

    /// Folds `value` into the entry of `key` (`hash` picks its slot): `fold` when the key is
    /// there; otherwise the slot's entry is handed to `evict` and `key` takes the slot with
    /// `value`.
    pub(crate) fn fold(
        &mut self,
        hash: u64,
        key: K,
        value: V,
        fold: impl FnOnce(&mut V, V),
        evict: impl FnOnce(K, V),
    ) {
        let slot = &mut self.slots[(hash >> 50) as usize & (FRONT_SLOTS - 1)];
        match slot {
            Some((k, v)) if *k == key => fold(v, value),
            _ => {
                if let Some((k, v)) = slot.replace((key, value)) {
                    evict(k, v);
                }
            }
        }
    }

    /// Hands every entry to `evict`, leaving the cache empty.
    pub(crate) fn drain(&mut self, mut evict: impl FnMut(K, V)) {
        for (k, v) in self.slots.iter_mut().filter_map(Option::take) {
            evict(k, v);
        }
    }
}

/// A well-mixed 64-bit hash of a 128-bit key (for [`FrontCache`] slots).
pub(crate) fn mix(key: u128) -> u64 {
    ((key as u64) ^ ((key >> 64) as u64).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A date in days since 1970-01-01 as `YYYY-MM-DD` (as SQL casts a date to text).
pub(crate) fn day_string(days: i32) -> String {
    // chrono counts days from 0001-01-01 as day 1.
    chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163)
        .map(|d| d.to_string())
        .unwrap_or_default()
}

/// Counts are never negative; a missing one is zero.
pub(crate) fn count(v: Option<i64>) -> u64 {
    v.unwrap_or(0).max(0) as u64
}

/// Cents to currency units.
pub(crate) fn money(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// `a / b`, or `None` when `b` is zero.
pub(crate) fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0).then(|| a / b)
}

/// Whether this report leaves out flagged user-days: humans only, and flags in the lake.
async fn leaves_out_bots(engine: &crate::Engine, scope: &ReportScope) -> Result<bool> {
    if scope.all_traffic {
        return Ok(false);
    }
    engine.has_bot_flags().await
}

/// The relation a report reads events from: `events`, or for humans only, `events` without
/// the user-days flagged in `bot_flags`.
pub(crate) async fn events_relation(
    engine: &crate::Engine,
    scope: &ReportScope,
) -> Result<&'static str> {
    Ok(if leaves_out_bots(engine, scope).await? {
        HUMAN_EVENTS
    } else {
        "events"
    })
}

/// Whether this report reads the marts. The marts count humans only: an all-traffic report
/// over a lake with bot flags reads `events`.
pub(crate) async fn use_marts(engine: &crate::Engine, scope: &ReportScope) -> Result<bool> {
    if scope.source != Source::Events && scope.all_traffic && engine.has_bot_flags().await? {
        if scope.source == Source::Marts {
            return Err(crate::Error::Argument(
                "the marts count humans only and this lake has bot flags: an all-traffic report \
                 reads events (use source auto or events, or count humans only)"
                    .to_owned(),
            ));
        }
        return Ok(false);
    }
    match scope.source {
        Source::Events => Ok(false),
        Source::Auto => crate::stamp::fresh(engine, scope.range.tz).await,
        Source::Marts => {
            if crate::stamp::fresh(engine, scope.range.tz).await? {
                Ok(true)
            } else {
                Err(crate::Error::Argument(format!(
                    "the marts are not up to date for zone {0}: run `shoplake marts rebuild --tz {0}`",
                    scope.range.zone()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_told_apart_exactly() {
        let a = b"72d76fde-8bb3-4e00-8c23-a032dfed738c";
        assert_eq!(uuid_bits(a), Some(0x72d76fde_8bb3_4e00_8c23_a032dfed738c));
        // Upper case, a missing dash, another length: kept as text, never folded together
        // with the lower-case UUID.
        assert_eq!(uuid_bits(b"72D76FDE-8BB3-4E00-8C23-A032DFED738C"), None);
        assert_eq!(uuid_bits(b"72d76fde08bb3-4e00-8c23-a032dfed738c"), None);
        assert_eq!(uuid_bits(b"session-1"), None);
        assert_eq!(uuid_bits(b"72d76fde-8bb3-4e00-8c23-a032dfed738g"), None);
        assert_eq!(uuid_bits(b"g2d76fde-8bb3-4e00-8c23-a032dfed738c"), None);
        assert_eq!(uuid_bits(b"00000000-0000-0000-0000-000000000000"), Some(0));
        assert_eq!(
            uuid_bits(b"ffffffff-ffff-ffff-ffff-ffffffffffff"),
            Some(u128::MAX)
        );
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(day_string(18_170), "2019-10-01");
        assert_eq!(day_string(-1), "1969-12-31");
    }
}
