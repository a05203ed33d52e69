//! What one `serve` process does: any of the collector (the HTTP API taking in events),
//! delivery (the log into the lake) and the detector. Many processes with any roles can run
//! on one Kafka topic; delivery shares the topic's partitions with the other delivery
//! processes through a consumer group (see `shoplake_log::Ownership`).

use std::fmt;
use std::str::FromStr;

use shoplake_log::Ownership;

/// The roles of one process (all three by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// `POST /v1/events`: events in, appended to the log.
    pub collector: bool,
    /// The log delivered into the lake, for the partitions this process owns.
    pub delivery: bool,
    /// The rules run on the stream.
    pub detector: bool,
}

impl Default for Roles {
    fn default() -> Self {
        Roles::ALL
    }
}

impl Roles {
    /// Every role: one process that does everything (the embedded defaults).
    pub const ALL: Roles = Roles {
        collector: true,
        delivery: true,
        detector: true,
    };

    /// The names of the roles held, in their usual order.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.collector, "collector"),
            (self.delivery, "delivery"),
            (self.detector, "detector"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl FromStr for Roles {
    type Err = String;

    /// A comma-separated list of `collector`, `delivery` and `detector` (or `all`).
    fn from_str(s: &str) -> Result<Roles, String> {
        let mut roles = Roles {
            collector: false,
            delivery: false,
            detector: false,
        };
        for name in s.split(',').map(str::trim) {
            match name {
                "collector" => roles.collector = true,
                "delivery" => roles.delivery = true,
                "detector" => roles.detector = true,
                "all" => roles = Roles::ALL,
                "" => {}
                other => {
                    let shown: String = other.chars().take(40).collect();
                    return Err(format!(
                        "unknown role {shown:?} (expected collector, delivery, detector or all)"
                    ));
                }
            }
        }
        if roles.names().is_empty() {
            return Err("no role given (expected collector, delivery, detector or all)".into());
        }
        Ok(roles)
    }
}

/// What `/healthz` says of the process: its roles, and the partitions it delivers.
#[derive(Debug, Clone, Default)]
pub struct Process {
    /// Its roles.
    pub roles: Roles,
    /// With the delivery role: its consumer group and the partitions it owns in it.
    pub delivery: Option<(String, Ownership)>,
    /// With the detector role: its consumer group and the partitions it owns in it; the member
    /// owning partition 0 also runs the rules keyed across users.
    pub detector: Option<(String, Ownership)>,
}

impl Process {
    /// The process as JSON (`roles`; `delivery`: `group`, `partitions`, `rebalances`;
    /// `detector`: `group`, `partitions`, `cross` (owns partition 0: runs the rules keyed
    /// across users), `rebalances`).
    pub fn describe(&self) -> serde_json::Value {
        let delivery = self.delivery.as_ref().map(|(group, ownership)| {
            let owned = ownership.now();
            serde_json::json!({
                "group": group,
                "partitions": owned.partitions,
                "rebalances": owned.rebalances,
            })
        });
        let detector = self.detector.as_ref().map(|(group, ownership)| {
            let owned = ownership.now();
            serde_json::json!({
                "group": group,
                "partitions": owned.partitions,
                "cross": detects(&owned.partitions),
                "rebalances": owned.rebalances,
            })
        });
        serde_json::json!({
            "roles": self.roles.names(),
            "delivery": delivery,
            "detector": detector,
        })
    }
}

/// Whether a detector member owning these partitions of its group runs the rules keyed across
/// users (in processing-time mode, reads every partition while the others stand by): the one
/// owning partition 0.
pub fn detects(owned: &std::collections::BTreeSet<u32>) -> bool {
    owned.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_a_comma_separated_list() {
        assert_eq!("collector,delivery,detector".parse(), Ok(Roles::ALL));
        assert_eq!("all".parse(), Ok(Roles::ALL));
        let d: Roles = " delivery ".parse().unwrap();
        assert_eq!(d.names(), ["delivery"]);
        assert_eq!(d.to_string(), "delivery");
        let c: Roles = "detector,collector".parse().unwrap();
        assert_eq!(c.to_string(), "collector,detector");
        assert!("".parse::<Roles>().unwrap_err().contains("no role"));
        let e = "collector,brewer".parse::<Roles>().unwrap_err();
        assert!(e.contains("unknown role \"brewer\""), "{e}");
    }
}
