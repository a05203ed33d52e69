//! What every [`EventLog`] backend must do, as checks a backend's tests run against a fresh,
//! empty log (`reopen` opens the same log again, after the previous handle is dropped).

use std::collections::{BTreeMap, HashMap};

use crate::{EventLog, Limit, Record, Result};

fn record(user: u64, n: u64) -> Record {
    Record {
        key: user.to_string().into_bytes(),
        value: format!("{{\"user\":{user},\"n\":{n}}}").into_bytes(),
    }
}

/// Every record of every partition from the start.
async fn read_all(log: &dyn EventLog) -> Result<Vec<(u32, crate::Stored)>> {
    let mut out = Vec::new();
    for p in 0..log.partitions() {
        let mut from = log.start(p).await?;
        loop {
            let batch = log.read(p, from, Limit::records(1000)).await?;
            let Some(last) = batch.last() else { break };
            from = last.offset + 1;
            out.extend(batch.into_iter().map(|r| (p, r)));
        }
    }
    Ok(out)
}

/// Appends return positions in order, each key in one partition with rising offsets, and
/// reading returns exactly what was appended; reads from any offset, past the end, and with
/// small limits behave.
pub async fn appends_and_reads(log: &dyn EventLog) -> Result<()> {
    let mut appended: HashMap<(u32, u64), Record> = HashMap::new();
    for round in 0..5u64 {
        let records: Vec<Record> = (0..200).map(|i| record(i % 37, round * 200 + i)).collect();
        let positions = log.append(records.clone()).await?;
        assert_eq!(positions.len(), records.len());
        for (pos, rec) in positions.iter().zip(&records) {
            assert_eq!(pos.partition, log.partition_for(&rec.key));
            assert!(
                appended
                    .insert((pos.partition, pos.offset), rec.clone())
                    .is_none()
            );
        }
    }
    let all = read_all(log).await?;
    assert_eq!(all.len(), appended.len());
    // Per key, the order of appending.
    let mut last_n: HashMap<Vec<u8>, u64> = HashMap::new();
    for (p, r) in &all {
        let want = &appended[&(*p, r.offset)];
        assert_eq!((&r.key, &r.value), (&want.key, &want.value));
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap_or_default();
        let n = v["n"].as_u64().unwrap_or_default();
        if let Some(prev) = last_n.insert(r.key.clone(), n) {
            assert!(prev < n, "key order kept");
        }
    }
    for p in 0..log.partitions() {
        let (start, end) = (log.start(p).await?, log.end(p).await?);
        assert!(
            log.read(p, end, Limit::records(10)).await?.is_empty(),
            "nothing past the end"
        );
        assert!(log.read(p, end + 100, Limit::records(10)).await?.is_empty());
        if end > start + 3 {
            let mid = log.read(p, start + 2, Limit::records(2)).await?;
            let offsets: Vec<u64> = mid.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, vec![start + 2, start + 3]);
            // A byte limit stops at the record that reaches it, and never returns nothing.
            let size = mid[0].size();
            let one = log.read(p, start + 2, Limit::new(10, 1)).await?;
            assert_eq!(
                one.len(),
                1,
                "the first record even when larger than the limit"
            );
            let two = log.read(p, start + 2, Limit::new(10, size + 1)).await?;
            assert_eq!(
                two.len(),
                2,
                "the record that reaches the limit is the last"
            );
        }
    }
    assert!(log.append(Vec::new()).await?.is_empty());
    Ok(())
}

/// Appends from many tasks at once all land, once each.
pub async fn concurrent_appends(log: &dyn EventLog) -> Result<()> {
    let before: u64 = ends(log).await?.values().sum();
    let tasks = (0..8u64).map(|t| async move {
        let mut n = 0;
        for round in 0..10u64 {
            let records: Vec<Record> = (0..50).map(|i| record(t * 1000 + i, round)).collect();
            n += log.append(records).await?.len();
        }
        Ok::<usize, crate::Error>(n)
    });
    let counts = futures::future::try_join_all(tasks).await?;
    assert_eq!(counts.iter().sum::<usize>(), 8 * 10 * 50);
    let after: u64 = ends(log).await?.values().sum();
    assert_eq!(after - before, 8 * 10 * 50);
    Ok(())
}

async fn ends(log: &dyn EventLog) -> Result<BTreeMap<u32, u64>> {
    let mut out = BTreeMap::new();
    for p in 0..log.partitions() {
        out.insert(p, log.end(p).await?);
    }
    Ok(out)
}

/// Consumers keep their own positions; commits merge; bad names are refused.
pub async fn consumer_positions(log: &dyn EventLog) -> Result<()> {
    assert!(log.committed("lake").await?.is_empty());
    log.commit("lake", &BTreeMap::from([(0, 5)])).await?;
    log.commit("lake", &BTreeMap::from([(1, 7)])).await?;
    log.commit("detector", &BTreeMap::from([(0, 1)])).await?;
    let lake = log.committed("lake").await?;
    assert_eq!(lake.get(&0), Some(&5));
    if log.partitions() > 1 {
        assert_eq!(lake.get(&1), Some(&7));
    }
    assert_eq!(log.committed("detector").await?.get(&0), Some(&1));
    log.commit("lake", &BTreeMap::from([(0, 9)])).await?;
    assert_eq!(log.committed("lake").await?.get(&0), Some(&9));
    for bad in ["", "../etc", "a/b", ".hidden"] {
        assert!(log.commit(bad, &BTreeMap::new()).await.is_err(), "{bad:?}");
    }
    Ok(())
}

/// After reopening: every acknowledged record and every committed position is there, and
/// offsets continue.
pub async fn durable_across_reopen(
    log: Box<dyn EventLog>,
    reopen: impl Fn() -> Result<Box<dyn EventLog>>,
) -> Result<()> {
    let positions = log
        .append((0..300).map(|i| record(i % 11, i)).collect())
        .await?;
    log.commit("lake", &BTreeMap::from([(0, 3)])).await?;
    let before = read_all(log.as_ref()).await?;
    drop(log);
    let log = reopen()?;
    let after = read_all(log.as_ref()).await?;
    assert_eq!(before, after);
    assert_eq!(log.committed("lake").await?.get(&0), Some(&3));
    let more = log.append(vec![record(1, 1000)]).await?;
    let p = more[0].partition;
    let last_before = positions
        .iter()
        .filter(|x| x.partition == p)
        .map(|x| x.offset)
        .max();
    assert_eq!(Some(more[0].offset), last_before.map(|o| o + 1));
    Ok(())
}

/// A companion log is a log of its own: what is appended to it is read back from it, never
/// from the log beside it, and it keeps the partition count it was made with.
pub async fn companions(log: &dyn EventLog) -> Result<()> {
    let before = ends(log).await?;
    let blocks = log.companion("blocks", 1).await?;
    assert_eq!(blocks.partitions(), 1);
    let at = blocks.append(vec![record(1, 1), record(2, 2)]).await?;
    assert!(at.iter().all(|p| p.partition == 0));
    let got = read_all(blocks.as_ref()).await?;
    assert_eq!(got.len(), 2);
    assert_eq!(ends(log).await?, before, "the log beside it is untouched");
    blocks.commit("reader", &BTreeMap::from([(0, 1)])).await?;
    assert_eq!(blocks.committed("reader").await?, BTreeMap::from([(0, 1)]));
    drop(blocks);
    // Opened again (as another process would): the same records.
    let again = log.companion("blocks", 1).await?;
    assert_eq!(read_all(again.as_ref()).await?.len(), 2);
    assert!(log.companion("../escape", 1).await.is_err());
    Ok(())
}
