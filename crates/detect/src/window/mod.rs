//! The rules' windows: one [`WindowRule`] per rule, in the spirit of a streaming operator
//! (Arroyo's, Flink's): it [observes](WindowRule::observe) each event of a key and says when a
//! window crosses a level, and forgets what ended behind the
//! [watermark](WindowRule::on_watermark). One file per kind of measure:
//!
//! - [`count`]: events of a key in a sliding window of panes (`count`, `denied`);
//! - [`distinct`]: distinct values (products viewed, sessions) of a key in such a window;
//! - [`spike`]: all traffic in tumbling windows against the median of the ones before;
//! - [`robotic`]: the regularity of the gaps between a session's events, per block.
//!
//! The keyed kinds share [`keyed::KeyedRule`]: a slab of key states with a ring of panes
//! each ([`keys`], [`ring`]), around the step each kind provides.

mod count;
mod distinct;
mod keyed;
mod keys;
mod ring;
mod robotic;
mod spike;
mod state;

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::fire::Fire;
use crate::rules::{KeyType, Measure, Rule};
use crate::stats::Stats;

pub(crate) use keys::KeySnapshot;

/// A rule's windows over the events of its keys.
pub(crate) trait WindowRule: fmt::Debug + Send + Sync {
    /// The rule.
    fn rule(&self) -> &Rule;

    /// Counts one event of a key (by hash) at `t`, with the value a distinct measure counts;
    /// returns a firing when a window crosses a level.
    fn observe(&mut self, key: u64, t: i64, value: u64, stats: &mut Stats) -> Option<Fire>;

    /// The value of the window the last event counted in, when that window has fired already
    /// (so an open incident's peak follows the window past its threshold).
    fn fired_value(&self) -> Option<f64>;

    /// Forgets keys whose windows all ended at or before the watermark.
    fn on_watermark(&mut self, watermark: i64);

    /// The windows copied as they are (cheap), to be compacted away from the detector.
    fn copy(&self) -> RuleCopy;

    /// Takes back the windows of a checkpoint into a fresh rule.
    fn restore(&mut self, snapshot: RuleSnapshot) -> Result<(), String>;
}

/// The windows of `rule`, tracking at most `max_keys` keys.
pub(crate) fn windows(rule: Rule, max_keys: usize) -> Box<dyn WindowRule> {
    match rule.measure {
        Measure::Count | Measure::Denied => {
            Box::new(keyed::KeyedRule::new(rule, max_keys, count::Count))
        }
        Measure::DistinctProductsViewed | Measure::DistinctSessions => {
            Box::new(keyed::KeyedRule::new(rule, max_keys, distinct::Distinct))
        }
        Measure::Spike { .. } => Box::new(spike::SpikeRule::new(rule)),
        Measure::Robotic { .. } => {
            let timing = robotic::Timing::of(&rule);
            Box::new(keyed::KeyedRule::new(rule, max_keys, timing))
        }
    }
}

/// A hash of a rule's definition: a checkpoint is restored only into the same rule.
pub(crate) fn rule_fingerprint(rule: &Rule) -> u64 {
    xxhash_rust::xxh3::xxh3_64(format!("{rule:?}").as_bytes())
}

/// A rule's windows as a checkpoint keeps them (the same encoding for every kind: the keyed
/// kinds leave the spike's fields empty, the spike has no keys).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RuleSnapshot {
    pub name: String,
    pub key: KeyType,
    /// [`rule_fingerprint`] of the rule.
    pub fingerprint: u64,
    keys: Vec<KeySnapshot>,
    /// The expiry queue's entries that still name a key's latest pane, in order.
    expiry: Vec<(i64, u64)>,
    spike_first: i64,
    spike_windows: VecDeque<(u64, f64, bool)>,
}

/// A rule's windows copied as they are (a few `memcpy`s), to be compacted into a
/// [`RuleSnapshot`] away from the detector.
#[derive(Debug)]
pub(crate) struct RuleCopy {
    name: String,
    key: KeyType,
    fingerprint: u64,
    keys: Option<keys::KeyedCopy>,
    spike_first: i64,
    spike_windows: VecDeque<(u64, f64, bool)>,
}

impl RuleCopy {
    fn new(rule: &Rule) -> RuleCopy {
        RuleCopy {
            name: rule.name.clone(),
            key: rule.key,
            fingerprint: rule_fingerprint(rule),
            keys: None,
            spike_first: i64::MIN,
            spike_windows: VecDeque::new(),
        }
    }

    /// What a checkpoint keeps: only the keys' panes in use and the live expiry entries.
    pub(crate) fn compact(self) -> RuleSnapshot {
        let (keys, expiry) = self.keys.map(keys::KeyedCopy::compact).unwrap_or_default();
        RuleSnapshot {
            name: self.name,
            key: self.key,
            fingerprint: self.fingerprint,
            keys,
            expiry,
            spike_first: self.spike_first,
            spike_windows: self.spike_windows,
        }
    }
}
