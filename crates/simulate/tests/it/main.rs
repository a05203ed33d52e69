//! Integration tests of the generator (one binary, modules per topic).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod attacks;
mod calibration;
