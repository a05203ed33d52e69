//! `shoplake generate`: deterministic bytes, gzip, ground truth, and clean failures.

use crate::{shoplake, stdout};

#[test]
fn same_seed_gives_identical_bytes_and_the_output_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv.gz");
    for out in [&a, &b] {
        let o = shoplake(&[
            "generate",
            "--events",
            "200000",
            "--seed",
            "7",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let plain = std::fs::read(&a).unwrap();
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&b).unwrap()),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(
        plain, unzipped,
        "same seed, same bytes, whatever the compression"
    );
    assert_eq!(plain.iter().filter(|&&c| c == b'\n').count(), 200_001);

    let o = shoplake(&["check", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("200000 rows, 200000 valid, 0 rejected"));
}

#[test]
fn truth_lists_every_injected_actor() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("attacks.csv");
    let truth = dir.path().join("truth.jsonl");
    let o = shoplake(&[
        "generate",
        "--events",
        "300000",
        "--days",
        "1",
        "--network-fields",
        "--attacks",
        "default",
        "--truth",
        truth.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&truth)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 14, "the default mix injects 14 actors a day");
    for l in &lines {
        assert!(l["kind"].is_string() && l["start"].is_string() && l["end"].is_string());
        assert!(l["events"].as_u64().unwrap() > 0);
    }
    let csv = std::fs::read_to_string(&out).unwrap();
    assert!(csv.starts_with("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session,client_ip,user_agent\n"));
}

#[test]
fn bad_options_are_refused_with_a_reason() {
    let o = shoplake(&["generate", "--days", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--days must be at least 1"));
    let o = shoplake(&["generate", "--attacks", "laser=1"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown attack kind"));
    let o = shoplake(&["generate", "--start", "2019-02-30"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn stdout_can_be_cut_short() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shoplake"))
        .args(["generate", "--events", "2000000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut head = [0u8; 4096];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut head).unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "a closed pipe ends generation quietly");
}
