//! Leases: held as long as the holder lives (renewed), lapsing soon after it stops.

use std::time::Duration;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_is_renewed_and_one_its_holder_left_lapses_after_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let a = lake(dir.path());
    let b = lake(dir.path());
    let ttl = Duration::from_millis(300);
    let held = a.try_lease("job", ttl).await.unwrap().unwrap();
    // Well past its time to live, the holder's renewals keep it.
    for _ in 0..4 {
        tokio::time::sleep(ttl).await;
        assert!(b.try_lease("job", ttl).await.unwrap().is_none());
    }
    // Given back: free at once.
    held.release().await.unwrap();
    let again = b.try_lease("job", ttl).await.unwrap().unwrap();
    // Left unreleased (what a killed holder leaves): taken over once its ttl has run out.
    drop(again);
    assert!(a.try_lease("job", ttl).await.unwrap().is_none());
    tokio::time::sleep(ttl * 2).await;
    let taken = a.try_lease("job", ttl).await.unwrap();
    assert!(taken.is_some());
    // Another name is another lease.
    assert!(b.try_lease("other", ttl).await.unwrap().is_some());
}
