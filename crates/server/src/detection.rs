//! The detector inside `serve`: a consumer of the event log with its own durable position
//! (`detector`), feeding the rules and recording incident changes in the alert store. The
//! allow- and deny-lists are read from the store every few seconds and applied live. Openings
//! and escalations go to the notification channels; incidents on users at the bot severity
//! become rows of `bot_flags`, and allow-listing a user removes its rows.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use shoplake_alerts::{AlertStore, List};
use shoplake_detect::{Change, Incident, Live, Settings, Severity};
use shoplake_events::{SystemClock, Validator};
use shoplake_lake::{BotFlag, Lake};
use shoplake_log::{EventLog, Limit};
use tokio::sync::{mpsc, watch};

use crate::metrics::{IncidentLabel, Metrics, PartitionLabel};
use crate::notify::{Notifier, NotifySettings};

/// The detector's consumer name in the log.
pub const CONSUMER: &str = "detector";

/// How the detector runs in `serve`.
#[derive(Clone)]
pub struct DetectionOptions {
    /// The rules and time settings.
    pub settings: Settings,
    /// Where incidents go.
    pub store: Arc<dyn AlertStore>,
    /// The most records read from one partition per round.
    pub max_per_partition: usize,
    /// Where openings and escalations are sent.
    pub notify: NotifySettings,
    /// Delete resolved incidents this long after their resolution (`None`: keep them).
    pub retain_resolved: Option<Duration>,
    /// Where the detector's checkpoint is kept (`PATH.a` and `PATH.b`, alternately; `None`:
    /// no checkpoints, and a restart resumes at the committed log positions with empty
    /// windows). Written every `settings.checkpoint_every` and at shutdown, restored at start
    /// (the slot further on).
    pub checkpoint: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for DetectionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectionOptions")
            .field("rules", &self.settings.rules.len())
            .finish_non_exhaustive()
    }
}

/// The bytes of records one round reads from the log at most, spread over the partitions
/// (the round holds them decoded until the rules have seen them).
const ROUND_BYTES: usize = 32 << 20;

/// How often the lists are re-read from the store.
const LISTS_EVERY: Duration = Duration::from_secs(2);
/// How often new bot flags are written to the lake.
const FLAGS_EVERY: Duration = Duration::from_secs(2);
/// How long queued notifications may take at shutdown.
const NOTIFY_GRACE: Duration = Duration::from_secs(10);

/// The bot flags of an incident: its user (when it has one at `min` severity or above) on
/// every UTC day from its opening to its last firing.
pub fn bot_flags_of(incident: &Incident, min: Severity, now: i64) -> Vec<BotFlag> {
    let Some(user_id) = incident.bot_user(min) else {
        return Vec::new();
    };
    let first = BotFlag::day_of(incident.opened_at);
    let last = BotFlag::day_of(incident.updated_at).clamp(first, first + 31);
    (first..=last)
        .map(|day| BotFlag {
            user_id,
            day,
            rule: incident.rule.clone(),
            incident_id: incident.id.clone(),
            flagged_at: now,
        })
        .collect()
}

/// Work for the task that keeps `bot_flags`.
enum FlagWork {
    Add(Vec<BotFlag>),
    Remove(Vec<i64>),
}

/// Writes bot flags (and removes those of allow-listed users) every [`FLAGS_EVERY`], so that
/// the lake sees one commit per interval however many incidents open; retries what failed at
/// the next interval. Returns when the detector is done and everything is written.
async fn flag_loop(lake: Lake, mut rx: mpsc::UnboundedReceiver<FlagWork>, metrics: Arc<Metrics>) {
    let mut written: HashSet<(String, i32)> = HashSet::new();
    let mut add: Vec<BotFlag> = Vec::new();
    let mut remove: Vec<i64> = Vec::new();
    let mut open = true;
    while open || !add.is_empty() || !remove.is_empty() {
        let deadline = tokio::time::Instant::now() + FLAGS_EVERY;
        while open {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(FlagWork::Add(flags))) => {
                    for f in flags {
                        if written.insert((f.incident_id.clone(), f.day)) {
                            add.push(f);
                        }
                    }
                }
                Ok(Some(FlagWork::Remove(users))) => {
                    // A user allow-listed now: its pending flags go too.
                    add.retain(|f| !users.contains(&f.user_id));
                    remove.extend(users);
                }
                Ok(None) => open = false,
                Err(_) => break,
            }
        }
        let mut failed = false;
        if !add.is_empty() {
            match lake.add_bot_flags(&add).await {
                Ok(n) => {
                    metrics.bot_flags.inc_by(n as u64);
                    add.clear();
                }
                Err(e) => {
                    failed = true;
                    metrics.bot_flag_failures.inc();
                    tracing::warn!("writing {} bot flag(s): {e}", add.len());
                }
            }
        }
        if !remove.is_empty() {
            remove.sort_unstable();
            remove.dedup();
            match lake.remove_bot_flags(&remove).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!("removed {n} bot flag(s) of allow-listed users");
                    }
                    remove.clear();
                }
                Err(e) => {
                    failed = true;
                    metrics.bot_flag_failures.inc();
                    tracing::warn!("removing the bot flags of allow-listed users: {e}");
                }
            }
        }
        if failed && !open {
            // Shutting down with the lake refusing: give up rather than hang the stop.
            tracing::error!(
                "gave up {} bot flag(s) and {} removal(s) at shutdown",
                add.len(),
                remove.len()
            );
            return;
        }
        if failed {
            tokio::time::sleep(FLAGS_EVERY).await;
        }
    }
}

/// How long to wait when the log has nothing new.
const IDLE: Duration = Duration::from_millis(20);

/// Reads the log from the detector's committed positions until `stop`, then once more to its
/// end.
pub(crate) async fn detect_loop(
    lake: Lake,
    log: Arc<dyn EventLog>,
    options: DetectionOptions,
    metrics: Arc<Metrics>,
    live: crate::lake_api::LiveSender,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let notifier = Notifier::start(&options.notify, metrics.clone())?;
    let (flags_tx, flags_rx) = mpsc::unbounded_channel();
    let flags_task = tokio::spawn(flag_loop(lake.clone(), flags_rx, metrics.clone()));
    let out = Outputs {
        notifier,
        live,
        flags: flags_tx,
        flag_severity: options.settings.flag_severity,
    };
    let result = run(&lake, log, &options, &metrics, &out, stop).await;
    let Outputs {
        notifier, flags, ..
    } = out;
    drop(flags);
    notifier.close(NOTIFY_GRACE).await;
    if let Err(e) = flags_task.await {
        tracing::error!("the bot flag writer failed: {e}");
    }
    result
}

/// Where incident changes go besides the store.
struct Outputs {
    notifier: Notifier,
    live: crate::lake_api::LiveSender,
    flags: mpsc::UnboundedSender<FlagWork>,
    flag_severity: Severity,
}

async fn run(
    lake: &Lake,
    log: Arc<dyn EventLog>,
    options: &DetectionOptions,
    metrics: &Arc<Metrics>,
    out: &Outputs,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let partitions = log.partitions();
    let restored = restore(options, lake, partitions).await;
    // Restored from a checkpoint: the records after it up to what the log held at the
    // restart may have been read before, and their changes notified.
    let mut again = match restored {
        Some(_) => {
            let mut ends = BTreeMap::new();
            for p in 0..partitions {
                ends.insert(p, log.end(p).await?);
            }
            Some(ends)
        }
        None => None,
    };
    let (mut detector, mut positions) = match restored {
        Some(restored) => restored,
        None => (
            Live::new(options.settings.clone(), Arc::new(SystemClock), partitions),
            log.committed(CONSUMER).await?,
        ),
    };
    let validator = Validator::default();
    let checkpoint_every = options
        .settings
        .checkpoint_every
        .and_then(|us| u64::try_from(us).ok())
        .map(Duration::from_micros);
    let mut last_checkpoint = Instant::now();
    let mut writing: Option<tokio::task::JoinHandle<Result<()>>> = None;
    let mut next_slot = false;
    for p in 0..partitions {
        // A detector that never ran starts with what the log holds now.
        let start = log.start(p).await?;
        positions.entry(p).or_insert(start);
    }
    let mut lists = Lists::default();
    let mut lists_read = Instant::now() - LISTS_EVERY;
    let mut counted = Counted::default();
    let limit = Limit::new(
        options.max_per_partition,
        ROUND_BYTES / usize::try_from(partitions.max(1)).unwrap_or(1),
    );
    loop {
        let stopping = *stop.borrow();
        if lists_read.elapsed() >= LISTS_EVERY {
            lists_read = Instant::now();
            match options.store.listed().await {
                Ok(entries) => {
                    let allowed = lists.apply(&mut detector, entries);
                    if !allowed.is_empty() {
                        let _ = out.flags.send(FlagWork::Remove(allowed));
                    }
                }
                Err(e) => tracing::warn!("reading the allow- and deny-lists: {e}"),
            }
        }
        // This round reads records read before the restart?
        let recheck = again.as_ref().is_some_and(|ends| {
            ends.iter()
                .any(|(p, end)| positions.get(p).is_none_or(|at| at < end))
        });
        if !recheck {
            again = None;
        }
        // Every partition, each up to what a round takes: the rules keyed by user see each
        // event as it is read (one user's events are in order in their partition); the
        // others once every partition's watermark has passed it.
        let mut read = 0usize;
        let mut newest_ingest: Option<i64> = None;
        for p in 0..partitions {
            let from = positions.get(&p).copied().unwrap_or(0);
            let records = log.read(p, from, limit).await?;
            let Some(last) = records.last() else { continue };
            positions.insert(p, last.offset + 1);
            read += records.len();
            for r in records {
                if shoplake_log::is_quarantine(&r.key) {
                    continue;
                }
                if let Ok(mut e) = shoplake_events::record::decode(&r.value, &validator) {
                    e.ingest_time.get_or_insert(r.appended_at);
                    newest_ingest = newest_ingest.max(e.ingest_time);
                    detector.process(p, r.offset, e);
                }
            }
        }
        let now = chrono::Utc::now().timestamp_micros();
        // Stopping, the round that reads nothing releases whatever is still held.
        let drain = stopping && read == 0;
        detector.end_round(now, drain);
        counted.export(&detector, metrics, partitions);
        if let Some(newest) = newest_ingest {
            let lag = (now - newest).max(0);
            metrics.detector_lag.set(lag as f64 / 1e6);
        }
        let changes = detector.take_changes();
        record(options, metrics, out, changes, recheck).await;
        // A restart reads again from the oldest event still held, so that the rules keyed
        // across users miss nothing.
        let mut commit = positions.clone();
        for (p, offset) in detector.oldest_held() {
            commit.insert(p, offset);
        }
        if let Err(e) = log.commit(CONSUMER, &commit).await {
            tracing::warn!("recording the detector's log positions: {e}");
        }
        if let Some(w) = writing.take_if(|w| w.is_finished()) {
            wrote(metrics, w.await);
        }
        if let (Some(path), Some(every)) = (&options.checkpoint, checkpoint_every)
            && (drain || last_checkpoint.elapsed() >= every)
        {
            // The state is copied between rounds, then encoded and written beside the next
            // ones; while a write runs, the next checkpoint waits (at shutdown, for the write
            // to end).
            if let Some(w) = writing.take_if(|_| drain) {
                wrote(metrics, w.await);
            }
            if writing.is_none() {
                last_checkpoint = Instant::now();
                let started = Instant::now();
                let snapshot = detector.snapshot(&positions);
                metrics
                    .detector_checkpoint_seconds
                    .observe(started.elapsed().as_secs_f64());
                let slot = slots(path)[usize::from(next_slot)].clone();
                next_slot = !next_slot;
                let task = tokio::spawn(write_checkpoint(
                    slot,
                    lake.clone(),
                    snapshot,
                    Arc::clone(metrics),
                ));
                if drain {
                    wrote(metrics, task.await);
                } else {
                    writing = Some(task);
                }
            }
        }
        if read == 0 {
            if drain {
                let st = detector.stats();
                tracing::info!(
                    "detector stopped: {} events, {} late, {} duplicates, {} windows fired",
                    st.events,
                    st.late,
                    st.duplicates,
                    st.windows_fired
                );
                return Ok(());
            }
            if !stopping {
                tokio::select! {
                    () = tokio::time::sleep(IDLE) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// The detector from its checkpoint, with the positions it reflects; `None` (logged) when
/// there is none or it cannot be used. A lake not on the local disk keeps a copy beside its
/// tables too (so that the state outlives the machine): the one further on is taken.
async fn restore(
    options: &DetectionOptions,
    lake: &Lake,
    partitions: u32,
) -> Option<(Live, BTreeMap<u32, u64>)> {
    let path = options.checkpoint.clone()?;
    options.settings.checkpoint_every?;
    let mut found: Vec<(String, Vec<u8>)> = Vec::new();
    for slot in slots(&path) {
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
        let settings = options.settings.clone();
        let restored = tokio::task::spawn_blocking(move || {
            Live::restore(settings, Arc::new(SystemClock), partitions, &bytes)
        })
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
            tracing::warn!("writing the detector's checkpoint: {e:#}");
        }
        Err(e) => {
            metrics.detector_checkpoint_failures.inc();
            tracing::warn!("writing the detector's checkpoint: {e}");
        }
    }
}

/// The name of the detector's checkpoint among the lake's own files.
const LAKE_CHECKPOINT: &str = "detector-checkpoint";

/// The two files a checkpoint alternates between (`PATH.a`, `PATH.b`): each write overwrites
/// the older in place, so the other stays whole whatever happens to this one.
fn slots(path: &std::path::Path) -> [std::path::PathBuf; 2] {
    [path.with_extension("a"), path.with_extension("b")]
}

/// Writes a checkpoint over one of its two slots, in place and without `fsync`: renaming
/// over a file, or syncing tens of megabytes, makes the file system flush it ahead of the
/// log's and the alert store's own syncs, which then stall for a second. A process killed at
/// any moment leaves the bytes in the page cache; after a power loss a slot may be stale or
/// torn, which its checksum tells (the other slot, or the committed positions, serve then).
/// Also beside the lake's tables when the lake is not on the local disk.
async fn write_checkpoint(
    path: std::path::PathBuf,
    lake: Lake,
    snapshot: shoplake_detect::LiveSnapshot,
    metrics: Arc<Metrics>,
) -> Result<()> {
    // Encoded and written on one blocking thread; the bytes come back for the lake's copy.
    let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        use std::io::{Seek, Write};
        let bytes = snapshot.encode();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        f.seek(std::io::SeekFrom::Start(0))?;
        f.write_all(&bytes)?;
        f.set_len(bytes.len() as u64)?;
        Ok(bytes)
    })
    .await??;
    metrics
        .detector_checkpoint_bytes
        .set(i64::try_from(bytes.len()).unwrap_or(i64::MAX));
    let copy = (!lake.is_local()).then_some(bytes);
    if let Some(bytes) = copy {
        lake.put_own_file(LAKE_CHECKPOINT, bytes).await?;
    }
    Ok(())
}

/// The detector's counters as last exported, so that each export adds what is new.
#[derive(Default)]
struct Counted {
    stats: shoplake_detect::Stats,
    late: Vec<u64>,
    forced: u64,
}

impl Counted {
    fn export(&mut self, detector: &Live, metrics: &Metrics, partitions: u32) {
        let now = detector.stats();
        for (counter, was, is) in [
            (&metrics.detector_events, self.stats.events, now.events),
            (&metrics.detector_late, self.stats.late, now.late),
            (
                &metrics.detector_windows,
                self.stats.windows_fired,
                now.windows_fired,
            ),
            (
                &metrics.detector_keys_evicted,
                self.stats.keys_evicted,
                now.keys_evicted,
            ),
            (
                &metrics.detector_dedupe_evicted,
                self.stats.dedupe_evicted,
                now.dedupe_evicted,
            ),
        ] {
            counter.inc_by(is.saturating_sub(was));
        }
        self.stats = now;
        let live = detector.live_stats();
        self.late.resize(live.late.len(), 0);
        for (p, (was, is)) in self.late.iter_mut().zip(&live.late).enumerate() {
            if *is > *was {
                metrics
                    .detector_partition_late
                    .get_or_create(&PartitionLabel {
                        partition: p as u32,
                    })
                    .inc_by(is - *was);
                *was = *is;
            }
        }
        if live.forced > self.forced {
            tracing::warn!(
                released = live.forced - self.forced,
                held = detector.held(),
                "the detector's reorder buffer is full (detect.max_held): the oldest events \
                 were released before every partition's watermark passed them, and events of \
                 partitions behind them will be late"
            );
            metrics.detector_forced.inc_by(live.forced - self.forced);
            self.forced = live.forced;
        }
        metrics
            .detector_held
            .set(i64::try_from(detector.held()).unwrap_or(i64::MAX));
        metrics
            .detector_dedupe_ids
            .set(i64::try_from(detector.dedupe_ids()).unwrap_or(i64::MAX));
        for p in 0..partitions {
            let mark = detector.partition_watermark(p);
            if mark != i64::MIN {
                metrics
                    .detector_partition_watermark
                    .get_or_create(&PartitionLabel { partition: p })
                    .set(mark as f64 / 1e6);
            }
        }
    }
}

/// Stores changes (retrying briefly: a store outage must not lose them), then counts them
/// and hands them to the notifications and the bot flags: a change is notified once it is
/// stored. With `again` (records read a second time after a restart from a checkpoint), an
/// opening or escalation the store already held is not notified again.
async fn record(
    options: &DetectionOptions,
    metrics: &Metrics,
    out: &Outputs,
    changes: Vec<Change>,
    again: bool,
) {
    if changes.is_empty() {
        return;
    }
    let mut notified = vec![false; changes.len()];
    if again {
        for (n, c) in notified.iter_mut().zip(&changes) {
            *n = notified_before(options, c).await;
        }
    }
    store_changes(options, metrics, &changes).await;
    let now = chrono::Utc::now().timestamp_micros();
    let mut flags = Vec::new();
    for (c, notified) in changes.iter().zip(notified) {
        if !notified {
            out.notifier.notify(c);
        }
        let change = match c {
            Change::Opened(_) => "opened",
            Change::Updated(_) => "updated",
            Change::Escalated(_) => "escalated",
            Change::Resolved(_) => "resolved",
        };
        // Nobody watching the live feed is not an error.
        let _ = out.live.send(crate::lake_api::Live::Incident {
            change,
            incident: c.incident().clone(),
        });
        if !matches!(c, Change::Resolved(_)) {
            flags.extend(bot_flags_of(c.incident(), out.flag_severity, now));
        }
    }
    if !flags.is_empty() {
        let _ = out.flags.send(FlagWork::Add(flags));
    }
    for c in &changes {
        let i = c.incident();
        let label = IncidentLabel {
            rule: i.rule.clone(),
            severity: i.severity.as_str().to_owned(),
        };
        match c {
            Change::Opened(_) => {
                metrics.incidents_opened.get_or_create(&label).inc();
                // The key is an attacker's text: a structured field, quoted and escaped.
                tracing::info!(
                    id = %i.id,
                    rule = %i.rule,
                    key_type = i.key_type.as_str(),
                    key = ?i.key,
                    severity = %i.severity,
                    peak = i.peak,
                    "incident opened"
                );
            }
            Change::Escalated(_) => {
                metrics.incidents_escalated.get_or_create(&label).inc();
                tracing::info!(id = %i.id, severity = %i.severity, "incident escalated");
            }
            Change::Resolved(_) => {
                metrics.incidents_resolved.get_or_create(&label).inc();
            }
            Change::Updated(_) => {}
        }
    }
}

/// Applies changes to the store, retrying briefly (a store outage must not lose them).
async fn store_changes(options: &DetectionOptions, metrics: &Metrics, changes: &[Change]) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=5 {
        match options.store.apply(changes).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(
                    "storing {} incident change(s) (attempt {attempt}): {e}",
                    changes.len()
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    metrics.store_failures.inc();
    tracing::error!("gave up storing {} incident change(s)", changes.len());
}

/// Whether the store already holds an opening or escalation (the incident at its severity or
/// above), so that it was notified before.
async fn notified_before(options: &DetectionOptions, c: &Change) -> bool {
    let (Change::Opened(i) | Change::Escalated(i)) = c else {
        return false;
    };
    match options.store.get(&i.id).await {
        Ok(Some(stored)) => {
            Severity::parse(&stored.severity).unwrap_or(Severity::Low) >= i.severity
        }
        _ => false,
    }
}

/// The lists as last applied to the detector.
#[derive(Default)]
struct Lists {
    allow_users: HashSet<i64>,
    allow_ips: HashSet<IpAddr>,
    deny_users: HashSet<i64>,
    deny_ips: HashSet<IpAddr>,
}

impl Lists {
    /// Applies the lists as they now are; returns the users newly allowed.
    fn apply(&mut self, detector: &mut Live, entries: Vec<shoplake_alerts::Listed>) -> Vec<i64> {
        let mut now = Lists::default();
        for e in entries {
            match (e.list, e.key_type.as_str()) {
                (List::Allow, "user_id") => {
                    now.allow_users.extend(e.key.parse::<i64>());
                }
                (List::Allow, "client_ip") => {
                    now.allow_ips.extend(e.key.parse::<IpAddr>());
                }
                (List::Deny, "user_id") => {
                    now.deny_users.extend(e.key.parse::<i64>());
                }
                (List::Deny, "client_ip") => {
                    now.deny_ips.extend(e.key.parse::<IpAddr>());
                }
                _ => {}
            }
        }
        let mut allowed = Vec::new();
        for u in now.allow_users.difference(&self.allow_users) {
            detector.set_allowed_user(*u, true);
            allowed.push(*u);
        }
        for u in self.allow_users.difference(&now.allow_users) {
            detector.set_allowed_user(*u, false);
        }
        for ip in now.allow_ips.difference(&self.allow_ips) {
            detector.set_allowed_ip(*ip, true);
        }
        for ip in self.allow_ips.difference(&now.allow_ips) {
            detector.set_allowed_ip(*ip, false);
        }
        for u in now.deny_users.difference(&self.deny_users) {
            detector.set_denied_user(*u, true);
        }
        for u in self.deny_users.difference(&now.deny_users) {
            detector.set_denied_user(*u, false);
        }
        for ip in now.deny_ips.difference(&self.deny_ips) {
            detector.set_denied_ip(*ip, true);
        }
        for ip in self.deny_ips.difference(&now.deny_ips) {
            detector.set_denied_ip(*ip, false);
        }
        *self = now;
        allowed
    }
}
