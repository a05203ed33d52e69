//! Brings the dashboard's charting library (Apache ECharts, an npm package pinned in
//! `dashboard/package-lock.json`) into the binary: `npm ci` when it is not installed yet, then
//! a copy into `OUT_DIR` for `include_bytes!`. Nothing is fetched at run time.

// A build script: failing loudly with the reason is its way of reporting.
#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("dashboard");
    println!("cargo:rerun-if-changed=dashboard/package.json");
    println!("cargo:rerun-if-changed=dashboard/package-lock.json");
    let lib = dir.join("node_modules/echarts/dist/echarts.min.js");
    println!("cargo:rerun-if-changed={}", lib.display());
    if !lib.exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!(
                "`npm ci` in {} failed ({s}): the dashboard needs its npm packages",
                dir.display()
            ),
            Err(e) => panic!(
                "cannot run npm ({e}): install Node.js and npm (the dashboard's charting \
                 library, echarts, comes from the npm registry at build time)"
            ),
        }
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    std::fs::copy(&lib, out.join("echarts.min.js"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", lib.display()));
}
