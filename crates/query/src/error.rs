//! The query engine's error type.

use deltalake::datafusion::error::DataFusionError;

/// What went wrong answering a query or a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement is not a read-only query.
    #[error("{0}")]
    ReadOnly(String),
    /// The query ran past the time limit.
    #[error("the query ran longer than the {0:?} time limit")]
    Timeout(std::time::Duration),
    /// A bad argument: zone, date range, level, metric.
    #[error("{0}")]
    Argument(String),
    /// The statement does not plan: its syntax, a table, column or function it names, a type
    /// (the caller's mistake; the message says where).
    #[error("{0}")]
    Plan(Box<DataFusionError>),
    /// The query failed on the data it met (a cast, an argument out of range).
    #[error("{0}")]
    Execution(Box<DataFusionError>),
    /// Reading the lake's files failed (the storage's trouble, not the query's).
    #[error("{0}")]
    Storage(Box<DataFusionError>),
    /// The query needed more memory or spill space than it may have.
    #[error("{0}")]
    ResourcesExhausted(Box<DataFusionError>),
    /// A bug in the engine or in shoplake (should not happen).
    #[error("internal error: {0}")]
    Internal(Box<DataFusionError>),
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
    /// Sorts DataFusion's error by its root cause.
    fn from(e: DataFusionError) -> Self {
        match kind(&e) {
            Kind::Plan => Error::Plan(Box::new(e)),
            Kind::Execution => Error::Execution(Box::new(e)),
            Kind::Storage => Error::Storage(Box::new(e)),
            Kind::Resources => Error::ResourcesExhausted(Box::new(e)),
            Kind::Internal => Error::Internal(Box::new(e)),
        }
    }
}

enum Kind {
    Plan,
    Execution,
    Storage,
    Resources,
    Internal,
}

fn kind(e: &DataFusionError) -> Kind {
    use deltalake::arrow::error::ArrowError;
    match e.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => Kind::Plan,
        DataFusionError::ResourcesExhausted(_) => Kind::Resources,
        DataFusionError::ObjectStore(_)
        | DataFusionError::IoError(_)
        | DataFusionError::ParquetError(_) => Kind::Storage,
        DataFusionError::ArrowError(a, _) => match a.as_ref() {
            ArrowError::IoError(..) | ArrowError::ParquetError(_) => Kind::Storage,
            _ => Kind::Execution,
        },
        DataFusionError::External(x) if x.is::<deltalake::DeltaTableError>() => Kind::Storage,
        DataFusionError::Internal(_) => Kind::Internal,
        _ => Kind::Execution,
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
        Error::Storage(Box::new(DataFusionError::External(Box::new(e))))
    }
}
