//! Durable appends with group commit: 8 producers each appending batches of 500 events of
//! ~180 bytes (an NDJSON event's size) to a 4-partition log; every append returns only after
//! `fsync`. Reports events/s (`cargo bench -p shoplake-log --bench append`).

#![allow(clippy::unwrap_used, missing_docs)]

use divan::counter::ItemsCount;
use shoplake_log::{EmbeddedLog, EmbeddedOptions, EventLog, Record};

fn main() {
    divan::main();
}

const PRODUCERS: usize = 8;
const BATCH: usize = 500;
const BATCHES: usize = 20;

fn batch(producer: usize, round: usize) -> Vec<Record> {
    (0..BATCH)
        .map(|i| {
            let user = 512_000_000 + (producer * BATCH + i) as u64 % 5_000;
            Record {
                key: user.to_string().into_bytes(),
                value: format!(
                    "{{\"event_time\":\"2019-10-01 00:00:{:02} UTC\",\"event_type\":\"view\",\
                     \"product_id\":1004856,\"category_id\":2053013555631882655,\
                     \"category_code\":\"electronics.smartphone\",\"brand\":\"samsung\",\
                     \"price\":130.76,\"user_id\":{user},\"user_session\":\"{round}-{i}\"}}",
                    i % 60
                )
                .into_bytes(),
            }
        })
        .collect()
}

#[divan::bench(sample_count = 10)]
fn durable_append(bencher: divan::Bencher) {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(EmbeddedOptions {
        retention_bytes: Some(256 << 20),
        ..EmbeddedOptions::new(dir.path())
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let batches: Vec<Vec<Vec<Record>>> = (0..PRODUCERS)
        .map(|p| (0..BATCHES).map(|r| batch(p, r)).collect())
        .collect();
    bencher
        .counter(ItemsCount::new(PRODUCERS * BATCH * BATCHES))
        .with_inputs(|| batches.clone())
        .bench_local_values(|batches| {
            rt.block_on(async {
                let log = &log;
                futures::future::try_join_all(batches.into_iter().map(|mine| async move {
                    for b in mine {
                        log.append(b).await?;
                    }
                    Ok::<(), shoplake_log::Error>(())
                }))
                .await
                .unwrap();
            })
        });
}
