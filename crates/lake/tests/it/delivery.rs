//! Stream delivery: exactly once across repeats and restarts, deduplicated against imports.

use std::collections::{BTreeMap, HashSet};

use shoplake_lake::{Delivered, ImportSource};

use crate::*;

fn ids(events: &[Event]) -> HashSet<String> {
    events.iter().map(|e| e.event_id().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_land_once_resume_after_a_restart_and_skip_imported_events() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let events = generated(400, 5, Some(2));
    let mut d = lake.delivery("lake").await.unwrap();
    assert!(d.positions(2).await.unwrap().is_empty());

    let first = d
        .deliver(&events[..150], &BTreeMap::from([(0, 90), (1, 60)]))
        .await
        .unwrap();
    assert_eq!((first.written, first.duplicates), (150, 0));
    assert!(first.version.is_some());

    // The same batch again (a retry after a crash before the consumer learnt of the commit):
    // nothing written.
    let again = d
        .deliver(&events[..150], &BTreeMap::from([(0, 90), (1, 60)]))
        .await
        .unwrap();
    assert_eq!(again, Delivered::default());

    // A restart: the positions come from the lake.
    let mut d = lake.delivery("lake").await.unwrap();
    assert_eq!(
        d.positions(2).await.unwrap(),
        BTreeMap::from([(0, 90), (1, 60)])
    );
    // Another consumer has its own.
    let mut other = lake.delivery("audit").await.unwrap();
    assert!(other.positions(2).await.unwrap().is_empty());

    // Overlapping events (the log can hold an event twice: a producer's retry) are dropped.
    let second = d
        .deliver(&events[120..250], &BTreeMap::from([(0, 170), (1, 110)]))
        .await
        .unwrap();
    assert_eq!((second.written, second.duplicates), (100, 30));
    assert_eq!(lake_ids(&lake).await, ids(&events[..250]));

    // An import lands events in between; the delivery skips those it then brings again.
    let csv = write_csv(&dir.path().join("day.csv"), &events[200..320], &[]);
    let imported = lake
        .import(vec![ImportSource::Path(csv)])
        .with_validator(validator())
        .await
        .unwrap();
    assert_eq!(imported[0].duplicates, 50);
    let third = d
        .deliver(&events[300..400], &BTreeMap::from([(0, 230), (1, 150)]))
        .await
        .unwrap();
    assert_eq!((third.written, third.duplicates), (80, 20));
    assert_eq!(lake_ids(&lake).await, ids(&events));
    assert_eq!(
        d.positions(2).await.unwrap(),
        BTreeMap::from([(0, 230), (1, 150)])
    );

    assert!(lake.delivery("../x").await.is_err());
}
