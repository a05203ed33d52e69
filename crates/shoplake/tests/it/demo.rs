//! `shoplake demo` as a newcomer runs it: it builds its data, serves the dashboard, and an
//! incident fires within a minute; Ctrl-C stops it cleanly; a second run reuses the data.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::serve::free_port;

/// Starts the demo and waits for its banner; returns the process, the token and what it
/// said before.
fn start(data: &std::path::Path, port: u16) -> (Child, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoplake"))
        .args(["demo", "--data", data.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--days", "2", "--events", "60000", "--rate", "100"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no banner from the demo; it said:\n{}", seen.join("\n"));
        };
        if let Some(t) = line.trim().strip_prefix("token:") {
            return (child, t.trim().to_owned(), seen);
        }
        seen.push(line);
    }
}

fn interrupt(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn demo_serves_the_dashboard_fires_an_incident_within_a_minute_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let port = free_port();
    let (mut demo, token, _lines) = start(&data, port);
    let banner = Instant::now();
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let page = client.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 200);
        assert!(
            page.text()
                .await
                .unwrap()
                .contains("<title>shoplake</title>")
        );
        let get = |path: &str| {
            let request = client.get(format!("{base}{path}")).bearer_auth(&token);
            async move {
                let text = request.send().await.unwrap().text().await.unwrap();
                serde_json::from_str::<serde_json::Value>(&text).unwrap()
            }
        };
        let days = get("/v1/reports/visitors").await;
        assert!(days.as_array().unwrap().len() >= 2, "{days}");
        loop {
            let found = get("/v1/alerts?status=all").await;
            if found
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["key"] == "1900000001" && i["severity"] == "high")
            {
                break;
            }
            assert!(
                banner.elapsed() < Duration::from_secs(60),
                "no incident within a minute: {found}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // One timeline: the history's days run up to yesterday, and the live traffic (stamped
        // now) lands on today once delivered, with the marts brought up to date after it.
        let today = chrono::Utc::now().date_naive();
        loop {
            let days = get("/v1/reports/visitors").await;
            let days: Vec<chrono::NaiveDate> = days
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["day"].as_str().unwrap().parse().unwrap())
                .collect();
            assert!(
                days.windows(2).all(|w| (w[1] - w[0]).num_days() == 1),
                "the days are one timeline: {days:?}"
            );
            if days.last() == Some(&today) {
                assert_eq!(days[days.len() - 2], today - chrono::Days::new(1));
                break;
            }
            assert!(
                banner.elapsed() < Duration::from_secs(90),
                "the live traffic did not reach today's figures: {days:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    eprintln!(
        "the demo's first incident came {:?} after its banner",
        banner.elapsed()
    );
    // The demo exits 0 only when serve stopped cleanly too.
    assert!(interrupt(&mut demo).success());

    // Again: the data is reused, not rebuilt.
    let (mut again, _, said) = start(&data, port);
    assert!(interrupt(&mut again).success());
    assert!(
        said.iter().any(|l| l.contains("reusing the data")),
        "{}",
        said.join("\n")
    );
}
