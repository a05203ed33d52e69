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
use shoplake_detect::{Change, Detector, Incident, Settings, Severity};
use shoplake_events::{Event, SystemClock, Validator};
use shoplake_lake::{BotFlag, Lake};
use shoplake_log::{EventLog, Limit};
use tokio::sync::{mpsc, watch};

use crate::metrics::{IncidentLabel, Metrics};
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
    let flags_task = tokio::spawn(flag_loop(lake, flags_rx, metrics.clone()));
    let out = Outputs {
        notifier,
        live,
        flags: flags_tx,
        flag_severity: options.settings.flag_severity,
    };
    let result = run(log, &options, &metrics, &out, stop).await;
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
    log: Arc<dyn EventLog>,
    options: &DetectionOptions,
    metrics: &Metrics,
    out: &Outputs,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut detector = Detector::new(options.settings.clone(), Arc::new(SystemClock));
    let validator = Validator::default();
    let mut positions: BTreeMap<u32, u64> = log.committed(CONSUMER).await?;
    for p in 0..log.partitions() {
        // A detector that never ran starts with what the log holds now.
        let start = log.start(p).await?;
        positions.entry(p).or_insert(start);
    }
    let mut lists = Lists::default();
    let mut held: Vec<(i64, u32, usize, Event)> = Vec::new();
    let mut lists_read = Instant::now() - LISTS_EVERY;
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
        // Every partition up to what it holds now, merged by event time. Partitions fill side
        // by side but not in step (an append lands in each in turn), so a partition that grew
        // while the round read the others (or holds more than a round takes) bounds the round:
        // events newer than what was read of it wait in `held` for the next round, and the
        // watermark does not run ahead of a partition.
        let mut round: Vec<(i64, u32, usize, Event)> = std::mem::take(&mut held);
        let mut next = positions.clone();
        let mut newest: BTreeMap<u32, i64> = BTreeMap::new();
        let limit = Limit::new(
            options.max_per_partition,
            ROUND_BYTES / usize::try_from(log.partitions().max(1)).unwrap_or(1),
        );
        for p in 0..log.partitions() {
            let from = positions.get(&p).copied().unwrap_or(0);
            let records = log.read(p, from, limit).await?;
            let Some(last) = records.last() else { continue };
            next.insert(p, last.offset + 1);
            for r in records {
                if shoplake_log::is_quarantine(&r.key) {
                    continue;
                }
                if let Ok(mut e) = shoplake_events::record::decode(&r.value, &validator) {
                    e.ingest_time.get_or_insert(r.appended_at);
                    // Ordered and held by the time it moves the watermark to (its own, or
                    // its arrival plus the allowed skew for one stamped in the future).
                    let at = detector.progress(&e, e.event_time);
                    let n = newest.entry(p).or_insert(i64::MIN);
                    *n = (*n).max(at);
                    let seq = round.len();
                    round.push((at, p, seq, e));
                }
            }
        }
        let mut bound = i64::MAX;
        if !stopping {
            for p in 0..log.partitions() {
                let read_to = next.get(&p).copied().unwrap_or(0);
                if log.end(p).await? > read_to {
                    bound = bound.min(newest.get(&p).copied().unwrap_or(i64::MIN));
                }
            }
        }
        if bound != i64::MAX {
            let (now, later): (Vec<_>, Vec<_>) = round.into_iter().partition(|r| r.0 <= bound);
            round = now;
            held = later;
        }
        if round.is_empty() && next == positions {
            // Stopping, every round takes all that is held: nothing is left when nothing is read.
            if stopping {
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
            detector.tick(None);
            record(options, metrics, out, detector.take_changes()).await;
            tokio::select! {
                () = tokio::time::sleep(IDLE) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        round.sort_by_key(|(t, p, seq, _)| (*t, *p, *seq));
        let before = detector.stats().clone();
        for (_, _, _, e) in &round {
            detector.process(e);
        }
        let after = detector.stats();
        for (counter, was, is) in [
            (&metrics.detector_events, before.events, after.events),
            (&metrics.detector_late, before.late, after.late),
            (
                &metrics.detector_windows,
                before.windows_fired,
                after.windows_fired,
            ),
            (
                &metrics.detector_keys_evicted,
                before.keys_evicted,
                after.keys_evicted,
            ),
            (
                &metrics.detector_dedupe_evicted,
                before.dedupe_evicted,
                after.dedupe_evicted,
            ),
        ] {
            counter.inc_by(is.saturating_sub(was));
        }
        metrics
            .detector_dedupe_ids
            .set(i64::try_from(detector.dedupe_ids()).unwrap_or(i64::MAX));
        if let Some(newest) = round.last().map(|r| r.3.ingest_time.unwrap_or(r.0)) {
            let lag = (chrono::Utc::now().timestamp_micros() - newest).max(0);
            metrics.detector_lag.set(lag as f64 / 1e6);
        }
        record(options, metrics, out, detector.take_changes()).await;
        if let Err(e) = log.commit(CONSUMER, &next).await {
            tracing::warn!("recording the detector's log positions: {e}");
        }
        positions = next;
    }
}

/// Stores changes (retrying briefly: a store outage must not lose them), counts them, and
/// hands them to the notifications and the bot flags.
async fn record(
    options: &DetectionOptions,
    metrics: &Metrics,
    out: &Outputs,
    changes: Vec<Change>,
) {
    if changes.is_empty() {
        return;
    }
    let now = chrono::Utc::now().timestamp_micros();
    let mut flags = Vec::new();
    for c in &changes {
        out.notifier.notify(c);
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
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=5 {
        match options.store.apply(&changes).await {
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
    fn apply(
        &mut self,
        detector: &mut Detector,
        entries: Vec<shoplake_alerts::Listed>,
    ) -> Vec<i64> {
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
