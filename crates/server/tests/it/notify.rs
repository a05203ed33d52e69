//! Notifications and bot verdicts from a running server: a signed webhook that fails once
//! and is retried, a Slack-compatible webhook, e-mail through a real SMTP server (Python's
//! aiosmtpd), a dead channel given up without holding anything up; bot flags written to the
//! lake and removed when the user is allow-listed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use shoplake_server::notify::{NotifyConfig, signature};

use super::*;

/// What the local HTTP receiver got: (path, headers, body).
type Received = Arc<Mutex<Vec<(String, HeaderMap, String)>>>;

/// A local HTTP receiver: `/hook` answers 503 to its first request, then 200; `/slack` 200.
async fn receiver() -> (SocketAddr, Received) {
    let got: Received = Arc::default();
    async fn take(
        State(got): State<Received>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: String,
    ) -> StatusCode {
        let mut g = got.lock().unwrap();
        let first_hook = uri.path() == "/hook" && !g.iter().any(|(p, _, _)| p == "/hook");
        g.push((uri.path().to_owned(), headers, body));
        if first_hook {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(take))
        .route("/slack", axum::routing::post(take))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

/// A real SMTP server (aiosmtpd) writing each message it takes to `dir`.
struct Smtp {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SMTP_SINK: &str = r#"
import asyncio, os, sys
from aiosmtpd.controller import Controller
port, out = int(sys.argv[1]), sys.argv[2]
class Sink:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        Sink.n += 1
        path = os.path.join(out, "%d.eml" % Sink.n)
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.content)
        os.rename(path + ".tmp", path)
        return "250 OK"
c = Controller(Sink(), hostname="127.0.0.1", port=port)
c.start()
print("ready", flush=True)
asyncio.get_event_loop().run_forever()
"#;

fn smtp(dir: &Path) -> Smtp {
    let python = std::env::var("SHOPLAKE_TEST_PYTHON").expect(
        "SHOPLAKE_TEST_PYTHON is not set: run the tests through scripts/test.sh, which installs \
         aiosmtpd (the SMTP server the e-mail channel is tested against)",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mail = dir.join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let child = std::process::Command::new(python)
        .args(["-c", SMTP_SINK, &port.to_string()])
        .arg(&mail)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let server = Smtp {
        child,
        port,
        dir: mail,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("aiosmtpd did not start on port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_are_notified_and_bots_flagged_until_allow_listed() {
    let dir = tempfile::tempdir().unwrap();
    let mail = smtp(dir.path());
    let (http, got) = receiver().await;
    let config: NotifyConfig = toml::from_str(&format!(
        r#"
attempts = 3
backoff = "100ms"
timeout = "2s"
[[channels]]
name = "hook"
kind = "webhook"
url = "http://{http}/hook"
secret = "s3cret"
min_severity = "low"
[[channels]]
name = "chat"
kind = "slack"
url = "http://{http}/slack"
[[channels]]
name = "mail"
kind = "email"
smtp = "smtp://127.0.0.1:{port}"
from = "shoplake <alerts@shop.test>"
to = ["ops@shop.test"]
[[channels]]
name = "dead"
kind = "webhook"
url = "http://127.0.0.1:9/nobody"
"#,
        port = mail.port
    ))
    .unwrap();
    let delivery = DeliveryOptions {
        interval: Duration::from_millis(200),
        compact_interval: None,
        marts_interval: None,
        ..DeliveryOptions::default()
    };
    let s = Running::start_notifying(
        Limits::default(),
        Vec::new(),
        delivery,
        config.settings().unwrap(),
    )
    .await;
    // 12 events of user 778 within 6 s: user_burst opens (low, > 5) and escalates (high, > 10).
    let mut burst = events(12, 23);
    for (i, e) in burst.iter_mut().enumerate() {
        e.user_id = 778;
        e.event_time = 1_569_888_000_000_000 + i as i64 * 500_000;
        e.product_id = 2000 + i as i64;
    }
    let (status, _, _) = s
        .post(Some(SHOP), "application/x-ndjson", ndjson(&burst), &[])
        .await;
    assert_eq!(status, 200);

    // The webhook: both notices (the first attempt refused with 503 and retried), signed.
    let hooks = until("two accepted webhook notices", async || {
        let g = got.lock().unwrap();
        let hooks: Vec<_> = g.iter().filter(|(p, _, _)| p == "/hook").cloned().collect();
        (hooks.len() >= 3).then_some(hooks)
    })
    .await;
    let mut kinds = Vec::new();
    for (_, headers, body) in &hooks[1..] {
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["incident"]["rule"], "user_burst");
        assert_eq!(v["incident"]["key"], "778");
        assert_eq!(headers["x-shoplake-event"], v["type"].as_str().unwrap());
        let sig = headers["x-shoplake-signature"].to_str().unwrap();
        let t: i64 = sig
            .strip_prefix("t=")
            .and_then(|r| r.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(sig, signature("s3cret", t, body.as_bytes()));
        assert_ne!(sig, signature("other", t, body.as_bytes()));
        kinds.push((
            v["type"].as_str().unwrap().to_owned(),
            v["incident"]["severity"].as_str().unwrap().to_owned(),
        ));
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("incident.escalated".to_owned(), "high".to_owned()),
            ("incident.opened".to_owned(), "low".to_owned())
        ]
    );

    // Slack (default: high only): the escalation.
    let slack = until("the Slack notice", async || {
        let g = got.lock().unwrap();
        g.iter()
            .find(|(p, _, _)| p == "/slack")
            .map(|(_, _, b)| b.clone())
    })
    .await;
    let v: Value = serde_json::from_str(&slack).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains("high incident escalated: user_burst on user_id 778"),
        "{text}"
    );

    // E-mail through the SMTP server.
    let message = until("the e-mail", async || {
        let entry = std::fs::read_dir(&mail.dir)
            .unwrap()
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "eml"))?;
        Some(std::fs::read_to_string(entry.path()).unwrap())
    })
    .await;
    assert!(
        message.contains("Subject: [shoplake] high incident escalated: user_burst user_id=778"),
        "{message}"
    );
    assert!(message.contains("To: ops@shop.test"), "{message}");

    // The dead channel is given up after its 3 attempts; the others were not held up.
    let metrics = until("the dead channel given up", async || {
        let text = reqwest::Client::new()
            .get(s.url("/metrics"))
            .bearer_auth(READER)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("shoplake_notifications_failed_total{channel=\"dead\"} 1")
            .then_some(text)
    })
    .await;
    for line in [
        "shoplake_notifications_sent_total{channel=\"hook\"} 2",
        "shoplake_notifications_retried_total{channel=\"hook\"} 1",
        "shoplake_notifications_sent_total{channel=\"chat\"} 1",
        "shoplake_notifications_sent_total{channel=\"mail\"} 1",
        "shoplake_notifications_retried_total{channel=\"dead\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    // The high incident is a bot verdict for the user's day (2019-10-01).
    let flags = until("the bot flag", async || {
        let f = s.lake.bot_flags().await.ok()?;
        (!f.is_empty()).then_some(f)
    })
    .await;
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0].user_id, 778);
    assert_eq!(flags[0].day, 18_170);
    assert_eq!(flags[0].rule, "user_burst");

    // Allow-listing the user removes its flags.
    let r = reqwest::Client::new()
        .post(s.url("/v1/lists/allow"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(json!({"key_type": "user_id", "key": "778"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    until("the flags removed", async || {
        s.lake
            .bot_flags()
            .await
            .ok()
            .filter(|f| f.is_empty())
            .map(|_| ())
    })
    .await;
    s.stop().await;
}
