//! A calibrated generator of shop traffic in the REES46 format, with attack injection and
//! ground truth.
//!
//! Output is deterministic for a seed and options, sorted by `event_time`, and streams in
//! constant memory. The session, funnel, price and popularity models are calibrated against
//! the facts of the real October/November 2019 files (DESIGN.md section 2); the calibration
//! test checks each fact within a stated band.
//!
//! ```
//! use shoplake_simulate::{Generator, Options};
//! let opts = Options { events: Some(1_000), ..Options::default() };
//! let events: Vec<_> = Generator::new(&opts).unwrap().collect();
//! assert_eq!(events.len(), 1_000);
//! assert!(events.windows(2).all(|w| w[0].event_time <= w[1].event_time));
//! ```

mod attack;
mod bots;
pub mod catalog;
mod generator;
pub mod network;
pub mod rng;
pub mod stats;

pub use attack::{AttackKind, AttackSpec, Truth};
pub use generator::{EVENTS_PER_DAY, Generator, STORE_UTC_OFFSET_HOURS};

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options do not make sense.
    #[error("{0}")]
    Options(String),
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed: the same seed and options give the same events.
    pub seed: u64,
    /// The first day, as microseconds at a UTC midnight (default 2019-10-01).
    pub start: i64,
    /// Total events (with `days`: spread over those days; alone: about 1.37 M a day).
    pub events: Option<u64>,
    /// Days of data (alone: about 1.37 M events a day, as in the real October file).
    pub days: Option<u32>,
    /// Share of events that are `remove_from_cart` (0 reproduces the multi-category store).
    pub remove_share: f64,
    /// Whether events carry `client_ip` and `user_agent`.
    pub network_fields: bool,
    /// Attacks to inject.
    pub attacks: AttackSpec,
    /// Crawler sessions (default: one per 8 M events, as in the real data).
    pub crawlers: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 0,
            start: 1_569_888_000_000_000, // 2019-10-01
            events: None,
            days: None,
            remove_share: 0.01,
            network_fields: false,
            attacks: AttackSpec::none(),
            crawlers: None,
        }
    }
}

impl Options {
    /// Days and total events of the run.
    pub fn size(&self) -> (u32, u64) {
        match (self.days, self.events) {
            (Some(d), Some(n)) => (d, n),
            (Some(d), None) => (d, u64::from(d) * EVENTS_PER_DAY),
            (None, Some(n)) => (n.div_ceil(EVENTS_PER_DAY).max(1) as u32, n),
            (None, None) => (1, EVENTS_PER_DAY),
        }
    }

    /// Every problem with the options, at once.
    pub fn validate(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        if self.days == Some(0) {
            errors.push("--days must be at least 1".to_owned());
        }
        if self.days.is_some_and(|d| d > 3660) {
            errors.push("--days must be at most 3660".to_owned());
        }
        if self.events == Some(0) {
            errors.push("--events must be at least 1".to_owned());
        }
        if !(0.0..=0.5).contains(&self.remove_share) {
            errors.push(format!(
                "the remove_from_cart share must be between 0 and 0.5, not {}",
                self.remove_share
            ));
        }
        if self.start.rem_euclid(shoplake_events::time::MICROS_PER_DAY) != 0 {
            errors.push("the start must be a UTC midnight".to_owned());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Options(errors.join("; ")))
        }
    }
}
