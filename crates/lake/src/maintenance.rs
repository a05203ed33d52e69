//! Maintenance: compaction (bin-packing small files per partition) and vacuum. Both are safe
//! while readers run: compaction commits a new version that readers pick up when they refresh,
//! and vacuum only deletes files no version within the retention period refers to.

use std::future::{Future, IntoFuture};
use std::num::NonZeroU64;
use std::pin::Pin;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::import::TARGET_FILE_SIZE;
use crate::lake::{Lake, TableName};

/// What a compaction did.
#[derive(Debug, Clone, Serialize)]
pub struct CompactSummary {
    /// The table.
    pub table: String,
    /// Files written.
    pub files_added: u64,
    /// Small files replaced.
    pub files_removed: u64,
    /// Partitions rewritten.
    pub partitions: u64,
    /// The version the compaction made (`None` when there was nothing to do).
    pub version: Option<u64>,
}

/// What a vacuum did.
#[derive(Debug, Clone, Serialize)]
pub struct VacuumSummary {
    /// The table.
    pub table: String,
    /// Files deleted (or, in a dry run, that would be).
    pub files_deleted: u64,
    /// Whether nothing was deleted on purpose.
    pub dry_run: bool,
}

/// Bin-packs a table's small files; `.await` it.
#[must_use = "compaction does nothing until awaited"]
#[derive(Debug)]
pub struct CompactBuilder {
    lake: Lake,
    table: TableName,
    target_size: u64,
}

impl CompactBuilder {
    /// Target size of the files written (default 128 MiB).
    pub fn with_target_size(mut self, bytes: u64) -> Self {
        self.target_size = bytes;
        self
    }

    async fn run(self) -> Result<CompactSummary> {
        let Some(table) = self.lake.table(self.table).await? else {
            return Ok(CompactSummary {
                table: self.table.to_string(),
                files_added: 0,
                files_removed: 0,
                partitions: 0,
                version: None,
            });
        };
        let before = table.version();
        let target = NonZeroU64::new(self.target_size.max(1)).unwrap_or(NonZeroU64::MIN);
        let (table, metrics) = table
            .optimize()
            .with_target_size(target)
            .await
            .map_err(Error::delta(format!("compacting {}", self.table)))?;
        let after = table.version();
        Ok(CompactSummary {
            table: self.table.to_string(),
            files_added: metrics.num_files_added,
            files_removed: metrics.num_files_removed,
            partitions: metrics.partitions_optimized,
            version: if after != before { after } else { None },
        })
    }
}

impl IntoFuture for CompactBuilder {
    type Output = Result<CompactSummary>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// Deletes files no longer referenced within the retention period; `.await` it.
#[must_use = "vacuum does nothing until awaited"]
#[derive(Debug)]
pub struct VacuumBuilder {
    lake: Lake,
    table: TableName,
    retain: std::time::Duration,
    dry_run: bool,
}

impl VacuumBuilder {
    /// Only report what would be deleted.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    async fn run(self) -> Result<VacuumSummary> {
        let Some(table) = self.lake.table(self.table).await? else {
            return Ok(VacuumSummary {
                table: self.table.to_string(),
                files_deleted: 0,
                dry_run: self.dry_run,
            });
        };
        let retain = chrono::Duration::from_std(self.retain)
            .map_err(|e| Error::Argument(format!("retention out of range: {e}")))?;
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(retain)
            .with_enforce_retention_duration(false)
            .with_dry_run(self.dry_run)
            .await
            .map_err(Error::delta(format!("vacuuming {}", self.table)))?;
        Ok(VacuumSummary {
            table: self.table.to_string(),
            files_deleted: metrics.files_deleted.len() as u64,
            dry_run: metrics.dry_run,
        })
    }
}

impl IntoFuture for VacuumBuilder {
    type Output = Result<VacuumSummary>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl Lake {
    /// Compacts a table's small files.
    pub fn compact(&self, table: TableName) -> CompactBuilder {
        CompactBuilder {
            lake: self.clone(),
            table,
            target_size: TARGET_FILE_SIZE,
        }
    }

    /// Deletes unreferenced files older than `retain`.
    pub fn vacuum(&self, table: TableName, retain: std::time::Duration) -> VacuumBuilder {
        VacuumBuilder {
            lake: self.clone(),
            table,
            retain,
            dry_run: false,
        }
    }

    /// Deletes the rows of `quarantine` quarantined before `cutoff` (µs since the epoch), in
    /// one commit (the delivery positions the table holds are kept); returns how many rows
    /// went. Nothing to delete commits nothing.
    pub async fn prune_quarantine(&self, cutoff: i64) -> Result<u64> {
        let Some(table) = self.table(TableName::Quarantine).await? else {
            return Ok(0);
        };
        let at = shoplake_events::time::format_rfc3339(cutoff);
        let (_, metrics) = table
            .delete()
            .with_predicate(format!("quarantined_at < '{at}'"))
            .await
            .map_err(Error::delta("pruning quarantine"))?;
        Ok(metrics.num_deleted_rows.unwrap_or(0) as u64)
    }
}
