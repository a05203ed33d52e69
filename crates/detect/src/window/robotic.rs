//! Robotic timing (`robotic_timing`): per session, blocks of `events` events; a block whose
//! gaps between events vary less than `max_cv` (coefficient of variation) fires. Running
//! sums of the gaps, no allocation per event.

use super::keyed::{Levels, Step};
use super::keys::KeyState;
use super::state::Robotic;
use crate::fire::Fire;
use crate::rules::{Measure, Rule, Severity};

/// Blocks of `events` events of a session, robotic below `max_cv`.
#[derive(Debug)]
pub(super) struct Timing {
    events: usize,
    max_cv: f64,
}

impl Timing {
    pub fn of(rule: &Rule) -> Timing {
        match rule.measure {
            Measure::Robotic { events, max_cv } => Timing { events, max_cv },
            _ => Timing {
                events: usize::MAX,
                max_cv: 0.0,
            },
        }
    }
}

impl Step for Timing {
    fn step(
        &mut self,
        rule: &Rule,
        key: &mut KeyState,
        _ring: &mut [(i64, u32)],
        _pane: i64,
        t: i64,
        _value: u64,
    ) -> Levels {
        Levels {
            fire: step(key, t, self.events, self.max_cv, rule.levels[0].severity),
            fired_value: None,
        }
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
    use crate::stats::Stats;
    use crate::window::WindowRule;
    use crate::window::keyed::KeyedRule;

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
        let mut r = {
            let rule = rule();
            let timing = Timing::of(&rule);
            KeyedRule::new(rule, 10, timing)
        };
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
        let mut r = {
            let rule = rule();
            let timing = Timing::of(&rule);
            KeyedRule::new(rule, 10, timing)
        };
        let mut stats = Stats::default();
        assert!((0..5).all(|_| r.observe(1, 7, 0, &mut stats).is_none()));
    }
}
