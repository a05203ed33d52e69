//! What the rules produce and the incidents gather: the key a rule counts per, and a window
//! crossing a threshold. A leaf: the engine makes them, the incident tracker reads them.

use std::fmt;
use std::net::IpAddr;

use crate::rules::Severity;

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
