//! The catalog (Glue Data Catalog): tables, schemas, versions, partitions, files, rows; and
//! the import history.

use std::collections::BTreeMap;

use arrow::array::{Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use futures::StreamExt;
use serde::Serialize;
use shoplake_events::time::format_rfc3339;

use crate::error::{Error, Result};
use crate::lake::{Lake, TableName};
use crate::profile::Profile;
use crate::read::{files, read_all};

/// One column of a table.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Delta type (`string`, `long`, `timestamp`, `decimal(12,2)`, `date`).
    pub data_type: String,
    /// Whether it may be null.
    pub nullable: bool,
}

/// One partition of a table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionInfo {
    /// The partition value (`2019-10-01`).
    pub value: String,
    /// Data files.
    pub files: u64,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The latest commit of a table.
#[derive(Debug, Clone, Serialize)]
pub struct CommitSummary {
    /// Table version it made.
    pub version: u64,
    /// When (RFC 3339).
    pub timestamp: Option<String>,
    /// The operation (`WRITE`, `OPTIMIZE`, `VACUUM END`, …).
    pub operation: Option<String>,
}

/// A table as the catalog shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    /// Table name.
    pub name: String,
    /// Where it is.
    pub location: String,
    /// Whether it exists yet.
    pub exists: bool,
    /// Its Delta version.
    pub version: Option<u64>,
    /// Its columns.
    pub schema: Vec<ColumnInfo>,
    /// Partition columns.
    pub partition_columns: Vec<String>,
    /// Partitions, when partitioned.
    pub partitions: Vec<PartitionInfo>,
    /// Live data files.
    pub files: u64,
    /// Rows (from the Delta log statistics).
    pub rows: u64,
    /// Bytes of live data files.
    pub bytes: u64,
    /// The latest commit.
    pub last_commit: Option<CommitSummary>,
}

/// One import, as recorded in `imports`.
#[derive(Debug, Clone, Serialize)]
pub struct ImportRecord {
    /// The import's id.
    pub import_id: String,
    /// What was imported.
    pub source: String,
    /// XXH3-128 of the source's bytes.
    pub fingerprint: String,
    /// Size of the source in bytes.
    pub bytes: u64,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    pub finished_at: String,
    /// Rows read.
    pub rows_read: u64,
    /// Rows added to `events`.
    pub rows_accepted: u64,
    /// Rows quarantined.
    pub rows_rejected: u64,
    /// Exact duplicates dropped.
    pub duplicates: u64,
    /// Seconds taken.
    pub seconds: f64,
    /// The data-quality profile.
    pub profile: Profile,
}

impl Lake {
    /// Describes one table.
    pub async fn table_info(&self, name: TableName) -> Result<TableInfo> {
        let location = self.table_url(name)?.to_string();
        let Some(table) = self.table(name).await? else {
            return Ok(TableInfo {
                name: name.to_string(),
                location,
                exists: false,
                version: None,
                schema: Vec::new(),
                partition_columns: Vec::new(),
                partitions: Vec::new(),
                files: 0,
                rows: 0,
                bytes: 0,
                last_commit: None,
            });
        };
        let state = table
            .snapshot()
            .map_err(Error::delta("reading the table state"))?;
        let schema = state
            .schema()
            .fields()
            .map(|f| ColumnInfo {
                name: f.name().to_owned(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            })
            .collect();
        let partition_columns: Vec<String> = state.metadata().partition_columns().to_vec();
        let partition_column = partition_columns.first().map(String::as_str);
        let files = files(&table, partition_column)?;
        let mut partitions: BTreeMap<String, PartitionInfo> = BTreeMap::new();
        for f in &files {
            if let Some(v) = &f.partition {
                let p = partitions
                    .entry(v.clone())
                    .or_insert_with(|| PartitionInfo {
                        value: v.clone(),
                        ..PartitionInfo::default()
                    });
                p.files += 1;
                p.rows += f.rows.unwrap_or(0);
                p.bytes += f.size;
            }
        }
        let mut history = table.history(Some(1));
        let last = history
            .next()
            .await
            .transpose()
            .map_err(Error::delta("reading history"))?;
        drop(history);
        let version = table.version();
        Ok(TableInfo {
            name: name.to_string(),
            location,
            exists: true,
            version,
            schema,
            partition_columns,
            partitions: partitions.into_values().collect(),
            files: files.len() as u64,
            rows: files.iter().map(|f| f.rows.unwrap_or(0)).sum(),
            bytes: files.iter().map(|f| f.size).sum(),
            last_commit: last.map(|c| CommitSummary {
                version: version.unwrap_or(0),
                timestamp: c.timestamp.map(|ms| format_rfc3339(ms * 1000)),
                operation: c.operation,
            }),
        })
    }

    /// Describes every table.
    pub async fn catalog(&self) -> Result<Vec<TableInfo>> {
        let mut out = Vec::new();
        for t in TableName::ALL {
            out.push(self.table_info(t).await?);
        }
        Ok(out)
    }

    /// The import history, oldest first.
    pub async fn imports(&self) -> Result<Vec<ImportRecord>> {
        let Some(table) = self.table(TableName::Imports).await? else {
            return Ok(Vec::new());
        };
        let columns = [
            "import_id",
            "source",
            "fingerprint",
            "bytes",
            "started_at",
            "finished_at",
            "rows_read",
            "rows_accepted",
            "rows_rejected",
            "duplicates",
            "seconds",
            "profile",
        ];
        let mut out = Vec::new();
        for b in read_all(&table, &columns).await? {
            let s = |n: &str| {
                b.column_by_name(n)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
            };
            let i = |n: &str| {
                b.column_by_name(n)
                    .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
            };
            let t = |n: &str| {
                b.column_by_name(n).and_then(|c| {
                    c.as_any()
                        .downcast_ref::<TimestampMicrosecondArray>()
                        .cloned()
                })
            };
            let (Some(id), Some(source), Some(fp), Some(profile)) =
                (s("import_id"), s("source"), s("fingerprint"), s("profile"))
            else {
                return Err(Error::Corrupt("imports has an unexpected schema".into()));
            };
            let secs = b
                .column_by_name("seconds")
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned());
            for r in 0..b.num_rows() {
                let int = |n: &str| {
                    i(n).filter(|a| a.is_valid(r))
                        .map_or(0, |a| a.value(r).max(0) as u64)
                };
                let ts = |n: &str| {
                    t(n).filter(|a| a.is_valid(r))
                        .map_or_else(String::new, |a| format_rfc3339(a.value(r)))
                };
                out.push(ImportRecord {
                    import_id: id.value(r).to_owned(),
                    source: source.value(r).to_owned(),
                    fingerprint: fp.value(r).to_owned(),
                    bytes: int("bytes"),
                    started_at: ts("started_at"),
                    finished_at: ts("finished_at"),
                    rows_read: int("rows_read"),
                    rows_accepted: int("rows_accepted"),
                    rows_rejected: int("rows_rejected"),
                    duplicates: int("duplicates"),
                    seconds: secs.as_ref().map_or(0.0, |a| a.value(r)),
                    profile: serde_json::from_str(profile.value(r)).unwrap_or_default(),
                });
            }
        }
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        Ok(out)
    }
}
