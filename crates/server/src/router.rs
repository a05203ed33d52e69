//! The routes of the HTTP API and the dashboard, the headers every answer carries, and the
//! small endpoints: `GET /healthz` (open), `GET /metrics` (`read`), `GET /openapi.json`
//! (any token).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::caller::{AnyToken, Caller, Read};
use crate::collector::Collector;
use crate::error::ApiError;

impl Collector {
    /// The routes: `POST /v1/events` (`ingest` scope), `GET /healthz` (open), `GET /metrics`
    /// (`read`), `GET /openapi.json` (any token).
    pub fn router(self: Arc<Self>) -> Router {
        let ingest = if self.process().roles.collector {
            post(crate::ingest::ingest)
        } else {
            post(not_collecting)
        };
        Router::new()
            .route("/v1/events", ingest)
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

async fn healthz(State(c): State<Arc<Collector>>) -> Response {
    let draining = c.draining();
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let process = c.process().describe();
    let body = json!({
        "status": if draining { "draining" } else { "ok" },
        "log_partitions": c.log().partitions(),
        "backlog_events": c.backlog().events(),
        "roles": process["roles"],
        "delivery": process["delivery"],
        "detector": process["detector"],
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(c): State<Arc<Collector>>, _: Caller<Read>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        c.metrics().render(),
    )
        .into_response()
}

/// The API description.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi(_: Caller<AnyToken>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint: see /openapi.json",
    )
    .into_response()
}

/// `POST /v1/events` on a process without the collector role.
async fn not_collecting(State(c): State<Arc<Collector>>) -> Response {
    let roles = c.process().roles;
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "this process does not take in events (its roles: {roles}): send them to one \
             with the collector role"
        ),
    )
    .into_response()
}

async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint: see /openapi.json").into_response()
}
