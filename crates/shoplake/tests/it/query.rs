//! `shoplake query`, `sql` and `report` on the real sample, as a user runs them.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::*;

fn lake_with_sample(dir: &std::path::Path) -> String {
    let lake = dir.join("lake").display().to_string();
    let o = shoplake(&["import", sample().to_str().unwrap(), "--lake", &lake]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    lake
}

/// `shoplake report KIND ARGS... --source SOURCE --format json` on a lake.
fn report_json(lake: &str, source: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    all.extend(["--lake", lake, "--format", "json", "--source", source]);
    shoplake(&all)
}

#[test]
fn query_sql_and_reports_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_sample(dir.path());

    let o = shoplake(&[
        "query",
        "SELECT event_type, COUNT(*) AS n FROM events GROUP BY 1 ORDER BY 1",
        "--lake",
        &lake,
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let total: i64 = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 1000);

    // CSV to a file.
    let out = dir.path().join("types.csv");
    let o = shoplake(&[
        "query",
        "SELECT COUNT(DISTINCT user_id) AS users FROM events",
        "--lake",
        &lake,
        "--format",
        "csv",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .starts_with("users\n")
    );

    // Changes are refused, with a reason and a failing exit code.
    // No rows: an empty JSON array, whatever batches the plan produced.
    let o = shoplake(&[
        "query",
        "SELECT event_type FROM events WHERE user_id < 0",
        "--lake",
        &lake,
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o), "[]\n");
    let o = shoplake(&["query", "DROP TABLE events", "--lake", &lake]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("read-only") && err.contains("DROP"), "{err}");

    // The shell reads statements from a pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoplake"))
        .args(["sql", "--lake", &lake])
        .env("RUST_LOG", "warn")
        .env("XDG_DATA_HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\\d\nSELECT COUNT(*)\n  AS n FROM events;\nSELECT brand FROM events WHERE brand = 'no-such' ;\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    assert!(
        text.contains("events") && text.contains("quarantine"),
        "{text}"
    );
    assert!(text.contains("1000"), "{text}");
    assert!(text.contains("0 rows"), "{text}");

    // The reports, as JSON with the documented fields.
    let o = shoplake(&["report", "visitors", "--lake", &lake, "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let day = &v[0];
    for f in ["day", "visitors", "sessions", "events", "new_visitors"] {
        assert!(day.get(f).is_some(), "{f} in {day}");
    }
    assert_eq!(
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d["events"].as_i64().unwrap())
            .sum::<i64>(),
        1000
    );
    let o = shoplake(&[
        "report",
        "categories",
        "--lake",
        &lake,
        "--by",
        "weekday",
        "--level",
        "full",
        "--metric",
        "revenue",
        "--top",
        "3",
        "--tz",
        "Asia/Tokyo",
        "--format",
        "csv",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout(&o)
            .starts_with("bucket,category,views,carts,purchases,revenue,visitors,rank,share\n")
    );
    let o = shoplake(&["report", "abandonment", "--lake", &lake, "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(a["items"].as_array().unwrap().len(), 3);
    let o = shoplake(&["report", "brands", "--lake", &lake, "--min-views", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("opportunity"));

    // The import refreshed the marts: reports from them equal reports from events.
    let o = shoplake(&["marts", "status", "--lake", &lake]);
    assert!(stdout(&o).contains("UTC: up to date"), "{}", stdout(&o));
    let brands = |source: &str| {
        let o = report_json(&lake, source, &["brands", "--min-views", "1"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        stdout(&o)
    };
    assert_eq!(brands("marts"), brands("events"));
    let categories = |source: &str| {
        let args = [
            "categories",
            "--by",
            "weekday",
            "--metric",
            "visitors",
            "--level",
            "2",
        ];
        let o = report_json(&lake, source, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        stdout(&o)
    };
    assert_eq!(categories("marts"), categories("events"));
    let berlin = |report: &str, source: &str| {
        let o = report_json(&lake, source, &[report, "--tz", "Europe/Berlin"]);
        (
            o.status.success(),
            stdout(&o),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // No marts for Berlin yet: --source marts says how to get them.
    let (ok, _, err) = berlin("visitors", "marts");
    assert!(
        !ok && err.contains("marts rebuild --tz Europe/Berlin"),
        "{err}"
    );
    let o = shoplake(&["marts", "rebuild", "--lake", &lake, "--tz", "Europe/Berlin"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for report in ["visitors", "abandonment"] {
        let (ok, marts, err) = berlin(report, "marts");
        assert!(ok, "{err}");
        assert_eq!(marts, berlin(report, "events").1, "{report}");
    }

    // --no-marts leaves them alone: reports still answer, from events.
    let other = dir.path().join("other").display().to_string();
    let o = shoplake(&[
        "import",
        sample().to_str().unwrap(),
        "--lake",
        &other,
        "--no-marts",
    ]);
    assert!(o.status.success());
    let o = shoplake(&["marts", "status", "--lake", &other]);
    assert!(
        stdout(&o).contains("UTC: stale or missing"),
        "{}",
        stdout(&o)
    );
    let o = shoplake(&["report", "visitors", "--lake", &other, "--format", "json"]);
    assert!(o.status.success());

    // Bad arguments are explained.
    let o = shoplake(&["report", "visitors", "--lake", &lake, "--tz", "Mars/Base"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("IANA"));
    let o = shoplake(&[
        "report",
        "visitors",
        "--lake",
        &lake,
        "--from",
        "2019-13-01",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("YYYY-MM-DD"));
}

#[test]
fn a_reader_that_goes_away_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_sample(dir.path());
    // Megabytes of output, more than a pipe holds (`… | head -c 100`): read a little, then
    // the pipe closes.
    for format in ["csv", "json", "table"] {
        let args = [
            "query",
            "SELECT a.*, b.event_id AS other FROM events a \
             CROSS JOIN (SELECT event_id FROM events LIMIT 20) b",
            "--format",
            format,
        ];
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoplake"))
            .args(args)
            .args(["--lake", &lake])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut head = [0u8; 100];
        std::io::Read::read_exact(&mut out, &mut head).unwrap();
        drop(out);
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// `query --format json` rows.
fn rows(lake: &str, sql: &str) -> Vec<serde_json::Value> {
    let o = shoplake(&["query", sql, "--lake", lake, "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str::<serde_json::Value>(&stdout(&o))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn bot_verdicts_from_history_leave_bots_out_of_humans_only_reports() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("day.csv");
    let lake = dir.path().join("lake").display().to_string();
    let o = shoplake(&[
        "generate",
        "--events",
        "120000",
        "--days",
        "1",
        "--seed",
        "31",
        "--network-fields",
        "--attacks",
        "default",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = shoplake(&["import", file.to_str().unwrap(), "--lake", &lake]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let visitors = |extra: &[&str]| -> u64 {
        let mut args = vec!["visitors"];
        args.extend_from_slice(extra);
        let o = report_json(&lake, "auto", &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d["visitors"].as_u64().unwrap())
            .sum()
    };
    let before = visitors(&[]);
    assert_eq!(before, visitors(&["--all-traffic"]), "no flags: one answer");

    let o = shoplake(&["detect", "--flag", "--lake", &lake]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("bot_flags: "), "{err}");
    let flagged = rows(
        &lake,
        "SELECT COUNT(*) AS n, COUNT(DISTINCT user_id) AS users FROM bot_flags",
    );
    let (n, users) = (
        flagged[0]["n"].as_u64().unwrap(),
        flagged[0]["users"].as_u64().unwrap(),
    );
    assert!(users >= 5, "the default attack mix has bot users: {users}");
    // One day: every flagged user is one visitor less for humans only, none for all traffic.
    assert_eq!(visitors(&["--all-traffic"]), before);
    assert_eq!(visitors(&[]), before - users);
    // `detect --flag` refreshed the marts, which count humans only: the same answer from
    // them as from `events`; all traffic comes from `events` only.
    for kind in [
        &["visitors"][..],
        &["abandonment"],
        &["categories", "--by", "weekday"],
        &["brands", "--min-views", "10"],
    ] {
        let marts = report_json(&lake, "marts", kind);
        let events = report_json(&lake, "events", kind);
        assert!(
            marts.status.success(),
            "{}",
            String::from_utf8_lossy(&marts.stderr)
        );
        assert_eq!(stdout(&marts), stdout(&events), "{kind:?}");
    }
    let o = report_json(&lake, "marts", &["visitors", "--all-traffic"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the marts count humans only"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A second run writes nothing new.
    let o = shoplake(&["detect", "--flag", "--lake", &lake]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bot_flags: 0 user-day verdict(s) written"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        rows(&lake, "SELECT COUNT(*) AS n FROM bot_flags")[0]["n"],
        n
    );

    // Allow-listing a flagged user removes its flags; it counts as human again.
    let user = rows(&lake, "SELECT MIN(user_id) AS u FROM bot_flags")[0]["u"]
        .as_i64()
        .unwrap()
        .to_string();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = format!("sqlite://{}", data.join("alerts.db").display());
    // The store exists once a server or a test made it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(shoplake_alerts::SqlStore::open(&store))
        .unwrap();
    let o = shoplake(&[
        "alerts", "allow", "user_id", &user, "--store", &store, "--lake", &lake,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("bot flag(s) of user"), "{}", stdout(&o));
    let left = rows(
        &lake,
        &format!("SELECT COUNT(*) AS n FROM bot_flags WHERE user_id = {user}"),
    );
    assert_eq!(left[0]["n"], 0);
    assert_eq!(visitors(&[]), before - users + 1);
}
