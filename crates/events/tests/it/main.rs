//! Integration tests of the event model (one binary, modules per topic).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod properties;
mod sample;
