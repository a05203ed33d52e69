//! The detector's state stays bounded and its time cannot be pushed ahead by one event:
//! keys past a rule's cap evict the least recently seen, the duplicate-id set has a cap, and
//! an event stamped far past its arrival moves the watermark no further than the allowed skew.

use shoplake_detect::Settings;
use shoplake_events::{Event, EventType, Price};

use crate::detector;

const T0: i64 = 1_569_888_000_000_000;

fn view(user: i64, product: i64, t: i64) -> Event {
    Event {
        event_time: t,
        event_type: EventType::View,
        product_id: product,
        category_id: 1,
        category_code: None,
        brand: None,
        price: Price::from_cents(100),
        user_id: user,
        user_session: Some(format!("s-{user}")),
        client_ip: None,
        user_agent: None,
        ingest_time: None,
    }
}

#[test]
fn keys_past_the_cap_evict_the_least_recently_seen() {
    let settings = Settings {
        max_keys: 3,
        ..Settings::default()
    };
    let mut d = detector(settings);
    // Three quiet users fill the cap, then a bursting one arrives: it is tracked (a quiet
    // user is forgotten for it) and fires as it would without the cap.
    for (i, user) in [1, 2, 3].into_iter().enumerate() {
        d.process(&view(user, 10 + i as i64, T0 + i as i64));
    }
    for k in 0..12 {
        d.process(&view(99, 100 + k, T0 + 1_000 + k * 1_000));
    }
    d.finish();
    let opened: Vec<String> = d
        .take_changes()
        .iter()
        .map(|c| format!("{} {}", c.incident().rule, c.incident().key))
        .collect();
    assert!(opened.iter().any(|o| o == "user_burst 99"), "{opened:?}");
    assert!(d.stats().keys_evicted > 0, "{:?}", d.stats());
}

#[test]
fn the_duplicate_set_has_a_cap() {
    let settings = Settings {
        max_dedupe_ids: 100,
        ..Settings::default()
    };
    let mut d = detector(settings);
    for k in 0..1_000 {
        d.process(&view(k, k, T0 + k));
    }
    assert!(d.dedupe_ids() <= 100, "{}", d.dedupe_ids());
    assert_eq!(d.stats().dedupe_evicted, 900);
    // Within the cap duplicates are still dropped.
    d.process(&view(999, 999, T0 + 999));
    assert_eq!(d.stats().duplicates, 1);
}

#[test]
fn a_far_future_event_moves_time_only_to_its_arrival_plus_the_skew() {
    let mut d = detector(Settings::default());
    let arrived = T0;
    let mut ahead = view(7, 1, T0 + 23 * 3_600_000_000);
    ahead.ingest_time = Some(arrived);
    d.process(&ahead);
    assert!(
        d.watermark() <= arrived + 5_000_000,
        "the watermark {} ran past arrival plus the skew",
        d.watermark()
    );
    // A burst right after it is not late and fires.
    for k in 0..12 {
        let mut e = view(8, 100 + k, T0 + 10_000 + k * 1_000);
        e.ingest_time = Some(T0 + 10_000 + k * 1_000);
        d.process(&e);
    }
    d.tick(Some(T0 + 60_000_000));
    assert_eq!(d.stats().late, 0);
    let rules: Vec<String> = d
        .take_changes()
        .iter()
        .map(|c| format!("{} {}", c.incident().rule, c.incident().key))
        .collect();
    assert!(rules.iter().any(|r| r == "user_burst 8"), "{rules:?}");
}
