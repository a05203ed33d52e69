//! `shoplake check` on the real sample and on malformed files.

use std::io::Write;

use crate::{sample, shoplake, stdout};

#[test]
fn real_sample_has_zero_rejects() {
    let path = sample();
    let o = shoplake(&["check", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("1000 rows, 1000 valid, 0 rejected"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn malformed_rows_get_one_precise_reject_each_and_good_rows_are_kept() {
    let sample = std::fs::read_to_string(sample()).unwrap();
    let mut lines = sample.lines();
    let header = lines.next().unwrap();
    let good: Vec<&str> = lines.take(5).collect();
    let bad = [
        "2019-10-01 00:00:05 UTC,view,1,2,,b,abc,3,s",
        "2019-10-01 00:00:05 UTC,click,1,2,,b,1.00,3,s",
        "2019-10-01 00:00:05 UTC,view,1,2,,b",
        "1999-10-01 00:00:05 UTC,view,1,2,,b,1.00,3,s",
        "2019-10-01 00:00:05 UTC,view,x1,2,,b,1.00,3,s",
        "2019-10-01 00:00:05 UTC,view,1,2,,b,-3.00,3,s",
        "2019-10-01 00:00:05 UTC,cart,1,2,,b,1.00,,s",
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.csv");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "{header}").unwrap();
    for (g, b) in good.iter().zip(bad.iter()) {
        writeln!(f, "{g}\n{b}").unwrap();
    }
    for b in &bad[good.len()..] {
        writeln!(f, "{b}").unwrap();
    }
    drop(f);

    let o = shoplake(&["check", "--format", "json", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "rejects make the exit status 1");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["valid"], 5);
    assert_eq!(report["rejected"], 7);
    let rejects = report["files"][0]["rejects"].as_array().unwrap();
    let got: Vec<(u64, String, String)> = rejects
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["field"].as_str().unwrap_or("").to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        (3, "price", "\"abc\" is not a decimal number"),
        (
            5,
            "event_type",
            "\"click\" is not one of view, cart, remove_from_cart, purchase",
        ),
        (7, "", "has 6 fields, the header has 9"),
        (
            9,
            "event_time",
            "\"1999-10-01 00:00:05 UTC\" is before 2000-01-01",
        ),
        (11, "product_id", "\"x1\" is not an integer"),
        (12, "price", "\"-3.00\" is negative"),
        (13, "user_id", "is missing"),
    ];
    for ((line, field, reason), (el, ef, er)) in got.iter().zip(expected) {
        assert_eq!((*line, field.as_str(), reason.as_str()), (el, ef, er));
    }
    assert_eq!(rejects[0]["raw"], bad[0]);

    // The text form shows the line and the reason.
    let o = shoplake(&["check", path.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("line 3: price: \"abc\" is not a decimal number"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn unreadable_inputs_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let no_header = dir.path().join("bad.csv");
    std::fs::write(&no_header, "a,b,c\n1,2,3\n").unwrap();
    let o = shoplake(&["check", no_header.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).contains("missing column(s) event_time"),
        "{}",
        stdout(&o)
    );

    let bad_gzip = dir.path().join("bad.csv.gz");
    std::fs::write(&bad_gzip, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]).unwrap();
    let o = shoplake(&["check", bad_gzip.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).contains("gzip"), "{}", stdout(&o));

    let o = shoplake(&["check", "/nonexistent/file.csv"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn json_files_are_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    std::fs::write(
        &path,
        "{\"event_time\":\"2019-10-01 00:00:04 UTC\",\"event_type\":\"view\",\"product_id\":1,\"category_id\":2,\"price\":\"1.00\",\"user_id\":3,\"user_session\":\"s\",\"brand\":null,\"category_code\":null}\n{\"event_type\":\"view\"}\n",
    )
    .unwrap();
    let o = shoplake(&["check", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("2 rows, 1 valid, 1 rejected"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("line 2: event_time: is missing"),
        "{}",
        stdout(&o)
    );
}
