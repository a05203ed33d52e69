//! Reading a table's files directly (for small tables and for the ids of one partition).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use deltalake::DeltaTable;
use deltalake::ObjectStore;
use futures::TryStreamExt;
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
#[allow(deprecated)]
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};

use crate::error::{Error, Result};

/// A live data file of a table.
#[derive(Debug, Clone)]
pub(crate) struct DataFile {
    /// Path relative to the table root, as in the Delta log.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Rows, when the log has statistics.
    pub rows: Option<u64>,
    /// The partition value (`event_date`), if the table is partitioned.
    pub partition: Option<String>,
}

/// The live files of a table at its loaded version, with the value of one partition column.
pub(crate) fn files(table: &DeltaTable, partition_column: Option<&str>) -> Result<Vec<DataFile>> {
    let columns: Vec<&str> = partition_column.into_iter().collect();
    Ok(files_in(table, &columns)?
        .into_iter()
        .map(|(mut f, mut values)| {
            f.partition = values.pop().flatten();
            f
        })
        .collect())
}

/// The live files of a table at its loaded version, each with the values of the given
/// partition columns (in their order).
pub(crate) fn files_in(
    table: &DeltaTable,
    partition_columns: &[&str],
) -> Result<Vec<(DataFile, Vec<Option<String>>)>> {
    let state = table
        .snapshot()
        .map_err(Error::delta("reading the table state"))?;
    let batches = state
        .add_actions_batches(true)
        .map_err(Error::delta("listing files"))?;
    let mut out = Vec::new();
    for batch in batches {
        let col = |name: &str| batch.column_by_name(name);
        let paths = col("path")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| Error::Corrupt("add actions without a path column".into()))?;
        let sizes =
            col("size_bytes").and_then(|c| c.as_any().downcast_ref::<arrow::array::Int64Array>());
        let rows =
            col("num_records").and_then(|c| c.as_any().downcast_ref::<arrow::array::Int64Array>());
        let partitions: Vec<Option<ArrayRef>> = partition_columns
            .iter()
            .map(|p| {
                col(&format!("partition.{p}"))
                    .and_then(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).ok())
            })
            .collect();
        for i in 0..batch.num_rows() {
            let values = partitions
                .iter()
                .map(|c| {
                    let c = c.as_ref()?.as_any().downcast_ref::<StringArray>()?;
                    c.is_valid(i).then(|| c.value(i).to_owned())
                })
                .collect();
            let file = DataFile {
                path: paths.value(i).to_owned(),
                size: sizes.map_or(0, |s| s.value(i).max(0) as u64),
                rows: rows
                    .filter(|r| r.is_valid(i))
                    .map(|r| r.value(i).max(0) as u64),
                partition: None,
            };
            out.push((file, values));
        }
    }
    Ok(out)
}

/// Reads some columns of some files of a table.
// `ParquetObjectReader` is deprecated in favour of hand-written readers; it is still the
// simplest correct way to read a file from an object store.
#[allow(deprecated)]
pub(crate) async fn read_columns(
    store: Arc<dyn ObjectStore>,
    paths: Vec<String>,
    columns: &[&str],
) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for path in paths {
        let path = Path::from_url_path(&path)
            .map_err(|e| Error::Corrupt(format!("a data file's path {path:?}: {e}")))?;
        let reader = ParquetObjectReader::new(store.clone(), path);
        // Parquet's own types, not the Arrow schema a writer embedded: files rewritten by
        // other engines (or by compaction) may carry view or large string types.
        let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
        let builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?;
        let schema = builder.parquet_schema();
        let indices: Vec<usize> = columns
            .iter()
            .filter_map(|c| schema.columns().iter().position(|col| col.name() == *c))
            .collect();
        let mask = ProjectionMask::leaves(schema, indices);
        let stream = builder
            .with_projection(mask)
            .with_batch_size(64 * 1024)
            .build()?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        for b in batches {
            // In the order asked for (a projection keeps the file's order).
            let order: Vec<usize> = columns
                .iter()
                .filter_map(|c| b.schema().index_of(c).ok())
                .collect();
            out.push(b.project(&order)?);
        }
    }
    Ok(out)
}

/// Reads a whole (small) table.
pub(crate) async fn read_all(
    table: &DeltaTable,
    columns: &[&'static str],
) -> Result<Vec<RecordBatch>> {
    let files = files(table, None)?;
    read_columns(
        table.object_store(),
        files.into_iter().map(|f| f.path).collect(),
        columns,
    )
    .await
}
