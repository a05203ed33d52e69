//! `shoplake.toml`: the configuration file. Every key is documented here (the doc comments are
//! the reference), unknown keys are rejected, and `shoplake config check` reports every problem
//! at once. Precedence: command-line flags, then `SHOPLAKE_*` environment variables, then the
//! file, then the defaults.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "shoplake.toml";

/// The whole configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the lake is and how to reach it.
    #[serde(default)]
    pub lake: LakeConfig,
    /// The collector (`shoplake serve`).
    #[serde(default)]
    pub server: ServerConfig,
    /// The event log between the collector and its consumers.
    #[serde(default)]
    pub log: LogConfig,
    /// The delivery of the log into the lake.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Detection: time, lateness, cooldown, allow- and deny-lists, and adjustments to the
    /// seven default rules (`[detect.rules.user_burst]` … with `window`, `slide`,
    /// `threshold`, `notify`, `severity`, `factor`, `baseline`, `floor`, `events`, `max_cv`,
    /// `enabled`).
    #[serde(default)]
    pub detect: shoplake_detect::DetectConfig,
    /// Where incidents are kept.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Where openings and escalations are sent: `[notify]` with `attempts`, `backoff`,
    /// `timeout`, `queue`, and `[[notify.channels]]` (`kind` = `webhook` with `url` and
    /// `secret`, `slack` with `url`, or `email` with `smtp`, `from`, `to`; each with
    /// `min_severity`, default `high`).
    #[serde(default)]
    pub notify: shoplake_server::notify::NotifyConfig,
}

/// `[alerts]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// The alert store: `sqlite://PATH` (default `sqlite://DATA/alerts.db`) or
    /// `postgres://user@host:port/db`.
    pub store: Option<String>,
    /// Delete resolved incidents this long after their resolution (default `off`: keep
    /// them), such as `90d`; applied every ten minutes.
    pub retain_resolved: Option<String>,
}

impl AlertsConfig {
    /// The store's URL, with the default under the data directory.
    pub fn url(&self, data: &Path) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data.join("alerts.db").display()))
    }
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The address to listen on (default `127.0.0.1:7070`).
    pub listen: Option<String>,
    /// Proxies (addresses or networks such as `10.0.0.0/8`) whose `X-Forwarded-For` is
    /// believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The largest request body in bytes, as sent and once decompressed (default 16 MiB).
    pub max_body_bytes: Option<usize>,
    /// The most rows in one request (default 50 000).
    pub max_rows: Option<usize>,
    /// Undelivered events in the log above which requests get 503 with `Retry-After`
    /// (default 2 000 000).
    pub backlog_high_water: Option<u64>,
    /// The same bound in bytes of undelivered records, estimated from their mean size
    /// (default 1 GiB).
    pub backlog_high_water_bytes: Option<u64>,
    /// How far past the server's clock an event's time may be (default `15m`, at most
    /// `1d`); later ones are refused with their reason. `shoplake import` of history keeps a
    /// day.
    pub max_future: Option<String>,
    /// Requests decoded at once, off the async workers (default: the number of cores).
    pub decode_concurrency: Option<usize>,
    /// How long a request waits for a decoding slot before 503 + `Retry-After` (default `2s`).
    pub decode_wait: Option<String>,
    /// The time a client has to send a request body once its headers are in (default `30s`).
    pub body_timeout: Option<String>,
    /// Bytes of request bodies held at once across all requests (default 256 MiB); past it
    /// requests wait `decode_wait`, then 503.
    pub max_body_bytes_in_flight: Option<usize>,
    /// The time a client has to send a request's headers; also how long a kept-alive
    /// connection may sit idle (default `10s`).
    pub header_read_timeout: Option<String>,
    /// The most HTTP connections open at once (default 4096).
    pub max_connections: Option<usize>,
    /// The most HTTP connections open at once from one address (default 256; behind a proxy
    /// all clients share its address: raise it).
    pub max_connections_per_ip: Option<usize>,
    /// The largest request head, request line and headers, in bytes (default 65536, at
    /// least 8192).
    pub max_header_bytes: Option<usize>,
    /// How long shutdown waits for requests in flight before closing them (default `10s`).
    pub shutdown_grace: Option<String>,
    /// The most `GET /v1/events/stream` subscribers at once (default 64).
    pub max_stream_subscribers: Option<usize>,
    /// Memory all queries and reports of the server together may hold in their operators
    /// before they spill to disk (default 1 GiB).
    pub query_memory_bytes: Option<usize>,
    /// Bytes all queries and reports together may spill to disk (default 8 GiB).
    pub query_spill_bytes: Option<u64>,
    /// Queries and reports (HTTP) run at once (default 2); more wait `query_wait`, then 429.
    pub query_concurrency: Option<usize>,
    /// How long a query or report waits for its turn (default `5s`).
    pub query_wait: Option<String>,
    /// The time limit of `POST /v1/query`, planning, execution and encoding (default `60s`).
    pub query_timeout: Option<String>,
    /// The time limit of an HTTP report (default `120s`).
    pub report_timeout: Option<String>,
    /// `[[server.tokens]]`: `name`, `token`, `scopes` (`ingest`, `read`, `admin`) and
    /// `forward` (events may carry their own `client_ip`/`user_agent`). With none, `serve`
    /// creates an admin token in `DATA/admin.token`.
    #[serde(default)]
    pub tokens: Vec<shoplake_server::Token>,
}

impl ServerConfig {
    /// The collector's and the HTTP server's limits, or every problem with them.
    pub fn limits(
        &self,
    ) -> Result<(shoplake_server::Limits, shoplake_server::HttpLimits), Vec<String>> {
        let mut errors = Vec::new();
        let mut duration =
            |key: &str, value: &Option<String>, default: std::time::Duration| match value {
                None => default,
                Some(v) => match humantime::parse_duration(v.trim()) {
                    Ok(d) => d,
                    Err(e) => {
                        errors.push(format!(
                            "server.{key} = {v:?}: {e} (expected e.g. 10s or 5m)"
                        ));
                        default
                    }
                },
            };
        let c = shoplake_server::Limits::default();
        let h = shoplake_server::HttpLimits::default();
        let collector = shoplake_server::Limits {
            max_body_bytes: self.max_body_bytes.unwrap_or(c.max_body_bytes),
            max_rows: self.max_rows.unwrap_or(c.max_rows),
            backlog_high_water: self.backlog_high_water.unwrap_or(c.backlog_high_water),
            backlog_high_water_bytes: self
                .backlog_high_water_bytes
                .unwrap_or(c.backlog_high_water_bytes),
            max_future: duration("max_future", &self.max_future, c.max_future),
            decode_concurrency: self.decode_concurrency.unwrap_or(c.decode_concurrency),
            decode_wait: duration("decode_wait", &self.decode_wait, c.decode_wait),
            body_timeout: duration("body_timeout", &self.body_timeout, c.body_timeout),
            max_body_bytes_in_flight: self
                .max_body_bytes_in_flight
                .unwrap_or(c.max_body_bytes_in_flight),
            max_stream_subscribers: self
                .max_stream_subscribers
                .unwrap_or(c.max_stream_subscribers),
            query_memory_bytes: self.query_memory_bytes.unwrap_or(c.query_memory_bytes),
            query_spill_bytes: self.query_spill_bytes.unwrap_or(c.query_spill_bytes),
            query_concurrency: self.query_concurrency.unwrap_or(c.query_concurrency),
            query_wait: duration("query_wait", &self.query_wait, c.query_wait),
            query_timeout: duration("query_timeout", &self.query_timeout, c.query_timeout),
            report_timeout: duration("report_timeout", &self.report_timeout, c.report_timeout),
            ..c
        };
        let http = shoplake_server::HttpLimits {
            header_read_timeout: duration(
                "header_read_timeout",
                &self.header_read_timeout,
                h.header_read_timeout,
            ),
            max_connections: self.max_connections.unwrap_or(h.max_connections),
            max_connections_per_ip: self
                .max_connections_per_ip
                .unwrap_or(h.max_connections_per_ip),
            max_header_bytes: self.max_header_bytes.unwrap_or(h.max_header_bytes),
            shutdown_grace: duration("shutdown_grace", &self.shutdown_grace, h.shutdown_grace),
        };
        if collector.max_future > std::time::Duration::from_secs(86_400) {
            errors.push("server.max_future: at most 1d".to_owned());
        }
        for (key, n) in [
            ("max_body_bytes", collector.max_body_bytes),
            ("max_rows", collector.max_rows),
            ("decode_concurrency", collector.decode_concurrency),
            ("query_concurrency", collector.query_concurrency),
            ("query_memory_bytes", collector.query_memory_bytes),
            ("max_connections", http.max_connections),
            ("max_connections_per_ip", http.max_connections_per_ip),
        ] {
            if n == 0 {
                errors.push(format!("server.{key} must be at least 1"));
            }
        }
        if http.max_header_bytes < 8192 {
            errors.push("server.max_header_bytes must be at least 8192".to_owned());
        }
        if errors.is_empty() {
            Ok((collector, http))
        } else {
            Err(errors)
        }
    }
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `embedded` (default: segment files under `DATA/log`) or `kafka`.
    pub backend: Option<String>,
    /// Partitions of a new embedded log (default 4).
    pub partitions: Option<u32>,
    /// Keep at most this many bytes per partition (default 1 GiB), never deleting records
    /// the lake delivery has not committed: a partition holding this plus a segment of
    /// undelivered records refuses appends (the collector answers 503 + `Retry-After`).
    pub retention_bytes: Option<u64>,
    /// Keep records at most this long (default `7d`).
    pub retention: Option<String>,
    /// How events are written into the log: `binary` (compact, read by shoplake only; the
    /// embedded log's default) or `json` (one JSON object per record, readable by any Kafka
    /// consumer; the Kafka default). Consumers read both, so it may change at any time.
    pub record_format: Option<String>,
    /// `[log.kafka]`: the Kafka backend.
    #[serde(default)]
    pub kafka: KafkaConfig,
}

impl LogConfig {
    /// The record format: as configured, or the backend's default.
    pub fn record_format(&self) -> anyhow::Result<shoplake_events::record::RecordFormat> {
        use shoplake_events::record::RecordFormat;
        match self.record_format.as_deref() {
            None if self.backend.as_deref() == Some("kafka") => Ok(RecordFormat::Json),
            None => Ok(RecordFormat::Binary),
            Some(s) => RecordFormat::parse(s)
                .ok_or_else(|| anyhow::anyhow!("log.record_format {s:?}: expected binary or json")),
        }
    }
}

/// `[log.kafka]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers (`host:port,host:port`).
    pub brokers: Option<String>,
    /// The topic (default `shoplake-events`), keyed by `user_id`; created with
    /// `log.partitions` partitions when missing.
    pub topic: Option<String>,
    /// librdkafka properties for the producer (`batch.num.messages`, `security.protocol` …).
    #[serde(default)]
    pub producer: std::collections::BTreeMap<String, String>,
    /// librdkafka properties for the consumers.
    #[serde(default)]
    pub consumer: std::collections::BTreeMap<String, String>,
}

/// `[delivery]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Deliver at least this often (default `10s`).
    pub interval: Option<String>,
    /// Deliver early once this many bytes were appended (default 64 MiB).
    pub max_bytes: Option<u64>,
    /// Compact `events` this often (default `10m`; `off` to never).
    pub compact_interval: Option<String>,
    /// Bring the marts up to date after deliveries at most this often (default `60s`; `off`
    /// to never).
    pub marts_interval: Option<String>,
    /// Delete rows of `quarantine` older than this (default `off`: keep them), such as
    /// `30d`; applied as often as compaction runs.
    pub quarantine_retention: Option<String>,
}

/// A duration setting: `10s`, `5m`, or `off` (`None`).
pub fn duration_setting(
    name: &str,
    value: Option<&str>,
    default: &str,
) -> Result<Option<std::time::Duration>> {
    let v = value.unwrap_or(default).trim();
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    humantime::parse_duration(v)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{name} = {v:?}: {e} (expected e.g. 10s, 5m, or off)"))
}

/// `[lake]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// The lake root: a directory (default `data/lake`) or `s3://bucket/prefix`.
    pub root: Option<String>,
    /// `[lake.s3]`: settings for an `s3://` root. Values left out are taken from the usual
    /// `AWS_*` environment variables.
    #[serde(default)]
    pub s3: S3Config,
}

/// `[lake.s3]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The endpoint of an S3-compatible store (`http://127.0.0.1:8333`); AWS when absent.
    pub endpoint: Option<String>,
    /// The region (`us-east-1`).
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints (local stores).
    pub allow_http: Option<bool>,
}

impl Config {
    /// Reads `path`, or `shoplake.toml` in the working directory when it exists, or nothing.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let path = match path {
            Some(p) => p.to_owned(),
            None if Path::new(DEFAULT_FILE).exists() => PathBuf::from(DEFAULT_FILE),
            None => return Ok(Config::default()),
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let config: Config =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let errors = config.validate();
        if !errors.is_empty() {
            bail!("{}:\n  {}", path.display(), errors.join("\n  "));
        }
        Ok(config)
    }

    /// Every problem a parsed file still has.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(root) = &self.lake.root {
            if root.trim().is_empty() {
                errors.push("lake.root is empty".to_owned());
            } else if let Some((scheme, _)) = root.split_once("://")
                && !matches!(scheme, "s3" | "s3a" | "file")
            {
                errors.push(format!(
                    "lake.root: the scheme {scheme}:// is not supported; use a directory or s3://"
                ));
            }
        }
        if let Some(e) = &self.lake.s3.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            errors.push(format!(
                "lake.s3.endpoint {e:?} should start with http:// or https://"
            ));
        }
        if self.lake.s3.access_key_id.is_some() != self.lake.s3.secret_access_key.is_some() {
            errors
                .push("lake.s3.access_key_id and lake.s3.secret_access_key go together".to_owned());
        }
        if let Some(l) = &self.server.listen
            && l.parse::<std::net::SocketAddr>().is_err()
        {
            errors.push(format!(
                "server.listen {l:?} is not an address such as 127.0.0.1:7070"
            ));
        }
        if let Err(e) = self.server.limits() {
            errors.extend(e);
        }
        for p in &self.server.trusted_proxies {
            if let Err(e) = p.parse::<shoplake_server::Network>() {
                errors.push(format!("server.trusted_proxies: {e}"));
            }
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.server.tokens {
            if t.token.len() < 16 {
                errors.push(format!(
                    "server.tokens {:?}: the token should be at least 16 characters",
                    t.name
                ));
            }
            if t.scopes.is_empty() {
                errors.push(format!("server.tokens {:?}: no scopes", t.name));
            }
            if !names.insert(t.name.as_str()) {
                errors.push(format!(
                    "server.tokens: the name {:?} is used twice",
                    t.name
                ));
            }
        }
        match self.log.backend.as_deref() {
            None | Some("embedded") => {}
            Some("kafka") => {
                if self.log.kafka.brokers.is_none() {
                    errors.push("log.backend = \"kafka\" needs log.kafka.brokers".to_owned());
                }
            }
            Some(other) => {
                errors.push(format!("log.backend {other:?}: expected embedded or kafka"))
            }
        }
        if let Err(e) = self.log.record_format() {
            errors.push(e.to_string());
        }
        if self.log.partitions == Some(0) {
            errors.push("log.partitions must be at least 1".to_owned());
        }
        if let Err(e) = self.detect.settings() {
            errors.extend(e);
        }
        if let Err(e) = self.notify.settings() {
            errors.extend(e);
        }
        if let Some(url) = &self.alerts.store
            && !(url.starts_with("sqlite://")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            errors.push(format!(
                "alerts.store {url:?}: expected sqlite://PATH or postgres://…"
            ));
        }
        for (name, value, default) in [
            ("log.retention", &self.log.retention, "7d"),
            ("delivery.interval", &self.delivery.interval, "10s"),
            (
                "delivery.compact_interval",
                &self.delivery.compact_interval,
                "10m",
            ),
            (
                "delivery.marts_interval",
                &self.delivery.marts_interval,
                "60s",
            ),
            (
                "delivery.quarantine_retention",
                &self.delivery.quarantine_retention,
                "off",
            ),
            (
                "alerts.retain_resolved",
                &self.alerts.retain_resolved,
                "off",
            ),
        ] {
            if let Err(e) = duration_setting(name, value.as_deref(), default) {
                errors.push(e.to_string());
            }
        }
        errors
    }

    /// Object-store options: the file's `[lake.s3]`, overridden by `AWS_*` variables.
    pub fn storage_options(&self) -> HashMap<String, String> {
        let s3 = &self.lake.s3;
        let mut out = HashMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                out.insert(k.to_owned(), v);
            }
        };
        put("AWS_ENDPOINT_URL", s3.endpoint.clone());
        put("AWS_REGION", s3.region.clone());
        put("AWS_ACCESS_KEY_ID", s3.access_key_id.clone());
        put("AWS_SECRET_ACCESS_KEY", s3.secret_access_key.clone());
        put("AWS_ALLOW_HTTP", s3.allow_http.map(|b| b.to_string()));
        for k in [
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ALLOW_HTTP",
        ] {
            if let Ok(v) = std::env::var(k) {
                out.insert(k.to_owned(), v);
            }
        }
        out
    }
}

/// Options of `shoplake config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Check a configuration file and print every problem at once.
    Check {
        /// The file (default `shoplake.toml`).
        #[arg(value_name = "FILE", default_value = DEFAULT_FILE)]
        file: PathBuf,
    },
}

/// Runs `shoplake config`.
pub fn run(args: ConfigArgs) -> Result<ExitCode> {
    match args.command {
        ConfigCommand::Check { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let config: Config = match toml::from_str(&text) {
                Ok(c) => c,
                Err(e) => {
                    println!("{}: {e}", file.display());
                    return Ok(ExitCode::from(1));
                }
            };
            let errors = config.validate();
            if errors.is_empty() {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            } else {
                for e in &errors {
                    println!("{}: {e}", file.display());
                }
                Ok(ExitCode::from(1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_and_problems_listed() {
        assert!(toml::from_str::<Config>("[lake]\nroot = \"x\"\ncolour = 1\n").is_err());
        let c: Config = toml::from_str(
            "[lake]\nroot = \"gs://b/p\"\n[lake.s3]\nendpoint = \"localhost:9000\"\naccess_key_id = \"k\"\n",
        )
        .unwrap();
        assert_eq!(c.validate().len(), 3, "{:?}", c.validate());
        let ok: Config = toml::from_str("[lake]\nroot = \"s3://b/p\"\n[lake.s3]\nendpoint = \"http://127.0.0.1:8333\"\nallow_http = true\n").unwrap();
        assert!(ok.validate().is_empty());
        assert_eq!(
            ok.storage_options()
                .get("AWS_ALLOW_HTTP")
                .map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn server_log_and_delivery_sections() {
        let c: Config = toml::from_str(
            r#"
[server]
listen = "0.0.0.0:7070"
trusted_proxies = ["10.0.0.0/8", "::1"]
[[server.tokens]]
name = "shop"
token = "0123456789abcdef0123"
scopes = ["ingest"]
[log]
backend = "kafka"
[log.kafka]
brokers = "k:9092"
[log.kafka.producer]
"linger.ms" = "5"
[delivery]
interval = "5s"
marts_interval = "off"
"#,
        )
        .unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(
            duration_setting("d", c.delivery.marts_interval.as_deref(), "60s").unwrap(),
            None
        );
        use shoplake_events::record::RecordFormat;
        assert_eq!(c.log.record_format().unwrap(), RecordFormat::Json);
        assert_eq!(
            Config::default().log.record_format().unwrap(),
            RecordFormat::Binary
        );
        let bad: Config = toml::from_str(
            r#"
[server]
listen = "nowhere"
trusted_proxies = ["10.0.0.0/40"]
[[server.tokens]]
name = "a"
token = "short"
scopes = []
[[server.tokens]]
name = "a"
token = "0123456789abcdef0123"
scopes = ["read"]
[log]
backend = "kafka"
partitions = 0
record_format = "avro"
[delivery]
interval = "soon"
"#,
        )
        .unwrap();
        let errors = bad.validate();
        for want in [
            "server.listen",
            "prefix length",
            "at least 16",
            "no scopes",
            "used twice",
            "needs log.kafka.brokers",
            "log.partitions",
            "log.record_format \"avro\": expected binary or json",
            "delivery.interval",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(want)),
                "{want} missing from {errors:?}"
            );
        }
        assert!(
            toml::from_str::<Config>(
                "[server]
colour = 1
"
            )
            .is_err()
        );
        assert!(
            toml::from_str::<Config>(
                "[[server.tokens]]
name = \"a\"
token = \"0123456789abcdef0\"
scopes = [\"write\"]
"
            )
            .is_err()
        );
    }
}
