//! The keyed rules' slab: per key (by hash) a state and a ring of panes at the same index,
//! a queue of when each key's windows end (in the order keys reached their latest pane), and
//! a cap on the keys tracked, at which the least recently seen key makes room.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::state::{Distinct, Robotic};
use crate::stats::Stats;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One key's state in one rule.
#[derive(Debug, Clone)]
pub(super) struct KeyState {
    pub last_pane: i64,
    /// The end of the window that fired last, and the level it reached.
    pub fired_end: i64,
    pub fired_level: u32,
    pub distinct: Distinct,
    pub robotic: Robotic,
}

impl KeyState {
    fn fresh() -> KeyState {
        KeyState {
            last_pane: i64::MIN,
            fired_end: i64::MIN,
            fired_level: 0,
            distinct: Distinct::default(),
            robotic: Robotic::default(),
        }
    }
}

#[derive(Debug)]
pub(super) struct Keyed {
    /// Panes per window (the ring's length).
    pub panes: i64,
    max_keys: usize,
    /// Key hash → index into `states` (and `rings`): the map's entries stay small, so its
    /// rehashes under churn move little.
    keys: Map<u64, u32>,
    states: Vec<KeyState>,
    /// Rings of `panes` (pane, count) per key, back to back.
    rings: Vec<(i64, u32)>,
    free: Vec<u32>,
    expiry: VecDeque<(i64, u64)>,
}

impl Keyed {
    pub fn new(panes: i64, max_keys: usize) -> Keyed {
        Keyed {
            panes: panes.max(1),
            max_keys,
            keys: Map::default(),
            states: Vec::new(),
            rings: Vec::new(),
            free: Vec::new(),
            expiry: VecDeque::new(),
        }
    }

    /// The index of a key seen at `pane` (a new key takes a fresh state, the least recently
    /// seen key making room at the cap), or `None` when the pane is older than anything the
    /// key still holds.
    pub fn enter(&mut self, hash: u64, pane: i64, stats: &mut Stats) -> Option<usize> {
        let index = match self.keys.get(&hash) {
            Some(i) => *i as usize,
            None => {
                if self.keys.len() >= self.max_keys {
                    self.evict_least_recent();
                    stats.keys_evicted += 1;
                }
                let i = self.alloc();
                self.keys.insert(hash, i);
                i as usize
            }
        };
        let st = &mut self.states[index];
        if st.last_pane != i64::MIN && pane <= st.last_pane - self.panes {
            return None;
        }
        if pane > st.last_pane {
            st.last_pane = pane;
            self.expiry.push_back((pane + self.panes, hash));
        }
        Some(index)
    }

    /// The keys tracked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// A key's state and its ring.
    pub fn get_mut(&mut self, index: usize) -> (&mut KeyState, &mut [(i64, u32)]) {
        let panes = self.panes as usize;
        let at = index * panes;
        (&mut self.states[index], &mut self.rings[at..at + panes])
    }

    /// A fresh state (and ring) for a new key; returns its index.
    fn alloc(&mut self) -> u32 {
        let panes = self.panes as usize;
        if let Some(i) = self.free.pop() {
            let at = i as usize * panes;
            self.rings[at..at + panes].fill((i64::MIN, 0));
            self.states[i as usize] = KeyState::fresh();
            return i;
        }
        let i = self.states.len() as u32;
        self.states.push(KeyState::fresh());
        self.rings.extend(std::iter::repeat_n((i64::MIN, 0), panes));
        i
    }

    fn release(&mut self, hash: u64, i: u32) {
        self.keys.remove(&hash);
        self.states[i as usize].distinct = Distinct::default();
        self.free.push(i);
    }

    /// Forgets the key seen least recently: the expiry queue is in the order keys reached
    /// their latest pane, so its first entry that is still a key's latest names that key.
    fn evict_least_recent(&mut self) {
        while let Some((expires, hash)) = self.expiry.pop_front() {
            if let Some(&i) = self.keys.get(&hash)
                && self.states[i as usize].last_pane.saturating_add(self.panes) == expires
            {
                self.release(hash, i);
                return;
            }
        }
    }

    /// Drops keys whose windows all ended at or before the pane `wm_pane`.
    pub fn evict(&mut self, wm_pane: i64) {
        while let Some(&(expires, hash)) = self.expiry.front() {
            if expires > wm_pane {
                break;
            }
            self.expiry.pop_front();
            if let Some(&i) = self.keys.get(&hash)
                && self.states[i as usize].last_pane + self.panes <= wm_pane
            {
                self.release(hash, i);
            }
        }
    }

    pub fn copy(&self) -> KeyedCopy {
        KeyedCopy {
            panes: self.panes,
            keys: self.keys.clone(),
            states: self.states.clone(),
            rings: self.rings.clone(),
            expiry: self.expiry.clone(),
        }
    }

    /// Takes back a checkpoint's keys into a fresh slab.
    pub fn restore(
        &mut self,
        rule: &str,
        keys: Vec<KeySnapshot>,
        expiry: Vec<(i64, u64)>,
    ) -> Result<(), String> {
        let panes = self.panes;
        for k in keys {
            if k.panes.len() > panes as usize || self.keys.contains_key(&k.hash) {
                return Err(format!("the windows of rule {rule} do not fit together"));
            }
            let i = self.alloc();
            let (st, ring) = self.get_mut(i as usize);
            st.last_pane = k.last_pane;
            st.fired_end = k.fired_end;
            st.fired_level = k.fired_level;
            st.robotic = k.robotic;
            for (v, p) in k.distinct {
                st.distinct.set(v, p);
            }
            for (p, count) in k.panes {
                ring[p.rem_euclid(panes) as usize] = (p, count);
            }
            self.keys.insert(k.hash, i);
        }
        self.expiry = expiry.into_iter().collect();
        Ok(())
    }
}

/// One key's windows as a checkpoint keeps them: only what it holds (the panes in use, the
/// distinct values seen), not the slab's free slots.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct KeySnapshot {
    hash: u64,
    last_pane: i64,
    fired_end: i64,
    fired_level: u32,
    distinct: Vec<(u64, i64)>,
    robotic: Robotic,
    /// The panes in use: (pane, count).
    panes: Vec<(i64, u32)>,
}

/// A slab copied as it is.
#[derive(Debug)]
pub(super) struct KeyedCopy {
    panes: i64,
    keys: Map<u64, u32>,
    states: Vec<KeyState>,
    rings: Vec<(i64, u32)>,
    expiry: VecDeque<(i64, u64)>,
}

impl KeyedCopy {
    /// The keys and the expiry entries that still name a key's latest pane, in order.
    pub fn compact(self) -> (Vec<KeySnapshot>, Vec<(i64, u64)>) {
        let panes = self.panes as usize;
        let keys = self
            .keys
            .iter()
            .map(|(hash, i)| {
                let i = *i as usize;
                let st = &self.states[i];
                KeySnapshot {
                    hash: *hash,
                    last_pane: st.last_pane,
                    fired_end: st.fired_end,
                    fired_level: st.fired_level,
                    distinct: st.distinct.entries(),
                    robotic: st.robotic,
                    panes: self.rings[i * panes..(i + 1) * panes]
                        .iter()
                        .filter(|(p, _)| *p != i64::MIN)
                        .copied()
                        .collect(),
                }
            })
            .collect();
        let expiry = self
            .expiry
            .iter()
            .filter(|(expires, hash)| {
                self.keys.get(hash).is_some_and(|&i| {
                    self.states[i as usize].last_pane.saturating_add(self.panes) == *expires
                })
            })
            .copied()
            .collect();
        (keys, expiry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_least_recently_seen_key_makes_room() {
        let mut k = Keyed::new(2, 2);
        let mut stats = Stats::default();
        let a = k.enter(1, 10, &mut stats).unwrap();
        k.enter(2, 11, &mut stats).unwrap();
        assert_eq!(
            k.enter(1, 12, &mut stats),
            Some(a),
            "1 seen again, now the newest"
        );
        k.enter(3, 12, &mut stats).unwrap();
        assert_eq!(stats.keys_evicted, 1);
        assert!(k.keys.contains_key(&1) && k.keys.contains_key(&3));
        assert!(!k.keys.contains_key(&2), "2 was the least recently seen");
    }

    #[test]
    fn a_pane_older_than_the_key_holds_is_refused_and_passed_keys_are_dropped() {
        let mut k = Keyed::new(3, 10);
        let mut stats = Stats::default();
        k.enter(7, 10, &mut stats).unwrap();
        assert_eq!(k.enter(7, 7, &mut stats), None, "three panes behind");
        assert!(k.enter(7, 8, &mut stats).is_some());
        k.evict(12);
        assert!(k.keys.contains_key(&7), "its window ends with pane 13");
        k.evict(13);
        assert!(!k.keys.contains_key(&7));
        assert_eq!(k.free.len(), 1, "its slot is reused");
    }
}
