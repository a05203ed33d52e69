//! Compaction and vacuum keep every row and shrink the file count.

use shoplake_lake::{ImportSource, TableName};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_bin_packs_small_files_and_vacuum_removes_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let events = generated(30_000, 6, None);
    for (i, chunk) in events.chunks(3_000).enumerate() {
        let p = write_csv(&dir.path().join(format!("part{i}.csv")), chunk, &[]);
        lake.import(vec![ImportSource::Path(p)])
            .with_validator(validator())
            .await
            .unwrap();
    }
    let ids = lake_ids(&lake).await;
    let before = lake.table_info(TableName::Events).await.unwrap();
    assert!(before.files >= 10, "{}", before.files);

    let s = lake.compact(TableName::Events).await.unwrap();
    assert!(s.version.is_some());
    let after = lake.table_info(TableName::Events).await.unwrap();
    assert_eq!(after.rows, before.rows);
    assert!(
        after.files < before.files / 3,
        "{} → {}",
        before.files,
        after.files
    );
    assert_eq!(lake_ids(&lake).await, ids);
    assert_eq!(
        after.last_commit.unwrap().operation.as_deref(),
        Some("OPTIMIZE")
    );

    let again = lake.compact(TableName::Events).await.unwrap();
    assert_eq!(again.version, None, "nothing left to compact");

    let dry = lake
        .vacuum(TableName::Events, std::time::Duration::ZERO)
        .with_dry_run(true)
        .await
        .unwrap();
    assert!(dry.files_deleted >= before.files - after.files);
    let v = lake
        .vacuum(TableName::Events, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(v.files_deleted, dry.files_deleted);
    assert_eq!(lake_ids(&lake).await, ids);
}
