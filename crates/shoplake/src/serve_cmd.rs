//! `shoplake serve`: the collector, the event log and delivery into the lake, from
//! `shoplake.toml` or the embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use shoplake_lake::{Lake, LakeOptions};
use shoplake_server::{ServeOptions, Token};

use crate::config::{Config, problems};
use crate::lake_cmd::runtime;

/// Options of `shoplake serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  shoplake serve                                   # ./data: log in data/log, lake in data/lake
  shoplake serve --data /var/lib/shoplake --listen 0.0.0.0:7070
  shoplake replay oct.csv --speed 60               # in another terminal

With no tokens in shoplake.toml, the first start creates an admin token in DATA/admin.token
(mode 0600) and prints it; clients read it from there, or take --token / SHOPLAKE_TOKEN.")]
pub struct ServeArgs {
    /// The data directory: the event log in DATA/log, the lake in DATA/lake (unless
    /// `lake.root` or --lake says otherwise), the admin token in DATA/admin.token.
    #[arg(
        long,
        env = "SHOPLAKE_DATA",
        value_name = "DIR",
        default_value = "data"
    )]
    data: PathBuf,
    /// The address to listen on [default: `server.listen`, else 127.0.0.1:7070].
    #[arg(long, env = "SHOPLAKE_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The lake root, overriding DATA/lake and `lake.root`.
    #[arg(long, env = "SHOPLAKE_LAKE", value_name = "ROOT")]
    lake: Option<String>,
    /// What this process does: `collector`, `delivery`, `detector`, comma-separated
    /// [default: `server.roles`, else all three]. Many processes with any roles can share
    /// one Kafka topic: delivery processes share its partitions through a consumer group.
    #[arg(long, env = "SHOPLAKE_ROLES", value_name = "ROLES", value_parser = parse_roles)]
    roles: Option<shoplake_server::Roles>,
    /// The configuration file [default: shoplake.toml, when present].
    #[arg(long, env = "SHOPLAKE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Runs `shoplake serve` until SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let root = args
        .lake
        .clone()
        .or_else(|| config.lake.root.clone())
        .unwrap_or_else(|| args.data.join("lake").to_string_lossy().into_owned());
    let lake = Lake::open(LakeOptions {
        root,
        storage_options: config.storage_options(),
    })?;
    let server = config
        .server
        .settings()
        .map_err(|e| problems("server", e))?;
    let tokens = tokens(server.tokens, &args.data)?;
    let delivery = config
        .delivery
        .options()
        .map_err(|e| problems("delivery", e))?;
    let log_settings = config.log.settings().map_err(|e| problems("log", e))?;
    let alerts = config
        .alerts
        .settings(&args.data)
        .map_err(|e| problems("alerts", e))?;
    let settings = config
        .detect
        .settings()
        .map_err(|e| problems("detection", e))?;
    let notify = config
        .notify
        .settings()
        .map_err(|e| problems("notification", e))?;
    let detect = config.detect.enabled != Some(false);
    let rt = runtime()?;
    rt.block_on(async move {
        // Before anything listens: a signal from then on stops serve cleanly.
        let stop = crate::signals::shutdown()?;
        let detection = if detect {
            Some(detection(&args.data, &alerts, settings, notify).await?)
        } else {
            None
        };
        let options = ServeOptions {
            listen: args.listen.unwrap_or(server.listen),
            tokens,
            trusted_proxies: server.trusted_proxies,
            limits: server.limits,
            http: server.http,
            delivery,
            detection,
            record_format: log_settings.record_format,
            clock: Arc::new(shoplake_events::SystemClock),
            roles: args.roles.unwrap_or(server.roles),
        };
        // Retention never removes what the lake delivery has not committed.
        let log = log_settings
            .open(&args.data, &[options.delivery.consumer.as_str()])
            .await
            .with_context(|| format!("opening {}", log_settings.describe(&args.data)))?;
        let stopped = async {
            let signal = stop.await;
            tracing::info!("{signal} received");
        };
        shoplake_server::serve(lake, log, options, |_| {}, stopped).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn parse_roles(s: &str) -> std::result::Result<shoplake_server::Roles, String> {
    s.parse()
}

/// Detection's options: the alert store opened, the checkpoint under `data`.
async fn detection(
    data: &std::path::Path,
    alerts: &shoplake_alerts::AlertsSettings,
    settings: shoplake_detect::Settings,
    notify: shoplake_server::notify::NotifySettings,
) -> Result<shoplake_server::DetectionOptions> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let url = &alerts.url;
    let store = shoplake_alerts::SqlStore::open(url)
        .await
        .with_context(|| format!("opening the alert store {url}"))?;
    tracing::info!(
        rules = settings.rules.len(),
        store = %url,
        "detection on"
    );
    Ok(shoplake_server::DetectionOptions {
        settings,
        store: Arc::new(store),
        max_per_partition: 100_000,
        notify,
        retain_resolved: alerts.retain_resolved,
        checkpoint: Some(data.join("detector").join("checkpoint")),
    })
}

/// The configured tokens, or the admin token kept in `DATA/admin.token` (created and
/// printed on the first start).
fn tokens(configured: Vec<Token>, data: &std::path::Path) -> Result<Vec<Token>> {
    if !configured.is_empty() {
        return Ok(configured);
    }
    let (admin, created) = shoplake_server::admin_token(data)?;
    let path = data.join("admin.token");
    if created {
        eprintln!(
            "created the admin token {} (kept in {}; clients read it from there or take \
             --token / SHOPLAKE_TOKEN)",
            admin.token,
            path.display()
        );
    } else {
        tracing::info!("admin token in {}", path.display());
    }
    Ok(vec![admin])
}
