//! Integration tests of the generator (one binary, modules per topic).

mod attacks;
mod calibration;
