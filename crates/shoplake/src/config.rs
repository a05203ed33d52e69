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
}
