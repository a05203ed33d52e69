//! Golden cases: `tests/golden/<case>/events.jsonl` in (and `detect.toml` beside it when the
//! case needs settings), `incidents.jsonl` out: every incident change in order, then the
//! engine's counters. `SHOPLAKE_BLESS=1` rewrites the expected files from the actual output
//! (review the diff before committing it).

use std::path::{Path, PathBuf};

use shoplake_detect::DetectConfig;
use shoplake_events::{JsonDecoder, Row, Validator};

use crate::detector;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("events.jsonl").exists())
        .collect();
    out.sort();
    out
}

fn actual(case: &Path) -> String {
    let config: DetectConfig = match std::fs::read_to_string(case.join("detect.toml")) {
        Ok(text) => toml::from_str(&text).unwrap(),
        Err(_) => DetectConfig::default(),
    };
    let settings = config.settings().unwrap();
    let input = std::fs::read(case.join("events.jsonl")).unwrap();
    let mut d = detector(settings);
    for row in JsonDecoder::new(&input[..], Validator::default()) {
        match row.unwrap() {
            Row::Event(e) => d.process(&e),
            Row::Reject(r) => panic!("{}: {r}", case.display()),
        }
    }
    d.finish();
    let mut out = String::new();
    for c in d.take_changes() {
        out.push_str(&serde_json::to_string(&c).unwrap());
        out.push('\n');
    }
    out.push_str(&serde_json::to_string(&serde_json::json!({ "stats": d.stats() })).unwrap());
    out.push('\n');
    out
}

#[test]
fn golden_cases() {
    let bless = std::env::var_os("SHOPLAKE_BLESS").is_some();
    let cases = cases();
    assert!(cases.len() >= 10, "golden cases missing: {cases:?}");
    let mut failed = Vec::new();
    for case in &cases {
        let got = actual(case);
        let path = case.join("incidents.jsonl");
        if bless {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            failed.push(format!(
                "{}:\n--- expected\n{want}--- actual\n{got}",
                case.display()
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
