//! Issue 21's check: several `serve` processes with different roles on the real broker, an S3
//! lake (SeaweedFS) and a PostgreSQL alert store find what one `serve` on the embedded log
//! finds, and what `detect` finds over the lake, with one of them killed mid-attack.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoplake_lake::LakeOptions;

use crate::crash::{file_ids, lake_ids, lake_ids_in};
use crate::serve::{
    free_port, healthz, incidents, metric, post_events, spawn_role, spawn_serve, stored, stored_by,
    terminate, unique_topic, wait_for_partitions, webhook_receiver,
};
use crate::shoplake;

/// An incident as the comparison goes: rule, key type, key, first window, peak.
type Found = (String, String, String, String, String);

/// The generated day's events.
const EVENTS: usize = 150_000;

/// A view two days after the generated day, by a user of its own: it moves every watermark
/// past the day's windows, so that each run closes them all (the embedded one drains at its
/// stop anyway; a process of a group hands its open windows over instead).
const SENTINEL: &str = "{\"event_time\":\"2019-10-03 12:00:00 UTC\",\"event_type\":\"view\",\
     \"product_id\":1,\"category_id\":7,\"brand\":\"acme\",\"price\":9.99,\
     \"user_id\":987654321,\"user_session\":\"s-sentinel\"}\n";

/// The incidents in the alert store a configuration names.
fn stored_in(config: &Path) -> Vec<Found> {
    stored_by("--config", config)
}

/// `replay FILE --max` into a collector, 4 connections; its summary.
fn replay(file: &Path, port: u16, data: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_shoplake"))
        .args(["replay", file.to_str().unwrap(), "--max"])
        .args(["--connections", "4", "--format", "json"])
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args(["--data", data.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The generated day with every attack kind through one `serve` on the embedded log, and
/// through three processes (a collector; two doing delivery and detection) on Kafka, S3 and
/// PostgreSQL, the one running the rules keyed across users SIGKILLed mid-replay (after a
/// checkpoint) and started again once the other has taken its partitions over. The lake
/// holds each event once; the incidents (rule, key, first window, peak) are the embedded
/// run's and `detect`'s over the lake; every incident's opening is notified once (the killed
/// process's notices are sent by the others from the outbox), none twice.
#[test]
fn three_processes_find_every_attack_as_one_process_and_history_do() {
    let brokers = std::env::var("SHOPLAKE_TEST_KAFKA").expect(
        "SHOPLAKE_TEST_KAFKA is not set: run the tests through scripts/test.sh, which starts a Kafka-protocol broker (tansu)",
    );
    let endpoint = std::env::var("SHOPLAKE_TEST_S3_ENDPOINT").expect(
        "SHOPLAKE_TEST_S3_ENDPOINT is not set: run the tests through scripts/test.sh, which starts SeaweedFS",
    );
    let bucket =
        std::env::var("SHOPLAKE_TEST_S3_BUCKET").unwrap_or_else(|_| "shoplake-test".into());
    let postgres = std::env::var("SHOPLAKE_TEST_POSTGRES").expect(
        "SHOPLAKE_TEST_POSTGRES is not set: run the tests through scripts/test.sh, which starts PostgreSQL",
    );
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let database = format!("cluster_{ns}");
    let o = Command::new("psql")
        .arg(format!("{postgres}/postgres"))
        .args(["-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("CREATE DATABASE {database}"))
        .output()
        .expect("psql runs (Debian's postgresql-client, installed with postgresql)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("day.csv");
    let o = shoplake(&[
        "generate",
        "--events",
        &EVENTS.to_string(),
        "--days",
        "1",
        "--seed",
        "21",
        "--network-fields",
        "--attacks",
        "default",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let common = "[delivery]\ninterval = \"500ms\"\nmarts_interval = \"off\"\n\
                  [detect]\ncheckpoint_interval = \"1s\"\n";

    // One process on the embedded log.
    let one = dir.path().join("one");
    let one_config = dir.path().join("one.toml");
    std::fs::write(&one_config, common).unwrap();
    let port = free_port();
    let mut server = spawn_serve(&one, &one_config, port, &dir.path().join("one.log"));
    let o = replay(&file, port, &one).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(post_events(port, &one, SENTINEL).contains("200"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(port, &one, "shoplake_detector_events_total") < (EVENTS + 1) as f64 * 0.99 {
        assert!(
            Instant::now() < deadline,
            "the embedded run's detector fell behind"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(terminate(&mut server).success());
    let want = stored(&one);
    let kinds: BTreeSet<&str> = want.iter().map(|i| i.0.as_str()).collect();
    for kind in [
        "user_burst",
        "scraper",
        "ip_flood",
        "traffic_spike",
        "robotic_timing",
    ] {
        assert!(kinds.contains(kind), "{kind} missing: {kinds:?}");
    }

    // Three processes on Kafka, S3 and PostgreSQL, each with a data directory of its own (as
    // on three machines).
    let (hook, notices) = webhook_receiver();
    let topic = unique_topic("shoplake-cluster");
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nbackend = \"kafka\"\npartitions = 4\n[log.kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\n\
             [lake]\nroot = \"s3://{bucket}/cluster-{ns}\"\n[lake.s3]\nendpoint = \"{endpoint}\"\n\
             region = \"us-east-1\"\naccess_key_id = \"test\"\nsecret_access_key = \"testtesttest\"\n\
             allow_http = true\n[alerts]\nstore = \"{postgres}/{database}\"\n{common}\
             [notify]\nbackoff = \"100ms\"\ntimeout = \"2s\"\n[[notify.channels]]\nkind = \"webhook\"\n\
             url = \"http://127.0.0.1:{hook}/hook\"\nmin_severity = \"low\"\n"
        ),
    )
    .unwrap();
    let data: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("data-{i}")))
        .collect();
    let logs: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("serve-{i}.log")))
        .collect();
    let show = |i: usize| std::fs::read_to_string(&logs[i]).unwrap_or_default();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let roles = ["collector", "delivery,detector", "delivery,detector"];
    let spawn = |i: usize| spawn_role(&data[i], &config, ports[i], &logs[i], roles[i]);
    let mut processes: Vec<_> = (0..3).map(|i| Some(spawn(i))).collect();
    let shared = wait_for_partitions(&ports[1..], "detector", |p| {
        p.iter().all(|x| !x.is_empty()) && p.iter().map(Vec::len).sum::<usize>() == 4
    });
    assert!(
        shared.iter().all(|x| !x.is_empty()),
        "{shared:?}\n{}\n{}",
        show(1),
        show(2)
    );
    let cross = 1 + usize::from(!shared[0].contains(&0));
    let shared_before = shared.clone();
    assert_eq!(healthz(ports[cross])["detector"]["cross"], true);
    let other = 3 - cross;
    assert_eq!(healthz(ports[other])["detector"]["cross"], false);

    let replaying = replay(&file, ports[0], &data[0]);
    // Mid-replay, after a checkpoint with a share of the day read, SIGKILL.
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(ports[cross], &data[cross], "shoplake_detector_events_total") < EVENTS as f64 / 8.0
        || metric(
            ports[cross],
            &data[cross],
            "shoplake_detector_checkpoints_total",
        ) < 2.0
    {
        assert!(Instant::now() < deadline, "{}", show(cross));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut killed = processes[cross].take().unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let after = wait_for_partitions(&ports[other..=other], "detector", |p| p[0].len() == 4);
    assert_eq!(after[0].len(), 4, "{}", show(other));
    assert_eq!(healthz(ports[other])["detector"]["cross"], true);
    let o = replaying.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["acknowledged"], EVENTS, "{summary}");

    // Started again later: the partitions are shared once more.
    processes[cross] = Some(spawn(cross));
    let shared = wait_for_partitions(&ports[1..], "detector", |p| p.iter().all(|x| !x.is_empty()));
    assert!(shared.iter().all(|x| !x.is_empty()), "{shared:?}");
    assert!(post_events(ports[0], &data[0], SENTINEL).contains("200"));
    // The group goes on until its incidents are the embedded run's.
    let deadline = Instant::now() + Duration::from_secs(180);
    while stored_in(&config) != want {
        assert!(
            Instant::now() < deadline,
            "the group's incidents did not become the embedded run's:\n{:?}\n{:?}\n{}\n{}",
            stored_in(&config),
            want,
            show(1),
            show(2)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while healthz(ports[0])["backlog_events"].as_u64() != Some(0) {
        assert!(Instant::now() < deadline, "{}\n{}", show(1), show(2));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every stored incident's opening notified, the killed process's left-overs included.
    let incident_ids = stored_ids(&config);
    assert_eq!(incident_ids.len(), want.len(), "{incident_ids:?}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let opened: BTreeSet<String> = sent_notices(&notices)
            .into_iter()
            .filter(|n| n.0 == "incident.opened")
            .map(|n| n.1)
            .collect();
        if opened == incident_ids {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "openings notified {opened:?}, incidents {incident_ids:?}\n{}\n{}",
            show(1),
            show(2)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in [1, 2, 0] {
        let mut child = processes[i].take().unwrap();
        assert!(terminate(&mut child).success(), "{}", show(i));
    }
    assert_eq!(stored_in(&config), want, "after the stop");
    for i in [1, 2] {
        assert!(
            show(i).contains("restored a partition from its checkpoint"),
            "{}",
            show(i)
        );
    }
    assert!(
        show(other).contains("restored the rules keyed across users from their checkpoint"),
        "{}",
        show(other)
    );

    // The lake: each event once.
    let mut storage = std::collections::HashMap::new();
    for (k, v) in [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "testtesttest"),
        ("AWS_ALLOW_HTTP", "true"),
    ] {
        storage.insert(k.to_owned(), v.to_owned());
    }
    let (rows, ids) = lake_ids_in(LakeOptions {
        root: format!("s3://{bucket}/cluster-{ns}"),
        storage_options: storage,
    });
    assert_eq!(rows, ids.len(), "no duplicates");
    let (_, one_ids) = lake_ids(&one.join("lake"));
    assert_eq!(ids, one_ids, "the embedded run's events");
    assert!(file_ids(&file).is_subset(&ids));

    // History over the lake.
    let history = Command::new(env!("CARGO_BIN_EXE_shoplake"))
        .args(["detect", "--format", "json"])
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        history.status.success(),
        "{}",
        String::from_utf8_lossy(&history.stderr)
    );
    assert_eq!(incidents(&history.stdout), want, "detect over the lake");

    // No notification twice, one opening per incident, each of a stored incident.
    let sent = sent_notices(&notices);
    let all = sent.len();
    let distinct: BTreeSet<_> = sent.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        all,
        "a notification went out twice: {sent:?}"
    );
    let stored_after = stored_ids(&config);
    let strays: Vec<_> = sent
        .iter()
        .filter(|n| !incident_ids.contains(&n.1))
        .collect();
    assert!(
        strays.is_empty(),
        "notices of no stored incident {strays:?}; {} stored before the stop, {} after, {} incidents",
        incident_ids.len(),
        stored_after.len(),
        want.len()
    );
    let opened = sent.iter().filter(|n| n.0 == "incident.opened").count();
    assert_eq!(opened, incident_ids.len(), "{sent:?}");
    assert_eq!(stored_after, incident_ids);
    eprintln!(
        "{} incidents of {kinds:?}, {all} notices ({opened} openings); the member killed detected on {:?}",
        want.len(),
        shared_before[cross - 1]
    );
}

/// The (type, incident id, severity) of each notice received, in the order received.
fn sent_notices(notices: &std::sync::Mutex<Vec<String>>) -> Vec<(String, String, String)> {
    notices
        .lock()
        .unwrap()
        .iter()
        .map(|n| {
            let v: serde_json::Value = serde_json::from_str(n).unwrap();
            let i = &v["incident"];
            let s = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_owned();
            (s(&v["type"]), s(&i["id"]), s(&i["severity"]))
        })
        .collect()
}

/// The ids of the incidents in the alert store of `config`.
fn stored_ids(config: &Path) -> BTreeSet<String> {
    let o = Command::new(env!("CARGO_BIN_EXE_shoplake"))
        .args(["alerts", "list", "--status", "all", "--format", "json"])
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}
