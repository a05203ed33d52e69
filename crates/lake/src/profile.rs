//! The data-quality profile of an import (DataBrew's profile job): counts, rejects by reason,
//! duplicates, null rates, distinct counts, price distribution, event-type mix, time range and
//! rows per day. Computed in one pass over the accepted rows.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;

use arrow::array::{
    Array, Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use serde::{Deserialize, Serialize};
use shoplake_events::arrow::required_column;
use shoplake_events::time::{MICROS_PER_DAY, civil_from_days, format_timestamp};
use shoplake_events::{EventType, Reject};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};

/// SplitMix64's finalizer: a full-avalanche hash of an integer, much cheaper than hashing its
/// bytes.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes integer keys with [`mix64`] (the price map is on the per-row path).
#[derive(Default)]
struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 ^= v as u64;
    }
}

/// A HyperLogLog sketch with 4096 registers (about 1.6 % standard error) for distinct counts
/// in constant memory.
#[derive(Clone)]
struct Distinct {
    registers: Box<[u8; 4096]>,
}

impl Distinct {
    fn new() -> Distinct {
        Distinct {
            registers: Box::new([0; 4096]),
        }
    }

    fn add_hash(&mut self, h: u64) {
        let index = (h >> 52) as usize;
        let rank = ((h << 12) | (1 << 11)).leading_zeros() as u8 + 1;
        if rank > self.registers[index] {
            self.registers[index] = rank;
        }
    }

    fn add(&mut self, bytes: &[u8]) {
        self.add_hash(xxh3_64(bytes));
    }

    fn add_i64(&mut self, v: i64) {
        self.add_hash(mix64(v as u64));
    }

    fn estimate(&self) -> u64 {
        let m = self.registers.len() as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = self
            .registers
            .iter()
            .map(|&r| 2f64.powi(-i32::from(r)))
            .sum();
        let raw = alpha * m * m / sum;
        let zeros = self.registers.iter().filter(|&&r| r == 0).count();
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

/// Accumulates a profile.
pub struct Profiler {
    rows_read: u64,
    duplicates: u64,
    rejects: BTreeMap<String, u64>,
    accepted: u64,
    nulls: [u64; 5],
    users: Distinct,
    sessions: Distinct,
    products: Distinct,
    categories: Distinct,
    brands: Distinct,
    /// Rows per price in cents (a hash map on the hot path, sorted when finished).
    prices: HashMap<i64, u64, BuildHasherDefault<IntHasher>>,
    price_sum: i128,
    types: [u64; 4],
    first: i64,
    last: i64,
    days: BTreeMap<i64, u64>,
    /// The day being counted and its rows so far (rows come mostly in time order), not yet
    /// in `days`.
    day: Option<(i64, u64)>,
}

impl std::fmt::Debug for Profiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profiler")
            .field("rows_read", &self.rows_read)
            .finish()
    }
}

impl Default for Profiler {
    fn default() -> Self {
        Profiler {
            rows_read: 0,
            duplicates: 0,
            rejects: BTreeMap::new(),
            accepted: 0,
            nulls: [0; 5],
            users: Distinct::new(),
            sessions: Distinct::new(),
            products: Distinct::new(),
            categories: Distinct::new(),
            brands: Distinct::new(),
            prices: HashMap::default(),
            price_sum: 0,
            types: [0; 4],
            first: i64::MAX,
            last: i64::MIN,
            days: BTreeMap::new(),
            day: None,
        }
    }
}

/// A reject's reason with the quoted value taken out, so reasons group:
/// `price: "abc" is not a decimal number` → `price: … is not a decimal number`.
pub fn reason_kind(r: &Reject) -> String {
    let mut out = String::new();
    if let Some(f) = r.field {
        out.push_str(f);
        out.push_str(": ");
    }
    let mut in_quote = false;
    let mut escaped = false;
    for c in r.reason.chars() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
                out.push('…');
            }
        } else if c == '"' {
            in_quote = true;
        } else if c.is_ascii_digit()
            && out.ends_with(|p: char| p.is_ascii_digit() || p == ' ')
            && !out.ends_with(": ")
        {
            // Counts in reasons ("has 3 fields") vary; keep the words.
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out.replace("……", "…")
}

impl Profiler {
    /// A new, empty profile.
    pub fn new() -> Profiler {
        Profiler::default()
    }

    /// Counts a refused row.
    pub fn reject(&mut self, r: &Reject) {
        self.rows_read += 1;
        *self.rejects.entry(reason_kind(r)).or_default() += 1;
    }

    /// Counts an exact duplicate that was dropped.
    pub fn duplicate(&mut self) {
        self.rows_read += 1;
        self.duplicates += 1;
    }

    /// Counts the accepted rows of a batch of events: those whose `keep` is true.
    pub fn accept_batch(&mut self, batch: &RecordBatch, keep: &[bool]) -> Result<()> {
        fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
            required_column(batch, name).map_err(|e| Error::Internal(format!("profiling: {e}")))
        }
        if keep.len() != batch.num_rows() {
            return Err(Error::Internal(format!(
                "profiling: {} flags for {} rows",
                keep.len(),
                batch.num_rows()
            )));
        }
        let time = column::<TimestampMicrosecondArray>(batch, "event_time")?;
        let kind = column::<StringArray>(batch, "event_type")?;
        let product = column::<Int64Array>(batch, "product_id")?;
        let category = column::<Int64Array>(batch, "category_id")?;
        let brand = column::<StringArray>(batch, "brand")?;
        let price = column::<Decimal128Array>(batch, "price")?;
        let user = column::<Int64Array>(batch, "user_id")?;
        let session = column::<StringArray>(batch, "user_session")?;
        let rows = || (0..batch.num_rows()).filter(|&i| keep[i]);
        let kept = rows().count() as u64;
        self.rows_read += kept;
        self.accepted += kept;
        for (slot, name) in [
            "category_code",
            "brand",
            "user_session",
            "client_ip",
            "user_agent",
        ]
        .into_iter()
        .enumerate()
        {
            let a = column::<StringArray>(batch, name)?;
            if a.null_count() > 0 {
                self.nulls[slot] += rows().filter(|&i| a.is_null(i)).count() as u64;
            }
        }
        for i in rows() {
            self.users.add_i64(user.value(i));
            self.products.add_i64(product.value(i));
            self.categories.add_i64(category.value(i));
        }
        for i in rows() {
            if session.is_valid(i) {
                self.sessions.add(session.value(i).as_bytes());
            }
            if brand.is_valid(i) {
                self.brands.add(brand.value(i).as_bytes());
            }
        }
        for i in rows() {
            let cents = price.value(i) as i64;
            *self.prices.entry(cents).or_default() += 1;
            self.price_sum += i128::from(cents);
            let slot = match kind.value(i) {
                "cart" => 1,
                "remove_from_cart" => 2,
                "purchase" => 3,
                _ => 0,
            };
            self.types[slot] += 1;
        }
        for i in rows() {
            let t = time.value(i);
            self.first = self.first.min(t);
            self.last = self.last.max(t);
            let day = t.div_euclid(MICROS_PER_DAY);
            match &mut self.day {
                Some((d, n)) if *d == day => *n += 1,
                current => {
                    if let Some((d, n)) = current.replace((day, 1)) {
                        *self.days.entry(d).or_default() += n;
                    }
                }
            }
        }
        Ok(())
    }

    fn price_quantile(sorted: &[(i64, u64)], q: f64) -> Option<f64> {
        let total: u64 = sorted.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let target = ((total - 1) as f64 * q).round() as u64;
        let mut seen = 0;
        for &(cents, n) in sorted {
            seen += n;
            if seen > target {
                return Some(cents as f64 / 100.0);
            }
        }
        None
    }

    /// The finished profile.
    pub fn finish(&self) -> Profile {
        let rate = |n: u64| {
            if self.accepted == 0 {
                0.0
            } else {
                n as f64 / self.accepted as f64
            }
        };
        let mut prices: Vec<(i64, u64)> = self.prices.iter().map(|(&c, &n)| (c, n)).collect();
        prices.sort_unstable();
        let quantile = |q| Profiler::price_quantile(&prices, q);
        let columns = [
            "category_code",
            "brand",
            "user_session",
            "client_ip",
            "user_agent",
        ];
        Profile {
            rows_read: self.rows_read,
            rows_accepted: self.accepted,
            rows_rejected: self.rejects.values().sum(),
            duplicates: self.duplicates,
            rejects_by_reason: self.rejects.clone(),
            null_rate: columns
                .iter()
                .zip(self.nulls)
                .map(|(c, n)| ((*c).to_owned(), rate(n)))
                .collect(),
            distinct: [
                ("user_id", &self.users),
                ("user_session", &self.sessions),
                ("product_id", &self.products),
                ("category_id", &self.categories),
                ("brand", &self.brands),
            ]
            .into_iter()
            .map(|(c, d)| (c.to_owned(), d.estimate()))
            .collect(),
            price: PriceProfile {
                min: prices.first().map(|&(c, _)| c as f64 / 100.0),
                p25: quantile(0.25),
                median: quantile(0.5),
                p75: quantile(0.75),
                p95: quantile(0.95),
                max: prices.last().map(|&(c, _)| c as f64 / 100.0),
                mean: (self.accepted > 0)
                    .then(|| self.price_sum as f64 / self.accepted as f64 / 100.0),
            },
            event_types: EventType::ALL
                .iter()
                .zip(self.types)
                .map(|(t, n)| (t.as_str().to_owned(), n))
                .collect(),
            first_event: (self.accepted > 0).then(|| format_timestamp(self.first)),
            last_event: (self.accepted > 0).then(|| format_timestamp(self.last)),
            rows_per_day: {
                let mut days = self.days.clone();
                if let Some((d, n)) = self.day {
                    *days.entry(d).or_default() += n;
                }
                days
            }
            .into_iter()
            .map(|(d, n)| {
                let (y, m, day) = civil_from_days(d);
                (format!("{y:04}-{m:02}-{day:02}"), n)
            })
            .collect(),
        }
    }
}

/// Distribution of prices over accepted rows, in currency units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[allow(missing_docs)]
pub struct PriceProfile {
    pub min: Option<f64>,
    pub p25: Option<f64>,
    pub median: Option<f64>,
    pub p75: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

/// The data-quality profile of one import. Stored as JSON in `imports.profile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Profile {
    /// Rows read (accepted + rejected + duplicates).
    pub rows_read: u64,
    /// Rows written to `events`.
    pub rows_accepted: u64,
    /// Rows written to `quarantine`.
    pub rows_rejected: u64,
    /// Exact duplicates dropped (within the input or already in the lake).
    pub duplicates: u64,
    /// Rejected rows per reason (values taken out).
    pub rejects_by_reason: BTreeMap<String, u64>,
    /// Share of accepted rows with no value, per optional column.
    pub null_rate: BTreeMap<String, f64>,
    /// Approximate distinct values (HyperLogLog, ~1.6 % error), per column.
    pub distinct: BTreeMap<String, u64>,
    /// Price distribution.
    pub price: PriceProfile,
    /// Accepted rows per event type.
    pub event_types: BTreeMap<String, u64>,
    /// Earliest accepted event.
    pub first_event: Option<String>,
    /// Latest accepted event.
    pub last_event: Option<String>,
    /// Accepted rows per UTC day.
    pub rows_per_day: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_is_close() {
        let mut d = Distinct::new();
        for i in 0..200_000u64 {
            d.add(&i.to_le_bytes());
        }
        let e = d.estimate() as f64;
        assert!((e - 200_000.0).abs() / 200_000.0 < 0.05, "{e}");
        let mut small = Distinct::new();
        for i in 0..100u64 {
            small.add(&i.to_le_bytes());
            small.add(&i.to_le_bytes());
        }
        assert!((small.estimate() as i64 - 100).abs() <= 2);
    }

    #[test]
    fn reasons_group_without_their_values() {
        let r = |field, reason: &str| Reject {
            line: 1,
            field,
            reason: reason.into(),
            raw: String::new(),
        };
        assert_eq!(
            reason_kind(&r(Some("price"), "\"abc\" is not a decimal number")),
            "price: … is not a decimal number"
        );
        assert_eq!(
            reason_kind(&r(Some("price"), "\"a\\\"b\" is not a decimal number")),
            "price: … is not a decimal number"
        );
        assert_eq!(
            reason_kind(&r(None, "has 3 fields, the header has 9")),
            "has # fields, the header has #"
        );
    }
}
