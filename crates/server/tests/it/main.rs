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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_is_accepted_stamped_and_delivered_once() {
    let s = Running::start(Limits::default(), Vec::new()).await;
    let all = events(1_000, 11);
    // One JSON object.
    let mut one = Vec::new();
    shoplake_events::json::encode_json(&mut one, &all[0]);
    let (status, body, _) = s
        .post(
            Some(SHOP),
            "application/json",
            one,
            &[("user-agent", "shop-backend/1.0")],
        )
        .await;
    assert_eq!(
        (status, &body),
        (200, &json!({"accepted": 1, "rejected": []}))
    );
    // A JSON array.
    let array: Vec<Value> = all[1..100]
        .iter()
        .map(|e| {
            let mut b = Vec::new();
            shoplake_events::json::encode_json(&mut b, e);
            serde_json::from_slice(&b).unwrap()
        })
        .collect();
    let (status, body, _) = s
        .post(
            Some(SHOP),
            "application/json",
            serde_json::to_vec(&array).unwrap(),
            &[],
        )
        .await;
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(99)));
    // NDJSON, gzip-encoded.
    let (status, body, _) = s
        .post(
            Some(SHOP),
            "application/x-ndjson",
            gzip(&ndjson(&all[100..600])),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(500)));
    // CSV with the REES46 header, sent twice (a client's retry): delivered once.
    for _ in 0..2 {
        let (status, body, _) = s
            .post(Some(SHOP), "text/csv; charset=utf-8", csv(&all[600..]), &[])
            .await;
        assert_eq!((status, body["accepted"].as_u64()), (200, Some(400)));
    }

    let (lake, _dir) = s.stop().await;
    let rows = lake_rows(&lake).await;
    // The generator repeats a few events exactly, as the real data does: those land once.
    assert_eq!(rows.len(), ids(&all).len(), "each event once");
    let got: HashSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(got, ids(&all));
    // Stamped with the connection's address; the user agent of the first request.
    assert!(rows.iter().all(|r| r.1.as_deref() == Some("127.0.0.1")));
    let first = all[0].event_id().to_string();
    let ua = rows.iter().find(|r| r.0 == first).unwrap().2.clone();
    assert_eq!(ua.as_deref(), Some("shop-backend/1.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fields_are_kept_only_for_forwarding_tokens_and_trusted_proxies() {
    let s = Running::start(Limits::default(), vec!["127.0.0.1".parse().unwrap()]).await;
    let mut all = events(30, 12);
    for e in &mut all {
        e.client_ip = Some("198.51.100.7".parse().unwrap());
        e.user_agent = Some("Mozilla/5.0 (shopper)".to_owned());
    }
    // The tracker may forward: the events' own fields stay.
    let (status, _, _) = s
        .post(
            Some(TRACKER),
            "application/x-ndjson",
            ndjson(&all[..10]),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    // The shop may not: the connection's (here a trusted proxy's X-Forwarded-For).
    let (status, _, _) = s
        .post(
            Some(SHOP),
            "application/x-ndjson",
            ndjson(&all[10..20]),
            &[
                ("x-forwarded-for", "203.0.113.5"),
                ("user-agent", "proxy-ua"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    // A spoofed first hop is not believed: the nearest untrusted one is.
    let (status, _, _) = s
        .post(
            Some(SHOP),
            "application/x-ndjson",
            ndjson(&all[20..]),
            &[("x-forwarded-for", "6.6.6.6, 203.0.113.9")],
        )
        .await;
    assert_eq!(status, 200);
    let (lake, _dir) = s.stop().await;
    let rows = lake_rows(&lake).await;
    let of = |e: &Event| {
        let id = e.event_id().to_string();
        rows.iter().find(|r| r.0 == id).cloned().unwrap()
    };
    assert_eq!(
        (of(&all[0]).1.as_deref(), of(&all[0]).2.as_deref()),
        (Some("198.51.100.7"), Some("Mozilla/5.0 (shopper)"))
    );
    assert_eq!(
        (of(&all[15]).1.as_deref(), of(&all[15]).2.as_deref()),
        (Some("203.0.113.5"), Some("proxy-ua"))
    );
    assert_eq!(of(&all[25]).1.as_deref(), Some("203.0.113.9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_listed_and_quarantined_and_the_good_ones_kept() {
    let s = Running::start(Limits::default(), Vec::new()).await;
    let good = events(3, 13);
    let mut body = Vec::new();
    shoplake_events::json::encode_json(&mut body, &good[0]);
    body.extend_from_slice(b"{\"event_time\":\"2019-10-01 00:00:00 UTC\",\"event_type\":\"view\",\"product_id\":1,\"category_id\":2,\"price\":\"abc\",\"user_id\":5}\n");
    shoplake_events::json::encode_json(&mut body, &good[1]);
    body.extend_from_slice(b"{not json\n");
    shoplake_events::json::encode_json(&mut body, &good[2]);
    let (status, answer, _) = s.post(Some(SHOP), "application/x-ndjson", body, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(answer["accepted"], 3);
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["line"], 2);
    assert_eq!(rejected[0]["field"], "price");
    assert!(
        rejected[0]["reason"].as_str().unwrap().contains("abc"),
        "{answer}"
    );
    assert_eq!(rejected[1]["line"], 4);
    assert_eq!(rejected[1]["field"], Value::Null);

    // A CSV whose every row is bad: 400, still listed and quarantined.
    let (status, answer, _) = s
        .post(
            Some(SHOP),
            "text/csv",
            b"event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n2019-10-01 00:00:00 UTC,teleport,1,2,,,1.00,3,s\n".to_vec(),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["accepted"], 0);
    assert_eq!(answer["rejected"][0]["line"], 2);
    assert_eq!(answer["rejected"][0]["field"], "event_type");

    let (lake, _dir) = s.stop().await;
    assert_eq!(lake_rows(&lake).await.len(), 3);
    let mut reasons = Vec::new();
    for b in lake
        .read_table(
            TableName::Quarantine,
            &["import_id", "source", "field", "raw"],
        )
        .await
        .unwrap()
    {
        let col = |i: usize| strings(&b, i);
        for i in 0..b.num_rows() {
            assert_eq!(col(0).value(i), "collector");
            assert_eq!(col(1).value(i), "collector 127.0.0.1 token shop");
            reasons.push((
                (!col(2).is_null(i)).then(|| col(2).value(i).to_owned()),
                col(3).value(i).to_owned(),
            ));
        }
    }
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[0], (None, "{not json".to_owned()));
    assert_eq!(reasons[1].0.as_deref(), Some("event_type"));
    assert_eq!(reasons[2].0.as_deref(), Some("price"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_the_documented_status_and_message() {
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        max_rows: 100,
        ..Limits::default()
    };
    let s = Running::start(limits, Vec::new()).await;
    let some = ndjson(&events(10, 14));
    let nd = "application/x-ndjson";
    // (token, content type, body, extra headers, status, part of the message)
    type Case<'a> = (
        Option<&'a str>,
        &'a str,
        Vec<u8>,
        Vec<(&'a str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (None, nd, some.clone(), vec![], 401, "missing bearer token"),
        (
            Some("wrong-token"),
            nd,
            some.clone(),
            vec![],
            401,
            "unknown token",
        ),
        (
            Some(READER),
            nd,
            some.clone(),
            vec![],
            403,
            "lacks the ingest scope",
        ),
        (
            Some(SHOP),
            "text/plain",
            some.clone(),
            vec![],
            415,
            "unsupported Content-Type",
        ),
        (
            Some(SHOP),
            nd,
            some.clone(),
            vec![("content-encoding", "br")],
            415,
            "unsupported Content-Encoding",
        ),
        (
            Some(SHOP),
            nd,
            some.clone(),
            vec![("content-encoding", "gzip")],
            400,
            "not valid gzip",
        ),
        (
            Some(SHOP),
            nd,
            vec![b' '; 70 * 1024],
            vec![],
            413,
            "larger than the limit",
        ),
        (
            Some(SHOP),
            nd,
            gzip(&vec![b'\n'; 200 * 1024]),
            vec![("content-encoding", "gzip")],
            413,
            "once decompressed",
        ),
        (
            Some(SHOP),
            nd,
            ndjson(&events(150, 15)),
            vec![],
            413,
            "more than 100 rows",
        ),
        (Some(SHOP), nd, Vec::new(), vec![], 400, "no events"),
        (
            Some(SHOP),
            "text/csv",
            b"a,b,c\n1,2,3\n".to_vec(),
            vec![],
            400,
            "header",
        ),
        (
            Some(SHOP),
            "application/json",
            b"[{\"a\": 1}, {".to_vec(),
            vec![],
            400,
            "malformed",
        ),
    ];
    for (token, ct, body, extra, want, message) in cases {
        let (status, answer, headers) = s.post(token, ct, body, &extra).await;
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(status, want, "{ct} {extra:?}: {answer}");
        assert!(
            error.contains(message),
            "{ct} {extra:?}: {error:?} lacks {message:?}"
        );
        if want == 401 {
            assert!(headers.contains_key("www-authenticate"));
        }
    }
    // Unknown paths and methods answer in JSON too.
    let (status, answer) = get_json(&s.url("/v2/nothing")).await;
    assert_eq!(status, 404);
    assert!(answer["error"].is_string());
    let (status, answer) = get_json(&s.url("/v1/events")).await;
    assert_eq!(status, 405);
    assert!(answer["error"].is_string());
    // Nothing refused above reached the lake.
    let (lake, _dir) = s.stop().await;
    assert!(lake_rows(&lake).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_high_water_mark_requests_wait() {
    let limits = Limits {
        backlog_high_water: 50,
        retry_after_secs: 2,
        ..Limits::default()
    };
    let s = Running::start(limits, Vec::new()).await;
    let all = events(200, 16);
    let (status, _, _) = s
        .post(Some(SHOP), "application/x-ndjson", ndjson(&all[..100]), &[])
        .await;
    assert_eq!(status, 200);
    // 100 undelivered > 50: refused until delivery (every 200 ms) catches up.
    let (status, answer, headers) = s
        .post(Some(SHOP), "application/x-ndjson", ndjson(&all[100..]), &[])
        .await;
    if status == 503 {
        assert_eq!(headers.get("retry-after").unwrap(), "2");
        assert!(answer["error"].as_str().unwrap().contains("high-water"));
        let mut accepted = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (status, _, _) = s
                .post(Some(SHOP), "application/x-ndjson", ndjson(&all[100..]), &[])
                .await;
            if status == 200 {
                accepted = true;
                break;
            }
        }
        assert!(accepted, "delivery never brought the backlog down");
    } else {
        panic!("expected 503 over the high-water mark, got {status}: {answer}");
    }
    let (lake, _dir) = s.stop().await;
    assert_eq!(lake_rows(&lake).await.len(), ids(&all).len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_openapi() {
    let s = Running::start(Limits::default(), Vec::new()).await;
    let (_, health) = get_json(&s.url("/healthz")).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["log_partitions"], 4);
    let (status, _, _) = s
        .post(
            Some(SHOP),
            "application/x-ndjson",
            ndjson(&events(20, 17)),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = s.post(None, "application/x-ndjson", Vec::new(), &[]).await;
    assert_eq!(status, 401);

    let client = reqwest::Client::new();
    let r = client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client
        .get(s.url("/metrics"))
        .bearer_auth(SHOP)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let text = client
        .get(s.url("/metrics"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("shoplake_ingest_events_accepted_total 20"),
        "{text}"
    );
    assert!(
        text.contains("shoplake_ingest_requests_total{status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("shoplake_ingest_requests_total{status=\"401\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("shoplake_ingest_request_duration_seconds_count 2"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));

    let (status, _) = get_json(&s.url("/openapi.json")).await;
    assert_eq!(status, 401, "every endpoint but /healthz needs a token");
    let text = client
        .get(s.url("/openapi.json"))
        .bearer_auth(SHOP)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let api: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(api["openapi"], "3.1.0");
    assert!(api["paths"]["/v1/events"]["post"]["responses"]["413"].is_object());
    for path in [
        "/v1/alerts",
        "/v1/alerts/{id}",
        "/v1/alerts/{id}/{action}",
        "/v1/lists",
        "/v1/lists/{list}",
        "/v1/reports/{kind}",
        "/v1/query",
        "/v1/catalog",
        "/v1/imports",
        "/v1/quarantine",
        "/v1/events/stream",
    ] {
        assert!(api["paths"][path].is_object(), "{path} is not documented");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_api_answers_reports_sql_catalog_and_the_live_stream() {
    let s = Running::start(Limits::default(), Vec::new()).await;
    let sent = events(2_000, 41);
    let (status, _, _) = s
        .post(Some(SHOP), "application/x-ndjson", ndjson(&sent), &[])
        .await;
    assert_eq!(status, 200);
    // The generator's exact duplicates are dropped on the way into the lake.
    let distinct = ids(&sent).len() as u64;
    let client = reqwest::Client::new();
    let get = |path: &str, token: &str| client.get(s.url(path)).bearer_auth(token).send();
    // Delivered within a few intervals.
    let mut total = 0;
    for _ in 0..100 {
        let r = get("/v1/reports/visitors?all_traffic=true", READER)
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let days: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        total = days
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["events"].as_u64().unwrap())
            .sum::<u64>();
        if total == distinct {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(total, distinct);
    for kind in [
        "abandonment",
        "categories?by=weekday&level=2",
        "brands?min_views=1",
        "activity",
        "bots",
    ] {
        let r = get(&format!("/v1/reports/{kind}"), READER).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{kind}");
    }
    let r = get("/v1/reports/nope", READER).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = get("/v1/reports/categories?level=9", READER).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = get("/v1/reports/visitors?colour=red", READER)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "unknown parameters are refused");
    let r = get("/v1/reports/visitors", SHOP).await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        403,
        "ingest tokens do not read reports"
    );

    let query = |body: Value| {
        client
            .post(s.url("/v1/query"))
            .bearer_auth(READER)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let r = query(json!({"sql": "SELECT event_id FROM events", "limit": 5}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let out: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(out["rows"].as_array().unwrap().len(), 5);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["columns"][0]["name"], "event_id");
    let r = query(json!({"sql": "DROP TABLE events"})).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let err: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(err["error"].as_str().unwrap().contains("DROP"), "{err}");

    let r = get("/v1/catalog", READER).await.unwrap();
    let tables: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(
        tables
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "events" && t["rows"] == distinct)
    );
    let r = get("/v1/imports", READER).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = get("/v1/quarantine?limit=10", READER).await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());

    // The live stream: a rate message within a few seconds.
    let mut r = get("/v1/events/stream", READER).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !text.contains("event: rate") {
        let chunk = tokio::time::timeout_at(deadline, r.chunk())
            .await
            .expect("a rate message within 5 s")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("\"events_per_second\""), "{text}");
    drop(r);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_compacted_and_the_marts_kept_up_to_date() {
    let s = Running::start_with(
        Limits::default(),
        Vec::new(),
        DeliveryOptions {
            interval: Duration::from_millis(100),
            compact_interval: Some(Duration::ZERO),
            marts_interval: Some(Duration::ZERO),
            ..DeliveryOptions::default()
        },
    )
    .await;
    let all = events(3_000, 18);
    // Three deliveries, each a small file per date.
    for chunk in all.chunks(1_000) {
        let (status, _, _) = s
            .post(Some(SHOP), "application/x-ndjson", ndjson(chunk), &[])
            .await;
        assert_eq!(status, 200);
        let version = s.lake.table_info(TableName::Events).await.unwrap().version;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if s.lake.table_info(TableName::Events).await.unwrap().version != version {
                break;
            }
        }
    }
    // Compaction leaves one file per date; the marts catch up with the last delivery.
    let mut compacted = false;
    let mut fresh = false;
    for _ in 0..200 {
        let info = s.lake.table_info(TableName::Events).await.unwrap();
        compacted = info.files == info.partitions.len() as u64;
        let engine = shoplake_query::Engine::open(&s.lake).await.unwrap();
        fresh = shoplake_query::marts::fresh(&engine, chrono_tz::Tz::UTC)
            .await
            .unwrap();
        if compacted && fresh {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(compacted, "events was not compacted");
    assert!(fresh, "the marts did not catch up");
    let (lake, _dir) = s.stop().await;
    let rows = lake_rows(&lake).await;
    assert_eq!(rows.len(), ids(&all).len());
    let got: HashSet<String> = rows.into_iter().map(|r| r.0).collect();
    assert_eq!(got, ids(&all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_are_detected_stored_and_served() {
    let s = Running::start(Limits::default(), Vec::new()).await;
    // A burst: 12 events of one user within 6 seconds.
    let mut burst = events(12, 19);
    for (i, e) in burst.iter_mut().enumerate() {
        e.user_id = 777;
        e.event_time = 1_569_888_000_000_000 + i as i64 * 500_000;
        e.product_id = 1000 + i as i64;
    }
    let (status, _, _) = s
        .post(Some(SHOP), "application/x-ndjson", ndjson(&burst), &[])
        .await;
    assert_eq!(status, 200);
    let client = reqwest::Client::new();
    let get = |path: &str, token: &str| client.get(s.url(path)).bearer_auth(token).send();
    let mut found = Value::Null;
    for _ in 0..200 {
        let r = get("/v1/alerts", READER).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        found = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        if found.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let incident = &found[0];
    assert_eq!(incident["rule"], "user_burst");
    assert_eq!(incident["key"], "777");
    assert_eq!(incident["severity"], "high");
    let id = incident["id"].as_str().unwrap().to_owned();
    assert_eq!(
        get("/v1/alerts", SHOP).await.unwrap().status().as_u16(),
        403,
        "ingest tokens do not read alerts"
    );
    let one = get(&format!("/v1/alerts/{id}"), READER).await.unwrap();
    assert_eq!(one.status().as_u16(), 200);
    let r = client
        .post(s.url(&format!("/v1/alerts/{id}/ack")))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "acknowledging needs admin");
    let r = client
        .post(s.url(&format!("/v1/alerts/{id}/ack")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let acked: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(acked["status"], "acknowledged");
    assert_eq!(acked["acknowledged_by"], "admin");
    let r = client
        .post(s.url("/v1/alerts/nope/ack"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Lists.
    let r = client
        .post(s.url("/v1/lists/allow"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(json!({"key_type": "user_id", "key": "777"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = client
        .post(s.url("/v1/lists/allow"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(json!({"key_type": "user_id", "key": "not-a-number"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let lists: Value = serde_json::from_str(
        &get("/v1/lists", READER)
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(lists[0]["key"], "777");
    s.stop().await;
}
