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
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use shoplake_lake::Lake;
use shoplake_query::Engine;
use shoplake_query::output::{Format, write};
use shoplake_query::reports::{REPORTS, ReportParams, ReportRequest};
use tokio::sync::broadcast;

use crate::caller::{Caller, Read};
use crate::collector::Collector;
use crate::error::ApiError;

/// Rows `POST /v1/query` answers by default, and at most.
const DEFAULT_ROWS: usize = 1_000;
const MAX_ROWS: usize = 100_000;

fn lake(c: &Collector) -> Result<&Lake, ApiError> {
    c.lake()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this server serves no lake"))
}

async fn engine(c: &Collector) -> Result<Engine, ApiError> {
    let lake = lake(c)?;
    match c.engines() {
        Some(resources) => Engine::open_shared(lake, resources).await,
        None => Engine::open(lake).await,
    }
    .map_err(ApiError::from)
}

/// A turn among the queries and reports running at once (counted in
/// `shoplake_queries_running` while held).
struct Turn {
    _permit: tokio::sync::OwnedSemaphorePermit,
    running: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.running.dec();
    }
}

/// A turn among the queries and reports running at once, or 429 + `Retry-After`.
async fn turn(c: &Collector) -> Result<Turn, ApiError> {
    let turn = c.query_turn().await.map(|permit| {
        let running = c.metrics().queries_running.clone();
        running.inc();
        Turn {
            _permit: permit,
            running,
        }
    });
    turn.ok_or_else(|| {
        c.metrics().queries_refused.inc();
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} queries and reports are running, the most at once: retry later",
                c.limits().query_concurrency
            ),
        )
        .retry_after(c.limits().retry_after_secs)
    })
}

pub(crate) async fn report(
    State(c): State<Arc<Collector>>,
    _: Caller<Read>,
    Path(kind): Path<String>,
    params: Result<Query<ReportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad(e.body_text()))?;
    let request = ReportRequest::parse(&kind, &p).map_err(|e| {
        if REPORTS.contains(&kind.as_str()) {
            ApiError::from(e)
        } else {
            ApiError::new(StatusCode::NOT_FOUND, e.to_string())
        }
    })?;
    let (within, lag) = (c.limits().report_timeout, c.limits().report_lag);
    let _turn = turn(&c).await?;
    let (answer, as_of) = c
        .on_query_runtime(within, "report", move |c| async move {
            let engine = engine(&c).await?.with_timeout(within);
            Ok(request.run_recent(&engine, lag).await?)
        })
        .await?;
    let mut response = Json(answer).into_response();
    // What the figures reflect: the `events` version, and how far behind the latest the
    // marts read were (a refresh catching up).
    let headers = response.headers_mut();
    if let Some(v) = as_of.events_version {
        headers.insert("shoplake-events-version", v.into());
    }
    if let Some(lag) = as_of.lag
        && let Ok(v) = format!("{:.1}", lag.as_secs_f64()).parse()
    {
        headers.insert("shoplake-lag-seconds", v);
    }
    Ok(response)
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
    // The token first: nothing of the body is read for a request without one.
    _: Caller<Read>,
    body: Result<Json<QueryBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(q) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_ROWS).min(MAX_ROWS);
    let within = c.limits().query_timeout;
    let _turn = turn(&c).await?;
    let started = Instant::now();
    // Planning, execution and encoding on the query runtime, all within the limit.
    let (columns, rows, truncated) = c
        .on_query_runtime(within, "query", move |c| async move {
            let engine = engine(&c).await?.with_timeout(within);
            let (out, truncated) = engine.query_limited(&q.sql, limit).await?;
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
    write(out, Format::Json, &mut bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the rows: {e}"),
        )
    })
}

pub(crate) async fn catalog(
    State(c): State<Arc<Collector>>,
    _: Caller<Read>,
) -> Result<Response, ApiError> {
    let tables = lake(&c)?.catalog().await?;
    Ok(Json(tables).into_response())
}

pub(crate) async fn imports(
    State(c): State<Arc<Collector>>,
    _: Caller<Read>,
) -> Result<Response, ApiError> {
    let imports = lake(&c)?.imports().await?;
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
    _: Caller<Read>,
    params: Result<Query<QuarantineParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad(e.body_text()))?;
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
                .await?;
            json_rows(&out)
        })
        .await?;
    Ok(Json(rows).into_response())
}

pub(crate) async fn stream(
    State(c): State<Arc<Collector>>,
    _: Caller<Read>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Some(slot) = c.stream_slot() else {
        c.metrics().stream_refused.inc();
        return Err(c.unavailable(format!(
            "the event stream has its limit of {} subscribers: retry later",
            c.limits().max_stream_subscribers
        )));
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
