//! The engine's counters: a leaf the engine and the windows both count into.

use serde::{Deserialize, Serialize};

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

impl Stats {
    /// Adds another detector's counters (the partitions' detectors summed into one).
    pub fn add(&mut self, other: &Stats) {
        self.events += other.events;
        self.late += other.late;
        self.duplicates += other.duplicates;
        self.windows_fired += other.windows_fired;
        self.keys_evicted += other.keys_evicted;
        self.dedupe_evicted += other.dedupe_evicted;
        self.allowed += other.allowed;
    }
}
