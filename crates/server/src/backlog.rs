//! The log's undelivered events as the collector and the delivery loop share them: the
//! collector adds what it appends, delivery recounts from the log after each delivery, and
//! the collector refuses ingest past the high-water marks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// Undelivered events and bytes, and a wake-up for delivery when events are appended.
#[derive(Debug, Default)]
pub struct Backlog {
    events: AtomicI64,
    /// Bytes of records appended since delivery last started reading.
    pending_bytes: AtomicU64,
    /// Event records and their bytes appended since start (for the mean record size).
    appended_records: AtomicU64,
    appended_bytes: AtomicU64,
    appended: Notify,
    /// `shoplake_log_backlog_events`.
    gauge: Gauge,
}

impl Backlog {
    /// A backlog that also sets `gauge`.
    pub fn new(gauge: Gauge) -> Backlog {
        Backlog {
            gauge,
            ..Backlog::default()
        }
    }

    /// Events in the log not yet delivered, as last counted.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed).max(0) as u64
    }

    /// The mean size of the event records appended so far (0 before the first).
    pub fn mean_record_bytes(&self) -> u64 {
        let records = self.appended_records.load(Ordering::Relaxed);
        if records == 0 {
            return 0;
        }
        self.appended_bytes.load(Ordering::Relaxed) / records
    }

    /// Bytes of undelivered records: the backlog times the mean size of the records
    /// appended so far.
    pub fn bytes(&self) -> u64 {
        self.events().saturating_mul(self.mean_record_bytes())
    }

    /// Sets the undelivered count (delivery recounts it from the log after each delivery).
    pub fn set(&self, events: u64) {
        let n = i64::try_from(events).unwrap_or(i64::MAX);
        self.events.store(n, Ordering::Relaxed);
        self.gauge.set(n);
    }

    /// Counts what one request appended: `events` event records of `event_bytes` bytes, in
    /// `bytes` bytes of records with its refused rows; wakes delivery.
    pub fn appended(&self, events: usize, bytes: usize, event_bytes: usize) {
        let n = i64::try_from(events).unwrap_or(i64::MAX);
        self.events.fetch_add(n, Ordering::Relaxed);
        self.gauge.inc_by(n);
        self.pending_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        // The mean size of the backlog's records: events only (refused rows are not backlog).
        self.appended_records
            .fetch_add(events as u64, Ordering::Relaxed);
        self.appended_bytes
            .fetch_add(event_bytes as u64, Ordering::Relaxed);
        self.appended.notify_one();
    }

    /// Bytes of records appended since the last [`Backlog::take_pending_bytes`].
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes.load(Ordering::Relaxed)
    }

    /// Resets the count of bytes appended (delivery calls it as it starts reading).
    pub fn take_pending_bytes(&self) -> u64 {
        self.pending_bytes.swap(0, Ordering::Relaxed)
    }

    /// Resolves when events have been appended since the last call.
    pub async fn wait_appended(&self) {
        self.appended.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_add_up_until_delivery_recounts() {
        let gauge = Gauge::default();
        let b = Backlog::new(gauge.clone());
        assert_eq!((b.events(), b.bytes(), b.mean_record_bytes()), (0, 0, 0));
        b.appended(10, 1_500, 1_000);
        b.appended(10, 1_000, 1_000);
        assert_eq!(
            (b.events(), b.mean_record_bytes(), b.bytes()),
            (20, 100, 2_000)
        );
        assert_eq!(gauge.get(), 20);
        assert_eq!(b.take_pending_bytes(), 2_500);
        assert_eq!(b.pending_bytes(), 0);
        b.set(5);
        assert_eq!((b.events(), b.bytes(), gauge.get()), (5, 500, 5));
    }
}
