//! Distinct-value rules (`scraper`: products viewed; `session_flood`: sessions): per key, the
//! distinct values seen in a sliding window, each counted in the pane it was last seen in.

use super::count::{Levels, fired_levels};
use super::keys::Keyed;
use super::{RuleCopy, RuleSnapshot, WindowRule, ring};
use crate::fire::Fire;
use crate::rules::Rule;
use crate::stats::Stats;

#[derive(Debug)]
pub(super) struct DistinctRule {
    rule: Rule,
    keyed: Keyed,
    fired_value: Option<f64>,
}

impl DistinctRule {
    pub fn new(rule: Rule, max_keys: usize) -> DistinctRule {
        let panes = rule.window / rule.slide.max(1);
        DistinctRule {
            keyed: Keyed::new(panes, max_keys),
            rule,
            fired_value: None,
        }
    }
}

impl WindowRule for DistinctRule {
    fn rule(&self) -> &Rule {
        &self.rule
    }

    fn observe(&mut self, key: u64, t: i64, value: u64, stats: &mut Stats) -> Option<Fire> {
        self.fired_value = None;
        let slide = self.rule.slide.max(1);
        let pane = t.div_euclid(slide);
        let index = self.keyed.enter(key, pane, stats)?;
        let (st, ring) = self.keyed.get_mut(index);
        let at = ring::slot(ring, pane);
        // A value counts once, in the newest pane it was seen in.
        match st.distinct.get(value) {
            Some(q) if q >= pane => {}
            Some(q) => {
                ring::take_one(ring, q);
                ring[at].1 += 1;
                st.distinct.set(value, pane);
            }
            None => {
                ring[at].1 += 1;
                st.distinct.set(value, pane);
            }
        }
        let count = ring::window_sum(ring, pane);
        let lo = pane - ring.len() as i64;
        if st.distinct.len() > 64 && st.distinct.len() as u64 > 4 * count {
            st.distinct.retain_after(lo);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{KeyType, Level, Measure, Severity};

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
        let mut r = DistinctRule::new(rule(), 100);
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
