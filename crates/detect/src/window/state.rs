//! The per-key state of the keyed kinds beside their ring: the distinct values seen (for
//! distinct-value rules) and the current block of a session's events (for robotic timing).
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Distinct values of a key with the pane each was last seen in: a few inline, more in a map.
#[derive(Debug, Default, Clone)]
pub(super) struct Distinct {
    inline: [(u64, i64); INLINE],
    len: u8,
    map: Option<Box<Map<u64, i64>>>,
}

const INLINE: usize = 4;

impl Distinct {
    pub fn get(&self, v: u64) -> Option<i64> {
        match &self.map {
            Some(m) => m.get(&v).copied(),
            None => self.inline[..self.len as usize]
                .iter()
                .find(|(x, _)| *x == v)
                .map(|(_, p)| *p),
        }
    }

    pub fn set(&mut self, v: u64, pane: i64) {
        if let Some(m) = &mut self.map {
            m.insert(v, pane);
            return;
        }
        let n = self.len as usize;
        if let Some(e) = self.inline[..n].iter_mut().find(|(x, _)| *x == v) {
            e.1 = pane;
        } else if n < INLINE {
            self.inline[n] = (v, pane);
            self.len += 1;
        } else {
            let mut m: Map<u64, i64> = self.inline.iter().copied().collect();
            m.insert(v, pane);
            self.map = Some(Box::new(m));
        }
    }

    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(self.len as usize, |m| m.len())
    }

    /// Forgets values last seen at or before `lo`.
    pub fn retain_after(&mut self, lo: i64) {
        if let Some(m) = &mut self.map {
            m.retain(|_, p| *p > lo);
        }
    }

    /// Every (value, pane).
    pub fn entries(&self) -> Vec<(u64, i64)> {
        match &self.map {
            Some(m) => m.iter().map(|(v, p)| (*v, *p)).collect(),
            None => self.inline[..self.len as usize].to_vec(),
        }
    }
}

/// A session's current block of events.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub(super) struct Robotic {
    pub first: i64,
    pub last: i64,
    pub n: u32,
    pub sum: f64,
    pub sum2: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_values_spill_from_inline_to_a_map_and_keep_their_panes() {
        let mut d = Distinct::default();
        for v in 0..10u64 {
            d.set(v, v as i64);
        }
        d.set(3, 20);
        assert_eq!(d.len(), 10);
        assert_eq!(d.get(3), Some(20));
        d.retain_after(5);
        assert_eq!(d.len(), 5, "6..=9 and 3");
        assert_eq!(d.get(0), None);
    }
}
