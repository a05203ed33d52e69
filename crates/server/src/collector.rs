//! The HTTP collector (Kinesis): `POST /v1/events` validates events, stamps them with the
//! connection's address and user agent, and answers only once the valid ones are durable in
//! the event log. Refused rows go to the log under [`QUARANTINE_KEY`], from where delivery
//! writes them to `quarantine`.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use shoplake_events::record::RecordFormat;
use shoplake_events::{CsvDecoder, Event, JsonDecoder, Reject, Row, Validator};
use shoplake_lake::QuarantinedRow;
use shoplake_log::{EventLog, QUARANTINE_KEY, Record};
use tokio::sync::Notify;

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
    /// The `Retry-After` sent with a 503, in seconds.
    pub retry_after_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 << 20,
            max_rows: 50_000,
            backlog_high_water: 2_000_000,
            retry_after_secs: 5,
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
    draining: AtomicBool,
    appended: Notify,
    store: Option<Arc<dyn shoplake_alerts::AlertStore>>,
    lake: Option<shoplake_lake::Lake>,
    live: crate::lake_api::LiveSender,
    record_format: RecordFormat,
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
        Collector {
            log,
            validator,
            tokens,
            trusted,
            limits,
            metrics,
            backlog: AtomicI64::new(0),
            pending_bytes: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            appended: Notify::new(),
            store: None,
            lake: None,
            live: tokio::sync::broadcast::channel(1024).0,
            record_format: RecordFormat::default(),
        }
    }

    /// Writes events into the log in `format` (default: binary).
    pub fn with_record_format(mut self, format: RecordFormat) -> Collector {
        self.record_format = format;
        self
    }

    /// Serves the lake API (reports, SQL, catalog, imports, quarantine) from this lake.
    pub fn with_lake(mut self, lake: shoplake_lake::Lake) -> Collector {
        self.lake = Some(lake);
        self
    }

    pub(crate) fn lake(&self) -> Option<&shoplake_lake::Lake> {
        self.lake.as_ref()
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

    /// Refuses further ingest requests with 503 (during shutdown).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

/// An error answer: a status and a JSON body `{"error": …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
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

/// Reads the body (at most the limit), gunzipping it when it says it is gzip.
async fn body_bytes(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large(limit));
    }
    let gzip = match headers.get(header::CONTENT_ENCODING) {
        None => false,
        Some(v) => match v
            .to_str()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "gzip" | "x-gzip" => true,
            "identity" | "" => false,
            other => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("unsupported Content-Encoding {other:?}: send gzip or none"),
                ));
            }
        },
    };
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            too_large(limit)
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
        }
    })?;
    if !gzip {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() * 4);
    let mut decoder = flate2::read::MultiGzDecoder::new(&bytes[..]).take(limit as u64 + 1);
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
    Ok(out.into())
}

/// Decodes and validates every row of a body.
fn decode(
    body: &[u8],
    format: Format,
    validator: &Validator,
    max_rows: usize,
) -> Result<(Vec<Event>, Vec<Reject>), ApiError> {
    let mut events = Vec::new();
    let mut rejects = Vec::new();
    let mut push = |row: Row| -> Result<(), ApiError> {
        match row {
            Row::Event(e) => events.push(e),
            Row::Reject(r) => rejects.push(r),
        }
        if events.len() + rejects.len() > max_rows {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("more than {max_rows} rows in one request: split it"),
            ));
        }
        Ok(())
    };
    let bad = |e: shoplake_events::Error| ApiError::new(StatusCode::BAD_REQUEST, e.to_string());
    match format {
        Format::Json => {
            for row in JsonDecoder::new(body, validator.clone()) {
                push(row.map_err(bad)?)?;
            }
        }
        Format::Csv => {
            let mut rows = CsvDecoder::new(body, validator.clone()).map_err(bad)?;
            while let Some(row) = rows.next_row().map_err(bad)? {
                push(row)?;
            }
        }
    }
    Ok((events, rejects))
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

async fn ingest_inner(c: &Collector, peer: IpAddr, request: Request) -> Result<Response, ApiError> {
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
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        );
        e.retry_after = Some(c.limits.retry_after_secs);
        return Err(e);
    }
    if c.backlog() > c.limits.backlog_high_water {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the log holds {} undelivered events, over its high-water mark of {}: retry later",
                c.backlog(),
                c.limits.backlog_high_water
            ),
        );
        e.retry_after = Some(c.limits.retry_after_secs);
        return Err(e);
    }
    let format = format_of(headers)?;
    let body = body_bytes(headers, body, c.limits.max_body_bytes).await?;
    let (mut events, rejects) = decode(&body, format, &c.validator, c.limits.max_rows)?;
    if events.is_empty() && rejects.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body holds no events",
        ));
    }

    let ip = client_ip(
        peer,
        headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
        &c.trusted,
    );
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut records = Vec::with_capacity(events.len() + rejects.len());
    let mut key = itoa::Buffer::new();
    for e in &mut events {
        if !token.forward || e.client_ip.is_none() {
            e.client_ip = Some(ip);
        }
        if !token.forward || e.user_agent.is_none() {
            e.user_agent.clone_from(&agent);
        }
        e.ingest_time = None;
        // Room for an event with a long user agent: no regrowth per event.
        let mut value = Vec::with_capacity(512);
        shoplake_events::record::encode(&mut value, e, c.record_format);
        records.push(Record {
            key: key.format(e.user_id).as_bytes().to_vec(),
            value,
        });
    }
    let source = format!("collector {ip} token {}", token.name);
    for r in &rejects {
        let row = QuarantinedRow {
            source: source.clone(),
            line: r.line,
            field: r.field.map(str::to_owned),
            reason: r.reason.clone(),
            raw: r.raw.clone(),
        };
        records.push(Record {
            key: QUARANTINE_KEY.to_vec(),
            value: serde_json::to_vec(&row).unwrap_or_default(),
        });
    }
    let accepted = events.len();
    let bytes: usize = records.iter().map(|r| r.key.len() + r.value.len()).sum();
    c.log.append(records).await.map_err(|e| {
        tracing::error!("appending to the log: {e}");
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the event log could not store the events: {e}"),
        );
        err.retry_after = Some(c.limits.retry_after_secs);
        err
    })?;
    c.backlog.fetch_add(accepted as i64, Ordering::Relaxed);
    c.pending_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    c.metrics.backlog.inc_by(accepted as i64);
    c.metrics.accepted.inc_by(accepted as u64);
    c.metrics.rejected.inc_by(rejects.len() as u64);
    c.appended.notify_one();

    let rejected: Vec<RejectedRow> = rejects
        .into_iter()
        .map(|r| RejectedRow {
            line: r.line,
            field: r.field,
            reason: r.reason,
        })
        .collect();
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
