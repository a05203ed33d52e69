//! The detector over a partitioned log, as `serve` runs it: the same windows as over history
//! (sorted by event time), from a stream whose partitions and producers run apart.
//!
//! The log keeps each user's events in order (they share a key), but not the events of
//! different users: producers sending side by side (replay's connections, a shop's front
//! ends) interleave their events in every partition, and partitions are read at different
//! speeds. So:
//!
//! - Rules keyed by user or session see each event on arrival ([`Detector`] in driven mode):
//!   their windows need only their key's order, and fire at once. They run per partition (a
//!   user's events all go to one), each partition's on its own watermark: what they decide
//!   depends on that partition's records alone, never on how fast the others are read, so a
//!   partition's share of the state can move to another process with it. A partition gone
//!   idle follows the stream's watermark (its keys are forgotten and its incidents resolve
//!   as time moves on elsewhere).
//! - Rules keyed across users (address, all traffic) see events in event-time order: they are
//!   held in a reorder buffer and released as the watermark passes them.
//! - The watermark is per partition (Flink's per-input watermarks): a partition's is the
//!   newest event time among its *settled* records minus the lateness, where a record settles
//!   once `reorder_records` newer records of its partition were read or `reorder_wait` passed
//!   since it was read; the stream's is the least over partitions that are not idle (no
//!   records for `partition_idle`). The rules keyed across users forget keys and resolve
//!   incidents behind the stream's; those keyed by user behind their partition's.
//! - The buffer is bounded (`max_held`): past it the oldest are released and the watermark
//!   moves on to them (counted in [`LiveStats::forced`]; events behind it are then late).
//!
//! A round ends in two steps with one hand-off between them: each partition's side settles
//! its watermark, moves its user rules to it and makes a [`Block`] (its new events for the
//! rules keyed across users, its watermark, whether it is idle); the cross-user side takes
//! the blocks ([`Live::accept`], by offset, once), takes the least watermark of the
//! partitions not idle, and releases what it passed. Nothing else crosses between the two, so
//! the partitions' sides can live in other processes, their blocks carried over the log.
//!
//! An event behind its partition's watermark when it arrives is late: counted per partition,
//! not windowed (it still lands in the lake); so is one behind the stream's watermark when it
//! reaches the rules keyed across users (a partition waking from idleness, or a full buffer).
//!
//! Each partition's detector keeps its own limits: `max_keys` and `max_dedupe_ids` are shared
//! out evenly among the partitions.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoplake_events::record::RecordFormat;
use shoplake_events::time::Clock;
use shoplake_events::{Event, Validator};

use crate::engine::{Detector, DetectorCopy, DetectorState, Stats};
use crate::incident::{Change, Incident};
use crate::rules::{KeyType, Settings, TimeMode};

/// One partition's progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    /// Rounds read and not yet settled: (last offset, read at, newest event time in them).
    pending: VecDeque<(u64, i64, i64)>,
    /// The newest event time among settled records.
    settled: i64,
    /// The newest offset read.
    newest_offset: u64,
    /// This round so far, in chunks of [`CHUNK`] records: (last offset, newest event time).
    round: Vec<(u64, i64)>,
    /// Records in the round's last chunk.
    in_chunk: u32,
    /// When records were last read (µs of the wall clock; `i64::MIN`: never).
    last_read: i64,
}

impl Part {
    fn new() -> Part {
        Part {
            pending: VecDeque::new(),
            settled: i64::MIN,
            newest_offset: 0,
            round: Vec::new(),
            in_chunk: 0,
            last_read: i64::MIN,
        }
    }
}

/// Records of a partition noted as one step of its progress: a round read from a backlog
/// (tens of thousands of records) settles all but its last `reorder_records`, not as a whole.
const CHUNK: u32 = 1_000;

/// Per-partition watermarks, merged: see the module's documentation.
#[derive(Debug, Clone)]
pub struct Watermarks {
    lateness: i64,
    wait: i64,
    records: u64,
    idle: i64,
    parts: Vec<Part>,
}

impl Watermarks {
    /// Watermarks for `partitions` partitions with the settings' lateness, reorder bounds and
    /// idleness.
    pub fn new(partitions: u32, settings: &Settings) -> Watermarks {
        Watermarks {
            lateness: settings.lateness,
            wait: settings.reorder_wait,
            records: settings.reorder_records,
            idle: settings.partition_idle,
            parts: (0..partitions.max(1)).map(|_| Part::new()).collect(),
        }
    }

    /// Notes a record of `partition` at `offset` whose event time moves time to `at`.
    pub fn observe(&mut self, partition: u32, offset: u64, at: i64) {
        let Some(p) = self.parts.get_mut(partition as usize) else {
            return;
        };
        p.newest_offset = p.newest_offset.max(offset);
        match p.round.last_mut() {
            Some((last, newest)) if p.in_chunk < CHUNK => {
                *last = offset;
                *newest = (*newest).max(at);
                p.in_chunk += 1;
            }
            _ => {
                p.round.push((offset, at));
                p.in_chunk = 1;
            }
        }
    }

    /// Ends a round of reading at `now` (µs, wall clock).
    pub fn end_round(&mut self, now: i64) {
        for p in &mut self.parts {
            if !p.round.is_empty() {
                p.last_read = now;
            }
            // Each chunk at least as new as the one before (a record moves time by the
            // newest before it too).
            let mut newest = p.pending.back().map_or(i64::MIN, |e| e.2);
            for (offset, t) in p.round.drain(..) {
                newest = newest.max(t);
                p.pending.push_back((offset, now, newest));
            }
            p.in_chunk = 0;
        }
    }

    /// A partition's watermark (`i64::MIN` before any of its records settled).
    pub fn partition(&self, partition: u32) -> i64 {
        self.parts
            .get(partition as usize)
            .map_or(i64::MIN, |p| p.settled.saturating_sub(self.lateness))
    }

    /// Whether a partition had no records for the idle time by `now` (or never had any).
    pub fn is_idle(&self, partition: u32, now: i64) -> bool {
        self.parts
            .get(partition as usize)
            .is_none_or(|p| p.last_read == i64::MIN || now.saturating_sub(p.last_read) >= self.idle)
    }

    /// The stream's watermark at `now`: the least over the partitions that are not idle (the
    /// greatest when all are); `i64::MIN` until one settles. Not monotone by itself: a
    /// partition that wakes from idleness may pull it back ([`Live`] keeps the greatest).
    pub fn watermark(&mut self, now: i64) -> i64 {
        let marks: Vec<(i64, bool)> = (0..self.parts.len())
            .map(|i| self.settle(i as u32, now))
            .collect();
        least_not_idle(marks)
    }

    /// Settles what a partition's records allow by `now`; returns its watermark and whether
    /// it is idle.
    pub fn settle(&mut self, partition: u32, now: i64) -> (i64, bool) {
        let idle = self.is_idle(partition, now);
        let Some(p) = self.parts.get_mut(partition as usize) else {
            return (i64::MIN, true);
        };
        while let Some(&(offset, read_at, newest)) = p.pending.front() {
            let settled = idle
                || p.newest_offset.saturating_sub(offset) >= self.records
                || now.saturating_sub(read_at) >= self.wait;
            if !settled {
                break;
            }
            p.settled = p.settled.max(newest);
            p.pending.pop_front();
        }
        (p.settled.saturating_sub(self.lateness), idle)
    }
}

/// The stream's watermark from its partitions' (watermark, idle): the least of those not
/// idle, the greatest when all are.
fn least_not_idle(marks: impl IntoIterator<Item = (i64, bool)>) -> i64 {
    let mut least: Option<i64> = None;
    let mut greatest = i64::MIN;
    for (mark, idle) in marks {
        greatest = greatest.max(mark);
        if !idle {
            least = Some(least.map_or(mark, |l| l.min(mark)));
        }
    }
    least.unwrap_or(greatest)
}

/// What a partition's detector hands on to the rules keyed across users after each round: the
/// events it read since its last block that were neither late nor duplicates (with their
/// offsets), and its watermark and idleness then. In one process [`Live`] hands blocks over at
/// once; a block handed over again, or overlapping one already taken (a partition's detector
/// restored from an older checkpoint, or two briefly owning it), adds nothing twice: events
/// are taken by offset, once.
#[derive(Debug, Clone, Default)]
pub struct Block {
    /// The partition.
    pub partition: u32,
    /// Its watermark at the end of the round.
    pub watermark: i64,
    /// Whether it was idle then.
    pub idle: bool,
    /// (offset, event), in offset order.
    pub events: Vec<(u64, Event)>,
}

/// A [`Block`] as bytes travel between processes: the header, then each event as a binary
/// log record.
#[derive(Serialize, Deserialize)]
struct BlockWire {
    partition: u32,
    watermark: i64,
    idle: bool,
    events: Vec<(u64, Vec<u8>)>,
}

/// The first bytes of an encoded block, and its format's version.
const BLOCK_MAGIC: &[u8; 4] = b"SLDB";

impl Block {
    /// The block as bytes ([`Block::decode`] reads them back).
    pub fn encode(&self) -> Vec<u8> {
        let wire = BlockWire {
            partition: self.partition,
            watermark: self.watermark,
            idle: self.idle,
            events: self
                .events
                .iter()
                .map(|(offset, e)| {
                    let mut bytes = Vec::new();
                    shoplake_events::record::encode(&mut bytes, e, RecordFormat::Binary);
                    (*offset, bytes)
                })
                .collect(),
        };
        let payload = postcard::to_allocvec(&wire).unwrap_or_default();
        let mut out = Vec::with_capacity(payload.len() + 16);
        out.extend_from_slice(BLOCK_MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// A block from [`Block::encode`]'s bytes; the reason when they are not one (damaged, of
    /// another version, an event that does not pass the validator).
    pub fn decode(bytes: &[u8]) -> Result<Block, String> {
        if bytes.get(..4) != Some(BLOCK_MAGIC.as_slice()) {
            return Err("not a detector block".to_owned());
        }
        let version = bytes
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes);
        if version != Some(VERSION) {
            return Err(format!("a block of format {version:?}, not {VERSION}"));
        }
        let checksum = bytes
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or("the block is cut short")?;
        let payload = &bytes[16..];
        if xxhash_rust::xxh3::xxh3_64(payload) != checksum {
            return Err("the block is damaged (checksum)".to_owned());
        }
        let wire: BlockWire =
            postcard::from_bytes(payload).map_err(|e| format!("the block is damaged: {e}"))?;
        let validator = Validator::default();
        let events = wire
            .events
            .into_iter()
            .map(|(offset, bytes)| {
                shoplake_events::record::decode(&bytes, &validator)
                    .map(|e| (offset, e))
                    .map_err(|e| format!("an event of the block at offset {offset}: {}", e.reason))
            })
            .collect::<Result<_, _>>()?;
        Ok(Block {
            partition: wire.partition,
            watermark: wire.watermark,
            idle: wire.idle,
            events,
        })
    }
}

/// What the rules keyed across users know of one partition: the last block's watermark and
/// idleness, and the offset its next new event must be at or past.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Frontier {
    watermark: i64,
    idle: bool,
    next: u64,
}

impl Default for Frontier {
    fn default() -> Self {
        // Before its first block a partition holds nothing back (as one never read).
        Frontier {
            watermark: i64::MIN,
            idle: true,
            next: 0,
        }
    }
}

/// An event held for the rules keyed across users, ordered by (time, partition, offset).
#[derive(Debug)]
struct HeldEvent {
    order: (i64, u32, u64),
    event: Event,
}

impl PartialEq for HeldEvent {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}
impl Eq for HeldEvent {}
impl PartialOrd for HeldEvent {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeldEvent {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order.cmp(&other.order)
    }
}

/// What the live detector counted besides the engine's [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveStats {
    /// Late events per partition.
    pub late: Vec<u64>,
    /// Events released before the watermark reached them because the buffer was full.
    pub forced: u64,
}

/// A checkpoint's contents besides its header.
#[derive(Debug, Serialize, Deserialize)]
struct LiveState {
    /// The log positions the state reflects: every record before them, none after.
    positions: BTreeMap<u32, u64>,
    /// Per partition (one in processing-time mode).
    keyed: Vec<DetectorState>,
    crossed: Option<DetectorState>,
    parts: Vec<Part>,
    frontiers: Vec<Frontier>,
    /// Held events: (time, partition, offset, binary log record).
    held: Vec<(i64, u32, u64, Vec<u8>)>,
    watermark: i64,
    keyed_late: Vec<u64>,
    stats: LiveStats,
}

/// Held events from a checkpoint's records.
fn decode_held(
    records: Vec<(i64, u32, u64, Vec<u8>)>,
) -> Result<BinaryHeap<Reverse<HeldEvent>>, String> {
    let validator = Validator::default();
    records
        .into_iter()
        .map(|(t, p, offset, bytes)| {
            let event = shoplake_events::record::decode(&bytes, &validator)
                .map_err(|e| format!("a held event of the checkpoint: {}", e.reason))?;
            Ok(Reverse(HeldEvent {
                order: (t, p, offset),
                event,
            }))
        })
        .collect()
}

/// The first bytes of a checkpoint file, and its format's version.
const MAGIC: &[u8; 4] = b"SLDC";
const VERSION: u32 = 2;

/// The first bytes of one partition's share of the state ([`Live::partition_snapshot`]).
const PARTITION_MAGIC: &[u8; 4] = b"SLDP";

/// One partition's side of the detector, as it moves between processes.
#[derive(Debug, Serialize, Deserialize)]
struct PartitionState {
    partition: u32,
    /// The partition's log position the state reflects.
    position: u64,
    keyed: DetectorState,
    part: Part,
    late: u64,
}

/// The first bytes of the cross-user side's state ([`Live::cross_snapshot`]).
const CROSS_MAGIC: &[u8; 4] = b"SLDX";

/// The rules keyed across users' side of the detector, as it moves between processes.
#[derive(Debug, Serialize, Deserialize)]
struct CrossState {
    /// Where the process reading the partitions' blocks got to (its own positions).
    position: BTreeMap<u32, u64>,
    crossed: DetectorState,
    frontiers: Vec<Frontier>,
    /// Held events: (time, partition, offset, binary log record).
    held: Vec<(i64, u32, u64, Vec<u8>)>,
    watermark: i64,
    stats: LiveStats,
}

/// `payload` behind a header: magic, format version, settings fingerprint, checksum.
fn seal(magic: &[u8; 4], fingerprint: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 24);
    out.extend_from_slice(magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload behind a [`seal`]ed header, checked; the reason when it does not fit.
fn unseal<'a>(magic: &[u8; 4], fingerprint: u64, bytes: &'a [u8]) -> Result<&'a [u8], String> {
    let header = |at: usize| -> Result<u64, String> {
        bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| "the checkpoint is cut short".to_owned())
    };
    if bytes.get(..4) != Some(magic.as_slice()) {
        return Err("not a detector checkpoint".to_owned());
    }
    let version = bytes
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes);
    if version != Some(VERSION) {
        return Err(format!("a checkpoint of format {version:?}, not {VERSION}"));
    }
    if header(8)? != fingerprint {
        return Err("taken under other detection settings or partitions".to_owned());
    }
    let checksum = header(16)?;
    let payload = &bytes[24.min(bytes.len())..];
    if xxhash_rust::xxh3::xxh3_64(payload) != checksum {
        return Err("the checkpoint is damaged (checksum)".to_owned());
    }
    Ok(payload)
}

/// A hash of the settings a checkpoint depends on: one taken under others is not restored.
fn settings_fingerprint(s: &Settings, partitions: u32) -> u64 {
    let key = format!(
        "{partitions}|{:?}|{}|{}|{}|{}|{}|{:?}",
        s.time, s.lateness, s.max_skew, s.cooldown, s.dedupe_horizon, s.max_keys, s.rules
    );
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

/// A live detector's state copied for a checkpoint ([`Live::snapshot`]).
pub struct LiveSnapshot {
    fingerprint: u64,
    positions: BTreeMap<u32, u64>,
    keyed: Vec<DetectorCopy>,
    crossed: Option<DetectorCopy>,
    parts: Vec<Part>,
    frontiers: Vec<Frontier>,
    held: Vec<(i64, u32, u64, Vec<u8>)>,
    watermark: i64,
    keyed_late: Vec<u64>,
    stats: LiveStats,
}

impl std::fmt::Debug for LiveSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSnapshot")
            .field("positions", &self.positions)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl LiveSnapshot {
    /// The checkpoint's bytes (compacted, encoded, with its header): the expensive part,
    /// for a thread beside the detector.
    pub fn encode(self) -> Vec<u8> {
        let state = LiveState {
            positions: self.positions,
            keyed: self
                .keyed
                .into_iter()
                .map(DetectorCopy::into_state)
                .collect(),
            crossed: self.crossed.map(DetectorCopy::into_state),
            parts: self.parts,
            frontiers: self.frontiers,
            held: self.held,
            watermark: self.watermark,
            keyed_late: self.keyed_late,
            stats: self.stats,
        };
        let payload = postcard::to_allocvec(&state).unwrap_or_default();
        seal(MAGIC, self.fingerprint, &payload)
    }
}

/// The detector `serve` runs: see the module's documentation.
pub struct Live {
    settings: Settings,
    clock: Arc<dyn Clock>,
    /// The settings of each partition's detector and of the cross-user one (event-time mode).
    keyed_settings: Settings,
    crossed_settings: Settings,
    /// Each partition idle at its last round's end.
    idle: Vec<bool>,
    /// The rules keyed by user or session, per partition (all rules, in one, in
    /// processing-time mode).
    keyed: Vec<Detector>,
    /// The rules keyed across users (none in processing-time mode).
    crossed: Option<Detector>,
    /// Each partition's progress (its detector's).
    marks: Watermarks,
    /// Each partition's events for its next block.
    outbox: Vec<Vec<(u64, Event)>>,
    /// Each partition as the rules keyed across users know it.
    frontiers: Vec<Frontier>,
    held: BinaryHeap<Reverse<HeldEvent>>,
    watermark: i64,
    /// Per partition, events late at their partition's detector.
    keyed_late: Vec<u64>,
    /// The cross-user side's counts: its late events per partition, its forced releases.
    stats: LiveStats,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("watermark", &self.watermark)
            .field("held", &self.held.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Whether the log keeps a rule's keys' events in order: its key is a user, or a session
/// (one user's).
fn in_key_order(key: KeyType) -> bool {
    matches!(key, KeyType::UserId | KeyType::UserSession)
}

impl Live {
    /// A detector over a log of `partitions` partitions. In processing-time mode every rule
    /// sees events on arrival, as the reference design's did.
    pub fn new(settings: Settings, clock: Arc<dyn Clock>, partitions: u32) -> Live {
        let marks = Watermarks::new(partitions, &settings);
        let shares = marks.parts.len();
        let mut keyed_settings = settings.clone();
        keyed_settings.rules.retain(|r| in_key_order(r.key));
        keyed_settings.max_keys = keyed_settings.max_keys.div_ceil(shares);
        keyed_settings.max_dedupe_ids = keyed_settings.max_dedupe_ids.div_ceil(shares);
        let mut crossed_settings = settings.clone();
        crossed_settings.rules.retain(|r| !in_key_order(r.key));
        let mut live = Live {
            clock,
            keyed_settings,
            crossed_settings,
            idle: vec![true; shares],
            keyed_late: vec![0; shares],
            stats: LiveStats {
                late: vec![0; shares],
                forced: 0,
            },
            settings,
            keyed: Vec::new(),
            crossed: None,
            outbox: vec![Vec::new(); shares],
            frontiers: vec![Frontier::default(); shares],
            marks,
            held: BinaryHeap::new(),
            watermark: i64::MIN,
        };
        match live.settings.time {
            TimeMode::Processing => {
                live.keyed = vec![Detector::new(live.settings.clone(), live.clock.clone())];
            }
            TimeMode::Event => {
                live.keyed = (0..shares).map(|_| live.fresh_keyed()).collect();
                live.crossed = Some(live.fresh_crossed());
            }
        }
        live
    }

    /// A partition's detector as it starts (event-time mode).
    fn fresh_keyed(&self) -> Detector {
        Detector::new(self.keyed_settings.clone(), self.clock.clone()).driven()
    }

    /// The cross-user detector as it starts (event-time mode).
    fn fresh_crossed(&self) -> Detector {
        Detector::new(self.crossed_settings.clone(), self.clock.clone())
            .driven()
            .deduplicated_upstream()
    }

    /// Processes the record of `partition` at `offset`: the rules keyed by user or session at
    /// once, the others once the watermark passes it.
    pub fn process(&mut self, partition: u32, offset: u64, mut e: Event) {
        if self.crossed.is_none() {
            self.keyed[0].process(&e);
            return;
        }
        let Some(keyed) = self.keyed.get_mut(partition as usize) else {
            return;
        };
        let at = keyed.progress(&e, e.event_time);
        self.marks.observe(partition, offset, at);
        let (late, duplicates) = (keyed.stats().late, keyed.stats().duplicates);
        keyed.process(&e);
        if keyed.stats().late > late {
            if let Some(n) = self.keyed_late.get_mut(partition as usize) {
                *n += 1;
            }
        } else if keyed.stats().duplicates == duplicates {
            // Neither late nor a duplicate: the rules keyed across users see what those keyed
            // by user see, without the texts none of them reads (the user agent, which may be
            // a KiB; the session, category code and brand): less to hold, checkpoint and, spread
            // over processes, to hand over through the log.
            e.user_agent = None;
            e.user_session = None;
            e.category_code = None;
            e.brand = None;
            if let Some(out) = self.outbox.get_mut(partition as usize) {
                out.push((offset, e));
            }
        }
    }

    /// Ends a round of reading at `now` (µs, wall clock): moves the watermark, releases the
    /// held events it passed to the rules keyed across users, closes windows and resolves
    /// quiet incidents. With `drain`, releases everything (the end of the input).
    pub fn end_round(&mut self, now: i64, drain: bool) {
        if self.crossed.is_none() {
            self.keyed[0].tick(None);
            return;
        }
        let all: Vec<u32> = (0..self.keyed.len() as u32).collect();
        for block in self.end_partitions(now, &all) {
            self.accept(block);
        }
        self.combine(drain);
        self.follow(self.watermark, &all);
    }

    /// The partitions' side of a round's end, for the partitions this process owns (event-time
    /// mode): their watermarks settle, their user rules move to them, and their blocks are
    /// made, for [`Live::accept`] here or in the process that runs the rules keyed across
    /// users. Then [`Live::follow`] with the stream's watermark.
    pub fn end_partitions(&mut self, now: i64, owned: &[u32]) -> Vec<Block> {
        if self.crossed.is_none() {
            return Vec::new();
        }
        self.marks.end_round(now);
        let partitions = self.keyed.len();
        owned
            .iter()
            .filter(|p| (**p as usize) < partitions)
            .map(|p| self.partition_round(*p, now))
            .collect()
    }

    /// Moves the user rules of the owned partitions that were idle at their last round to the
    /// stream's watermark (keys forgotten, incidents resolved as time moves on elsewhere).
    pub fn follow(&mut self, stream: i64, owned: &[u32]) {
        for p in owned {
            let p = *p as usize;
            if self.idle.get(p) == Some(&true)
                && let Some(keyed) = self.keyed.get_mut(p)
            {
                keyed.advance_to(stream);
            }
        }
    }

    /// The rules keyed across users' side of a round's end, in the process that runs them:
    /// after the round's blocks were [accepted](Live::accept), releases what the stream's
    /// watermark passed (everything with `drain`); returns that watermark.
    pub fn combine_round(&mut self, drain: bool) -> i64 {
        self.combine(drain);
        self.watermark
    }

    /// One partition's share of the state, reflecting its log up to `position`: what a
    /// process that gains the partition restores ([`Live::restore_partition`]). Take it between
    /// rounds, with the partition's changes taken and stored.
    pub fn partition_snapshot(&self, partition: u32, position: u64) -> Option<Vec<u8>> {
        let p = partition as usize;
        self.crossed.as_ref()?;
        let state = PartitionState {
            partition,
            position,
            keyed: self.keyed.get(p)?.copy().into_state(),
            part: self.marks.parts.get(p)?.clone(),
            late: *self.keyed_late.get(p)?,
        };
        let payload = postcard::to_allocvec(&state).ok()?;
        Some(seal(PARTITION_MAGIC, self.fingerprint(), &payload))
    }

    /// Takes a partition's share of the state from a [`Live::partition_snapshot`] taken with
    /// the same settings and partitions (in this process or another); returns the partition
    /// and the position to read it on from. What the rules keyed across users know of the
    /// partition stays (its blocks are taken by offset, once).
    pub fn restore_partition(&mut self, bytes: &[u8]) -> Result<(u32, u64), String> {
        let payload = unseal(PARTITION_MAGIC, self.fingerprint(), bytes)?;
        let state: PartitionState =
            postcard::from_bytes(payload).map_err(|e| format!("the checkpoint is damaged: {e}"))?;
        let p = state.partition as usize;
        if p >= self.keyed.len() || self.crossed.is_none() {
            return Err(format!("no partition {} here", state.partition));
        }
        let mut keyed = self.fresh_keyed();
        keyed.restore(state.keyed)?;
        self.keyed[p] = keyed;
        self.marks.parts[p] = state.part;
        self.keyed_late[p] = state.late;
        self.outbox[p].clear();
        self.idle[p] = true;
        Ok((state.partition, state.position))
    }

    /// Starts a partition's share of the state afresh: a partition lost to another process
    /// (its state goes with it), or gained without a snapshot.
    pub fn reset_partition(&mut self, partition: u32) {
        let p = partition as usize;
        if p >= self.keyed.len() || self.crossed.is_none() {
            return;
        }
        self.keyed[p] = self.fresh_keyed();
        self.marks.parts[p] = Part::new();
        self.keyed_late[p] = 0;
        self.outbox[p].clear();
        self.idle[p] = true;
    }

    /// The rules keyed across users' share of the state, with `position` (where the caller
    /// read the partitions' blocks to): what the process that takes that side over restores
    /// ([`Live::restore_cross`]). Take it between rounds, with the changes taken and stored.
    pub fn cross_snapshot(&self, position: &BTreeMap<u32, u64>) -> Option<Vec<u8>> {
        let state = CrossState {
            position: position.clone(),
            crossed: self.crossed.as_ref()?.copy().into_state(),
            frontiers: self.frontiers.clone(),
            held: self.held_records(),
            watermark: self.watermark,
            stats: self.stats.clone(),
        };
        let payload = postcard::to_allocvec(&state).ok()?;
        Some(seal(CROSS_MAGIC, self.fingerprint(), &payload))
    }

    /// Takes the rules keyed across users' share of the state from a
    /// [`Live::cross_snapshot`] taken with the same settings and partitions; returns the
    /// position it was taken at. The partitions' shares stay as they are.
    pub fn restore_cross(&mut self, bytes: &[u8]) -> Result<BTreeMap<u32, u64>, String> {
        let payload = unseal(CROSS_MAGIC, self.fingerprint(), bytes)?;
        let state: CrossState =
            postcard::from_bytes(payload).map_err(|e| format!("the checkpoint is damaged: {e}"))?;
        if self.crossed.is_none() {
            return Err("no rules keyed across users in processing-time mode".to_owned());
        }
        if state.frontiers.len() != self.frontiers.len()
            || state.stats.late.len() != self.stats.late.len()
        {
            return Err("taken with other partitions".to_owned());
        }
        let mut fresh = self.fresh_crossed();
        fresh.restore(state.crossed)?;
        let held = decode_held(state.held)?;
        self.crossed = Some(fresh);
        self.held = held;
        self.frontiers = state.frontiers;
        self.watermark = state.watermark;
        self.stats = state.stats;
        Ok(state.position)
    }

    /// Starts the rules keyed across users' share afresh (the side moved to another process).
    pub fn reset_cross(&mut self) {
        if self.crossed.is_some() {
            self.crossed = Some(self.fresh_crossed());
            self.held.clear();
            self.frontiers = vec![Frontier::default(); self.frontiers.len()];
            self.watermark = i64::MIN;
            self.stats = LiveStats {
                late: vec![0; self.stats.late.len()],
                forced: 0,
            };
        }
    }

    /// The held events as a checkpoint keeps them.
    fn held_records(&self) -> Vec<(i64, u32, u64, Vec<u8>)> {
        self.held
            .iter()
            .map(|Reverse(h)| {
                let mut bytes = Vec::new();
                shoplake_events::record::encode(&mut bytes, &h.event, RecordFormat::Binary);
                (h.order.0, h.order.1, h.order.2, bytes)
            })
            .collect()
    }

    fn fingerprint(&self) -> u64 {
        settings_fingerprint(
            &self.settings,
            u32::try_from(self.marks.parts.len()).unwrap_or(u32::MAX),
        )
    }

    /// A partition's side of a round's end: its watermark settles, its rules keyed by user
    /// move to it, and its block is made.
    fn partition_round(&mut self, partition: u32, now: i64) -> Block {
        let (watermark, idle) = self.marks.settle(partition, now);
        let p = partition as usize;
        if let Some(i) = self.idle.get_mut(p) {
            *i = idle;
        }
        if let Some(keyed) = self.keyed.get_mut(p) {
            keyed.advance_to(watermark);
        }
        Block {
            partition,
            watermark,
            idle,
            events: self
                .outbox
                .get_mut(p)
                .map(std::mem::take)
                .unwrap_or_default(),
        }
    }

    /// Takes a partition's block for the rules keyed across users: its new events (by
    /// offset) wait for the stream's watermark; its watermark and idleness count from now.
    pub fn accept(&mut self, block: Block) {
        let Some(f) = self.frontiers.get_mut(block.partition as usize) else {
            return;
        };
        for (offset, event) in block.events {
            if offset < f.next {
                continue;
            }
            f.next = offset + 1;
            self.held.push(Reverse(HeldEvent {
                order: (event.event_time, block.partition, offset),
                event,
            }));
        }
        f.watermark = f.watermark.max(block.watermark);
        f.idle = block.idle;
    }

    /// The rules keyed across users' side of a round's end: the stream's watermark from the
    /// partitions' last blocks, and the held events it passed released to them in
    /// (time, partition, offset) order. With `drain`, everything is released.
    fn combine(&mut self, drain: bool) {
        let Some(crossed) = &mut self.crossed else {
            return;
        };
        let mut mark = least_not_idle(self.frontiers.iter().map(|f| (f.watermark, f.idle)))
            .max(self.watermark);
        let max_held = self.settings.max_held.max(1);
        while let Some(Reverse(next)) = self.held.peek() {
            let t = next.order.0;
            let over = drain || self.held.len() > max_held;
            if t > mark && !over {
                break;
            }
            if t > mark {
                if !drain {
                    self.stats.forced += 1;
                }
                mark = t;
            }
            if let Some(Reverse(h)) = self.held.pop() {
                let (late, p) = (crossed.stats().late, h.order.1);
                crossed.process(&h.event);
                if crossed.stats().late > late
                    && let Some(n) = self.stats.late.get_mut(p as usize)
                {
                    *n += 1;
                }
            }
        }
        if mark > self.watermark {
            self.watermark = mark;
            crossed.advance_to(mark);
        }
    }

    /// A checkpoint of the whole state, reflecting the log up to `positions` (per partition,
    /// the next offset to read): take it between rounds (after [`Live::end_round`], which
    /// hands every block over), with the changes taken and stored.
    /// Restored by [`Live::restore`].
    pub fn checkpoint(&self, positions: &BTreeMap<u32, u64>) -> Vec<u8> {
        self.snapshot(positions).encode()
    }

    /// The state copied for a checkpoint (cheap), to be encoded beside the detector by
    /// [`LiveSnapshot::encode`].
    pub fn snapshot(&self, positions: &BTreeMap<u32, u64>) -> LiveSnapshot {
        debug_assert!(
            self.outbox.iter().all(Vec::is_empty),
            "a checkpoint between rounds"
        );
        let held = self.held_records();
        LiveSnapshot {
            fingerprint: settings_fingerprint(
                &self.settings,
                u32::try_from(self.marks.parts.len()).unwrap_or(u32::MAX),
            ),
            positions: positions.clone(),
            keyed: self.keyed.iter().map(Detector::copy).collect(),
            crossed: self.crossed.as_ref().map(Detector::copy),
            parts: self.marks.parts.clone(),
            frontiers: self.frontiers.clone(),
            held,
            watermark: self.watermark,
            keyed_late: self.keyed_late.clone(),
            stats: self.stats.clone(),
        }
    }

    /// A detector from a checkpoint taken with the same settings and partitions, and the log
    /// positions to read on from. Fails with the reason when the checkpoint is damaged, of
    /// another version, or was taken under other settings (the caller then starts afresh).
    pub fn restore(
        settings: Settings,
        clock: Arc<dyn Clock>,
        partitions: u32,
        bytes: &[u8],
    ) -> Result<(Live, BTreeMap<u32, u64>), String> {
        let payload = unseal(MAGIC, settings_fingerprint(&settings, partitions), bytes)?;
        let state: LiveState =
            postcard::from_bytes(payload).map_err(|e| format!("the checkpoint is damaged: {e}"))?;
        let mut live = Live::new(settings, clock, partitions);
        if state.parts.len() != live.marks.parts.len()
            || state.stats.late.len() != live.stats.late.len()
            || state.keyed.len() != live.keyed.len()
            || state.frontiers.len() != live.frontiers.len()
            || state.keyed_late.len() != live.keyed_late.len()
            || state.crossed.is_some() != live.crossed.is_some()
        {
            return Err("taken with other partitions or time mode".to_owned());
        }
        for (keyed, state) in live.keyed.iter_mut().zip(state.keyed) {
            keyed.restore(state)?;
        }
        if let (Some(c), Some(s)) = (&mut live.crossed, state.crossed) {
            c.restore(s)?;
        }
        live.held = decode_held(state.held)?;
        live.marks.parts = state.parts;
        live.frontiers = state.frontiers;
        live.watermark = state.watermark;
        live.keyed_late = state.keyed_late;
        live.stats = state.stats;
        Ok((live, state.positions))
    }

    /// The watermark (µs; `i64::MIN` before the first settles).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// A partition's own watermark.
    pub fn partition_watermark(&self, partition: u32) -> i64 {
        self.marks.partition(partition)
    }

    /// Events held for the rules keyed across users.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// For each partition, the offset of its oldest held event: the log must be read again
    /// from there after a restart for nothing to be missed.
    pub fn oldest_held(&self) -> Vec<(u32, u64)> {
        self.held_offsets()
            .into_iter()
            .map(|(p, (oldest, _))| (p, oldest))
            .collect()
    }

    /// For each partition with events held, the offsets of its oldest and newest held event.
    pub fn held_offsets(&self) -> std::collections::BTreeMap<u32, (u64, u64)> {
        let mut out: std::collections::BTreeMap<u32, (u64, u64)> =
            std::collections::BTreeMap::new();
        for Reverse(h) in &self.held {
            let (_, p, o) = h.order;
            let e = out.entry(p).or_insert((o, o));
            *e = (e.0.min(o), e.1.max(o));
        }
        out
    }

    /// The engine's counters, over both kinds of rules (events, late and duplicates once).
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for k in &self.keyed {
            s.add(k.stats());
        }
        if let Some(c) = &self.crossed {
            let c = c.stats();
            s.late += c.late;
            s.windows_fired += c.windows_fired;
            s.keys_evicted += c.keys_evicted;
            s.dedupe_evicted += c.dedupe_evicted;
        }
        s
    }

    /// Late events per partition (at its detector or at the rules keyed across users) and
    /// forced releases.
    pub fn live_stats(&self) -> LiveStats {
        LiveStats {
            late: self
                .keyed_late
                .iter()
                .zip(&self.stats.late)
                .map(|(a, b)| a + b)
                .collect(),
            forced: self.stats.forced,
        }
    }

    /// Event ids remembered to drop duplicates.
    pub fn dedupe_ids(&self) -> usize {
        self.keyed.iter().map(Detector::dedupe_ids).sum::<usize>()
            + self.crossed.as_ref().map_or(0, Detector::dedupe_ids)
    }

    /// The incident changes so far.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let mut out: Vec<Change> = self
            .keyed
            .iter_mut()
            .flat_map(Detector::take_changes)
            .collect();
        if let Some(c) = &mut self.crossed {
            out.extend(c.take_changes());
        }
        out
    }

    /// The incidents open now.
    pub fn open_incidents(&self) -> Vec<Incident> {
        let mut out: Vec<Incident> = self
            .keyed
            .iter()
            .flat_map(Detector::open_incidents)
            .collect();
        if let Some(c) = &self.crossed {
            out.extend(c.open_incidents());
        }
        out
    }

    fn each(&mut self, mut f: impl FnMut(&mut Detector)) {
        self.keyed.iter_mut().for_each(&mut f);
        if let Some(c) = &mut self.crossed {
            f(c);
        }
    }

    /// See [`Detector::set_allowed_user`].
    pub fn set_allowed_user(&mut self, user: i64, allowed: bool) {
        self.each(|d| d.set_allowed_user(user, allowed));
    }

    /// See [`Detector::set_allowed_ip`].
    pub fn set_allowed_ip(&mut self, ip: IpAddr, allowed: bool) {
        self.each(|d| d.set_allowed_ip(ip, allowed));
    }

    /// See [`Detector::set_denied_user`] (a rule keyed by user: on arrival).
    pub fn set_denied_user(&mut self, user: i64, denied: bool) {
        for k in &mut self.keyed {
            k.set_denied_user(user, denied);
        }
    }

    /// See [`Detector::set_denied_ip`] (a rule keyed by address: in event-time order).
    pub fn set_denied_ip(&mut self, ip: IpAddr, denied: bool) {
        match &mut self.crossed {
            Some(c) => c.set_denied_ip(ip, denied),
            None => self.keyed[0].set_denied_ip(ip, denied),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::rules::DetectConfig;
    use shoplake_events::time::FixedClock;

    const SEC: i64 = 1_000_000;

    fn settings() -> Settings {
        DetectConfig::default().settings().unwrap()
    }

    #[test]
    fn a_partition_settles_by_records_or_by_wait_and_idle_ones_do_not_hold_it_back() {
        let mut s = settings();
        s.lateness = 0;
        s.reorder_records = 10;
        s.reorder_wait = 2 * SEC;
        s.partition_idle = 10 * SEC;
        let mut w = Watermarks::new(2, &s);
        w.observe(0, 0, 100);
        w.observe(1, 0, 50);
        w.end_round(0);
        assert_eq!(w.watermark(0), i64::MIN, "nothing settled yet");
        assert_eq!(
            w.watermark(2 * SEC),
            50,
            "both settled by the wait: the least"
        );
        // Partition 0 runs on; ten newer records settle its round at once.
        w.observe(0, 20, 300);
        w.end_round(3 * SEC);
        w.observe(0, 40, 400);
        w.end_round(3 * SEC);
        assert_eq!(w.partition(0), 100);
        assert_eq!(w.watermark(3 * SEC), 50, "partition 1 holds it back");
        assert_eq!(
            w.partition(0),
            300,
            "the first round settled by the records after it"
        );
        // Partition 1 idle: no longer counted.
        assert_eq!(w.watermark(12 * SEC), 400);
    }

    /// 2019-10-01, the dataset's first day.
    const T0: i64 = 1_569_888_000 * SEC;

    /// An event `t` µs into the day.
    fn event(t: i64, user: i64, ip: &str, product: i64) -> Event {
        Event {
            event_time: T0 + t,
            event_type: shoplake_events::EventType::View,
            product_id: product,
            category_id: 1,
            category_code: None,
            brand: None,
            price: shoplake_events::Price::from_cents(100),
            user_id: user,
            user_session: Some(format!("s-{user}")),
            client_ip: Some(ip.parse().unwrap()),
            user_agent: None,
            ingest_time: None,
        }
    }

    fn identities(changes: &[Change]) -> Vec<(String, String, i64, String)> {
        let mut out: Vec<_> = changes
            .iter()
            .filter(|c| matches!(c, Change::Opened(_)))
            .map(|c| {
                let i = c.incident();
                (i.rule.clone(), i.key.clone(), i.opened_at, i.id.clone())
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn producers_far_apart_give_the_windows_of_history() {
        // A quiet day, a user burst, an address flood from many users and a spike, sent by
        // four producers that run minutes of event time apart, into two partitions.
        let mut events = Vec::new();
        for i in 0..4000 {
            events.push(event(i * SEC / 2, 1000 + i % 300, "10.0.0.1", i % 50 + 1));
        }
        for i in 0..12 {
            events.push(event(600 * SEC + i * SEC / 4, 7, "10.0.0.2", 100 + i));
        }
        for i in 0..150 {
            events.push(event(900 * SEC + i * SEC / 20, 5000 + i, "10.9.9.9", 1));
        }
        for i in 0..2000 {
            events.push(event(
                1500 * SEC + i * SEC / 400,
                9000 + i % 700,
                "10.0.0.3",
                2,
            ));
        }
        events.sort_by_key(|e| e.event_time);
        let mut history = Detector::new(settings(), Arc::new(FixedClock(0)));
        for e in &events {
            history.process(e);
        }
        history.finish();
        let want = identities(&history.take_changes());
        assert!(want.iter().any(|i| i.0 == "ip_flood"), "{want:?}");
        assert!(want.iter().any(|i| i.0 == "user_burst"), "{want:?}");
        assert!(want.iter().any(|i| i.0 == "traffic_spike"), "{want:?}");

        // Producers by user; each sends its users' events in order, but producer k runs k
        // minutes of event time behind producer 0: arrival is by (time + lag).
        let mut arrivals: Vec<(i64, usize)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let producer = e.user_id % 4;
                (e.event_time + producer * 60 * SEC, i)
            })
            .collect();
        arrivals.sort();
        // One watermark over the arrival order (the detector before per-partition
        // watermarks): most of the lagging producers' events are late, and windows are missed.
        let mut naive = Detector::new(settings(), Arc::new(FixedClock(0)));
        for (_, i) in &arrivals {
            naive.process(&events[*i]);
        }
        naive.finish();
        assert!(naive.stats().late > 1000, "{:?}", naive.stats());
        assert_ne!(identities(&naive.take_changes()), want);
        let mut s = settings();
        s.reorder_records = 100_000;
        s.reorder_wait = 3600 * SEC;
        let mut live = Live::new(s, Arc::new(FixedClock(0)), 2);
        let mut offsets = [0u64; 2];
        let mut changes = Vec::new();
        for (n, (_, i)) in arrivals.iter().enumerate() {
            let e = events[*i].clone();
            let p = (e.user_id % 2) as u32;
            live.process(p, offsets[p as usize], e);
            offsets[p as usize] += 1;
            if n % 100 == 99 {
                live.end_round(n as i64, false);
                changes.extend(live.take_changes());
            }
        }
        live.end_round(i64::MAX / 2, true);
        changes.extend(live.take_changes());
        assert_eq!(live.live_stats().late, vec![0, 0]);
        assert_eq!(identities(&changes), want);
    }

    /// Incidents with their counts: (rule, key, opened at, peak, events, windows).
    fn counts(changes: &[Change]) -> Vec<(String, String, i64, String, u64, u64)> {
        let mut last: BTreeMap<String, (String, String, i64, String, u64, u64)> = BTreeMap::new();
        for c in changes {
            let i = c.incident();
            last.insert(
                i.id.clone(),
                (
                    i.rule.clone(),
                    i.key.clone(),
                    i.opened_at,
                    i.peak.to_string(),
                    i.events,
                    i.windows,
                ),
            );
        }
        let mut out: Vec<_> = last.into_values().collect();
        out.sort();
        out
    }

    #[test]
    fn a_restored_checkpoint_goes_on_as_if_never_stopped() {
        let mut events = Vec::new();
        for i in 0..3000 {
            events.push(event(i * SEC / 2, 1000 + i % 200, "10.0.0.1", i % 40 + 1));
        }
        // A burst and an address flood that span the checkpoint.
        for i in 0..30 {
            events.push(event(700 * SEC + i * SEC / 5, 7, "10.0.0.2", 100 + i));
        }
        for i in 0..150 {
            events.push(event(702 * SEC + i * SEC / 20, 5000 + i, "10.9.9.9", 1));
        }
        events.sort_by_key(|e| e.event_time);
        let cut = events
            .iter()
            .position(|e| e.event_time >= 704 * SEC)
            .unwrap();
        let run = |stop_at: Option<usize>| {
            let mut live = Live::new(settings(), Arc::new(FixedClock(0)), 2);
            let mut offsets = BTreeMap::new();
            let mut changes = Vec::new();
            for (n, e) in events.iter().enumerate() {
                if Some(n) == stop_at {
                    live.end_round(n as i64, false);
                    changes.extend(live.take_changes());
                    let bytes = live.checkpoint(&offsets);
                    // Damaged or foreign checkpoints are refused, never panicked on.
                    let mut bad = bytes.clone();
                    let last = bad.len() - 1;
                    bad[last] ^= 1;
                    assert!(Live::restore(settings(), Arc::new(FixedClock(0)), 2, &bad).is_err());
                    assert!(
                        Live::restore(settings(), Arc::new(FixedClock(0)), 2, &bytes[..30])
                            .is_err()
                    );
                    assert!(Live::restore(settings(), Arc::new(FixedClock(0)), 3, &bytes).is_err());
                    let mut other = settings();
                    other.cooldown += 1;
                    assert!(Live::restore(other, Arc::new(FixedClock(0)), 2, &bytes).is_err());
                    let (restored, positions) =
                        Live::restore(settings(), Arc::new(FixedClock(0)), 2, &bytes).unwrap();
                    assert_eq!(positions, offsets);
                    live = restored;
                }
                let p = (e.user_id % 2) as u32;
                let o = offsets.entry(p).or_insert(0u64);
                live.process(p, *o, e.clone());
                *o += 1;
                if n % 100 == 99 {
                    live.end_round(n as i64, false);
                    changes.extend(live.take_changes());
                }
            }
            live.end_round(i64::MAX / 2, true);
            changes.extend(live.take_changes());
            (counts(&changes), live.stats())
        };
        let (whole, whole_stats) = run(None);
        let (resumed, resumed_stats) = run(Some(cut));
        assert!(whole.iter().any(|i| i.0 == "user_burst"), "{whole:?}");
        assert!(whole.iter().any(|i| i.0 == "ip_flood"), "{whole:?}");
        assert_eq!(resumed, whole);
        assert_eq!(resumed_stats, whole_stats);
    }

    /// What a partition's rules keyed by user decide depends on its records alone: the same
    /// records give the same incidents and late counts whether the other partition is read
    /// ahead of it or far behind (so a partition's state can move between processes). Before,
    /// they ran on the stream's watermark: with the other partition behind, a burst arriving
    /// behind its own partition's watermark still counted; with it ahead, it was late.
    #[test]
    fn a_partitions_user_rules_decide_alike_however_fast_the_others_are_read() {
        let mut s = settings();
        s.reorder_records = 10;
        s.reorder_wait = SEC;
        s.partition_idle = 3600 * SEC;
        // Partition 0: even users over 200 s, then a burst of user 8 stamped 100 s in.
        let mut p0: Vec<Event> = (0..400)
            .map(|i| event(i * SEC / 2, 2 * (i % 50) + 10, "10.0.0.1", 1))
            .collect();
        p0.extend((0..12).map(|i| event(100 * SEC + i * SEC / 10, 8, "10.0.0.8", 2)));
        let p1: Vec<Event> = (0..400)
            .map(|i| event(i * SEC / 2, 2 * (i % 50) + 11, "10.0.0.2", 1))
            .collect();
        let (early, late_p1) = p1.split_at(100);
        let run = |order: &[(u32, &[Event])]| {
            let mut live = Live::new(s.clone(), Arc::new(FixedClock(0)), 2);
            let mut offsets = [0u64; 2];
            let mut changes = Vec::new();
            let mut now = 0;
            for (p, events) in order {
                for chunk in events.chunks(50) {
                    for e in chunk {
                        live.process(*p, offsets[*p as usize], e.clone());
                        offsets[*p as usize] += 1;
                    }
                    now += SEC;
                    live.end_round(now, false);
                    changes.extend(live.take_changes());
                }
            }
            live.end_round(i64::MAX / 2, true);
            changes.extend(live.take_changes());
            let mut users: Vec<_> = identities(&changes)
                .into_iter()
                .filter(|i| i.0 == "user_burst")
                .collect();
            users.sort();
            (users, live.live_stats().late[0])
        };
        let (start, rest) = p0.split_at(50);
        let other_ahead = run(&[(0, start), (1, &p1), (0, rest)]);
        let other_behind = run(&[(0, start), (1, early), (0, rest), (1, late_p1)]);
        assert_eq!(
            other_ahead.1, 12,
            "the burst is behind partition 0's watermark"
        );
        assert_eq!(other_behind, other_ahead);
    }

    /// Blocks handed over twice, or again after newer ones (a partition's detector restored
    /// from an older checkpoint, or two processes briefly owning a partition), change nothing:
    /// events are taken by offset, once, and a watermark never goes back.
    #[test]
    fn blocks_handed_over_again_count_once() {
        let mut events = Vec::new();
        for i in 0..3000 {
            events.push(event(i * SEC / 4, 1000 + i % 250, "10.0.0.1", i % 40 + 1));
        }
        for i in 0..150 {
            events.push(event(300 * SEC + i * SEC / 20, 5000 + i, "10.9.9.9", 1));
        }
        for i in 0..1500 {
            events.push(event(
                500 * SEC + i * SEC / 300,
                9000 + i % 600,
                "10.0.0.3",
                2,
            ));
        }
        events.sort_by_key(|e| e.event_time);
        let run = |again: bool| {
            let mut s = settings();
            s.reorder_records = 50;
            let mut live = Live::new(s, Arc::new(FixedClock(0)), 3);
            let mut offsets = [0u64; 3];
            let mut changes = Vec::new();
            let mut previous: Vec<Option<Block>> = vec![None; 3];
            let mut round = |live: &mut Live, now: i64, drain: bool| {
                for block in live.end_partitions(now, &[0, 1, 2]) {
                    live.accept(block.clone());
                    if again {
                        live.accept(block.clone());
                        let p = block.partition as usize;
                        if let Some(old) = previous[p].replace(block) {
                            live.accept(old);
                        }
                    }
                }
                let stream = live.combine_round(drain);
                live.follow(stream, &[0, 1, 2]);
            };
            for (n, e) in events.iter().enumerate() {
                let p = (e.user_id % 3) as u32;
                live.process(p, offsets[p as usize], e.clone());
                offsets[p as usize] += 1;
                if n % 97 == 96 {
                    round(&mut live, n as i64 * 1000, false);
                    changes.extend(live.take_changes());
                }
            }
            round(&mut live, i64::MAX / 2, true);
            changes.extend(live.take_changes());
            (counts(&changes), live.stats(), live.live_stats())
        };
        let once = run(false);
        assert!(once.0.iter().any(|i| i.0 == "ip_flood"), "{:?}", once.0);
        assert!(
            once.0.iter().any(|i| i.0 == "traffic_spike"),
            "{:?}",
            once.0
        );
        assert_eq!(run(true), once);
    }

    /// Two processes share four partitions, the first also running the rules keyed across
    /// users on both processes' blocks (carried as bytes, as over a log); midway partition 1
    /// moves from the first to the second, which restores it from a snapshot three rounds old
    /// and reads it again from there; later, in the middle of a traffic spike, the rules keyed
    /// across users move too, from a snapshot two rounds old, reading the blocks again from
    /// there. The incidents are those of one process running everything.
    #[test]
    fn a_partition_moving_between_processes_gives_the_incidents_of_one() {
        let mut events = Vec::new();
        for i in 0..4000 {
            events.push(event(i * SEC / 4, 1000 + i % 250, "10.0.0.1", i % 40 + 1));
        }
        for i in 0..30 {
            events.push(event(400 * SEC + i * SEC / 5, 1001, "10.0.0.2", 100 + i));
        }
        for i in 0..150 {
            events.push(event(402 * SEC + i * SEC / 20, 5000 + i, "10.9.9.9", 1));
        }
        for i in 0..1500 {
            events.push(event(
                700 * SEC + i * SEC / 300,
                9000 + i % 600,
                "10.0.0.3",
                2,
            ));
        }
        events.sort_by_key(|e| e.event_time);
        let mut s = settings();
        s.reorder_records = 50;
        let clock = || -> Arc<dyn Clock> { Arc::new(FixedClock(0)) };
        let placed: Vec<(u32, u64, &Event)> = {
            let mut offsets = [0u64; 4];
            events
                .iter()
                .map(|e| {
                    let p = (e.user_id % 4) as u32;
                    offsets[p as usize] += 1;
                    (p, offsets[p as usize] - 1, e)
                })
                .collect()
        };
        let every = 97;

        let mut one = Live::new(s.clone(), clock(), 4);
        let mut want = Vec::new();
        for (n, (p, o, e)) in placed.iter().enumerate() {
            one.process(*p, *o, (*e).clone());
            if n % every == every - 1 {
                one.end_round(n as i64 * 1000, false);
                want.extend(one.take_changes());
            }
        }
        one.end_round(i64::MAX / 2, true);
        want.extend(one.take_changes());

        let (mut a, mut b) = (
            Live::new(s.clone(), clock(), 4),
            Live::new(s.clone(), clock(), 4),
        );
        let (mut owned_a, mut owned_b) = (vec![0u32, 1], vec![2u32, 3]);
        let mut got = Vec::new();
        let mut next = [0u64; 4];
        let mut snapshots: Vec<Vec<u8>> = Vec::new();
        let rounds = placed.len() / every;
        let moved_at = rounds / 2;
        let cross_moved_at = rounds * 3 / 4;
        // The blocks as the log between the processes keeps them, and how far the process
        // running the rules keyed across users has read it.
        let mut exchange: Vec<Vec<u8>> = Vec::new();
        let mut read_to = 0usize;
        let mut cross_in_a = true;
        let mut cross_snapshots: Vec<Vec<u8>> = Vec::new();
        #[allow(clippy::too_many_arguments)]
        fn round(
            a: &mut Live,
            b: &mut Live,
            cross_in_a: bool,
            (oa, ob): (&[u32], &[u32]),
            exchange: &mut Vec<Vec<u8>>,
            read_to: &mut usize,
            now: i64,
            drain: bool,
        ) {
            let mut blocks = a.end_partitions(now, oa);
            blocks.extend(b.end_partitions(now, ob));
            exchange.extend(blocks.iter().map(Block::encode));
            let x = if cross_in_a { &mut *a } else { &mut *b };
            for bytes in &exchange[*read_to..] {
                x.accept(Block::decode(bytes).unwrap());
            }
            *read_to = exchange.len();
            let stream = x.combine_round(drain);
            a.follow(stream, oa);
            b.follow(stream, ob);
        }
        let mut r = 0;
        for (n, (p, o, e)) in placed.iter().enumerate() {
            let live = if owned_a.contains(p) { &mut a } else { &mut b };
            if *o >= next[*p as usize] {
                live.process(*p, *o, (*e).clone());
                next[*p as usize] = o + 1;
            }
            if n % every == every - 1 {
                let owned = (owned_a.as_slice(), owned_b.as_slice());
                let now = n as i64 * 1000;
                round(
                    &mut a,
                    &mut b,
                    cross_in_a,
                    owned,
                    &mut exchange,
                    &mut read_to,
                    now,
                    false,
                );
                got.extend(a.take_changes());
                got.extend(b.take_changes());
                snapshots.push(a.partition_snapshot(1, next[1]).unwrap());
                let read = BTreeMap::from([(0, read_to as u64)]);
                let x = if cross_in_a { &a } else { &b };
                cross_snapshots.push(x.cross_snapshot(&read).unwrap());
                r += 1;
                if r == cross_moved_at {
                    // The rules keyed across users move to the second process, from a snapshot
                    // two rounds old: it reads the blocks again from there.
                    let old = &cross_snapshots[cross_snapshots.len() - 3];
                    let from = b.restore_cross(old).unwrap();
                    assert!(from[&0] < read_to as u64);
                    read_to = usize::try_from(from[&0]).unwrap();
                    a.reset_cross();
                    cross_in_a = false;
                }
                if r == moved_at {
                    let old = &snapshots[snapshots.len() - 4];
                    let (partition, from) = b.restore_partition(old).unwrap();
                    assert_eq!(partition, 1);
                    assert!(from < next[1]);
                    a.reset_partition(1);
                    owned_a.retain(|p| *p != 1);
                    owned_b.push(1);
                    // The new owner reads the partition again from the snapshot's position.
                    for (p, o, e) in &placed[..=n] {
                        if *p == 1 && *o >= from {
                            b.process(1, *o, (*e).clone());
                        }
                    }
                }
            }
        }
        let owned = (owned_a.as_slice(), owned_b.as_slice());
        let end = i64::MAX / 2;
        round(
            &mut a,
            &mut b,
            cross_in_a,
            owned,
            &mut exchange,
            &mut read_to,
            end,
            true,
        );
        assert!(!cross_in_a);
        got.extend(a.take_changes());
        got.extend(b.take_changes());
        let want = counts(&want);
        assert!(want.iter().any(|i| i.0 == "user_burst"), "{want:?}");
        assert!(want.iter().any(|i| i.0 == "ip_flood"), "{want:?}");
        assert!(want.iter().any(|i| i.0 == "traffic_spike"), "{want:?}");
        assert_eq!(counts(&got), want);
        // A snapshot of another partition count or damaged is refused.
        let x = b.cross_snapshot(&BTreeMap::new()).unwrap();
        assert!(Live::new(s.clone(), clock(), 3).restore_cross(&x).is_err());
        assert!(b.restore_partition(&x).is_err(), "not a partition's");
        let snap = a.partition_snapshot(0, 0).unwrap();
        assert!(
            Live::new(s.clone(), clock(), 3)
                .restore_partition(&snap)
                .is_err()
        );
        let mut bad = snap.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(b.restore_partition(&bad).is_err());
    }

    #[test]
    fn a_block_survives_bytes_and_damaged_bytes_are_refused_not_panicked_on() {
        let block = Block {
            partition: 3,
            watermark: T0 + 7,
            idle: false,
            events: vec![
                (41, event(SEC, 7, "10.0.0.1", 5)),
                (42, event(2 * SEC, 8, "::1", 6)),
            ],
        };
        let bytes = block.encode();
        let back = Block::decode(&bytes).unwrap();
        assert_eq!(
            (back.partition, back.watermark, back.idle),
            (3, T0 + 7, false)
        );
        assert_eq!(back.events.len(), 2);
        assert_eq!(back.events[1].0, 42);
        assert_eq!(back.events[1].1, block.events[1].1);
        for cut in 0..bytes.len() {
            assert!(Block::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(Block::decode(&bad).is_err(), "a flipped bit at {at}");
        }
    }

    #[test]
    fn a_full_buffer_moves_the_watermark_on_and_says_so() {
        let mut s = settings();
        s.max_held = 10;
        s.reorder_wait = i64::MAX;
        s.reorder_records = u64::MAX;
        let mut live = Live::new(s, Arc::new(FixedClock(0)), 1);
        for i in 0..30 {
            live.process(0, i as u64, event(i * SEC, 1, "10.0.0.1", i + 1));
        }
        live.end_round(0, false);
        assert_eq!(live.held(), 10);
        assert_eq!(live.live_stats().forced, 20);
        assert_eq!(live.watermark(), T0 + 19 * SEC);
        assert_eq!(live.oldest_held(), vec![(0, 20)]);
        // Not behind its partition's watermark (the user's rules count it), but behind the
        // forced one when it reaches the rules keyed across users.
        live.process(0, 30, event(5 * SEC, 2, "10.0.0.1", 1));
        assert_eq!(live.live_stats().late, vec![0]);
        live.end_round(0, false);
        assert_eq!(
            live.live_stats().late,
            vec![1],
            "behind the forced watermark"
        );
        assert_eq!(live.stats().late, 1);
    }
}
