//! `POST /v1/events` (Kinesis): validates events, stamps them with the connection's address
//! and user agent, and answers only once the valid ones are durable in the event log. Refused
//! rows go to the log under [`QUARANTINE_KEY`], from where delivery writes them to
//! `quarantine`. Reading the body is async; gunzip, decoding, validation and encoding run on
//! a blocking thread, at most `decode_concurrency` requests at once.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shoplake_events::record::RecordFormat;
use shoplake_events::{Decoder, Event, Field, Format, Reject, Row, Validator};
use shoplake_lake::QuarantinedRow;
use shoplake_log::{QUARANTINE_KEY, Record};

use crate::auth::client_ip;
use crate::caller::{Caller, Ingest};
use crate::collector::Collector;
use crate::error::{ApiError, RejectedRow};
use crate::metrics::StatusLabel;

/// The answer to an ingest request.
#[derive(Debug, Serialize)]
pub struct Accepted {
    /// Events now durable in the log.
    pub accepted: usize,
    /// The rows refused.
    pub rejected: Vec<RejectedRow>,
}

fn format_of(headers: &HeaderMap) -> Result<Format, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "missing Content-Type: send application/json, application/x-ndjson or text/csv",
        ));
    };
    let ct = ct.to_str().unwrap_or_default();
    Format::of_media_type(ct).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported Content-Type {ct:?}: send application/json, application/x-ndjson or text/csv"
            ),
        )
    })
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
    if let Some(len) = content_length(headers)
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
        unzipped = gunzip(body, c.limits().max_body_bytes)?;
        &unzipped[..]
    } else {
        body
    };
    let max_rows = c.limits().max_rows;
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
            Row::Event(e) => out.event(e, line, &mut stamp, c.validator(), c.record_format()),
            Row::Reject(r) => out.reject(r, &stamp),
        }
        Ok(())
    };
    let mut rows = Decoder::new(format, body, c.validator().clone())
        .map_err(bad)?
        .with_max_rows(max_rows as u64);
    while let Some(row) = rows.next_row().map_err(bad)? {
        take(row, rows.line(), &mut out)?;
    }
    Ok(out)
}

/// The handler: counts every answer by status and its latency.
pub(crate) async fn ingest(
    State(c): State<Arc<Collector>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Result<Caller<Ingest>, ApiError>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let answer = match caller {
        Ok(Caller(token, _)) => ingest_inner(&c, &token, peer.ip(), request).await,
        Err(denied) => Err(denied),
    };
    let response = match answer {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    c.metrics()
        .requests
        .get_or_create(&StatusLabel {
            status: response.status().as_u16(),
        })
        .inc();
    c.metrics().latency.observe(started.elapsed().as_secs_f64());
    response
}

/// The body's declared `Content-Length`, when it is a number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
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
    token: &crate::auth::Token,
    peer: IpAddr,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    c.admit()?;
    let format = format_of(headers)?;
    let gzip = is_gzip(headers)?;
    let declared = content_length(headers).unwrap_or(c.limits().max_body_bytes as u64);
    let _room = c
        .body_room(usize::try_from(declared).unwrap_or(usize::MAX))
        .await?;
    let limits = c.limits();
    let body = body_bytes(headers, body, limits.max_body_bytes, limits.body_timeout).await?;
    let ip = client_ip(peer, forwarded_for(headers).as_deref(), c.trusted());
    let stamp = Stamp {
        ip,
        agent: user_agent(headers),
        forward: token.forward,
        source: format!("collector {ip} token {}", token.name),
    };
    let permit = c.decode_slot().await?;
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
    append(c, records).await?;
    c.backlog().appended(accepted, bytes, event_bytes);
    let metrics = c.metrics();
    metrics.accepted.inc_by(accepted as u64);
    metrics.rejected.inc_by(rejected.len() as u64);
    if accepted == 0 {
        return Err(
            ApiError::bad("no valid events: every row was refused (see rejected)")
                .with_rejected(rejected),
        );
    }
    Ok(axum::Json(Accepted { accepted, rejected }).into_response())
}

/// Appends a request's records to the log: durable once this returns.
async fn append(c: &Collector, records: Vec<Record>) -> Result<(), ApiError> {
    c.log()
        .append(records)
        .await
        .map(drop)
        .map_err(|e| match e {
            // Backpressure, not a failure: delivery is behind (the lake may be down).
            shoplake_log::Error::Full(why) => {
                c.metrics().log_full.inc();
                c.unavailable(why)
            }
            // A record the log cannot take (past its size): the request's fault, not to retry.
            shoplake_log::Error::Argument(why) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, why),
            e => {
                tracing::error!(error = %e, "appending to the log");
                c.unavailable(format!("the event log could not store the events: {e}"))
            }
        })
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
