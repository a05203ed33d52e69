//! The Kafka backend: one topic keyed by user id, for scale-out (several collectors, consumers
//! on other machines). Records go to the partition [`partition_for`] names, so both backends
//! place keys alike; positions are Kafka offsets; an append returns once every record is
//! acknowledged by all in-sync replicas (`acks=all`, idempotent producer); consumer positions
//! are the consumer group's committed offsets.
//!
//! A consumer `c` of topic `t` is the Kafka group `shoplake.t.c` ([`group_id`]): a group id is
//! cluster-wide, and a group whose members subscribe to different topics hands each member
//! partitions of any of them, so two shoplake deployments sharing a broker under the same
//! consumer name (`lake`, by default) would each be given the other's partitions and deliver
//! nothing of their own.
//!
//! Where a partition ends is taken only from what Fetch and the producer's delivery reports
//! say, never trusting ListOffsets "latest" (some Kafka-protocol brokers answer it too low,
//! such as the last batch's first offset + 1; it is only where counting starts): a read
//! polls until the consumer reports the partition's end (`enable.partition.eof`, from the
//! Fetch response's high watermark) and it is past every offset this process's own appends
//! were acknowledged at when the read began.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::ownership::{Owned, Ownership};
use crate::{
    Error, EventLog, Limit, Position, Record, Result, Stored, check_consumer, partition_for,
};

/// Options of the Kafka backend.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Bootstrap servers (`host:port,host:port`).
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// Partitions when the topic has to be created (default 4).
    pub partitions: u32,
    /// Replication factor when the topic has to be created (default 1).
    pub replication: i32,
    /// How long a request to the brokers may take (default 30 s).
    pub timeout: Duration,
    /// librdkafka properties for the producer (security, batching: `security.protocol`,
    /// `sasl.mechanisms`, `batch.num.messages` …).
    pub producer_properties: Vec<(String, String)>,
    /// librdkafka properties for the consumers.
    pub consumer_properties: Vec<(String, String)>,
}

impl KafkaOptions {
    /// The defaults for a topic on some brokers.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> KafkaOptions {
        KafkaOptions {
            brokers: brokers.into(),
            topic: topic.into(),
            partitions: 4,
            replication: 1,
            timeout: Duration::from_secs(30),
            producer_properties: Vec::new(),
            consumer_properties: Vec::new(),
        }
    }
}

/// An event log on a Kafka topic.
pub struct KafkaLog {
    options: KafkaOptions,
    partitions: u32,
    producer: FutureProducer,
    /// Reads (assign, seek, poll) and watermarks, one at a time.
    reader: Arc<Mutex<BaseConsumer<ReaderContext>>>,
    /// One consumer per group, for committed offsets.
    groups: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    /// The groups this process is a member of ([`EventLog::join`]): their offsets are
    /// committed by the member (a group with members refuses commits from outside it).
    members: Mutex<HashMap<String, std::sync::Weak<Member>>>,
    /// Per partition, the offset after the newest record seen: acknowledged to this
    /// process's appends or read back. A read never stops before it.
    seen_end: Arc<Mutex<Vec<u64>>>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("options", &self.options)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

fn kafka(what: &str) -> impl FnOnce(KafkaError) -> Error + '_ {
    move |e| Error::Kafka(format!("{what}: {e}"))
}

fn config(options: &KafkaOptions, properties: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &options.brokers)
        .set("socket.timeout.ms", options.timeout.as_millis().to_string());
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// Creates the topic unless it exists.
async fn create_topic(options: &KafkaOptions) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config(options, &options.consumer_properties)
        .create()
        .map_err(kafka("connecting to Kafka"))?;
    let topic = NewTopic::new(
        &options.topic,
        i32::try_from(options.partitions.max(1)).unwrap_or(i32::MAX),
        TopicReplication::Fixed(options.replication),
    );
    let created = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(options.timeout)),
        )
        .await
        .map_err(kafka("creating the topic"))?;
    for r in created {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(Error::Kafka(format!("creating the topic {t}: {code}")));
            }
        }
    }
    Ok(())
}

/// The topic's partitions, from its metadata (a new topic's can take a moment to show).
async fn partition_count(
    reader: Arc<Mutex<BaseConsumer<ReaderContext>>>,
    options: &KafkaOptions,
) -> Result<u32> {
    let topic = options.topic.clone();
    let timeout = options.timeout;
    blocking(move || {
        for _ in 0..50 {
            let r = reader.lock().map_err(|_| poisoned())?;
            let md = r
                .fetch_metadata(Some(&topic), timeout)
                .map_err(kafka("reading the topic's metadata"))?;
            if let Some(t) = md.topics().iter().find(|t| t.name() == topic)
                && !t.partitions().is_empty()
            {
                return Ok(t.partitions().len() as u32);
            }
            drop(r);
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::Kafka(format!("the topic {topic} has no partitions")))
    })
    .await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Kafka(format!("a Kafka call failed: {e}")))?
}

/// One read of a partition, run on the shared reader on a blocking thread.
struct Fetch {
    topic: String,
    partition: i32,
    from: u64,
    limit: Limit,
    keep: bool,
    timeout: Duration,
}

impl Fetch {
    fn run(
        &self,
        reader: &Mutex<BaseConsumer<ReaderContext>>,
        seen_end: &Mutex<Vec<u64>>,
    ) -> Result<(Vec<Stored>, u64)> {
        let p = self.partition;
        // Every offset known to exist when the read began (appends acknowledged since are
        // for the next read: chasing them would never end under steady traffic).
        let known_end = seen_end.lock().map_err(|_| poisoned())?[p as usize];
        let r = reader.lock().map_err(|_| poisoned())?;
        // From the record before `from`: it arriving proves `from` is not past the end (a
        // broker may answer a fetch past its end with nothing at all, not even the end);
        // nothing arriving within PROBE means it is.
        let mut tpl = TopicPartitionList::new();
        let before = Offset::Offset(self.from.saturating_sub(1) as i64);
        tpl.add_partition_offset(&self.topic, p, before)
            .map_err(kafka("assigning"))?;
        r.assign(&tpl).map_err(kafka("assigning"))?;
        match self.poll_to_end(&r, seen_end, known_end) {
            Ok(read) => {
                r.unassign().map_err(kafka("unassigning"))?;
                Ok(read)
            }
            Err(e) => {
                let _ = r.unassign();
                Err(e)
            }
        }
    }

    fn poll_to_end(
        &self,
        r: &BaseConsumer<ReaderContext>,
        seen_end: &Mutex<Vec<u64>>,
        known_end: u64,
    ) -> Result<(Vec<Stored>, u64)> {
        let p = self.partition;
        let mut out: Vec<Stored> = Vec::new();
        let mut got = 0;
        let mut next = self.from;
        let mut confirmed = self.from == 0;
        let started = std::time::Instant::now();
        let deadline = started + self.timeout;
        while !self.limit.reached(out.len(), got) {
            if !confirmed && started.elapsed() > PROBE {
                break;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Kafka(format!(
                    "reading partition {p} from offset {}: no end reported within {:?} ({} \
                     records read)",
                    self.from,
                    self.timeout,
                    out.len()
                )));
            }
            match r.poll(left.min(Duration::from_millis(100))) {
                None => {}
                // Only the end of this partition, and only once past every offset known to
                // exist (a broker's view can lag this process's own acknowledged appends).
                Some(Err(KafkaError::PartitionEOF(eof))) if eof == p => {
                    confirmed = true;
                    if next >= known_end {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => return Err(Error::Kafka(format!("reading: {e}"))),
                Some(Ok(m)) => {
                    // Messages still queued from an earlier assignment are not ours.
                    if m.partition() != p || m.topic() != self.topic {
                        continue;
                    }
                    confirmed = true;
                    let offset = m.offset().max(0) as u64;
                    if offset < next {
                        continue;
                    }
                    next = offset + 1;
                    let mut seen = seen_end.lock().map_err(|_| poisoned())?;
                    seen[p as usize] = seen[p as usize].max(next);
                    drop(seen);
                    if self.keep {
                        let record = Stored {
                            offset,
                            appended_at: m.timestamp().to_millis().unwrap_or(0) * 1000,
                            key: m.key().unwrap_or_default().to_vec(),
                            value: m.payload().unwrap_or_default().to_vec(),
                        };
                        got += record.size();
                        out.push(record);
                    }
                }
            }
        }
        Ok((out, next))
    }
}

impl KafkaLog {
    /// Connects, creating the topic when it does not exist.
    pub async fn open(options: KafkaOptions) -> Result<KafkaLog> {
        create_topic(&options).await?;
        let mut producer = config(&options, &[]);
        producer
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            // Less CPU in `serve` per event acknowledged (JSON records compress well): full
            // load rose from 83-89 k to 97-125 k events/s (bench/ingest.sh). librdkafka links
            // lz4 in; `[log.kafka.producer]` may say otherwise.
            .set("compression.type", "lz4")
            .set(
                "message.timeout.ms",
                options.timeout.as_millis().to_string(),
            );
        for (k, v) in &options.producer_properties {
            producer.set(k, v);
        }
        let producer: FutureProducer = producer.create().map_err(kafka("creating the producer"))?;
        let reader: BaseConsumer<ReaderContext> = config(&options, &options.consumer_properties)
            .set("group.id", "shoplake-reader")
            .set("enable.auto.commit", "false")
            // The end of a partition as Fetch reports it.
            .set("enable.partition.eof", "true")
            // Reading below the first record kept starts at it.
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .create_with_context(ReaderContext)
            .map_err(kafka("creating the reader"))?;
        let reader = Arc::new(Mutex::new(reader));
        let partitions = partition_count(reader.clone(), &options).await?;
        Ok(KafkaLog {
            options,
            partitions,
            producer,
            reader,
            groups: Mutex::new(HashMap::new()),
            members: Mutex::new(HashMap::new()),
            seen_end: Arc::new(Mutex::new(vec![0; partitions as usize])),
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.options.topic
    }

    fn check_partition(&self, partition: u32) -> Result<i32> {
        if partition >= self.partitions {
            return Err(Error::Argument(format!(
                "partition {partition}: the topic has {}",
                self.partitions
            )));
        }
        Ok(partition as i32)
    }

    /// ListOffsets "earliest" and "latest": the first offset kept, and a lower bound of the
    /// end (only a starting point: some brokers answer it too low).
    async fn watermarks(&self, partition: u32) -> Result<(u64, u64)> {
        let p = self.check_partition(partition)?;
        let reader = self.reader.clone();
        let topic = self.options.topic.clone();
        let timeout = self.options.timeout;
        blocking(move || {
            let r = reader.lock().map_err(|_| poisoned())?;
            let (low, high) = r
                .fetch_watermarks(&topic, p, timeout)
                .map_err(kafka("reading watermarks"))?;
            Ok((low.max(0) as u64, high.max(0) as u64))
        })
        .await
    }

    /// Reads a partition from `from` until `max` records, or its end: the consumer reported
    /// the end (from a Fetch response) and every offset known to exist was read. With
    /// `keep = false` the records are only counted past (to find the end).
    async fn fetch(
        &self,
        partition: u32,
        from: u64,
        limit: Limit,
        keep: bool,
    ) -> Result<(Vec<Stored>, u64)> {
        let fetch = Fetch {
            topic: self.options.topic.clone(),
            partition: self.check_partition(partition)?,
            from,
            limit,
            keep,
            timeout: self.options.timeout,
        };
        let reader = self.reader.clone();
        let seen_end = self.seen_end.clone();
        blocking(move || fetch.run(&reader, &seen_end)).await
    }

    /// The client for a group's offsets: this process's live member of it if it joined it,
    /// else a consumer of that group id (made once).
    fn group(&self, consumer: &str) -> Result<GroupClient> {
        check_consumer(consumer)?;
        let member = self
            .members
            .lock()
            .map_err(|_| poisoned())?
            .get(consumer)
            .and_then(std::sync::Weak::upgrade);
        if let Some(m) = member {
            return Ok(GroupClient::Member(m));
        }
        let mut groups = self.groups.lock().map_err(|_| poisoned())?;
        if let Some(c) = groups.get(consumer) {
            return Ok(GroupClient::Outside(c.clone()));
        }
        let c: BaseConsumer = config(&self.options, &self.options.consumer_properties)
            .set("group.id", group_id(&self.options.topic, consumer))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(kafka("creating a group consumer"))?;
        let c = Arc::new(c);
        groups.insert(consumer.to_owned(), c.clone());
        Ok(GroupClient::Outside(c))
    }
}

/// A consumer group member's context: after every rebalance it pauses what it was given
/// (the member only holds partitions; records are read by [`KafkaLog::read`] from the
/// positions their consumer committed) and publishes what it owns.
struct MemberContext {
    topic: String,
    owned: tokio::sync::watch::Sender<Owned>,
}

impl ClientContext for MemberContext {}

/// The reader's context: the end of a partition is how every read finishes, not an error, but
/// rdkafka hands it to the context's `error` as a global error (fede1024/rust-rdkafka#820),
/// which by default logs it at ERROR level — dozens of lines a second on an idle log.
struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let eof = matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            tracing::error!(error = %error, reason, "Kafka reader");
        }
    }
}

impl ConsumerContext for ReaderContext {}

impl ConsumerContext for MemberContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(given) => {
                if let Err(e) = consumer.pause(given) {
                    tracing::warn!(error = %e, "pausing the partitions a rebalance gave");
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "a rebalance failed"),
        }
        let partitions: std::collections::BTreeSet<u32> = match consumer.assignment() {
            Ok(tpl) => tpl
                .elements_for_topic(&self.topic)
                .iter()
                .filter_map(|e| u32::try_from(e.partition()).ok())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading the partitions owned after a rebalance");
                return;
            }
        };
        tracing::info!(topic = %self.topic, ?partitions, "partitions owned after a rebalance");
        self.owned.send_modify(|o| {
            o.partitions = partitions;
            o.rebalances += 1;
        });
    }
}

/// A membership of a consumer group: a consumer subscribed to the topic, polled on a thread
/// of its own (heartbeats, rebalances) until dropped, when it leaves the group.
struct Member {
    consumer: Arc<BaseConsumer<MemberContext>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn join(options: &KafkaOptions, group: &str) -> Result<(Arc<Member>, Ownership)> {
        let (tx, rx) = tokio::sync::watch::channel(Owned::default());
        let context = MemberContext {
            topic: options.topic.clone(),
            owned: tx,
        };
        let mut config = config(options, &[]);
        config
            .set("group.id", group_id(&options.topic, group))
            .set("enable.auto.commit", "false")
            .set("partition.assignment.strategy", "cooperative-sticky")
            // A member that stops heartbeating loses its partitions after this long.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000");
        for (k, v) in &options.consumer_properties {
            config.set(k, v);
        }
        let consumer: BaseConsumer<MemberContext> = config
            .create_with_context(context)
            .map_err(kafka("joining a consumer group"))?;
        consumer
            .subscribe(&[options.topic.as_str()])
            .map_err(kafka("subscribing to the topic"))?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (consumer, stop) = (consumer.clone(), stop.clone());
            let group = group.to_owned();
            std::thread::Builder::new()
                .name(format!("kafka-member-{group}"))
                .spawn(move || poll_membership(&consumer, &stop, &group))
                .map_err(|e| Error::Kafka(format!("starting a group member's thread: {e}")))?
        };
        let member = Arc::new(Member {
            consumer,
            stop,
            thread: Some(thread),
        });
        let keep: Arc<dyn Send + Sync> = member.clone();
        Ok((member, Ownership::following(rx, keep)))
    }
}

/// Serves a member's heartbeats and rebalances until told to stop, then leaves the group.
fn poll_membership(
    consumer: &BaseConsumer<MemberContext>,
    stop: &std::sync::atomic::AtomicBool,
    group: &str,
) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            None | Some(Ok(_)) => {}
            Some(Err(e)) => tracing::debug!(group, error = %e, "consumer group member"),
        }
    }
    // Leaving: the revocation is served here, then the close tells the coordinator.
    consumer.unsubscribe();
    let left = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < left && consumer.assignment().is_ok_and(|a| a.count() > 0) {
        let _ = consumer.poll(Duration::from_millis(50));
    }
}

impl Drop for Member {
    /// Waits for the member to leave the group (a poll and at most two seconds of
    /// revocation), so that its partitions move before the process goes on or exits.
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Who speaks for a group's offsets: this process's member of it, or (not a member) a
/// consumer of that group id outside it.
enum GroupClient {
    Member(Arc<Member>),
    Outside(Arc<BaseConsumer>),
}

impl GroupClient {
    fn committed_offsets(
        &self,
        tpl: TopicPartitionList,
        timeout: Duration,
    ) -> rdkafka::error::KafkaResult<TopicPartitionList> {
        match self {
            GroupClient::Member(m) => m.consumer.committed_offsets(tpl, timeout),
            GroupClient::Outside(c) => c.committed_offsets(tpl, timeout),
        }
    }

    fn commit(&self, tpl: &TopicPartitionList) -> rdkafka::error::KafkaResult<()> {
        match self {
            GroupClient::Member(m) => m.consumer.commit(tpl, CommitMode::Sync),
            GroupClient::Outside(c) => c.commit(tpl, CommitMode::Sync),
        }
    }
}

/// How long a read waits for a sign that its offset is within the partition (the record
/// before it, or the end) before it takes the offset to be past the end.
const PROBE: Duration = Duration::from_secs(2);

fn poisoned() -> Error {
    Error::Kafka("a Kafka client lock was poisoned by a panic".to_owned())
}

#[async_trait::async_trait]
impl EventLog for KafkaLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn append(&self, records: Vec<Record>) -> Result<Vec<Position>> {
        let now_ms = chrono_now_ms();
        let sends = records.iter().map(|r| {
            let partition = partition_for(&r.key, self.partitions) as i32;
            self.producer.send(
                FutureRecord::to(&self.options.topic)
                    .partition(partition)
                    .key(&r.key)
                    .payload(&r.value)
                    .timestamp(now_ms),
                self.options.timeout,
            )
        });
        let results = futures::future::join_all(sends).await;
        let positions: Vec<Position> = results
            .into_iter()
            .map(|r| match r {
                Ok(d) => Ok(Position {
                    partition: d.partition as u32,
                    offset: d.offset as u64,
                }),
                Err((e, _)) => Err(Error::Kafka(format!("appending: {e}"))),
            })
            .collect::<Result<_>>()?;
        // The delivery reports say where the partitions end at least.
        let mut seen = self.seen_end.lock().map_err(|_| poisoned())?;
        for pos in &positions {
            if let Some(end) = seen.get_mut(pos.partition as usize) {
                *end = (*end).max(pos.offset + 1);
            }
        }
        Ok(positions)
    }

    async fn read(&self, partition: u32, from: u64, limit: Limit) -> Result<Vec<Stored>> {
        self.check_partition(partition)?;
        if limit.records == 0 {
            return Ok(Vec::new());
        }
        Ok(self.fetch(partition, from, limit, true).await?.0)
    }

    async fn start(&self, partition: u32) -> Result<u64> {
        Ok(self.watermarks(partition).await?.0)
    }

    async fn end(&self, partition: u32) -> Result<u64> {
        // Counted on to the end Fetch reports from the newest offset known: this process's
        // own, or ListOffsets "latest", which a broker may answer too low but not too high
        // (so a restart counts the last batch, not the whole partition).
        let seen = self.seen_end.lock().map_err(|_| poisoned())?
            [self.check_partition(partition)? as usize];
        let listed = self.watermarks(partition).await?.1;
        Ok(self
            .fetch(
                partition,
                seen.max(listed),
                Limit::records(usize::MAX),
                false,
            )
            .await?
            .1)
    }

    async fn companion(&self, name: &str, partitions: u32) -> Result<Arc<dyn EventLog>> {
        check_consumer(name)?;
        let options = KafkaOptions {
            topic: format!("{}.{name}", self.options.topic),
            partitions,
            ..self.options.clone()
        };
        Ok(Arc::new(KafkaLog::open(options).await?))
    }

    async fn join(&self, group: &str) -> Result<Ownership> {
        check_consumer(group)?;
        let (member, ownership) = Member::join(&self.options, group)?;
        let mut members = self.members.lock().map_err(|_| poisoned())?;
        members.retain(|_, m| m.strong_count() > 0);
        members.insert(group.to_owned(), Arc::downgrade(&member));
        Ok(ownership)
    }

    async fn committed(&self, consumer: &str) -> Result<BTreeMap<u32, u64>> {
        let group = self.group(consumer)?;
        let topic = self.options.topic.clone();
        let partitions = self.partitions;
        let timeout = self.options.timeout;
        blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition(&topic, p as i32);
            }
            let got = group
                .committed_offsets(tpl, timeout)
                .map_err(kafka("reading committed offsets"))?;
            Ok(got
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some((e.partition() as u32, o as u64)),
                    _ => None,
                })
                .collect())
        })
        .await
    }

    async fn commit(&self, consumer: &str, positions: &BTreeMap<u32, u64>) -> Result<()> {
        let group = self.group(consumer)?;
        if positions.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in positions {
            let p = self.check_partition(*p)?;
            tpl.add_partition_offset(&self.options.topic, p, Offset::Offset(*o as i64))
                .map_err(kafka("committing"))?;
        }
        blocking(move || group.commit(&tpl).map_err(kafka("committing offsets"))).await
    }
}

/// The Kafka group id of consumer `consumer` of `topic`: `shoplake.<topic>.<consumer>`, so a
/// group's members all read one topic (see the module docs).
pub fn group_id(topic: &str, consumer: &str) -> String {
    format!("shoplake.{topic}.{consumer}")
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
