//! The HTTP collector (Kinesis): `POST /v1/events` validates events, stamps them with the
//! connection's address and user agent, and answers only once the valid ones are durable in
//! the event log. Refused rows go to the log under [`QUARANTINE_KEY`], from where delivery
//! writes them to `quarantine`.

use std::future::Future;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use shoplake_events::record::RecordFormat;
use shoplake_events::{CsvDecoder, Event, Field, JsonDecoder, Reject, Row, Validator};
use shoplake_lake::QuarantinedRow;
use shoplake_log::{EventLog, QUARANTINE_KEY, Record};
use tokio::sync::{Notify, Semaphore};

use crate::auth::{Denied, Network, Scope, Tokens, client_ip};
use crate::metrics::{Metrics, StatusLabel};

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
        }
    }
}

/// State shared by the collector's handlers and the delivery loop.
pub struct Collector {
    log: Arc<dyn EventLog>,
    validator: Validator,
    tokens: Tokens,
    trusted: Vec<Network>,
    limits: Limits,
    metrics: Arc<Metrics>,
    backlog: AtomicI64,
    pending_bytes: AtomicU64,
    /// Records and bytes appended since start (for the mean record size).
    appended_records: AtomicU64,
    appended_bytes: AtomicU64,
    draining: AtomicBool,
    appended: Notify,
    store: Option<Arc<dyn shoplake_alerts::AlertStore>>,
    lake: Option<shoplake_lake::Lake>,
    live: crate::lake_api::LiveSender,
    record_format: RecordFormat,
    decoding: Arc<Semaphore>,
    /// Room for request bodies, in KiB.
    bodies: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    closing: tokio::sync::watch::Sender<bool>,
    queries: Arc<Semaphore>,
    engines: Option<shoplake_query::EngineResources>,
    query_runtime: QueryRuntime,
}

/// The runtime queries and reports run on: their CPU work (DataFusion's operators, JSON
/// encoding) never takes the async workers that answer `/healthz` and run delivery and
/// detection. Shut down without waiting when the collector goes.
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
        let bodies = Arc::new(Semaphore::new(
            (limits.max_body_bytes_in_flight >> 10).clamp(1, Semaphore::MAX_PERMITS),
        ));
        let queries = Arc::new(Semaphore::new(limits.query_concurrency.max(1)));
        Collector {
            log,
            validator: validator.with_max_ahead(limits.max_future),
            tokens,
            trusted,
            limits,
            metrics,
            backlog: AtomicI64::new(0),
            pending_bytes: AtomicU64::new(0),
            appended_records: AtomicU64::new(0),
            appended_bytes: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            appended: Notify::new(),
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
        }
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
            .on_thread_start(crate::priority::lower_this_thread)
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
    pub fn live(&self) -> &crate::lake_api::LiveSender {
        &self.live
    }

    /// Serves the alerts API from this store.
    pub fn with_store(mut self, store: Arc<dyn shoplake_alerts::AlertStore>) -> Collector {
        self.store = Some(store);
        self
    }

    pub(crate) fn store(&self) -> Option<&Arc<dyn shoplake_alerts::AlertStore>> {
        self.store.as_ref()
    }

    pub(crate) fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The routes: `POST /v1/events` (`ingest` scope), `GET /healthz` (open), `GET /metrics`
    /// (`read`), `GET /openapi.json` (any token).
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/events", post(ingest))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route("/openapi.json", get(openapi))
            .route("/v1/alerts", get(crate::api::list_alerts))
            .route("/v1/alerts/{id}", get(crate::api::get_alert))
            .route("/v1/alerts/{id}/{action}", post(crate::api::act_on_alert))
            .route("/v1/lists", get(crate::api::get_lists))
            .route("/v1/reports/{kind}", get(crate::lake_api::report))
            .route("/v1/query", post(crate::lake_api::query))
            .route("/v1/catalog", get(crate::lake_api::catalog))
            .route("/v1/imports", get(crate::lake_api::imports))
            .route("/v1/quarantine", get(crate::lake_api::quarantine))
            .route("/v1/events/stream", get(crate::lake_api::stream))
            .route("/", get(crate::dashboard::index))
            .route("/assets/{name}", get(crate::dashboard::asset))
            .route(
                "/v1/lists/{list}",
                post(crate::api::change_list).delete(crate::api::change_list),
            )
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::map_response(security_headers))
            .with_state(self)
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Events in the log not yet delivered, as last counted.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed).max(0) as u64
    }

    /// The mean size of the event records appended so far (0 before the first).
    pub fn mean_record_bytes(&self) -> u64 {
        let records = self.appended_records.load(Ordering::Relaxed);
        if records == 0 {
            return 0;
        }
        self.appended_bytes.load(Ordering::Relaxed) / records
    }

    /// Bytes of undelivered records: the backlog times the mean size of the records
    /// appended so far.
    pub fn backlog_bytes(&self) -> u64 {
        self.backlog().saturating_mul(self.mean_record_bytes())
    }

    /// Sets the undelivered count (delivery recounts it from the log after each delivery).
    pub fn set_backlog(&self, events: u64) {
        let n = i64::try_from(events).unwrap_or(i64::MAX);
        self.backlog.store(n, Ordering::Relaxed);
        self.metrics.backlog.set(n);
    }

    /// Bytes of records appended since the last [`Collector::take_pending_bytes`].
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes.load(Ordering::Relaxed)
    }

    /// Resets the count of bytes appended (delivery calls it as it starts reading).
    pub fn take_pending_bytes(&self) -> u64 {
        self.pending_bytes.swap(0, Ordering::Relaxed)
    }

    /// Resolves when events have been appended since the last call.
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// Refuses further ingest requests with 503 and ends the event streams (during shutdown).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.closing.send_replace(true);
    }

    /// A place among the event stream's subscribers, while there is one.
    pub(crate) fn stream_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
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
}

/// The dashboard's content policy: its own scripts and styles only (no inline script, no
/// other origin), images also from `data:` and `blob:` URLs (chart exports), never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Headers on every answer: the content policy, no MIME sniffing, no referrer.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// An error answer: a status and a JSON body `{"error": …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    pub(crate) retry_after: Option<u64>,
    rejected: Vec<RejectedRow>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            rejected: Vec::new(),
        }
    }

    pub(crate) fn denied(denied: Denied) -> ApiError {
        match denied {
            Denied::Missing => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing bearer token: send Authorization: Bearer <token>",
            ),
            Denied::Unknown => ApiError::new(StatusCode::UNAUTHORIZED, "unknown token"),
            Denied::Scope(s) => ApiError::new(
                StatusCode::FORBIDDEN,
                format!("the token lacks the {s} scope"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if !self.rejected.is_empty() {
            body["accepted"] = json!(0);
            body["rejected"] = json!(self.rejected);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"shoplake\""),
            );
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A refused row, as answered (the raw text goes to `quarantine`, not back to the sender).
#[derive(Debug, Clone, Serialize)]
pub struct RejectedRow {
    /// The row's line (CSV, NDJSON: 1-based) or index (JSON array: 0-based).
    pub line: u64,
    /// The field at fault, when one is.
    pub field: Option<&'static str>,
    /// Why.
    pub reason: String,
}

/// The answer to an ingest request.
#[derive(Debug, Serialize)]
pub struct Accepted {
    /// Events now durable in the log.
    pub accepted: usize,
    /// The rows refused.
    pub rejected: Vec<RejectedRow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

fn format_of(headers: &HeaderMap) -> Result<Format, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "missing Content-Type: send application/json, application/x-ndjson or text/csv",
        ));
    };
    let ct = ct.to_str().unwrap_or_default();
    let mime = ct.split(';').next().unwrap_or_default().trim();
    match mime.to_ascii_lowercase().as_str() {
        "application/json"
        | "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => Ok(Format::Json),
        "text/csv" | "application/csv" => Ok(Format::Csv),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported Content-Type {ct:?}: send application/json, application/x-ndjson or text/csv"
            ),
        )),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than the limit of {limit} bytes"),
    )
}

/// Whether the body says it is gzip (`Content-Encoding`), or an error for an encoding we
/// cannot read.
fn is_gzip(headers: &HeaderMap) -> Result<bool, ApiError> {
    match headers.get(header::CONTENT_ENCODING) {
        None => Ok(false),
        Some(v) => match v
            .to_str()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "gzip" | "x-gzip" => Ok(true),
            "identity" | "" => Ok(false),
            other => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {other:?}: send gzip or none"),
            )),
        },
    }
}

/// Reads the body as sent (at most the limit, within the time limit); decoding it is CPU work
/// and happens in [`prepare`].
async fn body_bytes(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    within: Duration,
) -> Result<axum::body::Bytes, ApiError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large(limit));
    }
    let read = axum::body::to_bytes(body, limit);
    let bytes = tokio::time::timeout(within, read)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {within:?}"),
            )
        })?
        .map_err(|e| {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                too_large(limit)
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
            }
        })?;
    Ok(bytes)
}

/// Gunzips a body, refusing it once it passes `limit` bytes decoded.
fn gunzip(bytes: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(limit));
    let mut decoder = flate2::read::MultiGzDecoder::new(bytes).take(limit as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid gzip: {e}"),
        )
    })?;
    if out.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the limit of {limit} bytes once decompressed"),
        ));
    }
    Ok(out)
}

/// What the server adds to each event of a request: the client's address and the request's
/// user agent (one copy for the whole request, lent to each event as it is encoded).
struct Stamp {
    ip: IpAddr,
    agent: Option<String>,
    /// The token lets events carry their own `client_ip` and `user_agent`.
    forward: bool,
    /// The `source` of the request's quarantined rows.
    source: String,
}

/// The most of a refused row's text kept in `quarantine`: enough to see what was sent, not a
/// way to store a whole body (a 15 MiB line, escaped, would not fit a log record).
const MAX_RAW_BYTES: usize = 4096;

/// A refused row's text, cut on a character boundary with a note of its full size.
fn cut_raw(raw: String) -> String {
    if raw.len() <= MAX_RAW_BYTES {
        return raw;
    }
    let mut end = MAX_RAW_BYTES;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &raw[..end], raw.len())
}

/// A request turned into log records: its events and its refused rows.
#[derive(Default)]
struct Prepared {
    records: Vec<Record>,
    accepted: usize,
    rejected: Vec<RejectedRow>,
    /// Bytes of every record, and of the events' alone.
    bytes: usize,
    event_bytes: usize,
}

impl Prepared {
    /// Stamps, checks and encodes one event. The check is the one that decides: the event as
    /// it will be stored passes the same rules delivery and the detector read it with, so
    /// nothing acknowledged is refused later.
    fn event(
        &mut self,
        mut e: Event,
        line: u64,
        stamp: &mut Stamp,
        validator: &Validator,
        format: RecordFormat,
    ) {
        if !stamp.forward || e.client_ip.is_none() {
            e.client_ip = Some(stamp.ip);
        }
        let lent = !stamp.forward || e.user_agent.is_none();
        if lent {
            e.user_agent = stamp.agent.take();
        }
        e.ingest_time = None;
        match validator.check(&e) {
            Ok(()) => {
                // Room for an event with a long user agent: no regrowth per event.
                let mut value =
                    Vec::with_capacity(256 + e.user_agent.as_ref().map_or(0, String::len));
                shoplake_events::record::encode(&mut value, &e, format);
                let key = itoa::Buffer::new().format(e.user_id).as_bytes().to_vec();
                self.bytes += key.len() + value.len();
                self.event_bytes += key.len() + value.len();
                self.records.push(Record { key, value });
                self.accepted += 1;
            }
            Err(error) => {
                let mut raw = Vec::new();
                shoplake_events::json::encode_json(&mut raw, &e);
                let raw = String::from_utf8_lossy(raw.trim_ascii_end()).into_owned();
                self.reject(Reject::new(line, error, raw), stamp);
            }
        }
        if lent {
            stamp.agent = e.user_agent.take();
        }
    }

    /// Records a refused row for `quarantine` (its text cut to [`MAX_RAW_BYTES`]) and for
    /// the answer.
    fn reject(&mut self, r: Reject, stamp: &Stamp) {
        let row = QuarantinedRow {
            source: stamp.source.clone(),
            line: r.line,
            field: r.field.map(str::to_owned),
            reason: r.reason.clone(),
            raw: cut_raw(r.raw),
        };
        let value = serde_json::to_vec(&row).unwrap_or_default();
        // Keyed by the client too, so one sender's refused rows cannot fill one partition
        // for everyone.
        let mut key = QUARANTINE_KEY.to_vec();
        key.push(b'/');
        key.extend_from_slice(stamp.ip.to_string().as_bytes());
        self.bytes += key.len() + value.len();
        self.records.push(Record { key, value });
        self.rejected.push(RejectedRow {
            line: r.line,
            field: r.field,
            reason: r.reason,
        });
    }

    fn rows(&self) -> usize {
        self.accepted + self.rejected.len()
    }
}

/// The CPU-bound part of a request, run on a blocking thread: gunzips, decodes and validates
/// every row (stopping at the row limit), stamps and checks each event, and encodes the log
/// records.
fn prepare(
    body: &[u8],
    gzip: bool,
    format: Format,
    c: &Collector,
    mut stamp: Stamp,
) -> Result<Prepared, ApiError> {
    let unzipped;
    let body = if gzip {
        unzipped = gunzip(body, c.limits.max_body_bytes)?;
        &unzipped[..]
    } else {
        body
    };
    let max_rows = c.limits.max_rows;
    let too_many = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("more than {max_rows} rows in one request: split it"),
        )
    };
    let bad = |e: shoplake_events::Error| match e {
        shoplake_events::Error::TooManyRows { .. } => too_many(),
        e => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut out = Prepared::default();
    // Each row with the line it starts on, so that an event refused by the final check is
    // reported where it is, as the decoder reports the rows it refuses.
    let mut take = |row: Row, line: u64, out: &mut Prepared| -> Result<(), ApiError> {
        if out.rows() >= max_rows {
            return Err(too_many());
        }
        match row {
            Row::Event(e) => out.event(e, line, &mut stamp, &c.validator, c.record_format),
            Row::Reject(r) => out.reject(r, &stamp),
        }
        Ok(())
    };
    match format {
        Format::Json => {
            let mut rows =
                JsonDecoder::new(body, c.validator.clone()).with_max_rows(max_rows as u64);
            while let Some(row) = rows.next_row().map_err(bad)? {
                take(row, rows.line(), &mut out)?;
            }
        }
        Format::Csv => {
            let mut rows = CsvDecoder::new(body, c.validator.clone()).map_err(bad)?;
            while let Some(row) = rows.next_row().map_err(bad)? {
                take(row, rows.line(), &mut out)?;
            }
        }
    }
    Ok(out)
}

async fn ingest(
    State(c): State<Arc<Collector>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let response = match ingest_inner(&c, peer.ip(), request).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    c.metrics
        .requests
        .get_or_create(&StatusLabel {
            status: response.status().as_u16(),
        })
        .inc();
    c.metrics.latency.observe(started.elapsed().as_secs_f64());
    response
}

/// A 503 with `Retry-After`.
pub(crate) fn unavailable(c: &Collector, message: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message);
    e.retry_after = Some(c.limits.retry_after_secs);
    e
}

/// Room for a request's body among all bodies held at once: its `Content-Length`, or the
/// body limit without one (at least 1 KiB, at most the whole budget).
async fn body_room(
    c: &Collector,
    headers: &HeaderMap,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let bytes = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(c.limits.max_body_bytes)
        .min(c.limits.max_body_bytes);
    let budget = (c.limits.max_body_bytes_in_flight >> 10).clamp(1, Semaphore::MAX_PERMITS);
    let kib = u32::try_from(bytes.div_ceil(1024).clamp(1, budget)).unwrap_or(u32::MAX);
    tokio::time::timeout(
        c.limits.decode_wait,
        c.bodies.clone().acquire_many_owned(kib),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .ok_or_else(|| {
        c.metrics.decode_busy.inc();
        unavailable(c, "too many request bodies are in flight: retry later")
    })
}

/// Every `X-Forwarded-For` line, in order, as one list (a proxy may add a line of its own
/// rather than extend the client's).
fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    let mut lines = headers.get_all("x-forwarded-for").iter().peekable();
    lines.peek()?;
    let mut all = String::new();
    for line in lines {
        if !all.is_empty() {
            all.push(',');
        }
        all.push_str(&String::from_utf8_lossy(line.as_bytes()));
    }
    Some(all)
}

/// The request's `User-Agent`, made to fit the field's rules (one copy per request).
fn user_agent(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::USER_AGENT)?;
    let text = String::from_utf8_lossy(raw.as_bytes());
    Validator::fit(Field::UserAgent, &text).map(str::to_owned)
}

async fn ingest_inner(
    c: &Arc<Collector>,
    peer: IpAddr,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = c
        .tokens
        .check(auth, Scope::Ingest)
        .map_err(ApiError::denied)?;
    if c.draining.load(Ordering::SeqCst) {
        return Err(unavailable(c, "the server is shutting down"));
    }
    if c.backlog() > c.limits.backlog_high_water {
        return Err(unavailable(
            c,
            format!(
                "the log holds {} undelivered events, over its high-water mark of {}: retry later",
                c.backlog(),
                c.limits.backlog_high_water
            ),
        ));
    }
    if c.backlog_bytes() > c.limits.backlog_high_water_bytes {
        return Err(unavailable(
            c,
            format!(
                "the log holds about {} bytes of undelivered events, over its high-water mark \
                 of {}: retry later",
                c.backlog_bytes(),
                c.limits.backlog_high_water_bytes
            ),
        ));
    }
    let format = format_of(headers)?;
    let gzip = is_gzip(headers)?;
    let _room = body_room(c, headers).await?;
    let body = body_bytes(
        headers,
        body,
        c.limits.max_body_bytes,
        c.limits.body_timeout,
    )
    .await?;
    let ip = client_ip(peer, forwarded_for(headers).as_deref(), &c.trusted);
    let stamp = Stamp {
        ip,
        agent: user_agent(headers),
        forward: token.forward,
        source: format!("collector {ip} token {}", token.name),
    };
    let permit = tokio::time::timeout(c.limits.decode_wait, c.decoding.clone().acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            c.metrics.decode_busy.inc();
            unavailable(c, "every decoding slot is busy: retry later")
        })?;
    let worker = c.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        prepare(&body, gzip, format, &worker, stamp)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "decoding a request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "decoding the request failed",
        )
    })??;
    if prepared.rows() == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body holds no events",
        ));
    }
    let Prepared {
        records,
        accepted,
        rejected,
        bytes,
        event_bytes,
    } = prepared;
    c.log.append(records).await.map_err(|e| match e {
        // Backpressure, not a failure: delivery is behind (the lake may be down).
        shoplake_log::Error::Full(why) => {
            c.metrics.log_full.inc();
            unavailable(c, why)
        }
        // A record the log cannot take (past its size): the request's fault, not to retry.
        shoplake_log::Error::Argument(why) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, why),
        e => {
            tracing::error!(error = %e, "appending to the log");
            unavailable(c, format!("the event log could not store the events: {e}"))
        }
    })?;
    c.backlog.fetch_add(accepted as i64, Ordering::Relaxed);
    c.pending_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    // The mean size of the backlog's records: events only (refused rows are not backlog).
    c.appended_records
        .fetch_add(accepted as u64, Ordering::Relaxed);
    c.appended_bytes
        .fetch_add(event_bytes as u64, Ordering::Relaxed);
    c.metrics.backlog.inc_by(accepted as i64);
    c.metrics.accepted.inc_by(accepted as u64);
    c.metrics.rejected.inc_by(rejected.len() as u64);
    c.appended.notify_one();
    if accepted == 0 {
        let mut e = ApiError::new(
            StatusCode::BAD_REQUEST,
            "no valid events: every row was refused (see rejected)",
        );
        e.rejected = rejected;
        return Err(e);
    }
    Ok(axum::Json(Accepted { accepted, rejected }).into_response())
}

async fn healthz(State(c): State<Arc<Collector>>) -> Response {
    let draining = c.draining.load(Ordering::SeqCst);
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": if draining { "draining" } else { "ok" },
        "log_partitions": c.log.partitions(),
        "backlog_events": c.backlog(),
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(c): State<Arc<Collector>>, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(d) = c.tokens.check(auth, Scope::Read) {
        return ApiError::denied(d).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        c.metrics.render(),
    )
        .into_response()
}

/// The API description.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi(State(c): State<Arc<Collector>>, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(d) = c.tokens.authenticate(auth) {
        return ApiError::denied(d).into_response();
    }
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint: see /openapi.json",
    )
    .into_response()
}

async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint: see /openapi.json").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_text_is_cut_on_a_character_boundary() {
        assert_eq!(cut_raw("short".to_owned()), "short");
        let long = "é".repeat(5000);
        let cut = cut_raw(long);
        assert!(
            cut.ends_with("… (10000 bytes in all)"),
            "{}",
            &cut[cut.len() - 40..]
        );
        assert!(cut.len() < MAX_RAW_BYTES + 40);
    }
}
