//! Delivery in `serve`: compaction of `events` and the marts kept up to date.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_compacted_and_the_marts_kept_up_to_date() {
    let s = Running::start_with(
        Limits::default(),
        Vec::new(),
        DeliveryOptions {
            interval: Duration::from_millis(100),
            compact_interval: Some(Duration::ZERO),
            marts_interval: Some(Duration::ZERO),
            ..DeliveryOptions::default()
        },
    )
    .await;
    let all = events(3_000, 18);
    // Three deliveries, each a small file per date.
    for chunk in all.chunks(1_000) {
        let (status, _, _) = s
            .post(Some(SHOP), "application/x-ndjson", ndjson(chunk), &[])
            .await;
        assert_eq!(status, 200);
        let version = s.lake.table_info(TableName::Events).await.unwrap().version;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if s.lake.table_info(TableName::Events).await.unwrap().version != version {
                break;
            }
        }
    }
    // Compaction leaves one file per date; the marts catch up with the last delivery.
    let mut compacted = false;
    let mut fresh = false;
    for _ in 0..200 {
        let info = s.lake.table_info(TableName::Events).await.unwrap();
        compacted = info.files == info.partitions.len() as u64;
        let engine = shoplake_query::Engine::open(&s.lake).await.unwrap();
        fresh = shoplake_query::marts::fresh(&engine, chrono_tz::Tz::UTC)
            .await
            .unwrap();
        if compacted && fresh {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(compacted, "events was not compacted");
    assert!(fresh, "the marts did not catch up");
    let (lake, _dir) = s.stop().await;
    let rows = lake_rows(&lake).await;
    assert_eq!(rows.len(), ids(&all).len());
    let got: HashSet<String> = rows.into_iter().map(|r| r.0).collect();
    assert_eq!(got, ids(&all));
}
