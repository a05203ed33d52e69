//! `shoplake serve`: the collector, the event log and the delivery of the log into the lake,
//! run together until a shutdown signal, then drained: stop accepting, deliver what the log
//! holds, exit.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoplake_events::Validator;
use shoplake_events::time::{Clock, SystemClock};
use shoplake_lake::Lake;
use shoplake_log::EventLog;
use tokio::sync::watch;

use crate::auth::{Network, Scope, Token, Tokens};
use crate::collector::{Collector, Limits};
use crate::delivery::{Deliverer, DeliveryOptions, PRUNE_EVERY, backlog};
use crate::error::{Context, Error, Result};
use crate::http::HttpLimits;
use crate::metrics::Metrics;

/// Everything `serve` needs besides the lake and the log.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The accepted tokens.
    pub tokens: Vec<Token>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Network>,
    /// The collector's limits.
    pub limits: Limits,
    /// The HTTP server's connection limits.
    pub http: HttpLimits,
    /// Delivery into the lake.
    pub delivery: DeliveryOptions,
    /// Detection on the stream (`None`: off).
    pub detection: Option<crate::detection::DetectionOptions>,
    /// How the collector writes events into the log (consumers read either format).
    pub record_format: shoplake_events::record::RecordFormat,
    /// Where "now" comes from (the system's clock but in tests).
    pub clock: Arc<dyn Clock>,
    /// What this process does (all of it by default). Without `collector`,
    /// `POST /v1/events` is refused (the rest of the API answers); without `delivery`, the
    /// backlog is counted from the lake's positions; without `detector`, `detection` only
    /// serves the alert store's incidents.
    pub roles: crate::roles::Roles,
}

impl ServeOptions {
    /// The defaults, listening on `listen`, with these tokens.
    pub fn new(listen: SocketAddr, tokens: Vec<Token>) -> ServeOptions {
        ServeOptions {
            listen,
            tokens,
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            http: HttpLimits::default(),
            delivery: DeliveryOptions::default(),
            detection: None,
            record_format: Default::default(),
            clock: Arc::new(SystemClock),
            roles: crate::roles::Roles::ALL,
        }
    }
}

/// The admin token kept in `DIR/admin.token` (created, mode 0600, on first use). Returns the
/// token and whether it was just created.
pub fn admin_token(data_dir: &Path) -> Result<(Token, bool)> {
    let path = data_dir.join("admin.token");
    let make = |secret: String| Token {
        name: "admin".to_owned(),
        token: secret,
        scopes: vec![Scope::Admin],
        forward: true,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok((make(s.trim().to_owned()), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
    }
    std::fs::create_dir_all(data_dir)
        .map_err(Error::io(format!("creating {}", data_dir.display())))?;
    let mut bytes = [0u8; 24];
    getrandom(&mut bytes)?;
    let secret: String = std::iter::once("sl_".to_owned())
        .chain(bytes.iter().map(|b| format!("{b:02x}")))
        .collect();
    let tmp = data_dir.join("admin.token.tmp");
    {
        use std::io::Write;
        // A leftover from a run killed mid-way is removed, and the file is created anew
        // (never opened through a link someone planted in its place).
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", tmp.display()))(e)),
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options
            .open(&tmp)
            .map_err(Error::io(format!("creating {}", tmp.display())))?;
        writeln!(f, "{secret}").map_err(Error::io(format!("writing {}", tmp.display())))?;
        f.sync_all()
            .map_err(Error::io(format!("writing {}", tmp.display())))?;
    }
    std::fs::rename(&tmp, &path).map_err(Error::io(format!("creating {}", path.display())))?;
    Ok((make(secret), true))
}

/// Random bytes from the operating system.
fn getrandom(out: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(out))
        .map_err(Error::io("reading /dev/urandom for a new token"))
}

/// Runs the collector and delivery until `shutdown` resolves, then drains: new requests get
/// 503, in-flight ones finish, the log is delivered to the end, and it returns. `ready` is
/// told the address listened on once requests can be sent.
pub async fn serve(
    lake: Lake,
    log: Arc<dyn EventLog>,
    options: ServeOptions,
    ready: impl FnOnce(SocketAddr) + Send,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let roles = options.roles;
    // Delivery's share of the log: every partition on the embedded log, those its consumer
    // group gives this process on Kafka.
    let ownership = if roles.delivery {
        let group = &options.delivery.consumer;
        let ownership = log.join(group).await?;
        tracing::info!(roles = %roles, group, partitions = ?ownership.partitions(), "roles");
        Some(ownership)
    } else {
        tracing::info!(roles = %roles, "roles");
        None
    };
    // The detector's group: each member detects on its partitions, the one owning partition 0
    // across users too.
    let detector = match &options.detection {
        Some(_) if roles.detector => Some(log.join(crate::detection::CONSUMER).await?),
        _ => None,
    };
    let process = crate::roles::Process {
        roles,
        delivery: ownership
            .clone()
            .map(|o| (options.delivery.consumer.clone(), o)),
        detector: detector
            .clone()
            .map(|o| (crate::detection::CONSUMER.to_owned(), o)),
    };
    let collector = Arc::new(collector(&lake, &log, &options, &metrics)?.with_process(process));
    // Delivery first: it catches up with what an earlier run left in the log.
    let mut delivery = lake
        .delivery(&options.delivery.consumer)
        .await
        .context("opening the lake for delivery")?;
    let positions = delivery.positions(log.partitions()).await?;
    let backlog_now = backlog(log.as_ref(), &positions).await?;
    collector.backlog().set(backlog_now);
    if backlog_now > 0 {
        tracing::info!(
            events = backlog_now,
            "events in the log not yet in the lake: delivering them"
        );
    }

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(Error::io(format!("listening on {}", options.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(Error::io("reading the address listened on"))?;
    tracing::info!("collector listening on http://{addr}");

    let (stop_tx, stop_rx) = watch::channel(false);
    let (log_for_backlog, backlog_for_watch, stop_for_backlog) =
        (log.clone(), collector.backlog().clone(), stop_rx.clone());
    // Delivery (Parquet encoding, deduplication, compaction, marts) on a runtime of its
    // own: its CPU work never delays the async workers that answer requests.
    let lake_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("shoplake-lake")
        .enable_all()
        .build()
        .map_err(Error::io("starting the delivery runtime"))?;
    let deliver_task = match ownership {
        Some(ownership) => {
            let deliverer = Deliverer {
                lake: lake.clone(),
                log: log.clone(),
                backlog: collector.backlog().clone(),
                metrics: metrics.clone(),
                engines: collector.engines().cloned(),
                clock: options.clock.clone(),
                options: options.delivery.clone(),
                ownership,
            };
            lake_runtime.spawn(deliverer.run(delivery, stop_rx.clone()))
        }
        None => lake_runtime.spawn(async move {
            crate::delivery::watch_backlog(
                delivery,
                log_for_backlog,
                backlog_for_watch,
                BACKLOG_EVERY,
                stop_for_backlog,
            )
            .await;
            Ok(())
        }),
    };
    let background = Background::start(&lake, &log, &options, &collector, detector, &stop_rx);
    let drain = collector.clone();
    let app = collector.clone().router();
    ready(addr);
    crate::http::run(listener, app, options.http.clone(), metrics, async move {
        shutdown.await;
        tracing::info!("shutting down: no new requests; finishing those in flight");
        drain.drain();
    })
    .await;
    tracing::info!("collector stopped; delivering what the log holds");
    let _ = stop_tx.send(true);
    let delivered = deliver_task.await;
    lake_runtime.shutdown_background();
    delivered.map_err(|source| Error::Task {
        what: "delivery",
        source,
    })??;
    background.finish().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The HTTP app's state for these options.
fn collector(
    lake: &Lake,
    log: &Arc<dyn EventLog>,
    options: &ServeOptions,
    metrics: &Arc<Metrics>,
) -> Result<Collector> {
    let mut collector = Collector::new(
        log.clone(),
        Validator::default(),
        Tokens::new(options.tokens.clone()),
        options.trusted_proxies.clone(),
        options.limits.clone(),
        metrics.clone(),
    )
    .with_clock(options.clock.clone())
    .with_lake(lake.clone())
    .context("preparing the query engines")?
    .with_record_format(options.record_format);
    if let Some(d) = &options.detection {
        collector = collector.with_store(d.store.clone());
    }
    Ok(collector)
}

/// The tasks that run beside the collector and delivery: the detector, the pruning of
/// resolved incidents and the live feed's `rate` messages.
struct Background {
    detect: Option<tokio::task::JoinHandle<Result<()>>>,
    prune: Option<tokio::task::JoinHandle<()>>,
    rate: tokio::task::JoinHandle<()>,
}

impl Background {
    fn start(
        lake: &Lake,
        log: &Arc<dyn EventLog>,
        options: &ServeOptions,
        collector: &Collector,
        detector: Option<shoplake_log::Ownership>,
        stop: &watch::Receiver<bool>,
    ) -> Background {
        let metrics = collector.metrics();
        let detection = options.detection.clone().filter(|_| options.roles.detector);
        let detect = detection.zip(detector).map(|(d, ownership)| {
            tokio::spawn(crate::detector::detect_loop(
                lake.clone(),
                (log.clone(), ownership),
                d,
                metrics.clone(),
                collector.live().clone(),
                options.clock.clone(),
                stop.clone(),
            ))
        });
        let prune = options.detection.as_ref().and_then(|d| {
            let age = d.retain_resolved?;
            Some(tokio::spawn(prune_incidents(
                d.store.clone(),
                age,
                options.clock.clone(),
                stop.clone(),
            )))
        });
        let rate = tokio::spawn(crate::live::rate_loop(
            collector.live().clone(),
            metrics.clone(),
            collector.backlog().clone(),
            options.clock.clone(),
            stop.clone(),
        ));
        Background {
            detect,
            prune,
            rate,
        }
    }

    /// Waits for them after `stop` (the detector reads the log to its end first).
    async fn finish(self) -> Result<()> {
        let _ = self.rate.await;
        if let Some(task) = self.prune {
            let _ = task.await;
        }
        if let Some(task) = self.detect {
            task.await.map_err(|source| Error::Task {
                what: "detector",
                source,
            })??;
        }
        Ok(())
    }
}

/// How often a process without the delivery role recounts the backlog.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

/// Deletes resolved incidents `age` after their resolution, every ten minutes until `stop`.
async fn prune_incidents(
    store: Arc<dyn shoplake_alerts::AlertStore>,
    age: Duration,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    let age = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
    loop {
        let cutoff = clock.now_micros().saturating_sub(age);
        match store.prune_resolved(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                incidents = n,
                "pruned resolved incidents past their retention"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning resolved incidents"),
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_admin_token_is_never_written_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep me\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("admin.token.tmp")).unwrap();
        let (token, created) = admin_token(dir.path()).unwrap();
        assert!(created);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
        let kept = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
        assert_eq!(kept.trim(), token.token);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
