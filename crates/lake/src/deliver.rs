//! Stream delivery into `events` (Firehose): micro-batches of events read from the event log,
//! deduplicated on `event_id` like imports, committed together with the consumer's log
//! positions. Each partition's position is a Delta application transaction
//! (`shoplake-delivery/<consumer>/p<N>`, version = the next offset to read) in the same commit
//! as the data, so after a crash the consumer resumes exactly where the lake says it got to:
//! nothing lost, nothing twice.
//!
//! Records under [`shoplake_log::QUARANTINE_KEY`] are rows the collector refused ([`QuarantinedRow`]); they
//! go to `quarantine`, committed first with the same kind of positions on that table, so they
//! too land exactly once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use serde::{Deserialize, Serialize};
use shoplake_events::time::MICROS_PER_DAY;
use shoplake_events::{Event, EventId, Validator};
use shoplake_log::EventLog;

use crate::dedupe::Dedupe;
use crate::error::{Error, Result};
use crate::import::date_of_partition;
use crate::lake::{Lake, TableName};
use crate::read::files;
use crate::schema::EVENT_DATE;

/// What one delivery did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Delivered {
    /// New events written.
    pub written: usize,
    /// Events already in the lake (or twice in the batch), dropped.
    pub duplicates: usize,
    /// The `events` version committed (`None`: the batch had been delivered before).
    pub version: Option<u64>,
}

/// A refused row in the log, on its way to `quarantine` (the collector appends these under
/// [`shoplake_log::QUARANTINE_KEY`] and the client's address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedRow {
    /// Where it came from (`collector <client ip> token <name>`).
    pub source: String,
    /// Its line (CSV, NDJSON) or index (JSON array) in its request.
    pub line: u64,
    /// The field at fault, when one is.
    pub field: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// The row as sent.
    pub raw: String,
}

/// A log record delivery cannot read, as a quarantined row: where it was, why, and its bytes
/// (as text where they are UTF-8, in hex otherwise).
fn unreadable(
    partition: u32,
    offset: u64,
    field: Option<String>,
    reason: String,
    bytes: &[u8],
) -> QuarantinedRow {
    let raw = match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("hex:{}", hex(bytes)),
    };
    QuarantinedRow {
        source: format!("log partition {partition} offset {offset}"),
        line: offset,
        field,
        reason,
        raw,
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The `import_id` of quarantined rows that came through the collector.
pub const COLLECTOR_IMPORT_ID: &str = "collector";

/// What one pass over the log delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pumped {
    /// Log records read.
    pub records: usize,
    /// Records that did not decode into a valid event or refused row (counted, logged and
    /// kept in `quarantine`; the collector only appends valid ones, so this stays zero unless
    /// the log was written otherwise).
    pub rejected: usize,
    /// Refused rows written to `quarantine`.
    pub quarantined: usize,
    /// What the delivery did.
    pub delivered: Delivered,
    /// The positions now committed (per log partition, the next offset to read).
    pub positions: BTreeMap<u32, u64>,
    /// Another delivery of the same consumer delivered a partition this pass had read (two
    /// processes owned it for a moment): nothing was written to `events`, and `positions`
    /// are the lake's.
    pub raced: bool,
}

/// What one pass read from the log: the events and refused rows its records hold, and the
/// next position of each partition that had any.
#[derive(Default)]
struct Read {
    events: Vec<Event>,
    refused: Vec<(u32, u64, i64, QuarantinedRow)>,
    next: BTreeMap<u32, u64>,
    records: usize,
    rejected: usize,
}

impl Read {
    /// Takes a batch of partition `p`'s records. A record that is neither a valid event nor a
    /// refused row is never dropped: the collector checks every event as it is stored, so it
    /// comes from a log written otherwise, and it is kept in quarantine as it is.
    fn take(&mut self, p: u32, batch: Vec<shoplake_log::Stored>, validator: &Validator) {
        let Some(last) = batch.last() else { return };
        self.next.insert(p, last.offset + 1);
        self.records += batch.len();
        for r in batch {
            let refused = if shoplake_log::is_quarantine(&r.key) {
                match serde_json::from_slice::<QuarantinedRow>(&r.value) {
                    Ok(row) => row,
                    Err(e) => {
                        self.rejected += 1;
                        tracing::warn!(
                            partition = p,
                            offset = r.offset,
                            error = %e,
                            "log record is not a refused row: quarantined as it is"
                        );
                        let reason = format!("not a refused row: {e}");
                        unreadable(p, r.offset, None, reason, &r.value)
                    }
                }
            } else {
                match shoplake_events::record::decode(&r.value, validator) {
                    Ok(mut e) => {
                        e.ingest_time.get_or_insert(r.appended_at);
                        self.events.push(e);
                        continue;
                    }
                    Err(e) => {
                        self.rejected += 1;
                        tracing::warn!(
                            partition = p,
                            offset = r.offset,
                            reason = %e.reason,
                            "log record is not a valid event: quarantined"
                        );
                        let field = e.field.map(|f| f.name().to_owned());
                        unreadable(p, r.offset, field, e.reason, &r.value)
                    }
                }
            };
            self.refused.push((p, r.offset, r.appended_at, refused));
        }
    }
}

/// A consumer delivering the log into `events`. It keeps the ids of the dates it touches in
/// memory between deliveries (reloading a date when another writer adds files to it).
pub struct Delivery {
    consumer: String,
    table: DeltaTable,
    quarantine: DeltaTable,
    dedupe: Dedupe,
    known: HashSet<String>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl Lake {
    /// Starts delivering for a consumer (a name of 1–64 of `[A-Za-z0-9_.-]`).
    pub async fn delivery(&self, consumer: &str) -> Result<Delivery> {
        shoplake_log::check_consumer(consumer).map_err(|e| Error::Argument(e.to_string()))?;
        let table = self.ensure(TableName::Events).await?;
        let quarantine = self.ensure(TableName::Quarantine).await?;
        let dedupe = Dedupe::new(table.object_store(), HashMap::new());
        Ok(Delivery {
            consumer: consumer.to_owned(),
            table,
            quarantine,
            dedupe,
            known: HashSet::new(),
        })
    }
}

impl Delivery {
    fn app_id(&self, partition: u32) -> String {
        format!("shoplake-delivery/{}/p{partition}", self.consumer)
    }

    /// The log positions delivered so far for partitions `0..partitions` (the next offset to
    /// read; partitions never delivered are absent).
    pub async fn positions(&mut self, partitions: u32) -> Result<BTreeMap<u32, u64>> {
        self.table
            .update_state()
            .await
            .map_err(Error::delta("refreshing events"))?;
        self.read_positions(partitions).await
    }

    async fn read_positions(&self, partitions: u32) -> Result<BTreeMap<u32, u64>> {
        self.positions_in(&self.table, partitions).await
    }

    async fn positions_in(
        &self,
        table: &DeltaTable,
        partitions: u32,
    ) -> Result<BTreeMap<u32, u64>> {
        let state = table
            .snapshot()
            .map_err(Error::delta("reading the table state"))?;
        let mut out = BTreeMap::new();
        for p in 0..partitions {
            let v = state
                .transaction_version(table.log_store().as_ref(), &self.app_id(p))
                .await
                .map_err(Error::delta("reading application transactions"))?;
            if let Some(v) = v.and_then(|v| u64::try_from(v).ok()) {
                out.insert(p, v);
            }
        }
        Ok(out)
    }

    /// One pass over every partition of the log (see [`Delivery::pump_owned`]).
    pub async fn pump(
        &mut self,
        log: &dyn EventLog,
        validator: &Validator,
        limit: shoplake_log::Limit,
    ) -> Result<Pumped> {
        let all: BTreeSet<u32> = (0..log.partitions()).collect();
        self.pump_owned(log, validator, limit, &all).await
    }

    /// One pass over the partitions this process owns: reads what the log holds past the
    /// positions the lake has committed (up to `limit` of each partition), delivers it, and
    /// records the positions in the log too (for its retention and lag; the lake's are the
    /// ones that count). Each record is an event in either record format
    /// (`shoplake_events::record`); its append time becomes the event's ingest time when it
    /// has none.
    ///
    /// Two processes may both believe they own a partition for a moment (a rebalance, or a
    /// process that stalled past its group session: a zombie). The pass fences itself: when
    /// the lake's position of a partition it read is no longer the one it read from, another
    /// delivery got there first, and the pass writes nothing to `events` and says
    /// [`Pumped::raced`] (the next pass reads from the new positions). Between that check and
    /// the commit, Delta refuses a commit whose application transactions another commit
    /// updated concurrently; that too is a race, not a failure. Positions never go back.
    pub async fn pump_owned(
        &mut self,
        log: &dyn EventLog,
        validator: &Validator,
        limit: shoplake_log::Limit,
        owned: &BTreeSet<u32>,
    ) -> Result<Pumped> {
        let partitions = log.partitions();
        let done = self.positions(partitions).await?;
        let mut read = Read::default();
        let mut from = BTreeMap::new();
        for &p in owned.iter().filter(|p| **p < partitions) {
            let at = done.get(&p).copied().unwrap_or(0);
            let batch = log.read(p, at, limit).await.map_err(|source| Error::Log {
                context: format!("reading log partition {p}"),
                source,
            })?;
            if !batch.is_empty() {
                from.insert(p, at);
            }
            read.take(p, batch, validator);
        }
        let Read {
            events,
            refused,
            next,
            records,
            rejected,
        } = read;
        if next.is_empty() {
            return Ok(Pumped {
                positions: done,
                ..Pumped::default()
            });
        }
        let raced = |positions| Pumped {
            records,
            raced: true,
            positions,
            ..Pumped::default()
        };
        let quarantined = match self.quarantine(refused, &next).await {
            Err(e) if e.is_concurrent_transaction() => return Ok(raced(done)),
            other => other?,
        };
        let delivered = match self.deliver_from(&events, &from, &next).await? {
            Some(delivered) => delivered,
            None => {
                let now = self.read_positions(partitions).await?;
                return Ok(raced(now));
            }
        };
        let mut positions = done;
        positions.extend(next.iter().map(|(p, o)| (*p, *o)));
        if let Err(e) = log.commit(&self.consumer, &next).await {
            tracing::warn!(error = %e, "recording delivery positions in the log");
        }
        Ok(Pumped {
            records,
            rejected,
            quarantined,
            delivered,
            positions,
            raced: false,
        })
    }

    /// Delivers events read from the positions `from` up to `next`, unless the lake's
    /// positions of those partitions moved since they were read (`None`: another delivery
    /// got there first, nothing was written).
    async fn deliver_from(
        &mut self,
        events: &[Event],
        from: &BTreeMap<u32, u64>,
        next: &BTreeMap<u32, u64>,
    ) -> Result<Option<Delivered>> {
        let partitions = next.keys().max().map_or(0, |p| p + 1);
        let done = self.positions(partitions).await?;
        if let Some((p, read_from)) = from
            .iter()
            .find(|(p, at)| done.get(p).copied().unwrap_or(0) != **at)
        {
            tracing::info!(
                partition = p,
                read_from,
                lake = done.get(p),
                "another delivery moved this partition's position: this pass writes nothing"
            );
            return Ok(None);
        }
        match self.write_new(events, next).await {
            Err(e) if e.is_concurrent_transaction() => {
                tracing::info!(
                    "another delivery committed these partitions concurrently: this pass \
                     wrote nothing"
                );
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// Writes refused rows read from the log to `quarantine`, with the positions they were
    /// read up to (per partition that had any), skipping those an earlier pass wrote.
    async fn quarantine(
        &mut self,
        rows: Vec<(u32, u64, i64, QuarantinedRow)>,
        next: &BTreeMap<u32, u64>,
    ) -> Result<usize> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.quarantine
            .update_state()
            .await
            .map_err(Error::delta("refreshing quarantine"))?;
        let partitions = next.keys().max().map_or(0, |p| p + 1);
        let done = self.positions_in(&self.quarantine, partitions).await?;
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|(p, offset, _, _)| done.get(p).is_none_or(|d| offset >= d))
            .collect();
        if rows.is_empty() {
            return Ok(0);
        }
        // Only the partitions with rows past the table's positions move (a position that
        // another delivery took further is never taken back).
        let touched: BTreeMap<u32, u64> = rows
            .iter()
            .filter_map(|(p, _, _, _)| next.get(p).map(|n| (*p, *n)))
            .collect();
        let n = rows.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![COLLECTOR_IMPORT_ID; n])),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.3.source.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter()
                    .map(|r| i64::try_from(r.3.line).unwrap_or(i64::MAX)),
            )),
            Arc::new(StringArray::from(
                rows.iter()
                    .map(|r| r.3.field.as_deref())
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.3.reason.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.3.raw.as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.2))
                    .with_timezone("UTC"),
            ),
        ];
        let adds = write_files(&self.quarantine, columns, "quarantine").await?;
        append_commit(
            &self.quarantine,
            adds,
            self.transactions(&touched),
            None,
            "committing quarantined rows",
        )
        .await?;
        Ok(n)
    }

    /// The application transactions recording positions (the next offset per partition).
    fn transactions(&self, positions: &BTreeMap<u32, u64>) -> Vec<Transaction> {
        let now = chrono::Utc::now().timestamp_millis();
        positions
            .iter()
            .map(|(p, next)| {
                Transaction::new_with_last_update(
                    self.app_id(*p),
                    i64::try_from(*next).unwrap_or(i64::MAX),
                    Some(now),
                )
            })
            .collect()
    }

    /// Writes the events that are not in the lake yet and commits them with the consumer's new
    /// positions (per log partition, the next offset after this batch), in one commit. A batch
    /// whose positions the lake already holds was delivered before: nothing is written.
    pub async fn deliver(
        &mut self,
        events: &[Event],
        positions: &BTreeMap<u32, u64>,
    ) -> Result<Delivered> {
        let partitions = positions.keys().max().map_or(0, |p| p + 1);
        let done = self.positions(partitions).await?;
        if !positions.is_empty()
            && positions
                .iter()
                .all(|(p, next)| done.get(p).is_some_and(|d| d >= next))
        {
            return Ok(Delivered::default());
        }
        self.write_new(events, positions).await
    }

    /// Writes the events not in the lake yet and commits them with the positions.
    async fn write_new(
        &mut self,
        events: &[Event],
        positions: &BTreeMap<u32, u64>,
    ) -> Result<Delivered> {
        self.reload_changed_dates()?;
        let (keep, ids, duplicates) = self.new_events(events).await?;
        let written = self.write_and_commit(&keep, &ids, positions).await;
        if written.is_err() {
            // The ids of `keep` are in the sets as if written: forget their dates, so that
            // the retry reloads them from what is committed and writes these events.
            let dates: BTreeSet<i32> = keep
                .iter()
                .map(|e| e.event_time.div_euclid(MICROS_PER_DAY) as i32)
                .collect();
            for d in dates {
                self.dedupe.forget(d);
            }
        }
        let version = written?;
        if self.dedupe.over_budget() {
            self.dedupe.evict();
        }
        Ok(Delivered {
            written: keep.len(),
            duplicates,
            version: Some(version),
        })
    }

    /// Writes the new events and commits them with the positions; returns the version.
    async fn write_and_commit(
        &mut self,
        keep: &[Event],
        ids: &[EventId],
        positions: &BTreeMap<u32, u64>,
    ) -> Result<u64> {
        let adds = if keep.is_empty() {
            Vec::new()
        } else {
            write_events(&self.table, keep, ids).await?
        };
        let staged: Vec<(i32, String)> = adds
            .iter()
            .filter_map(|a| {
                a.partition_values
                    .get(EVENT_DATE)
                    .and_then(|v| v.as_deref())
                    .and_then(date_of_partition)
                    .map(|d| (d, a.path.clone()))
            })
            .collect();
        let version = append_commit(
            &self.table,
            adds,
            self.transactions(positions),
            Some(vec![EVENT_DATE.to_owned()]),
            "committing a delivery",
        )
        .await?;
        for (d, path) in staged {
            self.known.insert(path.clone());
            self.dedupe.staged(d, path);
        }
        Ok(version)
    }

    /// Forgets the ids of the dates other writers (imports) added files to since the last
    /// delivery, so that they are reloaded before they are next checked.
    fn reload_changed_dates(&mut self) -> Result<()> {
        for f in files(&self.table, Some(EVENT_DATE))? {
            if self.known.insert(f.path.clone())
                && let Some(d) = f.partition.as_deref().and_then(date_of_partition)
            {
                self.dedupe.forget(d);
                self.dedupe.staged(d, f.path);
            }
        }
        Ok(())
    }

    /// The events not in the lake yet (nor earlier in the batch), their ids, and how many
    /// were duplicates.
    async fn new_events(&mut self, events: &[Event]) -> Result<(Vec<Event>, Vec<EventId>, usize)> {
        let mut keep: Vec<Event> = Vec::new();
        let mut ids = Vec::new();
        let mut duplicates = 0;
        for e in events {
            let date = e.event_time.div_euclid(MICROS_PER_DAY) as i32;
            if !self.dedupe.is_resident(date) {
                self.dedupe.load(date).await?;
            }
            let id = e.event_id();
            if self.dedupe.insert(date, e.event_time, id) {
                keep.push(e.clone());
                ids.push(id);
            } else {
                duplicates += 1;
            }
        }
        Ok((keep, ids, duplicates))
    }
}

/// Writes events with their ids, and their dates as the partition column, as staged Parquet
/// files of `events`.
async fn write_events(table: &DeltaTable, events: &[Event], ids: &[EventId]) -> Result<Vec<Add>> {
    let batch = shoplake_events::arrow::to_record_batch_with_ids(events, ids)
        .map_err(|e| Error::Internal(format!("building a batch of events: {e}")))?;
    let dates: Date32Array = events
        .iter()
        .map(|e| e.event_time.div_euclid(MICROS_PER_DAY) as i32)
        .collect::<Vec<i32>>()
        .into();
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(dates));
    write_files(table, columns, "events").await
}

/// Writes columns matching a table's schema as staged Parquet files.
async fn write_files(table: &DeltaTable, columns: Vec<ArrayRef>, name: &str) -> Result<Vec<Add>> {
    let mut writer = RecordBatchWriter::for_table(table)
        .map_err(Error::delta(format!("preparing the {name} writer")))?;
    let batch = RecordBatch::try_new(writer.arrow_schema(), columns)?;
    writer
        .write(batch)
        .await
        .map_err(Error::delta(format!("writing {name}")))?;
    writer
        .flush()
        .await
        .map_err(Error::delta(format!("writing {name}")))
}

/// Commits staged files as an append, with application transactions, on the table's current
/// state; returns the version.
async fn append_commit(
    table: &DeltaTable,
    adds: Vec<Add>,
    transactions: Vec<Transaction>,
    partition_by: Option<Vec<String>>,
    what: &'static str,
) -> Result<u64> {
    let state = table
        .snapshot()
        .map_err(Error::delta("reading the table state"))?;
    let finalized = CommitBuilder::from(
        CommitProperties::default().with_application_transactions(transactions),
    )
    .with_actions(adds.into_iter().map(Action::Add).collect())
    .build(
        Some(state),
        table.log_store(),
        DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by,
            predicate: None,
        },
    )
    .await
    .map_err(Error::delta(what))?;
    Ok(finalized.version())
}
