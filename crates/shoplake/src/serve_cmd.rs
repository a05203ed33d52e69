//! `shoplake serve`: the collector, the event log and delivery into the lake, from
//! `shoplake.toml` or the embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use shoplake_lake::{Lake, LakeOptions};
use shoplake_log::{EmbeddedLog, EmbeddedOptions, EventLog, KafkaLog, KafkaOptions};
use shoplake_server::{DeliveryOptions, Network, ServeOptions};

use crate::config::{Config, duration_setting};
use crate::lake_cmd::runtime;

/// The address `serve` listens on and clients send to by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

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
    let listen = match args.listen {
        Some(a) => a,
        None => config
            .server
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_LISTEN)
            .parse()
            .context("server.listen")?,
    };
    let mut tokens = config.server.tokens.clone();
    if tokens.is_empty() {
        let (admin, created) = shoplake_server::admin_token(&args.data)?;
        let path = args.data.join("admin.token");
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
        tokens.push(admin);
    }
    let trusted_proxies = config
        .server
        .trusted_proxies
        .iter()
        .map(|p| p.parse::<Network>().map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    let (limits, http) = config
        .server
        .limits()
        .map_err(|errors| anyhow::anyhow!("the server settings:\n  {}", errors.join("\n  ")))?;
    let d = &config.delivery;
    let delivery = DeliveryOptions {
        interval: duration_setting("delivery.interval", d.interval.as_deref(), "10s")?
            .context("delivery.interval cannot be off")?,
        max_bytes: d.max_bytes.unwrap_or(64 << 20),
        compact_interval: duration_setting(
            "delivery.compact_interval",
            d.compact_interval.as_deref(),
            "10m",
        )?,
        marts_interval: duration_setting(
            "delivery.marts_interval",
            d.marts_interval.as_deref(),
            "60s",
        )?,
        quarantine_retention: duration_setting(
            "delivery.quarantine_retention",
            d.quarantine_retention.as_deref(),
            "off",
        )?,
        ..DeliveryOptions::default()
    };
    let settings = config
        .detect
        .settings()
        .map_err(|errors| anyhow::anyhow!("the detection settings:\n  {}", errors.join("\n  ")))?;
    let notify = config.notify.settings().map_err(|errors| {
        anyhow::anyhow!("the notification settings:\n  {}", errors.join("\n  "))
    })?;
    let detect = config.detect.enabled != Some(false);
    let record_format = config.log.record_format()?;
    let store_url = config.alerts.url(&args.data);
    let retain_resolved = duration_setting(
        "alerts.retain_resolved",
        config.alerts.retain_resolved.as_deref(),
        "off",
    )?;
    let rt = runtime()?;
    rt.block_on(async move {
        // Before anything listens: a signal from then on stops serve cleanly.
        let stop = crate::signals::shutdown()?;
        let detection = if detect {
            std::fs::create_dir_all(&args.data)
                .with_context(|| format!("creating {}", args.data.display()))?;
            let store = shoplake_alerts::SqlStore::open(&store_url)
                .await
                .with_context(|| format!("opening the alert store {store_url}"))?;
            tracing::info!(
                "detection on: {} rules, incidents in {store_url}",
                settings.rules.len()
            );
            Some(shoplake_server::DetectionOptions {
                settings,
                store: Arc::new(store),
                max_per_partition: 100_000,
                notify,
                retain_resolved,
                checkpoint: Some(args.data.join("detector").join("checkpoint")),
            })
        } else {
            None
        };
        let options = ServeOptions {
            listen,
            tokens,
            trusted_proxies,
            limits,
            http,
            delivery,
            detection,
            record_format,
        };
        let log = open_log(&config, &args.data).await?;
        let stopped = async {
            let signal = stop.await;
            tracing::info!("{signal} received");
        };
        shoplake_server::serve(lake, log, options, |_| {}, stopped).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the configured event log.
async fn open_log(config: &Config, data: &std::path::Path) -> Result<Arc<dyn EventLog>> {
    match config.log.backend.as_deref() {
        None | Some("embedded") => {
            let mut options = EmbeddedOptions::new(data.join("log"));
            if let Some(p) = config.log.partitions {
                options.partitions = p;
            }
            if let Some(b) = config.log.retention_bytes {
                options.retention_bytes = Some(b);
            }
            // Retention never removes what the lake delivery has not committed.
            options.protected = vec![DeliveryOptions::default().consumer];
            options.retention_age =
                duration_setting("log.retention", config.log.retention.as_deref(), "7d")?;
            let log = EmbeddedLog::open(options).with_context(|| {
                format!("opening the event log in {}", data.join("log").display())
            })?;
            Ok(Arc::new(log))
        }
        Some("kafka") => {
            let k = &config.log.kafka;
            let Some(brokers) = k.brokers.clone() else {
                bail!("log.backend = \"kafka\" needs log.kafka.brokers");
            };
            let topic = k
                .topic
                .clone()
                .unwrap_or_else(|| "shoplake-events".to_owned());
            let mut options = KafkaOptions::new(brokers.clone(), topic.clone());
            if let Some(p) = config.log.partitions {
                options.partitions = p;
            }
            options.producer_properties = k.producer.clone().into_iter().collect();
            options.consumer_properties = k.consumer.clone().into_iter().collect();
            let log = KafkaLog::open(options)
                .await
                .with_context(|| format!("opening the Kafka topic {topic} on {brokers}"))?;
            tracing::info!(
                "event log: Kafka topic {topic} on {brokers}, {} partitions",
                log.partitions()
            );
            Ok(Arc::new(log))
        }
        Some(other) => bail!("log.backend {other:?}: expected embedded or kafka"),
    }
}
