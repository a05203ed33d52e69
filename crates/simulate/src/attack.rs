//! Attack kinds, the `--attacks` spec, and the ground truth written for each injected actor.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::Error;

/// A kind of injected (or, for crawlers, organic but automated) traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// A bot user sending bursts of more than 10 events within 10 seconds.
    Burst,
    /// A bot user keeping up more than 60 events a minute for many minutes.
    Sustained,
    /// A bot user viewing many distinct products a minute.
    Scraper,
    /// A user opening many sessions within an hour.
    SessionFlood,
    /// A distributed spike: a sudden wave of many new users from many addresses.
    Ddos,
    /// A session with near-constant gaps between events.
    Robotic,
    /// One address sending a flood on behalf of many user ids.
    IpFlood,
    /// A crawler session of 20–35 k views (a quirk of the real data, on by default at scale).
    Crawler,
}

impl AttackKind {
    /// Kinds that `--attacks` injects.
    pub const INJECTED: [AttackKind; 7] = [
        AttackKind::Burst,
        AttackKind::Sustained,
        AttackKind::Scraper,
        AttackKind::SessionFlood,
        AttackKind::Ddos,
        AttackKind::Robotic,
        AttackKind::IpFlood,
    ];

    /// The name used in specs and in the ground truth.
    pub fn as_str(self) -> &'static str {
        match self {
            AttackKind::Burst => "burst",
            AttackKind::Sustained => "sustained",
            AttackKind::Scraper => "scraper",
            AttackKind::SessionFlood => "session_flood",
            AttackKind::Ddos => "ddos",
            AttackKind::Robotic => "robotic",
            AttackKind::IpFlood => "ip_flood",
            AttackKind::Crawler => "crawler",
        }
    }

    /// How many of this kind the default mix injects per day of data.
    pub fn default_per_day(self) -> u32 {
        match self {
            AttackKind::Burst => 4,
            AttackKind::Sustained | AttackKind::Scraper => 2,
            AttackKind::SessionFlood | AttackKind::Robotic => 2,
            AttackKind::Ddos | AttackKind::IpFlood => 1,
            AttackKind::Crawler => 0,
        }
    }

    /// Rough events per actor, used to size organic traffic so totals come out right.
    pub(crate) fn expected_events(self, organic_rate_per_s: f64) -> f64 {
        match self {
            AttackKind::Burst => 144.0,
            AttackKind::Sustained => 1_600.0,
            AttackKind::Scraper => 600.0,
            AttackKind::SessionFlood => 85.0,
            AttackKind::Ddos => (10.0 * organic_rate_per_s).max(100.0) * 67.0,
            AttackKind::Robotic => 95.0,
            AttackKind::IpFlood => 2_700.0,
            AttackKind::Crawler => 27_500.0,
        }
    }
}

impl fmt::Display for AttackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttackKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        AttackKind::INJECTED
            .into_iter()
            .chain([AttackKind::Crawler])
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::Options(format!(
                    "unknown attack kind {s:?}; the kinds are burst, sustained, scraper, \
                     session_flood, ddos, robotic, ip_flood, crawler"
                ))
            })
    }
}

/// What to inject: `none`, `default` (the default mix, per day of data), or a list such as
/// `burst=3,scraper=2` (totals for the run), optionally after `default,` to adjust it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttackSpec {
    /// Whether the default per-day mix is included.
    pub default_mix: bool,
    /// Explicit totals, overriding the default mix for their kind.
    pub counts: Vec<(AttackKind, u32)>,
}

impl AttackSpec {
    /// No attacks.
    pub fn none() -> AttackSpec {
        AttackSpec::default()
    }

    /// The default mix.
    pub fn default_mix() -> AttackSpec {
        AttackSpec {
            default_mix: true,
            counts: Vec::new(),
        }
    }

    /// How many of each kind to inject over `days` days.
    pub fn resolve(&self, days: u32) -> Vec<(AttackKind, u32)> {
        let mut out: Vec<(AttackKind, u32)> = Vec::new();
        if self.default_mix {
            for k in AttackKind::INJECTED {
                out.push((k, k.default_per_day() * days.max(1)));
            }
        }
        for &(k, n) in &self.counts {
            match out.iter_mut().find(|(kind, _)| *kind == k) {
                Some(slot) => slot.1 = n,
                None => out.push((k, n)),
            }
        }
        out.retain(|&(_, n)| n > 0);
        out
    }
}

impl FromStr for AttackSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let mut spec = AttackSpec::none();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "none" => {}
                "default" => spec.default_mix = true,
                _ => {
                    let (kind, count) = part.split_once('=').ok_or_else(|| {
                        Error::Options(format!(
                            "attack spec {part:?} should be `default`, `none` or `kind=count`"
                        ))
                    })?;
                    let kind: AttackKind = kind.trim().parse()?;
                    let count: u32 = count.trim().parse().map_err(|_| {
                        Error::Options(format!("attack count {count:?} is not a whole number"))
                    })?;
                    spec.counts.push((kind, count));
                }
            }
        }
        Ok(spec)
    }
}

/// One line of the ground truth: an injected actor, keyed as a detector would key it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Truth {
    /// The kind of attack.
    pub kind: AttackKind,
    /// The bot user (absent for `ddos` and `ip_flood`, which use many user ids).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    /// The session, for kinds detected per session (`robotic`, `crawler`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_session: Option<String>,
    /// The source address, for kinds with one (`ip_flood`, and every kind when network
    /// fields are generated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// First event time (RFC 3339).
    pub start: String,
    /// Last event time (RFC 3339).
    pub end: String,
    /// Events written for this actor (duplicates excluded: bots send none).
    pub events: u64,
    /// Distinct user ids used, for the many-user kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_resolve() {
        let s: AttackSpec = "default".parse().unwrap();
        assert_eq!(s.resolve(2).len(), 7);
        assert!(s.resolve(2).contains(&(AttackKind::Burst, 8)));
        let s: AttackSpec = "default, ddos=0, burst=1".parse().unwrap();
        let r = s.resolve(1);
        assert!(!r.iter().any(|(k, _)| *k == AttackKind::Ddos));
        assert!(r.contains(&(AttackKind::Burst, 1)));
        let s: AttackSpec = "scraper=2".parse().unwrap();
        assert_eq!(s.resolve(5), vec![(AttackKind::Scraper, 2)]);
        assert!("laser=2".parse::<AttackSpec>().is_err());
        assert!("burst=x".parse::<AttackSpec>().is_err());
        assert!("burst".parse::<AttackSpec>().is_err());
        assert_eq!("none".parse::<AttackSpec>().unwrap().resolve(3), vec![]);
    }
}
