//! Exact-duplicate removal on `event_id`, against the lake and within an import.
//!
//! Ids are kept per UTC date (the partition), for a few dates at a time: monthly exports are
//! sorted by time, so an import walks dates in order. A date's set is loaded from the ids
//! already in the lake for that date (committed files) and in this import's staged files; a
//! date evicted and met again is reloaded the same way, after the writer has flushed, so no
//! row of this import is ever missed.
//!
//! A date's ids are bucketed by the second of the day of their event (an id is a hash of the
//! event, time included, so duplicates share a bucket): rows sorted by time meet one small
//! bucket after another, in cache, where one hash set of a day's ~1.4 M ids missed the cache
//! on nearly every row (a tenth of an import's time).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arrow::array::{Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimeUnit};
use deltalake::ObjectStore;
use shoplake_events::EventId;
use shoplake_events::time::MICROS_PER_DAY;

use crate::error::{Error, Result};
use crate::read::read_columns;

/// Ids are already uniform hashes: use their low bits as the hash.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64 ^ (v >> 64) as u64;
    }
}

pub(crate) type IdSet = HashSet<u128, BuildHasherDefault<IdHasher>>;

const SECONDS_PER_DAY: usize = 86_400;
/// Ids a second's bucket holds before the rest of that second's go to the day's hash set
/// (a linear scan of a few dozen ids in one or two cache lines beats a hash probe).
const BUCKET_IDS: usize = 48;

/// The ids of one date.
struct DaySet {
    /// Per second of the day, its first [`BUCKET_IDS`] ids.
    seconds: Vec<Vec<u128>>,
    /// Ids of the seconds whose bucket is full.
    overflow: IdSet,
    len: usize,
}

impl DaySet {
    fn new() -> DaySet {
        DaySet {
            seconds: vec![Vec::new(); SECONDS_PER_DAY],
            overflow: IdSet::default(),
            len: 0,
        }
    }

    /// Adds an id of an event at `time` (µs) of `date`; `false` when it was there.
    fn insert(&mut self, date: i32, time: i64, id: u128) -> bool {
        let second = (time - i64::from(date) * MICROS_PER_DAY).div_euclid(1_000_000);
        let second = second.clamp(0, SECONDS_PER_DAY as i64 - 1) as usize;
        let bucket = &mut self.seconds[second];
        if bucket.contains(&id) {
            return false;
        }
        let fresh = if bucket.len() < BUCKET_IDS {
            bucket.push(id);
            true
        } else {
            self.overflow.insert(id)
        };
        self.len += usize::from(fresh);
        fresh
    }
}

/// How many ids stay in memory (about 20 bytes each): beyond this, the least recently used
/// dates are evicted until half the budget is free, after one flush of the writer.
pub(crate) const RESIDENT_IDS: usize = 16 << 20;

pub(crate) struct Dedupe {
    store: Arc<dyn ObjectStore>,
    /// Files per date: committed in the lake, then staged by this import.
    files: HashMap<i32, Vec<String>>,
    sets: BTreeMap<i32, DaySet>,
    /// Dates in use order, most recent last.
    order: Vec<i32>,
    /// Ids held in `sets`.
    resident: usize,
    budget: usize,
}

impl Dedupe {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, committed: HashMap<i32, Vec<String>>) -> Dedupe {
        Dedupe {
            store,
            files: committed,
            sets: BTreeMap::new(),
            order: Vec::new(),
            resident: 0,
            budget: RESIDENT_IDS,
        }
    }

    /// Whether `date`'s set is loaded.
    pub(crate) fn is_resident(&self, date: i32) -> bool {
        self.sets.contains_key(&date)
    }

    /// Uses another id budget.
    pub(crate) fn with_budget(mut self, ids: usize) -> Dedupe {
        self.budget = ids.max(1);
        self
    }

    /// Whether the ids in memory are over budget: the caller flushes the writer (so staged
    /// rows are in files, where a reload finds them) and then calls [`Dedupe::evict`].
    pub(crate) fn over_budget(&self) -> bool {
        self.resident > self.budget
    }

    /// Drops the least recently used dates until half the budget is free.
    pub(crate) fn evict(&mut self) {
        while self.resident > self.budget / 2 && self.order.len() > 1 {
            let oldest = self.order.remove(0);
            if let Some(set) = self.sets.remove(&oldest) {
                self.resident -= set.len;
            }
        }
    }

    /// Drops a date's ids (files were added to it by another writer): the next use reloads.
    pub(crate) fn forget(&mut self, date: i32) {
        if let Some(set) = self.sets.remove(&date) {
            self.resident -= set.len;
        }
        self.order.retain(|d| *d != date);
    }

    /// Records files staged by this import.
    pub(crate) fn staged(&mut self, date: i32, path: String) {
        self.files.entry(date).or_default().push(path);
    }

    /// Makes `date` resident, loading the ids already written for it.
    pub(crate) async fn load(&mut self, date: i32) -> Result<()> {
        if self.is_resident(date) {
            self.touch(date);
            return Ok(());
        }
        let mut set = DaySet::new();
        if let Some(paths) = self.files.get(&date) {
            let batches = read_columns(
                self.store.clone(),
                paths.clone(),
                &["event_time", "event_id"],
            )
            .await?;
            for b in batches {
                let column = |name: &str| {
                    b.column_by_name(name).cloned().ok_or_else(|| {
                        Error::Corrupt(format!("a data file of {date} has no {name}"))
                    })
                };
                // Files written by other engines may hold times in other units.
                let times = arrow::compute::cast(
                    &column("event_time")?,
                    &DataType::Timestamp(TimeUnit::Microsecond, None),
                )?;
                let ids = column("event_id")?;
                let (Some(times), Some(ids)) = (
                    times.as_any().downcast_ref::<TimestampMicrosecondArray>(),
                    ids.as_any().downcast_ref::<StringArray>(),
                ) else {
                    return Err(Error::Corrupt("event_id is not a string column".into()));
                };
                for i in 0..ids.len() {
                    if ids.is_valid(i)
                        && times.is_valid(i)
                        && let Some(id) = EventId::parse(ids.value(i))
                    {
                        set.insert(date, times.value(i), id.0);
                    }
                }
            }
        }
        self.resident += set.len;
        self.sets.insert(date, set);
        self.order.push(date);
        Ok(())
    }

    fn touch(&mut self, date: i32) {
        if self.order.last() != Some(&date) {
            self.order.retain(|d| *d != date);
            self.order.push(date);
        }
    }

    /// Records the id of an event at `time` (µs, within `date`); `false` when it was already
    /// there (a duplicate). The date must be resident.
    pub(crate) fn insert(&mut self, date: i32, time: i64, id: EventId) -> bool {
        if self.order.last() != Some(&date) {
            self.touch(date);
        }
        let fresh = self
            .sets
            .get_mut(&date)
            .is_some_and(|s| s.insert(date, time, id.0));
        self.resident += usize::from(fresh);
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_set_is_exact_in_crowded_seconds_and_at_the_day_edges() {
        let date = 18_000;
        let start = i64::from(date) * MICROS_PER_DAY;
        let mut set = DaySet::new();
        // Ten times a bucket's room in one second (the rest overflow), then the day's first
        // and last microsecond.
        let ids: Vec<(i64, u128)> = (0..10 * BUCKET_IDS as u128)
            .map(|i| (start + 5_000_000 + i as i64, i * 7919 + 1))
            .chain([(start, 1), (start + MICROS_PER_DAY - 1, 2)])
            .collect();
        for &(t, id) in &ids {
            assert!(set.insert(date, t, id), "{t} {id}");
        }
        for &(t, id) in &ids {
            assert!(!set.insert(date, t, id), "{t} {id} again");
        }
        assert_eq!(set.len, ids.len());
        assert!(!set.overflow.is_empty());
    }
}
