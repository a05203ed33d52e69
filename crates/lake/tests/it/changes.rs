//! What the log says changed between versions: added files with their rows; compaction no
//! change; removed rows, a missing commit or a vacuumed file a rewrite.

use shoplake_lake::{BotFlag, Changes, ImportSource, TableName};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_add_files_compaction_adds_no_rows_and_a_vacuumed_file_is_a_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let events = generated(12_000, 11, Some(2));
    let mut versions = Vec::new();
    let mut counts = Vec::new();
    for (i, chunk) in events.chunks(4_000).enumerate() {
        let p = write_csv(&dir.path().join(format!("part{i}.csv")), chunk, &[]);
        lake.import(vec![ImportSource::Path(p)])
            .with_validator(validator())
            .await
            .unwrap();
        versions.push(
            lake.latest_version(TableName::Events)
                .await
                .unwrap()
                .unwrap(),
        );
        counts.push(lake.table_info(TableName::Events).await.unwrap().rows);
    }
    // The rows the two later imports added (the generator's exact duplicates are dropped).
    let later = (counts[2] - counts[0]) as i64;
    assert!(later > 7_000, "{counts:?}");
    let first = versions[0];
    let last = *versions.last().unwrap();
    let Changes::Added(files) = lake.changes(TableName::Events, first, last).await.unwrap() else {
        panic!("imports only add rows");
    };
    let rows: i64 = files.iter().map(|f| f.rows.unwrap()).sum();
    assert_eq!(rows, later, "the two later imports' rows");
    assert!(files.iter().all(|f| f.version > first && f.version <= last));
    assert!(
        files.iter().all(|f| f.partition.contains_key("event_date")),
        "{files:?}"
    );
    assert_eq!(
        lake.changes(TableName::Events, last, last).await.unwrap(),
        Changes::Added(Vec::new())
    );
    assert!(matches!(
        lake.changes(TableName::Events, -1, last).await.unwrap(),
        Changes::Rewritten { .. }
    ));

    // Compaction moves rows between files: no rows change.
    lake.compact(TableName::Events).await.unwrap();
    let compacted = lake
        .latest_version(TableName::Events)
        .await
        .unwrap()
        .unwrap();
    assert!(compacted > last);
    assert_eq!(
        lake.changes(TableName::Events, last, compacted)
            .await
            .unwrap(),
        Changes::Added(Vec::new())
    );
    // The files added before it are still there to read until vacuum removes them.
    let again = lake
        .changes(TableName::Events, first, compacted)
        .await
        .unwrap();
    assert_eq!(again.added_rows(), Some(later));
    lake.vacuum(TableName::Events, std::time::Duration::ZERO)
        .await
        .unwrap();
    let Changes::Rewritten { reason } = lake
        .changes(TableName::Events, first, compacted)
        .await
        .unwrap()
    else {
        panic!("the added files are vacuumed");
    };
    assert!(reason.contains("is gone"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_flags_are_a_rewrite_and_added_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let flag = |user_id: i64, incident: &str| BotFlag {
        user_id,
        day: 18_000,
        rule: "user_burst".into(),
        incident_id: incident.into(),
        flagged_at: 1,
    };
    lake.add_bot_flags(&[flag(1, "a")]).await.unwrap();
    let v1 = lake
        .latest_version(TableName::BotFlags)
        .await
        .unwrap()
        .unwrap();
    lake.add_bot_flags(&[flag(2, "b")]).await.unwrap();
    let v2 = lake
        .latest_version(TableName::BotFlags)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        lake.changes(TableName::BotFlags, v1, v2)
            .await
            .unwrap()
            .added_rows(),
        Some(1)
    );
    lake.remove_bot_flags(&[1]).await.unwrap();
    let v3 = lake
        .latest_version(TableName::BotFlags)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        lake.changes(TableName::BotFlags, v2, v3).await.unwrap(),
        Changes::Rewritten { .. }
    ));
}
