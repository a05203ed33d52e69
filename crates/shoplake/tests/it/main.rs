//! End-to-end tests of the `shoplake` binary, run as a user would run it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod check;
mod cluster;
mod crash;
mod dashboard;
mod demo;
mod generate;
mod lake;
mod query;
mod serve;

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn shoplake(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoplake"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the shoplake binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/rees46-2019-Oct-sample.csv")
}

#[test]
fn version_and_help() {
    let o = shoplake(&["--version"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("shoplake "));
    let o = shoplake(&["--help"]);
    assert!(stdout(&o).contains("generate") && stdout(&o).contains("check"));
}
