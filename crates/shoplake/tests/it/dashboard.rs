//! The dashboard in a real browser: three generated days with attacks are imported and judged
//! (`detect --flag`), `serve` runs on them, and `crates/server/dashboard/tests/browser.mjs`
//! (playwright-core driving Debian's Chromium) checks every page, the filters, the exports,
//! the live feed and SQL. With `SHOPLAKE_SCREENSHOTS=DIR` the screenshots are kept there (the
//! README's come from `SHOPLAKE_SCREENSHOTS=docs/screenshots`).

use std::process::Command;

use crate::serve::{free_port, spawn_serve, terminate};
use crate::shoplake;

/// A brand and a category whose names are markup (events are anyone's to send): 400 views by
/// as many users and a few purchases, enough for the Brands and Categories pages to show them.
const HOSTILE_BRAND: &str = "<img src=x onerror=window.__pwned=1>";
const HOSTILE_CATEGORY: &str = "<svg onload=window.__pwned=2>.evil";

fn append_hostile_rows(file: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    for i in 0..400u32 {
        let kind = if i % 100 == 0 { "purchase" } else { "view" };
        writeln!(
            f,
            "2019-10-01 12:{:02}:{:02} UTC,{kind},99000001,99,{HOSTILE_CATEGORY},{HOSTILE_BRAND},10.00,{},s-hostile-{i},203.0.113.9,",
            i / 60 % 60,
            i % 60,
            1_900_000_000 + i
        )
        .unwrap();
    }
}

#[test]
fn every_dashboard_page_works_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("days.csv");
    let data = dir.path().join("data");
    let lake = data.join("lake");
    let config = dir.path().join("shoplake.toml");
    std::fs::write(&config, "[delivery]\ninterval = \"1s\"\n").unwrap();
    let o = shoplake(&[
        "generate",
        "--events",
        "150000",
        "--days",
        "3",
        "--seed",
        "37",
        "--network-fields",
        "--attacks",
        "default",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    append_hostile_rows(&file);
    let o = shoplake(&[
        "import",
        file.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = shoplake(&["detect", "--flag", "--lake", lake.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let port = free_port();
    let log = dir.path().join("serve.log");
    let mut server = spawn_serve(&data, &config, port, &log);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let shots = std::env::var("SHOPLAKE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("shots"));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../server/dashboard/tests/browser.mjs"
    );
    let run = Command::new("node")
        .arg(script)
        .args([&format!("http://127.0.0.1:{port}"), token.trim()])
        .arg(&shots)
        .env("SHOPLAKE_HOSTILE_BRAND", HOSTILE_BRAND)
        .env(
            "SHOPLAKE_HOSTILE_CATEGORY",
            HOSTILE_CATEGORY.split('.').next().unwrap(),
        )
        .output()
        .expect("node runs (scripts/test.sh installs Chromium; build.rs installs playwright-core)");
    let status = terminate(&mut server);
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    eprintln!("{out}{err}");
    if !run.status.success() {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "the browser checks failed:\n{out}\n{err}\nthe end of serve's log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert!(status.success(), "serve did not stop cleanly");
}
