//! The embedded log: the conformance suite, and what only files can show (torn tails, damage,
//! segments, retention).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use shoplake_events::time::Clock;
use shoplake_log::{EmbeddedLog, EmbeddedOptions, EventLog, Limit, Record, conformance};

#[derive(Debug)]
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now_micros(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn options(dir: &Path) -> EmbeddedOptions {
    EmbeddedOptions::new(dir)
}

fn open(options: &EmbeddedOptions) -> EmbeddedLog {
    EmbeddedLog::open(options.clone()).unwrap()
}

fn rec(user: u64, n: u64) -> Record {
    Record {
        key: user.to_string().into_bytes(),
        value: format!("event {n} of user {user} {}", "x".repeat(100)).into_bytes(),
    }
}

async fn all(log: &EmbeddedLog, partition: u32) -> Vec<u64> {
    let mut from = log.start(partition).await.unwrap();
    let mut out = Vec::new();
    loop {
        let b = log.read(partition, from, Limit::records(64)).await.unwrap();
        let Some(last) = b.last() else { break };
        from = last.offset + 1;
        out.extend(b.iter().map(|r| r.offset));
    }
    out
}

#[tokio::test]
async fn conformance_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let o = options(dir.path());
    let log = open(&o);
    conformance::appends_and_reads(&log).await.unwrap();
    conformance::concurrent_appends(&log).await.unwrap();
    conformance::consumer_positions(&log).await.unwrap();
    conformance::companions(&log).await.unwrap();
    drop(log);
    let dir = tempfile::tempdir().unwrap();
    let o = options(dir.path());
    conformance::durable_across_reopen(Box::new(open(&o)), || {
        Ok(Box::new(EmbeddedLog::open(o.clone())?) as Box<dyn EventLog>)
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_everything_before_kept() {
    let dir = tempfile::tempdir().unwrap();
    let o = EmbeddedOptions {
        partitions: 1,
        ..options(dir.path())
    };
    let log = open(&o);
    log.append((0..100).map(|i| rec(7, i)).collect())
        .await
        .unwrap();
    drop(log);
    // A crash mid-write: half a record, then garbage, at the end of the segment.
    let seg = dir.path().join("p-0").join("00000000000000000000.log");
    let good = std::fs::metadata(&seg).unwrap().len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    drop(f);
    let log = open(&o);
    assert_eq!(all(&log, 0).await, (0..100).collect::<Vec<_>>());
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        good,
        "the tail was cut"
    );
    let p = log.append(vec![rec(7, 100)]).await.unwrap();
    assert_eq!(p[0].offset, 100);
    drop(log);

    // A flipped bit in the last record: that record goes, the ones before stay.
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let log = open(&o);
    assert_eq!(all(&log, 0).await, (0..100).collect::<Vec<_>>());
}

#[tokio::test]
async fn damage_before_the_tail_is_an_error_not_a_silent_loss() {
    let dir = tempfile::tempdir().unwrap();
    let o = EmbeddedOptions {
        partitions: 1,
        segment_bytes: 4096,
        retention_bytes: None,
        ..options(dir.path())
    };
    let log = open(&o);
    log.append((0..200).map(|i| rec(1, i)).collect())
        .await
        .unwrap();
    drop(log);
    let seg = dir.path().join("p-0").join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let err = EmbeddedLog::open(o.clone()).unwrap_err().to_string();
    assert!(err.contains("damaged record"), "{err}");
}

#[tokio::test]
async fn segments_roll_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let o = EmbeddedOptions {
        partitions: 2,
        segment_bytes: 2048,
        retention_bytes: None,
        ..options(dir.path())
    };
    let log = open(&o);
    let mut per_partition: BTreeMap<u32, u64> = BTreeMap::new();
    for round in 0..20 {
        for p in log
            .append((0..25).map(|i| rec(i % 5, round * 25 + i)).collect())
            .await
            .unwrap()
        {
            *per_partition.entry(p.partition).or_default() += 1;
        }
    }
    for (p, n) in &per_partition {
        assert_eq!(all(&log, *p).await, (0..*n).collect::<Vec<_>>());
        let segments = std::fs::read_dir(dir.path().join(format!("p-{p}")))
            .unwrap()
            .count();
        assert!(segments > 3, "{segments} segments");
    }
    drop(log);
    let log = open(&o);
    for (p, n) in &per_partition {
        assert_eq!(all(&log, *p).await, (0..*n).collect::<Vec<_>>());
        assert_eq!(log.end(*p).await.unwrap(), *n);
    }
}

#[tokio::test]
async fn retention_by_size_and_age_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TestClock(AtomicI64::new(1_000_000_000_000)));
    let o = EmbeddedOptions {
        partitions: 1,
        segment_bytes: 2048,
        retention_bytes: Some(8192),
        retention_age: Some(Duration::from_secs(3600)),
        clock: clock.clone(),
        ..options(dir.path())
    };
    let log = open(&o);
    for i in 0..200 {
        log.append(vec![rec(3, i)]).await.unwrap();
    }
    let start = log.start(0).await.unwrap();
    assert!(start > 0, "old segments deleted by size");
    let kept = all(&log, 0).await;
    assert_eq!(kept, (start..200).collect::<Vec<_>>());
    let bytes: u64 = std::fs::read_dir(dir.path().join("p-0"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(bytes <= 8192 + 2048, "{bytes} bytes kept");
    // Reading from before the start begins at the start.
    assert_eq!(
        log.read(0, 0, Limit::records(1)).await.unwrap()[0].offset,
        start
    );

    // Two hours later, one more record: every older segment is past its age.
    clock.0.fetch_add(2 * 3_600_000_000, Ordering::SeqCst);
    let p = log.append(vec![rec(3, 200)]).await.unwrap();
    log.append(vec![rec(3, 201)]).await.unwrap();
    let start = log.start(0).await.unwrap();
    assert!(start > 150 && start <= p[0].offset, "start {start}");
}

/// Retention never deletes a record a protected consumer has not committed past; a
/// partition that fills with such records refuses appends (`Full`) without writing any of
/// them, and takes them again once the consumer commits.
#[tokio::test]
async fn retention_keeps_what_a_protected_consumer_has_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let o = EmbeddedOptions {
        partitions: 1,
        segment_bytes: 2048,
        retention_bytes: Some(8192),
        protected: vec!["lake".to_owned()],
        ..options(dir.path())
    };
    let log = open(&o);
    let mut stored = 0u64;
    let mut full = None;
    for i in 0..1000 {
        match log.append(vec![rec(3, i)]).await {
            Ok(_) => stored += 1,
            Err(shoplake_log::Error::Full(why)) => {
                full = Some(why);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let why = full.expect("the partition fills and refuses");
    assert!(why.contains("not yet delivered"), "{why}");
    assert_eq!(log.start(0).await.unwrap(), 0, "nothing unread was deleted");
    assert_eq!(
        log.end(0).await.unwrap(),
        stored,
        "nothing refused was written"
    );
    assert_eq!(all(&log, 0).await, (0..stored).collect::<Vec<_>>());
    // The consumer reads half: retention may delete up to there, and appends go on.
    log.commit("lake", &BTreeMap::from([(0, stored / 2)]))
        .await
        .unwrap();
    log.append(vec![rec(3, 5000)]).await.unwrap();
    let start = log.start(0).await.unwrap();
    assert!(
        start > 0 && start <= stored / 2,
        "start {start} of {stored}"
    );
    // Reopened, the protected positions are read back from disk.
    drop(log);
    let log = open(&o);
    assert_eq!(log.start(0).await.unwrap(), start);
}

/// A consumer that keeps up is never refused, however small the retention (the segment
/// being written, once read, is no reason to refuse).
#[tokio::test]
async fn a_consumer_that_keeps_up_is_never_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = EmbeddedOptions {
        partitions: 1,
        segment_bytes: 2048,
        retention_bytes: Some(0),
        protected: vec!["lake".to_owned()],
        ..options(dir.path())
    };
    let log = open(&o);
    for i in 0..300 {
        let p = log.append(vec![rec(3, i)]).await.unwrap();
        log.commit("lake", &BTreeMap::from([(0, p[0].offset + 1)]))
            .await
            .unwrap();
    }
    assert!(log.start(0).await.unwrap() > 0);
}

#[tokio::test]
async fn partitions_are_fixed_and_arguments_checked() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&options(dir.path()));
    assert!(log.read(99, 0, Limit::records(1)).await.is_err());
    drop(log);
    let err = EmbeddedLog::open(EmbeddedOptions {
        partitions: 8,
        ..options(dir.path())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("4 partitions"), "{err}");
}

/// A Kafka topic of its own on the broker scripts/test.sh starts (tansu).
async fn kafka_log(name: &str) -> shoplake_log::KafkaLog {
    let brokers = std::env::var("SHOPLAKE_TEST_KAFKA").expect(
        "SHOPLAKE_TEST_KAFKA is not set: run the tests through scripts/test.sh, which starts a Kafka-protocol broker (tansu)",
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic = format!("shoplake-test-{name}-{nanos}");
    shoplake_log::KafkaLog::open(tansu_options(brokers, topic))
        .await
        .unwrap()
}

/// The defaults, batching included: tansu (0.x) answers ListOffsets "latest" as the last
/// record batch's first offset + 1, and the log relies on nothing but Fetch and the delivery
/// reports for where a partition ends.
fn tansu_options(brokers: String, topic: String) -> shoplake_log::KafkaOptions {
    shoplake_log::KafkaOptions::new(brokers, topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_kafka() {
    let log = kafka_log("conformance").await;
    assert_eq!(log.partitions(), 4);
    conformance::appends_and_reads(&log).await.unwrap();
    conformance::concurrent_appends(&log).await.unwrap();
    conformance::consumer_positions(&log).await.unwrap();
    conformance::companions(&log).await.unwrap();
    let log = kafka_log("reopen").await;
    let topic = log.topic().to_owned();
    let brokers = std::env::var("SHOPLAKE_TEST_KAFKA").unwrap();
    let handle = tokio::runtime::Handle::current();
    conformance::durable_across_reopen(Box::new(log), move || {
        let options = tansu_options(brokers.clone(), topic.clone());
        let log =
            tokio::task::block_in_place(|| handle.block_on(shoplake_log::KafkaLog::open(options)))?;
        Ok(Box::new(log) as Box<dyn EventLog>)
    })
    .await
    .unwrap();
}

/// A commit of consumer positions writes and syncs a file; a read reads segment files. Both
/// run on blocking threads, never on the async worker that awaits them: a disk slow to sync
/// must not stop the worker's other tasks (a worker stuck in an `fsync` left `/healthz`
/// unanswered for hundreds of milliseconds under load). Here the commit's file is a named
/// pipe, which blocks the commit until something reads it: on a single-threaded runtime,
/// another task still runs meanwhile.
#[test]
fn a_commit_blocked_on_its_file_leaves_the_runtime_running() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(&options(dir.path())));
    let consumers = dir.path().join("consumers");
    std::fs::create_dir_all(&consumers).unwrap();
    let fifo = consumers.join("slow.tmp");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let unblocked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ticked_tx, ticked_rx) = std::sync::mpsc::channel::<()>();
    let opener = {
        let (fifo, unblocked) = (fifo.clone(), unblocked.clone());
        std::thread::spawn(move || {
            // The other task says it ran; past the timeout, it never got the thread.
            let _ = ticked_rx.recv_timeout(Duration::from_secs(5));
            unblocked.store(true, Ordering::SeqCst);
            // Opening the read end lets the commit's open (and write) go on.
            let mut reader = std::fs::File::open(&fifo).unwrap();
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut reader, &mut sink);
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ticked_while_blocked = rt.block_on(async {
        let committing = tokio::spawn({
            let log = log.clone();
            async move { log.commit("slow", &BTreeMap::from([(0, 1)])).await }
        });
        // The commit starts (and blocks) first; then this task must still get the thread.
        tokio::task::yield_now().await;
        let ticked = !unblocked.load(Ordering::SeqCst);
        let _ = ticked_tx.send(());
        // The commit ends either way once the pipe is read (syncing a pipe may fail).
        let _ = committing.await.unwrap();
        ticked
    });
    opener.join().unwrap();
    assert!(
        ticked_while_blocked,
        "the runtime's only thread was held by the commit until its file was opened"
    );
}

/// Two processes in one consumer group share the topic's partitions, each owned by one of
/// them; when one leaves, the other owns them all; the members commit the group's offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_a_kafka_group_share_its_partitions() {
    use std::collections::BTreeSet;
    let first = kafka_log("group").await;
    let brokers = std::env::var("SHOPLAKE_TEST_KAFKA").unwrap();
    let second = shoplake_log::KafkaLog::open(tansu_options(brokers, first.topic().to_owned()))
        .await
        .unwrap();
    let all: BTreeSet<u32> = (0..first.partitions()).collect();
    let wait = Duration::from_secs(60);
    let group = "lake";
    let mut a = first.join(group).await.unwrap();
    let got = a.wait_for(wait, |p| *p == all).await;
    assert_eq!(got, all, "a lone member owns every partition");
    let mut b = second.join(group).await.unwrap();
    let got_b = b.wait_for(wait, |p| !p.is_empty()).await;
    let got_a = a.wait_for(wait, |p| p.len() < all.len()).await;
    assert!(!got_b.is_empty(), "the second member was given nothing");
    assert!(got_a.is_disjoint(&got_b), "{got_a:?} and {got_b:?} overlap");
    assert_eq!(&got_a | &got_b, all);
    assert!(b.now().rebalances >= 1);
    // A member commits the group's offsets (the group refuses outsiders while it has members).
    let mine = *got_b.first().unwrap();
    second
        .commit(group, &BTreeMap::from([(mine, 0)]))
        .await
        .unwrap();
    // Leaving hands its partitions over at once, not after a session timeout.
    drop(b);
    let got = a.wait_for(Duration::from_secs(30), |p| *p == all).await;
    assert_eq!(
        got, all,
        "the partitions of a member that left did not move"
    );
}

/// A Kafka group id is the cluster's: two deployments on one broker under the same consumer
/// name (`lake`, the default) each have a group of their own, named after their topic, so
/// neither takes part in (or waits on) the other's rebalances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_sharing_a_broker_and_a_consumer_name_have_groups_of_their_own() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::collections::BTreeSet;
    let (one, two) = (kafka_log("deploy-one").await, kafka_log("deploy-two").await);
    let wait = Duration::from_secs(60);
    let mut a = one.join("lake").await.unwrap();
    let mut b = two.join("lake").await.unwrap();
    assert!(a.wait_assigned(wait).await && b.wait_assigned(wait).await);
    for (log, owned) in [(&one, &mut a), (&two, &mut b)] {
        let all: BTreeSet<u32> = (0..log.partitions()).collect();
        let got = owned.wait_for(wait, |p| *p == all).await;
        assert_eq!(
            got, all,
            "each deployment's lone member owns its whole topic"
        );
    }
    one.commit("lake", &BTreeMap::from([(0, 0)])).await.unwrap();
    // The offsets are kept under the group the log names, and only there.
    let brokers = std::env::var("SHOPLAKE_TEST_KAFKA").unwrap();
    let committed = |group: String, topic: String| {
        let brokers = brokers.clone();
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", &group)
                .create()
                .unwrap();
            let mut tpl = rdkafka::TopicPartitionList::new();
            tpl.add_partition(&topic, 0);
            let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
            got.elements()[0].offset()
        })
    };
    let topic = one.topic().to_owned();
    let named = shoplake_log::group_id(&topic, "lake");
    assert_eq!(named, format!("shoplake.{topic}.lake"));
    assert_eq!(
        committed(named, topic.clone()).await.unwrap(),
        rdkafka::Offset::Offset(0)
    );
    assert_eq!(
        committed("lake".to_owned(), topic).await.unwrap(),
        rdkafka::Offset::Invalid
    );
}

#[tokio::test]
async fn the_embedded_log_is_owned_whole_by_its_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&options(dir.path()));
    let mut owned = log.join("lake").await.unwrap();
    assert!(owned.assigned() && owned.wait_assigned(Duration::ZERO).await);
    assert_eq!(
        owned.partitions(),
        (0..log.partitions()).collect::<std::collections::BTreeSet<_>>()
    );
    assert!(log.join("../x").await.is_err());
}
