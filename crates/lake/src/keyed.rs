//! Keyed state tables: rows sorted by a key within each file and written in runs, so that
//! the rows of a few thousand keys are read back out of millions through the Parquet page
//! index, at a cost that follows the keys asked for, not the table's size.
//!
//! A keyed table is partitioned by `zone` and `run`. A run holds the complete rows, as of that
//! run, of every key it names: a key's rows are those of the newest run naming it, and a key
//! left with no rows is named by one row with `gone` set. Each file's rows are sorted by the
//! key, in pages of [`PAGE_ROWS`] rows, so a page index tells which pages can hold a key, and
//! each row group has a Bloom filter of its keys, which rules out keys never written (a new
//! key falls within some page's bounds almost always).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use delta_kernel::expressions::Scalar;
use deltalake::DeltaTable;
use deltalake::ObjectStore;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::parquet::basic::Encoding;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use futures::TryStreamExt;
use indexmap::IndexMap;
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
#[allow(deprecated)]
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::bloom_filter::Sbbf;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};
use crate::read::{DataFile, files_in};

/// Rows per data page: a key read decodes about one page of each column asked for.
pub const PAGE_ROWS: usize = 1024;

/// Rows per row group (each with a Bloom filter of its keys).
const ROW_GROUP_ROWS: usize = 64 * PAGE_ROWS;

/// The partition columns of a keyed table.
pub const PARTITIONS: [&str; 2] = ["zone", "run"];

/// The column that marks a key left with no rows.
pub const GONE: &str = "gone";

/// A sorted set of distinct keys: integers (user ids) or texts (session ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    /// 64-bit integer keys.
    Int(Vec<i64>),
    /// Text keys, ordered by their UTF-8 bytes (as Parquet orders them).
    Text(Vec<String>),
}

impl Keys {
    /// Integer keys, sorted and deduplicated.
    pub fn ints(mut keys: Vec<i64>) -> Keys {
        keys.sort_unstable();
        keys.dedup();
        Keys::Int(keys)
    }

    /// Text keys, sorted and deduplicated.
    pub fn texts(mut keys: Vec<String>) -> Keys {
        keys.sort_unstable();
        keys.dedup();
        Keys::Text(keys)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        match self {
            Keys::Int(k) => k.len(),
            Keys::Text(k) => k.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys (as positions in this set) within a page's bounds in the key column's index:
    /// those it can hold (every key when the page has no bounds, unless it holds only nulls).
    fn in_page(&self, index: &ColumnIndexMetaData, page: usize) -> std::ops::Range<usize> {
        let bounds = match (self, index) {
            (Keys::Int(k), ColumnIndexMetaData::INT64(ix)) => {
                match (ix.min_value(page), ix.max_value(page)) {
                    (Some(lo), Some(hi)) => Some((
                        k.partition_point(|x| x < lo),
                        k.partition_point(|x| x <= hi),
                    )),
                    _ => None,
                }
            }
            (Keys::Text(k), ColumnIndexMetaData::BYTE_ARRAY(ix)) => {
                // Truncated bounds still enclose the page's values.
                match (ix.min_value(page), ix.max_value(page)) {
                    (Some(lo), Some(hi)) => Some((
                        k.partition_point(|x| x.as_bytes() < lo),
                        k.partition_point(|x| x.as_bytes() <= hi),
                    )),
                    _ => None,
                }
            }
            _ => None,
        };
        match bounds {
            Some((from, to)) => from..to.max(from),
            None if index.is_null_page(page) => 0..0,
            None => 0..self.len(),
        }
    }

    /// Whether a Bloom filter of the key column can hold the key at `at`.
    fn may_be_in(&self, bloom: &Sbbf, at: usize) -> bool {
        match self {
            Keys::Int(k) => bloom.check(&k[at]),
            Keys::Text(k) => bloom.check(k[at].as_str()),
        }
    }

    /// Which values of a key column are among these keys.
    fn mask(&self, column: &ArrayRef) -> Result<BooleanArray> {
        Ok(match self {
            Keys::Int(k) => {
                let c = arrow::compute::cast(column, &DataType::Int64)?;
                c.as_primitive::<arrow::datatypes::Int64Type>()
                    .iter()
                    .map(|v| Some(v.is_some_and(|v| k.binary_search(&v).is_ok())))
                    .collect()
            }
            Keys::Text(k) => {
                // Every row of the pages read is looked up: hashed, not searched.
                let set: HashSet<&str> = k.iter().map(String::as_str).collect();
                let c = arrow::compute::cast(column, &DataType::Utf8)?;
                c.as_string::<i32>()
                    .iter()
                    .map(|v| Some(v.is_some_and(|v| set.contains(v))))
                    .collect()
            }
        })
    }

    /// These keys and those key columns hold.
    fn with(&self, columns: &[ArrayRef]) -> Result<Keys> {
        Ok(match self {
            Keys::Int(k) => {
                let mut all = k.clone();
                for c in columns {
                    let c = arrow::compute::cast(c, &DataType::Int64)?;
                    all.extend(
                        c.as_primitive::<arrow::datatypes::Int64Type>()
                            .iter()
                            .flatten(),
                    );
                }
                Keys::ints(all)
            }
            Keys::Text(k) => {
                let mut all = k.clone();
                for c in columns {
                    let c = arrow::compute::cast(c, &DataType::Utf8)?;
                    all.extend(c.as_string::<i32>().iter().flatten().map(str::to_owned));
                }
                Keys::texts(all)
            }
        })
    }

    /// These keys without those a key column holds.
    fn without(&self, columns: &[ArrayRef]) -> Result<Keys> {
        Ok(match self {
            Keys::Int(k) => {
                let mut found = Vec::new();
                for c in columns {
                    let c = arrow::compute::cast(c, &DataType::Int64)?;
                    found.extend(
                        c.as_primitive::<arrow::datatypes::Int64Type>()
                            .iter()
                            .flatten(),
                    );
                }
                found.sort_unstable();
                found.dedup();
                Keys::Int(
                    k.iter()
                        .copied()
                        .filter(|x| found.binary_search(x).is_err())
                        .collect(),
                )
            }
            Keys::Text(k) => {
                let mut found: Vec<String> = Vec::new();
                for c in columns {
                    let c = arrow::compute::cast(c, &DataType::Utf8)?;
                    found.extend(c.as_string::<i32>().iter().flatten().map(str::to_owned));
                }
                found.sort_unstable();
                found.dedup();
                Keys::Text(
                    k.iter()
                        .filter(|x| found.binary_search(x).is_err())
                        .cloned()
                        .collect(),
                )
            }
        })
    }
}

/// The rows a keyed read returned, and how many rows it decoded to find them.
#[derive(Debug, Default)]
pub struct KeyedRows {
    /// The rows of the keys asked for (the columns asked for, in their order).
    pub batches: Vec<RecordBatch>,
    /// Rows decoded from the files (the pages that could hold a key).
    pub rows_decoded: usize,
}

/// The rows of some keys in one zone of a keyed table, as of the newest run naming each
/// (keys whose newest run marks them gone, and keys never written, give none). `columns` must
/// not name the partition columns.
pub async fn read_keys(
    table: &DeltaTable,
    zone: &str,
    key: &str,
    keys: &Keys,
    columns: &[&str],
) -> Result<KeyedRows> {
    let runs = zone_runs(table, zone)?;
    let mut read: Vec<&str> = vec![key, GONE];
    read.extend(columns.iter().filter(|c| **c != key && **c != GONE));
    let store = table.object_store();
    let mut remaining = keys.clone();
    let mut out = KeyedRows::default();
    for files in runs.into_values() {
        if remaining.is_empty() {
            break;
        }
        let mut named = Vec::new();
        for file in &files {
            let (batches, decoded) =
                read_pages(store.clone(), file, key, &remaining, &read).await?;
            out.rows_decoded += decoded;
            for b in batches {
                let b = filter_record_batch(&b, &remaining.mask(b.column(0))?)?;
                named.push(b.column(0).clone());
                // A null `gone` counts as not gone.
                let gone = arrow::compute::cast(b.column(1), &DataType::Boolean)?;
                let live: BooleanArray = gone
                    .as_boolean()
                    .iter()
                    .map(|g| Some(g != Some(true)))
                    .collect();
                let b = filter_record_batch(&b, &live)?;
                let order: Vec<usize> = columns
                    .iter()
                    .map(|c| {
                        b.schema()
                            .index_of(c)
                            .map_err(|_| Error::Argument(format!("keyed table lacks column {c}")))
                    })
                    .collect::<Result<_>>()?;
                if b.num_rows() > 0 {
                    out.batches.push(b.project(&order)?);
                }
            }
        }
        remaining = remaining.without(&named)?;
    }
    Ok(out)
}

/// Reads the pages of a file that can hold one of the keys: the chosen columns of those rows,
/// and how many rows that was.
#[allow(deprecated)]
async fn read_pages(
    store: Arc<dyn ObjectStore>,
    file: &DataFile,
    key: &str,
    keys: &Keys,
    columns: &[&str],
) -> Result<(Vec<RecordBatch>, usize)> {
    let path = Path::from_url_path(&file.path)
        .map_err(|e| Error::Corrupt(format!("a data file's path {:?}: {e}", file.path)))?;
    let mut reader = ParquetObjectReader::new(store, path);
    if file.size > 0 {
        reader = reader.with_file_size(file.size);
    }
    let options = ArrowReaderOptions::new()
        .with_skip_arrow_metadata(true)
        .with_page_index(true);
    let mut builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?;
    let schema = builder.parquet_schema();
    let leaf = |name: &str| {
        schema
            .columns()
            .iter()
            .position(|c| c.name() == name)
            .ok_or_else(|| Error::Corrupt(format!("keyed file {} lacks column {name}", file.path)))
    };
    let key_leaf = leaf(key)?;
    let leaves = columns
        .iter()
        .map(|c| leaf(c))
        .collect::<Result<Vec<_>>>()?;
    let mask = ProjectionMask::leaves(schema, leaves.iter().copied());
    let (groups, selectors, decoded) = selection(&mut builder, key_leaf, keys).await?;
    if groups.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let stream = builder
        .with_row_groups(groups)
        .with_row_selection(RowSelection::from(selectors))
        .with_projection(mask)
        .with_batch_size(8192)
        .build()?;
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    // In the order asked for (a projection keeps the file's order).
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let order = columns
            .iter()
            .map(|c| b.schema().index_of(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        out.push(b.project(&order)?);
    }
    Ok((out, decoded))
}

/// The row groups and rows of a file whose key pages can hold one of the keys (every row of a
/// group without a page index), and how many rows that is. A key within a page's bounds that
/// its row group's Bloom filter rules out does not count (a new key falls within some page's
/// bounds almost always; most keys a refresh asks for are new).
#[allow(deprecated)]
async fn selection(
    builder: &mut ParquetRecordBatchStreamBuilder<ParquetObjectReader>,
    key_leaf: usize,
    keys: &Keys,
) -> Result<(Vec<usize>, Vec<RowSelector>, usize)> {
    let meta = builder.metadata().clone();
    let mut groups = Vec::new();
    let mut selectors = Vec::new();
    let mut decoded = 0;
    for (rg, group) in meta.row_groups().iter().enumerate() {
        let rows = usize::try_from(group.num_rows()).unwrap_or(0);
        let pages = meta
            .offset_index()
            .zip(meta.column_index())
            .and_then(|(o, c)| Some((o.get(rg)?.get(key_leaf)?, c.get(rg)?.get(key_leaf)?)));
        let Some((offsets, index)) = pages else {
            // No page index (a file another writer made): every row of the group.
            groups.push(rg);
            selectors.push(RowSelector::select(rows));
            decoded += rows;
            continue;
        };
        let locations = offsets.page_locations();
        let candidates: Vec<std::ops::Range<usize>> = (0..locations.len())
            .map(|p| keys.in_page(index, p))
            .collect();
        if candidates.iter().all(|c| c.is_empty()) {
            continue;
        }
        let bloom = builder
            .get_row_group_column_bloom_filter(rg, key_leaf)
            .await?;
        let mut chosen = Vec::with_capacity(locations.len());
        for (p, at) in locations.iter().enumerate() {
            let first = usize::try_from(at.first_row_index).unwrap_or(0);
            let end = locations.get(p + 1).map_or(rows, |next| {
                usize::try_from(next.first_row_index).unwrap_or(rows)
            });
            let n = end.saturating_sub(first);
            let mut held = candidates[p].clone();
            let hit = match &bloom {
                Some(bloom) => held.any(|k| keys.may_be_in(bloom, k)),
                None => !held.is_empty(),
            };
            if hit {
                chosen.push(RowSelector::select(n));
                decoded += n;
            } else {
                chosen.push(RowSelector::skip(n));
            }
        }
        if chosen.iter().any(|s| !s.skip) {
            groups.push(rg);
            selectors.extend(chosen);
        }
    }
    Ok((groups, selectors, decoded))
}

/// What a run written by [`write_run`] replaces in its zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacing<'a> {
    /// Nothing: the run is added beside the zone's others.
    Nothing,
    /// The whole of this zone (a full rebuild's first run).
    Zone(&'a str),
    /// These runs of this zone (a merge of them).
    Runs(&'a str, &'a [i64]),
}

impl Replacing<'_> {
    /// The zone whose files are replaced, and the runs (all when `None`).
    fn replaced(&self) -> Option<(&str, Option<&[i64]>)> {
        match *self {
            Replacing::Nothing => None,
            Replacing::Zone(zone) => Some((zone, None)),
            Replacing::Runs(zone, runs) => Some((zone, Some(runs))),
        }
    }
}

/// Writes one run to a keyed table: `batch` holds the table's columns (with `zone` and `run`
/// set, one zone and one run: the replaced one's), the complete rows of each key it names,
/// sorted here by the key. The run's file and the removal of what it replaces are one commit
/// (a replacement with no rows only removes).
///
/// The file is written straight from the batch (Delta's writer of record batches) and
/// committed here: a Delta `write` would plan the batch through DataFusion, hash and copy
/// every row twice to split it by partition values it already knows, and list every row of
/// the zone to find the files a replacement removes, which the log's partition values say.
pub async fn write_run(
    mut table: DeltaTable,
    key: &str,
    batch: RecordBatch,
    replacing: Replacing<'_>,
) -> Result<DeltaTable> {
    let sorted = sort_by(&batch, key)?;
    let partition = partition_of(&sorted)?;
    if let (Some((zone, _)), Some((replaced, _))) = (&partition, replacing.replaced())
        && zone != replaced
    {
        return Err(Error::Argument(format!(
            "a run of zone {zone} cannot replace runs of zone {replaced}"
        )));
    }
    let mut actions: Vec<Action> = Vec::new();
    if let Some((zone, run)) = partition {
        let mut writer = RecordBatchWriter::for_table(&table)
            .map_err(Error::delta("preparing a keyed run's writer"))?
            .with_writer_properties(run_properties(key, &sorted));
        let partition = IndexMap::from([
            (PARTITIONS[0].to_owned(), Scalar::String(zone)),
            (PARTITIONS[1].to_owned(), Scalar::Long(run)),
        ]);
        writer
            .write_partition(sorted, &partition, WriteMode::Default)
            .await
            .map_err(Error::delta("writing a run of a keyed table"))?;
        let adds = writer
            .flush()
            .await
            .map_err(Error::delta("writing a run of a keyed table"))?;
        actions.extend(adds.into_iter().map(Action::Add));
    }
    let (mode, predicate) = match replacing.replaced() {
        None => (SaveMode::Append, None),
        Some((zone, runs)) => {
            actions.extend(replaced_files(&table, zone, runs).await?);
            let predicate = match runs {
                None => format!("zone = '{zone}'"),
                Some(runs) => {
                    let list = runs.iter().map(i64::to_string).collect::<Vec<_>>();
                    format!("zone = '{zone}' AND run IN ({})", list.join(", "))
                }
            };
            (SaveMode::Overwrite, Some(predicate))
        }
    };
    if actions.is_empty() {
        return Ok(table);
    }
    let snapshot = table
        .snapshot()
        .map_err(Error::delta("reading a keyed table's state"))?;
    let operation = DeltaOperation::Write {
        mode,
        partition_by: Some(PARTITIONS.iter().map(|p| p.to_string()).collect()),
        predicate,
    };
    let committed = CommitBuilder::from(CommitProperties::default())
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(Error::delta("committing a run of a keyed table"))?;
    table.state = Some(committed.snapshot());
    Ok(table)
}

/// How a run is written: pages of [`PAGE_ROWS`] rows in row groups of [`ROW_GROUP_ROWS`],
/// page statistics and a Bloom filter for the key alone.
fn run_properties(key: &str, sorted: &RecordBatch) -> WriterProperties {
    let mut properties = WriterProperties::builder()
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // A keyed read picks pages by the key's page statistics alone: the other columns'
        // would only grow every read's page index (and the writer's work).
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_column_statistics_enabled(ColumnPath::from(key), EnabledStatistics::Page)
        // Keys barely repeat: a dictionary of them is work the writer throws away.
        .set_column_dictionary_enabled(ColumnPath::from(key), false)
        // A Bloom filter of each row group's keys rules out the keys it does not hold, which
        // page bounds cannot: a key never written before reads no page.
        .set_column_bloom_filter_enabled(ColumnPath::from(key), true)
        .set_column_bloom_filter_max_ndv(ColumnPath::from(key), ROW_GROUP_ROWS as u64)
        .set_column_bloom_filter_fpp(ColumnPath::from(key), 0.01);
    // Integers are delta-encoded: no dictionary to hash every value into, and small
    // (a sorted key, a few days or kinds, times near each other) in a few bits each.
    // Nor is one of a text column whose values barely repeat: the writer would hash
    // every value into a dictionary it then gives up on.
    for (field, column) in sorted.schema().fields().iter().zip(sorted.columns()) {
        let path = || ColumnPath::from(field.name().as_str());
        if field.data_type() == &DataType::Int64 {
            properties = properties
                .set_column_dictionary_enabled(path(), false)
                .set_column_encoding(path(), Encoding::DELTA_BINARY_PACKED);
        } else if field.name() != key && barely_repeats(column) {
            properties = properties.set_column_dictionary_enabled(path(), false);
        }
    }
    properties.build()
}

/// Removals of the files of a zone's runs (`None`: all of them).
async fn replaced_files(
    table: &DeltaTable,
    zone: &str,
    runs: Option<&[i64]>,
) -> Result<Vec<Action>> {
    let files: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(Error::delta("listing a keyed table's files"))?;
    let mut removes = Vec::new();
    for f in files {
        let values = f.partition_values_map();
        let value = |name: &str| values.get(name).cloned().flatten();
        if value(PARTITIONS[0]).as_deref() != Some(zone) {
            continue;
        }
        let run = value(PARTITIONS[1]).and_then(|r| r.parse::<i64>().ok());
        if runs.is_none_or(|runs| run.is_some_and(|r| runs.contains(&r))) {
            removes.push(Action::Remove(f.remove_action(true)));
        }
    }
    Ok(removes)
}

/// The zone and run of a run's rows (`None` for no rows), which must all be of one.
fn partition_of(batch: &RecordBatch) -> Result<Option<(String, i64)>> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::Argument(format!("a keyed run lacks its {name} column")))
    };
    let zones = arrow::compute::cast(column(PARTITIONS[0])?, &DataType::Utf8)?;
    let runs = arrow::compute::cast(column(PARTITIONS[1])?, &DataType::Int64)?;
    let (zones, runs) = (zones.as_string::<i32>(), runs.as_primitive::<Int64Type>());
    if batch.num_rows() == 0 {
        return Ok(None);
    }
    if zones.null_count() > 0 || runs.null_count() > 0 {
        return Err(Error::Argument(
            "a keyed run has rows without a zone or run".into(),
        ));
    }
    let (zone, run) = (zones.value(0), runs.value(0));
    if zones.iter().any(|z| z != Some(zone)) || runs.values().iter().any(|&r| r != run) {
        return Err(Error::Argument(
            "a keyed run holds rows of more than one zone or run".into(),
        ));
    }
    Ok(Some((zone.to_owned(), run)))
}

/// The runs of one zone of a keyed table, with the rows each holds (from the log's statistics;
/// 0 where a file has none).
pub fn runs(table: &DeltaTable, zone: &str) -> Result<BTreeMap<i64, u64>> {
    Ok(zone_runs(table, zone)?
        .into_iter()
        .map(|(Reverse(run), files)| (run, files.iter().filter_map(|f| f.rows).sum()))
        .collect())
}

/// The files of one zone of a keyed table by run, newest run first.
fn zone_runs(table: &DeltaTable, zone: &str) -> Result<BTreeMap<Reverse<i64>, Vec<DataFile>>> {
    let mut runs: BTreeMap<Reverse<i64>, Vec<DataFile>> = BTreeMap::new();
    for (file, values) in files_in(table, &PARTITIONS)? {
        if values[0].as_deref() != Some(zone) {
            continue;
        }
        let run = values[1]
            .as_deref()
            .and_then(|r| r.parse::<i64>().ok())
            .ok_or_else(|| Error::Corrupt(format!("keyed file {} has no run", file.path)))?;
        runs.entry(Reverse(run)).or_default().push(file);
    }
    Ok(runs)
}

/// Merges some runs of a zone into one, numbered as the newest of them: each key keeps the
/// rows of the newest run naming it, and keys marked gone are left out when `drop_gone` (the
/// merge includes the zone's oldest run, so nothing older can show through). One commit.
pub async fn merge_runs(
    table: DeltaTable,
    schema: &SchemaRef,
    zone: &str,
    key: &str,
    merged: &[i64],
    drop_gone: bool,
) -> Result<DeltaTable> {
    let Some(&into) = merged.iter().max() else {
        return Ok(table);
    };
    let stored: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().to_owned())
        .filter(|n| !PARTITIONS.contains(&n.as_str()))
        .collect();
    let stored: Vec<&str> = stored.iter().map(String::as_str).collect();
    let mut by_run = zone_runs(&table, zone)?;
    by_run.retain(|Reverse(run), _| merged.contains(run));
    let store = table.object_store();
    let key_type = schema
        .field_with_name(key)
        .map_err(|_| Error::Argument(format!("a keyed table lacks its key {key}")))?
        .data_type();
    let mut seen = match key_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Keys::Text(Vec::new()),
        _ => Keys::Int(Vec::new()),
    };
    let mut kept: Vec<RecordBatch> = Vec::new();
    for files in by_run.into_values() {
        let paths = files.into_iter().map(|f| f.path).collect();
        let batches = crate::read::read_columns(store.clone(), paths, &stored).await?;
        let mut named = Vec::new();
        for b in batches {
            let k = b
                .column_by_name(key)
                .ok_or_else(|| Error::Corrupt(format!("a keyed run lacks {key}")))?
                .clone();
            let older = seen.mask(&k)?;
            let fresh = arrow::compute::not(&older)?;
            let mut b = filter_record_batch(&b, &fresh)?;
            named.push(k);
            if drop_gone && let Some(g) = b.column_by_name(GONE) {
                let g = arrow::compute::cast(g, &DataType::Boolean)?;
                let live: BooleanArray = g
                    .as_boolean()
                    .iter()
                    .map(|g| Some(g != Some(true)))
                    .collect();
                b = filter_record_batch(&b, &live)?;
            }
            kept.push(b);
        }
        seen = seen.with(&named)?;
    }
    let kept = kept
        .iter()
        .map(|b| in_run(schema, zone, into, b))
        .collect::<Result<Vec<_>>>()?;
    let batch = arrow::compute::concat_batches(schema, &kept)?;
    write_run(table, key, batch, Replacing::Runs(zone, merged)).await
}

/// Rows of a keyed table's own columns as rows of its schema (`schema`), with `zone` and
/// `run` set and every column cast to its type (a column the rows lack is null).
pub fn in_run(schema: &SchemaRef, zone: &str, run: i64, rows: &RecordBatch) -> Result<RecordBatch> {
    let n = rows.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|f| -> Result<ArrayRef> {
            let c: ArrayRef = match f.name().as_str() {
                "zone" => Arc::new(arrow::array::StringArray::from(vec![zone; n])),
                "run" => Arc::new(arrow::array::Int64Array::from(vec![run; n])),
                name => rows
                    .column_by_name(name)
                    .cloned()
                    .unwrap_or_else(|| arrow::array::new_null_array(f.data_type(), n)),
            };
            Ok(arrow::compute::cast(&c, f.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Whether a text column's first rows (up to [`DICTIONARY_SAMPLE`]) are mostly distinct:
/// more than half of its non-null values there differ. Other types keep their dictionary.
fn barely_repeats(column: &ArrayRef) -> bool {
    let sample = column.slice(0, column.len().min(DICTIONARY_SAMPLE));
    let valid = sample.len() - sample.null_count();
    let distinct = match sample.data_type() {
        DataType::Utf8 => {
            let a = sample.as_string::<i32>();
            a.iter().flatten().collect::<HashSet<&str>>().len()
        }
        _ => return false,
    };
    valid > 0 && distinct * 2 > valid
}

/// The rows [`barely_repeats`] looks at.
const DICTIONARY_SAMPLE: usize = 4 * PAGE_ROWS;

/// A batch's rows in the order of one column.
fn sort_by(batch: &RecordBatch, key: &str) -> Result<RecordBatch> {
    let column: &ArrayRef = batch
        .column_by_name(key)
        .ok_or_else(|| Error::Argument(format!("a keyed run lacks its key column {key}")))?;
    let n = column.len();
    if n < 2 {
        return Ok(batch.clone());
    }
    // A run folded in key order (a whole rebuild's) is taken as it is.
    let descending =
        arrow::compute::kernels::cmp::lt(&column.slice(1, n - 1), &column.slice(0, n - 1))?;
    if descending.true_count() == 0 && column.null_count() == 0 {
        return Ok(batch.clone());
    }
    let order = arrow::compute::sort_to_indices(column, None, None)?;
    Ok(take_record_batch(batch, &order)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn keys_found_leave_the_rest() {
        let keys = Keys::ints(vec![5, 1, 3, 3, 9]);
        assert_eq!(keys, Keys::Int(vec![1, 3, 5, 9]));
        let found: ArrayRef = Arc::new(Int64Array::from(vec![3, 9, 9, 11]));
        assert_eq!(keys.without(&[found]).unwrap(), Keys::Int(vec![1, 5]));
        let column: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(2), Some(5)]));
        let mask = keys.mask(&column).unwrap();
        assert_eq!(
            mask.iter().collect::<Vec<_>>(),
            vec![Some(true), Some(false), Some(false), Some(true)]
        );
        let texts = Keys::texts(vec!["b".into(), "a".into(), "b".into()]);
        let column: ArrayRef = Arc::new(StringArray::from(vec!["a", "c", "b"]));
        let mask = texts.mask(&column).unwrap();
        assert_eq!(
            mask.iter().collect::<Vec<_>>(),
            vec![Some(true), Some(false), Some(true)]
        );
        assert_eq!(texts.without(&[column]).unwrap(), Keys::Text(Vec::new()));
    }

    #[test]
    fn runs_are_sorted_by_their_key_unless_they_are_already() {
        let batch = |keys: Vec<&str>, values: Vec<i64>| {
            RecordBatch::try_from_iter([
                ("k", Arc::new(StringArray::from(keys)) as ArrayRef),
                ("v", Arc::new(Int64Array::from(values)) as ArrayRef),
            ])
            .unwrap()
        };
        let sorted = sort_by(&batch(vec!["b", "a", "c", "a"], vec![1, 2, 3, 4]), "k").unwrap();
        let keys = sorted
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(
            keys.iter().flatten().collect::<Vec<_>>(),
            ["a", "a", "b", "c"]
        );
        let kept = batch(vec!["a", "a", "b"], vec![9, 8, 7]);
        assert_eq!(sort_by(&kept, "k").unwrap(), kept);
        assert_eq!(sort_by(&batch(vec![], vec![]), "k").unwrap().num_rows(), 0);
    }
}
