//! The crate's error type.

/// What went wrong with an input as a whole (row-level problems are [`crate::Reject`]s).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The CSV header is missing or lacks a required column.
    #[error("bad CSV header: {0}")]
    Header(String),
    /// A JSON document could not be read at all.
    #[error("bad JSON: {0}")]
    Json(String),
    /// The input holds more rows than the reader was allowed to read.
    #[error("more than {limit} rows")]
    TooManyRows {
        /// The limit.
        limit: u64,
    },
    /// An Arrow batch does not have the event schema.
    #[error("bad Arrow batch: {0}")]
    Arrow(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Arrow(e.to_string())
    }
}
