//! `shoplake import`: CSV/CSV.gz/NDJSON files into `events`, `quarantine` and `imports`.
//!
//! Three stages sharing two cores: for CSV a reader thread cuts blocks that two parser threads
//! validate in turn (JSON: one parser), computing the rows' ids; a decoder thread deduplicates
//! and profiles them and builds Arrow batches; an async writer streams those into Parquet
//! files staged under the tables. Nothing is visible until the end, when `quarantine`,
//! `events` and `imports` each get one commit carrying the Delta application transaction
//! `shoplake-import:<fingerprint>`. A crash before the commits leaves the tables as they were (staged
//! files are orphans for `vacuum`); a crash between commits is finished by running the import
//! again, which skips the commits that landed.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::future::{Future, IntoFuture};
use std::io::{self, Read};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array,
};
use arrow::compute::{filter_record_batch, take_record_batch};
use arrow::datatypes::SchemaRef;
use delta_kernel::expressions::Scalar;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use indexmap::IndexMap;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::Serialize;
use shoplake_events::arrow::EventColumns;
use shoplake_events::csv::{CsvBlock, CsvBlockReader, CsvLayout};
use shoplake_events::io::maybe_gunzip;
use shoplake_events::time::{Clock, MICROS_PER_DAY, SystemClock, parse_date};
use shoplake_events::{JsonDecoder, Reject, Row, RowRef, Validator};
use tokio::sync::{mpsc, oneshot};
use xxhash_rust::xxh3::Xxh3;

use crate::dedupe::Dedupe;
use crate::error::{Error, Result};
use crate::lake::{Lake, TableName};
use crate::profile::{Profile, Profiler};
use crate::read::{DataFile, files, read_columns};
use crate::schema::EVENT_DATE;

/// Target size of a data file.
pub const TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// Where an import reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSource {
    /// A file (`.csv`, `.csv.gz`, `.ndjson`, `.json`; gzip detected from the content).
    Path(PathBuf),
    /// Standard input.
    Stdin,
}

impl ImportSource {
    /// The name recorded in `imports` and `quarantine`.
    pub fn name(&self) -> String {
        match self {
            ImportSource::Path(p) => p.display().to_string(),
            ImportSource::Stdin => "-".into(),
        }
    }

    fn is_json(&self) -> bool {
        shoplake_events::Format::of_name(&self.name()) == shoplake_events::Format::Json
    }
}

/// Progress of an import, for a progress bar.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportProgress {
    /// Rows read so far.
    pub rows: u64,
    /// Bytes of the source read so far (compressed bytes for gzip).
    pub bytes: u64,
    /// The source's size, when known.
    pub total_bytes: Option<u64>,
}

type ProgressFn = Arc<dyn Fn(ImportProgress) + Send + Sync>;

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    /// The source.
    pub source: String,
    /// The import's id (in `imports` and `quarantine`).
    pub import_id: String,
    /// XXH3-128 of the source's bytes.
    pub fingerprint: String,
    /// Size of the source in bytes (as stored: compressed for `.gz`).
    pub bytes: u64,
    /// True when the same content was imported before: nothing was done.
    pub already_imported: bool,
    /// Rows read.
    pub rows_read: u64,
    /// Rows added to `events`.
    pub rows_accepted: u64,
    /// Rows added to `quarantine`.
    pub rows_rejected: u64,
    /// Exact duplicates dropped.
    pub duplicates: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The `events` table version that holds the rows.
    pub events_version: Option<u64>,
    /// The data-quality profile.
    pub profile: Profile,
}

/// Imports sources into the lake; `.await` it.
#[must_use = "an import does nothing until awaited"]
pub struct ImportBuilder {
    lake: Lake,
    sources: Vec<ImportSource>,
    validator: Validator,
    clock: Arc<dyn Clock>,
    progress: Option<ProgressFn>,
    target_file_size: u64,
    dedupe_budget: usize,
}

impl std::fmt::Debug for ImportBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportBuilder")
            .field("sources", &self.sources)
            .finish()
    }
}

impl Lake {
    /// Starts an import of `sources`.
    pub fn import(&self, sources: Vec<ImportSource>) -> ImportBuilder {
        ImportBuilder {
            lake: self.clone(),
            sources,
            validator: Validator::default(),
            clock: Arc::new(SystemClock),
            progress: None,
            target_file_size: TARGET_FILE_SIZE,
            dedupe_budget: crate::dedupe::RESIDENT_IDS,
        }
    }
}

impl ImportBuilder {
    /// Validates with these rules (and their clock) instead of the defaults.
    pub fn with_validator(mut self, validator: Validator) -> Self {
        self.validator = validator;
        self
    }

    /// Stamps imports with this clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Calls `f` as rows are read.
    pub fn with_progress(mut self, f: impl Fn(ImportProgress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Target size of data files (default 128 MiB).
    pub fn with_target_file_size(mut self, bytes: u64) -> Self {
        self.target_file_size = bytes.max(1024 * 1024);
        self
    }

    /// How many event ids deduplication keeps in memory (about 20 bytes each; default 16 Mi,
    /// enough for a few days of the busiest real month). Beyond it, dates are evicted and
    /// reloaded from the files when met again: exact, but slower on unsorted input.
    pub fn with_dedupe_budget(mut self, ids: usize) -> Self {
        self.dedupe_budget = ids;
        self
    }

    async fn run(self) -> Result<Vec<ImportSummary>> {
        let mut out = Vec::new();
        for source in &self.sources {
            out.push(self.import_one(source).await?);
        }
        Ok(out)
    }

    /// One source: look it up, stage its files, commit them. Each step is its own function.
    async fn import_one(&self, source: &ImportSource) -> Result<ImportSummary> {
        let started = Instant::now();
        let started_at = self.clock.now_micros();
        let name = source.name();
        let seen = match self.look_up(source, &name).await? {
            Seen::Before(previous) => {
                return Ok(previous.already(name, started.elapsed().as_secs_f64()));
            }
            Seen::Not(seen) => seen,
        };
        let import_id = format!("imp-{started_at:x}");
        let staged = self
            .stage(source, &name, &seen, &import_id, started_at)
            .await?;
        // An import hashing as it reads learns its fingerprint at the end.
        let fingerprint = match (seen.fingerprint, staged.fingerprint) {
            (Some(fp), _) | (None, Some(fp)) => fp,
            (None, None) => {
                return Err(Error::Internal(format!(
                    "{name}: the import neither hashed the file first nor as it read it"
                )));
            }
        };
        if let Some(previous) = self.find_import(&fingerprint).await? {
            return Ok(previous.already(name, started.elapsed().as_secs_f64()));
        }
        let app_id = format!("shoplake-import:{fingerprint}");
        let Staged {
            mut events,
            mut quarantine,
            start_paths,
            event_adds,
            reject_adds,
            touched,
            profile,
            bytes_read,
            ..
        } = staged;
        self.check_conflicts(&mut events, &start_paths, &event_adds, &touched)
            .await?;
        commit(&mut quarantine, reject_adds, &app_id, None).await?;
        let events_version = commit(
            &mut events,
            event_adds,
            &app_id,
            Some(vec![EVENT_DATE.to_owned()]),
        )
        .await?;
        let summary = ImportSummary {
            source: name,
            import_id,
            fingerprint,
            bytes: seen.total_bytes.unwrap_or(bytes_read),
            already_imported: false,
            rows_read: profile.rows_read,
            rows_accepted: profile.rows_accepted,
            rows_rejected: profile.rows_rejected,
            duplicates: profile.duplicates,
            seconds: started.elapsed().as_secs_f64(),
            events_version,
            profile,
        };
        self.record(&summary, started_at, &app_id).await?;
        Ok(summary)
    }

    /// Whether this content was imported before, by its fingerprint (XXH3-128 of the bytes).
    /// Hashing a month-scale file up front costs seconds of a core, so it is done first only
    /// when an earlier import had the same size; otherwise the bytes are hashed as they are
    /// read, and the check is made at the end (as for stdin).
    async fn look_up(&self, source: &ImportSource, name: &str) -> Result<Seen> {
        let ImportSource::Path(p) = source else {
            return Ok(Seen::Not(NotSeen {
                fingerprint: None,
                total_bytes: None,
            }));
        };
        let size = std::fs::metadata(p)
            .map_err(|e| {
                input_error(
                    name,
                    shoplake_events::Error::io(format!("reading {}", p.display()))(e),
                )
            })?
            .len();
        let fingerprint = if self.size_seen(size).await? {
            let (fp, _) = fingerprint_file(p).map_err(|e| input_error(name, e))?;
            if let Some(previous) = self.find_import(&fp).await? {
                return Ok(Seen::Before(Box::new(previous)));
            }
            Some(fp)
        } else {
            None
        };
        Ok(Seen::Not(NotSeen {
            fingerprint,
            total_bytes: Some(size),
        }))
    }

    /// Reads, deduplicates and profiles the source on threads of its own and writes its rows
    /// into files staged under `events` and `quarantine` (not yet committed).
    async fn stage(
        &self,
        source: &ImportSource,
        name: &str,
        seen: &NotSeen,
        import_id: &str,
        started_at: i64,
    ) -> Result<Staged> {
        let events = self.lake.ensure(TableName::Events).await?;
        let quarantine = self.lake.ensure(TableName::Quarantine).await?;
        let start_files = files(&events, Some(EVENT_DATE))?;
        let mut committed: HashMap<i32, Vec<String>> = HashMap::new();
        for f in &start_files {
            if let Some(d) = f.partition.as_deref().and_then(date_of_partition) {
                committed.entry(d).or_default().push(f.path.clone());
            }
        }
        let start_paths: HashSet<String> = start_files.into_iter().map(|f| f.path).collect();
        let mut writers = Writers::new(&events, &quarantine, self.target_file_size)?;

        let (tx, rx) = mpsc::channel::<Msg>(4);
        let bytes_read = Arc::new(AtomicU64::new(0));
        let input = open_source(source, bytes_read.clone(), seen.fingerprint.is_none())
            .map_err(|e| input_error(name, e))?;
        let ctx = DecodeContext {
            name: name.to_owned(),
            json: source.is_json(),
            validator: self.validator.clone(),
            events_schema: writers.events.arrow_schema(),
            quarantine_schema: writers.rejects.arrow_schema(),
            import_id: import_id.to_owned(),
            now: started_at,
            dedupe: Dedupe::new(events.object_store(), committed).with_budget(self.dedupe_budget),
            progress: self.progress.clone(),
            bytes_read: bytes_read.clone(),
            total_bytes: seen.total_bytes,
            runtime: tokio::runtime::Handle::current(),
        };
        let decoder = std::thread::Builder::new()
            .name("shoplake-import".into())
            .spawn(move || ctx.run(input, tx))
            .map_err(|source| Error::Io {
                context: "starting the decoder thread".into(),
                source,
            })?;
        let written = writers.drain(rx).await;
        // A write error first: the decoder stops at its next send once the writer is gone.
        let decoded = decoder
            .join()
            .map_err(|_| Error::Internal("the decoder thread panicked".into()))?;
        written.map_err(|source| Error::Delta {
            context: format!("writing {name}"),
            source,
        })?;
        let decoded = decoded?;
        let (event_adds, reject_adds) = writers.finish().await?;
        Ok(Staged {
            events,
            quarantine,
            start_paths,
            event_adds,
            reject_adds,
            touched: decoded.touched,
            profile: decoded.profiler.finish(),
            fingerprint: decoded.fingerprint,
            bytes_read: bytes_read.load(Ordering::Relaxed),
        })
    }

    /// Refuses to commit when another writer added, for the dates this import touched, a row
    /// this import also staged (a concurrent import of overlapping data). Rewrites by
    /// compaction hold no new ids and pass.
    async fn check_conflicts(
        &self,
        events: &mut DeltaTable,
        start_paths: &HashSet<String>,
        staged: &[Add],
        touched: &HashSet<i32>,
    ) -> Result<()> {
        events
            .update_state()
            .await
            .map_err(Error::delta("refreshing events"))?;
        let new_files = added_on_dates(files(events, Some(EVENT_DATE))?, start_paths, touched);
        if new_files.is_empty() {
            return Ok(());
        }
        let store = events.object_store();
        let ids = |batches: Vec<RecordBatch>| -> HashSet<String> {
            batches
                .iter()
                .filter_map(|b| b.column(0).as_any().downcast_ref::<StringArray>().cloned())
                .flat_map(|a| {
                    (0..a.len())
                        .map(move |i| a.value(i).to_owned())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let theirs = ids(read_columns(store.clone(), new_files, &["event_id"]).await?);
        let ours = ids(read_columns(
            store,
            staged.iter().map(|a| a.path.clone()).collect(),
            &["event_id"],
        )
        .await?);
        if theirs.is_disjoint(&ours) {
            Ok(())
        } else {
            Err(Error::Conflict(
                "another writer added some of the same events while this import ran; nothing \
                 was committed: run the import again (it skips what is already in the lake)"
                    .into(),
            ))
        }
    }

    /// Whether an earlier import had this size, or one not known (lakes written before sizes
    /// were recorded): only then can a file be a re-import.
    async fn size_seen(&self, size: u64) -> Result<bool> {
        let Some(imports) = self.lake.table(TableName::Imports).await? else {
            return Ok(false);
        };
        // A table without the column (or unreadable now) counts as "maybe": the full check by
        // fingerprint follows and reports any real error.
        let Ok(batches) = crate::read::read_all(&imports, &["bytes"]).await else {
            return Ok(true);
        };
        Ok(batches.iter().any(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .is_none_or(|a| (0..a.len()).any(|i| a.is_null(i) || a.value(i) == size as i64))
        }))
    }

    /// Looks an import up by fingerprint in `imports`.
    async fn find_import(&self, fingerprint: &str) -> Result<Option<PreviousImport>> {
        let Some(imports) = self.lake.table(TableName::Imports).await? else {
            return Ok(None);
        };
        let batches = crate::read::read_all(
            &imports,
            &[
                "import_id",
                "fingerprint",
                "bytes",
                "rows_read",
                "rows_accepted",
                "rows_rejected",
                "duplicates",
                "profile",
            ],
        )
        .await?;
        for b in batches {
            let s = |name: &str| {
                b.column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
            };
            let n = |name: &str| {
                b.column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
            };
            let (Some(ids), Some(fps), Some(profiles)) =
                (s("import_id"), s("fingerprint"), s("profile"))
            else {
                continue;
            };
            for i in 0..b.num_rows() {
                if fps.value(i) == fingerprint {
                    let count = |name: &str| n(name).map_or(0, |a| a.value(i).max(0) as u64);
                    return Ok(Some(PreviousImport {
                        import_id: ids.value(i).to_owned(),
                        fingerprint: fingerprint.to_owned(),
                        bytes: count("bytes"),
                        rows_read: count("rows_read"),
                        rows_accepted: count("rows_accepted"),
                        rows_rejected: count("rows_rejected"),
                        duplicates: count("duplicates"),
                        profile: serde_json::from_str(profiles.value(i)).unwrap_or_default(),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Appends the import's row to `imports` (the last commit: it makes a re-run a no-op).
    async fn record(&self, s: &ImportSummary, started_at: i64, app_id: &str) -> Result<()> {
        let mut imports = self.lake.ensure(TableName::Imports).await?;
        let mut writer = RecordBatchWriter::for_table(&imports)
            .map_err(Error::delta("preparing the imports writer"))?;
        let profile =
            serde_json::to_string(&s.profile).map_err(|e| Error::Internal(e.to_string()))?;
        let finished = self.clock.now_micros();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![s.import_id.as_str()])),
            Arc::new(StringArray::from(vec![s.source.as_str()])),
            Arc::new(StringArray::from(vec![s.fingerprint.as_str()])),
            Arc::new(Int64Array::from(vec![s.bytes as i64])),
            Arc::new(TimestampMicrosecondArray::from(vec![started_at]).with_timezone("UTC")),
            Arc::new(TimestampMicrosecondArray::from(vec![finished]).with_timezone("UTC")),
            Arc::new(Int64Array::from(vec![s.rows_read as i64])),
            Arc::new(Int64Array::from(vec![s.rows_accepted as i64])),
            Arc::new(Int64Array::from(vec![s.rows_rejected as i64])),
            Arc::new(Int64Array::from(vec![s.duplicates as i64])),
            Arc::new(Float64Array::from(vec![s.seconds])),
            Arc::new(StringArray::from(vec![profile.as_str()])),
        ];
        let batch = RecordBatch::try_new(writer.arrow_schema(), columns)?;
        writer
            .write(batch)
            .await
            .map_err(Error::delta("writing imports"))?;
        let adds = writer
            .flush()
            .await
            .map_err(Error::delta("writing imports"))?;
        commit(&mut imports, adds, app_id, None).await?;
        Ok(())
    }
}

impl IntoFuture for ImportBuilder {
    type Output = Result<Vec<ImportSummary>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

struct PreviousImport {
    import_id: String,
    fingerprint: String,
    bytes: u64,
    rows_read: u64,
    rows_accepted: u64,
    rows_rejected: u64,
    duplicates: u64,
    profile: Profile,
}

impl PreviousImport {
    fn already(self, source: String, seconds: f64) -> ImportSummary {
        ImportSummary {
            source,
            import_id: self.import_id,
            fingerprint: self.fingerprint,
            bytes: self.bytes,
            already_imported: true,
            rows_read: self.rows_read,
            rows_accepted: self.rows_accepted,
            rows_rejected: self.rows_rejected,
            duplicates: self.duplicates,
            seconds,
            events_version: None,
            profile: self.profile,
        }
    }
}

/// Commits staged files with the import's application transaction, unless a commit with that
/// transaction already landed (a re-run after a crash between commits).
async fn commit(
    table: &mut DeltaTable,
    adds: Vec<Add>,
    app_id: &str,
    partition_by: Option<Vec<String>>,
) -> Result<Option<u64>> {
    table
        .update_state()
        .await
        .map_err(Error::delta("refreshing the table"))?;
    let state = table
        .snapshot()
        .map_err(Error::delta("reading the table state"))?;
    let done = state
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(Error::delta("reading application transactions"))?;
    if done.is_some() {
        return Ok(None);
    }
    let props = CommitProperties::default().with_application_transaction(
        Transaction::new_with_last_update(app_id, 1, Some(chrono::Utc::now().timestamp_millis())),
    );
    let actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by,
        predicate: None,
    };
    let finalized = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(state), table.log_store(), operation)
        .await
        .map_err(Error::delta("committing"))?;
    let version = finalized.version();
    table
        .update_state()
        .await
        .map_err(Error::delta("refreshing the table"))?;
    Ok(Some(version))
}

/// The files of `now` that were not live at the start and hold one of the `touched` dates:
/// those another writer added meanwhile where this import may overlap it.
fn added_on_dates(
    now: Vec<DataFile>,
    start_paths: &HashSet<String>,
    touched: &HashSet<i32>,
) -> Vec<String> {
    now.into_iter()
        .filter(|f| !start_paths.contains(&f.path))
        .filter(|f| {
            f.partition
                .as_deref()
                .and_then(date_of_partition)
                .is_some_and(|d| touched.contains(&d))
        })
        .map(|f| f.path)
        .collect()
}

pub(crate) fn date_of_partition(value: &str) -> Option<i32> {
    parse_date(value).map(|t| (t / MICROS_PER_DAY) as i32)
}

fn input_error(name: &str, e: impl Into<shoplake_events::Error>) -> Error {
    Error::Input {
        source_name: name.to_owned(),
        source: e.into(),
    }
}

/// XXH3-128 of a file's bytes, and its size.
fn fingerprint_file(path: &std::path::Path) -> shoplake_events::Result<(String, u64)> {
    let mut file = File::open(path).map_err(shoplake_events::Error::io(format!(
        "opening {}",
        path.display()
    )))?;
    let mut h = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(shoplake_events::Error::io(format!(
                "reading {}",
                path.display()
            )))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((format!("xxh3-{:032x}", h.digest128()), size))
}

/// The fingerprint of the bytes hashed as they were read. A hasher poisoned by a panic
/// mid-update fails the import: an empty or partial fingerprint would match other content.
fn digest(hash: &std::sync::Mutex<Xxh3>) -> Result<String> {
    let h = hash
        .lock()
        .map_err(|_| Error::Internal("the input's hasher was poisoned".into()))?;
    Ok(format!("xxh3-{:032x}", h.digest128()))
}

/// Counts (and for stdin, hashes) the raw bytes read.
struct Tap<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
    hash: Option<Arc<std::sync::Mutex<Xxh3>>>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(h) = &self.hash {
            h.lock()
                .map_err(|_| io::Error::other("the input's hasher was poisoned"))?
                .update(&buf[..n]);
        }
        Ok(n)
    }
}

struct Opened {
    input: shoplake_events::io::Input,
    hash: Option<Arc<std::sync::Mutex<Xxh3>>>,
}

fn open_source(
    source: &ImportSource,
    bytes: Arc<AtomicU64>,
    hashing: bool,
) -> shoplake_events::Result<Opened> {
    let hash = hashing.then(|| Arc::new(std::sync::Mutex::new(Xxh3::new())));
    let input: Box<dyn Read + Send> = match source {
        ImportSource::Path(p) => Box::new(File::open(p).map_err(shoplake_events::Error::io(
            format!("opening {}", p.display()),
        ))?),
        ImportSource::Stdin => Box::new(io::stdin()),
    };
    Ok(Opened {
        input: maybe_gunzip(Tap {
            inner: input,
            bytes,
            hash: hash.clone(),
        })?,
        hash,
    })
}

/// Whether a source's content was imported before ([`ImportBuilder::look_up`]).
enum Seen {
    Before(Box<PreviousImport>),
    Not(NotSeen),
}

/// What is known of a new source before it is read.
struct NotSeen {
    /// Its fingerprint, when it was hashed first (a file with the size of an earlier import).
    fingerprint: Option<String>,
    /// Its size, for a file.
    total_bytes: Option<u64>,
}

/// An import's staged files, with the tables they are staged under and what reading learnt.
struct Staged {
    events: DeltaTable,
    quarantine: DeltaTable,
    /// The live files of `events` when the import started.
    start_paths: HashSet<String>,
    event_adds: Vec<Add>,
    reject_adds: Vec<Add>,
    /// The dates whose rows the import read from the files.
    touched: HashSet<i32>,
    profile: Profile,
    /// The fingerprint, when it was hashed as it was read.
    fingerprint: Option<String>,
    bytes_read: u64,
}

/// The writer stage: Parquet files staged under `events` (partitioned by date) and
/// `quarantine`.
struct Writers {
    events: RecordBatchWriter,
    rejects: RecordBatchWriter,
    event_adds: Vec<Add>,
}

impl Writers {
    fn new(events: &DeltaTable, quarantine: &DeltaTable, target_file_size: u64) -> Result<Writers> {
        let props = writer_properties();
        Ok(Writers {
            events: RecordBatchWriter::for_table(events)
                .map_err(Error::delta("preparing the events writer"))?
                .with_target_file_size(target_file_size)
                .with_writer_properties(props.clone()),
            rejects: RecordBatchWriter::for_table(quarantine)
                .map_err(Error::delta("preparing the quarantine writer"))?
                .with_writer_properties(props),
            event_adds: Vec::new(),
        })
    }

    /// Writes what the decoder sends until it is done, or the first write error (dropping
    /// the channel then stops the decoder at its next send).
    async fn drain(
        &mut self,
        mut rx: mpsc::Receiver<Msg>,
    ) -> Result<(), deltalake::DeltaTableError> {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Events { date, batch } => {
                    let partition = IndexMap::from([(EVENT_DATE.to_owned(), Scalar::Date(date))]);
                    self.events
                        .write_partition(batch, &partition, WriteMode::Default)
                        .await?;
                }
                Msg::Rejects(batch) => self.rejects.write(batch).await?,
                Msg::Flush(reply) => {
                    let adds = self.events.flush().await?;
                    self.event_adds.extend(adds.iter().cloned());
                    let _ = reply.send(adds);
                }
            }
        }
        Ok(())
    }

    /// The last files, and every file staged: (events, quarantine).
    async fn finish(mut self) -> Result<(Vec<Add>, Vec<Add>)> {
        let last = self
            .events
            .flush()
            .await
            .map_err(Error::delta("writing events"))?;
        self.event_adds.extend(last);
        let rejects = self
            .rejects
            .flush()
            .await
            .map_err(Error::delta("writing quarantine"))?;
        Ok((self.event_adds, rejects))
    }
}

/// Parquet settings of the staged files.
fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(256 * 1024))
        // Hashes, times and user ids repeat too little within a row group for a dictionary.
        .set_column_dictionary_enabled("event_id".into(), false)
        .set_column_dictionary_enabled("event_time".into(), false)
        .set_column_dictionary_enabled("user_id".into(), false)
        // A session's few events fall mostly in one row group (~4.5 a session there on
        // the month): with room for its dictionary the files are a third smaller.
        .set_column_dictionary_page_size_limit("user_session".into(), 8 << 20)
        // Nothing prunes files by these: their min/max (a compare per value) are not kept.
        .set_column_statistics_enabled("event_id".into(), EnabledStatistics::None)
        .set_column_statistics_enabled("user_session".into(), EnabledStatistics::None)
        // Random hex and UUIDs hold no repeats for Snappy to find: skip the attempt.
        .set_column_compression("event_id".into(), Compression::UNCOMPRESSED)
        .set_column_compression("user_session".into(), Compression::UNCOMPRESSED)
        .build()
}

enum Msg {
    /// New rows, all of one UTC date.
    Events {
        date: i32,
        batch: RecordBatch,
    },
    Rejects(RecordBatch),
    Flush(oneshot::Sender<Vec<Add>>),
}

struct Decoded {
    profiler: Profiler,
    touched: HashSet<i32>,
    fingerprint: Option<String>,
}

struct DecodeContext {
    name: String,
    json: bool,
    validator: Validator,
    events_schema: SchemaRef,
    quarantine_schema: SchemaRef,
    import_id: String,
    now: i64,
    dedupe: Dedupe,
    progress: Option<ProgressFn>,
    bytes_read: Arc<AtomicU64>,
    total_bytes: Option<u64>,
    runtime: tokio::runtime::Handle,
}

/// Rows per chunk handed from the parser thread to the decoder thread.
const PARSE_CHUNK: usize = 32 * 1024;

/// A chunk of parsed rows: the events, column by column with their ids, and the rejects.
struct Chunk {
    events: EventColumns,
    rejects: Vec<Reject>,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            events: EventColumns::with_capacity(PARSE_CHUNK),
            rejects: Vec::new(),
        }
    }

    fn push(&mut self, row: RowRef<'_>) {
        match row {
            RowRef::Event(e) => self.events.push(&e, e.event_id()),
            RowRef::Reject(r) => self.rejects.push(r),
        }
    }
}

type ChunkResult = shoplake_events::Result<Chunk>;

/// The parser stage for JSON: decodes and validates rows and computes their ids, in chunks.
/// Stops at the end of the input, at an input error (sent on), or when the receiver is gone.
fn parse_json(
    mut rows: JsonDecoder<io::BufReader<shoplake_events::io::Input>>,
    tx: std::sync::mpsc::SyncSender<ChunkResult>,
) {
    loop {
        let mut chunk = Chunk::new();
        let mut n = 0;
        let mut end = false;
        while n < PARSE_CHUNK {
            match rows.next_row() {
                Ok(Some(Row::Event(e))) => chunk.events.push_event(&e, e.event_id()),
                Ok(Some(Row::Reject(r))) => chunk.rejects.push(r),
                Ok(None) => {
                    end = true;
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Ok(chunk));
                    let _ = tx.send(Err(e));
                    return;
                }
            }
            n += 1;
        }
        if tx.send(Ok(chunk)).is_err() || end {
            return;
        }
    }
}

/// Threads decoding CSV: one reads and cuts the input into blocks of whole records, handed
/// in turn to [`CSV_PARSERS`] parsers; their chunks are taken in the same turn, so they come
/// out in the input's order.
const CSV_PARSERS: usize = 2;

/// Starts a thread of the parser stage.
fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| Error::Internal(format!("starting a parser thread: {e}")))
}

fn parse_csv(
    mut blocks: CsvBlockReader<shoplake_events::io::Input>,
    layout: CsvLayout,
    validator: &Validator,
) -> Result<(Chunks, Vec<std::thread::JoinHandle<()>>)> {
    let mut threads = Vec::new();
    let mut to_parsers = Vec::new();
    let mut from_parsers = Vec::new();
    for k in 0..CSV_PARSERS {
        let (block_tx, block_rx) =
            std::sync::mpsc::sync_channel::<shoplake_events::Result<CsvBlock>>(1);
        let (chunk_tx, chunk_rx) = std::sync::mpsc::sync_channel::<ChunkResult>(2);
        let (layout, validator) = (layout.clone(), validator.clone());
        threads.push(spawn(format!("shoplake-parse-{k}"), move || {
            for block in block_rx {
                let chunk = block.map(|block| {
                    let mut chunk = Chunk::new();
                    layout.decode_block(&validator, &block, |row| chunk.push(row));
                    chunk
                });
                let failed = chunk.is_err();
                if chunk_tx.send(chunk).is_err() || failed {
                    return;
                }
            }
        })?);
        to_parsers.push(block_tx);
        from_parsers.push(chunk_rx);
    }
    threads.push(spawn("shoplake-read".into(), move || {
        for turn in 0.. {
            let Some(block) = blocks.next_block().transpose() else {
                return;
            };
            let failed = block.is_err();
            if to_parsers[turn % CSV_PARSERS].send(block).is_err() || failed {
                return;
            }
        }
    })?);
    Ok((
        Chunks {
            from: from_parsers,
            turn: 0,
        },
        threads,
    ))
}

/// Parsed chunks in the input's order, from one parser or several taking turns.
struct Chunks {
    from: Vec<std::sync::mpsc::Receiver<ChunkResult>>,
    turn: usize,
}

impl Iterator for Chunks {
    type Item = ChunkResult;

    fn next(&mut self) -> Option<ChunkResult> {
        let chunk = self.from[self.turn % self.from.len()].recv().ok()?;
        self.turn += 1;
        Some(chunk)
    }
}

impl DecodeContext {
    fn run(mut self, opened: Opened, tx: mpsc::Sender<Msg>) -> Result<Decoded> {
        let hash = opened.hash;
        let (chunks, parsers) = self.parsers(opened.input)?;
        let mut profiler = Profiler::new();
        let mut touched = HashSet::new();
        let mut rejects: Vec<Reject> = Vec::new();
        let mut read = 0u64;
        for chunk in chunks {
            let chunk = chunk.map_err(|e| input_error(&self.name, e))?;
            read += (chunk.events.len() + chunk.rejects.len()) as u64;
            for r in chunk.rejects {
                profiler.reject(&r);
                rejects.push(r);
            }
            if rejects.len() >= 4096 {
                self.send_rejects(&mut rejects, &tx)?;
            }
            if self.dedupe.over_budget() {
                // Staged rows of the dates about to leave memory must be in files before
                // they can be reloaded from them (every row before this chunk was sent).
                self.flush(&tx)?;
                self.dedupe.evict();
            }
            let events = chunk.events;
            if !events.is_empty() {
                let (keep, dates) = self.dedupe_chunk(&events, &mut profiler, &mut touched)?;
                let batch = events
                    .finish()
                    .map_err(|e| Error::Internal(format!("building a batch of events: {e}")))?;
                profiler.accept_batch(&batch, &keep)?;
                self.send_events(batch, dates, keep, &tx)?;
            }
            self.report_progress(read);
        }
        for parser in parsers {
            parser
                .join()
                .map_err(|_| Error::Internal("a parser thread panicked".into()))?;
        }
        self.send_rejects(&mut rejects, &tx)?;
        self.report_progress(read);
        let fingerprint = hash.as_deref().map(digest).transpose()?;
        Ok(Decoded {
            profiler,
            touched,
            fingerprint,
        })
    }

    /// Starts the parsers of the input. Parsing runs on threads of its own, so that it and the
    /// rest of this stage (dedupe, profile, Arrow) and the writer share both cores. On an
    /// error later the parsers are left to stop at their next send (the reader may be blocked
    /// reading stdin).
    fn parsers(
        &self,
        input: shoplake_events::io::Input,
    ) -> Result<(Chunks, Vec<std::thread::JoinHandle<()>>)> {
        if self.json {
            let rows = JsonDecoder::new(io::BufReader::new(input), self.validator.clone());
            let (tx, rx) = std::sync::mpsc::sync_channel(2);
            let parser = spawn("shoplake-parse".into(), move || parse_json(rows, tx))?;
            let chunks = Chunks {
                from: vec![rx],
                turn: 0,
            };
            Ok((chunks, vec![parser]))
        } else {
            let (blocks, layout) =
                CsvBlockReader::new(input).map_err(|e| input_error(&self.name, e))?;
            parse_csv(blocks, layout, &self.validator)
        }
    }

    /// Which rows of a chunk are new (not in the lake, nor earlier in the input), and each
    /// row's date; loads the ids of dates not in memory (noting them in `touched`).
    fn dedupe_chunk(
        &mut self,
        events: &EventColumns,
        profiler: &mut Profiler,
        touched: &mut HashSet<i32>,
    ) -> Result<(Vec<bool>, Vec<i32>)> {
        let mut keep = Vec::with_capacity(events.len());
        let mut dates = Vec::with_capacity(events.len());
        for (&time, &id) in events.times().iter().zip(events.ids()) {
            let date = time.div_euclid(MICROS_PER_DAY) as i32;
            if !self.dedupe.is_resident(date) {
                self.runtime.block_on(self.dedupe.load(date))?;
                touched.insert(date);
            }
            let fresh = self.dedupe.insert(date, time, id);
            if !fresh {
                profiler.duplicate();
            }
            keep.push(fresh);
            dates.push(date);
        }
        Ok((keep, dates))
    }

    fn report_progress(&self, rows: u64) {
        if let Some(p) = &self.progress {
            p(ImportProgress {
                rows,
                bytes: self.bytes_read.load(Ordering::Relaxed),
                total_bytes: self.total_bytes,
            });
        }
    }

    fn send(&self, tx: &mpsc::Sender<Msg>, msg: Msg) -> Result<()> {
        tx.blocking_send(msg)
            .map_err(|_| Error::Internal("the writer stopped early".into()))
    }

    fn flush(&mut self, tx: &mpsc::Sender<Msg>) -> Result<()> {
        let (reply, wait) = oneshot::channel();
        self.send(tx, Msg::Flush(reply))?;
        let adds = wait
            .blocking_recv()
            .map_err(|_| Error::Internal("the writer stopped early".into()))?;
        for add in adds {
            if let Some(d) = add
                .partition_values
                .get(EVENT_DATE)
                .and_then(|v| v.as_deref())
                .and_then(date_of_partition)
            {
                self.dedupe.staged(d, add.path.clone());
            }
        }
        Ok(())
    }

    /// Sends a chunk's new rows (`keep`) to the writer, one batch per date, so that the
    /// writer need not split them. Exports come sorted by time with few duplicates, so a chunk
    /// mostly holds one date and a handful of duplicates: the rows between them go as slices
    /// of the chunk, copied nowhere. Otherwise the rows are filtered and grouped by date.
    fn send_events(
        &self,
        mut batch: RecordBatch,
        mut dates: Vec<i32>,
        mut keep: Vec<bool>,
        tx: &mpsc::Sender<Msg>,
    ) -> Result<()> {
        let duplicates = keep.iter().filter(|k| !**k).count();
        if duplicates > 64 || (duplicates > 0 && !dates.is_sorted()) {
            let mask = BooleanArray::from(std::mem::take(&mut keep));
            batch = filter_record_batch(&batch, &mask)?;
            dates = dates
                .into_iter()
                .zip(mask.values())
                .filter_map(|(d, k)| k.then_some(d))
                .collect();
            keep = vec![true; dates.len()];
        }
        if !dates.is_sorted() {
            let mut order: Vec<u32> = (0..dates.len() as u32).collect();
            order.sort_by_key(|&i| dates[i as usize]);
            let indices = UInt32Array::from(order);
            batch = take_record_batch(&batch, &indices)?;
            dates = indices
                .values()
                .iter()
                .map(|&i| dates[i as usize])
                .collect();
        }
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(Date32Array::from(dates.clone())));
        let batch = RecordBatch::try_new(self.events_schema.clone(), columns)?;
        let mut start = 0;
        while start < dates.len() {
            if !keep[start] {
                start += 1;
                continue;
            }
            let date = dates[start];
            let end = start
                + dates[start..]
                    .iter()
                    .zip(&keep[start..])
                    .take_while(|&(&d, &k)| k && d == date)
                    .count();
            self.send(
                tx,
                Msg::Events {
                    date,
                    batch: batch.slice(start, end - start),
                },
            )?;
            start = end;
        }
        Ok(())
    }

    fn send_rejects(&self, rejects: &mut Vec<Reject>, tx: &mpsc::Sender<Msg>) -> Result<()> {
        if rejects.is_empty() {
            return Ok(());
        }
        let n = rejects.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.import_id.as_str(); n])),
            Arc::new(StringArray::from(vec![self.name.as_str(); n])),
            Arc::new(Int64Array::from(
                rejects.iter().map(|r| r.line as i64).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rejects.iter().map(|r| r.field).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rejects
                    .iter()
                    .map(|r| r.reason.as_str())
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rejects.iter().map(|r| r.raw.as_str()).collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMicrosecondArray::from(vec![self.now; n]).with_timezone("UTC")),
        ];
        let batch = RecordBatch::try_new(self.quarantine_schema.clone(), columns)?;
        rejects.clear();
        self.send(tx, Msg::Rejects(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, date: Option<&str>) -> DataFile {
        DataFile {
            path: path.to_owned(),
            size: 1,
            rows: Some(1),
            partition: date.map(str::to_owned),
        }
    }

    #[test]
    fn only_files_added_since_the_start_on_a_touched_date_can_conflict() {
        let day = |s: &str| date_of_partition(s).unwrap();
        let start: HashSet<String> = ["a".to_owned()].into();
        let touched: HashSet<i32> = [day("2019-10-01")].into();
        let now = vec![
            file("a", Some("2019-10-01")),
            file("b", Some("2019-10-01")),
            file("c", Some("2019-10-02")),
            file("d", None),
        ];
        assert_eq!(added_on_dates(now, &start, &touched), vec!["b".to_owned()]);
    }

    #[test]
    fn a_poisoned_hasher_fails_instead_of_giving_a_fingerprint() {
        let hash = Arc::new(std::sync::Mutex::new(Xxh3::new()));
        let ok = digest(&hash).unwrap();
        assert!(ok.starts_with("xxh3-") && ok.len() == 37, "{ok}");
        let poisoner = hash.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock().unwrap();
            panic!("poisoning the hasher");
        })
        .join();
        assert!(matches!(digest(&hash), Err(Error::Internal(_))));
        let mut tap = Tap {
            inner: &b"abc"[..],
            bytes: Arc::new(AtomicU64::new(0)),
            hash: Some(hash),
        };
        assert!(tap.read(&mut [0u8; 8]).is_err(), "reading on fails too");
    }

    #[tokio::test]
    async fn a_commit_with_an_application_transaction_lands_once() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(crate::LakeOptions {
            root: dir.path().display().to_string(),
            storage_options: HashMap::new(),
        })
        .unwrap();
        let mut table = lake.ensure(TableName::Quarantine).await.unwrap();
        let first = commit(&mut table, Vec::new(), "shoplake-import:x", None)
            .await
            .unwrap();
        assert!(first.is_some());
        let again = commit(&mut table, Vec::new(), "shoplake-import:x", None)
            .await
            .unwrap();
        assert_eq!(again, None, "a re-run after a crash skips what landed");
        let other = commit(&mut table, Vec::new(), "shoplake-import:y", None)
            .await
            .unwrap();
        assert_eq!(other, first.map(|v| v + 1));
    }
}
