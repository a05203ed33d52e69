//! Integration tests of the event model (one binary, modules per topic).

mod properties;
mod sample;
