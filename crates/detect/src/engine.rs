//! The stream engine: events in, firings and incident changes out.
//!
//! Time is the events' own (a watermark trails the newest event by the allowed lateness;
//! events before it are late: counted, not windowed) or the clock's at arrival. Exact
//! duplicates are dropped by `event_id` within a horizon. Each rule keeps, per key, a ring of
//! panes (one per slide) of its window; a firing is emitted as soon as a window's value
//! crosses a threshold, so detection does not wait for the window to close. Keys whose
//! windows have all passed the watermark are evicted; a cap bounds the keys a rule tracks.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoplake_events::time::Clock;
use shoplake_events::{Event, EventType};

use crate::fire::Key;
use crate::incident::{Change, Incident, IncidentState, Tracker};
use crate::rules::{KeyType, Measure, Rule, Settings, Severity, TimeMode};
pub use crate::stats::Stats;
use crate::window::{RuleCopy, RuleSnapshot, WindowRule, rule_fingerprint, windows};

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

fn hash_of(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// An event's keys as the rules hash them, and whether it is allow-listed: worked out once
/// per event, whatever the number of rules.
struct EventKeys {
    user_allowed: bool,
    ip_allowed: bool,
    user: u64,
    product: u64,
    session: Option<u64>,
    ip: Option<u64>,
}

impl EventKeys {
    fn of(e: &Event, allow_users: &HashSet<i64>, allow_ips: &HashSet<IpAddr>) -> EventKeys {
        // User and product ids and IPv4 addresses are distinct integers already: a multiply
        // spreads them over the hash's bits. Sessions and IPv6 addresses are hashed (XXH3).
        let spread = |h: u64| h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        EventKeys {
            user_allowed: allow_users.contains(&e.user_id),
            ip_allowed: e.client_ip.is_some_and(|ip| allow_ips.contains(&ip)),
            user: spread(e.user_id as u64),
            product: spread(e.product_id as u64),
            session: e.user_session.as_deref().map(|s| hash_of(s.as_bytes())),
            ip: e.client_ip.map(|ip| {
                spread(match ip {
                    IpAddr::V4(v4) => u64::from(u32::from(v4)),
                    IpAddr::V6(v6) => hash_of(&v6.octets()),
                })
            }),
        }
    }
}

/// The detector: rules over a stream of events, with incidents.
pub struct Detector {
    settings: Settings,
    clock: Arc<dyn Clock>,
    rules: Vec<Box<dyn WindowRule>>,
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
            .map(|r| windows(r.clone(), settings.max_keys))
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
            rules: self.rules.iter().map(|r| r.copy()).collect(),
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
                let rule = r.rule();
                rule.name == snap.name
                    && rule.key == snap.key
                    && rule_fingerprint(rule) == snap.fingerprint
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
        self.rules.iter().map(|r| r.rule())
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
        if self
            .rules
            .iter()
            .any(|r| r.rule().measure == Measure::Denied)
        {
            return;
        }
        for key in [KeyType::UserId, KeyType::ClientIp] {
            self.rules.push(windows(
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
        let keys = EventKeys::of(e, &self.allow_users, &self.allow_ips);
        if keys.user_allowed || keys.ip_allowed {
            self.stats.allowed += 1;
        }
        for index in 0..self.rules.len() {
            let Some((hash, distinct)) = self.rule_key(self.rules[index].rule(), e, &keys) else {
                continue;
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
                if let Some(v) = self.rules[index].fired_value() {
                    self.tracker.raise_peak(index, hash, v);
                }
                continue;
            };
            self.stats.windows_fired += 1;
            let rule = self.rules[index].rule();
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

    /// What a rule counts for an event: the key's hash and the value a distinct measure
    /// counts (`None`: the rule does not count this event).
    fn rule_key(&self, rule: &Rule, e: &Event, k: &EventKeys) -> Option<(u64, u64)> {
        let denied = rule.measure == Measure::Denied;
        match rule.key {
            KeyType::UserId => {
                if k.user_allowed || denied && !self.deny_users.contains(&e.user_id) {
                    return None;
                }
                let value = match rule.measure {
                    Measure::DistinctProductsViewed => {
                        (e.event_type == EventType::View).then_some(k.product)?
                    }
                    Measure::DistinctSessions => k.session?,
                    _ => 0,
                };
                Some((k.user, value))
            }
            KeyType::ClientIp => {
                let (Some(h), Some(addr)) = (k.ip, e.client_ip) else {
                    return None;
                };
                if k.ip_allowed || denied && !self.deny_ips.contains(&addr) {
                    return None;
                }
                Some((h, 0))
            }
            KeyType::UserSession => {
                if k.user_allowed || k.ip_allowed {
                    return None;
                }
                Some((k.session?, 0))
            }
            KeyType::Global => Some((0, 0)),
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
            r.on_watermark(watermark);
        }
        for incident in self.tracker.resolve_quiet(watermark) {
            self.changes.push(Change::Resolved(incident));
        }
    }
}
