//! The query engine's error type.

use deltalake::datafusion::error::DataFusionError;

/// What went wrong answering a query or a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement is not a read-only query.
    #[error("{0}")]
    ReadOnly(String),
    /// The query ran past the time limit.
    #[error("the query ran longer than the {0:?} time limit (raise it with --timeout)")]
    Timeout(std::time::Duration),
    /// A bad argument: zone, date range, level, metric.
    #[error("{0}")]
    Argument(String),
    /// DataFusion refused or failed the query (the message says where).
    #[error("{0}")]
    Sql(Box<DataFusionError>),
    /// The lake failed.
    #[error(transparent)]
    Lake(Box<shoplake_lake::Error>),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(String),
    /// The reader of the output went away (a closed pipe).
    #[error("the output was closed")]
    Closed,
}

/// The query engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Error::Sql(Box::new(e))
    }
}

impl From<shoplake_lake::Error> for Error {
    fn from(e: shoplake_lake::Error) -> Self {
        Error::Lake(Box::new(e))
    }
}

impl From<deltalake::arrow::error::ArrowError> for Error {
    fn from(e: deltalake::arrow::error::ArrowError) -> Self {
        DataFusionError::ArrowError(Box::new(e), None).into()
    }
}

impl From<deltalake::DeltaTableError> for Error {
    fn from(e: deltalake::DeltaTableError) -> Self {
        DataFusionError::External(Box::new(e)).into()
    }
}
