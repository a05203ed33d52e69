//! A key's ring of panes: one slot per slide of its window, each `(pane, count)`, a slot
//! reused when its pane falls out of the window.

/// The slot of `pane`, emptied first when it held an older pane.
pub(super) fn slot(ring: &mut [(i64, u32)], pane: i64) -> usize {
    let at = pane.rem_euclid(ring.len() as i64) as usize;
    if ring[at].0 != pane {
        ring[at] = (pane, 0);
    }
    at
}

/// Takes one event off `pane` when the ring still holds that pane.
pub(super) fn take_one(ring: &mut [(i64, u32)], pane: i64) {
    let at = pane.rem_euclid(ring.len() as i64) as usize;
    if ring[at].0 == pane {
        ring[at].1 = ring[at].1.saturating_sub(1);
    }
}

/// The count of the window ending with `pane`: the panes the ring holds in
/// `(pane - len, pane]`.
pub(super) fn window_sum(ring: &[(i64, u32)], pane: i64) -> u64 {
    let lo = pane - ring.len() as i64;
    ring.iter()
        .filter(|(p, _)| *p > lo && *p <= pane)
        .map(|(_, c)| u64::from(*c))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn empty(len: usize) -> Vec<(i64, u32)> {
        vec![(i64::MIN, 0); len]
    }

    #[test]
    fn a_window_counts_its_panes_and_a_reused_slot_forgets_the_old_one() {
        let mut ring = empty(3);
        for pane in [0, 0, 1, 2] {
            let at = slot(&mut ring, pane);
            ring[at].1 += 1;
        }
        assert_eq!(window_sum(&ring, 2), 4);
        let at = slot(&mut ring, 3);
        ring[at].1 += 1;
        assert_eq!(window_sum(&ring, 3), 3, "pane 0 left the window");
        take_one(&mut ring, 0);
        assert_eq!(window_sum(&ring, 3), 3, "pane 0 is gone: nothing to take");
        take_one(&mut ring, 2);
        assert_eq!(window_sum(&ring, 3), 2);
    }

    proptest! {
        /// Against a list of every event: events come at panes never older than the ring's
        /// reach from the newest (as the engine ensures), and the window ending at any pane
        /// up to the newest holds exactly the events whose slot no later pane took over.
        #[test]
        fn the_ring_matches_a_list_of_every_event(
            len in 1usize..6,
            steps in proptest::collection::vec((0i64..4, 0i64..8), 1..60),
            query_back in 0i64..8,
        ) {
            let n = len as i64;
            let mut ring = empty(len);
            let mut events: Vec<i64> = Vec::new();
            let mut newest = i64::MIN;
            let mut pane = 0i64;
            for (forward, back) in steps {
                pane += forward;
                newest = newest.max(pane);
                let at_pane = (newest - back).max(newest - n + 1);
                let at = slot(&mut ring, at_pane);
                ring[at].1 += 1;
                events.push(at_pane);
            }
            let query = newest - query_back;
            let kept = |p: i64| !events.iter().any(|&q| q > p && (q - p) % n == 0);
            let want = events
                .iter()
                .filter(|&&p| p > query - n && p <= query && kept(p))
                .count() as u64;
            prop_assert_eq!(window_sum(&ring, query), want);
        }
    }
}
