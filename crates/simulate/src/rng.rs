//! Deterministic randomness: one seeded PCG stream for the sequence of draws, and stateless
//! hashing for per-entity attributes (a user's address, a product's price) so that nothing
//! about a user has to be remembered between their sessions.

use rand::{Rng, RngCore};
use rand_distr::{Distribution, Exp1, StandardNormal};

/// SplitMix64's finaliser: a fast, well-mixed 64-bit hash.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a seed, a purpose tag and a value.
pub fn hash(seed: u64, tag: u64, value: u64) -> u64 {
    mix(mix(seed ^ tag.wrapping_mul(0xA24B_AED4_963E_E407)) ^ value)
}

/// A uniform float in [0, 1) from a hash.
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Draws from the distributions the model needs.
pub trait Draw: RngCore + Sized {
    /// A uniform float in [0, 1).
    fn unit(&mut self) -> f64 {
        self.random::<f64>()
    }
    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// A uniform integer in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.random_range(lo..=hi)
    }
    /// Failures before the first success, success probability `p` (mean (1-p)/p).
    fn geometric(&mut self, p: f64) -> u64 {
        let u = 1.0 - self.unit();
        (u.ln() / (1.0 - p).ln()).floor() as u64
    }
    /// An exponential with mean 1.
    fn exp1(&mut self) -> f64 {
        Exp1.sample(self)
    }
    /// A log-normal with the given median and shape.
    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        let z: f64 = StandardNormal.sample(self);
        median * (sigma * z).exp()
    }
    /// A Poisson count with mean `lambda` (small means only).
    fn poisson(&mut self, lambda: f64) -> u64 {
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = self.unit();
        while p > limit && k < 1000 {
            k += 1;
            p *= self.unit();
        }
        k
    }
}

impl<R: RngCore> Draw for R {}

/// A cumulative distribution over indices, sampled by binary search.
#[derive(Debug, Clone)]
pub struct Cdf {
    cumulative: Vec<f64>,
}

impl Cdf {
    /// From non-negative weights (at least one positive).
    pub fn new(weights: impl IntoIterator<Item = f64>) -> Cdf {
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = weights
            .into_iter()
            .map(|w| {
                total += w;
                total
            })
            .collect();
        for c in &mut cumulative {
            *c /= total;
        }
        Cdf { cumulative }
    }

    /// Zipf weights `1 / (rank + 1)^s` over `n` ranks.
    pub fn zipf(n: usize, s: f64) -> Cdf {
        Cdf::new((0..n).map(|i| 1.0 / ((i + 1) as f64).powf(s)))
    }

    /// An index drawn with its weight's probability, from a uniform `u` in [0, 1).
    pub fn pick(&self, u: f64) -> usize {
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.cumulative.len().saturating_sub(1))
    }

    /// The probability of one index.
    pub fn weight(&self, i: usize) -> f64 {
        self.cumulative[i] - if i == 0 { 0.0 } else { self.cumulative[i - 1] }
    }

    /// The number of indices.
    pub fn len(&self) -> usize {
        self.cumulative.len()
    }

    /// Whether there are no indices.
    pub fn is_empty(&self) -> bool {
        self.cumulative.is_empty()
    }
}

/// Formats 128 random bits as a UUID v4 (`72d76fde-8bb3-4e00-8c23-a032dfed738c`).
pub fn uuid(hi: u64, lo: u64) -> String {
    let hi = (hi & !0xF000) | 0x4000;
    let lo = (lo & !(0xC << 60)) | (0x8 << 60);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}
