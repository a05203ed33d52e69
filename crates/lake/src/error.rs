//! The lake's error type.

/// What went wrong in the lake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lake root is not a usable location.
    #[error("bad lake location {location:?}: {reason}")]
    Location {
        /// What was given.
        location: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A Delta Lake operation failed.
    #[error("{context}: {source}")]
    Delta {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: deltalake::DeltaTableError,
    },
    /// Reading an input failed as a whole (rows before the failure are not committed).
    #[error("{source_name}: {source}")]
    Input {
        /// The input.
        source_name: String,
        /// The underlying error.
        #[source]
        source: shoplake_events::Error,
    },
    /// An Arrow or Parquet operation failed.
    #[error("{0}")]
    Arrow(String),
    /// Another writer changed the same data while this operation ran.
    #[error("{0}")]
    Conflict(String),
    /// A bug: should not happen.
    #[error("internal error: {0}")]
    Internal(String),
    /// A bad argument (a consumer name).
    #[error("{0}")]
    Argument(String),
    /// The object store failed (shoplake's own files beside the tables).
    #[error("{context}: {source}")]
    Store {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },
}

/// The lake's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a Delta error with what was being done.
    pub(crate) fn delta(
        context: impl Into<String>,
    ) -> impl FnOnce(deltalake::DeltaTableError) -> Error {
        let context = context.into();
        move |source| Error::Delta { context, source }
    }
}

impl From<deltalake::arrow::error::ArrowError> for Error {
    fn from(e: deltalake::arrow::error::ArrowError) -> Self {
        Error::Arrow(e.to_string())
    }
}

impl From<deltalake::parquet::errors::ParquetError> for Error {
    fn from(e: deltalake::parquet::errors::ParquetError) -> Self {
        Error::Arrow(e.to_string())
    }
}

impl From<deltalake::datafusion::error::DataFusionError> for Error {
    fn from(e: deltalake::datafusion::error::DataFusionError) -> Self {
        Error::Arrow(e.to_string())
    }
}
