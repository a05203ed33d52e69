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

use serde::Serialize;
use shoplake_events::time::Clock;
use shoplake_events::{Event, EventType};

use crate::incident::{Change, Incident, Tracker};
use crate::rules::{KeyType, Measure, Rule, Settings, Severity, TimeMode};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What a rule counts per, for one event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A user id.
    User(i64),
    /// An address.
    Ip(IpAddr),
    /// A session.
    Session(Box<str>),
    /// All traffic.
    Global,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::User(u) => write!(f, "{u}"),
            Key::Ip(ip) => write!(f, "{ip}"),
            Key::Session(s) => f.write_str(s),
            Key::Global => f.write_str("all"),
        }
    }
}

/// A window crossing a threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    /// The window's start, µs.
    pub window_start: i64,
    /// The window's end, µs.
    pub window_end: i64,
    /// The measured value.
    pub value: f64,
    /// The severity of the level crossed.
    pub severity: Severity,
    /// The time of the event that made it cross.
    pub at: i64,
    /// The key's events in the window so far.
    pub events: u64,
}

/// The engine's counters (metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Events seen.
    pub events: u64,
    /// Events behind the watermark (not windowed).
    pub late: u64,
    /// Exact duplicates dropped.
    pub duplicates: u64,
    /// Windows that fired.
    pub windows_fired: u64,
    /// Keys not tracked because a rule was at its key cap.
    pub keys_dropped: u64,
    /// Events of allow-listed users or addresses (not counted by keyed rules).
    pub allowed: u64,
}

#[derive(Debug)]
struct Robotic {
    first: i64,
    last: i64,
    n: usize,
    gaps: Vec<i64>,
}

#[derive(Debug)]
struct KeyState {
    key: Key,
    ring: Box<[(i64, u32)]>,
    last_pane: i64,
    distinct: Option<Map<u64, i64>>,
    fired_end: i64,
    fired_level: usize,
    robotic: Option<Robotic>,
}

#[derive(Debug)]
struct Spike {
    window: i64,
    count: u64,
    threshold: f64,
    fired: bool,
    baseline: VecDeque<u64>,
}

#[derive(Debug)]
struct RuleState {
    rule: Rule,
    max_keys: usize,
    panes: i64,
    keys: Map<u64, KeyState>,
    expiry: VecDeque<(i64, u64)>,
    spike: Spike,
}

impl RuleState {
    fn new(rule: Rule, max_keys: usize) -> RuleState {
        let panes = (rule.window / rule.slide.max(1)).max(1);
        RuleState {
            rule,
            max_keys,
            panes,
            keys: Map::default(),
            expiry: VecDeque::new(),
            spike: Spike {
                window: i64::MIN,
                count: 0,
                threshold: f64::INFINITY,
                fired: false,
                baseline: VecDeque::new(),
            },
        }
    }

    /// Counts one event of `key` at `t` (with the value a distinct measure counts); returns a
    /// firing when a window crosses a level.
    fn observe(
        &mut self,
        hash: u64,
        key: impl FnOnce() -> Key,
        t: i64,
        distinct: u64,
        stats: &mut Stats,
    ) -> Option<Fire> {
        if let Measure::Spike {
            factor,
            baseline,
            floor,
        } = self.rule.measure
        {
            return self.spike(t, factor, baseline, floor);
        }
        let panes = self.panes;
        let slide = self.rule.slide.max(1);
        let pane = t.div_euclid(slide);
        let robotic = matches!(self.rule.measure, Measure::Robotic { .. });
        let keys_len = self.keys.len();
        let st = match self.keys.entry(hash) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                if keys_len >= self.max_keys {
                    stats.keys_dropped += 1;
                    return None;
                }
                let distinct_map = matches!(
                    self.rule.measure,
                    Measure::DistinctProductsViewed | Measure::DistinctSessions
                )
                .then(Map::default);
                v.insert(KeyState {
                    key: key(),
                    ring: vec![(i64::MIN, 0u32); panes as usize].into_boxed_slice(),
                    last_pane: i64::MIN,
                    distinct: distinct_map,
                    fired_end: i64::MIN,
                    fired_level: 0,
                    robotic: None,
                })
            }
        };
        if st.last_pane != i64::MIN && pane <= st.last_pane - panes {
            // Older than anything this key still holds.
            return None;
        }
        if pane > st.last_pane {
            st.last_pane = pane;
            self.expiry.push_back((pane + panes, hash));
        }
        if robotic {
            let Measure::Robotic { events, max_cv } = self.rule.measure else {
                return None;
            };
            return robotic_step(st, t, events, max_cv);
        }
        let slot = pane.rem_euclid(panes) as usize;
        if st.ring[slot].0 != pane {
            st.ring[slot] = (pane, 0);
        }
        match &mut st.distinct {
            None => st.ring[slot].1 += 1,
            Some(seen) => match seen.get(&distinct).copied() {
                Some(q) if q >= pane => {}
                Some(q) => {
                    let old = q.rem_euclid(panes) as usize;
                    if st.ring[old].0 == q {
                        st.ring[old].1 = st.ring[old].1.saturating_sub(1);
                    }
                    st.ring[slot].1 += 1;
                    seen.insert(distinct, pane);
                }
                None => {
                    st.ring[slot].1 += 1;
                    seen.insert(distinct, pane);
                }
            },
        }
        let lo = pane - panes;
        let value: u64 = st
            .ring
            .iter()
            .filter(|(p, _)| *p > lo && *p <= pane)
            .map(|(_, c)| u64::from(*c))
            .sum();
        if let Some(seen) = &mut st.distinct
            && seen.len() > 64
            && seen.len() as u64 > 4 * value
        {
            seen.retain(|_, q| *q > lo);
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
            .count();
        if level > st.fired_level {
            st.fired_level = level;
            let severity = self.rule.levels[level - 1].severity;
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
        if w < s.window {
            return None;
        }
        if w > s.window {
            if s.window != i64::MIN {
                s.baseline.push_back(s.count);
                let empty = (w - s.window - 1).min(baseline as i64);
                for _ in 0..empty {
                    s.baseline.push_back(0);
                }
                while s.baseline.len() > baseline {
                    s.baseline.pop_front();
                }
            }
            s.window = w;
            s.count = 0;
            s.fired = false;
            let median = median(&s.baseline);
            s.threshold = (factor * median).max(floor as f64);
        }
        s.count += 1;
        if !s.fired && s.count as f64 > s.threshold {
            s.fired = true;
            return Some(Fire {
                window_start: w * size,
                window_end: (w + 1) * size,
                value: s.count as f64,
                severity: self.rule.levels[0].severity,
                at: t,
                events: s.count,
            });
        }
        None
    }

    /// Drops keys whose windows all ended at or before the watermark's pane.
    fn evict(&mut self, watermark: i64) {
        let wm_pane = watermark.div_euclid(self.rule.slide.max(1));
        while let Some(&(expires, hash)) = self.expiry.front() {
            if expires > wm_pane {
                break;
            }
            self.expiry.pop_front();
            if self
                .keys
                .get(&hash)
                .is_some_and(|st| st.last_pane + self.panes <= wm_pane)
            {
                self.keys.remove(&hash);
            }
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

fn robotic_step(st: &mut KeyState, t: i64, events: usize, max_cv: f64) -> Option<Fire> {
    let r = st.robotic.get_or_insert_with(|| Robotic {
        first: t,
        last: t,
        n: 0,
        gaps: Vec::with_capacity(events),
    });
    if r.n > 0 {
        r.gaps.push(t - r.last);
    } else {
        r.first = t;
    }
    r.last = t;
    r.n += 1;
    if r.n < events {
        return None;
    }
    let n = r.gaps.len() as f64;
    let mean = r.gaps.iter().sum::<i64>() as f64 / n;
    let var = r
        .gaps
        .iter()
        .map(|g| (*g as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let start = r.first;
    let count = r.n as u64;
    // The next block starts at this event.
    r.gaps.clear();
    r.first = t;
    r.n = 1;
    if mean <= 0.0 {
        return None;
    }
    let cv = var.sqrt() / mean;
    if cv < max_cv {
        let fired_end = t + 1;
        st.fired_end = fired_end;
        return Some(Fire {
            window_start: start,
            window_end: fired_end,
            value: (cv * 1000.0).round() / 1000.0,
            severity: crate::rules::Severity::Medium,
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
}

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
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
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
        let id = e.event_id().0;
        if !self.seen.insert(id) {
            self.stats.duplicates += 1;
            return;
        }
        self.seen_order.push_back((t, id));
        if t > self.max_seen {
            self.max_seen = t;
            let wm = t.saturating_sub(self.settings.lateness);
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
        for index in 0..self.rules.len() {
            let key_type = self.rules[index].rule.key;
            let measure = self.rules[index].rule.measure.clone();
            let (hash, distinct): (u64, u64) = match key_type {
                KeyType::UserId => {
                    if user_allowed {
                        continue;
                    }
                    if measure == Measure::Denied && !self.deny_users.contains(&e.user_id) {
                        continue;
                    }
                    let d = match measure {
                        Measure::DistinctProductsViewed => {
                            if e.event_type != EventType::View {
                                continue;
                            }
                            product
                        }
                        Measure::DistinctSessions => match &e.user_session {
                            Some(s) => hash_of(s.as_bytes()),
                            None => continue,
                        },
                        _ => 0,
                    };
                    ((e.user_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15), d)
                }
                KeyType::ClientIp => {
                    let Some(ip) = e.client_ip else { continue };
                    if ip_allowed {
                        continue;
                    }
                    if measure == Measure::Denied && !self.deny_ips.contains(&ip) {
                        continue;
                    }
                    let h = match ip {
                        IpAddr::V4(v4) => u64::from(u32::from(v4)),
                        IpAddr::V6(v6) => hash_of(&v6.octets()),
                    };
                    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0)
                }
                KeyType::UserSession => {
                    if user_allowed || ip_allowed {
                        continue;
                    }
                    match &e.user_session {
                        Some(s) => (hash_of(s.as_bytes()), 0),
                        None => continue,
                    }
                }
                KeyType::Global => (0, 0),
            };
            let key = || match key_type {
                KeyType::UserId => Key::User(e.user_id),
                KeyType::ClientIp => e.client_ip.map_or(Key::Global, Key::Ip),
                KeyType::UserSession => {
                    Key::Session(e.user_session.as_deref().unwrap_or_default().into())
                }
                KeyType::Global => Key::Global,
            };
            if self.tracker.is_open(index, hash) {
                self.tracker.count_event(index, hash);
            }
            let state = &mut self.rules[index];
            let fire = state.observe(hash, key, t, distinct, &mut self.stats);
            if let Some(fire) = fire {
                self.stats.windows_fired += 1;
                let state = &mut self.rules[index];
                let key = state
                    .keys
                    .get(&hash)
                    .map_or(Key::Global, |st| st.key.clone());
                let change = self.tracker.fire(index, &state.rule, hash, &key, &fire);
                self.changes.push(change);
            }
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
            self.advance(self.max_seen);
        }
    }

    fn advance(&mut self, watermark: i64) {
        self.watermark = watermark;
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
        for (_, incident) in self.tracker.resolve_quiet(watermark) {
            self.changes.push(Change::Resolved(incident));
        }
    }
}
