//! The detector inside `serve` in one process: a consumer of the event log with its own
//! durable position (`detector`), feeding the rules and recording incident changes in the alert store. The
//! allow- and deny-lists are read from the store every few seconds and applied live. Openings
//! and escalations go to the notification channels; incidents on users at the bot severity
//! become rows of `bot_flags`, and allow-listing a user removes its rows.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoplake_alerts::{AlertStore, List, Outgoing};
use shoplake_detect::{Change, Incident, Live, Settings, Severity};
use shoplake_events::time::Clock;
use shoplake_events::{Event, Validator};
use shoplake_lake::{BotFlag, Lake};
use shoplake_log::{EventLog, Limit};
use tokio::sync::{mpsc, watch};

use crate::checkpoint::{self, Checkpoints};
use crate::error::Result;
use crate::metrics::{IncidentLabel, Metrics, PartitionLabel};
use crate::notify::{Notifier, NotifySettings, wall_micros};

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
    /// (the slot further on). Detection spread over a group keeps its checkpoints beside the
    /// lake's tables instead; there this only turns them on.
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
pub(crate) const NOTIFY_GRACE: Duration = Duration::from_secs(10);

/// The bot flags of an incident: its user (when it has one at `min` severity or above) on
/// every UTC day from its opening to its last firing, at most 32 days (an incident that runs
/// longer flags its first 32).
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
pub(crate) enum FlagWork {
    Add(Vec<BotFlag>),
    Remove(Vec<i64>),
}

/// Writes bot flags (and removes those of allow-listed users) every [`FLAGS_EVERY`], so that
/// the lake sees one commit per interval however many incidents open; retries what failed at
/// the next interval. Returns when the detector is done and everything is written.
pub(crate) async fn flag_loop(
    lake: Lake,
    mut rx: mpsc::UnboundedReceiver<FlagWork>,
    metrics: Arc<Metrics>,
) {
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
                    tracing::warn!(flags = add.len(), error = %e, "writing bot flags");
                }
            }
        }
        if !remove.is_empty() {
            remove.sort_unstable();
            remove.dedup();
            match lake.remove_bot_flags(&remove).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(flags = n, "removed the bot flags of allow-listed users");
                    }
                    remove.clear();
                }
                Err(e) => {
                    failed = true;
                    metrics.bot_flag_failures.inc();
                    tracing::warn!(error = %e, "removing the bot flags of allow-listed users");
                }
            }
        }
        if failed && !open {
            // Shutting down with the lake refusing: give up rather than hang the stop.
            tracing::error!(
                flags = add.len(),
                removals = remove.len(),
                "gave up writing bot flags at shutdown"
            );
            return;
        }
        if failed {
            tokio::time::sleep(FLAGS_EVERY).await;
        }
    }
}

/// How long to wait when the log has nothing new.
pub(crate) const IDLE: Duration = Duration::from_millis(20);

/// Where incident changes go besides the store.
pub(crate) struct Outputs {
    pub(crate) notifier: Notifier,
    pub(crate) live: crate::live::LiveSender,
    pub(crate) flags: mpsc::UnboundedSender<FlagWork>,
    pub(crate) flag_severity: Severity,
    pub(crate) clock: Arc<dyn Clock>,
}

impl DetectionOptions {
    /// How often checkpoints are written, when they are on (a place and an interval).
    pub(crate) fn checkpoint_every(&self) -> Option<Duration> {
        self.checkpoint.as_ref()?;
        let every = self.settings.checkpoint_every?;
        Some(Duration::from_micros(u64::try_from(every).unwrap_or(0)))
    }

    /// What a round reads of each of `partitions` partitions at most.
    pub(crate) fn round_limit(&self, partitions: u32) -> Limit {
        Limit::new(
            self.max_per_partition,
            ROUND_BYTES / usize::try_from(partitions.max(1)).unwrap_or(1),
        )
    }
}

/// The checkpoints the options ask for, if any.
fn checkpoints(options: &DetectionOptions) -> Option<Checkpoints> {
    let every = options.checkpoint_every()?;
    Some(Checkpoints::new(options.checkpoint.clone()?, every))
}

/// The detector's positions as last recorded in the log: a round that moved nothing records
/// nothing (each commit writes and syncs a file on the embedded log).
#[derive(Default)]
pub(crate) struct Recorded(Option<BTreeMap<u32, u64>>);

impl Recorded {
    pub(crate) async fn commit(&mut self, log: &dyn EventLog, positions: BTreeMap<u32, u64>) {
        if self.0.as_ref() == Some(&positions) {
            return;
        }
        match log.commit(CONSUMER, &positions).await {
            Ok(()) => self.0 = Some(positions),
            Err(e) => tracing::warn!(error = %e, "recording the detector's log positions"),
        }
    }
}

pub(crate) async fn run(
    lake: &Lake,
    log: Arc<dyn EventLog>,
    options: &DetectionOptions,
    metrics: &Arc<Metrics>,
    out: &Outputs,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let log = log.as_ref();
    let (mut detector, mut positions, mut again) = start(lake, log, options, &out.clock).await?;
    let mut checkpoints = checkpoints(options);
    let validator = Validator::default();
    let mut lists = ListsPoll::default();
    let mut counted = Counted::default();
    let partitions = log.partitions();
    let all: Vec<u32> = (0..partitions).collect();
    let mut recorded = Recorded::default();
    let mut unstored = Unstored::default();
    let limit = options.round_limit(partitions);
    loop {
        let stopping = *stop.borrow();
        lists.refresh(&mut detector, options, out).await;
        // This round reads records read before the restart?
        let recheck = again.as_ref().is_some_and(|ends| behind(&positions, ends));
        if !recheck {
            again = None;
        }
        let round = read_round(
            log,
            &all,
            &mut positions,
            limit,
            &validator,
            |p, offset, e| detector.process(p, offset, e),
        )
        .await?;
        let now = out.clock.now_micros();
        // Stopping, the round that reads nothing releases whatever is still held.
        let drain = stopping && round.read == 0;
        detector.end_round(now, drain);
        counted.export(&detector, metrics, partitions);
        export_lag(metrics, now, round.newest_ingest);
        record(
            options,
            metrics,
            out,
            &mut unstored,
            detector.take_changes(),
            recheck,
        )
        .await;
        // Neither the committed positions nor a checkpoint may run ahead of changes the
        // store has not taken: a restart would not detect them again.
        if unstored.is_empty() {
            // A restart reads again from the oldest event still held, so that the rules
            // keyed across users miss nothing.
            let commit = resume_positions(&positions, detector.oldest_held());
            recorded.commit(log, commit).await;
            if let Some(c) = &mut checkpoints {
                c.after_round(&detector, &positions, lake, metrics, drain)
                    .await;
            }
        }
        if round.read > 0 {
            continue;
        }
        if drain {
            unstored.left_at_stop();
            stopped(&detector);
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

/// Says what the detector did, at its stop.
fn stopped(detector: &Live) {
    let st = detector.stats();
    tracing::info!(
        events = st.events,
        late = st.late,
        duplicates = st.duplicates,
        windows_fired = st.windows_fired,
        "detector stopped"
    );
}

/// The detector to start with and its log positions: restored from its checkpoint, or new
/// at the committed positions (a detector that never ran starts with what the log holds
/// now). With a checkpoint, also where the log ended at the restart: the records up to
/// there may have been read before, and their changes notified.
async fn start(
    lake: &Lake,
    log: &dyn EventLog,
    options: &DetectionOptions,
    clock: &Arc<dyn Clock>,
) -> Result<(Live, BTreeMap<u32, u64>, Option<BTreeMap<u32, u64>>)> {
    let partitions = log.partitions();
    let restored = match (&options.checkpoint, options.settings.checkpoint_every) {
        (Some(path), Some(_)) => {
            checkpoint::restore(path, &options.settings, lake, partitions, clock).await
        }
        _ => None,
    };
    let (detector, mut positions, again) = match restored {
        Some((detector, positions)) => {
            let mut ends = BTreeMap::new();
            for p in 0..partitions {
                ends.insert(p, log.end(p).await?);
            }
            (detector, positions, Some(ends))
        }
        None => (
            Live::new(options.settings.clone(), clock.clone(), partitions),
            log.committed(CONSUMER).await?,
            None,
        ),
    };
    for p in 0..partitions {
        if let std::collections::btree_map::Entry::Vacant(at) = positions.entry(p) {
            at.insert(log.start(p).await?);
        }
    }
    Ok((detector, positions, again))
}

/// Whether any partition's position is still before its end in `ends`.
fn behind(positions: &BTreeMap<u32, u64>, ends: &BTreeMap<u32, u64>) -> bool {
    ends.iter()
        .any(|(p, end)| positions.get(p).is_none_or(|at| at < end))
}

/// Sets the detector's lag: from the newest ingest time a round read to `now` (µs).
pub(crate) fn export_lag(metrics: &Metrics, now: i64, newest_ingest: Option<i64>) {
    if let Some(newest) = newest_ingest {
        metrics.detector_lag.set((now - newest).max(0) as f64 / 1e6);
    }
}

/// The positions a restart resumes from: each partition's position, or the oldest event of
/// it the detector still holds, whichever is earlier.
fn resume_positions(
    positions: &BTreeMap<u32, u64>,
    oldest_held: impl IntoIterator<Item = (u32, u64)>,
) -> BTreeMap<u32, u64> {
    let mut commit = positions.clone();
    for (p, offset) in oldest_held {
        let at = commit.entry(p).or_insert(offset);
        *at = (*at).min(offset);
    }
    commit
}

/// What one round read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Round {
    /// Records read (events, refused rows and unreadable records).
    pub(crate) read: usize,
    /// The newest ingest time among its events.
    pub(crate) newest_ingest: Option<i64>,
}

/// One round over the log: each of `partitions` in turn, from its position up to `limit`.
/// Each event goes to `process` with its partition and offset, in the partition's order (one
/// user's events are in order in their partition, so the rules keyed by user see them as
/// they happened); an event without an ingest time gets its record's append time. Refused
/// rows and records that do not decode are skipped. The positions move past what was read.
pub(crate) async fn read_round(
    log: &dyn EventLog,
    partitions: &[u32],
    positions: &mut BTreeMap<u32, u64>,
    limit: Limit,
    validator: &Validator,
    mut process: impl FnMut(u32, u64, Event),
) -> Result<Round> {
    let mut round = Round::default();
    for &p in partitions {
        let from = positions.get(&p).copied().unwrap_or(0);
        let records = log.read(p, from, limit).await?;
        let Some(last) = records.last() else { continue };
        positions.insert(p, last.offset + 1);
        round.read += records.len();
        for r in records {
            if shoplake_log::is_quarantine(&r.key) {
                continue;
            }
            if let Ok(mut e) = shoplake_events::record::decode(&r.value, validator) {
                e.ingest_time.get_or_insert(r.appended_at);
                round.newest_ingest = round.newest_ingest.max(e.ingest_time);
                process(p, r.offset, e);
            }
        }
    }
    Ok(round)
}

/// The allow- and deny-lists, re-read from the store every [`LISTS_EVERY`].
#[derive(Default)]
pub(crate) struct ListsPoll {
    lists: Lists,
    read_at: Option<Instant>,
}

impl ListsPoll {
    /// Applies the lists to the detector when they are due; users newly allowed lose their
    /// bot flags.
    pub(crate) async fn refresh(
        &mut self,
        detector: &mut Live,
        options: &DetectionOptions,
        out: &Outputs,
    ) {
        if self.read_at.is_some_and(|at| at.elapsed() < LISTS_EVERY) {
            return;
        }
        self.read_at = Some(Instant::now());
        match options.store.listed().await {
            Ok(entries) => {
                let allowed = self.lists.apply(detector, entries);
                if !allowed.is_empty() {
                    let _ = out.flags.send(FlagWork::Remove(allowed));
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the allow- and deny-lists"),
        }
    }
}

/// The detector's counters as last exported, so that each export adds what is new.
#[derive(Default)]
pub(crate) struct Counted {
    stats: shoplake_detect::Stats,
    late: Vec<u64>,
    forced: u64,
}

impl Counted {
    pub(crate) fn export(&mut self, detector: &Live, metrics: &Metrics, partitions: u32) {
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

/// Stores changes and, in the same transaction, their notices in the outbox (retrying
/// briefly: a store outage must not lose them), then counts them and hands them to the live
/// feed and the bot flags, and wakes the notification senders. The outbox keeps a notice
/// once, however often its change is detected (a restart from a checkpoint, a partition two
/// processes briefly both own), and a notice a sender claimed and did not settle (it died) is
/// sent by another; with `again` (records read a second time after a restart from a
/// checkpoint), an opening or escalation the store already held is not written again.
///
/// Changes the store did not take (it was down past the retries) stay in `unstored` and are
/// tried again, first, with the next round's.
pub(crate) async fn record(
    options: &DetectionOptions,
    metrics: &Metrics,
    out: &Outputs,
    unstored: &mut Unstored,
    changes: Vec<Change>,
    again: bool,
) {
    if changes.is_empty() && unstored.is_empty() {
        return;
    }
    let again = again || unstored.again;
    let mut all = std::mem::take(&mut unstored.changes);
    all.extend(changes);
    if !store_with_notices(options, metrics, out, &all, again).await {
        unstored.changes = all;
        unstored.again = again;
        return;
    }
    unstored.again = false;
    let changes = all;
    let now = out.clock.now_micros();
    let mut flags = Vec::new();
    for c in &changes {
        let change = match c {
            Change::Opened(_) => "opened",
            Change::Updated(_) => "updated",
            Change::Escalated(_) => "escalated",
            Change::Resolved(_) => "resolved",
        };
        // Nobody watching the live feed is not an error.
        let _ = out.live.send(crate::live::Live::Incident {
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

/// Stores changes with their notices (with `again`, none of what the store already held),
/// then wakes the senders; false when the store gave up.
async fn store_with_notices(
    options: &DetectionOptions,
    metrics: &Metrics,
    out: &Outputs,
    changes: &[Change],
    again: bool,
) -> bool {
    let mut fresh = Vec::new();
    for c in changes {
        if !again || !notified_before(options, c).await {
            fresh.push(c.clone());
        }
    }
    let notices = out.notifier.notices(&fresh);
    let stored = store_changes(options, metrics, changes, &notices).await;
    if stored && !notices.is_empty() {
        out.notifier.wake();
    }
    stored
}

/// Incident changes the store has not taken yet (it was down past the retries): tried again
/// first at the next round, and until they are stored neither a checkpoint nor the committed
/// log positions move past them (a restart would not detect them again).
#[derive(Default)]
pub(crate) struct Unstored {
    changes: Vec<Change>,
    /// Whether some were detected in records read a second time.
    again: bool,
}

impl Unstored {
    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// At a stop: says what the store never took (the checkpoint and the committed positions
    /// stayed behind it, so the next start detects it again).
    pub(crate) fn left_at_stop(&self) {
        if !self.is_empty() {
            tracing::error!(
                changes = self.changes.len(),
                "the alert store did not take these incident changes before the stop; the \
                 detector's checkpoint and positions stay behind them, so the next start \
                 detects them again"
            );
        }
    }
}

/// Applies changes to the store with their notices, retrying briefly (a store outage must
/// not lose them); false when it gave up.
async fn store_changes(
    options: &DetectionOptions,
    metrics: &Metrics,
    changes: &[Change],
    notices: &[Outgoing],
) -> bool {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=5 {
        match options.store.record(changes, notices, wall_micros()).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(
                    changes = changes.len(),
                    attempt,
                    error = %e,
                    "storing incident changes"
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    metrics.store_failures.inc();
    tracing::error!(
        changes = changes.len(),
        notices = notices.len(),
        "the alert store did not take incident changes; trying them again with the next round"
    );
    false
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use shoplake_events::record::{RecordFormat, encode};
    use shoplake_log::{EmbeddedLog, EmbeddedOptions, Record};

    /// 2019-10-01, the dataset's first day.
    const T0: i64 = 1_569_888_000_000_000;

    fn event(user: i64, t: i64, ingest: Option<i64>) -> Event {
        Event {
            event_time: T0 + t,
            event_type: shoplake_events::EventType::View,
            product_id: 1,
            category_id: 1,
            category_code: None,
            brand: None,
            price: shoplake_events::Price::from_cents(100),
            user_id: user,
            user_session: Some(format!("s-{user}")),
            client_ip: Some("10.0.0.1".parse().unwrap()),
            user_agent: None,
            ingest_time: ingest,
        }
    }

    fn record(e: &Event) -> Record {
        let mut value = Vec::new();
        encode(&mut value, e, RecordFormat::default());
        Record {
            key: e.user_id.to_string().into_bytes(),
            value,
        }
    }

    /// What `process` was given: partition, offset, user, time into the day, ingest time.
    type Seen = (u32, u64, i64, i64, Option<i64>);

    #[tokio::test]
    async fn a_round_reads_each_partition_in_order_from_its_position_and_moves_it_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = EmbeddedOptions::new(dir.path());
        options.partitions = 2;
        let log = EmbeddedLog::open(options).unwrap();
        // User 1 and another user in the other partition.
        let a = log.partition_for(b"1");
        let other = (2..)
            .find(|u: &i64| log.partition_for(u.to_string().as_bytes()) != a)
            .unwrap();
        let b = log.partition_for(other.to_string().as_bytes());
        let mut records = Vec::new();
        for t in 0..3 {
            records.push(record(&event(1, t, Some(T0 + 100 + t))));
            records.push(record(&event(other, t, None)));
        }
        // A refused row and a record that does not decode are read past, not processed.
        records.push(Record {
            key: [shoplake_log::QUARANTINE_KEY, b"/10.0.0.9"].concat(),
            value: b"{}".to_vec(),
        });
        records.push(Record {
            key: other.to_string().into_bytes(),
            value: b"not an event".to_vec(),
        });
        log.append(records).await.unwrap();
        let validator = Validator::default();
        let mut positions = BTreeMap::new();
        let mut seen: Vec<Seen> = Vec::new();
        let round = read_round(
            &log,
            &[0, 1],
            &mut positions,
            Limit::new(2, usize::MAX),
            &validator,
            |p, offset, e| seen.push((p, offset, e.user_id, e.event_time - T0, e.ingest_time)),
        )
        .await
        .unwrap();
        // Two records from each partition, in each partition's order.
        assert_eq!(round.read, 4);
        let of_ingest = |seen: &[Seen], user: i64| -> Vec<Option<i64>> {
            seen.iter().filter(|s| s.2 == user).map(|s| s.4).collect()
        };
        let of = |seen: &[Seen], user: i64| -> Vec<(u64, i64)> {
            seen.iter()
                .filter(|s| s.2 == user)
                .map(|s| (s.1, s.3))
                .collect()
        };
        assert_eq!(of(&seen, 1), vec![(0, 0), (1, 1)]);
        assert_eq!(of(&seen, other), vec![(0, 0), (1, 1)]);
        assert!(seen.iter().all(|s| s.0 == if s.2 == 1 { a } else { b }));
        // An event keeps its ingest time; one without has its record's append time.
        assert_eq!(of_ingest(&seen, 1), vec![Some(T0 + 100), Some(T0 + 101)]);
        assert!(
            of_ingest(&seen, other)
                .iter()
                .all(|t| t.is_some_and(|t| t > T0 + 101))
        );
        assert_eq!(round.newest_ingest, seen.iter().filter_map(|s| s.4).max());
        assert_eq!(positions, BTreeMap::from([(a, 2), (b, 2)]));

        // The next round goes on where this one stopped, and the last reads nothing.
        seen.clear();
        let round = read_round(
            &log,
            &[0, 1],
            &mut positions,
            Limit::new(100, usize::MAX),
            &validator,
            |p, offset, e| seen.push((p, offset, e.user_id, e.event_time - T0, e.ingest_time)),
        )
        .await
        .unwrap();
        assert_eq!(of(&seen, 1), vec![(2, 2)]);
        assert_eq!(of(&seen, other), vec![(2, 2)]);
        let ends = BTreeMap::from([
            (a, log.end(a).await.unwrap()),
            (b, log.end(b).await.unwrap()),
        ]);
        assert_eq!(positions, ends);
        assert_eq!(round.read as u64, ends.values().sum::<u64>() - 4);
        let round = read_round(
            &log,
            &[0, 1],
            &mut positions,
            Limit::new(100, usize::MAX),
            &validator,
            |_, _, _| panic!("nothing is left to read"),
        )
        .await
        .unwrap();
        assert_eq!(round, Round::default());
    }

    /// An alert store that refuses the next `fails` records, then is the SQLite one.
    struct Flaky {
        inner: shoplake_alerts::SqlStore,
        fails: std::sync::atomic::AtomicU32,
    }

    #[async_trait::async_trait]
    impl AlertStore for Flaky {
        async fn record(
            &self,
            changes: &[Change],
            notices: &[shoplake_alerts::Outgoing],
            now: i64,
        ) -> shoplake_alerts::Result<()> {
            use std::sync::atomic::Ordering;
            let left = self.fails.load(Ordering::SeqCst);
            if left > 0 {
                self.fails.store(left - 1, Ordering::SeqCst);
                return Err(shoplake_alerts::Error::Argument("the store is down".into()));
            }
            self.inner.record(changes, notices, now).await
        }
        async fn claim_notices(
            &self,
            channel: &str,
            owner: &str,
            now: i64,
            until: i64,
            limit: usize,
        ) -> shoplake_alerts::Result<Vec<shoplake_alerts::Claimed>> {
            self.inner
                .claim_notices(channel, owner, now, until, limit)
                .await
        }
        async fn settle_notice(
            &self,
            notice: &shoplake_alerts::Outgoing,
            owner: &str,
            now: i64,
            outcome: &shoplake_alerts::Settled,
        ) -> shoplake_alerts::Result<bool> {
            self.inner.settle_notice(notice, owner, now, outcome).await
        }
        async fn pending_notices(&self, channel: &str) -> shoplake_alerts::Result<u64> {
            self.inner.pending_notices(channel).await
        }
        async fn get(
            &self,
            id: &str,
        ) -> shoplake_alerts::Result<Option<shoplake_alerts::StoredIncident>> {
            self.inner.get(id).await
        }
        async fn by_key(
            &self,
            key_type: shoplake_detect::KeyType,
            key: &str,
            limit: usize,
        ) -> shoplake_alerts::Result<Vec<shoplake_alerts::StoredIncident>> {
            self.inner.by_key(key_type, key, limit).await
        }
        async fn between(
            &self,
            from: i64,
            to: i64,
            page: &shoplake_alerts::Page,
        ) -> shoplake_alerts::Result<Vec<shoplake_alerts::StoredIncident>> {
            self.inner.between(from, to, page).await
        }
        async fn open(
            &self,
            min: Severity,
            limit: usize,
        ) -> shoplake_alerts::Result<Vec<shoplake_alerts::StoredIncident>> {
            self.inner.open(min, limit).await
        }
        async fn prune_resolved(&self, before: i64) -> shoplake_alerts::Result<u64> {
            self.inner.prune_resolved(before).await
        }
        async fn acknowledge(&self, id: &str, who: &str, at: i64) -> shoplake_alerts::Result<bool> {
            self.inner.acknowledge(id, who, at).await
        }
        async fn resolve(&self, id: &str, who: &str, at: i64) -> shoplake_alerts::Result<bool> {
            self.inner.resolve(id, who, at).await
        }
        async fn set_listed(
            &self,
            list: shoplake_alerts::List,
            key_type: shoplake_detect::KeyType,
            key: &str,
            on: bool,
            who: &str,
            at: i64,
        ) -> shoplake_alerts::Result<()> {
            self.inner
                .set_listed(list, key_type, key, on, who, at)
                .await
        }
        async fn listed(&self) -> shoplake_alerts::Result<Vec<shoplake_alerts::Listed>> {
            self.inner.listed().await
        }
    }

    #[tokio::test]
    async fn changes_the_store_did_not_take_are_stored_with_the_next_round() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("alerts.db").display());
        let store = Arc::new(Flaky {
            inner: shoplake_alerts::SqlStore::open(&url).await.unwrap(),
            // Every attempt of the first round's.
            fails: 5.into(),
        });
        let settings = shoplake_detect::DetectConfig::default().settings().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(shoplake_events::time::FixedClock(T0));
        let options = DetectionOptions {
            settings: settings.clone(),
            store: store.clone(),
            max_per_partition: 1000,
            notify: NotifySettings::default(),
            retain_resolved: None,
            checkpoint: None,
        };
        let metrics = Arc::new(Metrics::new());
        let (flags, _flags_rx) = mpsc::unbounded_channel();
        let out = Outputs {
            notifier: Notifier::start(
                &options.notify,
                store.clone(),
                metrics.clone(),
                clock.clone(),
            )
            .unwrap(),
            live: tokio::sync::broadcast::channel(16).0,
            flags,
            flag_severity: settings.flag_severity,
            clock: clock.clone(),
        };
        // A user's burst opens an incident.
        let mut detector = shoplake_detect::Detector::new(settings, clock);
        for i in 0..500 {
            detector.process(&event(1, i * 10_000, None));
        }
        detector.finish();
        let changes = detector.take_changes();
        let Some(Change::Opened(opened)) = changes.first().cloned() else {
            panic!("no incident opened: {changes:?}");
        };
        let mut unstored = Unstored::default();
        super::record(&options, &metrics, &out, &mut unstored, changes, false).await;
        assert!(!unstored.is_empty(), "the store took nothing");
        assert!(store.get(&opened.id).await.unwrap().is_none());
        // The store is back: the next round stores them, before its own (none here).
        super::record(&options, &metrics, &out, &mut unstored, Vec::new(), false).await;
        assert!(unstored.is_empty());
        let stored = store.get(&opened.id).await.unwrap().unwrap();
        assert_eq!(stored.rule, opened.rule);
        out.notifier.close(Duration::from_secs(1)).await;
    }

    #[test]
    fn a_restart_resumes_from_the_oldest_event_still_held() {
        let positions = BTreeMap::from([(0, 10), (1, 20), (2, 30)]);
        let resumed = resume_positions(&positions, vec![(1, 15), (2, 31)]);
        assert_eq!(resumed, BTreeMap::from([(0, 10), (1, 15), (2, 30)]));
        assert!(behind(&positions, &BTreeMap::from([(0, 10), (1, 21)])));
        assert!(!behind(&positions, &BTreeMap::from([(0, 10), (1, 20)])));
        assert!(behind(&positions, &BTreeMap::from([(3, 1)])));
    }
}
