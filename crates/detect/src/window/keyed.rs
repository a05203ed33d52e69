//! A keyed rule: the shared part of the kinds that count per key (the slab of keys, the
//! watermark, the checkpoint), around a [`Step`] each kind provides: what one event of a key
//! does to that key's state and ring.

use std::fmt;

use super::keys::{KeyState, Keyed};
use super::{RuleCopy, RuleSnapshot, WindowRule};
use crate::fire::Fire;
use crate::rules::Rule;
use crate::stats::Stats;

/// What one kind of keyed rule does with an event of a key.
pub(super) trait Step: fmt::Debug + Send + Sync {
    /// Counts an event at `t` (in `pane`; `value`: what a distinct measure counts) into the
    /// key's state and ring, and says what its window reached.
    fn step(
        &mut self,
        rule: &Rule,
        key: &mut KeyState,
        ring: &mut [(i64, u32)],
        pane: i64,
        t: i64,
        value: u64,
    ) -> Levels;
}

/// A rule counting per key with `S`.
#[derive(Debug)]
pub(super) struct KeyedRule<S> {
    rule: Rule,
    keyed: Keyed,
    fired_value: Option<f64>,
    step: S,
}

impl<S: Step> KeyedRule<S> {
    pub fn new(rule: Rule, max_keys: usize, step: S) -> KeyedRule<S> {
        let panes = rule.window / rule.slide.max(1);
        KeyedRule {
            keyed: Keyed::new(panes, max_keys),
            rule,
            fired_value: None,
            step,
        }
    }

    /// The keys tracked.
    #[cfg(test)]
    pub fn keys(&self) -> usize {
        self.keyed.len()
    }
}

impl<S: Step> WindowRule for KeyedRule<S> {
    fn rule(&self) -> &Rule {
        &self.rule
    }

    fn observe(&mut self, key: u64, t: i64, value: u64, stats: &mut Stats) -> Option<Fire> {
        self.fired_value = None;
        let pane = t.div_euclid(self.rule.slide.max(1));
        let index = self.keyed.enter(key, pane, stats)?;
        let (state, ring) = self.keyed.get_mut(index);
        let Levels { fire, fired_value } = self.step.step(&self.rule, state, ring, pane, t, value);
        self.fired_value = fired_value;
        fire
    }

    fn fired_value(&self) -> Option<f64> {
        self.fired_value
    }

    fn on_watermark(&mut self, watermark: i64) {
        self.keyed
            .evict(watermark.div_euclid(self.rule.slide.max(1)));
    }

    fn copy(&self) -> RuleCopy {
        RuleCopy {
            keys: Some(self.keyed.copy()),
            ..RuleCopy::new(&self.rule)
        }
    }

    fn restore(&mut self, s: RuleSnapshot) -> Result<(), String> {
        self.fired_value = None;
        self.keyed.restore(&s.name, s.keys, s.expiry)
    }
}

/// What a window's new count means for a key.
pub(super) struct Levels {
    /// A firing, when the count crossed a level the window had not reached.
    pub fire: Option<Fire>,
    /// The count, when the window had fired before this event.
    pub fired_value: Option<f64>,
}

/// The levels the window ending with `pane` crossed with `count` (at time `t`).
pub(super) fn fired_levels(
    rule: &Rule,
    st: &mut KeyState,
    pane: i64,
    count: u64,
    t: i64,
) -> Levels {
    let window_end = (pane + 1) * rule.slide.max(1);
    if window_end != st.fired_end {
        st.fired_end = window_end;
        st.fired_level = 0;
    }
    let level = rule
        .levels
        .iter()
        .take_while(|l| count as f64 > l.above)
        .count() as u32;
    let fired_value = (st.fired_level > 0).then_some(count as f64);
    if level <= st.fired_level {
        return Levels {
            fire: None,
            fired_value,
        };
    }
    st.fired_level = level;
    Levels {
        fire: Some(Fire {
            window_start: window_end - rule.window,
            window_end,
            value: count as f64,
            severity: rule.levels[level as usize - 1].severity,
            at: t,
            events: count,
        }),
        fired_value,
    }
}
