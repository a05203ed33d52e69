//! The rules: the seven defaults of DESIGN section 5, each adjustable from `[detect.rules.*]`
//! in `shoplake.toml` (or a rules file), validated with every problem listed at once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How serious a firing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a flag.
    Low,
    /// A bot, most likely.
    Medium,
    /// Act now (notified).
    High,
}

impl Severity {
    /// The severity of a name in configuration and output (`low`, `medium`, `high`).
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            _ => None,
        }
    }

    /// The name in configuration and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// The shopper.
    UserId,
    /// The sending address.
    ClientIp,
    /// The session.
    UserSession,
    /// All traffic.
    Global,
}

impl KeyType {
    /// The name in output (`key_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::UserId => "user_id",
            KeyType::ClientIp => "client_ip",
            KeyType::UserSession => "user_session",
            KeyType::Global => "global",
        }
    }
}

/// What a rule measures in its window.
#[derive(Debug, Clone, PartialEq)]
pub enum Measure {
    /// Events.
    Count,
    /// Distinct products viewed.
    DistinctProductsViewed,
    /// Distinct sessions.
    DistinctSessions,
    /// Events of all traffic against `factor` × the median of the last `baseline` windows
    /// (and at least `floor`).
    Spike {
        /// The multiple of the median that fires.
        factor: f64,
        /// Windows in the trailing baseline.
        baseline: usize,
        /// The least count that fires.
        floor: u64,
    },
    /// Per block of `events` events of a session, the coefficient of variation of the gaps
    /// between them below `max_cv`.
    Robotic {
        /// Events per block.
        events: usize,
        /// The coefficient of variation under which the timing is robotic.
        max_cv: f64,
    },
    /// Any event of a deny-listed key.
    Denied,
}

/// A threshold: the measure above `above` fires with `severity`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    /// The value to exceed.
    pub above: f64,
    /// The severity when exceeded.
    pub severity: Severity,
}

/// One rule, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name (`user_burst` …).
    pub name: String,
    /// What it counts per.
    pub key: KeyType,
    /// The window, µs.
    pub window: i64,
    /// The slide, µs (the window itself for a tumbling window).
    pub slide: i64,
    /// What it measures.
    pub measure: Measure,
    /// Thresholds, ascending.
    pub levels: Vec<Level>,
}

/// `[detect.rules.<name>]`: every field optional; the default rule's value otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `false` turns the rule off.
    pub enabled: Option<bool>,
    /// The window (`10s`, `1h`).
    pub window: Option<String>,
    /// The slide of a sliding window (`10s`).
    pub slide: Option<String>,
    /// The count or distinct count to exceed.
    pub threshold: Option<u64>,
    /// `user_burst`: the count above which it escalates to high (and notifies).
    pub notify: Option<u64>,
    /// The severity when it fires.
    pub severity: Option<Severity>,
    /// `traffic_spike`: the multiple of the baseline median.
    pub factor: Option<f64>,
    /// `traffic_spike`: windows in the baseline.
    pub baseline: Option<usize>,
    /// `traffic_spike`: the least count that fires.
    pub floor: Option<u64>,
    /// `robotic_timing`: events per block.
    pub events: Option<usize>,
    /// `robotic_timing`: the coefficient of variation under which timing is robotic.
    pub max_cv: Option<f64>,
}

/// User ids and addresses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyList {
    /// User ids.
    #[serde(default)]
    pub user_ids: Vec<i64>,
    /// Client addresses.
    #[serde(default)]
    pub client_ips: Vec<IpAddr>,
}

/// `[detect]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// `false` turns detection off in `serve` (default on).
    pub enabled: Option<bool>,
    /// `event` (default: the events' own times, with a watermark) or `processing` (the
    /// clock at arrival, as the reference design stamped events on send).
    pub time: Option<String>,
    /// How late an event may arrive and still be windowed (default `5s`).
    pub lateness: Option<String>,
    /// How far past its arrival an event's time may move the watermark (default `5s`): an
    /// event stamped in the future is windowed at its own time, but cannot close every
    /// window or make the events after it late.
    pub max_skew: Option<String>,
    /// In `serve`: how long a partition may go without records before it no longer holds
    /// the watermark back (default `10s`).
    pub partition_idle: Option<String>,
    /// In `serve`: a record moves its partition's watermark once this long has passed since
    /// it was read (default `2s`) or once `reorder_records` newer records of its partition
    /// were read, whichever comes first: producers sending side by side interleave their
    /// events in every partition.
    pub reorder_wait: Option<String>,
    /// See `reorder_wait` (default 10 000; raise it when more producers than about 16
    /// send at full speed side by side, which the late-event metric shows).
    pub reorder_records: Option<u64>,
    /// In `serve`: the most events held for the rules keyed across users (`ip_flood`,
    /// `traffic_spike`) until the watermark passes them (default 1 000 000); past it the
    /// oldest are released and the watermark moves on to them (a metric and a log line say
    /// so; events behind it are then late).
    pub max_held: Option<usize>,
    /// In `serve`: how often the detector's state (windows, open incidents, duplicate
    /// horizon, watermarks) is checkpointed with the log positions it reflects, and restored
    /// from at start (default `5s`; `off` to start with empty windows after a restart).
    pub checkpoint_interval: Option<String>,
    /// Quiet time after which an incident is resolved (default `5m`).
    pub cooldown: Option<String>,
    /// How long event ids are remembered to drop exact duplicates (default `10m`).
    pub dedupe_horizon: Option<String>,
    /// The most keys a rule tracks at once (default 1 000 000); past it the least recently
    /// seen key is forgotten for the new one, and a metric counts them.
    pub max_keys: Option<usize>,
    /// The most event ids remembered to drop exact duplicates (default 2 000 000); past it
    /// the oldest are forgotten before `dedupe_horizon`, and a metric counts them.
    pub max_dedupe_ids: Option<usize>,
    /// The least severity at which an incident on a user (a `user_id` or `user_session`
    /// key) makes it a bot for the day in `bot_flags` (default `medium`: a low `user_burst`
    /// is worth a look, not a verdict).
    pub flag_severity: Option<Severity>,
    /// Never flagged.
    #[serde(default)]
    pub allow: KeyList,
    /// Always flagged (an incident of the rule `deny_list`).
    #[serde(default)]
    pub deny: KeyList,
    /// Adjustments to the default rules, by name.
    #[serde(default)]
    pub rules: BTreeMap<String, RuleConfig>,
}

/// Whether time is the events' own or the clock's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeMode {
    /// Event time with a watermark.
    Event,
    /// The clock at arrival.
    Processing,
}

/// Everything the detector needs, resolved from a [`DetectConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Event or processing time.
    pub time: TimeMode,
    /// Allowed lateness, µs.
    pub lateness: i64,
    /// How far past an event's arrival (its ingest time) its time may move the watermark, µs.
    pub max_skew: i64,
    /// Wall time without records after which a partition is idle, µs.
    pub partition_idle: i64,
    /// Wall time after which a record read moves its partition's watermark, µs.
    pub reorder_wait: i64,
    /// Newer records of its partition after which a record moves its partition's watermark.
    pub reorder_records: u64,
    /// The most events held for the rules keyed across users.
    pub max_held: usize,
    /// How often `serve` checkpoints the detector, µs (`None`: never).
    pub checkpoint_every: Option<i64>,
    /// Incident cooldown, µs.
    pub cooldown: i64,
    /// Duplicate horizon, µs.
    pub dedupe_horizon: i64,
    /// Key cap per rule.
    pub max_keys: usize,
    /// Cap of the duplicate-id set.
    pub max_dedupe_ids: usize,
    /// The rules in force.
    pub rules: Vec<Rule>,
    /// The least severity of a bot verdict.
    pub flag_severity: Severity,
    /// Allow-list.
    pub allow: KeyList,
    /// Deny-list.
    pub deny: KeyList,
}

/// The names of the default rules, in order.
pub const DEFAULT_RULES: [&str; 7] = [
    "user_burst",
    "user_sustained",
    "scraper",
    "session_flood",
    "ip_flood",
    "traffic_spike",
    "robotic_timing",
];

const SEC: i64 = 1_000_000;

fn default_rule(name: &str) -> Option<Rule> {
    let level = |above: u64, severity| Level {
        above: above as f64,
        severity,
    };
    let rule = |key, window: i64, slide: i64, measure, levels| Rule {
        name: name.to_owned(),
        key,
        window: window * SEC,
        slide: slide * SEC,
        measure,
        levels,
    };
    Some(match name {
        "user_burst" => rule(
            KeyType::UserId,
            10,
            10,
            Measure::Count,
            vec![level(5, Severity::Low), level(10, Severity::High)],
        ),
        "user_sustained" => rule(
            KeyType::UserId,
            60,
            10,
            Measure::Count,
            vec![level(60, Severity::Medium)],
        ),
        "scraper" => rule(
            KeyType::UserId,
            60,
            10,
            Measure::DistinctProductsViewed,
            vec![level(30, Severity::Medium)],
        ),
        "session_flood" => rule(
            KeyType::UserId,
            3600,
            600,
            Measure::DistinctSessions,
            vec![level(20, Severity::Medium)],
        ),
        "ip_flood" => rule(
            KeyType::ClientIp,
            10,
            10,
            Measure::Count,
            vec![level(100, Severity::High)],
        ),
        "traffic_spike" => rule(
            KeyType::Global,
            10,
            10,
            Measure::Spike {
                factor: 5.0,
                baseline: 60,
                floor: 500,
            },
            vec![level(0, Severity::High)],
        ),
        // The window bounds how long a quiet session is remembered.
        "robotic_timing" => rule(
            KeyType::UserSession,
            1800,
            1800,
            Measure::Robotic {
                events: 20,
                max_cv: 0.1,
            },
            vec![level(0, Severity::Medium)],
        ),
        _ => return None,
    })
}

fn duration(name: &str, value: Option<&str>, default: &str, errors: &mut Vec<String>) -> i64 {
    let v = value.unwrap_or(default);
    match humantime::parse_duration(v.trim()) {
        Ok(d) if d > Duration::ZERO || name.ends_with("lateness") || name.ends_with("skew") => {
            i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
        }
        Ok(_) => {
            errors.push(format!("{name} = {v:?}: must be more than zero"));
            0
        }
        Err(e) => {
            errors.push(format!("{name} = {v:?}: {e} (expected e.g. 10s, 5m)"));
            0
        }
    }
}

impl DetectConfig {
    /// Resolves the configuration, or lists every problem.
    // Long: one check per setting, each gathering its error beside the others.
    pub fn settings(&self) -> Result<Settings, Vec<String>> {
        let mut errors = Vec::new();
        let time = match self.time.as_deref() {
            None | Some("event") => TimeMode::Event,
            Some("processing") => TimeMode::Processing,
            Some(other) => {
                errors.push(format!(
                    "detect.time = {other:?}: expected event or processing"
                ));
                TimeMode::Event
            }
        };
        let lateness = duration(
            "detect.lateness",
            self.lateness.as_deref(),
            "5s",
            &mut errors,
        );
        let max_skew = duration(
            "detect.max_skew",
            self.max_skew.as_deref(),
            "5s",
            &mut errors,
        );
        let partition_idle = duration(
            "detect.partition_idle",
            self.partition_idle.as_deref(),
            "10s",
            &mut errors,
        );
        let reorder_wait = duration(
            "detect.reorder_wait",
            self.reorder_wait.as_deref(),
            "2s",
            &mut errors,
        );
        let reorder_records = self.reorder_records.unwrap_or(10_000);
        let max_held = self.max_held.unwrap_or(1_000_000);
        if max_held == 0 {
            errors.push("detect.max_held must be at least 1".to_owned());
        }
        let checkpoint_every = match self.checkpoint_interval.as_deref().map(str::trim) {
            Some("off") => None,
            v => Some(duration("detect.checkpoint_interval", v, "5s", &mut errors)),
        };
        let cooldown = duration(
            "detect.cooldown",
            self.cooldown.as_deref(),
            "5m",
            &mut errors,
        );
        let dedupe_horizon = duration(
            "detect.dedupe_horizon",
            self.dedupe_horizon.as_deref(),
            "10m",
            &mut errors,
        );
        let max_keys = self.max_keys.unwrap_or(1_000_000);
        if max_keys == 0 {
            errors.push("detect.max_keys must be at least 1".to_owned());
        }
        let max_dedupe_ids = self.max_dedupe_ids.unwrap_or(2_000_000);
        if max_dedupe_ids == 0 {
            errors.push("detect.max_dedupe_ids must be at least 1".to_owned());
        }
        for name in self.rules.keys() {
            if !DEFAULT_RULES.contains(&name.as_str()) {
                errors.push(format!(
                    "detect.rules.{name}: no such rule (the rules are {})",
                    DEFAULT_RULES.join(", ")
                ));
            }
        }
        let mut rules = Vec::new();
        for name in DEFAULT_RULES {
            let Some(mut rule) = default_rule(name) else {
                continue;
            };
            let Some(c) = self.rules.get(name) else {
                rules.push(rule);
                continue;
            };
            if c.enabled == Some(false) {
                continue;
            }
            let p = format!("detect.rules.{name}");
            let mut refuse = |field: &str, set: bool| {
                if set {
                    errors.push(format!("{p}.{field}: not a setting of this rule"));
                }
            };
            let is_spike = matches!(rule.measure, Measure::Spike { .. });
            let is_robotic = matches!(rule.measure, Measure::Robotic { .. });
            refuse("factor", c.factor.is_some() && !is_spike);
            refuse("baseline", c.baseline.is_some() && !is_spike);
            refuse("floor", c.floor.is_some() && !is_spike);
            refuse("events", c.events.is_some() && !is_robotic);
            refuse("max_cv", c.max_cv.is_some() && !is_robotic);
            refuse("notify", c.notify.is_some() && name != "user_burst");
            refuse(
                "threshold",
                c.threshold.is_some() && (is_spike || is_robotic),
            );
            refuse("slide", c.slide.is_some() && (is_spike || is_robotic));
            if let Some(w) = &c.window {
                let tumbling = rule.slide == rule.window;
                rule.window = duration(&format!("{p}.window"), Some(w), "", &mut errors);
                if tumbling {
                    rule.slide = rule.window;
                }
            }
            if let Some(s) = &c.slide {
                rule.slide = duration(&format!("{p}.slide"), Some(s), "", &mut errors);
            }
            if rule.slide > 0 && rule.window > 0 {
                if rule.window % rule.slide != 0 {
                    errors.push(format!("{p}: the window must be a multiple of the slide"));
                } else if rule.window / rule.slide > 360 {
                    errors.push(format!("{p}: at most 360 slides a window"));
                }
            }
            if let Some(t) = c.threshold {
                rule.levels[0].above = t as f64;
            }
            if let Some(n) = c.notify {
                if let Some(l) = rule.levels.get_mut(1) {
                    l.above = n as f64;
                }
                if n as f64 <= rule.levels[0].above {
                    errors.push(format!("{p}.notify must be above the threshold"));
                }
            }
            if let Some(s) = c.severity {
                rule.levels[0].severity = s;
            }
            if let Measure::Spike {
                factor,
                baseline,
                floor,
            } = &mut rule.measure
            {
                if let Some(f) = c.factor {
                    if !(f.is_finite() && f > 1.0) {
                        errors.push(format!("{p}.factor must be above 1"));
                    }
                    *factor = f;
                }
                if let Some(b) = c.baseline {
                    if b == 0 {
                        errors.push(format!("{p}.baseline must be at least 1"));
                    }
                    *baseline = b;
                }
                if let Some(f) = c.floor {
                    *floor = f;
                }
            }
            if let Measure::Robotic { events, max_cv } = &mut rule.measure {
                if let Some(n) = c.events {
                    if n < 3 {
                        errors.push(format!("{p}.events must be at least 3"));
                    }
                    *events = n;
                }
                if let Some(cv) = c.max_cv {
                    if !(cv.is_finite() && cv > 0.0) {
                        errors.push(format!("{p}.max_cv must be above 0"));
                    }
                    *max_cv = cv;
                }
            }
            rules.push(rule);
        }
        if !self.deny.user_ids.is_empty() || !self.deny.client_ips.is_empty() {
            for key in [KeyType::UserId, KeyType::ClientIp] {
                rules.push(Rule {
                    name: "deny_list".to_owned(),
                    key,
                    window: 10 * SEC,
                    slide: 10 * SEC,
                    measure: Measure::Denied,
                    levels: vec![Level {
                        above: 0.0,
                        severity: Severity::High,
                    }],
                });
            }
        }
        if errors.is_empty() {
            Ok(Settings {
                time,
                lateness,
                max_skew,
                partition_idle,
                reorder_wait,
                reorder_records,
                max_held,
                checkpoint_every,
                cooldown,
                dedupe_horizon,
                max_keys,
                max_dedupe_ids,
                rules,
                flag_severity: self.flag_severity.unwrap_or(Severity::Medium),
                allow: self.allow.clone(),
                deny: self.deny.clone(),
            })
        } else {
            Err(errors)
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        // The defaults always resolve.
        DetectConfig::default()
            .settings()
            .unwrap_or_else(|_| Settings {
                time: TimeMode::Event,
                lateness: 5 * SEC,
                max_skew: 5 * SEC,
                partition_idle: 10 * SEC,
                reorder_wait: 2 * SEC,
                reorder_records: 10_000,
                max_held: 1_000_000,
                checkpoint_every: Some(5 * SEC),
                cooldown: 300 * SEC,
                dedupe_horizon: 600 * SEC,
                max_keys: 1_000_000,
                max_dedupe_ids: 2_000_000,
                rules: Vec::new(),
                flag_severity: Severity::Medium,
                allow: KeyList::default(),
                deny: KeyList::default(),
            })
    }
}
