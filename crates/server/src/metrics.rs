//! The server's Prometheus metrics (`GET /metrics`, OpenMetrics text), named
//! `shoplake_<subsystem>_<name>_<unit>`, counters ending in `_total`; no label takes
//! unbounded values (the HTTP status, a rule and severity, a configured channel).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A request's outcome, by HTTP status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The HTTP status code.
    pub status: u16,
}

/// An incident's rule and severity (both from small fixed sets).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IncidentLabel {
    /// The rule.
    pub rule: String,
    /// The severity.
    pub severity: String,
}

/// A notification channel, by its configured name (a bounded set).
/// A log partition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// The partition's number.
    pub partition: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    /// The channel's name.
    pub channel: String,
}

/// Every metric the server keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Ingest requests answered, by status.
    pub requests: Family<StatusLabel, Counter>,
    /// Events accepted (durable in the log).
    pub accepted: Counter,
    /// Rows refused (sent to quarantine).
    pub rejected: Counter,
    /// Time from a request's arrival to its answer.
    pub latency: Histogram,
    /// Events in the log not yet delivered to the lake.
    pub backlog: Gauge,
    /// Events written to `events` by delivery.
    pub delivered: Counter,
    /// Events delivery dropped as duplicates.
    pub duplicates: Counter,
    /// Deliveries committed.
    pub deliveries: Counter,
    /// Deliveries that failed (retried at the next interval).
    pub delivery_failures: Counter,
    /// Time one delivery took.
    pub delivery_seconds: Histogram,
    /// Passes that found a partition delivered by another process since they read it
    /// (two processes owned it for a moment): they wrote nothing.
    pub delivery_races: Counter,
    /// Records past delivery's position, per log partition this process delivers.
    pub delivery_lag: Family<PartitionLabel, Gauge>,
    /// Rebalances of the delivery consumer group this process took part in.
    pub delivery_rebalances: Counter,
    /// Log partitions this process delivers now.
    pub delivery_partitions: Gauge,
    /// Events the detector processed.
    pub detector_events: Counter,
    /// Events behind the detector's watermark (not windowed).
    pub detector_late: Counter,
    /// Windows that fired.
    pub detector_windows: Counter,
    /// From the newest event's arrival to its processing by the detector.
    pub detector_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Incidents opened, by rule and severity.
    pub incidents_opened: Family<IncidentLabel, Counter>,
    /// Incidents escalated, by rule and (new) severity.
    pub incidents_escalated: Family<IncidentLabel, Counter>,
    /// Incidents resolved, by rule and severity.
    pub incidents_resolved: Family<IncidentLabel, Counter>,
    /// Batches of incident changes the alert store could not take.
    pub store_failures: Counter,
    /// Notices a channel took, by channel.
    pub notifications_sent: Family<ChannelLabel, Counter>,
    /// Notices given up after their attempts, by channel.
    pub notifications_failed: Family<ChannelLabel, Counter>,
    /// Failed attempts followed by another, by channel.
    pub notifications_retried: Family<ChannelLabel, Counter>,
    /// User-days written to `bot_flags`.
    pub bot_flags: Counter,
    /// Batches of bot flags the lake could not take.
    pub bot_flag_failures: Counter,
    /// Event ids remembered to drop exact duplicates.
    pub detector_dedupe_ids: Gauge,
    /// Event ids forgotten before the duplicate horizon at the id set's cap.
    pub detector_dedupe_evicted: Counter,
    /// Keys rules forgot at their key cap (least recently seen first).
    pub detector_keys_evicted: Counter,
    /// Late events, per log partition (behind the watermark when read).
    pub detector_partition_late: Family<PartitionLabel, Counter>,
    /// Each log partition's watermark, seconds since the epoch.
    pub detector_partition_watermark:
        Family<PartitionLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Events held for the rules keyed across users until the watermark passes them.
    pub detector_held: Gauge,
    /// Events released before the watermark passed them because the buffer was full.
    pub detector_forced: Counter,
    /// Checkpoints of the detector written.
    pub detector_checkpoints: Counter,
    /// Checkpoints that failed to be written.
    pub detector_checkpoint_failures: Counter,
    /// Time the detector paused to copy its state for a checkpoint (encoding and writing
    /// run beside the next rounds).
    pub detector_checkpoint_seconds: Histogram,
    /// The last checkpoint's size.
    pub detector_checkpoint_bytes: Gauge,
    /// Ingest requests answered 503 because every decoding slot stayed busy.
    pub decode_busy: Counter,
    /// HTTP connections open.
    pub connections_open: Gauge,
    /// Connections closed at once over the global or per-address limit.
    pub connections_refused: Counter,
    /// Event-stream subscriptions refused over the subscriber limit.
    pub stream_refused: Counter,
    /// Ingest requests answered 503 because a log partition was full of undelivered records.
    pub log_full: Counter,
    /// Queries and reports answered 429 because the most at once were running.
    pub queries_refused: Counter,
    /// Queries and reports running now (each holding one of the turns).
    pub queries_running: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set, registered.
    // Long: one registration per metric, in the order `/metrics` lists them.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("shoplake");
        let requests = Family::<StatusLabel, Counter>::default();
        let accepted = Counter::default();
        let rejected = Counter::default();
        let latency = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        let backlog = Gauge::default();
        let delivered = Counter::default();
        let duplicates = Counter::default();
        let deliveries = Counter::default();
        let delivery_failures = Counter::default();
        let delivery_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let detector_events = Counter::default();
        let detector_late = Counter::default();
        let detector_windows = Counter::default();
        let detector_lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let incidents_opened = Family::<IncidentLabel, Counter>::default();
        let incidents_escalated = Family::<IncidentLabel, Counter>::default();
        let incidents_resolved = Family::<IncidentLabel, Counter>::default();
        let store_failures = Counter::default();
        let notifications_sent = Family::<ChannelLabel, Counter>::default();
        let notifications_failed = Family::<ChannelLabel, Counter>::default();
        let notifications_retried = Family::<ChannelLabel, Counter>::default();
        let bot_flags = Counter::default();
        let bot_flag_failures = Counter::default();
        let log_full = Counter::default();
        let queries_refused = Counter::default();
        let queries_running = Gauge::default();
        registry.register(
            "queries_running",
            "Queries and reports running now (each holding one of the turns)",
            queries_running.clone(),
        );
        registry.register(
            "query_requests_refused",
            "Queries and reports answered 429 because the most at once were running",
            queries_refused.clone(),
        );
        registry.register(
            "ingest_log_full",
            "Ingest requests answered 503 because a log partition was full of undelivered records",
            log_full.clone(),
        );
        let detector_dedupe_ids = Gauge::default();
        registry.register(
            "detector_dedupe_ids",
            "Event ids the detector remembers to drop exact duplicates",
            detector_dedupe_ids.clone(),
        );
        let detector_partition_late = Family::<PartitionLabel, Counter>::default();
        registry.register(
            "detector_partition_late_events",
            "Events behind the watermark when read (not windowed; in the lake), per partition",
            detector_partition_late.clone(),
        );
        let detector_partition_watermark =
            Family::<PartitionLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "detector_partition_watermark_seconds",
            "Each log partition's watermark (its settled newest event time minus the lateness)",
            detector_partition_watermark.clone(),
        );
        let detector_held = Gauge::default();
        registry.register(
            "detector_held_events",
            "Events held for the rules keyed across users until the watermark passes them",
            detector_held.clone(),
        );
        let detector_forced = Counter::default();
        registry.register(
            "detector_forced_releases",
            "Events released before every partition's watermark passed them (detect.max_held)",
            detector_forced.clone(),
        );
        let detector_checkpoints = Counter::default();
        registry.register(
            "detector_checkpoints",
            "Checkpoints of the detector's state written",
            detector_checkpoints.clone(),
        );
        let detector_checkpoint_failures = Counter::default();
        registry.register(
            "detector_checkpoint_failures",
            "Checkpoints of the detector's state that failed to be written",
            detector_checkpoint_failures.clone(),
        );
        let detector_checkpoint_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "detector_checkpoint_seconds",
            "Time the detector paused to copy its state for a checkpoint (encoded and written beside the next rounds)",
            detector_checkpoint_seconds.clone(),
        );
        let detector_checkpoint_bytes = Gauge::default();
        registry.register(
            "detector_checkpoint_bytes",
            "The size of the detector's last checkpoint",
            detector_checkpoint_bytes.clone(),
        );
        let detector_dedupe_evicted = Counter::default();
        registry.register(
            "detector_dedupe_ids_evicted",
            "Event ids forgotten before the duplicate horizon because the id set was at its cap",
            detector_dedupe_evicted.clone(),
        );
        let detector_keys_evicted = Counter::default();
        registry.register(
            "detector_keys_evicted",
            "Keys a rule forgot, least recently seen first, to make room at its key cap",
            detector_keys_evicted.clone(),
        );
        let stream_refused = Counter::default();
        registry.register(
            "http_stream_subscribers_refused",
            "Event-stream subscriptions refused because the subscriber limit was reached",
            stream_refused.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at once because a connection limit was reached",
            connections_refused.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "http_connections_open",
            "HTTP connections open",
            connections_open.clone(),
        );
        let decode_busy = Counter::default();
        registry.register(
            "ingest_decode_busy",
            "Ingest requests answered 503 because every decoding slot stayed busy",
            decode_busy.clone(),
        );
        registry.register(
            "notifications_sent",
            "Notices a channel took, by channel",
            notifications_sent.clone(),
        );
        registry.register(
            "notifications_failed",
            "Notices given up after their attempts, by channel",
            notifications_failed.clone(),
        );
        registry.register(
            "notifications_retried",
            "Failed notice attempts followed by another, by channel",
            notifications_retried.clone(),
        );
        registry.register(
            "detector_bot_flags",
            "User-days written to bot_flags",
            bot_flags.clone(),
        );
        registry.register(
            "detector_bot_flag_failures",
            "Batches of bot flags the lake could not take",
            bot_flag_failures.clone(),
        );
        registry.register(
            "detector_events",
            "Events the detector processed",
            detector_events.clone(),
        );
        registry.register(
            "detector_late_events",
            "Events behind the detector's watermark, not windowed",
            detector_late.clone(),
        );
        registry.register(
            "detector_windows_fired",
            "Windows that crossed a rule's threshold",
            detector_windows.clone(),
        );
        registry.register(
            "detector_lag_seconds",
            "From the newest processed event's arrival to its processing",
            detector_lag.clone(),
        );
        registry.register(
            "incidents_opened",
            "Incidents opened, by rule and severity",
            incidents_opened.clone(),
        );
        registry.register(
            "incidents_escalated",
            "Incidents escalated, by rule and new severity",
            incidents_escalated.clone(),
        );
        registry.register(
            "incidents_resolved",
            "Incidents resolved after their cooldown, by rule and severity",
            incidents_resolved.clone(),
        );
        registry.register(
            "alert_store_failures",
            "Batches of incident changes the alert store could not take",
            store_failures.clone(),
        );
        registry.register(
            "ingest_requests",
            "Ingest requests answered, by HTTP status",
            requests.clone(),
        );
        registry.register(
            "ingest_events_accepted",
            "Events accepted (durable in the log)",
            accepted.clone(),
        );
        registry.register(
            "ingest_rows_rejected",
            "Rows refused and sent to quarantine",
            rejected.clone(),
        );
        registry.register(
            "ingest_request_duration_seconds",
            "Time from an ingest request's arrival to its answer",
            latency.clone(),
        );
        registry.register(
            "log_backlog_events",
            "Events in the log not yet delivered to the lake",
            backlog.clone(),
        );
        registry.register(
            "delivery_events_written",
            "Events written to the events table by delivery",
            delivered.clone(),
        );
        registry.register(
            "delivery_events_duplicate",
            "Events delivery dropped as already in the lake",
            duplicates.clone(),
        );
        registry.register(
            "delivery_commits",
            "Deliveries committed to the lake",
            deliveries.clone(),
        );
        registry.register(
            "delivery_failures",
            "Deliveries that failed (retried at the next interval)",
            delivery_failures.clone(),
        );
        registry.register(
            "delivery_duration_seconds",
            "Time one delivery took",
            delivery_seconds.clone(),
        );
        let delivery_races = Counter::default();
        registry.register(
            "delivery_races",
            "Delivery passes that wrote nothing because another process had delivered a partition they read",
            delivery_races.clone(),
        );
        let delivery_lag = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "delivery_lag_records",
            "Records in the log past delivery's position, per partition this process delivers",
            delivery_lag.clone(),
        );
        let delivery_rebalances = Counter::default();
        registry.register(
            "delivery_rebalances",
            "Rebalances of the delivery consumer group this process took part in",
            delivery_rebalances.clone(),
        );
        let delivery_partitions = Gauge::default();
        registry.register(
            "delivery_partitions",
            "Log partitions this process delivers now",
            delivery_partitions.clone(),
        );
        Metrics {
            registry,
            requests,
            accepted,
            rejected,
            latency,
            backlog,
            delivered,
            duplicates,
            deliveries,
            delivery_failures,
            delivery_seconds,
            delivery_races,
            delivery_lag,
            delivery_rebalances,
            delivery_partitions,
            detector_events,
            detector_late,
            detector_windows,
            detector_lag,
            incidents_opened,
            incidents_escalated,
            incidents_resolved,
            store_failures,
            notifications_sent,
            notifications_failed,
            notifications_retried,
            bot_flags,
            bot_flag_failures,
            detector_dedupe_ids,
            detector_dedupe_evicted,
            detector_keys_evicted,
            detector_partition_late,
            detector_partition_watermark,
            detector_held,
            detector_forced,
            detector_checkpoints,
            detector_checkpoint_failures,
            detector_checkpoint_seconds,
            detector_checkpoint_bytes,
            decode_busy,
            connections_open,
            connections_refused,
            stream_refused,
            log_full,
            queries_refused,
            queries_running,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
