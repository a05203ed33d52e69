//! Robotic timing (`robotic_timing`): per session, blocks of `events` events; a block whose
//! gaps between events vary less than `max_cv` (coefficient of variation) fires. Running
//! sums of the gaps, no allocation per event.

use super::keys::{KeyState, Keyed};
use super::state::Robotic;
use super::{RuleCopy, RuleSnapshot, WindowRule};
use crate::fire::Fire;
use crate::rules::{Measure, Rule, Severity};
use crate::stats::Stats;

#[derive(Debug)]
pub(super) struct RoboticRule {
    rule: Rule,
    keyed: Keyed,
    events: usize,
    max_cv: f64,
}

impl RoboticRule {
    pub fn new(rule: Rule, max_keys: usize) -> RoboticRule {
        let (events, max_cv) = match rule.measure {
            Measure::Robotic { events, max_cv } => (events, max_cv),
            _ => (usize::MAX, 0.0),
        };
        let panes = rule.window / rule.slide.max(1);
        RoboticRule {
            keyed: Keyed::new(panes, max_keys),
            rule,
            events,
            max_cv,
        }
    }
}

impl WindowRule for RoboticRule {
    fn rule(&self) -> &Rule {
        &self.rule
    }

    fn observe(&mut self, key: u64, t: i64, _value: u64, stats: &mut Stats) -> Option<Fire> {
        let pane = t.div_euclid(self.rule.slide.max(1));
        let index = self.keyed.enter(key, pane, stats)?;
        let (st, _) = self.keyed.get_mut(index);
        let severity = self.rule.levels[0].severity;
        step(st, t, self.events, self.max_cv, severity)
    }

    fn fired_value(&self) -> Option<f64> {
        None
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
        self.keyed.restore(&s.name, s.keys, s.expiry)
    }
}

/// Adds an event at `t` to the key's block; at `events` events, measures the block and
/// starts the next one at this event.
fn step(st: &mut KeyState, t: i64, events: usize, max_cv: f64, severity: Severity) -> Option<Fire> {
    let r = &mut st.robotic;
    if r.n > 0 {
        let gap = (t - r.last) as f64;
        r.sum += gap;
        r.sum2 += gap * gap;
    } else {
        r.first = t;
    }
    r.last = t;
    r.n += 1;
    if (r.n as usize) < events {
        return None;
    }
    let n = f64::from(r.n - 1);
    let mean = r.sum / n;
    let var = (r.sum2 / n - mean * mean).max(0.0);
    let start = r.first;
    let count = u64::from(r.n);
    *r = Robotic {
        first: t,
        last: t,
        n: 1,
        sum: 0.0,
        sum2: 0.0,
    };
    if mean <= 0.0 {
        return None;
    }
    let cv = var.sqrt() / mean;
    if cv >= max_cv {
        return None;
    }
    st.fired_end = t + 1;
    Some(Fire {
        window_start: start,
        window_end: t + 1,
        value: (cv * 1000.0).round() / 1000.0,
        severity,
        at: t,
        events: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{KeyType, Level};

    fn rule() -> Rule {
        Rule {
            name: "robotic_timing".into(),
            key: KeyType::UserSession,
            window: 1_000_000,
            slide: 1_000_000,
            measure: Measure::Robotic {
                events: 5,
                max_cv: 0.1,
            },
            levels: vec![Level {
                above: 0.0,
                severity: Severity::Medium,
            }],
        }
    }

    #[test]
    fn evenly_spaced_events_fire_per_block_and_irregular_ones_do_not() {
        let mut r = RoboticRule::new(rule(), 10);
        let mut stats = Stats::default();
        let fires: Vec<bool> = (0..9)
            .map(|i| r.observe(1, i * 1000, 0, &mut stats).is_some())
            .collect();
        // Blocks of five: events 0–4, then 4–8 (the next block starts at the last event).
        assert_eq!(
            fires,
            [false, false, false, false, true, false, false, false, true]
        );
        let irregular = [0, 10, 500, 520, 3000];
        let fired = irregular
            .iter()
            .filter_map(|&t| r.observe(2, t, 0, &mut stats))
            .count();
        assert_eq!(fired, 0);
    }

    #[test]
    fn a_block_at_one_instant_has_no_timing_to_judge() {
        let mut r = RoboticRule::new(rule(), 10);
        let mut stats = Stats::default();
        assert!((0..5).all(|_| r.observe(1, 7, 0, &mut stats).is_none()));
    }
}
