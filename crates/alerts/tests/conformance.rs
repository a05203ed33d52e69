//! The alert store's conformance suite on SQLite (a temporary file) and on PostgreSQL (the
//! server scripts/test.sh starts).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use shoplake_alerts::{AlertStore, Outgoing, Result, SqlStore, conformance};

const SEC: i64 = 1_000_000;
const T0: i64 = 1_569_888_000 * SEC;

#[tokio::test]
async fn conformance_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("alerts.db").display());
    let store = SqlStore::open(&url).await.unwrap();
    conformance::incidents_and_lists(&store).await.unwrap();
    conformance::paging_and_pruning(&store).await.unwrap();
    conformance::outbox(&store).await.unwrap();
    outbox_claims_race(std::sync::Arc::new(store.clone()))
        .await
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    conformance::outbox(&store).await.unwrap();
    outbox_claims_race(std::sync::Arc::new(store))
        .await
        .unwrap();
}

/// Many owners claiming at once from one outbox each get different notices, together all.
async fn outbox_claims_race(store: Arc<dyn AlertStore>) -> Result<()> {
    const T3: i64 = T0 + 90 * 86_400 * SEC;
    let notices: Vec<Outgoing> = (0..200)
        .map(|i| Outgoing {
            incident_id: format!("{i:016x}"),
            kind: "incident.opened".to_owned(),
            severity: "high".to_owned(),
            channel: "race".to_owned(),
            subject: String::new(),
            body: i.to_string(),
        })
        .collect();
    store.record(&[], &notices, T3).await?;
    let mut tasks = Vec::new();
    for owner in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_notices("race", &format!("o{owner}"), T3, T3 + 60 * SEC, 7)
                    .await?;
                if got.is_empty() {
                    return Ok::<_, shoplake_alerts::Error>(mine);
                }
                mine.extend(got.into_iter().map(|c| c.notice.body));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a claiming task panicked")?);
    }
    all.sort_by_key(|b| b.parse::<u32>().expect("a body is a number"));
    let want: Vec<String> = (0..200).map(|i: u32| i.to_string()).collect();
    assert_eq!(all, want, "each notice claimed once");
    Ok(())
}
