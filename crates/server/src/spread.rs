//! Detection spread over the detector's consumer group (a log shared by several processes:
//! Kafka). Each member runs the rules keyed by user or session on the partitions the group
//! gives it, and hands each round's new events, watermark and idleness to the rules keyed
//! across users (`ip_flood`, `traffic_spike`) as blocks in the companion log `blocks`. The
//! member owning partition 0 runs those rules: it reads every partition's blocks, releases
//! their events in (time, partition, offset) order once the stream's watermark passes them,
//! and publishes that watermark in the companion log `marks`, which the others follow.
//!
//! Every member checkpoints its partitions' state beside the lake's tables
//! (`_shoplake/detector-partition-<p>`), and the member owning partition 0 the state of the
//! rules keyed across users with its position in `blocks` (`_shoplake/detector-cross`). A
//! member that gains a partition restores its checkpoint and reads on from the position it
//! reflects; what it reads again was read before, so its changes are checked against the
//! alert store before they are notified, and its blocks add nothing twice (events are taken
//! by offset, once). So the incidents are those of one process reading the whole log (up to
//! what depends on the wall clock there too: a partition's idleness, `reorder_wait`).
//!
//! A stop hands the state over rather than ending the input: it checkpoints and leaves the
//! windows open (another member, or this one started again, goes on from there).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoplake_detect::{Block, Live};
use shoplake_events::Validator;
use shoplake_lake::Lake;
use shoplake_log::{EventLog, Limit, Ownership, Record};
use tokio::sync::watch;

use crate::detection::{
    CONSUMER, Counted, DetectionOptions, IDLE, ListsPoll, Outputs, Recorded, Round, Unstored,
    export_lag, read_round, record,
};
use crate::error::Result;
use crate::metrics::Metrics;

/// The companion log of the partitions' blocks.
const BLOCKS: &str = "blocks";
/// The companion log of the stream's watermark.
const MARKS: &str = "marks";
/// The most events in one block record (a round's block is cut into several, the last of
/// which carries the watermark). An event without its user agent is at most about 600 bytes
/// (the longest category code, brand and session the validator lets through), so a record
/// stays under 320 KB, well below a broker's default message limit (1 MB).
const BLOCK_EVENTS: usize = 512;
/// How many block records the rules keyed across users take in per round at most.
const BLOCK_READ: Limit = Limit::new(4096, 64 << 20);

/// The name of a partition's checkpoint among the lake's own files.
fn partition_file(p: u32) -> String {
    format!("detector-partition-{p}")
}

/// The name of the rules keyed across users' checkpoint among the lake's own files.
const CROSS_FILE: &str = "detector-cross";

/// The rules keyed across users, in the member owning partition 0.
struct Cross {
    /// The next block record to read.
    position: u64,
    /// Where `blocks` ended when the state was restored: blocks up to there were read before.
    again: Option<u64>,
    /// The stream's watermark as last published.
    published: i64,
    /// The block records read whose events may still be held, oldest first: (offset in
    /// `blocks`, partition, offset of its newest event).
    unreleased: VecDeque<(u64, u32, u64)>,
}

impl Cross {
    /// Reading from `position` in `blocks`, nothing held.
    fn at(position: u64, again: Option<u64>) -> Cross {
        Cross {
            position,
            again,
            published: i64::MIN,
            unreleased: VecDeque::new(),
        }
    }

    /// Notes the block record at `offset`, read, before its events are taken in.
    fn read(&mut self, offset: u64, block: &Block) {
        if let Some(newest) = block.events.iter().map(|e| e.0).max() {
            self.unreleased.push_back((offset, block.partition, newest));
        }
    }

    /// Where a restart without a checkpoint reads `blocks` again from: the first block record
    /// read with an event still held (`held`: per partition, the oldest and newest offset of
    /// its held events), else the position. Read from there, the held events are taken in
    /// again; committing the position instead would lose them with the process.
    fn resume(&mut self, held: &BTreeMap<u32, (u64, u64)>) -> u64 {
        while let Some(&(_, p, newest)) = self.unreleased.front() {
            if held.get(&p).is_some_and(|(oldest, _)| *oldest <= newest) {
                break;
            }
            self.unreleased.pop_front();
        }
        self.unreleased.front().map_or(self.position, |u| u.0)
    }
}

/// One member's share of detection.
struct Member {
    detector: Live,
    log: Arc<dyn EventLog>,
    blocks: Arc<dyn EventLog>,
    marks: Arc<dyn EventLog>,
    /// The partitions worked on, with their positions.
    positions: BTreeMap<u32, u64>,
    /// Per partition restored from a checkpoint, where the log ended then.
    again: BTreeMap<u32, u64>,
    /// The last watermark and idleness handed over per partition.
    sent: HashMap<u32, (i64, bool)>,
    cross: Option<Cross>,
    /// The next record of `marks` to read (members not owning partition 0).
    marks_at: Option<u64>,
    /// The stream's watermark as last known.
    stream: i64,
    /// What a round reads of a partition at most.
    limit: Limit,
    /// At a stop, where the partitions owned and `blocks` ended then.
    stop_ends: Option<(BTreeMap<u32, u64>, u64)>,
    /// How often checkpoints are written (`None`: they are off), and when the last was.
    every: Option<Duration>,
    checkpointed: Instant,
    /// Blocks that could not be handed over (given up at a stop): the checkpoints and the
    /// committed positions would run ahead of them, so none is written.
    unsent: bool,
}

/// Detects on the partitions this member of the detector group owns (and across users while
/// it owns partition 0) until `stop`; then checkpoints and returns.
pub(crate) async fn run(
    lake: &Lake,
    log: Arc<dyn EventLog>,
    ownership: &mut Ownership,
    options: &DetectionOptions,
    metrics: &Arc<Metrics>,
    out: &Outputs,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let partitions = log.partitions();
    let mut member = Member::new(log, options, out.clock.clone()).await?;
    let validator = Validator::default();
    let mut lists = ListsPoll::default();
    let mut counted = Counted::default();
    let mut recorded = (Recorded::default(), Recorded::default());
    let mut unstored = Unstored::default();
    let mut trouble = Trouble::default();
    loop {
        let stopping = *stop.borrow();
        if let Err(e) = member
            .prepare(lake, &ownership.partitions(), stopping)
            .await
        {
            trouble.wait(e, stopping).await?;
            continue;
        }
        lists.refresh(&mut member.detector, options, out).await;
        let recheck = member.rechecking();
        let owned: Vec<u32> = member.positions.keys().copied().collect();
        let round = match member.read(&owned, &validator).await {
            Ok(round) => round,
            Err(e) => {
                // What it read of the other partitions is handed over with the next round.
                trouble.wait(e, stopping).await?;
                continue;
            }
        };
        let now = out.clock.now_micros();
        let blocks = member.detector.end_partitions(now, &owned);
        member.hand_over(blocks, &stop).await;
        let crossed = match member.cross_round().await {
            Ok(n) => {
                trouble.ok();
                n
            }
            Err(e) => {
                trouble.wait(e, stopping).await?;
                0
            }
        };
        member.detector.follow(member.stream, &owned);
        counted.export(&member.detector, metrics, partitions);
        export_lag(metrics, now, round.newest_ingest);
        let changes = member.detector.take_changes();
        record(options, metrics, out, &mut unstored, changes, recheck).await;
        // Neither the committed positions nor a checkpoint may run ahead of changes the
        // store has not taken, nor of blocks not handed over: a restart would miss them.
        let behind = !unstored.is_empty() || member.unsent;
        if !behind {
            member.commit(&mut recorded).await;
            member.checkpoint_when_due(lake, metrics).await;
        }
        let reached = member.reached();
        if (round.read > 0 || crossed > 0) && !reached {
            continue;
        }
        if stopping {
            if !behind {
                member.checkpoint(lake, metrics).await;
            }
            member.stopped(&unstored);
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(IDLE) => {}
            _ = stop.changed() => {}
            () = ownership.changed() => {}
        }
    }
}

/// The steps in a row that failed (the broker slow, down or answering oddly).
#[derive(Default)]
struct Trouble {
    row: u32,
}

impl Trouble {
    /// Logs a failed step and waits before the round is tried again (100 ms, doubling up to
    /// 5 s): a broker that stumbles does not stop detection. At a stop, the sixth failure in a
    /// row ends the detector with the error.
    async fn wait(&mut self, e: crate::error::Error, stopping: bool) -> Result<()> {
        self.row += 1;
        if stopping && self.row > 5 {
            return Err(e);
        }
        tracing::warn!(error = %e, failures = self.row, "a detector round failed; trying again");
        let delay = Duration::from_millis(100u64 << self.row.min(6)).min(Duration::from_secs(5));
        tokio::time::sleep(delay).await;
        Ok(())
    }

    fn ok(&mut self) {
        self.row = 0;
    }
}

impl Member {
    /// A member owning no partition yet.
    async fn new(
        log: Arc<dyn EventLog>,
        options: &DetectionOptions,
        clock: Arc<dyn shoplake_events::time::Clock>,
    ) -> Result<Member> {
        let partitions = log.partitions();
        Ok(Member {
            detector: Live::new(options.settings.clone(), clock, partitions),
            blocks: log.companion(BLOCKS, 1).await?,
            marks: log.companion(MARKS, 1).await?,
            log,
            positions: BTreeMap::new(),
            again: BTreeMap::new(),
            sent: HashMap::new(),
            cross: None,
            marks_at: None,
            stream: i64::MIN,
            stop_ends: None,
            limit: options.round_limit(partitions),
            every: options.checkpoint_every(),
            checkpointed: Instant::now(),
            unsent: false,
        })
    }

    /// Records the positions in the log (and in `blocks`, with partition 0) where a restart
    /// without a checkpoint goes on.
    async fn commit(&mut self, (log, blocks): &mut (Recorded, Recorded)) {
        log.commit(self.log.as_ref(), self.positions.clone()).await;
        if let Some(c) = &mut self.cross {
            let at = c.resume(&self.detector.held_offsets());
            blocks
                .commit(self.blocks.as_ref(), BTreeMap::from([(0, at)]))
                .await;
        }
    }

    /// Says what the member did, at its stop (and what the store never took).
    fn stopped(&self, unstored: &Unstored) {
        unstored.left_at_stop();
        let st = self.detector.stats();
        tracing::info!(
            events = st.events,
            late = st.late,
            duplicates = st.duplicates,
            windows_fired = st.windows_fired,
            partitions = ?self.positions.keys().collect::<Vec<_>>(),
            "detector stopped; its state is checkpointed for the group"
        );
    }

    /// Before a round: at the first round of a stop, where the partitions owned and `blocks`
    /// end (the member reads up to there and no further: the other members' collectors may
    /// go on appending); then the group's assignment taken.
    async fn prepare(&mut self, lake: &Lake, owned: &BTreeSet<u32>, stopping: bool) -> Result<()> {
        if stopping && self.stop_ends.is_none() {
            let mut ends = BTreeMap::new();
            for p in self.positions.keys() {
                ends.insert(*p, self.log.end(*p).await?);
            }
            self.stop_ends = Some((ends, self.blocks.end(0).await?));
        }
        self.follow_ownership(lake, owned).await
    }

    /// Whether reading reached where the logs ended at the stop (partitions gained since
    /// count as reached); never before a stop.
    fn reached(&self) -> bool {
        let Some((ends, blocks)) = &self.stop_ends else {
            return false;
        };
        self.positions
            .iter()
            .all(|(p, at)| ends.get(p).is_none_or(|end| at >= end))
            && self.cross.as_ref().is_none_or(|c| c.position >= *blocks)
    }

    /// A round over the partitions `owned`, each event to the detector.
    async fn read(&mut self, owned: &[u32], validator: &Validator) -> Result<Round> {
        let detector = &mut self.detector;
        read_round(
            self.log.as_ref(),
            owned,
            &mut self.positions,
            self.limit,
            validator,
            |p, offset, e| detector.process(p, offset, e),
        )
        .await
    }

    /// Whether this round may read records read before (after a restore): its changes are
    /// checked against the store before they are notified.
    fn rechecking(&mut self) -> bool {
        let positions = &self.positions;
        self.again
            .retain(|p, end| positions.get(p).is_some_and(|at| at < end));
        if let Some(c) = &mut self.cross
            && c.again.is_some_and(|end| c.position >= end)
        {
            c.again = None;
        }
        !self.again.is_empty() || self.cross.as_ref().is_some_and(|c| c.again.is_some())
    }

    /// Takes the group's assignment: partitions lost start afresh here (their state went
    /// with them), partitions gained are restored from their checkpoints; partition 0 brings
    /// the rules keyed across users.
    async fn follow_ownership(&mut self, lake: &Lake, owned: &BTreeSet<u32>) -> Result<()> {
        let had: BTreeSet<u32> = self.positions.keys().copied().collect();
        if &had == owned {
            return Ok(());
        }
        for p in had.difference(owned) {
            self.detector.reset_partition(*p);
            self.positions.remove(p);
            self.again.remove(p);
            self.sent.remove(p);
        }
        if had.contains(&0) && !owned.contains(&0) {
            self.detector.reset_cross();
            self.cross = None;
            tracing::info!(
                "detector: partition 0 moved away, and with it the rules keyed across users"
            );
        }
        let committed = self.log.committed(CONSUMER).await?;
        for p in owned.difference(&had) {
            let position = self.gain(lake, *p, &committed).await?;
            self.positions.insert(*p, position);
        }
        if owned.contains(&0) && self.cross.is_none() {
            self.cross = Some(self.restore_cross(lake).await?);
            self.marks_at = None;
        }
        if !owned.contains(&0) && self.marks_at.is_none() {
            // Following the stream's watermark from the last one published.
            let end = self.marks.end(0).await?;
            self.marks_at = Some(end.saturating_sub(1));
        }
        Ok(())
    }

    /// The state of partition `p`, gained: from its checkpoint (where it was read to), else
    /// afresh at its committed position (`committed`) or the log's start. Returns where to
    /// read it from.
    async fn gain(&mut self, lake: &Lake, p: u32, committed: &BTreeMap<u32, u64>) -> Result<u64> {
        let restored = match self.restore(lake, &partition_file(p)).await {
            Some(bytes) => match self.detector.restore_partition(&bytes) {
                Ok((q, position)) if q == p => Some(position),
                Ok((q, at)) => {
                    tracing::warn!(
                        partition = p,
                        found = q,
                        "a partition's checkpoint names another partition"
                    );
                    // That partition now has the state of its checkpoint: owned here, it is
                    // read again from there; else its state goes.
                    if let Some(position) = self.positions.get_mut(&q) {
                        *position = at;
                        self.again.insert(q, self.log.end(q).await?);
                    } else {
                        self.detector.reset_partition(q);
                    }
                    None
                }
                Err(reason) => {
                    tracing::warn!(partition = p, %reason, "a partition's checkpoint cannot be used");
                    None
                }
            },
            None => None,
        };
        let position = match restored {
            Some(position) => {
                self.again.insert(p, self.log.end(p).await?);
                tracing::info!(
                    partition = p,
                    position,
                    "detector restored a partition from its checkpoint; reading on from the position it reflects"
                );
                position
            }
            None => {
                self.detector.reset_partition(p);
                let at = match committed.get(&p) {
                    Some(at) => *at,
                    None => self.log.start(p).await?,
                };
                tracing::info!(
                    partition = p,
                    position = at,
                    "no usable checkpoint of the partition: starting with empty windows at its committed position"
                );
                // Records after it may have been read (and notified) by the last owner.
                let end = self.log.end(p).await?;
                if at < end {
                    self.again.insert(p, end);
                }
                at
            }
        };
        Ok(position)
    }

    /// The rules keyed across users from their checkpoint, or afresh from the committed
    /// position in `blocks` (from its start when there is none).
    async fn restore_cross(&mut self, lake: &Lake) -> Result<Cross> {
        if let Some(bytes) = self.restore(lake, CROSS_FILE).await {
            match self.detector.restore_cross(&bytes) {
                Ok(at) => {
                    let position = at.get(&0).copied().unwrap_or(0);
                    tracing::info!(
                        position,
                        held = self.detector.held(),
                        "detector restored the rules keyed across users from their checkpoint; \
                         reading the partitions' blocks on from the position it reflects"
                    );
                    let mut cross = Cross::at(position, Some(self.blocks.end(0).await?));
                    // The events it holds came from block records before `position`: until
                    // they are released, a restart without a checkpoint reads again from no
                    // further than the position committed before.
                    let committed = self.blocks.committed(CONSUMER).await?.get(&0).copied();
                    let floor = committed.unwrap_or(0).min(position);
                    for (p, (_, newest)) in self.detector.held_offsets() {
                        cross.unreleased.push_back((floor, p, newest));
                    }
                    return Ok(cross);
                }
                Err(reason) => tracing::warn!(
                    %reason,
                    "the checkpoint of the rules keyed across users cannot be used"
                ),
            }
        }
        self.detector.reset_cross();
        let position = match self.blocks.committed(CONSUMER).await?.get(&0) {
            Some(at) => *at,
            None => self.blocks.start(0).await?,
        };
        tracing::info!(
            position,
            "the rules keyed across users start afresh at the committed position of the partitions' blocks"
        );
        let end = self.blocks.end(0).await?;
        Ok(Cross::at(position, (position < end).then_some(end)))
    }

    /// A checkpoint's bytes from the lake (`None` when there is none, or checkpoints are off).
    async fn restore(&self, lake: &Lake, name: &str) -> Option<Vec<u8>> {
        self.every?;
        match lake.get_own_file(name).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(checkpoint = name, error = %e, "reading a detector checkpoint");
                None
            }
        }
    }

    /// Appends the round's blocks to `blocks` (those with something new: events, or a
    /// watermark or idleness that moved), cut into records of [`BLOCK_EVENTS`] events.
    /// Retries until they are stored: a partition's checkpoint must never run ahead of what
    /// the rules keyed across users can read.
    async fn hand_over(&mut self, blocks: Vec<Block>, stop: &watch::Receiver<bool>) {
        let mut records = Vec::new();
        for block in blocks {
            let state = (block.watermark, block.idle);
            if block.events.is_empty() && self.sent.get(&block.partition) == Some(&state) {
                continue;
            }
            self.sent.insert(block.partition, state);
            records.extend(cut(block).iter().map(|b| Record {
                key: b.partition.to_string().into_bytes(),
                value: b.encode(),
            }));
        }
        if records.is_empty() {
            return;
        }
        let mut delay = Duration::from_millis(100);
        loop {
            match self.blocks.append(records.clone()).await {
                Ok(_) => return,
                Err(e) if *stop.borrow() => {
                    tracing::error!(
                        error = %e,
                        records = records.len(),
                        "gave up handing the partitions' blocks over at the stop: their \
                         checkpoints stay where they were, and the next owner reads again from there"
                    );
                    self.unsent = true;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, records = records.len(), "handing the partitions' blocks over");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// With partition 0: takes in the blocks appended since the last round, releases what
    /// the stream's watermark passed to the rules keyed across users and publishes it.
    /// Without: reads the stream's watermark as published. Returns the block records read.
    async fn cross_round(&mut self) -> Result<usize> {
        let Some(cross) = &mut self.cross else {
            if let Some(at) = &mut self.marks_at {
                loop {
                    let got = self.marks.read(0, *at, Limit::records(4096)).await?;
                    let Some(last) = got.last() else { break };
                    *at = last.offset + 1;
                    if let Some(mark) = last
                        .value
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(i64::from_le_bytes)
                    {
                        self.stream = self.stream.max(mark);
                    }
                }
            }
            return Ok(0);
        };
        let got = self.blocks.read(0, cross.position, BLOCK_READ).await?;
        let read = got.len();
        // The stream's watermark moves block by block, so that what is released when
        // depends on the blocks alone, not on how many one read returned (an owner restored
        // from a checkpoint reads them in other batches).
        for r in got {
            cross.position = r.offset + 1;
            match Block::decode(&r.value) {
                Ok(block) => {
                    cross.read(r.offset, &block);
                    self.detector.accept(block);
                    self.detector.combine_round(false);
                }
                Err(reason) => {
                    tracing::warn!(offset = r.offset, %reason, "a block of the partitions cannot be read")
                }
            }
        }
        let mark = self.detector.combine_round(false);
        self.stream = mark;
        if mark > cross.published {
            let record = Record {
                key: b"mark".to_vec(),
                value: mark.to_le_bytes().to_vec(),
            };
            match self.marks.append(vec![record]).await {
                Ok(_) => cross.published = mark,
                Err(e) => tracing::warn!(error = %e, "publishing the stream's watermark"),
            }
        }
        Ok(read)
    }

    /// Writes the checkpoints when the interval has passed since the last.
    async fn checkpoint_when_due(&mut self, lake: &Lake, metrics: &Metrics) {
        if self.every.is_some_and(|e| self.checkpointed.elapsed() >= e) {
            self.checkpoint(lake, metrics).await;
        }
    }

    /// Writes the checkpoints of the partitions owned (and of the rules keyed across users
    /// with partition 0) beside the lake's tables.
    async fn checkpoint(&mut self, lake: &Lake, metrics: &Metrics) {
        self.checkpointed = Instant::now();
        if self.every.is_none() {
            return;
        }
        let mut files: Vec<(String, Vec<u8>)> = self
            .positions
            .iter()
            .filter_map(|(p, at)| {
                Some((
                    partition_file(*p),
                    self.detector.partition_snapshot(*p, *at)?,
                ))
            })
            .collect();
        if let Some(c) = &self.cross
            && let Some(bytes) = self
                .detector
                .cross_snapshot(&BTreeMap::from([(0, c.position)]))
        {
            files.push((CROSS_FILE.to_owned(), bytes));
        }
        let mut failed = false;
        for (name, bytes) in files {
            if let Err(e) = lake.put_own_file(&name, bytes).await {
                failed = true;
                tracing::warn!(checkpoint = name, error = %format!("{e:#}"), "writing a detector checkpoint");
            }
        }
        if failed {
            metrics.detector_checkpoint_failures.inc();
        } else {
            metrics.detector_checkpoints.inc();
        }
    }
}

/// A block cut into blocks of at most [`BLOCK_EVENTS`] events: all but the last say nothing of
/// the watermark (the least there is) and that the partition is busy, so that the rules keyed
/// across users never move past events still to come.
fn cut(block: Block) -> Vec<Block> {
    if block.events.len() <= BLOCK_EVENTS {
        return vec![block];
    }
    let Block {
        partition,
        watermark,
        idle,
        events,
    } = block;
    let mut out: Vec<Block> = Vec::new();
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        out.push(Block {
            partition,
            watermark: i64::MIN,
            idle: false,
            events: events.by_ref().take(BLOCK_EVENTS).collect(),
        });
    }
    if let Some(last) = out.last_mut() {
        last.watermark = watermark;
        last.idle = idle;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(t: i64) -> shoplake_events::Event {
        shoplake_events::Event {
            event_time: t,
            event_type: shoplake_events::EventType::View,
            product_id: 1,
            category_id: 1,
            category_code: None,
            brand: None,
            price: shoplake_events::Price::from_cents(100),
            user_id: 1,
            user_session: None,
            client_ip: Some("10.0.0.1".parse().unwrap()),
            user_agent: None,
            ingest_time: None,
        }
    }

    #[test]
    fn blocks_are_committed_from_the_first_record_with_an_event_still_held() {
        let settings = shoplake_detect::DetectConfig::default().settings().unwrap();
        let clock = Arc::new(shoplake_events::time::FixedClock(0));
        let mut live = Live::new(settings, clock, 2);
        let mut cross = Cross::at(0, None);
        let sec = 1_000_000;
        let take = |live: &mut Live, cross: &mut Cross, offset: u64, block: Block| {
            cross.position = offset + 1;
            cross.read(offset, &block);
            live.accept(block);
            live.combine_round(false);
            cross.resume(&live.held_offsets())
        };
        let mark = |partition: u32, watermark: i64| Block {
            partition,
            watermark,
            idle: false,
            events: Vec::new(),
        };
        // Partition 1 is read, with nothing to hand on yet.
        assert_eq!(take(&mut live, &mut cross, 0, mark(1, 0)), 1);
        // Partition 0's two events wait for partition 1's watermark: a restart must read
        // the record holding them again (committing the read position lost them).
        let block = Block {
            events: vec![(0, event(sec)), (1, event(2 * sec))],
            ..mark(0, 2 * sec)
        };
        assert_eq!(take(&mut live, &mut cross, 1, block), 1);
        assert_eq!(live.held(), 2);
        // A record of no events changes nothing held.
        assert_eq!(take(&mut live, &mut cross, 2, mark(0, 2 * sec)), 1);
        // Partition 1 passes 2 s: partition 0's are released, its own at 5 s is held.
        let block = Block {
            events: vec![(0, event(5 * sec))],
            ..mark(1, 10 * sec)
        };
        assert_eq!(take(&mut live, &mut cross, 3, block), 3);
        assert_eq!(live.held(), 1);
        // Partition 0 passes 10 s: nothing is held, and the read position is committed.
        assert_eq!(take(&mut live, &mut cross, 4, mark(0, 20 * sec)), 5);
        assert_eq!(live.held(), 0);
        assert!(cross.unreleased.is_empty());
    }

    #[test]
    fn a_large_block_is_cut_and_only_its_last_piece_moves_the_watermark() {
        let event = event(1);
        let n = BLOCK_EVENTS * 2 + 3;
        let block = Block {
            partition: 3,
            watermark: 77,
            idle: true,
            events: (0..n as u64).map(|o| (o, event.clone())).collect(),
        };
        let pieces = cut(block);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|b| b.partition == 3));
        let offsets: Vec<u64> = pieces
            .iter()
            .flat_map(|b| b.events.iter().map(|e| e.0))
            .collect();
        assert_eq!(offsets, (0..n as u64).collect::<Vec<_>>());
        assert!(
            pieces[..2]
                .iter()
                .all(|b| b.watermark == i64::MIN && !b.idle)
        );
        assert_eq!((pieces[2].watermark, pieces[2].idle), (77, true));
        let small = Block {
            partition: 1,
            watermark: 5,
            idle: false,
            events: Vec::new(),
        };
        assert_eq!(cut(small).len(), 1);
    }
}
