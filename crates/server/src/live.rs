//! The live feed behind `GET /v1/events/stream`: a broadcast of `rate` messages (once a
//! second) and of the detector's incident changes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use shoplake_events::time::Clock;
use tokio::sync::broadcast;

use crate::backlog::Backlog;
use crate::metrics::Metrics;

/// What the live stream carries.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Live {
    /// Once a second: the ingest rate and where the pipeline stands.
    Rate {
        /// RFC 3339.
        at: String,
        /// Events accepted in the last second.
        events_per_second: f64,
        /// Events accepted since the server started.
        accepted_total: u64,
        /// Events in the log not yet in the lake.
        backlog_events: u64,
        /// From the newest detected event's arrival to its detection, seconds.
        detector_lag_seconds: f64,
    },
    /// An incident opened, was updated, escalated or resolved.
    Incident {
        /// `opened`, `updated`, `escalated` or `resolved`.
        change: &'static str,
        /// The incident, with its documented fields.
        incident: shoplake_detect::Incident,
    },
}

impl Live {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Live::Rate { .. } => "rate",
            Live::Incident { .. } => "incident",
        }
    }
}

/// The broadcast behind `GET /v1/events/stream`.
pub type LiveSender = broadcast::Sender<Live>;

/// Sends a `rate` message every second until `stop` (nobody listening is not an error).
pub(crate) async fn rate_loop(
    live: LiveSender,
    metrics: Arc<Metrics>,
    backlog: Arc<Backlog>,
    clock: Arc<dyn Clock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = metrics.accepted.get();
    let mut at = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = metrics.accepted.get();
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        at = Instant::now();
        let rate = (now - last) as f64 / secs;
        last = now;
        let _ = live.send(Live::Rate {
            at: shoplake_events::time::format_rfc3339(clock.now_micros()),
            events_per_second: rate,
            accepted_total: now,
            backlog_events: backlog.events(),
            detector_lag_seconds: metrics.detector_lag.get(),
        });
    }
}
