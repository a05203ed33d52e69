//! Distinct-value rules (`scraper`: products viewed; `session_flood`: sessions): per key, the
//! distinct values seen in a sliding window, each counted in the pane it was last seen in.

use super::keyed::{Levels, Step, fired_levels};
use super::keys::KeyState;
use super::ring;
use crate::rules::Rule;

/// Distinct values of a key in its window, each in the newest pane it was seen in.
#[derive(Debug)]
pub(super) struct Distinct;

impl Step for Distinct {
    fn step(
        &mut self,
        rule: &Rule,
        key: &mut KeyState,
        ring: &mut [(i64, u32)],
        pane: i64,
        t: i64,
        value: u64,
    ) -> Levels {
        let at = ring::slot(ring, pane);
        // A value counts once, in the newest pane it was seen in.
        match key.distinct.get(value) {
            Some(q) if q >= pane => {}
            Some(q) => {
                ring::take_one(ring, q);
                ring[at].1 += 1;
                key.distinct.set(value, pane);
            }
            None => {
                ring[at].1 += 1;
                key.distinct.set(value, pane);
            }
        }
        let count = ring::window_sum(ring, pane);
        let lo = pane - ring.len() as i64;
        if key.distinct.len() > 64 && key.distinct.len() as u64 > 4 * count {
            key.distinct.retain_after(lo);
        }
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

    fn rule() -> Rule {
        Rule {
            name: "scraper".into(),
            key: KeyType::UserId,
            window: 60,
            slide: 10,
            measure: Measure::DistinctProductsViewed,
            levels: vec![Level {
                above: 2.0,
                severity: Severity::Medium,
            }],
        }
    }

    #[test]
    fn a_value_seen_again_counts_once_and_the_third_distinct_one_fires() {
        let mut r = KeyedRule::new(rule(), 100, Distinct);
        let mut stats = Stats::default();
        assert!(r.observe(1, 0, 100, &mut stats).is_none());
        assert!(
            r.observe(1, 15, 100, &mut stats).is_none(),
            "the same product"
        );
        assert!(r.observe(1, 20, 200, &mut stats).is_none());
        let fire = r
            .observe(1, 30, 300, &mut stats)
            .expect("three distinct products");
        assert_eq!(fire.value, 3.0);
        assert_eq!((fire.window_start, fire.window_end), (-20, 40));
        assert!(
            r.observe(1, 35, 400, &mut stats).is_none(),
            "fired for this window"
        );
        assert_eq!(
            r.fired_value(),
            Some(4.0),
            "the open incident's peak follows"
        );
    }
}
