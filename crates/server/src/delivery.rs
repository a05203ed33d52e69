//! The delivery loop (Firehose): every interval, or early once enough has been appended, the
//! log is delivered into the lake (exactly once per record: positions commit with the data);
//! between deliveries it compacts `events`, prunes `quarantine` past its retention and
//! brings the marts up to date. At shutdown it delivers to the end of the log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoplake_events::Validator;
use shoplake_events::time::Clock;
use shoplake_lake::{Delivery, Lake, Pumped, TableName};
use shoplake_log::{EventLog, Limit, Ownership};
use tokio::sync::watch;

use crate::backlog::Backlog;
use crate::error::Error;
use crate::metrics::{Metrics, PartitionLabel};

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
    /// Bring the marts up to date after deliveries that wrote something, at most this often
    /// (zero, the default: after every such delivery; `None`: never). A refresh folds in only
    /// what changed, one at a time in the background.
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
            marts_interval: Some(Duration::ZERO),
            quarantine_retention: None,
        }
    }
}

/// What the delivery loop works with.
pub(crate) struct Deliverer {
    pub(crate) lake: Lake,
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) backlog: Arc<Backlog>,
    pub(crate) metrics: Arc<Metrics>,
    /// The server's query resources: a marts refresh draws on its one memory pool.
    pub(crate) engines: Option<shoplake_query::EngineResources>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: DeliveryOptions,
    /// The partitions this process delivers (all of them on the embedded log; on Kafka
    /// those the delivery consumer group gives it).
    pub(crate) ownership: Ownership,
}

/// How often retention is applied when nothing else sets the pace.
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The bytes of records one delivery reads from the log at most, spread over the partitions
/// (records with long user agents are ten times the usual size: a count alone does not bound
/// them). Decoded, written as Arrow and as Parquet, a delivery holds a few times this.
const DELIVERY_BYTES: usize = 64 << 20;

/// Attempts at the last delivery before shutdown gives up (the log keeps the events).
const FINAL_ATTEMPTS: u32 = 3;

/// How long a delivery stopping before its consumer group gave it its partitions waits for
/// them, so that what this process collected does not wait in the log for the next start:
/// joining takes a Kafka group seconds (its initial rebalance delay, or a departed member's
/// session timeout, 6 s).
const ASSIGNMENT_WAIT: Duration = Duration::from_secs(15);

impl Deliverer {
    /// Delivers until told to stop, then to the end of the log once more.
    pub(crate) async fn run(
        self,
        mut delivery: Delivery,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let validator = Validator::default();
        let mut upkeep = Upkeep::new();
        let mut marts = Marts::default();
        let mut failures = 0u32;
        let mut ownership = self.ownership.clone();
        let mut rebalances = 0;
        loop {
            if !*stop.borrow() {
                self.wait_for_work(&mut stop, &mut ownership).await;
            }
            let owned = ownership.now();
            if owned.rebalances > rebalances {
                self.metrics
                    .delivery_rebalances
                    .inc_by(owned.rebalances - rebalances);
                rebalances = owned.rebalances;
                tracing::info!(partitions = ?owned.partitions, "delivering these log partitions");
            }
            self.metrics
                .delivery_partitions
                .set(i64::try_from(owned.partitions.len()).unwrap_or(i64::MAX));
            let stopping = *stop.borrow();
            if stopping && !ownership.assigned() {
                tracing::info!(
                    "stopping before the consumer group gave this process its partitions: waiting up to {} s for them",
                    ASSIGNMENT_WAIT.as_secs()
                );
                if !ownership.wait_assigned(ASSIGNMENT_WAIT).await {
                    tracing::warn!(
                        backlog = self.backlog.events(),
                        "the consumer group gave this process no partitions: what the log holds waits there for the group's next delivery"
                    );
                }
            }
            match self.deliver_all(&mut delivery, &validator, stopping).await {
                Ok(n) => {
                    failures = 0;
                    marts.due |= n > 0;
                }
                Err(e) => {
                    failures += 1;
                    self.metrics.delivery_failures.inc();
                    tracing::error!(attempt = failures, error = %e, "delivery failed");
                    if stopping {
                        if failures >= FINAL_ATTEMPTS {
                            return Err(Error::FinalDelivery(Box::new(e)));
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            }
            if stopping {
                marts.finish().await;
                return Ok(());
            }
            upkeep.run(&self).await;
            marts.maybe_refresh(&self);
        }
    }

    /// Waits for the interval, or until enough bytes have been appended, or the partitions
    /// owned change, or `stop`.
    async fn wait_for_work(&self, stop: &mut watch::Receiver<bool>, ownership: &mut Ownership) {
        let deadline = tokio::time::Instant::now() + self.options.interval;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                () = ownership.changed() => return,
                () = self.backlog.wait_appended() => {
                    if self.backlog.pending_bytes() >= self.options.max_bytes {
                        return;
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }

    /// What one delivery reads from each partition at most.
    fn per_partition(&self) -> Limit {
        let partitions = usize::try_from(self.log.partitions().max(1)).unwrap_or(1);
        Limit::new(self.options.max_per_partition, DELIVERY_BYTES / partitions)
    }

    /// Delivers what the log holds (to its very end when `drain`); returns the events
    /// written.
    async fn deliver_all(
        &self,
        delivery: &mut Delivery,
        validator: &Validator,
        drain: bool,
    ) -> Result<usize, Error> {
        let mut written = 0;
        loop {
            self.backlog.take_pending_bytes();
            let started = Instant::now();
            let owned = self.ownership.partitions();
            let pumped = delivery
                .pump_owned(self.log.as_ref(), validator, self.per_partition(), &owned)
                .await?;
            let lags = lags(self.log.as_ref(), &pumped.positions).await?;
            self.backlog.set(lags.values().sum());
            for (p, lag) in &lags {
                let label = PartitionLabel { partition: *p };
                if owned.contains(p) {
                    let lag = i64::try_from(*lag).unwrap_or(i64::MAX);
                    self.metrics.delivery_lag.get_or_create(&label).set(lag);
                } else {
                    self.metrics.delivery_lag.remove(&label);
                }
            }
            if pumped.raced {
                // Another process delivered a partition this pass read: the next pass reads
                // from where it got to.
                self.metrics.delivery_races.inc();
                return Ok(written);
            }
            if pumped.records == 0 {
                return Ok(written);
            }
            let secs = started.elapsed().as_secs_f64();
            self.count(&pumped, secs);
            written += pumped.delivered.written;
            // Under load there is always more: return to let compaction and marts run,
            // unless draining for shutdown or a full batch is already waiting.
            if !drain && self.backlog.events() < self.options.max_per_partition as u64 {
                return Ok(written);
            }
        }
    }

    /// Counts and logs one delivery.
    fn count(&self, pumped: &Pumped, secs: f64) {
        let Pumped {
            rejected,
            quarantined,
            delivered,
            ..
        } = pumped;
        let m = &self.metrics;
        m.delivery_seconds.observe(secs);
        m.deliveries.inc();
        m.delivered.inc_by(delivered.written as u64);
        m.duplicates.inc_by(delivered.duplicates as u64);
        tracing::info!(
            events = delivered.written,
            duplicates = delivered.duplicates,
            quarantined,
            unreadable = rejected,
            version = delivered.version,
            seconds = secs,
            "delivered"
        );
    }
}

/// Records in the log past the delivered positions.
pub(crate) async fn backlog(
    log: &dyn EventLog,
    positions: &BTreeMap<u32, u64>,
) -> Result<u64, shoplake_log::Error> {
    Ok(lags(log, positions).await?.values().sum())
}

/// Records in each partition of the log past its delivered position.
async fn lags(
    log: &dyn EventLog,
    positions: &BTreeMap<u32, u64>,
) -> Result<BTreeMap<u32, u64>, shoplake_log::Error> {
    let mut lags = BTreeMap::new();
    for p in 0..log.partitions() {
        let end = log.end(p).await?;
        let from = match positions.get(&p) {
            Some(&at) => at,
            None => log.start(p).await?,
        };
        lags.insert(p, end.saturating_sub(from));
    }
    Ok(lags)
}

/// For a process that collects but does not deliver: the backlog the collector's
/// back-pressure goes by, recounted from the lake's delivered positions every `every` until
/// `stop`.
pub(crate) async fn watch_backlog(
    mut delivery: Delivery,
    log: Arc<dyn EventLog>,
    backlog: Arc<Backlog>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let counted = async {
            let positions = delivery.positions(log.partitions()).await?;
            Ok::<_, Error>(self::backlog(log.as_ref(), &positions).await?)
        };
        match counted.await {
            Ok(n) => backlog.set(n),
            Err(e) => tracing::warn!(error = %e, "counting the log's undelivered events"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Compaction of `events` and retention of `quarantine`, each at its own pace.
struct Upkeep {
    last_compact: Instant,
    last_prune: Option<Instant>,
}

impl Upkeep {
    fn new() -> Upkeep {
        Upkeep {
            last_compact: Instant::now(),
            // The first prune runs at once.
            last_prune: None,
        }
    }

    async fn run(&mut self, d: &Deliverer) {
        let o = &d.options;
        if let Some(age) = o.quarantine_retention
            && self
                .last_prune
                .is_none_or(|at| at.elapsed() >= o.compact_interval.unwrap_or(PRUNE_EVERY))
        {
            self.last_prune = Some(Instant::now());
            let age = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
            let cutoff = d.clock.now_micros().saturating_sub(age);
            match d.lake.prune_quarantine(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "pruned quarantine past its retention"),
                Err(e) => tracing::warn!(error = %e, "pruning quarantine"),
            }
        }
        if let Some(every) = o.compact_interval
            && self.last_compact.elapsed() >= every
        {
            self.last_compact = Instant::now();
            match d.lake.compact(TableName::Events).await {
                Ok(s) if s.version.is_some() => tracing::info!(
                    files_removed = s.files_removed,
                    files_added = s.files_added,
                    partitions = s.partitions,
                    "compacted events"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "compacting events"),
            }
        }
    }
}

/// The marts refreshes: one at a time, in the background, after deliveries that wrote
/// something, at most every `marts_interval`. A refresh folds in only what the deliveries
/// since the last one changed, so it costs about what they wrote.
#[derive(Default)]
struct Marts {
    /// Something was delivered since the last refresh started.
    due: bool,
    /// When the last refresh started, and how long the one before it took.
    last: Option<(Instant, Duration)>,
    took: Arc<Mutex<Duration>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Marts {
    fn maybe_refresh(&mut self, d: &Deliverer) {
        let Some(every) = d.options.marts_interval else {
            return;
        };
        let spaced = self.last.is_none_or(|(at, _)| at.elapsed() >= every);
        let idle = self.task.as_ref().is_none_or(|t| t.is_finished());
        if !(self.due && spaced && idle) {
            return;
        }
        self.due = false;
        let started = Instant::now();
        let previous = *self.took.lock().unwrap_or_else(|e| e.into_inner());
        self.last = Some((started, previous));
        let (lake, resources, took) = (d.lake.clone(), d.engines.clone(), self.took.clone());
        self.task = Some(tokio::spawn(async move {
            // Within the server's one query memory pool when it serves the lake API.
            let refreshed = match &resources {
                Some(r) => shoplake_query::marts::refresh_shared(&lake, &[], r).await,
                None => shoplake_query::marts::refresh(&lake, &[]).await,
            };
            match refreshed {
                Ok(_) => {
                    let secs = started.elapsed();
                    *took.lock().unwrap_or_else(|e| e.into_inner()) = secs;
                    tracing::info!(seconds = secs.as_secs_f64(), "marts brought up to date");
                }
                Err(e) => tracing::warn!(error = %e, "refreshing the marts"),
            }
        }));
    }

    /// Waits for a refresh in flight.
    async fn finish(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
