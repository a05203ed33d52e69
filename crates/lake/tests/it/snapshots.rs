//! The snapshots a lake handle keeps: later loads see every commit, whoever wrote it; a pinned
//! older version stays exact; a table whose first commits expired after a checkpoint (as
//! Delta's log cleanup leaves it) still opens and says its version.

use shoplake_lake::{ImportSource, TableName};

use crate::*;

async fn import_chunk(lake: &Lake, dir: &Path, i: usize, events: &[Event]) {
    let p = write_csv(&dir.join(format!("part{i}.csv")), events, &[]);
    lake.import(vec![ImportSource::Path(p)])
        .with_validator(validator())
        .await
        .unwrap();
}

async fn rows_at(lake: &Lake, version: i64) -> usize {
    let t = lake
        .table_at(TableName::Events, version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.version(), Some(version as u64));
    lake.read_table_at(TableName::Events, version, &["event_id"])
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_snapshots_see_other_writers_and_pinned_versions_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let reader = lake(dir.path());
    let writer = lake(dir.path());
    assert_eq!(
        reader.latest_version(TableName::Events).await.unwrap(),
        None
    );
    let events = generated(9_000, 21, Some(2));

    import_chunk(&writer, dir.path(), 0, &events[..3_000]).await;
    let first = reader
        .latest_version(TableName::Events)
        .await
        .unwrap()
        .unwrap();
    let first_ids = lake_ids(&reader).await;
    let first_rows = rows_at(&reader, first).await;
    assert_eq!(first_rows, first_ids.len());

    // Another handle (another process, as far as this one knows) commits twice: the reader's
    // kept snapshot is brought up to date, not served stale.
    import_chunk(&writer, dir.path(), 1, &events[3_000..6_000]).await;
    import_chunk(&writer, dir.path(), 2, &events[6_000..]).await;
    let last = reader
        .latest_version(TableName::Events)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Some(last),
        lake(dir.path())
            .latest_version(TableName::Events)
            .await
            .unwrap()
    );
    assert!(last > first);
    let all = lake_ids(&reader).await;
    assert_eq!(all, lake_ids(&writer).await);
    assert!(all.len() > first_ids.len() + 5_000, "{}", all.len());
    let t = reader.table(TableName::Events).await.unwrap().unwrap();
    assert_eq!(t.version(), Some(last as u64));

    // An older version, asked for after the kept snapshot moved on, is exactly that version.
    assert_eq!(rows_at(&reader, first).await, first_rows);
    assert_eq!(rows_at(&reader, last).await, all.len());
    // And the kept snapshot is still the newest one.
    assert_eq!(
        reader.latest_version(TableName::Events).await.unwrap(),
        Some(last)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_whose_first_commits_expired_after_a_checkpoint_opens() {
    let dir = tempfile::tempdir().unwrap();
    let lake_ = lake(dir.path());
    let events = generated(8_000, 22, Some(2));
    for (i, chunk) in events.chunks(2_000).enumerate() {
        import_chunk(&lake_, dir.path(), i, chunk).await;
    }
    let ids = lake_ids(&lake_).await;
    let table = lake_.table(TableName::Events).await.unwrap().unwrap();
    let checkpointed = table.version().unwrap();
    assert!(checkpointed >= 3, "{checkpointed}");
    deltalake::checkpoints::create_checkpoint(&table, None)
        .await
        .unwrap();

    // What Delta's expired-log cleanup leaves: the checkpoint and the commits from it on.
    let log = lake_
        .table_url(TableName::Events)
        .unwrap()
        .to_file_path()
        .unwrap()
        .join("_delta_log");
    let mut removed = 0;
    for v in 0..checkpointed {
        std::fs::remove_file(log.join(format!("{v:020}.json"))).unwrap();
        removed += 1;
    }
    assert!(removed >= 3);

    // A process started now (nothing kept) says the version and reads every row.
    let fresh = lake(dir.path());
    assert_eq!(
        fresh.latest_version(TableName::Events).await.unwrap(),
        Some(checkpointed as i64)
    );
    assert_eq!(lake_ids(&fresh).await, ids);

    // Commits after the cleanup reach both the fresh handle and the one that kept a snapshot.
    let more = generated(2_000, 23, Some(2));
    import_chunk(&fresh, dir.path(), 9, &more).await;
    let now = fresh.latest_version(TableName::Events).await.unwrap();
    assert!(now > Some(checkpointed as i64), "{now:?}");
    assert_eq!(lake_.latest_version(TableName::Events).await.unwrap(), now);
    assert_eq!(lake_ids(&lake_).await, lake_ids(&fresh).await);
    assert!(lake_ids(&fresh).await.len() > ids.len());
}
