//! `shoplake.toml`: the configuration file. Each section belongs to the crate it configures
//! (`[lake]` to `shoplake-lake`, `[server]` and `[delivery]` to `shoplake-server`, `[log]` to
//! `shoplake-log`, `[detect]` to `shoplake-detect`, `[alerts]` to `shoplake-alerts`,
//! `[notify]` to `shoplake-server::notify`), which documents its keys, checks each value
//! once and holds the defaults. Unknown keys are rejected, and `shoplake config check`
//! reports every problem at once. Precedence: command-line flags, then `SHOPLAKE_*`
//! environment variables, then the file, then the defaults.

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
    pub lake: shoplake_lake::LakeConfig,
    /// The collector (`shoplake serve`).
    #[serde(default)]
    pub server: shoplake_server::ServerConfig,
    /// The event log between the collector and its consumers.
    #[serde(default)]
    pub log: shoplake_log::LogConfig,
    /// The delivery of the log into the lake.
    #[serde(default)]
    pub delivery: shoplake_server::DeliveryConfig,
    /// Detection: time, lateness, cooldown, allow- and deny-lists, and adjustments to the
    /// seven default rules (`[detect.rules.user_burst]` … with `window`, `slide`,
    /// `threshold`, `notify`, `severity`, `factor`, `baseline`, `floor`, `events`, `max_cv`,
    /// `enabled`).
    #[serde(default)]
    pub detect: shoplake_detect::DetectConfig,
    /// Where incidents are kept.
    #[serde(default)]
    pub alerts: shoplake_alerts::AlertsConfig,
    /// Where openings and escalations are sent: `[notify]` with `attempts`, `backoff`,
    /// `timeout`, `queue`, and `[[notify.channels]]` (`kind` = `webhook` with `url` and
    /// `secret`, `slack` with `url`, or `email` with `smtp`, `from`, `to`; each with
    /// `min_severity`, default `high`).
    #[serde(default)]
    pub notify: shoplake_server::notify::NotifyConfig,
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

    /// Every problem a parsed file still has, from every section.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = self.lake.validate();
        let mut add = |problems: Option<Vec<String>>| errors.extend(problems.unwrap_or_default());
        add(self.server.settings().err());
        add(self.log.settings().err());
        add(self.delivery.options().err());
        add(self.detect.settings().err());
        add(self.notify.settings().err());
        add(self.alerts.settings(Path::new("data")).err());
        errors
    }

    /// Object-store options: the file's `[lake.s3]`, overridden by `AWS_*` variables.
    pub fn storage_options(&self) -> std::collections::HashMap<String, String> {
        self.lake.storage_options(|k| std::env::var(k).ok())
    }
}

/// Every problem of a section as one error.
pub fn problems(section: &str, errors: Vec<String>) -> anyhow::Error {
    anyhow::anyhow!("the {section} settings:\n  {}", errors.join("\n  "))
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
        assert_eq!(c.delivery.options().unwrap().marts_interval, None);
        use shoplake_events::record::RecordFormat;
        assert_eq!(c.log.settings().unwrap().record_format, RecordFormat::Json);
        assert_eq!(
            Config::default().log.settings().unwrap().record_format,
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
