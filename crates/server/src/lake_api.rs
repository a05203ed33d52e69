//! The lake over HTTP, for the dashboard and any client (all `read` scope):
//! - `GET /v1/reports/{visitors,abandonment,categories,brands,activity,bots}` with the CLI's options as
//!   query parameters (`from`, `to`, `tz`, `all_traffic`, `source`; abandonment `window`,
//!   `top`, `list`; categories `by`, `level`, `top`, `metric`; brands `min_views`), answering
//!   the reports' documented JSON;
//! - `POST /v1/query` `{"sql", "limit"}`: one read-only statement under a time limit, at most
//!   `limit` rows (default 1 000, at most 100 000; the result streams and stops there),
//!   answered as `{"columns", "rows", "truncated", "seconds"}`;
//! - `GET /v1/catalog` (the tables), `GET /v1/imports` (import history with profiles),
//!   `GET /v1/quarantine?limit=N` (the newest refused rows).
//! - `GET /v1/events/stream`: server-sent events, `rate` every second (events accepted per
//!   second, backlog, detector lag) and `incident` on every incident change.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shoplake_lake::Lake;
use shoplake_query::output::{Format, write};
use shoplake_query::reports::{
    self, AbandonmentOptions, BrandsOptions, CategoriesOptions, ReportScope,
};
use shoplake_query::{Engine, ReportRange};
use tokio::sync::broadcast;

use crate::auth::Scope;
use crate::collector::{ApiError, Collector};

/// Rows `POST /v1/query` answers by default, and at most.
const DEFAULT_ROWS: usize = 1_000;
const MAX_ROWS: usize = 100_000;

/// What the live stream carries.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Live {
    /// Once a second: the ingest rate and where the pipeline stands.
    Rate {
        /// RFC 3339.
        at: String,
        /// Events accepted in the last second.
        events_per_second: f64,
        /// Events accepted since the server started.
        accepted_total: u64,
        /// Events in the log not yet in the lake.
        backlog_events: u64,
        /// From the newest detected event's arrival to its detection, seconds.
        detector_lag_seconds: f64,
    },
    /// An incident opened, was updated, escalated or resolved.
    Incident {
        /// `opened`, `updated`, `escalated` or `resolved`.
        change: &'static str,
        /// The incident, with its documented fields.
        incident: shoplake_detect::Incident,
    },
}

impl Live {
    fn name(&self) -> &'static str {
        match self {
            Live::Rate { .. } => "rate",
            Live::Incident { .. } => "incident",
        }
    }
}

/// The broadcast behind `GET /v1/events/stream`.
pub type LiveSender = broadcast::Sender<Live>;

/// Sends a `rate` message every second until the sender has no receivers left and `stop`.
pub(crate) async fn rate_loop(c: Arc<Collector>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut last = c.metrics().accepted.get();
    let mut at = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = c.metrics().accepted.get();
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        at = Instant::now();
        let rate = (now - last) as f64 / secs;
        last = now;
        // Nobody listening is not an error.
        let _ = c.live().send(Live::Rate {
            at: shoplake_events::time::format_rfc3339(chrono::Utc::now().timestamp_micros()),
            events_per_second: rate,
            accepted_total: now,
            backlog_events: c.backlog(),
            detector_lag_seconds: c.metrics().detector_lag.get(),
        });
    }
}

fn authorize(c: &Collector, headers: &HeaderMap) -> Result<(), ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    c.tokens()
        .check(auth, Scope::Read)
        .map(|_| ())
        .map_err(ApiError::denied)
}

fn lake(c: &Collector) -> Result<&Lake, ApiError> {
    c.lake()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this server serves no lake"))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// A query or report error: the caller's mistake (400) or the lake's trouble (503).
fn query_failed(e: shoplake_query::Error) -> ApiError {
    match e {
        shoplake_query::Error::Argument(m) => bad(m),
        shoplake_query::Error::ReadOnly(m) => bad(m),
        shoplake_query::Error::Timeout(d) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the query ran longer than the {d:?} time limit"),
        ),
        shoplake_query::Error::Sql(_) => bad(e.to_string()),
        other => {
            tracing::error!("lake API: {other}");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, other.to_string())
        }
    }
}

async fn engine(c: &Collector) -> Result<Engine, ApiError> {
    let lake = lake(c)?;
    match c.engines() {
        Some(resources) => Engine::open_shared(lake, resources).await,
        None => Engine::open(lake).await,
    }
    .map_err(query_failed)
}

/// A turn among the queries and reports running at once, or 429 + `Retry-After`.
async fn turn(c: &Collector) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    c.query_turn().await.ok_or_else(|| {
        c.metrics().queries_refused.inc();
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} queries and reports are running, the most at once: retry later",
                c.limits().query_concurrency
            ),
        );
        e.retry_after = Some(c.limits().retry_after_secs);
        e
    })
}

/// The query parameters of the reports (each report reads its own).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportParams {
    from: Option<String>,
    to: Option<String>,
    tz: Option<String>,
    all_traffic: Option<bool>,
    source: Option<String>,
    window: Option<String>,
    top: Option<usize>,
    list: Option<usize>,
    by: Option<String>,
    level: Option<String>,
    metric: Option<String>,
    min_views: Option<u64>,
}

pub(crate) async fn report(
    State(c): State<Arc<Collector>>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    params: Result<Query<ReportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&c, &headers)?;
    let Query(p) = params.map_err(|e| bad(e.body_text()))?;
    let scope = ReportScope {
        range: ReportRange::parse(p.from.as_deref(), p.to.as_deref(), p.tz.as_deref())
            .map_err(query_failed)?,
        all_traffic: p.all_traffic.unwrap_or(false),
        source: p
            .source
            .as_deref()
            .unwrap_or("auto")
            .parse()
            .map_err(query_failed)?,
    };
    let within = c.limits().report_timeout;
    let _turn = turn(&c).await?;
    let body = c
        .on_query_runtime(within, "report", move |c| async move {
            report_body(&c, &kind, &p, &scope).await
        })
        .await?;
    Ok(Json(body).into_response())
}

/// A report's answer as JSON.
async fn report_body(
    c: &Collector,
    kind: &str,
    p: &ReportParams,
    scope: &ReportScope,
) -> Result<Value, ApiError> {
    let engine = engine(c).await?.with_timeout(c.limits().report_timeout);
    let body: Value = match kind {
        "visitors" => json!(
            reports::visitors(&engine, scope)
                .await
                .map_err(query_failed)?
        ),
        "activity" => json!(
            reports::activity(&engine, scope)
                .await
                .map_err(query_failed)?
        ),
        "bots" => json!(reports::bots(&engine, scope).await.map_err(query_failed)?),
        "abandonment" => {
            let defaults = AbandonmentOptions::default();
            let window = match p.window.as_deref() {
                Some(w) => {
                    humantime::parse_duration(w).map_err(|e| bad(format!("window {w:?}: {e}")))?
                }
                None => defaults.window,
            };
            let options = AbandonmentOptions {
                window,
                top: p.top.unwrap_or(defaults.top),
                retarget_limit: match p.list {
                    Some(0) => None,
                    Some(n) => Some(n),
                    None => Some(20),
                },
            };
            json!(
                reports::abandonment(&engine, scope, &options)
                    .await
                    .map_err(query_failed)?
            )
        }
        "categories" => {
            let defaults = CategoriesOptions::default();
            let level = match p.level.as_deref() {
                None => defaults.level,
                Some("full") => 0,
                Some(l) => match l.parse::<usize>() {
                    Ok(n @ 1..=3) => n,
                    _ => return Err(bad(format!("level {l:?}: expected 1, 2, 3 or full"))),
                },
            };
            let options = CategoriesOptions {
                by: match p.by.as_deref() {
                    Some(b) => b.parse().map_err(query_failed)?,
                    None => defaults.by,
                },
                level,
                top: p.top.unwrap_or(defaults.top),
                metric: match p.metric.as_deref() {
                    Some(m) => m.parse().map_err(query_failed)?,
                    None => defaults.metric,
                },
            };
            json!(
                reports::categories(&engine, scope, &options)
                    .await
                    .map_err(query_failed)?
            )
        }
        "brands" => {
            let options = BrandsOptions {
                min_views: p.min_views.unwrap_or(BrandsOptions::default().min_views),
            };
            json!(
                reports::brands(&engine, scope, &options)
                    .await
                    .map_err(query_failed)?
            )
        }
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no report {other:?}: visitors, abandonment, categories, brands, activity or bots"
                ),
            ));
        }
    };
    Ok(body)
}

/// The body of `POST /v1/query`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryBody {
    sql: String,
    limit: Option<usize>,
}

pub(crate) async fn query(
    State(c): State<Arc<Collector>>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    // The token first: nothing of the body is read for a request without one.
    authorize(&c, request.headers())?;
    let Json(q) = Json::<QueryBody>::from_request(request, &())
        .await
        .map_err(|e| bad(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_ROWS).min(MAX_ROWS);
    let within = c.limits().query_timeout;
    let _turn = turn(&c).await?;
    let started = Instant::now();
    // Planning, execution and encoding on the query runtime, all within the limit.
    let (columns, rows, truncated) = c
        .on_query_runtime(within, "query", move |c| async move {
            let engine = engine(&c).await?.with_timeout(within);
            let (out, truncated) = engine
                .query_limited(&q.sql, limit)
                .await
                .map_err(query_failed)?;
            let rows = json_rows(&out)?;
            let columns: Vec<Value> = out
                .schema
                .fields()
                .iter()
                .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
                .collect();
            Ok((columns, rows, truncated))
        })
        .await?;
    Ok(Json(json!({
        "columns": columns,
        "rows": rows,
        "truncated": truncated,
        "seconds": started.elapsed().as_secs_f64(),
    }))
    .into_response())
}

/// A result's rows as JSON objects (the query crate's JSON writer: the CLI's `--format json`).
fn json_rows(out: &shoplake_query::QueryOutput) -> Result<Value, ApiError> {
    let mut bytes = Vec::new();
    write(out, Format::Json, &mut bytes).map_err(query_failed)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the rows: {e}"),
        )
    })
}

fn lake_failed(e: shoplake_lake::Error) -> ApiError {
    tracing::error!("lake API: {e}");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

pub(crate) async fn catalog(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&c, &headers)?;
    let tables = lake(&c)?.catalog().await.map_err(lake_failed)?;
    Ok(Json(tables).into_response())
}

pub(crate) async fn imports(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&c, &headers)?;
    let imports = lake(&c)?.imports().await.map_err(lake_failed)?;
    Ok(Json(imports).into_response())
}

/// `GET /v1/quarantine` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuarantineParams {
    limit: Option<usize>,
}

pub(crate) async fn quarantine(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
    params: Result<Query<QuarantineParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&c, &headers)?;
    let Query(p) = params.map_err(|e| bad(e.body_text()))?;
    let limit = p.limit.unwrap_or(100).min(MAX_ROWS);
    let _turn = turn(&c).await?;
    let within = c.limits().query_timeout;
    let rows = c
        .on_query_runtime(within, "query", move |c| async move {
            let engine = engine(&c).await?.with_timeout(within);
            let out = engine
                .query(&format!(
                    "SELECT import_id, source, line, field, reason, raw, quarantined_at FROM \
                     quarantine ORDER BY quarantined_at DESC, source, line LIMIT {limit}"
                ))
                .await
                .map_err(query_failed)?;
            json_rows(&out)
        })
        .await?;
    Ok(Json(rows).into_response())
}

pub(crate) async fn stream(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    authorize(&c, &headers)?;
    let Some(slot) = c.stream_slot() else {
        c.metrics().stream_refused.inc();
        return Err(crate::collector::unavailable(
            &c,
            format!(
                "the event stream has its limit of {} subscribers: retry later",
                c.limits().max_stream_subscribers
            ),
        ));
    };
    let rx = c.live().subscribe();
    let events = futures::stream::unfold((rx, slot), |(mut rx, slot)| async move {
        loop {
            match rx.recv().await {
                Ok(m) => {
                    let data = serde_json::to_string(&m).unwrap_or_default();
                    let event = SseEvent::default().event(m.name()).data(data);
                    return Some((Ok(event), (rx, slot)));
                }
                // A slow reader skips what it missed and goes on.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    // Shutdown ends every stream, so their connections can close.
    let events = futures::StreamExt::take_until(events, c.closing());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
