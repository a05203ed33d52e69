//! Counting rules (`user_burst`, `user_sustained`, `ip_flood`, `deny_list`):
//! per key, the events in a sliding window of panes. A firing comes as soon as the window's
//! count crosses a level, not when the window closes; each window fires once per level.

use super::keyed::{Levels, Step, fired_levels};
use super::keys::KeyState;
use super::ring;
use crate::rules::Rule;

/// Events of a key in its window.
#[derive(Debug)]
pub(super) struct Count;

impl Step for Count {
    fn step(
        &mut self,
        rule: &Rule,
        key: &mut KeyState,
        ring: &mut [(i64, u32)],
        pane: i64,
        t: i64,
        _value: u64,
    ) -> Levels {
        let at = ring::slot(ring, pane);
        ring[at].1 += 1;
        let count = ring::window_sum(ring, pane);
        fired_levels(rule, key, pane, count, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{KeyType, Level, Measure, Severity};
    use crate::stats::Stats;
    use crate::window::WindowRule;
    use crate::window::keyed::KeyedRule;

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
        let mut r = KeyedRule::new(burst(), 100, Count);
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
        let mut r = KeyedRule::new(burst(), 100, Count);
        let mut stats = Stats::default();
        r.observe(9, 3, 0, &mut stats);
        r.observe(8, 12, 0, &mut stats);
        r.on_watermark(10);
        assert_eq!(r.keys(), 1, "key 9's window ended at 10");
        r.on_watermark(20);
        assert_eq!(r.keys(), 0);
    }
}
