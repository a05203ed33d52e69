//! The embedded backend: a directory of partitions, each a sequence of segment files, written
//! by one thread that commits groups of appends with one `fsync` per partition touched.
//!
//! ```text
//! <dir>/log.json                 {"format": 1, "partitions": N}
//! <dir>/p-0/00000000000000000000.log, …   segments, named by their first offset
//! <dir>/consumers/<name>.json    {"positions": {"0": 1234, …}}
//! ```
//!
//! Readers read a segment file only up to the bytes known durable, so they never see a record
//! before its append has returned. On open, every segment is checked record by record: the
//! last one of a partition is cut at its first torn or damaged record (a crash mid-write);
//! damage anywhere else is an error, not silently skipped.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::channel::oneshot;
use serde::{Deserialize, Serialize};
use shoplake_events::time::{Clock, SystemClock};

use crate::segment::{self, io};
use crate::{
    Error, EventLog, Limit, Position, Record, Result, Stored, check_consumer, partition_for,
};

/// Options of an embedded log.
#[derive(Clone)]
pub struct EmbeddedOptions {
    /// Its directory (created when missing).
    pub dir: PathBuf,
    /// Partitions (default 4); fixed when the log is created.
    pub partitions: u32,
    /// A segment is closed and a new one started past this size (default 64 MiB).
    pub segment_bytes: u64,
    /// Oldest segments are deleted while a partition holds more (default 1 GiB; `None`: no
    /// limit). The segment being written is never deleted.
    pub retention_bytes: Option<u64>,
    /// Segments whose newest record is older are deleted (default 7 days; `None`: no limit).
    pub retention_age: Option<Duration>,
    /// Consumers whose committed positions retention never passes: a segment is deleted only
    /// once every one of them has committed past it (`serve` protects the lake delivery).
    /// A partition whose undelivered records fill `retention_bytes` plus one segment then
    /// refuses appends with [`Error::Full`] until they are read.
    pub protected: Vec<String>,
    /// The clock that stamps records and ages segments.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for EmbeddedOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedOptions")
            .field("dir", &self.dir)
            .field("partitions", &self.partitions)
            .field("segment_bytes", &self.segment_bytes)
            .field("retention_bytes", &self.retention_bytes)
            .field("retention_age", &self.retention_age)
            .field("protected", &self.protected)
            .finish_non_exhaustive()
    }
}

impl EmbeddedOptions {
    /// The defaults, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> EmbeddedOptions {
        EmbeddedOptions {
            dir: dir.into(),
            partitions: 4,
            segment_bytes: 64 << 20,
            retention_bytes: Some(1 << 30),
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            protected: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A sparse index entry every this many bytes.
const INDEX_EVERY: u64 = 4096;
/// Appends taken into one group commit at most (records).
const MAX_GROUP: usize = 64 * 1024;
/// Bytes read from a segment per read call at most (beyond the first record).
const READ_CHUNK: u64 = 4 << 20;

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    partitions: u32,
}

#[derive(Serialize, Deserialize, Default)]
struct Positions {
    positions: BTreeMap<u32, u64>,
}

/// A segment as readers see it.
#[derive(Debug, Clone)]
struct Segment {
    base: u64,
    /// Durable bytes.
    len: u64,
    /// The offset after its last durable record.
    next: u64,
    /// Newest `appended_at`.
    newest: i64,
    /// (offset, byte position), sparse, ascending.
    index: Vec<(u64, u64)>,
}

/// A partition as readers see it: its segments, oldest first (never empty).
#[derive(Debug)]
struct PartitionState {
    dir: PathBuf,
    segments: Vec<Segment>,
}

struct Shared {
    dir: PathBuf,
    /// What the log was opened with (its companions are opened alike).
    options: EmbeddedOptions,
    partitions: Vec<RwLock<PartitionState>>,
    stopped: Mutex<Option<String>>,
    /// Held while a consumer's positions file is written; holds the positions of the
    /// protected consumers (retention reads them).
    consumers: Mutex<BTreeMap<String, BTreeMap<u32, u64>>>,
}

/// Reads and consumer positions work on the files directly (on a blocking thread: see
/// [`EmbeddedLog::blocking`]).
impl Shared {
    fn partition(&self, partition: u32) -> Result<&RwLock<PartitionState>> {
        self.partitions.get(partition as usize).ok_or_else(|| {
            Error::Argument(format!(
                "partition {partition}: the log has {}",
                self.partitions.len()
            ))
        })
    }

    fn read_sync(&self, partition: u32, from: u64, max: Limit) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        let mut got = 0;
        let mut from = from;
        while !max.reached(out.len(), got) {
            // Where to look, under the lock; the file is read without it.
            let (path, pos, limit) = {
                let state = self
                    .partition(partition)?
                    .read()
                    .map_err(|_| Error::Stopped("a lock was poisoned".into()))?;
                let first = &state.segments[0];
                if from < first.base {
                    tracing::warn!(
                        partition,
                        from,
                        start = first.base,
                        "records before the partition's start were removed by retention: \
                         reading from its start"
                    );
                }
                from = from.max(first.base);
                let Some(seg) = state.segments.iter().rev().find(|s| s.base <= from) else {
                    break;
                };
                if from >= seg.next {
                    break;
                }
                let i = seg.index.partition_point(|&(o, _)| o <= from);
                let pos = if i == 0 { 0 } else { seg.index[i - 1].1 };
                (segment::path(&state.dir, seg.base), pos, seg.len)
            };
            let mut file = match File::open(&path) {
                Ok(f) => f,
                // Deleted by retention since: look again from the new start.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(format!("opening {}", path.display()))(e)),
            };
            // A chunk, or the whole first record when it is larger.
            let mut want = (limit - pos).min(READ_CHUNK);
            let mut bytes = read_at(&mut file, &path, pos, want)?;
            if let Some(frame) = segment::frame_len(&bytes)
                && frame as u64 > want
                && pos + frame as u64 <= limit
            {
                want = frame as u64;
                bytes = read_at(&mut file, &path, pos, want)?;
            }
            let mut at = 0;
            while !max.reached(out.len(), got) {
                let Some((rec, len)) = segment::decode(&bytes[at..]) else {
                    break;
                };
                at += len;
                if rec.offset >= from {
                    from = rec.offset + 1;
                    got += rec.size();
                    out.push(rec);
                }
            }
            if at == 0 {
                // Durable bytes that do not decode: the file changed under us.
                return Err(Error::Corrupt(format!(
                    "{}: a damaged record at byte {pos}",
                    path.display()
                )));
            }
            // Past this segment's durable end, the next pass reads the following one, if any.
        }
        Ok(out)
    }

    fn commit_sync(&self, consumer: &str, positions: &BTreeMap<u32, u64>) -> Result<()> {
        check_consumer(consumer)?;
        for p in positions.keys() {
            self.partition(*p)?;
        }
        let mut protected = self
            .consumers
            .lock()
            .map_err(|_| Error::Stopped("a lock was poisoned".into()))?;
        let path = self.consumer_path(consumer);
        let mut all = read_positions(&path)?;
        all.positions
            .extend(positions.iter().map(|(p, o)| (*p, *o)));
        write_atomic(&path, &serde_json::to_vec(&all).unwrap_or_default())?;
        // Retention may pass these positions only once they are durable.
        if let Some(kept) = protected.get_mut(consumer) {
            *kept = all.positions;
        }
        Ok(())
    }

    fn consumer_path(&self, consumer: &str) -> PathBuf {
        self.dir.join("consumers").join(format!("{consumer}.json"))
    }

    fn state<T>(&self, partition: u32, f: impl FnOnce(&PartitionState) -> T) -> Result<T> {
        let state = self
            .partition(partition)?
            .read()
            .map_err(|_| Error::Stopped("a lock was poisoned".into()))?;
        Ok(f(&state))
    }
}

struct Request {
    records: Vec<Record>,
    reply: oneshot::Sender<Result<Vec<Position>>>,
}

/// The embedded log. Appends go to one writer thread (group commit); reads go straight to the
/// files. Dropping it finishes the appends in flight and stops the writer.
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    partitions: u32,
    tx: Option<SyncSender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("dir", &self.shared.dir)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl EmbeddedLog {
    /// Opens (or creates) a log, recovering each partition after a crash: a torn or damaged
    /// tail of the last segment is cut off, everything before it kept.
    pub fn open(options: EmbeddedOptions) -> Result<EmbeddedLog> {
        if options.partitions == 0 || options.partitions > 1024 {
            return Err(Error::Argument(format!(
                "partitions: {} (expected 1 to 1024)",
                options.partitions
            )));
        }
        let dir = options.dir.clone();
        std::fs::create_dir_all(dir.join("consumers"))
            .map_err(io(format!("creating {}", dir.display())))?;
        let meta_path = dir.join("log.json");
        match std::fs::read(&meta_path) {
            Ok(bytes) => {
                let meta: Meta = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Corrupt(format!("{}: {e}", meta_path.display())))?;
                if meta.format != 1 {
                    return Err(Error::Corrupt(format!(
                        "{}: log format {} (this release reads 1)",
                        meta_path.display(),
                        meta.format
                    )));
                }
                if meta.partitions != options.partitions {
                    return Err(Error::Argument(format!(
                        "the log in {} has {} partitions, not {}: the count is fixed when a \
                         log is created (keys would move)",
                        dir.display(),
                        meta.partitions,
                        options.partitions
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let meta = Meta {
                    format: 1,
                    partitions: options.partitions,
                };
                write_atomic(&meta_path, &serde_json::to_vec(&meta).unwrap_or_default())?;
            }
            Err(e) => return Err(io(format!("reading {}", meta_path.display()))(e)),
        }
        let mut states = Vec::new();
        let mut writers = Vec::new();
        for p in 0..options.partitions {
            let (state, writer) = recover(&dir.join(format!("p-{p}")))?;
            states.push(RwLock::new(state));
            writers.push(writer);
        }
        for c in &options.protected {
            check_consumer(c)?;
        }
        let mut protected = BTreeMap::new();
        for c in &options.protected {
            let path = dir.join("consumers").join(format!("{c}.json"));
            protected.insert(c.clone(), read_positions(&path)?.positions);
        }
        let shared = Arc::new(Shared {
            dir,
            options: options.clone(),
            partitions: states,
            stopped: Mutex::new(None),
            consumers: Mutex::new(protected),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel::<Request>(1024);
        let mut writer = Writer {
            shared: shared.clone(),
            options: options.clone(),
            partitions: writers,
            buffers: vec![Vec::new(); options.partitions as usize],
        };
        let handle = std::thread::Builder::new()
            .name("shoplake-log".into())
            .spawn(move || writer.run(rx))
            .map_err(io("starting the log writer".into()))?;
        Ok(EmbeddedLog {
            shared,
            partitions: options.partitions,
            tx: Some(tx),
            writer: Some(handle),
        })
    }

    /// Runs file work (a read, a positions file written and synced) on tokio's blocking
    /// threads, never on the async workers: a read that waits for the disk, or an `fsync`
    /// that takes a slow disk's hundreds of milliseconds, would otherwise hold up every task
    /// of the worker it ran on (while one worker sat in an `fsync`, `/healthz` went
    /// unanswered). Outside a runtime it runs in place.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn_blocking(move || work(&shared))
                .await
                .map_err(|e| Error::Stopped(format!("a log read or commit failed: {e}")))?,
            Err(_) => work(&shared),
        }
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[async_trait::async_trait]
impl EventLog for EmbeddedLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn append(&self, records: Vec<Record>) -> Result<Vec<Position>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(r) = records
            .iter()
            .find(|r| segment::FRAME_HEADER + 20 + r.key.len() + r.value.len() > segment::MAX_BODY)
        {
            return Err(Error::Argument(format!(
                "a record of {} bytes: the log takes records up to {} bytes",
                r.key.len() + r.value.len(),
                segment::MAX_BODY - segment::FRAME_HEADER - 20
            )));
        }
        if let Some(why) = self.shared.stopped.lock().ok().and_then(|s| s.clone()) {
            return Err(Error::Stopped(why));
        }
        let (reply, answer) = oneshot::channel();
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Stopped("closed".into()))?;
        tx.send(Request { records, reply })
            .map_err(|_| Error::Stopped("the writer is gone".into()))?;
        answer
            .await
            .map_err(|_| Error::Stopped("the writer is gone".into()))?
    }

    async fn read(&self, partition: u32, from: u64, limit: Limit) -> Result<Vec<Stored>> {
        self.blocking(move |s| s.read_sync(partition, from, limit))
            .await
    }

    async fn start(&self, partition: u32) -> Result<u64> {
        self.shared.state(partition, |s| s.segments[0].base)
    }

    async fn end(&self, partition: u32) -> Result<u64> {
        self.shared
            .state(partition, |s| s.segments.last().map_or(0, |l| l.next))
    }

    async fn committed(&self, consumer: &str) -> Result<BTreeMap<u32, u64>> {
        check_consumer(consumer)?;
        let consumer = consumer.to_owned();
        self.blocking(move |s| Ok(read_positions(&s.consumer_path(&consumer))?.positions))
            .await
    }

    async fn companion(&self, name: &str, partitions: u32) -> Result<Arc<dyn EventLog>> {
        check_consumer(name)?;
        let name = name.to_owned();
        let log = self
            .blocking(move |s| {
                EmbeddedLog::open(EmbeddedOptions {
                    dir: s.dir.join("companions").join(&name),
                    partitions,
                    protected: Vec::new(),
                    ..s.options.clone()
                })
            })
            .await?;
        Ok(Arc::new(log))
    }

    async fn commit(&self, consumer: &str, positions: &BTreeMap<u32, u64>) -> Result<()> {
        let (consumer, positions) = (consumer.to_owned(), positions.clone());
        self.blocking(move |s| s.commit_sync(&consumer, &positions))
            .await
    }
}

/// The writer's side of a partition: the open last segment.
struct PartitionWriter {
    dir: PathBuf,
    file: File,
    base: u64,
    len: u64,
    next: u64,
    newest: i64,
    last_indexed: Option<u64>,
}

impl PartitionWriter {
    /// Appends a buffer to the open segment and makes it durable; empties the buffer.
    fn write_and_sync(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        self.file
            .write_all(buf)
            .and_then(|_| self.file.sync_data())
            .map_err(io(format!("writing {}", self.dir.display())))?;
        self.len += buf.len() as u64;
        buf.clear();
        Ok(())
    }
}

struct Writer {
    shared: Arc<Shared>,
    options: EmbeddedOptions,
    partitions: Vec<PartitionWriter>,
    buffers: Vec<Vec<u8>>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            let mut n = group[0].records.len();
            while n < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => {
                        n += r.records.len();
                        group.push(r);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            let stopped = self.shared.stopped.lock().ok().and_then(|s| s.clone());
            if let Some(why) = stopped {
                for r in group {
                    let _ = r.reply.send(Err(Error::Stopped(why.clone())));
                }
                continue;
            }
            // Consumers may have committed since: what they read can go before the check.
            if let Err(e) = self.retain() {
                tracing::warn!(error = %e, "event log retention");
            }
            let group = self.refuse_full(group);
            if group.is_empty() {
                continue;
            }
            match self.commit(&group) {
                Ok(positions) => {
                    for (r, p) in group.into_iter().zip(positions) {
                        let _ = r.reply.send(Ok(p));
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    tracing::error!(error = %why, "the event log stopped");
                    if let Ok(mut s) = self.shared.stopped.lock() {
                        *s = Some(why.clone());
                    }
                    for r in group {
                        let _ = r.reply.send(Err(Error::Stopped(why.clone())));
                    }
                }
            }
            if let Err(e) = self.retain() {
                tracing::warn!(error = %e, "event log retention");
            }
        }
    }

    /// Answers [`Error::Full`] to the appends that would go to a full partition (one whose
    /// undelivered records already hold `retention_bytes` plus a segment) and returns the
    /// others. Nothing of a refused append is written.
    fn refuse_full(&self, group: Vec<Request>) -> Vec<Request> {
        let Some(max) = self.options.retention_bytes else {
            return group;
        };
        if self.options.protected.is_empty() {
            return group;
        }
        let cap = max.saturating_add(self.options.segment_bytes);
        let parts = self.partitions.len() as u32;
        let Ok(floors) = self.floors() else {
            return group;
        };
        // Only segments holding records a protected consumer has not read count: once all
        // is read, even the segment being written is no reason to refuse.
        let full: Vec<bool> = self
            .shared
            .partitions
            .iter()
            .zip(&floors)
            .map(|(lock, floor)| {
                lock.read()
                    .map(|s| {
                        let unread: u64 = s
                            .segments
                            .iter()
                            .filter(|g| g.next > *floor)
                            .map(|g| g.len)
                            .sum();
                        unread >= cap
                    })
                    .unwrap_or(false)
            })
            .collect();
        if !full.iter().any(|f| *f) {
            return group;
        }
        let mut kept = Vec::with_capacity(group.len());
        for r in group {
            let blocked = r
                .records
                .iter()
                .map(|rec| partition_for(&rec.key, parts) as usize)
                .find(|p| full[*p]);
            match blocked {
                Some(p) => {
                    let _ = r.reply.send(Err(Error::Full(format!(
                        "log partition {p} holds {cap} bytes not yet delivered (retention_bytes \
                         plus a segment): retry once delivery catches up"
                    ))));
                }
                None => kept.push(r),
            }
        }
        kept
    }

    /// Writes a group, syncs every partition it touched, then publishes it to readers.
    fn commit(&mut self, group: &[Request]) -> Result<Vec<Vec<Position>>> {
        let now = self.options.clock.now_micros();
        let mut pending = Pending::new(self.partitions.len());
        let mut out = Vec::with_capacity(group.len());
        for req in group {
            let positions = req
                .records
                .iter()
                .map(|rec| self.write(rec, now, &mut pending))
                .collect::<Result<Vec<_>>>()?;
            out.push(positions);
        }
        for (p, w) in self.partitions.iter_mut().enumerate() {
            if pending.touched[p] {
                w.write_and_sync(&mut self.buffers[p])?;
            }
        }
        // Durable: readers may see it.
        self.publish(pending)?;
        Ok(out)
    }

    /// Encodes a record into its partition's buffer, first closing the partition's segment
    /// (written and synced now) when the record would start past its size.
    fn write(&mut self, rec: &Record, now: i64, pending: &mut Pending) -> Result<Position> {
        let p = partition_for(&rec.key, self.partitions.len() as u32) as usize;
        let w = &mut self.partitions[p];
        let buf = &mut self.buffers[p];
        if w.len + buf.len() as u64 >= self.options.segment_bytes && w.len + (buf.len() as u64) > 0
        {
            w.write_and_sync(buf)?;
            pending.rolled[p].push(Segment {
                base: w.base,
                len: w.len,
                next: w.next,
                newest: w.newest,
                index: std::mem::take(&mut pending.index[p]),
            });
            let file = create_segment(&w.dir, w.next)?;
            (w.file, w.base, w.len, w.last_indexed) = (file, w.next, 0, None);
            w.newest = i64::MIN;
        }
        let pos = w.len + buf.len() as u64;
        if w.last_indexed.is_none_or(|l| pos >= l + INDEX_EVERY) {
            pending.index[p].push((w.next, pos));
            w.last_indexed = Some(pos);
        }
        segment::encode(buf, w.next, now, &rec.key, &rec.value);
        let position = Position {
            partition: p as u32,
            offset: w.next,
        };
        w.next += 1;
        w.newest = w.newest.max(now);
        pending.touched[p] = true;
        Ok(position)
    }

    /// Publishes the synced writes to readers: the segments closed, and the growth of the
    /// one being written.
    fn publish(&self, mut pending: Pending) -> Result<()> {
        for (p, w) in self.partitions.iter().enumerate() {
            if !pending.touched[p] {
                continue;
            }
            let mut state = self.shared.partitions[p]
                .write()
                .map_err(|_| Error::Stopped("a lock was poisoned".into()))?;
            for seg in pending.rolled[p].drain(..) {
                publish_segment(&mut state.segments, seg);
            }
            let open = Segment {
                base: w.base,
                len: w.len,
                next: w.next,
                newest: w.newest,
                index: std::mem::take(&mut pending.index[p]),
            };
            publish_segment(&mut state.segments, open);
        }
        Ok(())
    }

    /// Per partition, the offset every protected consumer has committed past (`u64::MAX`
    /// with none protected).
    fn floors(&self) -> Result<Vec<u64>> {
        let protected = self
            .shared
            .consumers
            .lock()
            .map_err(|_| Error::Stopped("a lock was poisoned".into()))?;
        Ok((0..self.shared.partitions.len() as u32)
            .map(|p| {
                protected
                    .values()
                    .map(|positions| positions.get(&p).copied().unwrap_or(0))
                    .min()
                    .unwrap_or(u64::MAX)
            })
            .collect())
    }

    /// Deletes the oldest segments past the size or age limit (never the one being written,
    /// never one holding a record a protected consumer has not committed past).
    fn retain(&mut self) -> Result<()> {
        let cutoff = self.options.retention_age.map(|age| {
            self.options
                .clock
                .now_micros()
                .saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX))
        });
        let floors = self.floors()?;
        for (lock, floor) in self.shared.partitions.iter().zip(floors) {
            let mut state = lock
                .write()
                .map_err(|_| Error::Stopped("a lock was poisoned".into()))?;
            loop {
                if state.segments.len() < 2 {
                    break;
                }
                let total: u64 = state.segments.iter().map(|s| s.len).sum();
                let first = &state.segments[0];
                let too_big = self.options.retention_bytes.is_some_and(|max| total > max);
                let too_old = cutoff.is_some_and(|c| first.newest < c);
                if !(too_big || too_old) || first.next > floor {
                    break;
                }
                let path = segment::path(&state.dir, first.base);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(format!("deleting {}", path.display()))(e)),
                }
                tracing::debug!(segment = %path.display(), "retention deleted a segment");
                state.segments.remove(0);
            }
        }
        Ok(())
    }
}

/// What a group's writes changed, per partition, until they are published: whether it was
/// written to, the index entries added, and the segments closed.
struct Pending {
    touched: Vec<bool>,
    index: Vec<Vec<(u64, u64)>>,
    rolled: Vec<Vec<Segment>>,
}

impl Pending {
    fn new(partitions: usize) -> Pending {
        Pending {
            touched: vec![false; partitions],
            index: vec![Vec::new(); partitions],
            rolled: vec![Vec::new(); partitions],
        }
    }
}

/// Publishes a segment's state: it updates the last published segment when that is the same
/// one (grown since), and follows it otherwise.
fn publish_segment(segments: &mut Vec<Segment>, seg: Segment) {
    match segments.last_mut() {
        Some(l) if l.base == seg.base => {
            l.len = seg.len;
            l.next = seg.next;
            l.newest = seg.newest;
            l.index.extend(seg.index);
        }
        _ => segments.push(seg),
    }
}

/// Opens a partition directory: scans its segments, cuts a torn tail off the last one, and
/// opens that one for appending.
fn recover(dir: &Path) -> Result<(PartitionState, PartitionWriter)> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io(format!("listing {}", dir.display())))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(segment::base_of))
        .collect();
    bases.sort_unstable();
    if bases.is_empty() {
        create_segment(dir, 0)?;
        bases.push(0);
    }
    let mut segments: Vec<Segment> = Vec::new();
    let mut expected: Option<u64> = None;
    for (i, &base) in bases.iter().enumerate() {
        let path = segment::path(dir, base);
        if let Some(e) = expected
            && e != base
        {
            return Err(Error::Corrupt(format!(
                "{}: starts at offset {base}, but the previous segment ends at {e}",
                path.display()
            )));
        }
        let segment = recover_segment(&path, base, i + 1 == bases.len())?;
        expected = Some(segment.next);
        segments.push(segment);
    }
    let last = segments
        .last()
        .cloned()
        .ok_or_else(|| Error::Corrupt(format!("{}: no segment", dir.display())))?;
    let path = segment::path(dir, last.base);
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    let writer = PartitionWriter {
        dir: dir.to_owned(),
        file,
        base: last.base,
        len: last.len,
        next: last.next,
        newest: last.newest,
        last_indexed: last.index.last().map(|&(_, pos)| pos),
    };
    Ok((
        PartitionState {
            dir: dir.to_owned(),
            segments,
        },
        writer,
    ))
}

/// Scans a segment file. A damaged record is a torn tail when the segment is the `last`:
/// it is cut off (a crash mid-write); anywhere else the log is corrupt.
fn recover_segment(path: &Path, base: u64, last: bool) -> Result<Segment> {
    let scan = segment::scan(path, base, INDEX_EVERY)?;
    if scan.valid_len < scan.file_len {
        if !last {
            return Err(Error::Corrupt(format!(
                "{}: a damaged record at byte {} (not the tail of the log)",
                path.display(),
                scan.valid_len
            )));
        }
        tracing::warn!(
            segment = %path.display(),
            bytes = scan.file_len - scan.valid_len,
            after_offset = scan.next_offset,
            "dropping a torn tail (a crash mid-write)"
        );
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(format!("opening {}", path.display())))?;
        f.set_len(scan.valid_len)
            .and_then(|_| f.sync_all())
            .map_err(io(format!("cutting {}", path.display())))?;
    }
    Ok(Segment {
        base,
        len: scan.valid_len,
        next: scan.next_offset,
        newest: scan.newest,
        index: scan.index,
    })
}

/// Creates an empty segment and makes its name durable.
fn create_segment(dir: &Path, base: u64) -> Result<File> {
    let path = segment::path(dir, base);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io(format!("creating {}", path.display())))?;
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

/// Reads `len` bytes at `pos`.
fn read_at(file: &mut File, path: &Path, pos: u64, len: u64) -> Result<Vec<u8>> {
    let mut bytes = vec![0; len as usize];
    file.seek(SeekFrom::Start(pos))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(io(format!("reading {}", path.display())))?;
    Ok(bytes)
}

/// Writes a small file so that a crash leaves the old or the new content, never a mix.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("renaming to {}", path.display())))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn read_positions(path: &Path) -> Result<Positions> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Positions::default()),
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}
