//! The stream engine: events in, firings and incident changes out.
//!
//! Time is the events' own (a watermark trails the newest event by the allowed lateness;
//! events before it are late: counted, not windowed) or the clock's at arrival. Exact
//! duplicates are dropped by `event_id` within a horizon. Each rule keeps, per key, a ring of
//! panes (one per slide) of its window; a firing is emitted as soon as a window's value
//! crosses a threshold, so detection does not wait for the window to close. Keys whose
//! windows have all passed the watermark are evicted; a cap bounds the keys a rule tracks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoplake_events::time::Clock;
use shoplake_events::{Event, EventType};

use crate::fire::{Fire, Key};
use crate::incident::{Change, Incident, IncidentState, Tracker};
use crate::rules::{KeyType, Measure, Rule, Settings, Severity, TimeMode};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The engine's counters (metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Events seen.
    pub events: u64,
    /// Events behind the watermark (not windowed).
    pub late: u64,
    /// Exact duplicates dropped.
    pub duplicates: u64,
    /// Windows that fired.
    pub windows_fired: u64,
    /// Keys a rule forgot (the least recently seen) to make room for a new one at its cap.
    pub keys_evicted: u64,
    /// Event ids forgotten before the duplicate horizon because the id set was at its cap.
    pub dedupe_evicted: u64,
    /// Events of allow-listed users or addresses (not counted by keyed rules).
    pub allowed: u64,
}

/// A session's current block of events (running sums of its gaps: no allocation).
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct Robotic {
    first: i64,
    last: i64,
    n: u32,
    sum: f64,
    sum2: f64,
}

/// Distinct values of a key with the pane each was last seen in: a few inline, more in a map.
#[derive(Debug, Default, Clone)]
struct Distinct {
    inline: [(u64, i64); INLINE],
    len: u8,
    map: Option<Box<Map<u64, i64>>>,
}

const INLINE: usize = 4;

impl Distinct {
    fn get(&self, v: u64) -> Option<i64> {
        match &self.map {
            Some(m) => m.get(&v).copied(),
            None => self.inline[..self.len as usize]
                .iter()
                .find(|(x, _)| *x == v)
                .map(|(_, p)| *p),
        }
    }

    fn set(&mut self, v: u64, pane: i64) {
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

    fn len(&self) -> usize {
        self.map.as_ref().map_or(self.len as usize, |m| m.len())
    }

    /// Forgets values last seen at or before `lo`.
    fn retain_after(&mut self, lo: i64) {
        if let Some(m) = &mut self.map {
            m.retain(|_, p| *p > lo);
        }
    }
}

/// One key's state in one rule, at the same index in the rule's slab as its ring of panes.
#[derive(Debug, Clone)]
struct KeyState {
    last_pane: i64,
    fired_end: i64,
    fired_level: u32,
    distinct: Distinct,
    robotic: Robotic,
}

/// The global count per window: recent windows' counts (the baseline) and, per window, the
/// threshold fixed when its first event came and whether it fired. Events may arrive a little
/// out of order across log partitions: each counts in its own window, so the counts, and the
/// baselines drawn from them, do not depend on arrival order.
#[derive(Debug)]
struct Spike {
    /// The window of `windows[0]`.
    first: i64,
    /// (count, threshold, fired) per window from `first` on.
    windows: VecDeque<(u64, f64, bool)>,
}

/// What a rule's measure needs per event, decided once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Count,
    Distinct,
    Spike,
    Robotic,
}

#[derive(Debug)]
struct RuleState {
    rule: Rule,
    kind: Kind,
    max_keys: usize,
    panes: i64,
    /// Key hash → index into `states` (and `rings`): the map's entries stay small, so its
    /// rehashes under churn move little.
    keys: Map<u64, u32>,
    states: Vec<KeyState>,
    /// Rings of `panes` (pane, count) per key, back to back.
    rings: Vec<(i64, u32)>,
    free: Vec<u32>,
    expiry: VecDeque<(i64, u64)>,
    spike: Spike,
    /// The value of the window the last event counted in, when that window has fired (so an
    /// open incident's peak follows the window past its threshold).
    fired_value: Option<f64>,
}

impl RuleState {
    fn new(rule: Rule, max_keys: usize) -> RuleState {
        let panes = (rule.window / rule.slide.max(1)).max(1);
        let kind = match rule.measure {
            Measure::Count | Measure::Denied => Kind::Count,
            Measure::DistinctProductsViewed | Measure::DistinctSessions => Kind::Distinct,
            Measure::Spike { .. } => Kind::Spike,
            Measure::Robotic { .. } => Kind::Robotic,
        };
        RuleState {
            rule,
            kind,
            max_keys,
            panes,
            keys: Map::default(),
            states: Vec::new(),
            rings: Vec::new(),
            free: Vec::new(),
            expiry: VecDeque::new(),
            spike: Spike {
                first: i64::MIN,
                windows: VecDeque::new(),
            },
            fired_value: None,
        }
    }

    /// A fresh state (and ring) for a new key; returns its index.
    fn alloc(&mut self) -> u32 {
        let panes = self.panes as usize;
        let fresh = KeyState {
            last_pane: i64::MIN,
            fired_end: i64::MIN,
            fired_level: 0,
            distinct: Distinct::default(),
            robotic: Robotic::default(),
        };
        if let Some(i) = self.free.pop() {
            let at = i as usize * panes;
            self.rings[at..at + panes].fill((i64::MIN, 0));
            self.states[i as usize] = fresh;
            return i;
        }
        let i = self.states.len() as u32;
        self.states.push(fresh);
        self.rings.extend(std::iter::repeat_n((i64::MIN, 0), panes));
        i
    }

    /// Counts one event of a key (by hash) at `t` (with the value a distinct measure
    /// counts); returns a firing when a window crosses a level.
    fn observe(&mut self, hash: u64, t: i64, distinct: u64, stats: &mut Stats) -> Option<Fire> {
        self.fired_value = None;
        if self.kind == Kind::Spike {
            let Measure::Spike {
                factor,
                baseline,
                floor,
            } = self.rule.measure
            else {
                return None;
            };
            return self.spike(t, factor, baseline, floor);
        }
        let panes = self.panes;
        let slide = self.rule.slide.max(1);
        let pane = t.div_euclid(slide);
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
        if st.last_pane != i64::MIN && pane <= st.last_pane - panes {
            // Older than anything this key still holds.
            return None;
        }
        if pane > st.last_pane {
            st.last_pane = pane;
            self.expiry.push_back((pane + panes, hash));
        }
        if self.kind == Kind::Robotic {
            let Measure::Robotic { events, max_cv } = self.rule.measure else {
                return None;
            };
            return robotic_step(st, t, events, max_cv, self.rule.levels[0].severity);
        }
        let at = index * panes as usize;
        let ring = &mut self.rings[at..at + panes as usize];
        let slot = pane.rem_euclid(panes) as usize;
        if ring[slot].0 != pane {
            ring[slot] = (pane, 0);
        }
        if self.kind == Kind::Distinct {
            match st.distinct.get(distinct) {
                Some(q) if q >= pane => {}
                Some(q) => {
                    let old = q.rem_euclid(panes) as usize;
                    if ring[old].0 == q {
                        ring[old].1 = ring[old].1.saturating_sub(1);
                    }
                    ring[slot].1 += 1;
                    st.distinct.set(distinct, pane);
                }
                None => {
                    ring[slot].1 += 1;
                    st.distinct.set(distinct, pane);
                }
            }
        } else {
            ring[slot].1 += 1;
        }
        let lo = pane - panes;
        let value: u64 = ring
            .iter()
            .filter(|(p, _)| *p > lo && *p <= pane)
            .map(|(_, c)| u64::from(*c))
            .sum();
        if st.distinct.len() > 64 && st.distinct.len() as u64 > 4 * value {
            st.distinct.retain_after(lo);
        }
        let window_end = (pane + 1) * slide;
        if window_end != st.fired_end {
            st.fired_end = window_end;
            st.fired_level = 0;
        }
        let level = self
            .rule
            .levels
            .iter()
            .take_while(|l| value as f64 > l.above)
            .count() as u32;
        if st.fired_level > 0 {
            self.fired_value = Some(value as f64);
        }
        if level > st.fired_level {
            st.fired_level = level;
            let severity = self.rule.levels[level as usize - 1].severity;
            return Some(Fire {
                window_start: window_end - self.rule.window,
                window_end,
                value: value as f64,
                severity,
                at: t,
                events: value,
            });
        }
        None
    }

    fn spike(&mut self, t: i64, factor: f64, baseline: usize, floor: u64) -> Option<Fire> {
        let size = self.rule.window.max(1);
        let w = t.div_euclid(size);
        let s = &mut self.spike;
        if s.first == i64::MIN {
            s.first = w;
        }
        if w < s.first {
            // Older than every window still kept.
            return None;
        }
        // A long silence: the baseline is that many empty windows.
        let kept = baseline as i64 + 1;
        if w - (s.first + s.windows.len() as i64) > kept {
            s.windows.clear();
            s.first = w - kept;
            s.windows
                .extend(std::iter::repeat_n((0, floor as f64, true), kept as usize));
        }
        // New windows get their threshold from the `baseline` windows before them.
        while s.first + (s.windows.len() as i64) <= w {
            let n = s.first + s.windows.len() as i64;
            let lo = (n - baseline as i64).max(s.first);
            let counts: VecDeque<u64> = (lo..n)
                .map(|i| s.windows[(i - s.first) as usize].0)
                .collect();
            let threshold = (factor * median(&counts)).max(floor as f64);
            s.windows.push_back((0, threshold, false));
            while s.windows.len() > baseline + 2 {
                s.windows.pop_front();
                s.first += 1;
            }
        }
        if w < s.first {
            return None;
        }
        let slot = &mut s.windows[(w - s.first) as usize];
        slot.0 += 1;
        if slot.2 {
            self.fired_value = Some(slot.0 as f64);
            return None;
        }
        if slot.0 as f64 > slot.1 {
            slot.2 = true;
            return Some(Fire {
                window_start: w * size,
                window_end: (w + 1) * size,
                value: slot.0 as f64,
                severity: self.rule.levels[0].severity,
                at: t,
                events: slot.0,
            });
        }
        None
    }

    /// Forgets the key seen least recently (at the cap, to make room for a new one): the
    /// expiry queue is in the order keys reached their latest pane, so its first entry that
    /// is still a key's latest names that key.
    fn evict_least_recent(&mut self) {
        while let Some((expires, hash)) = self.expiry.pop_front() {
            if let Some(&i) = self.keys.get(&hash)
                && self.states[i as usize].last_pane.saturating_add(self.panes) == expires
            {
                self.keys.remove(&hash);
                self.states[i as usize].distinct = Distinct::default();
                self.free.push(i);
                return;
            }
        }
    }

    /// Drops keys whose windows all ended at or before the watermark's pane.
    fn evict(&mut self, watermark: i64) {
        let wm_pane = watermark.div_euclid(self.rule.slide.max(1));
        while let Some(&(expires, hash)) = self.expiry.front() {
            if expires > wm_pane {
                break;
            }
            self.expiry.pop_front();
            if let Some(&i) = self.keys.get(&hash)
                && self.states[i as usize].last_pane + self.panes <= wm_pane
            {
                self.keys.remove(&hash);
                self.states[i as usize].distinct = Distinct::default();
                self.free.push(i);
            }
        }
    }
}

/// One key's windows as a checkpoint keeps them: only what it holds (the panes in use, the
/// distinct values seen), not the slab's free slots.
#[derive(Debug, Serialize, Deserialize)]
struct KeySnapshot {
    hash: u64,
    last_pane: i64,
    fired_end: i64,
    fired_level: u32,
    distinct: Vec<(u64, i64)>,
    robotic: Robotic,
    /// The panes in use: (pane, count).
    panes: Vec<(i64, u32)>,
}

/// A rule's windows as a checkpoint keeps them.
#[derive(Debug, Serialize, Deserialize)]
struct RuleSnapshot {
    name: String,
    key: KeyType,
    /// A hash of the rule's definition: a checkpoint is restored only into the same rule.
    fingerprint: u64,
    keys: Vec<KeySnapshot>,
    /// The expiry queue's entries that still name a key's latest pane, in order.
    expiry: Vec<(i64, u64)>,
    spike_first: i64,
    spike_windows: VecDeque<(u64, f64, bool)>,
}

fn rule_fingerprint(rule: &Rule) -> u64 {
    hash_of(format!("{rule:?}").as_bytes())
}

/// A rule's windows copied as they are (cheap: a few `memcpy`s), to be compacted into a
/// [`RuleSnapshot`] away from the detector.
#[derive(Debug)]
struct RuleCopy {
    name: String,
    key: KeyType,
    fingerprint: u64,
    panes: i64,
    keys: Map<u64, u32>,
    states: Vec<KeyState>,
    rings: Vec<(i64, u32)>,
    expiry: VecDeque<(i64, u64)>,
    spike_first: i64,
    spike_windows: VecDeque<(u64, f64, bool)>,
}

impl RuleCopy {
    fn compact(self) -> RuleSnapshot {
        let panes = self.panes as usize;
        let keys = self
            .keys
            .iter()
            .map(|(hash, i)| {
                let i = *i as usize;
                let st = &self.states[i];
                let distinct = match &st.distinct.map {
                    Some(m) => m.iter().map(|(v, p)| (*v, *p)).collect(),
                    None => st.distinct.inline[..st.distinct.len as usize].to_vec(),
                };
                KeySnapshot {
                    hash: *hash,
                    last_pane: st.last_pane,
                    fired_end: st.fired_end,
                    fired_level: st.fired_level,
                    distinct,
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
        RuleSnapshot {
            name: self.name,
            key: self.key,
            fingerprint: self.fingerprint,
            keys,
            expiry,
            spike_first: self.spike_first,
            spike_windows: self.spike_windows,
        }
    }
}

impl RuleState {
    fn copy(&self) -> RuleCopy {
        RuleCopy {
            name: self.rule.name.clone(),
            key: self.rule.key,
            fingerprint: rule_fingerprint(&self.rule),
            panes: self.panes,
            keys: self.keys.clone(),
            states: self.states.clone(),
            rings: self.rings.clone(),
            expiry: self.expiry.clone(),
            spike_first: self.spike.first,
            spike_windows: self.spike.windows.clone(),
        }
    }

    /// Takes back the windows of a checkpoint into a fresh rule state.
    fn restore(&mut self, s: RuleSnapshot) -> Result<(), String> {
        let panes = self.panes;
        for k in s.keys {
            if k.panes.len() > panes as usize || self.keys.contains_key(&k.hash) {
                return Err(format!(
                    "the windows of rule {} do not fit together",
                    s.name
                ));
            }
            let i = self.alloc();
            let st = &mut self.states[i as usize];
            st.last_pane = k.last_pane;
            st.fired_end = k.fired_end;
            st.fired_level = k.fired_level;
            st.robotic = k.robotic;
            for (v, p) in k.distinct {
                st.distinct.set(v, p);
            }
            let at = i as usize * panes as usize;
            for (p, count) in k.panes {
                self.rings[at + p.rem_euclid(panes) as usize] = (p, count);
            }
            self.keys.insert(k.hash, i);
        }
        self.expiry = s.expiry.into_iter().collect();
        self.spike = Spike {
            first: s.spike_first,
            windows: s.spike_windows,
        };
        self.fired_value = None;
        Ok(())
    }
}

/// A detector's state as a checkpoint keeps it: the rules' windows, the open incidents, the
/// duplicate horizon, the watermark and the counters (not the settings, the clock or the
/// lists, which come from the configuration and the store again).
#[derive(Debug, Serialize, Deserialize)]
pub struct DetectorState {
    rules: Vec<RuleSnapshot>,
    max_seen: i64,
    watermark: i64,
    seen_order: VecDeque<(i64, u128)>,
    incidents: Vec<(usize, u64, IncidentState)>,
    stats: Stats,
    next_sweep: i64,
}

/// A detector's state copied as it is, to be compacted into a [`DetectorState`] away from
/// the detector (see [`Detector::copy`]).
#[derive(Debug)]
pub struct DetectorCopy {
    rules: Vec<RuleCopy>,
    max_seen: i64,
    watermark: i64,
    seen_order: VecDeque<(i64, u128)>,
    incidents: Vec<(usize, u64, IncidentState)>,
    stats: Stats,
    next_sweep: i64,
}

impl DetectorCopy {
    /// The state a checkpoint keeps.
    pub fn into_state(self) -> DetectorState {
        DetectorState {
            rules: self.rules.into_iter().map(RuleCopy::compact).collect(),
            max_seen: self.max_seen,
            watermark: self.watermark,
            seen_order: self.seen_order,
            incidents: self.incidents,
            stats: self.stats,
            next_sweep: self.next_sweep,
        }
    }
}

fn median(values: &VecDeque<u64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v: Vec<u64> = values.iter().copied().collect();
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0
    }
}

fn robotic_step(
    st: &mut KeyState,
    t: i64,
    events: usize,
    max_cv: f64,
    severity: Severity,
) -> Option<Fire> {
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
    // The next block starts at this event.
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
    if cv < max_cv {
        st.fired_end = t + 1;
        return Some(Fire {
            window_start: start,
            window_end: t + 1,
            value: (cv * 1000.0).round() / 1000.0,
            severity,
            at: t,
            events: count,
        });
    }
    None
}

fn hash_of(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The detector: rules over a stream of events, with incidents.
pub struct Detector {
    settings: Settings,
    clock: Arc<dyn Clock>,
    rules: Vec<RuleState>,
    max_seen: i64,
    watermark: i64,
    seen: HashSet<u128, foldhash::fast::RandomState>,
    seen_order: VecDeque<(i64, u128)>,
    allow_users: HashSet<i64>,
    allow_ips: HashSet<IpAddr>,
    deny_users: HashSet<i64>,
    deny_ips: HashSet<IpAddr>,
    tracker: Tracker,
    changes: Vec<Change>,
    stats: Stats,
    next_sweep: i64,
    /// The watermark moves only by [`Detector::advance_to`].
    driven: bool,
    /// Duplicates are dropped (by `event_id`, within the horizon).
    dedupe: bool,
}

const SWEEP_EVERY: i64 = 100_000;

impl fmt::Debug for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detector")
            .field("watermark", &self.watermark)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// A detector with these settings; `clock` gives processing time (and nothing else in
    /// event-time mode).
    pub fn new(settings: Settings, clock: Arc<dyn Clock>) -> Detector {
        let rules = settings
            .rules
            .iter()
            .map(|r| RuleState::new(r.clone(), settings.max_keys))
            .collect();
        Detector {
            allow_users: settings.allow.user_ids.iter().copied().collect(),
            allow_ips: settings.allow.client_ips.iter().copied().collect(),
            deny_users: settings.deny.user_ids.iter().copied().collect(),
            deny_ips: settings.deny.client_ips.iter().copied().collect(),
            tracker: Tracker::new(settings.cooldown),
            clock,
            rules,
            settings,
            max_seen: i64::MIN,
            watermark: i64::MIN,
            seen: HashSet::default(),
            seen_order: VecDeque::new(),
            changes: Vec::new(),
            stats: Stats::default(),
            next_sweep: i64::MIN,
            driven: false,
            dedupe: true,
        }
    }

    /// The same detector for events already free of duplicates (another detector dropped
    /// them first): no id set is kept.
    pub fn deduplicated_upstream(mut self) -> Detector {
        self.dedupe = false;
        self
    }

    /// The same detector with its watermark moved only by [`Detector::advance_to`], not by
    /// the events it sees (its caller merges the watermarks of several inputs).
    pub fn driven(mut self) -> Detector {
        self.driven = true;
        self
    }

    /// Moves the watermark to `watermark` (never backwards): closes windows, forgets keys and
    /// resolves quiet incidents behind it.
    pub fn advance_to(&mut self, watermark: i64) {
        if watermark > self.watermark {
            self.max_seen = self.max_seen.max(watermark);
            self.advance(watermark);
        }
    }

    /// The state a checkpoint keeps, copied as it is (a few `memcpy`s; take it between
    /// events, with the changes taken), so that compacting and encoding it can run beside
    /// the detector: [`DetectorCopy::into_state`].
    pub fn copy(&self) -> DetectorCopy {
        DetectorCopy {
            rules: self.rules.iter().map(RuleState::copy).collect(),
            max_seen: self.max_seen,
            watermark: self.watermark,
            seen_order: self.seen_order.clone(),
            incidents: self.tracker.state(),
            stats: self.stats.clone(),
            next_sweep: self.next_sweep,
        }
    }

    /// Takes back a checkpoint's state into a detector just made with the same settings.
    /// Fails, changing nothing of use, when the rules differ from those it was taken with or
    /// the state does not fit together.
    pub fn restore(&mut self, state: DetectorState) -> Result<(), String> {
        if state.rules.iter().any(|r| r.name == "deny_list") {
            self.ensure_deny_rules();
        }
        if state.rules.len() != self.rules.len() {
            return Err("the rules changed since the checkpoint".to_owned());
        }
        // Rule index in the checkpoint → index here.
        let mut index = Vec::with_capacity(state.rules.len());
        for snap in &state.rules {
            let here = self.rules.iter().position(|r| {
                r.rule.name == snap.name
                    && r.rule.key == snap.key
                    && rule_fingerprint(&r.rule) == snap.fingerprint
            });
            match here {
                Some(i) if !index.contains(&i) => index.push(i),
                _ => return Err(format!("rule {} changed since the checkpoint", snap.name)),
            }
        }
        for (snap, &i) in state.rules.into_iter().zip(&index) {
            self.rules[i].restore(snap)?;
        }
        for (rule, key, incident) in state.incidents {
            let Some(&i) = index.get(rule) else {
                return Err(format!(
                    "an incident of rule {rule}, which the checkpoint lacks"
                ));
            };
            self.tracker.restore(i, key, incident);
        }
        self.seen = state.seen_order.iter().map(|(_, id)| *id).collect();
        self.seen_order = state.seen_order;
        self.max_seen = state.max_seen;
        self.watermark = state.watermark;
        self.stats = state.stats;
        self.next_sweep = state.next_sweep;
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Event ids remembered to drop duplicates.
    pub fn dedupe_ids(&self) -> usize {
        self.seen.len()
    }

    /// The watermark (µs; `i64::MIN` before the first event).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The rules in force.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|r| &r.rule)
    }

    /// Adds a user or an address to the allow-list (or takes it off with `allowed = false`),
    /// live: from now on its events are not counted by keyed rules.
    pub fn set_allowed_user(&mut self, user: i64, allowed: bool) {
        if allowed {
            self.allow_users.insert(user);
        } else {
            self.allow_users.remove(&user);
        }
    }

    /// Allow-lists an address (see [`Detector::set_allowed_user`]).
    pub fn set_allowed_ip(&mut self, ip: IpAddr, allowed: bool) {
        if allowed {
            self.allow_ips.insert(ip);
        } else {
            self.allow_ips.remove(&ip);
        }
    }

    /// Deny-lists a user (its events open a `deny_list` incident) or lifts it.
    pub fn set_denied_user(&mut self, user: i64, denied: bool) {
        if denied {
            self.deny_users.insert(user);
        } else {
            self.deny_users.remove(&user);
        }
        self.ensure_deny_rules();
    }

    /// Deny-lists an address (see [`Detector::set_denied_user`]).
    pub fn set_denied_ip(&mut self, ip: IpAddr, denied: bool) {
        if denied {
            self.deny_ips.insert(ip);
        } else {
            self.deny_ips.remove(&ip);
        }
        self.ensure_deny_rules();
    }

    fn ensure_deny_rules(&mut self) {
        if self.rules.iter().any(|r| r.rule.measure == Measure::Denied) {
            return;
        }
        for key in [KeyType::UserId, KeyType::ClientIp] {
            self.rules.push(RuleState::new(
                Rule {
                    name: "deny_list".to_owned(),
                    key,
                    window: 10_000_000,
                    slide: 10_000_000,
                    measure: Measure::Denied,
                    levels: vec![crate::rules::Level {
                        above: 0.0,
                        severity: Severity::High,
                    }],
                },
                self.settings.max_keys,
            ));
        }
    }

    /// Takes the incident changes so far.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// The incidents open now, oldest first.
    pub fn open_incidents(&self) -> Vec<Incident> {
        self.tracker.open()
    }

    /// Processes events in order.
    pub fn process_all<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        for e in events {
            self.process(e);
        }
    }

    /// Processes one event.
    pub fn process(&mut self, e: &Event) {
        self.stats.events += 1;
        let t = match self.settings.time {
            TimeMode::Event => e.event_time,
            TimeMode::Processing => self.clock.now_micros(),
        };
        if t < self.watermark {
            self.stats.late += 1;
            return;
        }
        if self.dedupe {
            let id = e.event_id().0;
            if !self.seen.insert(id) {
                self.stats.duplicates += 1;
                return;
            }
            self.seen_order.push_back((t, id));
            if self.seen_order.len() > self.settings.max_dedupe_ids
                && let Some((_, oldest)) = self.seen_order.pop_front()
            {
                self.seen.remove(&oldest);
                self.stats.dedupe_evicted += 1;
            }
        }
        let progress = self.progress(e, t);
        if self.driven {
            self.max_seen = self.max_seen.max(progress);
        } else if progress > self.max_seen {
            self.max_seen = progress;
            let wm = progress.saturating_sub(self.settings.lateness);
            if wm > self.watermark {
                self.advance(wm);
            }
        }
        let user_allowed = self.allow_users.contains(&e.user_id);
        let ip_allowed = e.client_ip.is_some_and(|ip| self.allow_ips.contains(&ip));
        if user_allowed || ip_allowed {
            self.stats.allowed += 1;
        }
        let product = (e.product_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let session = e.user_session.as_deref().map(|s| hash_of(s.as_bytes()));
        let user = (e.user_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let ip = e.client_ip.map(|ip| {
            let h = match ip {
                IpAddr::V4(v4) => u64::from(u32::from(v4)),
                IpAddr::V6(v6) => hash_of(&v6.octets()),
            };
            h.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        });
        for index in 0..self.rules.len() {
            let r = &self.rules[index];
            let denied = r.rule.measure == Measure::Denied;
            let (hash, distinct): (u64, u64) = match r.rule.key {
                KeyType::UserId => {
                    if user_allowed || denied && !self.deny_users.contains(&e.user_id) {
                        continue;
                    }
                    let d = match r.rule.measure {
                        Measure::DistinctProductsViewed => {
                            if e.event_type != EventType::View {
                                continue;
                            }
                            product
                        }
                        Measure::DistinctSessions => match session {
                            Some(s) => s,
                            None => continue,
                        },
                        _ => 0,
                    };
                    (user, d)
                }
                KeyType::ClientIp => {
                    let (Some(h), Some(addr)) = (ip, e.client_ip) else {
                        continue;
                    };
                    if ip_allowed || denied && !self.deny_ips.contains(&addr) {
                        continue;
                    }
                    (h, 0)
                }
                KeyType::UserSession => {
                    if user_allowed || ip_allowed {
                        continue;
                    }
                    match session {
                        Some(s) => (s, 0),
                        None => continue,
                    }
                }
                KeyType::Global => (0, 0),
            };
            if self.tracker.any_open() {
                if let Some(over) = self.tracker.expire(index, hash, t) {
                    self.changes.push(Change::Resolved(over));
                }
                if self.tracker.is_open(index, hash) {
                    self.tracker.count_event(index, hash);
                }
            }
            let Some(fire) = self.rules[index].observe(hash, t, distinct, &mut self.stats) else {
                if let Some(v) = self.rules[index].fired_value {
                    self.tracker.raise_peak(index, hash, v);
                }
                continue;
            };
            self.stats.windows_fired += 1;
            let rule = &self.rules[index].rule;
            let key = match rule.key {
                KeyType::UserId => Key::User(e.user_id),
                KeyType::ClientIp => e.client_ip.map_or(Key::Global, Key::Ip),
                KeyType::UserSession => {
                    Key::Session(e.user_session.as_deref().unwrap_or_default().into())
                }
                KeyType::Global => Key::Global,
            };
            let user = match rule.key {
                KeyType::UserId | KeyType::UserSession => Some(e.user_id),
                KeyType::ClientIp | KeyType::Global => None,
            };
            let changes = self.tracker.fire(index, rule, hash, &key, user, &fire);
            self.changes.extend(changes);
        }
    }

    /// How far an event at time `t` moves time on: its time, but in event-time mode no
    /// further than its arrival plus the allowed skew (an event stamped a day ahead must not
    /// close every window and make a day of events late).
    pub fn progress(&self, e: &Event, t: i64) -> i64 {
        match (self.settings.time, e.ingest_time) {
            (TimeMode::Event, Some(arrived)) => {
                t.min(arrived.saturating_add(self.settings.max_skew))
            }
            _ => t,
        }
    }

    /// Moves time on without events: in processing-time mode to the clock's now (minus the
    /// lateness); in event-time mode to `now` when given (for a stream gone quiet), never
    /// backwards. Closes windows and resolves quiet incidents.
    pub fn tick(&mut self, now: Option<i64>) {
        let target = match self.settings.time {
            TimeMode::Processing => Some(self.clock.now_micros()),
            TimeMode::Event => now,
        };
        if let Some(now) = target {
            let wm = now.saturating_sub(self.settings.lateness);
            if wm > self.watermark {
                self.max_seen = self.max_seen.max(now);
                self.advance(wm);
            }
        }
    }

    /// The end of a bounded input (history): everything up to the newest event is final.
    pub fn finish(&mut self) {
        if self.max_seen > self.watermark {
            self.next_sweep = i64::MIN;
            self.advance(self.max_seen);
        }
    }

    fn advance(&mut self, watermark: i64) {
        self.watermark = watermark;
        // Evicting and resolving are exact whenever they run (a resolution's time is the last
        // firing plus the cooldown, and a firing after it opens a new incident), so they run
        // at most every 100 ms of watermark.
        if watermark < self.next_sweep {
            return;
        }
        self.next_sweep = watermark.saturating_add(SWEEP_EVERY);
        let horizon = watermark.saturating_sub(self.settings.dedupe_horizon);
        while let Some(&(t, id)) = self.seen_order.front() {
            if t >= horizon {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&id);
        }
        for r in &mut self.rules {
            r.evict(watermark);
        }
        for incident in self.tracker.resolve_quiet(watermark) {
            self.changes.push(Change::Resolved(incident));
        }
    }
}
