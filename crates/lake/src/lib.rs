//! The shoplake lakehouse: Delta Lake tables under one root URL (a local directory or
//! `s3://bucket/prefix`), the batch import that fills them, the data-quality profile, the
//! catalog, and maintenance (compaction, vacuum).
//!
//! Tables (each at `<root>/<name>`):
//! - `events`: clean events, partitioned by `event_date` (UTC), never an exact duplicate.
//! - `quarantine`: every refused row with its source, line, field, reason and raw text.
//! - `imports`: one row per import, with its counts and its data-quality profile.
//! - `bot_flags`: users that real-time detection judged bots, per UTC day and incident.

mod catalog;
mod changes;
mod config;
mod dedupe;
mod deliver;
mod error;
mod flags;
mod import;
pub mod keyed;
mod lake;
mod maintenance;
pub mod profile;
mod read;
mod s3;
pub mod schema;

pub use catalog::{ColumnInfo, CommitSummary, ImportRecord, PartitionInfo, TableInfo};
pub use changes::{AddedFile, Changes};
pub use config::{LakeConfig, S3Config};
pub use deliver::{COLLECTOR_IMPORT_ID, Delivered, Delivery, Pumped, QuarantinedRow};
pub use error::{Error, Result};
pub use flags::BotFlag;
pub use import::{ImportBuilder, ImportProgress, ImportSource, ImportSummary, TARGET_FILE_SIZE};
pub use lake::{Lake, LakeOptions, Lease, TableName};
pub use maintenance::{CompactBuilder, CompactSummary, VacuumBuilder, VacuumSummary};
