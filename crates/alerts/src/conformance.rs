//! What every [`AlertStore`] must do, run by each backend's tests against an empty store.
//! The changes come from a real detector run over synthetic bursts.

// A test suite: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::sync::Arc;

use shoplake_detect::{Change, Detector, KeyType, Settings, Severity};
use shoplake_events::{Event, EventType, FixedClock, Price};

use crate::{AlertStore, Claimed, Cursor, List, Outgoing, Page, Result, Settled, StoredIncident};

const SEC: i64 = 1_000_000;
const T0: i64 = 1_569_888_000 * SEC;

fn event(t: i64, user: i64, product: i64) -> Event {
    Event {
        event_time: t,
        event_type: EventType::View,
        product_id: product,
        category_id: 1,
        category_code: None,
        brand: None,
        price: Price::from_cents(100),
        user_id: user,
        user_session: Some(format!("s{user}")),
        client_ip: None,
        user_agent: None,
        ingest_time: None,
    }
}

/// Two bursts: user 1 at T0 (escalates, then resolves after the cooldown), user 2 ten
/// minutes later (still open at the end).
fn changes() -> Vec<Change> {
    let mut d = Detector::new(Settings::default(), Arc::new(FixedClock(0)));
    for i in 0..12 {
        d.process(&event(T0 + i * SEC / 2, 1, 100 + i));
    }
    for i in 0..8 {
        d.process(&event(T0 + 600 * SEC + i * SEC / 2, 2, 200 + i));
    }
    d.finish();
    d.take_changes()
}

/// Incidents land, update in place, are found by id, key, time and severity; hand
/// acknowledgements and resolutions stick; lists add and remove.
pub async fn incidents_and_lists(store: &dyn AlertStore) -> Result<()> {
    let changes = changes();
    assert!(
        changes.iter().any(|c| matches!(c, Change::Escalated(_)))
            && changes.iter().any(|c| matches!(c, Change::Resolved(_))),
        "{changes:?}"
    );
    // Applied one by one and again as a whole: the same end state.
    for c in &changes {
        store.apply(std::slice::from_ref(c)).await?;
    }
    store.apply(&changes).await?;
    let first = changes[0].incident();
    let last_of_first = changes
        .iter()
        .rev()
        .find(|c| c.incident().id == first.id)
        .map(|c| c.incident().clone())
        .unwrap_or_else(|| first.clone());
    let got = store.get(&first.id).await?.expect("stored");
    assert_eq!(got.rule, "user_burst");
    assert_eq!((got.key_type.as_str(), got.key.as_str()), ("user_id", "1"));
    assert_eq!(got.severity, "high");
    assert_eq!(got.status, "resolved");
    assert_eq!(got.resolved_at, last_of_first.resolved_at);
    assert_eq!(got.peak, last_of_first.peak);
    assert_eq!(got.events as u64, last_of_first.events);
    assert_eq!(got.windows as u64, last_of_first.windows);
    assert!(store.get("no-such-id").await?.is_none());

    let second = found_by_key_time_and_severity(store).await?;
    hand_changes_stick(store, &changes, &second).await?;
    lists_add_and_remove(store).await
}

/// The second incident (open, of user 2) found by key, time range and severity.
async fn found_by_key_time_and_severity(store: &dyn AlertStore) -> Result<StoredIncident> {
    let by_key = store.by_key(KeyType::UserId, "2", 10).await?;
    assert_eq!(by_key.len(), 1);
    assert!(store.by_key(KeyType::UserId, "2", 0).await?.is_empty());
    let second = by_key[0].clone();
    assert_eq!(second.status, "open");
    assert_eq!(
        store.between(T0, T0 + 10 * SEC, &Page::all()).await?.len(),
        1
    );
    assert_eq!(
        store
            .between(T0, T0 + 3600 * SEC, &Page::all())
            .await?
            .len(),
        2
    );
    assert!(
        store
            .between(T0 + 3600 * SEC, T0 + 7200 * SEC, &Page::all())
            .await?
            .is_empty()
    );
    let open = store.open(Severity::Low, 1000).await?;
    assert_eq!(
        open.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [second.id.as_str()]
    );
    assert!(store.open(Severity::High, 1000).await?.is_empty());

    Ok(second)
}

/// Acknowledgements and resolutions by hand survive the detector's later updates.
async fn hand_changes_stick(
    store: &dyn AlertStore,
    changes: &[Change],
    second: &StoredIncident,
) -> Result<()> {
    // An acknowledgement survives the detector's next update of the incident.
    assert!(
        store
            .acknowledge(&second.id, "ops@shop", T0 + 700 * SEC)
            .await?
    );
    assert!(!store.acknowledge("no-such-id", "ops@shop", 0).await?);
    let update: Vec<Change> = changes
        .iter()
        .filter(|c| c.incident().id == second.id)
        .cloned()
        .collect();
    store.apply(&update).await?;
    let acked = store.get(&second.id).await?.expect("stored");
    assert_eq!(acked.status, "acknowledged");
    assert_eq!(acked.acknowledged_by.as_deref(), Some("ops@shop"));
    assert_eq!(acked.acknowledged_at, Some(T0 + 700 * SEC));
    assert_eq!(store.open(Severity::Low, 1000).await?.len(), 1);
    // Resolved by hand: it stays resolved.
    assert!(
        store
            .resolve(&second.id, "ops@shop", T0 + 800 * SEC)
            .await?
    );
    store.apply(&update).await?;
    let done = store.get(&second.id).await?.expect("stored");
    assert_eq!(done.status, "resolved");
    assert_eq!(done.resolved_by.as_deref(), Some("ops@shop"));
    assert_eq!(done.resolved_at, Some(T0 + 800 * SEC));
    assert!(store.open(Severity::Low, 1000).await?.is_empty());

    Ok(())
}

async fn lists_add_and_remove(store: &dyn AlertStore) -> Result<()> {
    store
        .set_listed(List::Allow, KeyType::UserId, "42", true, "ops", T0)
        .await?;
    store
        .set_listed(
            List::Deny,
            KeyType::ClientIp,
            "203.0.113.9",
            true,
            "ops",
            T0,
        )
        .await?;
    store
        .set_listed(List::Allow, KeyType::UserId, "42", true, "again", T0)
        .await?;
    let listed = store.listed().await?;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].list, List::Allow);
    assert_eq!(listed[0].added_by, "ops");
    store
        .set_listed(List::Allow, KeyType::UserId, "42", false, "ops", T0)
        .await?;
    assert_eq!(store.listed().await?.len(), 1);
    assert!(
        store
            .set_listed(List::Allow, KeyType::Global, "all", true, "ops", T0)
            .await
            .is_err()
    );
    Ok(())
}

/// Listings come in pages that together are the whole listing, oldest or newest first, from
/// any cursor; resolved incidents older than a time can be pruned, open ones never.
pub async fn paging_and_pruning(store: &dyn AlertStore) -> Result<()> {
    const T1: i64 = T0 + 30 * 86_400 * SEC;
    let mut d = Detector::new(Settings::default(), Arc::new(FixedClock(0)));
    for u in 0..25 {
        for i in 0..12 {
            d.process(&event(T1 + u * 60 * SEC + i * SEC / 2, 1000 + u, 100 + i));
        }
    }
    // The first twenty resolve after their cooldown; the last five are still open.
    d.tick(Some(T1 + 26 * 60 * SEC));
    store.apply(&d.take_changes()).await?;
    let range = (T1, T1 + 86_400 * SEC);
    let all = store.between(range.0, range.1, &Page::all()).await?;
    assert_eq!(all.len(), 25);
    for newest_first in [false, true] {
        let mut paged = Vec::new();
        let mut after: Option<Cursor> = None;
        loop {
            let page = Page {
                after: after.clone(),
                limit: 10,
                newest_first,
            };
            let got = store.between(range.0, range.1, &page).await?;
            assert!(got.len() <= 10);
            let Some(last) = got.last() else { break };
            after = Some(Cursor::after(last));
            let full = got.len() == 10;
            paged.extend(got);
            if !full {
                break;
            }
        }
        let mut want: Vec<&str> = all.iter().map(|i| i.id.as_str()).collect();
        if newest_first {
            want.reverse();
        }
        let got: Vec<&str> = paged.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(got, want, "newest first: {newest_first}");
    }
    let cursor = Cursor::after(&all[3]);
    assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
    assert_eq!(Cursor::decode("12.x;drop"), None);
    assert_eq!(store.open(Severity::Low, 3).await?.len(), 3);
    let resolved = all.iter().filter(|i| i.status == "resolved").count();
    assert!(resolved >= 15, "{resolved} resolved");
    let pruned = store.prune_resolved(T1 + 86_400 * SEC).await?;
    assert!(pruned >= resolved as u64, "{pruned} pruned");
    let left = store.between(range.0, range.1, &Page::all()).await?;
    assert_eq!(left.len(), 25 - resolved);
    assert!(left.iter().all(|i| i.status != "resolved"));
    Ok(())
}

fn notice(c: &Change, channel: &str) -> Outgoing {
    let i = c.incident();
    Outgoing {
        incident_id: i.id.clone(),
        kind: match c {
            Change::Opened(_) => "incident.opened",
            _ => "incident.escalated",
        }
        .to_owned(),
        severity: i.severity.as_str().to_owned(),
        channel: channel.to_owned(),
        subject: String::new(),
        body: format!("{{\"id\":\"{}\",\"peak\":{}}}", i.id, i.peak),
    }
}

/// The outbox: a notice is kept once however often its change is recorded; one owner at a
/// time claims it; retries come due later; an expired claim passes to another owner, whose
/// settling then wins; sent and given-up notices are not claimed again and are pruned.
// Long: one outbox's life, step by step, each step's state checked before the next.
pub async fn outbox(store: &dyn AlertStore) -> Result<()> {
    const T2: i64 = T0 + 60 * 86_400 * SEC;
    let changes: Vec<Change> = changes()
        .into_iter()
        .filter(|c| matches!(c, Change::Opened(_) | Change::Escalated(_)))
        .collect();
    assert!(changes.len() >= 3, "{changes:?}");
    let hook: Vec<Outgoing> = changes.iter().map(|c| notice(c, "hook")).collect();
    let mail = notice(&changes[0], "mail");
    store.record(&changes, &hook, T2).await?;
    // Recorded again (a replay; another process), with a different body: nothing new.
    let mut again = hook.clone();
    for n in &mut again {
        n.body = "{}".to_owned();
    }
    store.record(&changes, &again, T2 + SEC).await?;
    store.record(&[], std::slice::from_ref(&mail), T2).await?;
    assert_eq!(store.pending_notices("hook").await?, hook.len() as u64);
    assert_eq!(store.pending_notices("mail").await?, 1);

    // Not due before it was created; then claimed once, by one owner, with its first body.
    let early = store
        .claim_notices("hook", "a", T2 - 1, T2 + 10 * SEC, 100)
        .await?;
    assert!(early.is_empty(), "{early:?}");
    let a = store
        .claim_notices("hook", "a", T2, T2 + 10 * SEC, 2)
        .await?;
    assert_eq!(a.len(), 2);
    assert!(
        a.iter()
            .all(|c| c.attempts == 1 && hook.contains(&c.notice))
    );
    let rest = store
        .claim_notices("hook", "b", T2, T2 + 10 * SEC, 100)
        .await?;
    assert_eq!(rest.len(), hook.len() - 2);
    assert!(rest.iter().all(|c| !a.contains(c)));
    assert!(
        store
            .claim_notices("hook", "c", T2 + SEC, T2 + 10 * SEC, 100)
            .await?
            .is_empty()
    );

    // a: one sent, one to retry in a minute.
    assert!(
        store
            .settle_notice(&a[0].notice, "a", T2 + SEC, &Settled::Sent)
            .await?
    );
    let retry = Settled::Retry {
        due_at: T2 + 60 * SEC,
        error: "503".to_owned(),
    };
    assert!(
        store
            .settle_notice(&a[1].notice, "a", T2 + SEC, &retry)
            .await?
    );
    // Not somebody else's to settle.
    assert!(
        !store
            .settle_notice(&a[0].notice, "b", T2 + SEC, &Settled::Sent)
            .await?
    );
    // b's claims expire at T2 + 10 s: c takes them over, and b's late settling is refused.
    let taken = store
        .claim_notices("hook", "c", T2 + 11 * SEC, T2 + 20 * SEC, 100)
        .await?;
    let mut want: Vec<&Outgoing> = rest.iter().map(|c| &c.notice).collect();
    let mut got: Vec<&Outgoing> = taken.iter().map(|c| &c.notice).collect();
    want.sort_by_key(|n| (&n.incident_id, &n.kind));
    got.sort_by_key(|n| (&n.incident_id, &n.kind));
    assert_eq!(got, want);
    assert!(taken.iter().all(|c| c.attempts == 2));
    let gone = Settled::Failed {
        error: "404".to_owned(),
    };
    assert!(
        !store
            .settle_notice(&rest[0].notice, "b", T2 + 12 * SEC, &Settled::Sent)
            .await?
    );
    for c in &taken {
        assert!(
            store
                .settle_notice(&c.notice, "c", T2 + 12 * SEC, &gone)
                .await?
        );
    }
    // The retry comes due a minute on, with its attempt counted.
    assert!(
        store
            .claim_notices("hook", "d", T2 + 59 * SEC, T2 + 70 * SEC, 100)
            .await?
            .is_empty()
    );
    let due: Vec<Claimed> = store
        .claim_notices("hook", "d", T2 + 60 * SEC, T2 + 70 * SEC, 100)
        .await?;
    assert_eq!(due.len(), 1);
    assert_eq!((&due[0].notice, due[0].attempts), (&a[1].notice, 2));
    assert!(
        store
            .settle_notice(&due[0].notice, "d", T2 + 61 * SEC, &Settled::Sent)
            .await?
    );
    assert_eq!(store.pending_notices("hook").await?, 0);
    assert!(
        store
            .claim_notices("hook", "e", T2 + 3600 * SEC, T2 + 3700 * SEC, 100)
            .await?
            .is_empty()
    );
    // Channels are apart: mail's notice is still there, then pruned only once settled.
    assert_eq!(store.pending_notices("mail").await?, 1);
    store.prune_resolved(T2 + 86_400 * SEC).await?;
    assert_eq!(store.pending_notices("mail").await?, 1);
    let m = store.claim_notices("mail", "a", T2, T2 + SEC, 100).await?;
    assert_eq!(m.len(), 1);
    assert!(
        store
            .settle_notice(&m[0].notice, "a", T2, &Settled::Sent)
            .await?
    );
    store.prune_resolved(T2 + 86_400 * SEC).await?;
    // Pruned: the notice is gone, so recording it again puts it back.
    assert_eq!(store.pending_notices("mail").await?, 0);
    store
        .record(&[], std::slice::from_ref(&mail), T2 + 86_400 * SEC)
        .await?;
    assert_eq!(store.pending_notices("mail").await?, 1);
    Ok(())
}
