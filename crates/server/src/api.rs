//! The alerts API: `GET /v1/alerts` (`read`), `GET /v1/alerts/{id}` (`read`),
//! `POST /v1/alerts/{id}/ack` and `/resolve` (`admin`), `GET /v1/lists` (`read`), and
//! `POST` / `DELETE /v1/lists/{allow|deny}` with `{"key_type", "key"}` (`admin`; the detector
//! applies lists within seconds).

use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shoplake_alerts::{AlertStore, Cursor, List, Page};
use shoplake_detect::{KeyType, Severity};
use shoplake_events::time::parse_timestamp;

use crate::caller::{Admin, Caller, Read};
use crate::collector::Collector;
use crate::error::ApiError;

fn store(c: &Collector) -> Result<&Arc<dyn AlertStore>, ApiError> {
    c.store().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "detection is off on this server: no alert store",
        )
    })
}

/// Filters of `GET /v1/alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertQuery {
    /// `open` (default: not resolved) or `all`.
    status: Option<String>,
    /// The least severity (`low`, `medium`, `high`).
    severity: Option<String>,
    /// With `key`: one key's incidents.
    key_type: Option<String>,
    key: Option<String>,
    /// Opened at or after (RFC 3339 or `YYYY-MM-DD HH:MM:SS UTC`), with `status=all`.
    from: Option<String>,
    /// Opened before.
    to: Option<String>,
    /// At most this many (default 1000, at most 10 000).
    limit: Option<usize>,
    /// With `status=all`: the page after this one (the `next` of a `Link` header).
    cursor: Option<String>,
    /// With `status=all`: `oldest` (default) or `newest` first.
    order: Option<String>,
}

/// Incidents answered by default, and at most, per request.
const DEFAULT_ALERTS: usize = 1_000;
const MAX_ALERTS: usize = 10_000;

fn key_type(s: &str) -> Result<KeyType, ApiError> {
    match s {
        "user_id" => Ok(KeyType::UserId),
        "client_ip" => Ok(KeyType::ClientIp),
        "user_session" => Ok(KeyType::UserSession),
        "global" => Ok(KeyType::Global),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("key_type {s:?}: expected user_id, client_ip, user_session or global"),
        )),
    }
}

pub(crate) async fn list_alerts(
    State(c): State<Arc<Collector>>,
    _: Caller<Read>,
    query: Result<Query<AlertQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad(e.body_text()))?;
    let store = store(&c)?;
    let min = match q.severity.as_deref() {
        None => Severity::Low,
        Some(s) => Severity::parse(s).ok_or_else(|| {
            ApiError::bad(format!("severity {s:?}: expected low, medium or high"))
        })?,
    };
    let limit = q.limit.unwrap_or(DEFAULT_ALERTS).clamp(1, MAX_ALERTS);
    let mut next = None;
    let mut out = match (q.key_type.as_deref(), q.key.as_deref()) {
        (Some(t), Some(k)) => store.by_key(key_type(t)?, k, limit).await?,
        (None, None) => match q.status.as_deref() {
            None | Some("open") => store.open(min, limit).await?,
            Some("all") => {
                let time = |name: &str, v: &Option<String>, default: i64| match v {
                    None => Ok(default),
                    Some(s) => parse_timestamp(s)
                        .ok_or_else(|| ApiError::bad(format!("{name} {s:?}: not a timestamp"))),
                };
                let from = time("from", &q.from, i64::MIN)?;
                let to = time("to", &q.to, i64::MAX)?;
                let after = match q.cursor.as_deref() {
                    None => None,
                    Some(c) => Some(
                        Cursor::decode(c)
                            .ok_or_else(|| ApiError::bad(format!("cursor {c:?}: not a cursor")))?,
                    ),
                };
                let newest_first = match q.order.as_deref() {
                    None | Some("oldest") => false,
                    Some("newest") => true,
                    Some(o) => {
                        return Err(ApiError::bad(format!(
                            "order {o:?}: expected oldest or newest"
                        )));
                    }
                };
                let page = Page {
                    after,
                    limit,
                    newest_first,
                };
                let got = store.between(from, to, &page).await?;
                if got.len() == limit
                    && let Some(last) = got.last()
                {
                    next = Some(next_link(&q, &Cursor::after(last), limit));
                }
                got
            }
            Some(s) => return Err(ApiError::bad(format!("status {s:?}: expected open or all"))),
        },
        _ => return Err(ApiError::bad("key_type and key go together".to_owned())),
    };
    out.retain(|i| Severity::parse(&i.severity).unwrap_or(Severity::Low) >= min);
    let mut response = Json(out).into_response();
    if let Some(link) = next
        && let Ok(v) = axum::http::HeaderValue::from_str(&link)
    {
        response.headers_mut().insert(header::LINK, v);
    }
    Ok(response)
}

/// The `Link` header to the next page of a `status=all` listing (the same filters, the
/// cursor after the last incident answered).
fn next_link(q: &AlertQuery, after: &Cursor, limit: usize) -> String {
    let mut params = vec![("status", "all".to_owned())];
    for (name, v) in [
        ("severity", &q.severity),
        ("from", &q.from),
        ("to", &q.to),
        ("order", &q.order),
    ] {
        if let Some(v) = v {
            params.push((name, v.clone()));
        }
    }
    params.push(("limit", limit.to_string()));
    params.push(("cursor", after.encode()));
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect();
    format!("</v1/alerts?{}>; rel=\"next\"", query.join("&"))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) async fn get_alert(
    State(c): State<Arc<Collector>>,
    _: Caller<Read>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match store(&c)?.get(&id).await? {
        Some(i) => Ok(Json(i).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no incident {id}"),
        )),
    }
}

pub(crate) async fn act_on_alert(
    State(c): State<Arc<Collector>>,
    caller: Caller<Admin>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let store = store(&c)?;
    let now = c.clock().now_micros();
    let done = match action.as_str() {
        "ack" => store.acknowledge(&id, caller.name(), now).await,
        "resolve" => store.resolve(&id, caller.name(), now).await,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no action {action:?}: ack or resolve"),
            ));
        }
    }?;
    if !done {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no incident {id}"),
        ));
    }
    let i = store.get(&id).await?;
    Ok(Json(i).into_response())
}

/// The body of `POST`/`DELETE /v1/lists/{list}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListEntry {
    key_type: String,
    key: String,
}

pub(crate) async fn get_lists(
    State(c): State<Arc<Collector>>,
    _: Caller<Read>,
) -> Result<Response, ApiError> {
    let listed = store(&c)?.listed().await?;
    Ok(Json(listed).into_response())
}

pub(crate) async fn change_list(
    State(c): State<Arc<Collector>>,
    // The token first: nothing of the body is read for a request without one.
    caller: Caller<Admin>,
    method: axum::http::Method,
    Path(list): Path<String>,
    body: Result<Json<ListEntry>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let list = List::from_str(&list).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e))?;
    let Json(entry) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    let kt = key_type(&entry.key_type)?;
    let valid = match kt {
        KeyType::UserId => entry.key.parse::<i64>().is_ok_and(|u| u > 0),
        KeyType::ClientIp => entry.key.parse::<std::net::IpAddr>().is_ok(),
        _ => false,
    };
    if !valid {
        return Err(ApiError::bad(format!(
            "{} {:?}: lists hold positive user ids and IP addresses",
            entry.key_type, entry.key
        )));
    }
    let on = method == axum::http::Method::POST;
    let now = c.clock().now_micros();
    store(&c)?
        .set_listed(list, kt, &entry.key, on, caller.name(), now)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
