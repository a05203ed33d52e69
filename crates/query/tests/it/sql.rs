//! SQL: tables registered, functions, read-only, output formats, time limit.

use std::time::Duration;

use shoplake_query::output::{Format, write};
use shoplake_query::{Engine, Error};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_the_lake_and_refuses_changes() {
    let dir = tempfile::tempdir().unwrap();
    let events = distinct(&dataset());
    let lake = lake_with(dir.path(), &events).await;
    let engine = Engine::open(&lake).await.unwrap();

    let out = engine
        .query("SELECT COUNT(*) AS n, COUNT(DISTINCT user_id) AS users FROM events")
        .await
        .unwrap();
    let mut json = Vec::new();
    write(&out, Format::Json, &mut json).unwrap();
    let users: HashSet<i64> = events.iter().map(|e| e.user_id).collect();
    assert_eq!(
        String::from_utf8(json).unwrap().trim(),
        format!("[{{\"n\":{},\"users\":{}}}]", events.len(), users.len())
    );

    // The report functions are there.
    let out = engine
        .query(
            "SELECT category_level('appliances.kitchen.washer', 2) AS c,
                    CAST(local_time(TIMESTAMP '2019-10-27T00:30:00Z', 'Europe/Berlin') AS VARCHAR) AS t",
        )
        .await
        .unwrap();
    let mut csv = Vec::new();
    write(&out, Format::Csv, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert!(
        csv.contains("appliances.kitchen,2019-10-27T02:30:00"),
        "{csv}"
    );

    // The other tables are registered too.
    let out = engine
        .query("SELECT rows_accepted FROM imports")
        .await
        .unwrap();
    assert_eq!(out.rows(), 1);
    let out = engine.query("SELECT * FROM quarantine").await.unwrap();
    assert_eq!(out.rows(), 0);
    let mut table = Vec::new();
    write(&out, Format::Table, &mut table).unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(
        table.contains("reason") && table.contains("0 rows"),
        "{table}"
    );

    for refused in [
        "DROP TABLE events",
        "INSERT INTO events SELECT * FROM events",
        "COPY (SELECT * FROM events) TO '/tmp/shoplake-copy-test.parquet'",
        "CREATE TABLE t AS SELECT 1",
    ] {
        match engine.query(refused).await {
            Err(Error::ReadOnly(m)) => assert!(m.contains("read-only"), "{m}"),
            other => panic!("{refused}: {other:?}"),
        }
    }
    assert!(!std::path::Path::new("/tmp/shoplake-copy-test.parquet").exists());

    // A bad query says what is wrong.
    let e = engine.query("SELECT nope FROM events").await.unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");

    // Parquet output reads back.
    let out = engine
        .query("SELECT user_id FROM events LIMIT 5")
        .await
        .unwrap();
    let path = dir.path().join("out.parquet");
    write(&out, Format::Parquet, std::fs::File::create(&path).unwrap()).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&path).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_lake_answers_and_a_slow_query_stops() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&lake(dir.path())).await.unwrap();
    let out = engine
        .query("SELECT COUNT(*) AS n FROM events")
        .await
        .unwrap();
    assert_eq!(out.rows(), 1);

    let engine = engine.with_timeout(Duration::from_millis(200));
    let slow = "SELECT COUNT(*) FROM (SELECT a.v * b.v AS x FROM generate_series(1, 20000) a(v) \
                CROSS JOIN generate_series(1, 20000) b(v)) WHERE x % 7 = 3";
    match engine.query(slow).await {
        Err(Error::Timeout(d)) => assert_eq!(d, Duration::from_millis(200)),
        other => panic!("{other:?}"),
    }
}
