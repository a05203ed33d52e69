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
    /// An Arrow operation failed.
    #[error(transparent)]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    /// Reading or writing Parquet failed.
    #[error(transparent)]
    Parquet(#[from] deltalake::parquet::errors::ParquetError),
    /// A DataFusion plan over the lake failed.
    #[error(transparent)]
    DataFusion(Box<deltalake::datafusion::error::DataFusionError>),
    /// A table holds something shoplake did not write there (a column of another type, a
    /// file path that is not one).
    #[error("{0}")]
    Corrupt(String),
    /// An operating-system call failed (starting a thread).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The event log failed.
    #[error("{context}: {source}")]
    Log {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: shoplake_log::Error,
    },
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

    /// Delta refused a commit because a concurrent one updated an application transaction
    /// it writes (another delivery of the same consumer committed the same partition).
    pub fn is_concurrent_transaction(&self) -> bool {
        use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
        matches!(
            self,
            Error::Delta {
                source: deltalake::DeltaTableError::Transaction {
                    source: TransactionError::CommitConflict(
                        CommitConflictError::ConcurrentTransaction
                    )
                },
                ..
            }
        )
    }
}

impl From<deltalake::datafusion::error::DataFusionError> for Error {
    fn from(e: deltalake::datafusion::error::DataFusionError) -> Self {
        Error::DataFusion(Box::new(e))
    }
}
