//! The one error answer of the HTTP API, and the one place that says which status each of
//! the engine's, the lake's and the alert store's errors gets: the caller's mistake is a 4xx,
//! a storage outage a 503 (retry later), a bug a 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::auth::Denied;

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

impl ApiError {
    /// 400: the request is wrong.
    pub(crate) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 503 with `Retry-After`: try again in `retry_after` seconds.
    pub(crate) fn unavailable(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(retry_after)
    }

    /// The same answer with `Retry-After`.
    pub(crate) fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// The same answer listing the refused rows (as an ingest answer does).
    pub(crate) fn with_rejected(mut self, rejected: Vec<RejectedRow>) -> ApiError {
        self.rejected = rejected;
        self
    }

    /// A trouble of the server's (5xx) is logged where it is mapped.
    fn logged(self, what: &str, error: &dyn std::error::Error) -> ApiError {
        if self.status.is_server_error() {
            tracing::error!(error = %error, component = what, "a request failed");
        }
        self
    }
}

/// Seconds after which a storage or resources outage is worth retrying.
const STORAGE_RETRY_SECS: u64 = 5;

impl From<shoplake_query::Error> for ApiError {
    fn from(e: shoplake_query::Error) -> ApiError {
        use shoplake_query::Error as E;
        let status = match &e {
            E::Lake(lake) => return ApiError::from_lake(lake),
            E::Argument(_) | E::ReadOnly(_) | E::Plan(_) | E::Execution(_) => {
                StatusCode::BAD_REQUEST
            }
            E::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            E::Storage(_) | E::ResourcesExhausted(_) => {
                return ApiError::unavailable(e.to_string(), STORAGE_RETRY_SECS)
                    .logged("query engine", &e);
            }
            E::Output(_) | E::Closed | E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string()).logged("query engine", &e)
    }
}

impl From<shoplake_lake::Error> for ApiError {
    fn from(e: shoplake_lake::Error) -> ApiError {
        ApiError::from_lake(&e)
    }
}

impl ApiError {
    fn from_lake(e: &shoplake_lake::Error) -> ApiError {
        use shoplake_lake::Error as E;
        let status = match e {
            E::Argument(_) | E::Input { .. } => StatusCode::BAD_REQUEST,
            E::Conflict(_) => StatusCode::CONFLICT,
            // Reading and writing files: a store that is down or slow.
            E::Location { .. }
            | E::Delta { .. }
            | E::Arrow(_)
            | E::Parquet(_)
            | E::DataFusion(_)
            | E::Store { .. }
            | E::Io { .. }
            | E::Log { .. } => {
                return ApiError::unavailable(e.to_string(), STORAGE_RETRY_SECS).logged("lake", e);
            }
            E::Corrupt(_) | E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string()).logged("lake", e)
    }
}

impl From<shoplake_alerts::Error> for ApiError {
    fn from(e: shoplake_alerts::Error) -> ApiError {
        match &e {
            shoplake_alerts::Error::Argument(m) => ApiError::bad(m.clone()),
            shoplake_alerts::Error::Database(_) => {
                ApiError::unavailable(format!("the alert store failed: {e}"), STORAGE_RETRY_SECS)
                    .logged("alert store", &e)
            }
        }
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

/// What can go wrong running the server (its library code; the HTTP answers are
/// [`ApiError`]s).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The lake failed.
    #[error(transparent)]
    Lake(Box<shoplake_lake::Error>),
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] shoplake_log::Error),
    /// The alert store failed.
    #[error(transparent)]
    Alerts(#[from] shoplake_alerts::Error),
    /// The query engine failed.
    #[error(transparent)]
    Query(#[from] shoplake_query::Error),
    /// A notification channel is not usable as configured.
    #[error("notify channel {channel}: {reason}")]
    Notify {
        /// The channel's name.
        channel: String,
        /// Why.
        reason: String,
    },
    /// The last delivery before shutdown failed; the log keeps the events.
    #[error(
        "the last delivery before shutdown failed ({0}); the log keeps the events and the next \
         start delivers them"
    )]
    FinalDelivery(Box<Error>),
    /// A task of the server's stopped abnormally (a bug).
    #[error("the {what} task failed: {source}")]
    Task {
        /// Which task.
        what: &'static str,
        /// How it ended.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The same error, with what was being done.
    #[error("{context}: {source}")]
    Context {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<Error>,
    },
}

/// The server's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<shoplake_lake::Error> for Error {
    fn from(e: shoplake_lake::Error) -> Error {
        Error::Lake(Box::new(e))
    }
}

impl Error {
    /// An I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// Adds what was being done to an error, as `anyhow`'s `context` does, keeping its type.
pub(crate) trait Context<T> {
    /// With `context`.
    fn context(self, context: impl Into<String>) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: context.into(),
            source: Box::new(e.into()),
        })
    }
}
