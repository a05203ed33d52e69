//! The HTTP app's state, shared by every handler: the log it appends to, the tokens, the
//! limits and the budgets that enforce them (decoding slots, room for bodies, query turns,
//! stream subscribers), the backlog, and the lake, engines and alert store it serves.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use shoplake_events::Validator;
use shoplake_events::record::RecordFormat;
use shoplake_events::time::{Clock, SystemClock};
use shoplake_log::EventLog;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{Network, Tokens};
use crate::backlog::Backlog;
use crate::error::ApiError;
use crate::live::LiveSender;
use crate::metrics::Metrics;

/// The collector's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest request body, in bytes, both as sent and after gzip decoding.
    pub max_body_bytes: usize,
    /// The most rows (events and refused rows) one request may carry.
    pub max_rows: usize,
    /// Undelivered events in the log above which requests are refused with 503 and
    /// `Retry-After` until delivery catches up.
    pub backlog_high_water: u64,
    /// The same bound in bytes of undelivered records (estimated from the records' mean
    /// size), for senders of few large events.
    pub backlog_high_water_bytes: u64,
    /// The `Retry-After` sent with a 503, in seconds.
    pub retry_after_secs: u64,
    /// How far past the server's clock an event time may be (live traffic; a history import
    /// keeps a day). At most a day.
    pub max_future: Duration,
    /// Requests decoded at once (gunzip, parse, validate and encode run on blocking threads,
    /// never on the async workers that answer `/healthz` and run delivery and detection).
    pub decode_concurrency: usize,
    /// How long a request waits for a decoding slot before it is answered 503.
    pub decode_wait: Duration,
    /// The time a client has to send the whole body once its headers are in.
    pub body_timeout: Duration,
    /// Bytes of request bodies held at once, across all requests (by `Content-Length`, or
    /// `max_body_bytes` without one); a request that waits `decode_wait` for room gets 503.
    pub max_body_bytes_in_flight: usize,
    /// The most `GET /v1/events/stream` subscribers at once (more get 503).
    pub max_stream_subscribers: usize,
    /// Memory all queries and reports together may hold in their operators (one pool for
    /// the process); past it they spill to disk.
    pub query_memory_bytes: usize,
    /// Bytes all queries and reports together may spill to disk.
    pub query_spill_bytes: u64,
    /// Queries and reports run at once; more wait up to `query_wait`, then get 429.
    pub query_concurrency: usize,
    /// How long a query or report waits for its turn before 429 + `Retry-After`.
    pub query_wait: Duration,
    /// The time limit of `POST /v1/query`: planning, execution and encoding.
    pub query_timeout: Duration,
    /// The time limit of a report: reading, computing and encoding.
    pub report_timeout: Duration,
    /// How far behind `events` a report may answer from the marts while a refresh catches
    /// up (the age of the oldest commit they lack; zero: always from the latest `events`).
    pub report_lag: Duration,
    /// The nice value of the threads queries and reports run on (0–19; 0 leaves them at
    /// the server's priority): see `priority.rs`.
    pub query_nice: i32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 << 20,
            max_rows: 50_000,
            backlog_high_water: 2_000_000,
            backlog_high_water_bytes: 1 << 30,
            retry_after_secs: 5,
            max_future: Duration::from_secs(15 * 60),
            decode_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            decode_wait: Duration::from_secs(2),
            body_timeout: Duration::from_secs(30),
            max_body_bytes_in_flight: 256 << 20,
            max_stream_subscribers: 64,
            query_memory_bytes: 1 << 30,
            query_spill_bytes: 8 << 30,
            query_concurrency: 2,
            query_wait: Duration::from_secs(5),
            query_timeout: Duration::from_secs(60),
            report_timeout: Duration::from_secs(120),
            report_lag: Duration::from_secs(60),
            query_nice: crate::priority::QUERY_NICE,
        }
    }
}

/// State shared by the collector's handlers (and, for its backlog, the delivery loop).
pub struct Collector {
    log: Arc<dyn EventLog>,
    validator: Validator,
    tokens: Tokens,
    trusted: Vec<Network>,
    limits: Limits,
    metrics: Arc<Metrics>,
    backlog: Arc<Backlog>,
    draining: AtomicBool,
    store: Option<Arc<dyn shoplake_alerts::AlertStore>>,
    lake: Option<shoplake_lake::Lake>,
    live: LiveSender,
    record_format: RecordFormat,
    decoding: Arc<Semaphore>,
    /// Room for request bodies, in KiB.
    bodies: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    closing: tokio::sync::watch::Sender<bool>,
    queries: Arc<Semaphore>,
    engines: Option<shoplake_query::EngineResources>,
    query_runtime: QueryRuntime,
    clock: Arc<dyn Clock>,
    process: crate::roles::Process,
}

/// The runtime queries and reports run on: their CPU work (DataFusion's operators, JSON
/// encoding) never takes the async workers that answer `/healthz` and run delivery and
/// detection, and its threads yield the CPU to them ([`crate::priority`]). Shut down without
/// waiting when the collector goes.
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Aborts a task when the request waiting for it goes away (a client that hung up).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// A collector appending to `log`.
    pub fn new(
        log: Arc<dyn EventLog>,
        validator: Validator,
        tokens: Tokens,
        trusted: Vec<Network>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Collector {
        let decoding = Arc::new(Semaphore::new(limits.decode_concurrency.max(1)));
        let streams = Arc::new(Semaphore::new(limits.max_stream_subscribers));
        let bodies = Arc::new(Semaphore::new(body_budget_kib(&limits)));
        let queries = Arc::new(Semaphore::new(limits.query_concurrency.max(1)));
        Collector {
            log,
            validator: validator.with_max_ahead(limits.max_future),
            tokens,
            trusted,
            limits,
            backlog: Arc::new(Backlog::new(metrics.backlog.clone())),
            metrics,
            draining: AtomicBool::new(false),
            store: None,
            lake: None,
            live: tokio::sync::broadcast::channel(1024).0,
            record_format: RecordFormat::default(),
            decoding,
            bodies,
            streams,
            closing: tokio::sync::watch::channel(false).0,
            queries,
            engines: None,
            query_runtime: QueryRuntime(None),
            clock: Arc::new(SystemClock),
            process: crate::roles::Process::default(),
        }
    }

    /// Reads "now" from `clock` (default: the system's).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Collector {
        self.clock = clock;
        self
    }

    /// Where "now" comes from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Writes events into the log in `format` (default: binary).
    pub fn with_record_format(mut self, format: RecordFormat) -> Collector {
        self.record_format = format;
        self
    }

    /// Serves the lake API (reports, SQL, catalog, imports, quarantine) from this lake, every
    /// request's engine drawing on one memory pool and spill budget.
    pub fn with_lake(mut self, lake: shoplake_lake::Lake) -> shoplake_query::Result<Collector> {
        self.engines = Some(shoplake_query::EngineResources::new(
            self.limits.query_memory_bytes,
            Some(self.limits.query_spill_bytes),
        )?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.limits.query_concurrency.clamp(1, 8))
            .thread_name("shoplake-query")
            .on_thread_start({
                let nice = self.limits.query_nice;
                move || crate::priority::lower_this_thread(nice)
            })
            .enable_all()
            .build()
            .map_err(|e| {
                shoplake_query::Error::Argument(format!("starting the query runtime: {e}"))
            })?;
        self.query_runtime = QueryRuntime(Some(runtime));
        self.lake = Some(lake);
        Ok(self)
    }

    /// Runs a query's or report's work on the query runtime within `within`, and answers
    /// its result (408 past the limit; the work is cancelled then, or when the client goes).
    pub(crate) async fn on_query_runtime<T, F>(
        self: &Arc<Self>,
        within: Duration,
        what: &'static str,
        work: impl FnOnce(Arc<Collector>) -> F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        let timed = tokio::time::timeout(within, work(self.clone()));
        let task = match &self.query_runtime.0 {
            Some(rt) => rt.spawn(timed),
            None => tokio::spawn(timed),
        };
        let mut task = AbortOnDrop(task);
        match (&mut task.0).await {
            Ok(Ok(out)) => out,
            Ok(Err(_)) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the {what} ran longer than the {within:?} time limit"),
            )),
            Err(e) => {
                tracing::error!(error = %e, what, "a query task failed");
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the {what} failed: {e}"),
                ))
            }
        }
    }

    pub(crate) fn lake(&self) -> Option<&shoplake_lake::Lake> {
        self.lake.as_ref()
    }

    pub(crate) fn engines(&self) -> Option<&shoplake_query::EngineResources> {
        self.engines.as_ref()
    }

    /// A turn among the queries and reports running at once, waiting at most `query_wait`.
    pub(crate) async fn query_turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::time::timeout(self.limits.query_wait, self.queries.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// The live feed of `GET /v1/events/stream`.
    pub fn live(&self) -> &LiveSender {
        &self.live
    }

    /// Serves the alerts API from this store.
    pub fn with_store(mut self, store: Arc<dyn shoplake_alerts::AlertStore>) -> Collector {
        self.store = Some(store);
        self
    }

    /// Says what this process is (its roles, the partitions it delivers): without the
    /// collector role, `POST /v1/events` is refused.
    pub fn with_process(mut self, process: crate::roles::Process) -> Collector {
        self.process = process;
        self
    }

    /// What this process is.
    pub fn process(&self) -> &crate::roles::Process {
        &self.process
    }

    pub(crate) fn store(&self) -> Option<&Arc<dyn shoplake_alerts::AlertStore>> {
        self.store.as_ref()
    }

    pub(crate) fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The log's undelivered events (shared with the delivery loop).
    pub fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }

    /// Refuses further ingest requests with 503 and ends the event streams (during shutdown).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.closing.send_replace(true);
    }

    /// Whether the server is shutting down.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// A place among the event stream's subscribers, while there is one.
    pub(crate) fn stream_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// Resolves once the server is shutting down.
    pub(crate) fn closing(&self) -> impl Future<Output = ()> + use<> {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    pub(crate) fn validator(&self) -> &Validator {
        &self.validator
    }

    pub(crate) fn record_format(&self) -> RecordFormat {
        self.record_format
    }

    pub(crate) fn trusted(&self) -> &[Network] {
        &self.trusted
    }

    /// A 503 with the configured `Retry-After`.
    pub(crate) fn unavailable(&self, message: impl Into<String>) -> ApiError {
        ApiError::unavailable(message, self.limits.retry_after_secs)
    }

    /// Whether an ingest request may start: not while shutting down, nor while the log holds
    /// more undelivered events (or bytes) than its high-water marks (503: retry later).
    pub(crate) fn admit(&self) -> Result<(), ApiError> {
        if self.draining() {
            return Err(self.unavailable("the server is shutting down"));
        }
        let (events, limit) = (self.backlog.events(), self.limits.backlog_high_water);
        if events > limit {
            return Err(self.unavailable(format!(
                "the log holds {events} undelivered events, over its high-water mark of \
                 {limit}: retry later"
            )));
        }
        let (bytes, limit) = (self.backlog.bytes(), self.limits.backlog_high_water_bytes);
        if bytes > limit {
            return Err(self.unavailable(format!(
                "the log holds about {bytes} bytes of undelivered events, over its high-water \
                 mark of {limit}: retry later"
            )));
        }
        Ok(())
    }

    /// Room for a body of `bytes` (its `Content-Length`, or the body limit without one)
    /// among all bodies held at once, waiting at most `decode_wait`.
    pub(crate) async fn body_room(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let bytes = bytes.min(self.limits.max_body_bytes);
        let budget = body_budget_kib(&self.limits);
        let kib = u32::try_from(bytes.div_ceil(1024).clamp(1, budget)).unwrap_or(u32::MAX);
        tokio::time::timeout(
            self.limits.decode_wait,
            self.bodies.clone().acquire_many_owned(kib),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            self.metrics.decode_busy.inc();
            self.unavailable("too many request bodies are in flight: retry later")
        })
    }

    /// A slot among the requests decoded at once, waiting at most `decode_wait`.
    pub(crate) async fn decode_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        tokio::time::timeout(
            self.limits.decode_wait,
            self.decoding.clone().acquire_owned(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            self.metrics.decode_busy.inc();
            self.unavailable("every decoding slot is busy: retry later")
        })
    }
}

/// The budget of room for bodies, in KiB (at least 1).
fn body_budget_kib(limits: &Limits) -> usize {
    (limits.max_body_bytes_in_flight >> 10).clamp(1, Semaphore::MAX_PERMITS)
}
