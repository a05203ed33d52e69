//! The collector over real HTTP: formats, stamping, every documented refusal, and delivery of
//! what it accepted into the lake (events and quarantine) exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, StringArray};
use serde_json::{Value, json};
use shoplake_events::{CsvEncoder, Event};
use shoplake_lake::{Lake, LakeOptions, TableName};
use shoplake_log::{EmbeddedLog, EmbeddedOptions, EventLog};
use shoplake_server::{DeliveryOptions, Limits, Network, Scope, ServeOptions, Token};
use shoplake_simulate::{Generator, Options};
use tokio::sync::oneshot;

mod abuse;
mod api;
mod collector;
mod delivery;
mod notify;

const ADMIN: &str = "admin-secret-0123456789";
const SHOP: &str = "shop-secret-0123456789";
const TRACKER: &str = "tracker-secret-0123456789";
const READER: &str = "reader-secret-0123456789";

fn tokens() -> Vec<Token> {
    let t = |name: &str, token: &str, scopes: &[Scope], forward: bool| Token {
        name: name.to_owned(),
        token: token.to_owned(),
        scopes: scopes.to_vec(),
        forward,
    };
    vec![
        t("admin", ADMIN, &[Scope::Admin], true),
        t("shop", SHOP, &[Scope::Ingest], false),
        t("tracker", TRACKER, &[Scope::Ingest], true),
        t("reader", READER, &[Scope::Read], false),
    ]
}

/// How a test server is set up.
struct Setup {
    limits: Limits,
    http: shoplake_server::HttpLimits,
    trusted: Vec<Network>,
    delivery: DeliveryOptions,
    notify: shoplake_server::notify::NotifySettings,
    record_format: shoplake_events::record::RecordFormat,
    /// The embedded log's segment size and retention (its consumer `lake` is protected, as
    /// `serve` sets it).
    segment_bytes: u64,
    retention_bytes: Option<u64>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            limits: Limits::default(),
            http: shoplake_server::HttpLimits::default(),
            trusted: Vec::new(),
            delivery: DeliveryOptions {
                interval: Duration::from_millis(200),
                compact_interval: None,
                marts_interval: None,
                ..DeliveryOptions::default()
            },
            notify: Default::default(),
            record_format: shoplake_events::record::RecordFormat::Binary,
            segment_bytes: 64 << 20,
            retention_bytes: Some(1 << 30),
        }
    }
}

/// A running server on a temporary data directory.
struct Running {
    addr: SocketAddr,
    lake: Lake,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<shoplake_server::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// The data directory (the lake in `lake`, the log in `log`).
    fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

impl Running {
    async fn start(limits: Limits, trusted: Vec<Network>) -> Running {
        let delivery = DeliveryOptions {
            interval: Duration::from_millis(200),
            compact_interval: None,
            marts_interval: None,
            ..DeliveryOptions::default()
        };
        Running::start_with(limits, trusted, delivery).await
    }

    async fn start_with(
        limits: Limits,
        trusted: Vec<Network>,
        delivery: DeliveryOptions,
    ) -> Running {
        Running::start_notifying(limits, trusted, delivery, Default::default()).await
    }

    async fn start_notifying(
        limits: Limits,
        trusted: Vec<Network>,
        delivery: DeliveryOptions,
        notify: shoplake_server::notify::NotifySettings,
    ) -> Running {
        Running::start_setup(Setup {
            limits,
            trusted,
            delivery,
            notify,
            ..Setup::default()
        })
        .await
    }

    async fn start_setup(setup: Setup) -> Running {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,shoplake_server=info".into()),
            )
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(LakeOptions {
            root: dir.path().join("lake").to_string_lossy().into_owned(),
            storage_options: Default::default(),
        })
        .unwrap();
        let log: Arc<dyn EventLog> = Arc::new(
            EmbeddedLog::open(EmbeddedOptions {
                segment_bytes: setup.segment_bytes,
                retention_bytes: setup.retention_bytes,
                protected: vec![setup.delivery.consumer.clone()],
                ..EmbeddedOptions::new(dir.path().join("log"))
            })
            .unwrap(),
        );
        let store = shoplake_alerts::SqlStore::open(&format!(
            "sqlite://{}",
            dir.path().join("alerts.db").display()
        ))
        .await
        .unwrap();
        let options = ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            tokens: tokens(),
            trusted_proxies: setup.trusted,
            limits: setup.limits,
            http: setup.http,
            delivery: setup.delivery,
            detection: Some(shoplake_server::DetectionOptions {
                settings: shoplake_detect::Settings::default(),
                store: std::sync::Arc::new(store),
                max_per_partition: 100_000,
                notify: setup.notify,
                retain_resolved: None,
                checkpoint: None,
            }),
            record_format: setup.record_format,
            clock: std::sync::Arc::new(shoplake_events::SystemClock),
            roles: shoplake_server::Roles::ALL,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(shoplake_server::serve(
            lake.clone(),
            log,
            options,
            move |addr| {
                let _ = ready_tx.send(addr);
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let addr = ready_rx.await.expect("the server started");
        Running {
            addr,
            lake,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    /// A metric's value from `GET /metrics` (the first sample whose line starts with
    /// `name`, labels included), `None` when it is not there.
    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::Client::new()
            .get(self.url("/metrics"))
            .bearer_auth(READER)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn post(
        &self,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
        extra: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut r = reqwest::Client::new()
            .post(self.url("/v1/events"))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {text:?} (status {status})"));
        (status, body, headers)
    }

    /// Stops (draining the log into the lake) and returns the lake (and its directory, to
    /// keep it).
    async fn stop(mut self) -> (Lake, tempfile::TempDir) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
        (self.lake, self._dir)
    }
}

fn events(n: u64, seed: u64) -> Vec<Event> {
    Generator::new(&Options {
        seed,
        events: Some(n),
        days: Some(1),
        ..Options::default()
    })
    .unwrap()
    .collect()
}

fn ndjson(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        shoplake_events::json::encode_json(&mut out, e);
    }
    out
}

fn csv(events: &[Event]) -> Vec<u8> {
    let mut enc = CsvEncoder::new(Vec::new(), false).unwrap();
    for e in events {
        enc.write(e).unwrap();
    }
    enc.finish().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn strings(b: &arrow::array::RecordBatch, i: usize) -> StringArray {
    b.column(i)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .clone()
}

/// Every row of `events`: (event_id, client_ip, user_agent).
async fn lake_rows(lake: &Lake) -> Vec<(String, Option<String>, Option<String>)> {
    let mut out = Vec::new();
    for b in lake
        .read_table(TableName::Events, &["event_id", "client_ip", "user_agent"])
        .await
        .unwrap()
    {
        let col = |i: usize| strings(&b, i);
        let (ids, ips, uas) = (col(0), col(1), col(2));
        for i in 0..b.num_rows() {
            let opt = |a: &StringArray| (!a.is_null(i)).then(|| a.value(i).to_owned());
            out.push((ids.value(i).to_owned(), opt(&ips), opt(&uas)));
        }
    }
    out
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap(),
    )
}

fn ids(events: &[Event]) -> HashSet<String> {
    events.iter().map(|e| e.event_id().to_string()).collect()
}

/// Waits for a condition (up to 15 s, polled every 50 ms), instead of sleeping a fixed time.
async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
