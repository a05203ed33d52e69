//! `[log]` of `shoplake.toml`: which backend and its settings. [`LogConfig::settings`]
//! checks every value once and lists every problem; [`LogSettings::open`] opens the log.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shoplake_events::record::RecordFormat;
use shoplake_events::settings::parse_duration_or_off;

use crate::{EmbeddedLog, EmbeddedOptions, EventLog, KafkaLog, KafkaOptions, Result};

/// The topic of a Kafka log unless `log.kafka.topic` names another.
pub const DEFAULT_TOPIC: &str = "shoplake-events";

/// `[log]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `embedded` (default: segment files under `DATA/log`) or `kafka`.
    pub backend: Option<String>,
    /// Partitions of a new log (default 4).
    pub partitions: Option<u32>,
    /// Keep at most this many bytes per partition (default 1 GiB), never deleting records
    /// the lake delivery has not committed: a partition holding this plus a segment of
    /// undelivered records refuses appends (the collector answers 503 + `Retry-After`).
    pub retention_bytes: Option<u64>,
    /// Keep records at most this long (default `7d`; `off`: no limit).
    pub retention: Option<String>,
    /// How events are written into the log: `binary` (compact, read by shoplake only; the
    /// embedded log's default) or `json` (one JSON object per record, readable by any Kafka
    /// consumer; the Kafka default). Consumers read both, so it may change at any time.
    pub record_format: Option<String>,
    /// `[log.kafka]`: the Kafka backend.
    #[serde(default)]
    pub kafka: KafkaConfig,
}

/// `[log.kafka]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers (`host:port,host:port`).
    pub brokers: Option<String>,
    /// The topic (default `shoplake-events`), keyed by `user_id`; created with
    /// `log.partitions` partitions when missing.
    pub topic: Option<String>,
    /// librdkafka properties for the producer (`batch.num.messages`, `security.protocol` …).
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
    /// librdkafka properties for the consumers.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
}

/// The log as configured, every value checked.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// The backend and its options.
    pub backend: Backend,
    /// How the collector writes events into it.
    pub record_format: RecordFormat,
}

/// Which log, with its options.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Segment files in a directory (its `dir` is set when opened, under the data directory).
    Embedded(EmbeddedOptions),
    /// A Kafka topic.
    Kafka(KafkaOptions),
}

impl LogConfig {
    /// The settings, or every problem with them.
    pub fn settings(&self) -> std::result::Result<LogSettings, Vec<String>> {
        let mut errors = Vec::new();
        if self.partitions == Some(0) {
            errors.push("log.partitions must be at least 1".to_owned());
        }
        // Unset (the default), off, or a duration.
        let retention: Option<Option<Duration>> = match &self.retention {
            None => None,
            Some(v) => parse_duration_or_off(v)
                .map_err(|e| errors.push(format!("log.retention = {e}")))
                .ok(),
        };
        let backend = match self.backend.as_deref() {
            None | Some("embedded") => Some(self.embedded(retention)),
            Some("kafka") => match &self.kafka.brokers {
                Some(brokers) => Some(self.kafka(brokers)),
                None => {
                    errors.push("log.backend = \"kafka\" needs log.kafka.brokers".to_owned());
                    None
                }
            },
            Some(other) => {
                errors.push(format!("log.backend {other:?}: expected embedded or kafka"));
                None
            }
        };
        let record_format = match self.record_format.as_deref() {
            None if matches!(backend, Some(Backend::Kafka(_))) => Some(RecordFormat::Json),
            None => Some(RecordFormat::Binary),
            Some(s) => RecordFormat::parse(s).or_else(|| {
                errors.push(format!("log.record_format {s:?}: expected binary or json"));
                None
            }),
        };
        match (backend, record_format) {
            (Some(backend), Some(record_format)) if errors.is_empty() => Ok(LogSettings {
                backend,
                record_format,
            }),
            _ => Err(errors),
        }
    }

    fn embedded(&self, retention: Option<Option<Duration>>) -> Backend {
        // The directory is the data directory's, known when the log is opened.
        let mut options = EmbeddedOptions::new("log");
        if let Some(p) = self.partitions {
            options.partitions = p;
        }
        if let Some(b) = self.retention_bytes {
            options.retention_bytes = Some(b);
        }
        if let Some(age) = retention {
            options.retention_age = age;
        }
        Backend::Embedded(options)
    }

    fn kafka(&self, brokers: &str) -> Backend {
        let k = &self.kafka;
        let topic = k.topic.clone().unwrap_or_else(|| DEFAULT_TOPIC.to_owned());
        let mut options = KafkaOptions::new(brokers, topic);
        if let Some(p) = self.partitions {
            options.partitions = p;
        }
        options.producer_properties = k.producer.clone().into_iter().collect();
        options.consumer_properties = k.consumer.clone().into_iter().collect();
        Backend::Kafka(options)
    }
}

impl LogSettings {
    /// Opens the log: an embedded one in `DIR/log` of the data directory, retention sparing
    /// what the consumers in `protected` have not committed.
    pub async fn open(&self, data: &Path, protected: &[&str]) -> Result<Arc<dyn EventLog>> {
        match &self.backend {
            Backend::Embedded(options) => {
                let mut options = options.clone();
                options.dir = data.join("log");
                options.protected = protected.iter().map(|c| (*c).to_owned()).collect();
                Ok(Arc::new(EmbeddedLog::open(options)?))
            }
            Backend::Kafka(options) => {
                let log = KafkaLog::open(options.clone()).await?;
                tracing::info!(
                    topic = %options.topic,
                    brokers = %options.brokers,
                    partitions = log.partitions(),
                    "event log on Kafka"
                );
                Ok(Arc::new(log))
            }
        }
    }

    /// Where the log is, for messages.
    pub fn describe(&self, data: &Path) -> String {
        match &self.backend {
            Backend::Embedded(_) => format!("the event log in {}", data.join("log").display()),
            Backend::Kafka(o) => format!("the Kafka topic {} on {}", o.topic, o.brokers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> LogConfig {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn the_defaults_are_an_embedded_log_in_binary_records() {
        let s = LogConfig::default().settings().unwrap();
        assert_eq!(s.record_format, RecordFormat::Binary);
        let Backend::Embedded(o) = s.backend else {
            panic!("not embedded")
        };
        let defaults = EmbeddedOptions::new("log");
        assert_eq!(o.partitions, defaults.partitions);
        assert_eq!(o.retention_age, defaults.retention_age);
        assert_eq!(o.retention_bytes, defaults.retention_bytes);
    }

    #[test]
    fn kafka_writes_json_unless_told_and_retention_may_be_off() {
        let s = parse(r#"{"backend": "kafka", "partitions": 8, "kafka": {"brokers": "k:9092"}}"#)
            .settings()
            .unwrap();
        assert_eq!(s.record_format, RecordFormat::Json);
        let Backend::Kafka(o) = s.backend else {
            panic!("not kafka")
        };
        assert_eq!((o.topic.as_str(), o.partitions), (DEFAULT_TOPIC, 8));
        let s = parse(r#"{"retention": "off", "record_format": "json"}"#)
            .settings()
            .unwrap();
        assert_eq!(s.record_format, RecordFormat::Json);
        let Backend::Embedded(o) = s.backend else {
            panic!("not embedded")
        };
        assert_eq!(o.retention_age, None);
    }

    #[test]
    fn every_problem_is_listed() {
        let errors = parse(
            r#"{"backend": "kafka", "partitions": 0, "retention": "soon", "record_format": "avro"}"#,
        )
        .settings()
        .unwrap_err();
        for want in [
            "log.partitions must be at least 1",
            "log.retention = \"soon\"",
            "needs log.kafka.brokers",
            "log.record_format \"avro\": expected binary or json",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(want)),
                "{want}: {errors:?}"
            );
        }
    }
}
