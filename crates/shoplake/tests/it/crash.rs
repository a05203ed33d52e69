//! `kill -9` during an import at several points, then the import again: the lake ends with
//! exactly the file's events, none lost and none twice, and one `imports` row.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, StringArray};
use shoplake_lake::{Lake, LakeOptions, TableName};

use crate::shoplake;

fn spawn_import(file: &Path, lake: &Path) -> Child {
    spawn(&[
        "import",
        file.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ])
}

fn parquet_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                parquet_files(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "parquet"))
            }
        })
        .sum()
}

fn commits(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits (polling the file system) until `cond` holds or the child exits; then kills it.
fn kill_when(mut child: Child, cond: impl Fn() -> bool) -> &'static str {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            return "finished before the kill";
        }
        if cond() || Instant::now() > deadline {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return "killed";
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub(crate) fn lake_ids(lake: &Path) -> (usize, HashSet<String>) {
    lake_ids_in(LakeOptions {
        root: lake.display().to_string(),
        ..LakeOptions::default()
    })
}

/// As [`lake_ids`], for a lake anywhere (on S3 too).
pub(crate) fn lake_ids_in(options: LakeOptions) -> (usize, HashSet<String>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lake = Lake::open(options).unwrap();
    let batches = rt
        .block_on(lake.read_table(TableName::Events, &["event_id"]))
        .unwrap();
    let mut rows = 0;
    let mut ids = HashSet::new();
    for b in batches {
        let a = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..a.len() {
            rows += 1;
            ids.insert(a.value(i).to_owned());
        }
    }
    (rows, ids)
}

/// The distinct ids of a file's valid events.
pub(crate) fn file_ids(file: &Path) -> HashSet<String> {
    let input = shoplake_events::io::open(file).unwrap();
    shoplake_events::CsvDecoder::new(input, shoplake_events::Validator::default())
        .unwrap()
        .filter_map(|r| match r.unwrap() {
            shoplake_events::Row::Event(e) => Some(e.event_id().to_string()),
            shoplake_events::Row::Reject(_) => None,
        })
        .collect()
}

#[test]
fn kill_9_at_any_point_then_reimport_gives_exactly_the_right_rows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.csv");
    let lake = dir.path().join("lake");
    let o = shoplake(&[
        "generate",
        "--events",
        "300000",
        "--days",
        "3",
        "--seed",
        "21",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let expected = file_ids(&file);
    let events = lake.join("events");

    let mut outcomes = Vec::new();
    // 1: at once; 2: once data files are staged; 3: once more are staged.
    outcomes.push(kill_when(spawn_import(&file, &lake), || true));
    outcomes.push(kill_when(spawn_import(&file, &lake), || {
        parquet_files(&events) >= 1
    }));
    let staged = parquet_files(&events);
    outcomes.push(kill_when(spawn_import(&file, &lake), || {
        parquet_files(&events) >= staged + 2
    }));
    // Nothing was committed to events by a killed run.
    let (rows, _) = lake_ids(&lake);
    assert_eq!(rows, 0, "a killed import committed rows: {outcomes:?}");
    // 4: once the events commit has landed but (most likely) before the imports row.
    let before = commits(&events);
    outcomes.push(kill_when(spawn_import(&file, &lake), || {
        commits(&events) > before
    }));

    // Finish.
    let o = shoplake(&[
        "import",
        file.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (rows, ids) = lake_ids(&lake);
    assert_eq!(rows, ids.len(), "duplicates after crashes: {outcomes:?}");
    assert_eq!(ids, expected, "{outcomes:?}");

    // And once more: a no-op.
    let o = shoplake(&[
        "import",
        file.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("already imported"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let (rows_again, _) = lake_ids(&lake);
    assert_eq!(rows_again, rows);
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_shoplake"))
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `count` summed over every mart table (and the marts' keyed state) of a lake.
fn over_marts(lake: &Path, count: fn(&Path) -> usize) -> usize {
    TableName::ALL
        .iter()
        .filter(|t| t.as_str().starts_with("mart_"))
        .map(|t| count(&lake.join(t.as_str())))
        .sum()
}

fn mart_commits(lake: &Path) -> usize {
    over_marts(lake, commits)
}

fn mart_files(lake: &Path) -> usize {
    over_marts(lake, parquet_files)
}

/// Every report, as JSON, from the given source (`auto` is what a user gets by default).
fn reports(lake: &str, source: &str) -> Vec<(String, bool, String)> {
    let reports: [&[&str]; 4] = [
        &["visitors"],
        &["abandonment"],
        &["categories", "--by", "weekday", "--metric", "visitors"],
        &["brands", "--min-views", "1"],
    ];
    reports
        .iter()
        .map(|r| {
            let mut args = vec!["report"];
            args.extend_from_slice(r);
            args.extend(["--lake", lake, "--format", "json", "--source", source]);
            let o = shoplake(&args);
            (
                r[0].to_owned(),
                o.status.success(),
                if o.status.success() {
                    String::from_utf8_lossy(&o.stdout).into_owned()
                } else {
                    String::from_utf8_lossy(&o.stderr).into_owned()
                },
            )
        })
        .collect()
}

/// After a kill: the default answers equal the answers from `events`, and the marts either
/// give the same answers or refuse as stale.
fn never_wrong(lake: &str, outcomes: &[&str]) {
    let events = reports(lake, "events");
    assert!(events.iter().all(|r| r.1), "{events:?}");
    assert_eq!(reports(lake, "auto"), events, "{outcomes:?}");
    for (m, e) in reports(lake, "marts").into_iter().zip(&events) {
        assert!(
            (m.1 && m.2 == e.2) || (!m.1 && m.2.contains("marts")),
            "{}: marts answered {:?} after {outcomes:?}",
            m.0,
            m.2
        );
    }
}

#[test]
fn kill_9_during_a_marts_rebuild_or_refresh_never_gives_a_wrong_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.csv");
    let late = dir.path().join("late.csv");
    let lake_dir = dir.path().join("lake");
    let lake = lake_dir.display().to_string();
    for (out, seed, events) in [(&file, "31", "40000"), (&late, "32", "4000")] {
        let o = shoplake(&[
            "generate",
            "--events",
            events,
            "--days",
            "4",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success());
    }
    let o = shoplake(&[
        "import",
        file.to_str().unwrap(),
        "--lake",
        &lake,
        "--no-marts",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let rebuild = ["marts", "rebuild", "--lake", &lake, "--tz", "Asia/Tokyo"];
    let mut outcomes = Vec::new();
    // 1: at once; 2: once mart files are being written; 3: once mart commits have landed.
    outcomes.push(kill_when(spawn(&rebuild), || true));
    never_wrong(&lake, &outcomes);
    let files = mart_files(&lake_dir);
    outcomes.push(kill_when(spawn(&rebuild), || mart_files(&lake_dir) > files));
    never_wrong(&lake, &outcomes);
    let before = mart_commits(&lake_dir);
    outcomes.push(kill_when(spawn(&rebuild), || {
        mart_commits(&lake_dir) >= before + 2
    }));
    never_wrong(&lake, &outcomes);
    let o = shoplake(&rebuild);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = shoplake(&["marts", "status", "--lake", &lake]);
    assert!(
        crate::stdout(&o).contains("UTC: up to date"),
        "{}",
        crate::stdout(&o)
    );
    let done = reports(&lake, "marts");
    assert_eq!(done, reports(&lake, "events"), "{outcomes:?}");

    // Late events for the old days, then refreshes killed on the way.
    let o = shoplake(&[
        "import",
        late.to_str().unwrap(),
        "--lake",
        &lake,
        "--no-marts",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let refresh = ["marts", "refresh", "--lake", &lake];
    let before = mart_commits(&lake_dir);
    outcomes.push(kill_when(spawn(&refresh), || {
        mart_commits(&lake_dir) > before
    }));
    never_wrong(&lake, &outcomes);
    let before = mart_commits(&lake_dir);
    outcomes.push(kill_when(spawn(&refresh), || {
        mart_commits(&lake_dir) >= before + 3
    }));
    never_wrong(&lake, &outcomes);
    let o = shoplake(&refresh);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let refreshed = reports(&lake, "marts");
    assert!(refreshed.iter().all(|r| r.1), "{refreshed:?}");
    assert_eq!(refreshed, reports(&lake, "events"), "{outcomes:?}");
    assert_ne!(refreshed, done, "the late events changed the reports");
    // The Tokyo marts, rebuilt whole by a killed run or the last one, answer right too.
    let tokyo = |source: &str| {
        let o = shoplake(&[
            "report",
            "visitors",
            "--lake",
            &lake,
            "--tz",
            "Asia/Tokyo",
            "--format",
            "json",
            "--source",
            source,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        crate::stdout(&o)
    };
    assert_eq!(tokyo("marts"), tokyo("events"));
    assert!(
        outcomes.iter().filter(|o| **o == "killed").count() >= 3,
        "{outcomes:?}"
    );
}
