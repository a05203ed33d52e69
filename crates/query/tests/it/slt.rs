//! SQL behaviour in sqllogictest files (`tests/slt/*.slt`, the format DataFusion's own SQL
//! tests use): the read-only guard and the report functions, against a small lake of six
//! events.

use std::sync::Arc;
use std::time::Duration;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use shoplake_events::{Event, EventType};
use shoplake_query::Engine;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

use crate::{START, lake_with};

/// What a statement failed with, as the engine says it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

/// The engine as sqllogictest drives it: every statement through [`Engine::query`], the
/// SQL endpoints' path (the read-only guard first).
struct Lakehouse(Arc<Engine>);

#[async_trait::async_trait]
impl AsyncDB for Lakehouse {
    type Error = Failed;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Failed> {
        let out = self.0.query(sql).await.map_err(|e| Failed(e.to_string()))?;
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &out.batches {
            let columns = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Failed(e.to_string()))?;
            for i in 0..batch.num_rows() {
                rows.push(columns.iter().map(|c| c.value(i).to_string()).collect());
            }
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; out.schema.fields().len()],
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// Six events of two users over the night Europe/Berlin leaves daylight saving time.
fn events() -> Vec<Event> {
    let hour = crate::HOUR;
    let at = |h: i64, kind, product, brand: Option<&str>, cents, user| {
        crate::event(
            START + 24 * hour + h * hour,
            kind,
            product,
            brand,
            cents,
            user,
        )
    };
    let mut uncategorised = at(3, EventType::View, 3, None, 500, 2);
    uncategorised.category_code = None;
    vec![
        at(0, EventType::View, 1, Some("acme"), 19_999, 1),
        at(1, EventType::Cart, 1, Some("acme"), 19_999, 1),
        at(2, EventType::Purchase, 1, Some("acme"), 19_999, 1),
        at(2, EventType::View, 2, Some("bolt"), 5_000, 2),
        uncategorised,
        at(23, EventType::View, 2, Some("bolt"), 5_000, 2),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_behaves_as_the_slt_files_say() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with(dir.path(), &events()).await;
    let engine = Arc::new(Engine::open(&lake).await.unwrap());
    let files = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut ran = 0;
    for entry in std::fs::read_dir(&files).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "slt") {
            continue;
        }
        let engine = engine.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let engine = engine.clone();
            async move { Ok(Lakehouse(engine)) }
        });
        if let Err(e) = runner.run_file_async(&path).await {
            panic!("{}: {e}", path.display());
        }
        ran += 1;
    }
    assert!(
        ran >= 2,
        "the .slt files were not found in {}",
        files.display()
    );
}
