//! Real-time detection (Flink + Lambda in the reference design): a small hand-written stream
//! engine with event-time windows, the rules of DESIGN section 5, and incidents.
//!
//! - [`rules`]: the seven default rules, adjustable from `[detect]` in `shoplake.toml`.
//! - [`Detector`]: events in (in order per user), [`Change`]s of incidents out; the same code
//!   runs on the live stream (`serve`) and over history (`shoplake detect`).
//! - [`Live`]: the detector over a partitioned log (`serve`): per-partition watermarks, rules
//!   keyed by user on arrival, the others in event-time order.
//! - [`Incident`]: one per (rule, key), opened, updated, escalated, resolved after a quiet
//!   cooldown.

mod collect;
mod engine;
mod fire;
mod incident;
pub mod live;
pub mod rules;
mod stats;
mod window;

pub use collect::Collected;
pub use engine::{Detector, DetectorCopy, DetectorState, Stats};
pub use fire::{Fire, Key};
pub use incident::{Change, Incident, Status, rfc3339, rfc3339_opt};
pub use live::{Block, Live, LiveSnapshot, LiveStats, Watermarks};
pub use rules::{DetectConfig, KeyType, Rule, Settings, Severity, TimeMode};
