//! SQL over the shoplake lake and the four reports (Athena's part).
//!
//! [`Engine`] is a DataFusion session with every lake table registered (`events`,
//! `quarantine`, `imports`, `bot_flags`, the marts), the functions the report definitions
//! need (`local_time`, `local_day`, `category_level`), read-only and time-limited. [`reports`] computes visitors, abandoned
//! carts, top categories and brands exactly as DESIGN.md section 4 defines them; [`output`]
//! writes results as a table, CSV, JSON or Parquet.

mod columns;
mod engine;
mod error;
mod folds;
pub mod history;
pub mod marts;
pub mod output;
mod range;
mod relations;
pub mod reports;
mod stamp;
pub mod udf;

pub use engine::{DEFAULT_TIMEOUT, Engine, EngineResources, QueryOutput, check_read_only};
pub use error::{Error, Result};
pub use range::ReportRange;
