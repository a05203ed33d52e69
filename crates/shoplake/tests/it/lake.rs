//! The lake commands as a user runs them: import (files, globs, stdin), catalog, compact,
//! vacuum; and the lake read by other engines (Python deltalake and polars), locally and on
//! S3 (SeaweedFS). The services come from `scripts/test.sh`; a missing one fails the test.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{sample, shoplake, stdout};

fn lake_arg(dir: &Path) -> String {
    dir.join("lake").display().to_string()
}

#[test]
fn import_catalog_compact_vacuum_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_arg(dir.path());
    let s = sample();
    let o = shoplake(&["import", s.to_str().unwrap(), "--lake", &lake]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout(&o).contains("1000 rows read: 1000 accepted, 0 rejected"),
        "{}",
        stdout(&o)
    );
    let o = shoplake(&["import", s.to_str().unwrap(), "--lake", &lake]);
    assert!(stdout(&o).contains("already imported"), "{}", stdout(&o));

    // Globs and stdin.
    for i in 0..3 {
        let p = dir.path().join(format!("part{i}.csv"));
        let o = shoplake(&[
            "generate",
            "--events",
            "2000",
            "--seed",
            &i.to_string(),
            "--out",
            p.to_str().unwrap(),
        ]);
        assert!(o.status.success());
    }
    let glob = dir.path().join("part*.csv").display().to_string();
    let o = shoplake(&["import", &glob, "--lake", &lake, "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summaries: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summaries.as_array().unwrap().len(), 3);
    assert_eq!(summaries[0]["rows_read"], 2000);
    assert!(summaries[0]["profile"]["null_rate"]["brand"].is_number());

    let mut child = Command::new(env!("CARGO_BIN_EXE_shoplake"))
        .args(["import", "-", "--lake", &lake])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let piped = std::fs::read(dir.path().join("part0.csv")).unwrap();
    child.stdin.take().unwrap().write_all(&piped).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already imported"),
        "stdin with the same bytes is the same import"
    );

    let o = shoplake(&["catalog", "--lake", &lake, "--format", "json"]);
    let tables: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let events = tables
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "events")
        .unwrap();
    let rows = events["rows"].as_u64().unwrap();
    assert!(rows > 6_900, "{rows}");
    assert!(
        events["schema"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "event_id")
    );
    let o = shoplake(&["catalog", "imports", "--lake", &lake]);
    assert!(stdout(&o).contains("nulls:"), "{}", stdout(&o));

    let o = shoplake(&["compact", "--lake", &lake]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout(&o).contains("small files rewritten"),
        "{}",
        stdout(&o)
    );
    let o = shoplake(&["vacuum", "--retain", "0s", "--lake", &lake]);
    assert!(stdout(&o).contains("events: deleted"), "{}", stdout(&o));
    let o = shoplake(&["catalog", "events", "--lake", &lake, "--format", "json"]);
    let after: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(after["rows"].as_u64().unwrap(), rows);

    let o = shoplake(&["import", "/no/such/file.csv", "--lake", &lake]);
    assert_eq!(o.status.code(), Some(2));
    let o = shoplake(&["catalog", "nope", "--lake", &lake]);
    assert_eq!(o.status.code(), Some(2));
}

/// The Python in which scripts/test.sh installed deltalake and polars.
fn python() -> String {
    std::env::var("SHOPLAKE_TEST_PYTHON").expect(
        "SHOPLAKE_TEST_PYTHON is not set: run the tests through scripts/test.sh, which installs \
         Python deltalake and polars and starts SeaweedFS",
    )
}

const READ_BACK: &str = r#"
import sys, json, hashlib, os
import deltalake, polars as pl
uri = sys.argv[1]
opts = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
t = deltalake.DeltaTable(uri, storage_options=opts).to_pyarrow_table()
df = pl.read_delta(uri, storage_options=opts)
ids = sorted(t.column("event_id").to_pylist())
assert sorted(df["event_id"].to_list()) == ids
cents = sum(int(round(float(p) * 100)) for p in t.column("price").to_pylist())
print(json.dumps({"rows": t.num_rows, "ids": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
                  "cents": cents, "polars_rows": df.height, "dates": sorted({str(d) for d in df["event_date"].to_list()})}))
"#;

fn expected(file: &Path) -> (usize, String, i64) {
    let input = shoplake_events::io::open(file).unwrap();
    let mut seen = HashSet::new();
    let mut cents = 0;
    for r in shoplake_events::CsvDecoder::new(input, shoplake_events::Validator::default()).unwrap()
    {
        if let shoplake_events::Row::Event(e) = r.unwrap()
            && seen.insert(e.event_id().to_string())
        {
            cents += e.price.cents();
        }
    }
    let mut ids: Vec<_> = seen.into_iter().collect();
    ids.sort();
    let digest = sha256_hex(ids.join("\n").as_bytes());
    (ids.len(), digest, cents)
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn read_back(uri: &str, options: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.args(["-c", READ_BACK, uri]);
    if let Some(o) = options {
        cmd.arg(o);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "python: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn python_deltalake_and_polars_read_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_arg(dir.path());
    let file = dir.path().join("g.csv");
    assert!(
        shoplake(&[
            "generate",
            "--events",
            "50000",
            "--days",
            "2",
            "--seed",
            "5",
            "--out",
            file.to_str().unwrap()
        ])
        .status
        .success()
    );
    let o = shoplake(&["import", file.to_str().unwrap(), "--lake", &lake]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = read_back(&format!("{lake}/events"), None);
    let (rows, digest, cents) = expected(&file);
    assert_eq!(got["rows"].as_u64().unwrap() as usize, rows);
    assert_eq!(got["polars_rows"].as_u64().unwrap() as usize, rows);
    assert_eq!(got["ids"], digest);
    assert_eq!(got["cents"].as_i64().unwrap(), cents);
    assert_eq!(
        got["dates"].as_array().unwrap().len(),
        3,
        "two days and the sessions running past midnight"
    );
}

#[test]
fn s3_lake_on_seaweedfs_imports_reads_back_and_compacts() {
    let endpoint = std::env::var("SHOPLAKE_TEST_S3_ENDPOINT").expect(
        "SHOPLAKE_TEST_S3_ENDPOINT is not set: run the tests through scripts/test.sh, which starts SeaweedFS",
    );
    let bucket =
        std::env::var("SHOPLAKE_TEST_S3_BUCKET").unwrap_or_else(|_| "shoplake-test".into());
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase()
        .replace('.', "");
    let lake = format!("s3://{bucket}/{prefix}");
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "testtesttest"),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shoplake"))
            .args(args)
            .envs(env)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let mut files = Vec::new();
    for i in 0..3 {
        let f = dir.path().join(format!("s{i}.csv"));
        assert!(
            shoplake(&[
                "generate",
                "--events",
                "5000",
                "--seed",
                &(40 + i).to_string(),
                "--out",
                f.to_str().unwrap()
            ])
            .status
            .success()
        );
        let o = run(&["import", f.to_str().unwrap(), "--lake", &lake]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        files.push(f);
    }
    let o = run(&["import", files[0].to_str().unwrap(), "--lake", &lake]);
    assert!(stdout(&o).contains("already imported"), "{}", stdout(&o));
    let o = run(&["compact", "--lake", &lake]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout(&o).contains("small files rewritten"),
        "{}",
        stdout(&o)
    );
    let o = run(&["catalog", "events", "--lake", &lake, "--format", "json"]);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();

    let all = dir.path().join("all.csv");
    let mut text = String::new();
    for (i, f) in files.iter().enumerate() {
        let body = std::fs::read_to_string(f).unwrap();
        text.push_str(if i == 0 {
            &body
        } else {
            body.split_once('\n').unwrap().1
        });
    }
    std::fs::write(&all, text).unwrap();
    let (rows, digest, cents) = expected(&all);
    assert_eq!(info["rows"].as_u64().unwrap() as usize, rows);
    let options = serde_json::json!({
        "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "testtesttest", "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    });
    let got = read_back(&format!("{lake}/events"), Some(&options.to_string()));
    assert_eq!(got["rows"].as_u64().unwrap() as usize, rows);
    assert_eq!(got["ids"], digest);
    assert_eq!(got["cents"].as_i64().unwrap(), cents);
}

#[test]
fn the_lake_root_comes_from_the_config_file_and_bad_files_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("from-config");
    let config = dir.path().join("shoplake.toml");
    std::fs::write(
        &config,
        format!("[lake]\nroot = {:?}\n", root.display().to_string()),
    )
    .unwrap();
    let s = sample();
    let o = shoplake(&[
        "import",
        s.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(root.join("events").join("_delta_log").is_dir());
    let o = shoplake(&["config", "check", config.to_str().unwrap()]);
    assert!(o.status.success());

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[lake]\nroot = \"gs://b/p\"\n[lake.s3]\nendpoint = \"localhost\"\n",
    )
    .unwrap();
    let o = shoplake(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("gs:// is not supported")
            && stdout(&o).contains("should start with http://"),
        "{}",
        stdout(&o)
    );
    std::fs::write(&bad, "[lake]\nroots = \"x\"\n").unwrap();
    let o = shoplake(&["config", "check", bad.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("unknown field `roots`"),
        "{}",
        stdout(&o)
    );
    let o = shoplake(&["catalog", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "a bad config stops the command");
}
