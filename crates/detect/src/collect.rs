//! A bounded run's incidents (history: `shoplake detect`): every change the detector makes,
//! kept as the incident it last left, and the input's end closing what is still open.

use std::collections::BTreeMap;

use crate::engine::Detector;
use crate::incident::Incident;

/// A run's incidents by id, each as its last change left it.
#[derive(Debug, Default)]
pub struct Collected(BTreeMap<String, Incident>);

impl Collected {
    /// Takes the detector's changes so far (call it every so often, so that the changes
    /// do not pile up in the detector).
    pub fn take(&mut self, detector: &mut Detector) {
        for c in detector.take_changes() {
            let i = c.incident();
            self.0.insert(i.id.clone(), i.clone());
        }
    }

    /// Ends the bounded input and returns every incident, oldest first (then by id).
    pub fn finish(mut self, detector: &mut Detector) -> Vec<Incident> {
        detector.finish();
        self.take(detector);
        let mut incidents: Vec<Incident> = self.0.into_values().collect();
        incidents.sort_by(|a, b| (a.opened_at, &a.id).cmp(&(b.opened_at, &b.id)));
        incidents
    }
}
