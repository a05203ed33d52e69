//! The detector against the generator's ground truth, golden cases, and the rules' settings.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod caps;
mod golden;
mod truth;

use std::sync::Arc;

use shoplake_detect::{Change, DetectConfig, Detector, Incident, Settings};
use shoplake_events::{Event, FixedClock};

pub fn detector(settings: Settings) -> Detector {
    Detector::new(settings, Arc::new(FixedClock(0)))
}

/// Runs events through a detector to their end; returns every change and the incidents as
/// they finally stand (resolved or still open), ordered by opening time.
pub fn run(settings: Settings, events: &[Event]) -> (Vec<Change>, Vec<Incident>) {
    let mut d = detector(settings);
    d.process_all(events);
    d.finish();
    let changes = d.take_changes();
    let mut last: std::collections::BTreeMap<String, Incident> = Default::default();
    for c in &changes {
        let i = c.incident();
        last.insert(i.id.clone(), i.clone());
    }
    let mut incidents: Vec<Incident> = last.into_values().collect();
    incidents.sort_by(|a, b| (a.opened_at, &a.id).cmp(&(b.opened_at, &b.id)));
    (changes, incidents)
}

#[test]
fn settings_are_validated_all_at_once() {
    let c: DetectConfig = toml::from_str(
        r#"
time = "sideways"
lateness = "soon"
[rules.user_burst]
threshold = 8
notify = 4
factor = 2.0
[rules.user_sustained]
window = "65s"
[rules.no_such_rule]
threshold = 1
"#,
    )
    .unwrap();
    let errors = c.settings().unwrap_err();
    for want in [
        "detect.time",
        "detect.lateness",
        "notify must be above",
        "factor: not a setting",
        "multiple of the slide",
        "no_such_rule",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{want} not in {errors:?}"
        );
    }
    let ok: DetectConfig = toml::from_str(
        "[rules.user_burst]\nthreshold = 8\nnotify = 20\n[rules.scraper]\nenabled = false\n",
    )
    .unwrap();
    let s = ok.settings().unwrap();
    assert_eq!(s.rules.len(), 6);
    let burst = s.rules.iter().find(|r| r.name == "user_burst").unwrap();
    assert_eq!((burst.levels[0].above, burst.levels[1].above), (8.0, 20.0));
}
