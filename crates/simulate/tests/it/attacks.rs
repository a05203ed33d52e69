//! Attack injection: the ground truth lists every injected actor, and each actor's traffic in
//! the stream has the shape its kind promises (what the detection rules will look for).

use std::collections::{BTreeMap, HashMap, HashSet};

use shoplake_events::Event;
use shoplake_events::time::MICROS_PER_SECOND;
use shoplake_simulate::{AttackKind, AttackSpec, Generator, Options, Truth};

const S: i64 = MICROS_PER_SECOND;

fn run(opts: &Options) -> (Vec<Event>, Vec<Truth>) {
    let mut g = Generator::new(opts).unwrap();
    let events: Vec<Event> = g.by_ref().collect();
    (events, g.truth())
}

fn max_in_tumbling(times: &[i64], window: i64) -> usize {
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for t in times {
        *counts.entry(t.div_euclid(window)).or_default() += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

fn max_in_sliding(times: &[i64], window: i64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= window {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

#[test]
fn default_mix_is_injected_with_its_ground_truth() {
    let opts = Options {
        seed: 11,
        events: Some(400_000),
        days: Some(1),
        network_fields: true,
        attacks: AttackSpec::default_mix(),
        ..Options::default()
    };
    let (events, truth) = run(&opts);
    assert_eq!(events.len(), 400_000);
    assert!(
        events
            .windows(2)
            .all(|w| w[0].event_time <= w[1].event_time)
    );

    // Every injected actor is listed, with the kinds and counts of the mix.
    let mut kinds: BTreeMap<AttackKind, u32> = BTreeMap::new();
    for t in &truth {
        *kinds.entry(t.kind).or_default() += 1;
    }
    let expected: BTreeMap<AttackKind, u32> =
        AttackSpec::default_mix().resolve(1).into_iter().collect();
    assert_eq!(kinds, expected);

    let mut by_user: HashMap<i64, Vec<&Event>> = HashMap::new();
    let mut by_ip: HashMap<String, Vec<i64>> = HashMap::new();
    for e in &events {
        by_user.entry(e.user_id).or_default().push(e);
        if let Some(ip) = e.client_ip {
            by_ip.entry(ip.to_string()).or_default().push(e.event_time);
        }
    }
    let bots: HashSet<i64> = truth.iter().filter_map(|t| t.user_id).collect();
    for t in &truth {
        let user_events = t.user_id.map(|u| &by_user[&u]);
        if let Some(evs) = user_events {
            assert_eq!(evs.len() as u64, t.events, "{t:?}");
        }
        let times: Vec<i64> = user_events
            .map(|e| e.iter().map(|e| e.event_time).collect())
            .unwrap_or_default();
        match t.kind {
            AttackKind::Burst => assert!(max_in_tumbling(&times, 10 * S) > 10, "{t:?}"),
            AttackKind::Sustained => assert!(max_in_sliding(&times, 60 * S) > 60, "{t:?}"),
            AttackKind::Scraper => {
                let evs = user_events.unwrap();
                let mut best = 0;
                for (i, e) in evs.iter().enumerate() {
                    let distinct: HashSet<i64> = evs[i..]
                        .iter()
                        .take_while(|x| x.event_time - e.event_time < 60 * S)
                        .map(|x| x.product_id)
                        .collect();
                    best = best.max(distinct.len());
                }
                assert!(best > 30, "{t:?}: {best}");
            }
            AttackKind::SessionFlood => {
                let sessions: HashSet<_> = user_events
                    .unwrap()
                    .iter()
                    .map(|e| e.user_session.clone())
                    .collect();
                assert!(sessions.len() > 20, "{t:?}");
                assert!(times.last().unwrap() - times[0] < 3600 * S);
            }
            AttackKind::Robotic => {
                let gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
                let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
                let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
                assert!(gaps.len() >= 20 && var.sqrt() / mean < 0.1, "{t:?}");
                assert!(
                    max_in_tumbling(&times, 10 * S) <= 5,
                    "robotic bots stay slow: {t:?}"
                );
            }
            AttackKind::IpFlood => {
                let ip = t.client_ip.as_ref().unwrap();
                assert!(max_in_tumbling(&by_ip[ip], 10 * S) > 100, "{t:?}");
                assert!(t.users.unwrap() > 100);
            }
            AttackKind::Ddos => {
                let all: Vec<i64> = events.iter().map(|e| e.event_time).collect();
                let mut windows: BTreeMap<i64, usize> = BTreeMap::new();
                for t in &all {
                    *windows.entry(t.div_euclid(10 * S)).or_default() += 1;
                }
                let mut counts: Vec<usize> = windows.values().copied().collect();
                counts.sort();
                let median = counts[counts.len() / 2];
                assert!(*counts.last().unwrap() > 5 * median, "{t:?}");
            }
            AttackKind::Crawler => {}
        }
    }

    // Organic shoppers stay below the reference design's alert level (> 10 events in 10 s,
    // exact duplicates aside).
    for (user, evs) in &by_user {
        if bots.contains(user) {
            continue;
        }
        let mut seen = HashSet::new();
        let times: Vec<i64> = evs
            .iter()
            .filter(|e| seen.insert(e.event_id()))
            .map(|e| e.event_time)
            .collect();
        assert!(
            max_in_tumbling(&times, 10 * S) <= 10,
            "organic user {user} bursts"
        );
    }
}

#[test]
fn same_seed_same_events_other_seed_other_events() {
    let opts = Options {
        seed: 5,
        events: Some(50_000),
        attacks: "burst=2,robotic=1".parse().unwrap(),
        ..Options::default()
    };
    let (a, ta) = run(&opts);
    let (b, tb) = run(&opts);
    assert_eq!(a, b);
    assert_eq!(ta, tb);
    let (c, _) = run(&Options { seed: 6, ..opts });
    assert_ne!(a, c);
}

#[test]
fn too_many_attacks_for_the_size_is_a_clear_error() {
    let opts = Options {
        events: Some(1_000),
        attacks: "ddos=3".parse().unwrap(),
        ..Options::default()
    };
    let err = Generator::new(&opts).unwrap_err().to_string();
    assert!(err.contains("ask for more --events"), "{err}");
}
