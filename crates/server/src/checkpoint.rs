//! The detector's checkpoints: its state (windows, open incidents, duplicate horizon,
//! per-partition watermarks) with the log positions it reflects, written alternately to two
//! slots beside the data (and beside the lake's tables when the lake is not on the local
//! disk), restored at start from the one further on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoplake_detect::{Live, Settings};
use shoplake_events::time::Clock;
use shoplake_lake::Lake;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The detector from its checkpoint, with the positions it reflects; `None` (logged) when
/// there is none or it cannot be used. A lake not on the local disk keeps a copy beside its
/// tables too (so that the state outlives the machine): the one further on is taken.
pub(crate) async fn restore(
    path: &Path,
    settings: &Settings,
    lake: &Lake,
    partitions: u32,
    clock: &Arc<dyn Clock>,
) -> Option<(Live, BTreeMap<u32, u64>)> {
    let mut found: Vec<(String, Vec<u8>)> = Vec::new();
    for slot in slots(path) {
        match tokio::fs::read(&slot).await {
            Ok(b) => found.push((slot.display().to_string(), b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %slot.display(), error = %e, "reading the detector's checkpoint")
            }
        }
    }
    if !lake.is_local() {
        match lake.get_own_file(LAKE_CHECKPOINT).await {
            Ok(Some(b)) => found.push((format!("{}_shoplake/{LAKE_CHECKPOINT}", lake.root()), b)),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading the detector's checkpoint from the lake"),
        }
    }
    let mut best: Option<(Live, BTreeMap<u32, u64>)> = None;
    for (place, bytes) in found {
        let settings = settings.clone();
        let clock = clock.clone();
        let restored =
            tokio::task::spawn_blocking(move || Live::restore(settings, clock, partitions, &bytes))
                .await
                .ok()?;
        match restored {
            Ok((live, positions)) => {
                let ahead = |p: &BTreeMap<u32, u64>| p.values().sum::<u64>();
                if best
                    .as_ref()
                    .is_none_or(|(_, b)| ahead(&positions) > ahead(b))
                {
                    best = Some((live, positions));
                }
            }
            Err(reason) => tracing::warn!(
                checkpoint = %place,
                %reason,
                "the detector's checkpoint cannot be used"
            ),
        }
    }
    match &best {
        Some((live, _)) => tracing::info!(
            open_incidents = live.open_incidents().len(),
            held = live.held(),
            "detector restored from its checkpoint; reading on from the positions it reflects"
        ),
        None => tracing::info!(
            "no usable detector checkpoint: starting with empty windows at the committed log positions"
        ),
    }
    best
}

/// Counts a checkpoint's write.
fn wrote(metrics: &Metrics, result: std::result::Result<Result<()>, tokio::task::JoinError>) {
    match result {
        Ok(Ok(())) => {
            metrics.detector_checkpoints.inc();
        }
        Ok(Err(e)) => {
            metrics.detector_checkpoint_failures.inc();
            tracing::warn!(error = %format!("{e:#}"), "writing the detector's checkpoint");
        }
        Err(e) => {
            metrics.detector_checkpoint_failures.inc();
            tracing::warn!(error = %e, "writing the detector's checkpoint");
        }
    }
}

/// The name of the detector's checkpoint among the lake's own files.
const LAKE_CHECKPOINT: &str = "detector-checkpoint";

/// The two files a checkpoint alternates between (`PATH.a`, `PATH.b`): each write overwrites
/// the older in place, so the other stays whole whatever happens to this one.
fn slots(path: &Path) -> [PathBuf; 2] {
    [path.with_extension("a"), path.with_extension("b")]
}

/// Writes a checkpoint over one of its two slots, in place and without `fsync`: renaming
/// over a file, or syncing tens of megabytes, makes the file system flush it ahead of the
/// log's and the alert store's own syncs, which then stall for a second. A process killed at
/// any moment leaves the bytes in the page cache; after a power loss a slot may be stale or
/// torn, which its checksum tells (the other slot, or the committed positions, serve then).
/// Also beside the lake's tables when the lake is not on the local disk.
async fn write_checkpoint(
    path: PathBuf,
    lake: Lake,
    snapshot: shoplake_detect::LiveSnapshot,
    metrics: Arc<Metrics>,
) -> Result<()> {
    // Encoded and written on one blocking thread; the bytes come back for the lake's copy.
    let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let bytes = snapshot.encode();
        overwrite(&path, &bytes).map_err(Error::io(format!("writing {}", path.display())))?;
        Ok(bytes)
    })
    .await
    .map_err(|source| Error::Task {
        what: "checkpoint",
        source,
    })??;
    metrics
        .detector_checkpoint_bytes
        .set(i64::try_from(bytes.len()).unwrap_or(i64::MAX));
    let copy = (!lake.is_local()).then_some(bytes);
    if let Some(bytes) = copy {
        lake.put_own_file(LAKE_CHECKPOINT, bytes).await?;
    }
    Ok(())
}

/// Writes `bytes` over the file at `path` from its start, then cuts it there.
fn overwrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.seek(std::io::SeekFrom::Start(0))?;
    f.write_all(bytes)?;
    f.set_len(bytes.len() as u64)
}

/// When checkpoints are written: every `every`, and at the end; one write at a time, beside
/// the rounds that follow.
pub(crate) struct Checkpoints {
    path: PathBuf,
    every: Duration,
    last: Instant,
    writing: Option<tokio::task::JoinHandle<Result<()>>>,
    next_slot: bool,
}

impl Checkpoints {
    /// Checkpoints at `path` every `every`.
    pub(crate) fn new(path: PathBuf, every: Duration) -> Checkpoints {
        Checkpoints {
            path,
            every,
            last: Instant::now(),
            writing: None,
            next_slot: false,
        }
    }

    /// After a round: counts a write that ended, and starts the next when one is due (at
    /// the end, `last`, always, and waits for it).
    pub(crate) async fn after_round(
        &mut self,
        detector: &Live,
        positions: &BTreeMap<u32, u64>,
        lake: &Lake,
        metrics: &Arc<Metrics>,
        last: bool,
    ) {
        if let Some(w) = self.writing.take_if(|w| w.is_finished()) {
            wrote(metrics, w.await);
        }
        if !(last || self.last.elapsed() >= self.every) {
            return;
        }
        // The state is copied between rounds, then encoded and written beside the next
        // ones; while a write runs, the next checkpoint waits (at shutdown, for the write to
        // end).
        if let Some(w) = self.writing.take_if(|_| last) {
            wrote(metrics, w.await);
        }
        if self.writing.is_some() {
            return;
        }
        self.last = Instant::now();
        let started = Instant::now();
        let snapshot = detector.snapshot(positions);
        metrics
            .detector_checkpoint_seconds
            .observe(started.elapsed().as_secs_f64());
        let slot = slots(&self.path)[usize::from(self.next_slot)].clone();
        self.next_slot = !self.next_slot;
        let task = tokio::spawn(write_checkpoint(
            slot,
            lake.clone(),
            snapshot,
            Arc::clone(metrics),
        ));
        if last {
            wrote(metrics, task.await);
        } else {
            self.writing = Some(task);
        }
    }
}
