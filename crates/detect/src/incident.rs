//! Incidents: one per (rule, key), opened by its first firing, updated while the rule keeps
//! firing (windows, peak, events, last seen), escalated when a firing is more severe, and
//! resolved once the rule has been quiet for the cooldown.

use std::collections::HashMap;

use serde::{Deserialize, Serialize, Serializer};
use shoplake_events::time::format_rfc3339;

use crate::fire::{Fire, Key};
use crate::rules::{KeyType, Rule, Severity};

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Firing, or within its cooldown.
    Open,
    /// Seen by someone, still open.
    Acknowledged,
    /// Over.
    Resolved,
}

impl Status {
    /// The name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
        }
    }
}

/// Serializes µs since the epoch as RFC 3339 (for `#[serde(serialize_with)]`).
pub fn rfc3339<S: Serializer>(micros: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339(*micros))
}

/// [`rfc3339`] for an optional time (`null` when absent).
pub fn rfc3339_opt<S: Serializer>(micros: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match micros {
        Some(m) => s.serialize_str(&format_rfc3339(*m)),
        None => s.serialize_none(),
    }
}

/// An incident, with the documented fields of `--format json` (times as RFC 3339).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// A stable id: 16 hex digits of a hash of rule, key and opening time.
    pub id: String,
    /// The rule.
    pub rule: String,
    /// What the key is.
    pub key_type: KeyType,
    /// The key (a user id, an address, a session, or `all`).
    pub key: String,
    /// The highest severity reached.
    pub severity: Severity,
    /// Where it stands.
    pub status: Status,
    /// The time of the event that opened it.
    #[serde(serialize_with = "rfc3339")]
    pub opened_at: i64,
    /// The time of the event of its last firing.
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: i64,
    /// When it was resolved (its last firing plus the cooldown).
    #[serde(serialize_with = "rfc3339_opt")]
    pub resolved_at: Option<i64>,
    /// Windows that fired.
    pub windows: u64,
    /// The highest value measured (a count, a distinct count, or for `robotic_timing` the
    /// lowest coefficient of variation).
    pub peak: f64,
    /// The key's events from the opening window on.
    pub events: u64,
    /// The user behind the key: the key itself for `user_id`, the user of the opening event
    /// for `user_session`, none for addresses and the global key. Not part of the documented
    /// fields: it tells the bot verdicts (`bot_flags`) whom to flag.
    #[serde(skip)]
    pub user_id: Option<i64>,
    #[serde(skip)]
    last_window_end: i64,
}

impl Incident {
    /// The user this incident judges a bot, when its key names a user and it reached
    /// `min` severity.
    pub fn bot_user(&self, min: Severity) -> Option<i64> {
        match self.key_type {
            KeyType::UserId | KeyType::UserSession if self.severity >= min => self.user_id,
            _ => None,
        }
    }
}

/// An open incident as a checkpoint keeps it (every field, the private ones too).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IncidentState {
    id: String,
    rule: String,
    key_type: KeyType,
    key: String,
    severity: Severity,
    status: Status,
    opened_at: i64,
    updated_at: i64,
    resolved_at: Option<i64>,
    windows: u64,
    peak: f64,
    events: u64,
    user_id: Option<i64>,
    last_window_end: i64,
}

impl From<&Incident> for IncidentState {
    fn from(i: &Incident) -> Self {
        IncidentState {
            id: i.id.clone(),
            rule: i.rule.clone(),
            key_type: i.key_type,
            key: i.key.clone(),
            severity: i.severity,
            status: i.status,
            opened_at: i.opened_at,
            updated_at: i.updated_at,
            resolved_at: i.resolved_at,
            windows: i.windows,
            peak: i.peak,
            events: i.events,
            user_id: i.user_id,
            last_window_end: i.last_window_end,
        }
    }
}

impl From<IncidentState> for Incident {
    fn from(i: IncidentState) -> Self {
        Incident {
            id: i.id,
            rule: i.rule,
            key_type: i.key_type,
            key: i.key,
            severity: i.severity,
            status: i.status,
            opened_at: i.opened_at,
            updated_at: i.updated_at,
            resolved_at: i.resolved_at,
            windows: i.windows,
            peak: i.peak,
            events: i.events,
            user_id: i.user_id,
            last_window_end: i.last_window_end,
        }
    }
}

/// What happened to an incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", content = "incident", rename_all = "lowercase")]
pub enum Change {
    /// Newly opened (notified).
    Opened(Incident),
    /// Fired again at the same or a lower severity.
    Updated(Incident),
    /// Fired at a higher severity (notified).
    Escalated(Incident),
    /// Quiet for the cooldown.
    Resolved(Incident),
}

impl Change {
    /// The incident as it now is.
    pub fn incident(&self) -> &Incident {
        match self {
            Change::Opened(i) | Change::Updated(i) | Change::Escalated(i) | Change::Resolved(i) => {
                i
            }
        }
    }
}

/// The open incidents.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    cooldown: i64,
    open: HashMap<(usize, u64), Incident, foldhash::fast::RandomState>,
}

impl Tracker {
    pub(crate) fn new(cooldown: i64) -> Tracker {
        Tracker {
            cooldown,
            open: HashMap::default(),
        }
    }

    /// The open incidents with their (rule index, key hash), for a checkpoint.
    pub(crate) fn state(&self) -> Vec<(usize, u64, IncidentState)> {
        self.open
            .iter()
            .map(|((rule, key), i)| (*rule, *key, IncidentState::from(i)))
            .collect()
    }

    /// Puts back an open incident of a checkpoint.
    pub(crate) fn restore(&mut self, rule: usize, key: u64, incident: IncidentState) {
        self.open.insert((rule, key), incident.into());
    }

    /// Whether any incident is open.
    pub(crate) fn any_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// Resolves a key's incident when it was quiet for the cooldown by `t` (the time of an
    /// event of the key): it ended then, whenever the watermark's sweep comes, so that event
    /// neither counts in it nor raises its peak.
    pub(crate) fn expire(&mut self, rule: usize, key: u64, t: i64) -> Option<Incident> {
        let cooldown = self.cooldown;
        let quiet = self
            .open
            .get(&(rule, key))
            .is_some_and(|i| i.updated_at.saturating_add(cooldown) <= t);
        if !quiet {
            return None;
        }
        let mut i = self.open.remove(&(rule, key))?;
        i.status = Status::Resolved;
        i.resolved_at = Some(i.updated_at.saturating_add(cooldown));
        Some(i)
    }

    pub(crate) fn is_open(&self, rule: usize, key: u64) -> bool {
        !self.open.is_empty() && self.open.contains_key(&(rule, key))
    }

    pub(crate) fn count_event(&mut self, rule: usize, key: u64) {
        if let Some(i) = self.open.get_mut(&(rule, key)) {
            i.events += 1;
        }
    }

    /// A fired window grew past its firing value: the open incident's peak follows it.
    pub(crate) fn raise_peak(&mut self, rule: usize, key: u64, value: f64) {
        if let Some(i) = self.open.get_mut(&(rule, key))
            && value > i.peak
        {
            i.peak = value;
        }
    }

    pub(crate) fn fire(
        &mut self,
        index: usize,
        rule: &Rule,
        hash: u64,
        key: &Key,
        user: Option<i64>,
        fire: &Fire,
    ) -> Vec<Change> {
        let better = |rule: &Rule, new: f64, old: f64| {
            if matches!(rule.measure, crate::rules::Measure::Robotic { .. }) {
                new < old
            } else {
                new > old
            }
        };
        let mut out = Vec::new();
        // Quiet for the cooldown before this firing: that incident is over, a new one opens.
        if self
            .open
            .get(&(index, hash))
            .is_some_and(|i| i.updated_at.saturating_add(self.cooldown) <= fire.at)
            && let Some(mut i) = self.open.remove(&(index, hash))
        {
            i.status = Status::Resolved;
            i.resolved_at = Some(i.updated_at.saturating_add(self.cooldown));
            out.push(Change::Resolved(i));
        }
        if let Some(i) = self.open.get_mut(&(index, hash)) {
            if fire.window_end != i.last_window_end {
                i.windows += 1;
                i.last_window_end = fire.window_end;
            }
            if better(rule, fire.value, i.peak) {
                i.peak = fire.value;
            }
            i.updated_at = i.updated_at.max(fire.at);
            if fire.severity > i.severity {
                i.severity = fire.severity;
                out.push(Change::Escalated(i.clone()));
            } else {
                out.push(Change::Updated(i.clone()));
            }
            return out;
        }
        let key_text = key.to_string();
        let id = format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(
                format!("{}|{}|{key_text}|{}", rule.name, rule.key.as_str(), fire.at).as_bytes()
            )
        );
        let incident = Incident {
            id,
            rule: rule.name.clone(),
            key_type: rule.key,
            key: key_text,
            severity: fire.severity,
            status: Status::Open,
            opened_at: fire.at,
            updated_at: fire.at,
            resolved_at: None,
            windows: 1,
            peak: fire.value,
            events: fire.events,
            user_id: user,
            last_window_end: fire.window_end,
        };
        self.open.insert((index, hash), incident.clone());
        out.push(Change::Opened(incident));
        out
    }

    /// Resolves the incidents quiet for the cooldown by `now`, in the order they went quiet.
    pub(crate) fn resolve_quiet(&mut self, now: i64) -> Vec<Incident> {
        if self.open.is_empty() {
            return Vec::new();
        }
        let cooldown = self.cooldown;
        let mut out: Vec<Incident> = self
            .open
            .extract_if(|_, i| i.updated_at.saturating_add(cooldown) <= now)
            .map(|(_, mut i)| {
                i.status = Status::Resolved;
                i.resolved_at = Some(i.updated_at.saturating_add(cooldown));
                i
            })
            .collect();
        out.sort_by(|a, b| (a.resolved_at, &a.id).cmp(&(b.resolved_at, &b.id)));
        out
    }

    /// The open incidents, oldest first.
    pub(crate) fn open(&self) -> Vec<Incident> {
        let mut v: Vec<Incident> = self.open.values().cloned().collect();
        v.sort_by(|a, b| (a.opened_at, &a.id).cmp(&(b.opened_at, &b.id)));
        v
    }
}
