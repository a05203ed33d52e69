//! Import: idempotent, deduplicated, quarantining, and the tables say what happened.

use arrow::array::{Array, Int64Array, StringArray};
use shoplake_lake::{ImportSource, TableName};

use crate::*;

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/rees46-2019-Oct-sample.csv")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_imports_once_and_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let first = lake
        .import(vec![ImportSource::Path(sample())])
        .with_validator(validator())
        .await
        .unwrap();
    assert_eq!(first[0].rows_accepted, 1000);
    assert!(!first[0].already_imported);
    let info = lake.table_info(TableName::Events).await.unwrap();
    assert_eq!(info.rows, 1000);
    assert_eq!(info.partitions.len(), 1);
    let version = info.version;

    let again = lake
        .import(vec![ImportSource::Path(sample())])
        .with_validator(validator())
        .await
        .unwrap();
    assert!(again[0].already_imported);
    assert_eq!(
        again[0].rows_accepted, 1000,
        "reports what the first import did"
    );
    let info = lake.table_info(TableName::Events).await.unwrap();
    assert_eq!(
        (info.rows, info.version),
        (1000, version),
        "a re-import is a no-op"
    );
    assert_eq!(lake.imports().await.unwrap().len(), 1);
    assert_eq!(lake_ids(&lake).await, expected_ids(&sample()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_overlaps_never_land_twice() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let events = generated(60_000, 4, None);
    // Overlapping exports: a = first 40 k, b = last 40 k (20 k shared), plus exact copies.
    let a = write_csv(&dir.path().join("a.csv"), &events[..40_000], &[]);
    let mut b_rows = events[20_000..].to_vec();
    b_rows.extend_from_slice(&events[50_000..50_100]);
    let b = write_csv(&dir.path().join("b.csv"), &b_rows, &[]);
    let all = write_csv(&dir.path().join("all.csv"), &events, &[]);

    let s = lake
        .import(vec![
            ImportSource::Path(a.clone()),
            ImportSource::Path(b.clone()),
        ])
        .with_validator(validator())
        .await
        .unwrap();
    assert_eq!(s[0].rows_read, 40_000);
    assert!(s[1].duplicates >= 20_100, "{:?}", s[1].duplicates);
    let expected = expected_ids(&all);
    assert_eq!(lake_ids(&lake).await, expected);
    let accepted: u64 = s.iter().map(|s| s.rows_accepted).sum();
    assert_eq!(accepted as usize, expected.len());
    for s in &s {
        assert_eq!(
            s.rows_read,
            s.rows_accepted + s.rows_rejected + s.duplicates
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsorted_input_over_many_days_is_deduplicated_exactly() {
    // Ten days shuffled, with exact copies scattered through.
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let mut events = generated(20_000, 8, Some(10));
    let copies: Vec<_> = events.iter().step_by(7).cloned().collect();
    events.extend(copies);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..events.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        events.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let path = write_csv(&dir.path().join("shuffled.csv"), &events, &[]);
    let s = lake
        .import(vec![ImportSource::Path(path.clone())])
        .with_validator(validator())
        .await
        .unwrap();
    let expected = expected_ids(&path);
    assert_eq!(s[0].rows_accepted as usize, expected.len());
    assert_eq!(lake_ids(&lake).await, expected);
    assert!(
        lake.table_info(TableName::Events)
            .await
            .unwrap()
            .partitions
            .len()
            >= 10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_evicted_from_memory_and_met_again_are_still_deduplicated() {
    // Concatenated exports: ten sorted days, then copies and new rows of early days again,
    // with an id budget of about two days: early dates are evicted, then reloaded from the
    // lake and from this import's own staged files.
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let events = generated(20_000, 9, Some(10));
    let day = shoplake_events::time::MICROS_PER_DAY;
    let start = events[0].event_time - events[0].event_time.rem_euclid(day);
    let early: Vec<_> = events
        .iter()
        .filter(|e| e.event_time < start + 2 * day)
        .cloned()
        .collect();
    // The lake already holds part of day 1.
    let pre = write_csv(&dir.path().join("pre.csv"), &early[..500], &[]);
    let pre = lake
        .import(vec![ImportSource::Path(pre)])
        .with_validator(validator())
        .await
        .unwrap();

    let mut rows = events.clone();
    rows.extend(early.iter().step_by(3).cloned());
    let mut extra = generated(2_000, 10, Some(2));
    rows.append(&mut extra);
    let path = write_csv(&dir.path().join("concat.csv"), &rows, &[]);
    let s = lake
        .import(vec![ImportSource::Path(path.clone())])
        .with_validator(validator())
        .with_dedupe_budget(4_000)
        .await
        .unwrap();
    let expected = expected_ids(&path);
    assert_eq!(lake_ids(&lake).await, expected);
    assert_eq!(
        (s[0].rows_accepted + pre[0].rows_accepted) as usize,
        expected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rows_are_quarantined_with_reasons_and_counts_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let events = generated(5_000, 2, None);
    let bad = [
        "2019-10-01 00:00:05 UTC,view,1,2,,b,abc,3,s",
        "2019-10-01 00:00:05 UTC,click,1,2,,b,1.00,3,s",
        "2019-10-01 00:00:05 UTC,view,1,2",
        "2019-10-01 00:00:05 UTC,view,1,2,,b,1.00,,s",
    ];
    let path = write_csv(&dir.path().join("mixed.csv"), &events, &bad);
    let s = lake
        .import(vec![ImportSource::Path(path.clone())])
        .with_validator(validator())
        .await
        .unwrap();
    let s = &s[0];
    assert_eq!(s.rows_rejected, 4);
    assert_eq!(s.rows_read, 5_004);
    assert_eq!(
        s.rows_read,
        s.rows_accepted + s.rows_rejected + s.duplicates
    );
    assert_eq!(lake_ids(&lake).await, expected_ids(&path));
    assert_eq!(s.profile.rejects_by_reason.values().sum::<u64>(), 4);

    let q = lake
        .read_table(
            TableName::Quarantine,
            &["line", "field", "reason", "raw", "source", "import_id"],
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    for b in &q {
        let line = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let field = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        let reason = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        let raw = b.column(3).as_any().downcast_ref::<StringArray>().unwrap();
        let import = b.column(5).as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            assert_eq!(import.value(i), s.import_id);
            got.push((
                line.value(i),
                field.is_valid(i).then(|| field.value(i).to_owned()),
                reason.value(i).to_owned(),
                raw.value(i).to_owned(),
            ));
        }
    }
    got.sort();
    let first_bad = 5_002; // header + 5,000 rows, then the bad ones
    assert_eq!(
        got,
        vec![
            (
                first_bad,
                Some("price".into()),
                "\"abc\" is not a decimal number".into(),
                bad[0].into()
            ),
            (
                first_bad + 1,
                Some("event_type".into()),
                "\"click\" is not one of view, cart, remove_from_cart, purchase".into(),
                bad[1].into()
            ),
            (
                first_bad + 2,
                None,
                "has 4 fields, the header has 9".into(),
                bad[2].into()
            ),
            (
                first_bad + 3,
                Some("user_id".into()),
                "is missing".into(),
                bad[3].into()
            ),
        ]
    );
    let imports = lake.imports().await.unwrap();
    assert_eq!(imports[0].rows_rejected, 4);
    assert_eq!(imports[0].profile, s.profile);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_import_leaves_the_tables_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    lake.import(vec![ImportSource::Path(sample())])
        .with_validator(validator())
        .await
        .unwrap();
    let before = lake.table_info(TableName::Events).await.unwrap();
    // A gzip file cut in half: rows are read, then the input fails.
    let events = generated(20_000, 5, None);
    let plain = write_csv(&dir.path().join("x.csv"), &events, &[]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::copy(&mut std::fs::File::open(&plain).unwrap(), &mut gz).unwrap();
    let mut bytes = gz.finish().unwrap();
    bytes.truncate(bytes.len() * 2 / 3);
    let cut = dir.path().join("cut.csv.gz");
    std::fs::write(&cut, bytes).unwrap();
    let err = lake
        .import(vec![ImportSource::Path(cut)])
        .with_validator(validator())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("gzip"), "{err}");
    let after = lake.table_info(TableName::Events).await.unwrap();
    assert_eq!((after.version, after.rows), (before.version, before.rows));
    assert_eq!(lake.imports().await.unwrap().len(), 1);
}
