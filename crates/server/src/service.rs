//! `shoplake serve`: the collector, the event log and the delivery of the log into the lake,
//! run together until a shutdown signal, then drained: stop accepting, deliver what the log
//! holds, exit.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use shoplake_events::Validator;
use shoplake_lake::{Lake, Pumped, TableName};
use shoplake_log::{EventLog, Limit};
use tokio::sync::watch;

use crate::auth::{Network, Scope, Token, Tokens};
use crate::collector::{Collector, Limits};
use crate::http::HttpLimits;
use crate::metrics::Metrics;

/// How the log is delivered into the lake (Firehose).
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// The consumer's name (its positions are kept under it, in the lake and the log).
    pub consumer: String,
    /// Deliver at least this often.
    pub interval: Duration,
    /// Deliver early once this many bytes of events have been appended since the last one.
    pub max_bytes: u64,
    /// The most records read from one log partition for one delivery (one Delta commit).
    pub max_per_partition: usize,
    /// Bin-pack `events`' small files this often (`None`: never).
    pub compact_interval: Option<Duration>,
    /// Bring the marts up to date after deliveries, at most this often, and at least ten times
    /// the last refresh's duration apart (`None`: never).
    pub marts_interval: Option<Duration>,
    /// Delete rows of `quarantine` older than this (`None`: keep them), checked as often as
    /// compaction runs (every 10 minutes without it).
    pub quarantine_retention: Option<Duration>,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            consumer: "lake".to_owned(),
            interval: Duration::from_secs(10),
            max_bytes: 64 << 20,
            max_per_partition: 250_000,
            compact_interval: Some(Duration::from_secs(600)),
            marts_interval: Some(Duration::from_secs(60)),
            quarantine_retention: None,
        }
    }
}

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
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
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
            Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
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
            .with_context(|| format!("creating {}", tmp.display()))?;
        writeln!(f, "{secret}").with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("creating {}", path.display()))?;
    Ok((make(secret), true))
}

/// Random bytes from the operating system.
fn getrandom(out: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(out))
        .context("reading /dev/urandom for a new token")
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
    let mut collector = Collector::new(
        log.clone(),
        Validator::default(),
        Tokens::new(options.tokens.clone()),
        options.trusted_proxies.clone(),
        options.limits.clone(),
        metrics.clone(),
    );
    collector = collector
        .with_lake(lake.clone())
        .context("preparing the query engines")?
        .with_record_format(options.record_format);
    if let Some(d) = &options.detection {
        collector = collector.with_store(d.store.clone());
    }
    let collector = Arc::new(collector);
    // Delivery first: it catches up with what an earlier run left in the log.
    let mut delivery = lake
        .delivery(&options.delivery.consumer)
        .await
        .context("opening the lake for delivery")?;
    let positions = delivery.positions(log.partitions()).await?;
    collector.set_backlog(backlog(log.as_ref(), &positions).await?);
    if collector.backlog() > 0 {
        tracing::info!(
            "{} event(s) in the log not yet in the lake: delivering them",
            collector.backlog()
        );
    }

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!("collector listening on http://{addr}");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_rx_detect = stop_rx.clone();
    // Delivery (Parquet encoding, deduplication, compaction, marts) on a runtime of its
    // own: its CPU work never delays the async workers that answer requests.
    let lake_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("shoplake-lake")
        .enable_all()
        .build()
        .context("starting the delivery runtime")?;
    let deliver_task = lake_runtime.spawn(deliver_loop(
        lake.clone(),
        log.clone(),
        collector.clone(),
        delivery,
        options.delivery.clone(),
        stop_rx,
    ));
    let detect_task = options.detection.clone().map(|d| {
        tokio::spawn(crate::detection::detect_loop(
            lake.clone(),
            log.clone(),
            d,
            metrics.clone(),
            collector.live().clone(),
            stop_rx_detect.clone(),
        ))
    });
    let prune_task = options.detection.as_ref().and_then(|d| {
        let age = d.retain_resolved?;
        Some(tokio::spawn(prune_incidents(
            d.store.clone(),
            age,
            stop_rx_detect.clone(),
        )))
    });
    let rate_task = tokio::spawn(crate::lake_api::rate_loop(
        collector.clone(),
        stop_rx_detect.clone(),
    ));
    let drain = collector.clone();
    let app = collector.clone().router();
    ready(addr);
    crate::http::run(
        listener,
        app,
        options.http.clone(),
        metrics.clone(),
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests; finishing those in flight");
            drain.drain();
        },
    )
    .await;
    tracing::info!("collector stopped; delivering what the log holds");
    let _ = stop_tx.send(true);
    let _ = rate_task.await;
    if let Some(task) = prune_task {
        let _ = task.await;
    }
    let delivered = deliver_task.await.context("the delivery task failed");
    lake_runtime.shutdown_background();
    delivered??;
    if let Some(task) = detect_task {
        task.await.context("the detector failed")??;
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Deletes resolved incidents `age` after their resolution, every ten minutes until `stop`.
async fn prune_incidents(
    store: Arc<dyn shoplake_alerts::AlertStore>,
    age: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let age = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
    loop {
        let cutoff = chrono::Utc::now().timestamp_micros().saturating_sub(age);
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

/// Records in the log past the delivered positions.
async fn backlog(
    log: &dyn EventLog,
    positions: &std::collections::BTreeMap<u32, u64>,
) -> Result<u64> {
    let mut total = 0;
    for p in 0..log.partitions() {
        let end = log.end(p).await?;
        let from = positions.get(&p).copied().unwrap_or(log.start(p).await?);
        total += end.saturating_sub(from);
    }
    Ok(total)
}

/// How often retention is applied when nothing else sets the pace.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// A marts refresh recomputes every zone from `events`: on a large lake it takes a while, so
/// refreshes are spaced at least this many times their own duration apart (the marts then take
/// at most about a tenth of the time); meanwhile reports compute from `events`, which is
/// slower but never wrong.
const MARTS_SHARE: u32 = 10;

/// Delivers every interval (or early, once enough has been appended) until told to stop,
/// then delivers to the end of the log once more.
async fn deliver_loop(
    lake: Lake,
    log: Arc<dyn EventLog>,
    collector: Arc<Collector>,
    mut delivery: shoplake_lake::Delivery,
    options: DeliveryOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let validator = Validator::default();
    let metrics = collector.metrics().clone();
    let mut last_compact = Instant::now();
    // The first pass runs at once.
    let mut last_prune = Instant::now() - PRUNE_EVERY;
    // When the last refresh started, and how long the one before it took.
    let mut last_marts: Option<(Instant, Duration)> = None;
    let marts_took = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let mut marts_due = false;
    let mut marts_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut failures = 0u32;
    loop {
        let stopping = *stop.borrow();
        if !stopping {
            let deadline = tokio::time::Instant::now() + options.interval;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    () = collector.appended() => {
                        if collector.pending_bytes() >= options.max_bytes {
                            break;
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        }
        let stopping = *stop.borrow();
        match deliver_all(
            &mut delivery,
            log.as_ref(),
            &validator,
            &collector,
            &options,
            stopping,
        )
        .await
        {
            Ok(n) => {
                failures = 0;
                marts_due |= n > 0;
            }
            Err(e) => {
                failures += 1;
                metrics.delivery_failures.inc();
                tracing::error!("delivery failed (attempt {failures}): {e:#}");
                if stopping {
                    if failures >= 3 {
                        return Err(e.context(
                            "the last delivery before shutdown failed; the log keeps the events \
                             and the next start delivers them",
                        ));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        }
        if stopping {
            if let Some(task) = marts_task.take() {
                let _ = task.await;
            }
            return Ok(());
        }
        if let Some(age) = options.quarantine_retention
            && last_prune.elapsed() >= options.compact_interval.unwrap_or(PRUNE_EVERY)
        {
            last_prune = Instant::now();
            let age = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
            let cutoff = chrono::Utc::now().timestamp_micros().saturating_sub(age);
            match lake.prune_quarantine(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "pruned quarantine past its retention"),
                Err(e) => tracing::warn!(error = %e, "pruning quarantine"),
            }
        }
        if let Some(every) = options.compact_interval
            && last_compact.elapsed() >= every
        {
            last_compact = Instant::now();
            match lake.compact(TableName::Events).await {
                Ok(s) if s.version.is_some() => tracing::info!(
                    "compacted events: {} small files into {} in {} partition(s)",
                    s.files_removed,
                    s.files_added,
                    s.partitions
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("compacting events: {e}"),
            }
        }
        if let Some(every) = options.marts_interval
            && marts_due
            && last_marts.is_none_or(|(at, took)| at.elapsed() >= every.max(took * MARTS_SHARE))
            && marts_task.as_ref().is_none_or(|t| t.is_finished())
        {
            marts_due = false;
            let lake = lake.clone();
            let resources = collector.engines().cloned();
            let took = marts_took.clone();
            let started = Instant::now();
            last_marts = Some((
                started,
                *marts_took.lock().unwrap_or_else(|e| e.into_inner()),
            ));
            marts_task = Some(tokio::spawn(async move {
                // Within the server's one query memory pool when it serves the lake API.
                let refreshed = match &resources {
                    Some(r) => shoplake_query::marts::refresh_shared(&lake, &[], r).await,
                    None => shoplake_query::marts::refresh(&lake, &[]).await,
                };
                match refreshed {
                    Ok(_) => {
                        let secs = started.elapsed();
                        *took.lock().unwrap_or_else(|e| e.into_inner()) = secs;
                        tracing::info!("marts brought up to date in {:.1} s", secs.as_secs_f64());
                    }
                    Err(e) => tracing::warn!("refreshing the marts: {e}"),
                }
            }));
        }
    }
}

/// The bytes of records one delivery reads from the log at most, spread over the partitions
/// (records with long user agents are ten times the usual size: a count alone does not bound
/// them). Decoded, written as Arrow and as Parquet, a delivery holds a few times this.
const DELIVERY_BYTES: usize = 64 << 20;

/// What one delivery reads from each partition at most.
fn per_partition(log: &dyn EventLog, options: &DeliveryOptions) -> Limit {
    let partitions = usize::try_from(log.partitions().max(1)).unwrap_or(1);
    Limit::new(options.max_per_partition, DELIVERY_BYTES / partitions)
}

/// Delivers what the log holds (to its very end when `drain`); returns the events written.
async fn deliver_all(
    delivery: &mut shoplake_lake::Delivery,
    log: &dyn EventLog,
    validator: &Validator,
    collector: &Collector,
    options: &DeliveryOptions,
    drain: bool,
) -> Result<usize> {
    let metrics = collector.metrics();
    let mut written = 0;
    loop {
        collector.take_pending_bytes();
        let started = Instant::now();
        let Pumped {
            records,
            rejected,
            quarantined,
            delivered,
            positions,
        } = delivery
            .pump(log, validator, per_partition(log, options))
            .await?;
        if records == 0 {
            return Ok(written);
        }
        let secs = started.elapsed().as_secs_f64();
        metrics.delivery_seconds.observe(secs);
        metrics.deliveries.inc();
        metrics.delivered.inc_by(delivered.written as u64);
        metrics.duplicates.inc_by(delivered.duplicates as u64);
        written += delivered.written;
        collector.set_backlog(backlog(log, &positions).await?);
        tracing::info!(
            "delivered {} event(s) ({} duplicate(s) dropped, {} row(s) quarantined{}) in {secs:.2} s{}",
            delivered.written,
            delivered.duplicates,
            quarantined,
            if rejected > 0 {
                format!(", {rejected} unreadable record(s) quarantined")
            } else {
                String::new()
            },
            delivered
                .version
                .map(|v| format!(": events version {v}"))
                .unwrap_or_default()
        );
        // Under load there is always more: return to let compaction and marts run, unless
        // draining for shutdown or a full batch is already waiting.
        if !drain && collector.backlog() < options.max_per_partition as u64 {
            return Ok(written);
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
