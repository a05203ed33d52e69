//! A generated day at real volume with the default attack mix: every attack kind found
//! (recall ≥ 0.95 each) and few organic users flagged (precision ≥ 0.95).

use std::collections::{BTreeMap, HashSet};

use shoplake_detect::{KeyType, Settings};
use shoplake_events::time::parse_timestamp;
use shoplake_simulate::{AttackKind, AttackSpec, Generator, Options};

use crate::run;

#[test]
fn default_rules_find_every_attack_kind_and_few_organic_users() {
    let mut generator = Generator::new(&Options {
        seed: 11,
        days: Some(1),
        network_fields: true,
        attacks: AttackSpec::default_mix(),
        ..Options::default()
    })
    .unwrap();
    let events: Vec<_> = generator.by_ref().collect();
    let truth = generator.truth();
    let (_, incidents) = run(Settings::default(), &events);

    let flagged: HashSet<(KeyType, String)> = incidents
        .iter()
        .map(|i| (i.key_type, i.key.clone()))
        .collect();
    let spikes: Vec<(i64, i64)> = incidents
        .iter()
        .filter(|i| i.rule == "traffic_spike")
        .map(|i| (i.opened_at, i.updated_at))
        .collect();
    // Per kind: actors, found.
    let mut per_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut attackers: HashSet<(KeyType, String)> = HashSet::new();
    for t in &truth {
        let mut keys = Vec::new();
        if let Some(u) = t.user_id {
            keys.push((KeyType::UserId, u.to_string()));
        }
        if let Some(s) = &t.user_session {
            keys.push((KeyType::UserSession, s.clone()));
        }
        if let Some(ip) = &t.client_ip {
            keys.push((KeyType::ClientIp, ip.clone()));
        }
        attackers.extend(keys.iter().cloned());
        let found = match t.kind {
            AttackKind::Ddos => {
                let (start, end) = (
                    parse_timestamp(&t.start).unwrap(),
                    parse_timestamp(&t.end).unwrap(),
                );
                spikes.iter().any(|(o, u)| *o <= end && *u >= start)
            }
            AttackKind::Robotic => t
                .user_session
                .as_ref()
                .is_some_and(|s| flagged.contains(&(KeyType::UserSession, s.clone()))),
            AttackKind::IpFlood => t
                .client_ip
                .as_ref()
                .is_some_and(|ip| flagged.contains(&(KeyType::ClientIp, ip.clone()))),
            _ => t
                .user_id
                .is_some_and(|u| flagged.contains(&(KeyType::UserId, u.to_string()))),
        };
        let e = per_kind.entry(t.kind.as_str()).or_default();
        e.0 += 1;
        e.1 += usize::from(found);
    }
    let keyed: Vec<&(KeyType, String)> = flagged
        .iter()
        .filter(|(k, _)| *k != KeyType::Global)
        .collect();
    let organic = keyed.iter().filter(|k| !attackers.contains(k)).count();
    let precision = 1.0 - organic as f64 / keyed.len().max(1) as f64;
    println!(
        "{} events, {} incidents, {} keys flagged",
        events.len(),
        incidents.len(),
        keyed.len()
    );
    println!(
        "{:<14} {:>6} {:>6} {:>7}",
        "kind", "actors", "found", "recall"
    );
    for (kind, (n, found)) in &per_kind {
        println!(
            "{kind:<14} {n:>6} {found:>6} {:>7.3}",
            *found as f64 / (*n).max(1) as f64
        );
    }
    println!(
        "organic keys flagged: {organic} of {}; precision {precision:.3}",
        keyed.len()
    );
    for rule in shoplake_detect::rules::DEFAULT_RULES {
        let n = incidents.iter().filter(|i| i.rule == rule).count();
        let organic = incidents
            .iter()
            .filter(|i| i.rule == rule && i.key_type != KeyType::Global)
            .filter(|i| !attackers.contains(&(i.key_type, i.key.clone())))
            .count();
        println!("  {rule:<15} {n:>5} incidents, {organic:>5} on organic keys");
    }
    for kind in AttackKind::INJECTED {
        let (n, found) = per_kind.get(kind.as_str()).copied().unwrap_or_default();
        assert!(n > 0, "no {kind} actor was injected");
        assert!(
            found as f64 / n as f64 >= 0.95,
            "{kind}: found {found} of {n}"
        );
    }
    assert!(precision >= 0.95, "precision {precision:.3}");
}
