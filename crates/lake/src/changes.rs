//! What a table's commits changed between two versions, read from its Delta log: the files
//! added with new rows (`dataChange = true`), so that tables derived from it (the marts) can
//! fold in those rows alone. Compaction's rewrites (`dataChange = false`) change no rows and
//! are passed over; anything that removes or rewrites rows says so, and the derived tables are
//! then rebuilt whole.

use std::collections::HashMap;

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use deltalake::kernel::Action;
use object_store::ObjectStoreExt as _;

use crate::error::{Error, Result};
use crate::lake::{Lake, TableName};
use crate::read::read_columns;

/// A data file a commit added with new rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedFile {
    /// Its path in the table, as the log names it (relative, percent-encoded).
    pub path: String,
    /// Its partition values.
    pub partition: HashMap<String, Option<String>>,
    /// Rows, when the log's statistics say.
    pub rows: Option<i64>,
    /// The version that added it.
    pub version: i64,
}

/// What changed in a table between two versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Only rows added, in these files (a file compacted since is still read from its own
    /// copy, which vacuum keeps for its retention period).
    Added(Vec<AddedFile>),
    /// Rows were removed or rewritten, the table's schema or settings changed, or the log no
    /// longer holds every commit in between (or a file they added is gone): whatever derives
    /// from the table must be recomputed from it whole.
    Rewritten {
        /// Why, for a log line.
        reason: String,
    },
}

impl Changes {
    /// The rows added, summed over the files whose statistics count them (`None` when a file's
    /// do not).
    pub fn added_rows(&self) -> Option<i64> {
        match self {
            Changes::Added(files) => files.iter().map(|f| f.rows).sum(),
            Changes::Rewritten { .. } => None,
        }
    }
}

impl Lake {
    /// What the commits after version `since` up to `to` (included) changed in a table.
    /// `since` at or past `to` is no change.
    pub async fn changes(&self, table: TableName, since: i64, to: i64) -> Result<Changes> {
        if since >= to {
            return Ok(Changes::Added(Vec::new()));
        }
        let Some(t) = self.unloaded(table).await? else {
            return Ok(Changes::Rewritten {
                reason: format!("{table} does not exist"),
            });
        };
        if since < 0 {
            return Ok(Changes::Rewritten {
                reason: format!("{table} was created after"),
            });
        }
        let log = t.log_store();
        let mut added = Vec::new();
        for version in (since + 1)..=to {
            let Some(bytes) = log
                .read_commit_entry(version as u64)
                .await
                .map_err(Error::delta(format!("reading commit {version} of {table}")))?
            else {
                return Ok(Changes::Rewritten {
                    reason: format!("commit {version} of {table} is no longer in its log"),
                });
            };
            let actions = deltalake::logstore::get_actions(version as u64, &bytes)
                .map_err(Error::delta(format!("reading commit {version} of {table}")))?;
            if let Some(reason) = rewrite_in(&actions) {
                return Ok(Changes::Rewritten {
                    reason: format!("commit {version} of {table} {reason}"),
                });
            }
            for action in actions {
                if let Action::Add(a) = action
                    && a.data_change
                {
                    added.push(AddedFile {
                        rows: rows_of(a.stats.as_deref()),
                        partition: a.partition_values,
                        path: a.path,
                        version,
                    });
                }
            }
        }
        // A file added and later compacted away stays readable until vacuum deletes it.
        let store = log.object_store(None);
        for f in &added {
            // The log's store is rooted at the table: paths relative to it, percent-decoded.
            let location = object_store::path::Path::from_url_path(&f.path)
                .map_err(|e| Error::Corrupt(format!("file {} in the log: {e}", f.path)))?;
            if let Err(e) = store.head(&location).await {
                return Ok(Changes::Rewritten {
                    reason: format!(
                        "file {} added in version {} is gone ({e})",
                        f.path, f.version
                    ),
                });
            }
        }
        Ok(Changes::Added(added))
    }

    /// The rows of files [`Lake::changes`] listed, with every column of the table's schema
    /// (partition columns filled from each file's values), cast to the schema's types.
    pub async fn read_added(
        &self,
        table: TableName,
        files: &[AddedFile],
    ) -> Result<Vec<RecordBatch>> {
        let Some(t) = self.unloaded(table).await? else {
            return Ok(Vec::new());
        };
        let schema = table.schema();
        let partitions = table.partition_columns();
        let stored: Vec<&str> = schema
            .fields()
            .iter()
            .filter(|f| !partitions.contains(f.name()))
            .map(|f| f.name().as_str())
            .collect();
        let store = t.log_store().object_store(None);
        let mut out = Vec::new();
        for f in files {
            let batches = read_columns(store.clone(), vec![f.path.clone()], &stored).await?;
            for b in batches {
                let columns = schema
                    .fields()
                    .iter()
                    .map(|field| -> Result<ArrayRef> {
                        let column: ArrayRef = match b.column_by_name(field.name()) {
                            Some(c) => c.clone(),
                            None if partitions.contains(field.name()) => {
                                let value = f.partition.get(field.name()).cloned().flatten();
                                Arc::new(StringArray::from(vec![value; b.num_rows()]))
                            }
                            None => arrow::array::new_null_array(field.data_type(), b.num_rows()),
                        };
                        Ok(arrow::compute::cast(&column, field.data_type())?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                out.push(RecordBatch::try_new(schema.clone(), columns)?);
            }
        }
        Ok(out)
    }
}

/// Why a commit's actions change rows other than by adding them, if they do.
fn rewrite_in(actions: &[Action]) -> Option<&'static str> {
    actions.iter().find_map(|a| match a {
        Action::Remove(r) if r.data_change => Some("removed rows"),
        Action::Add(a) if a.data_change && a.deletion_vector.is_some() => Some("deleted rows"),
        Action::Metadata(_) => Some("changed the table's schema or settings"),
        Action::Cdc(_) => Some("rewrote rows"),
        _ => None,
    })
}

/// `numRecords` from an add action's statistics.
fn rows_of(stats: Option<&str>) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(stats?).ok()?;
    v.get("numRecords")?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_counts_come_from_the_statistics() {
        assert_eq!(
            rows_of(Some(r#"{"numRecords":42,"minValues":{}}"#)),
            Some(42)
        );
        assert_eq!(rows_of(Some("{}")), None);
        assert_eq!(rows_of(Some("not json")), None);
        assert_eq!(rows_of(None), None);
    }
}
