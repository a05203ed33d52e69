//! Counting rules (`user_burst`, `user_sustained`, `ip_flood`, `deny_list`):
//! per key, the events in a sliding window of panes. A firing comes as soon as the window's
//! count crosses a level, not when the window closes; each window fires once per level.

use super::keys::{KeyState, Keyed};
use super::{RuleCopy, RuleSnapshot, WindowRule, ring};
use crate::fire::Fire;
use crate::rules::Rule;
use crate::stats::Stats;

#[derive(Debug)]
pub(super) struct CountRule {
    rule: Rule,
    keyed: Keyed,
    fired_value: Option<f64>,
}

impl CountRule {
    pub fn new(rule: Rule, max_keys: usize) -> CountRule {
        let panes = rule.window / rule.slide.max(1);
        CountRule {
            keyed: Keyed::new(panes, max_keys),
            rule,
            fired_value: None,
        }
    }
}

impl WindowRule for CountRule {
    fn rule(&self) -> &Rule {
        &self.rule
    }

    fn observe(&mut self, key: u64, t: i64, _value: u64, stats: &mut Stats) -> Option<Fire> {
        self.fired_value = None;
        let pane = t.div_euclid(self.rule.slide.max(1));
        let index = self.keyed.enter(key, pane, stats)?;
        let (st, ring) = self.keyed.get_mut(index);
        let at = ring::slot(ring, pane);
        ring[at].1 += 1;
        let count = ring::window_sum(ring, pane);
        let Levels { fire, fired_value } = fired_levels(&self.rule, st, pane, count, t);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{KeyType, Level, Measure, Severity};

    fn burst() -> Rule {
        Rule {
            name: "user_burst".into(),
            key: KeyType::UserId,
            window: 10,
            slide: 10,
            measure: Measure::Count,
            levels: vec![
                Level {
                    above: 2.0,
                    severity: Severity::Low,
                },
                Level {
                    above: 4.0,
                    severity: Severity::High,
                },
            ],
        }
    }

    #[test]
    fn each_level_fires_once_per_window_and_a_new_window_starts_over() {
        let mut r = CountRule::new(burst(), 100);
        let mut stats = Stats::default();
        let fires: Vec<Option<Severity>> = (0..6)
            .map(|i| r.observe(9, i, 0, &mut stats).map(|f| f.severity))
            .collect();
        assert_eq!(
            fires,
            [
                None,
                None,
                Some(Severity::Low),
                None,
                Some(Severity::High),
                None
            ]
        );
        assert_eq!(r.fired_value(), Some(6.0));
        let next = r.observe(9, 10, 0, &mut stats);
        assert!(next.is_none(), "one event in the next window");
        assert_eq!(r.fired_value(), None);
        assert!(
            r.observe(8, 5, 0, &mut stats).is_none(),
            "another key counts apart"
        );
    }

    #[test]
    fn keys_behind_the_watermark_are_forgotten() {
        let mut r = CountRule::new(burst(), 100);
        let mut stats = Stats::default();
        r.observe(9, 3, 0, &mut stats);
        r.observe(8, 12, 0, &mut stats);
        r.on_watermark(10);
        assert_eq!(r.keyed.len(), 1, "key 9's window ended at 10");
        r.on_watermark(20);
        assert_eq!(r.keyed.len(), 0);
    }
}
