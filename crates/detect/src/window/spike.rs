//! Traffic spikes (`traffic_spike`): all traffic in tumbling windows; a window fires when its
//! count passes `factor` × the median of the `baseline` windows before it (and `floor`). Each
//! window's threshold is fixed when the window opens, so events a little out of order across
//! log partitions count in their own window and the baselines do not depend on arrival order.

use std::collections::VecDeque;

use super::{RuleCopy, RuleSnapshot, WindowRule};
use crate::fire::Fire;
use crate::rules::{Measure, Rule};
use crate::stats::Stats;

#[derive(Debug)]
pub(super) struct SpikeRule {
    rule: Rule,
    factor: f64,
    baseline: usize,
    floor: u64,
    /// The window of `windows[0]`.
    first: i64,
    /// (count, threshold, fired) per window from `first` on.
    windows: VecDeque<(u64, f64, bool)>,
    fired_value: Option<f64>,
}

impl SpikeRule {
    pub fn new(rule: Rule) -> SpikeRule {
        let (factor, baseline, floor) = match rule.measure {
            Measure::Spike {
                factor,
                baseline,
                floor,
            } => (factor, baseline, floor),
            _ => (f64::INFINITY, 0, u64::MAX),
        };
        SpikeRule {
            rule,
            factor,
            baseline,
            floor,
            first: i64::MIN,
            windows: VecDeque::new(),
            fired_value: None,
        }
    }

    /// Opens the windows up to `w`, each with its threshold from the `baseline` before it.
    fn open_to(&mut self, w: i64) {
        // A long silence: the baseline is that many empty windows.
        let kept = self.baseline as i64 + 1;
        if w - (self.first + self.windows.len() as i64) > kept {
            self.windows.clear();
            self.first = w - kept;
            self.windows.extend(std::iter::repeat_n(
                (0, self.floor as f64, true),
                kept as usize,
            ));
        }
        while self.first + (self.windows.len() as i64) <= w {
            let n = self.first + self.windows.len() as i64;
            let lo = (n - self.baseline as i64).max(self.first);
            let counts: Vec<u64> = (lo..n)
                .map(|i| self.windows[(i - self.first) as usize].0)
                .collect();
            let threshold = (self.factor * median(counts)).max(self.floor as f64);
            self.windows.push_back((0, threshold, false));
            while self.windows.len() > self.baseline + 2 {
                self.windows.pop_front();
                self.first += 1;
            }
        }
    }
}

impl WindowRule for SpikeRule {
    fn rule(&self) -> &Rule {
        &self.rule
    }

    fn observe(&mut self, _key: u64, t: i64, _value: u64, _stats: &mut Stats) -> Option<Fire> {
        self.fired_value = None;
        let size = self.rule.window.max(1);
        let w = t.div_euclid(size);
        if self.first == i64::MIN {
            self.first = w;
        }
        if w < self.first {
            // Older than every window still kept.
            return None;
        }
        self.open_to(w);
        if w < self.first {
            return None;
        }
        let slot = &mut self.windows[(w - self.first) as usize];
        slot.0 += 1;
        if slot.2 {
            self.fired_value = Some(slot.0 as f64);
            return None;
        }
        if slot.0 as f64 <= slot.1 {
            return None;
        }
        slot.2 = true;
        Some(Fire {
            window_start: w * size,
            window_end: (w + 1) * size,
            value: slot.0 as f64,
            severity: self.rule.levels[0].severity,
            at: t,
            events: slot.0,
        })
    }

    fn fired_value(&self) -> Option<f64> {
        self.fired_value
    }

    fn on_watermark(&mut self, _watermark: i64) {}

    fn copy(&self) -> RuleCopy {
        RuleCopy {
            spike_first: self.first,
            spike_windows: self.windows.clone(),
            ..RuleCopy::new(&self.rule)
        }
    }

    fn restore(&mut self, s: RuleSnapshot) -> Result<(), String> {
        self.first = s.spike_first;
        self.windows = s.spike_windows;
        self.fired_value = None;
        Ok(())
    }
}

fn median(mut v: Vec<u64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{KeyType, Level, Severity};

    fn rule() -> Rule {
        Rule {
            name: "traffic_spike".into(),
            key: KeyType::Global,
            window: 10,
            slide: 10,
            measure: Measure::Spike {
                factor: 3.0,
                baseline: 3,
                floor: 5,
            },
            levels: vec![Level {
                above: 0.0,
                severity: Severity::High,
            }],
        }
    }

    fn send(r: &mut SpikeRule, window: i64, n: usize) -> usize {
        let mut stats = Stats::default();
        (0..n)
            .filter(|_| r.observe(0, window * 10, 0, &mut stats).is_some())
            .count()
    }

    #[test]
    fn a_window_past_factor_times_the_median_fires_once() {
        let mut r = SpikeRule::new(rule());
        for w in 0..3 {
            assert_eq!(send(&mut r, w, 4), 0, "under the floor");
        }
        assert_eq!(send(&mut r, 3, 12), 0, "3 × 4 is not passed");
        assert_eq!(
            send(&mut r, 4, 13),
            1,
            "the median of 4, 4, 12 is 4: 13 > 12"
        );
        assert_eq!(send(&mut r, 4, 1), 0, "once a window");
        assert_eq!(
            r.fired_value(),
            Some(14.0),
            "the open incident's peak follows"
        );
    }

    #[test]
    fn after_a_long_silence_the_floor_decides() {
        let mut r = SpikeRule::new(rule());
        send(&mut r, 0, 100);
        assert_eq!(
            send(&mut r, 50, 6),
            1,
            "empty windows before: the floor of 5"
        );
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![4, 1, 3, 2]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
