//! `[server]` and `[delivery]` of `shoplake.toml`. Each value is checked once, by
//! [`ServerConfig::settings`] and [`DeliveryConfig::options`], which list every problem at
//! once; the defaults are those of [`Limits`], [`HttpLimits`] and [`DeliveryOptions`].

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use shoplake_events::settings::{parse_duration, parse_duration_or_off};

use crate::auth::{Network, Token};
use crate::collector::Limits;
use crate::delivery::DeliveryOptions;
use crate::http::HttpLimits;

/// Where `serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// The longest `max_future` allowed (live traffic; a history import keeps a day itself).
const MAX_FUTURE_LIMIT: Duration = Duration::from_secs(86_400);

/// `[server]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The address to listen on (default `127.0.0.1:7070`).
    pub listen: Option<String>,
    /// What this process does: `collector`, `delivery`, `detector`, comma-separated
    /// (default: all three; `serve --roles` overrides it).
    pub roles: Option<String>,
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
    /// How far behind `events` an HTTP report may answer from the marts while a refresh
    /// catches up: the age of the oldest delivery they lack (default `60s`; `0s`: always
    /// from the latest `events`, scanning it while the marts are behind).
    pub report_lag: Option<String>,
    /// The nice value (0–19) of the threads queries and reports run on (default 0: the
    /// server's priority); higher lets ingest, delivery and `/healthz` run first whenever
    /// they have work (and lets every other process on the machine run first too).
    pub query_nice: Option<i32>,
    /// `[[server.tokens]]`: `name`, `token`, `scopes` (`ingest`, `read`, `admin`) and
    /// `forward` (events may carry their own `client_ip`/`user_agent`). With none, `serve`
    /// creates an admin token in `DATA/admin.token`.
    #[serde(default)]
    pub tokens: Vec<Token>,
}

/// The server as configured, every value checked.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Network>,
    /// The collector's limits.
    pub limits: Limits,
    /// The HTTP server's.
    pub http: HttpLimits,
    /// The configured tokens (none: `serve` makes an admin token).
    pub tokens: Vec<Token>,
    /// What this process does.
    pub roles: crate::roles::Roles,
}

/// Collects the problems of one section while its values are read.
struct Check<'a> {
    section: &'a str,
    errors: Vec<String>,
}

impl Check<'_> {
    /// A duration setting: its value, or `default` when unset or wrong (noted).
    fn duration(&mut self, key: &str, value: &Option<String>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => parse_duration(v).unwrap_or_else(|e| {
                self.errors.push(format!("{}.{key} = {e}", self.section));
                default
            }),
        }
    }

    /// A duration setting that may be `off` (`None`).
    fn duration_or_off(
        &mut self,
        key: &str,
        value: &Option<String>,
        default: Option<Duration>,
    ) -> Option<Duration> {
        match value {
            None => default,
            Some(v) => parse_duration_or_off(v).unwrap_or_else(|e| {
                self.errors.push(format!("{}.{key} = {e}", self.section));
                default
            }),
        }
    }

    /// A count that must be at least 1.
    fn positive(&mut self, key: &str, n: usize) {
        if n == 0 {
            self.errors
                .push(format!("{}.{key} must be at least 1", self.section));
        }
    }
}

impl ServerConfig {
    /// The settings, or every problem with them.
    pub fn settings(&self) -> Result<ServerSettings, Vec<String>> {
        let mut check = Check {
            section: "server",
            errors: Vec::new(),
        };
        let limits = self.limits(&mut check);
        let http = self.http(&mut check);
        let listen = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen.parse::<SocketAddr>().unwrap_or_else(|_| {
            check.errors.push(format!(
                "server.listen {listen:?} is not an address such as {DEFAULT_LISTEN}"
            ));
            SocketAddr::from(([127, 0, 0, 1], 7070))
        });
        let mut trusted_proxies = Vec::new();
        for p in &self.trusted_proxies {
            match p.parse::<Network>() {
                Ok(n) => trusted_proxies.push(n),
                Err(e) => check.errors.push(format!("server.trusted_proxies: {e}")),
            }
        }
        check_tokens(&self.tokens, &mut check.errors);
        let roles = match self.roles.as_deref().map(str::parse) {
            None => crate::roles::Roles::ALL,
            Some(Ok(roles)) => roles,
            Some(Err(e)) => {
                check.errors.push(format!("server.roles: {e}"));
                crate::roles::Roles::ALL
            }
        };
        if check.errors.is_empty() {
            Ok(ServerSettings {
                listen,
                trusted_proxies,
                limits,
                http,
                tokens: self.tokens.clone(),
                roles,
            })
        } else {
            Err(check.errors)
        }
    }

    fn limits(&self, check: &mut Check<'_>) -> Limits {
        let c = Limits::default();
        let limits = Limits {
            max_body_bytes: self.max_body_bytes.unwrap_or(c.max_body_bytes),
            max_rows: self.max_rows.unwrap_or(c.max_rows),
            backlog_high_water: self.backlog_high_water.unwrap_or(c.backlog_high_water),
            backlog_high_water_bytes: self
                .backlog_high_water_bytes
                .unwrap_or(c.backlog_high_water_bytes),
            max_future: check.duration("max_future", &self.max_future, c.max_future),
            decode_concurrency: self.decode_concurrency.unwrap_or(c.decode_concurrency),
            decode_wait: check.duration("decode_wait", &self.decode_wait, c.decode_wait),
            body_timeout: check.duration("body_timeout", &self.body_timeout, c.body_timeout),
            max_body_bytes_in_flight: self
                .max_body_bytes_in_flight
                .unwrap_or(c.max_body_bytes_in_flight),
            max_stream_subscribers: self
                .max_stream_subscribers
                .unwrap_or(c.max_stream_subscribers),
            query_memory_bytes: self.query_memory_bytes.unwrap_or(c.query_memory_bytes),
            query_spill_bytes: self.query_spill_bytes.unwrap_or(c.query_spill_bytes),
            query_concurrency: self.query_concurrency.unwrap_or(c.query_concurrency),
            query_wait: check.duration("query_wait", &self.query_wait, c.query_wait),
            query_timeout: check.duration("query_timeout", &self.query_timeout, c.query_timeout),
            report_timeout: check.duration(
                "report_timeout",
                &self.report_timeout,
                c.report_timeout,
            ),
            report_lag: check.duration("report_lag", &self.report_lag, c.report_lag),
            query_nice: self.query_nice.unwrap_or(c.query_nice),
            ..c
        };
        if !(0..=19).contains(&limits.query_nice) {
            check
                .errors
                .push("server.query_nice must be between 0 and 19".to_owned());
        }
        if limits.max_future > MAX_FUTURE_LIMIT {
            check
                .errors
                .push("server.max_future: at most 1d".to_owned());
        }
        for (key, n) in [
            ("max_body_bytes", limits.max_body_bytes),
            ("max_rows", limits.max_rows),
            ("decode_concurrency", limits.decode_concurrency),
            ("query_concurrency", limits.query_concurrency),
            ("query_memory_bytes", limits.query_memory_bytes),
        ] {
            check.positive(key, n);
        }
        limits
    }

    fn http(&self, check: &mut Check<'_>) -> HttpLimits {
        let h = HttpLimits::default();
        let http = HttpLimits {
            header_read_timeout: check.duration(
                "header_read_timeout",
                &self.header_read_timeout,
                h.header_read_timeout,
            ),
            max_connections: self.max_connections.unwrap_or(h.max_connections),
            max_connections_per_ip: self
                .max_connections_per_ip
                .unwrap_or(h.max_connections_per_ip),
            max_header_bytes: self.max_header_bytes.unwrap_or(h.max_header_bytes),
            shutdown_grace: check.duration(
                "shutdown_grace",
                &self.shutdown_grace,
                h.shutdown_grace,
            ),
        };
        check.positive("max_connections", http.max_connections);
        check.positive("max_connections_per_ip", http.max_connections_per_ip);
        if http.max_header_bytes < 8192 {
            check
                .errors
                .push("server.max_header_bytes must be at least 8192".to_owned());
        }
        http
    }
}

/// Tokens: long enough, with scopes, and named once each.
fn check_tokens(tokens: &[Token], errors: &mut Vec<String>) {
    let mut names = std::collections::HashSet::new();
    for t in tokens {
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
}

/// `[delivery]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// The consumer's name (default `lake`): its positions in the lake, and on Kafka its
    /// consumer group (`shoplake.<topic>.<consumer>`), which every delivery process of one
    /// deployment shares.
    pub consumer: Option<String>,
    /// Deliver at least this often (default `10s`).
    pub interval: Option<String>,
    /// Deliver early once this many bytes were appended (default 64 MiB).
    pub max_bytes: Option<u64>,
    /// Compact `events` this often (default `10m`; `off` to never).
    pub compact_interval: Option<String>,
    /// Bring the marts up to date after deliveries at most this often (default `0s`: after
    /// every delivery that wrote something; `off` to never).
    pub marts_interval: Option<String>,
    /// Delete rows of `quarantine` older than this (default `off`: keep them), such as
    /// `30d`; applied as often as compaction runs.
    pub quarantine_retention: Option<String>,
}

impl DeliveryConfig {
    /// The delivery's options, or every problem with them.
    pub fn options(&self) -> Result<DeliveryOptions, Vec<String>> {
        let d = DeliveryOptions::default();
        let mut check = Check {
            section: "delivery",
            errors: Vec::new(),
        };
        let options = DeliveryOptions {
            interval: check.duration("interval", &self.interval, d.interval),
            max_bytes: self.max_bytes.unwrap_or(d.max_bytes),
            compact_interval: check.duration_or_off(
                "compact_interval",
                &self.compact_interval,
                d.compact_interval,
            ),
            marts_interval: check.duration_or_off(
                "marts_interval",
                &self.marts_interval,
                d.marts_interval,
            ),
            quarantine_retention: check.duration_or_off(
                "quarantine_retention",
                &self.quarantine_retention,
                d.quarantine_retention,
            ),
            consumer: self.consumer.clone().unwrap_or(d.consumer),
            ..d
        };
        if let Err(e) = shoplake_log::check_consumer(&options.consumer) {
            check.errors.push(format!("delivery.consumer: {e}"));
        }
        if options.interval.is_zero() {
            check
                .errors
                .push("delivery.interval must be more than 0s".to_owned());
        }
        if check.errors.is_empty() {
            Ok(options)
        } else {
            Err(check.errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_runtime_types_own() {
        let s = ServerConfig::default().settings().unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            format!("{:?}", s.limits),
            format!("{:?}", Limits::default())
        );
        assert_eq!(
            format!("{:?}", s.http),
            format!("{:?}", HttpLimits::default())
        );
        let d = DeliveryConfig::default().options().unwrap();
        assert_eq!(
            format!("{d:?}"),
            format!("{:?}", DeliveryOptions::default())
        );
    }

    #[test]
    fn values_are_read_once_and_every_problem_listed() {
        let c: ServerConfig = serde_json::from_value(serde_json::json!({
            "listen": "nowhere",
            "max_future": "2d",
            "decode_wait": "soon",
            "max_rows": 0,
            "max_header_bytes": 100,
            "trusted_proxies": ["10.0.0.0/40"],
            "roles": "collector,janitor",
        }))
        .unwrap();
        let errors = c.settings().unwrap_err();
        for want in [
            "server.listen \"nowhere\"",
            "server.max_future: at most 1d",
            "server.decode_wait = \"soon\"",
            "server.max_rows must be at least 1",
            "server.max_header_bytes must be at least 8192",
            "server.trusted_proxies",
            "server.roles: unknown role \"janitor\"",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(want)),
                "{want}: {errors:?}"
            );
        }
        let d: DeliveryConfig = serde_json::from_value(serde_json::json!({
            "interval": "5s", "marts_interval": "off", "compact_interval": "1h",
        }))
        .unwrap();
        let o = d.options().unwrap();
        assert_eq!(o.interval, Duration::from_secs(5));
        assert_eq!(o.marts_interval, None);
        assert_eq!(o.compact_interval, Some(Duration::from_secs(3600)));
        let bad: DeliveryConfig =
            serde_json::from_value(serde_json::json!({"interval": "off", "marts_interval": "x"}))
                .unwrap();
        let errors = bad.options().unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("delivery.interval")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("delivery.marts_interval")),
            "{errors:?}"
        );
    }
}
