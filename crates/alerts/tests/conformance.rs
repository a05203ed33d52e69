//! The alert store's conformance suite on SQLite (a temporary file) and on PostgreSQL (the
//! server scripts/test.sh starts).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use shoplake_alerts::{SqlStore, conformance};

#[tokio::test]
async fn conformance_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("alerts.db").display());
    let store = SqlStore::open(&url).await.unwrap();
    conformance::incidents_and_lists(&store).await.unwrap();
    conformance::paging_and_pruning(&store).await.unwrap();
    // Reopened: everything is still there.
    drop(store);
    let store = SqlStore::open(&url).await.unwrap();
    assert_eq!(
        shoplake_alerts::AlertStore::listed(&store)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn conformance_postgres() {
    let base = std::env::var("SHOPLAKE_TEST_POSTGRES").expect(
        "SHOPLAKE_TEST_POSTGRES is not set: run the tests through scripts/test.sh, which starts PostgreSQL",
    );
    // A database of its own.
    let name = format!(
        "alerts_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let store = SqlStore::open(&format!("{base}/{name}")).await.unwrap();
    conformance::incidents_and_lists(&store).await.unwrap();
    conformance::paging_and_pruning(&store).await.unwrap();
}
