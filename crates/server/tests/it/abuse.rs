//! Hostile traffic against a real server: every field at its limit and past it through every
//! ingest path, amplifying headers, bodies built to cost the parser, slow and greedy clients,
//! spoofed forwarding chains, far-future times, and shutdown with open streams. Each test
//! names the defect it guards against (issue 17).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoplake_events::record::RecordFormat;
use shoplake_server::{HttpLimits, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{READER, Running, SHOP, Setup, TRACKER, gzip, lake_rows, until};

/// One event as a JSON object, with `product_id` making it distinct and `extra` fields set.
fn object(product: i64, extra: &[(&str, &str)]) -> Value {
    let mut o = json!({
        "event_time": "2019-10-01 00:00:04 UTC",
        "event_type": "view",
        "product_id": product,
        "category_id": 2,
        "category_code": "electronics.smartphone",
        "brand": "acme",
        "price": 1.5,
        "user_id": 5,
        "user_session": "s-1",
    });
    for (k, v) in extra {
        o[*k] = json!(v);
    }
    o
}

const CSV_HEADER: &str = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session,client_ip,user_agent\n";

fn csv_row(o: &Value) -> String {
    let f = |k: &str| match &o[k] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    format!(
        "{},{},{},{},{},{},{},{},{},{},{}\n",
        f("event_time"),
        f("event_type"),
        f("product_id"),
        f("category_id"),
        f("category_code"),
        f("brand"),
        f("price"),
        f("user_id"),
        f("user_session"),
        f("client_ip"),
        f("user_agent")
    )
}

/// The four ways to send events: CSV, NDJSON, a JSON array, a single object.
const PATHS: [(&str, &str); 4] = [
    ("csv", "text/csv"),
    ("ndjson", "application/x-ndjson"),
    ("array", "application/json"),
    ("object", "application/json"),
];

fn body_of(path: &str, o: &Value) -> Vec<u8> {
    match path {
        "csv" => format!("{CSV_HEADER}{}", csv_row(o)).into_bytes(),
        "ndjson" => format!("{o}\n").into_bytes(),
        "array" => json!([o]).to_string().into_bytes(),
        _ => o.to_string().into_bytes(),
    }
}

/// Defect 2: whatever the collector acknowledges reaches `events`; what it refuses is refused
/// with its reason. Every text field at its limit and one byte past it, through every body
/// format, in both record formats, plus the header-derived user agent at, past and far past
/// its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_at_its_limit_and_past_it_through_every_path() {
    for format in [RecordFormat::Binary, RecordFormat::Json] {
        let s = Running::start_setup(Setup {
            record_format: format,
            ..Setup::default()
        })
        .await;
        let mut product = 1_000;
        let mut accepted = 0u64;
        for (field, limit) in [
            ("category_code", 256),
            ("brand", 128),
            ("user_session", 128),
            ("user_agent", 1024),
        ] {
            for (len, ok) in [(limit, true), (limit + 1, false)] {
                for (path, content_type) in PATHS {
                    product += 1;
                    let o = object(product, &[(field, &"a".repeat(len))]);
                    let (status, answer, _) = s
                        .post(Some(TRACKER), content_type, body_of(path, &o), &[])
                        .await;
                    let what = format!("{format:?} {path} {field} of {len} bytes");
                    if ok {
                        assert_eq!(status, 200, "{what}: {answer}");
                        assert_eq!(answer["accepted"], 1, "{what}: {answer}");
                        accepted += 1;
                    } else {
                        assert_eq!(status, 400, "{what}: {answer}");
                        let reason = answer["rejected"][0]["reason"].as_str().unwrap_or("");
                        assert!(
                            reason.contains(&format!("longer than {limit} bytes")),
                            "{what}: {answer}"
                        );
                    }
                }
            }
        }
        // The header's user agent is cut to the field's limit: accepted and stored, never
        // accepted and dropped.
        for len in [1024usize, 1025, 3000] {
            product += 1;
            let agent = "M".repeat(len);
            let body = format!("{}\n", object(product, &[]));
            let (status, answer, _) = s
                .post(
                    Some(SHOP),
                    "application/x-ndjson",
                    body.into_bytes(),
                    &[("user-agent", &agent)],
                )
                .await;
            assert_eq!(status, 200, "a {len}-byte User-Agent: {answer}");
            assert_eq!(answer["accepted"], 1);
            accepted += 1;
        }
        let (lake, _dir) = s.stop().await;
        let rows = lake_rows(&lake).await;
        assert_eq!(
            rows.len() as u64,
            accepted,
            "{format:?}: every acknowledged event is stored"
        );
        let mut header_agents: Vec<usize> = rows
            .iter()
            .filter_map(|(_, _, ua)| ua.as_ref())
            .filter(|ua| ua.starts_with('M'))
            .map(String::len)
            .collect();
        header_agents.sort_unstable();
        assert_eq!(header_agents, vec![1024, 1024, 1024], "{format:?}");
    }
}

/// Defect 1: the header's user agent is copied once per request, cut to its limit, so a big
/// header times many rows costs rows × 1 KiB, not rows × header; a head past the limit is
/// refused outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_user_agent_is_cut_once_per_request() {
    let s = Running::start_setup(Setup::default()).await;
    let rows = 20_000;
    let mut body = String::new();
    for i in 0..rows {
        body.push_str(&object(10_000 + i, &[]).to_string());
        body.push('\n');
    }
    let agent = "B".repeat(60_000);
    let (status, answer, _) = s
        .post(
            Some(SHOP),
            "application/x-ndjson",
            body.into_bytes(),
            &[("user-agent", &agent)],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], rows);
    // A head over the 64 KiB limit is refused before any of it is used.
    let r = reqwest::Client::new()
        .post(s.url("/v1/events"))
        .bearer_auth(SHOP)
        .header("content-type", "application/x-ndjson")
        .header("user-agent", "C".repeat(400_000))
        .body(format!("{}\n", object(1, &[])))
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status().as_u16(), 431, "a 400 KB header"),
        // hyper may close the connection before answering.
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    let (lake, _dir) = s.stop().await;
    let stored = lake_rows(&lake).await;
    assert_eq!(stored.len() as i64, rows);
    assert!(
        stored
            .iter()
            .all(|(_, _, ua)| ua.as_ref().map(String::len) == Some(1024))
    );
}

/// Defect 3: a value that spans a million lines is parsed once, not once per line (before: a
/// 200 KB body took 9.5 s, growing with its square; this one would take minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ndjson_value_over_a_million_lines_is_parsed_once() {
    let s = Running::start_setup(Setup::default()).await;
    let mut body = b"{".to_vec();
    body.extend(std::iter::repeat_n(b'\n', 1_100_000));
    body.extend_from_slice(format!("{}\n", object(1, &[])).as_bytes());
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        s.post(Some(SHOP), "application/x-ndjson", body, &[]),
    )
    .await
    .expect("answered within 30 s");
    let (status, answer, _) = answer;
    assert_eq!(status, 200, "{answer} after {:?}", started.elapsed());
    assert_eq!(
        answer["accepted"], 1,
        "the good row after the bad value is kept"
    );
    assert!(
        answer["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{answer}"
    );
    s.stop().await;
}

/// Defect 5: a JSON array is held to the row limit while it is decoded: a small gzipped body
/// of millions of elements is refused at the element past the limit, and the server keeps
/// answering meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_is_held_to_the_row_limit_while_decoding() {
    let s = Running::start_setup(Setup::default()).await;
    let mut array = b"[1".to_vec();
    for _ in 0..7_000_000 {
        array.extend_from_slice(b",1");
    }
    array.push(b']');
    let body = gzip(&array);
    assert!(body.len() < 256 << 10, "{} bytes gzipped", body.len());
    let started = Instant::now();
    let (status, answer, _) = tokio::time::timeout(
        Duration::from_secs(30),
        s.post(
            Some(SHOP),
            "application/json",
            body,
            &[("content-encoding", "gzip")],
        ),
    )
    .await
    .expect("answered within 30 s");
    assert_eq!(status, 413, "{answer} after {:?}", started.elapsed());
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("more than 50000 rows"),
        "{answer}"
    );
    s.stop().await;
}

/// Defect 4: decoding runs off the async workers with its own concurrency limit: while slow
/// bodies decode, `/healthz` answers at once, and past the limit a request gets 503 with
/// `Retry-After` instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoding_runs_off_the_async_workers_with_a_limit() {
    let s = Running::start_setup(Setup {
        limits: Limits {
            decode_concurrency: 1,
            decode_wait: Duration::from_millis(1),
            max_rows: 1_000_000,
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    // About 14 MB of refused rows once decompressed: long to decode, short to send.
    let line = b"{\"event_time\":\"nope\",\"event_type\":\"view\",\"product_id\":1}\n";
    let mut heavy = Vec::new();
    while heavy.len() + line.len() < 14 << 20 {
        heavy.extend_from_slice(line);
    }
    let heavy = gzip(&heavy);
    let client = reqwest::Client::new();
    let send = || {
        client
            .post(s.url("/v1/events"))
            .bearer_auth(SHOP)
            .header("content-type", "application/x-ndjson")
            .header("content-encoding", "gzip")
            .body(heavy.clone())
            .send()
    };
    let (a, b, c) = (send(), send(), send());
    let requests = tokio::spawn(async move {
        let answers = futures::future::join_all([a, b, c]).await;
        answers
            .into_iter()
            .map(|r| {
                let r = r.unwrap();
                (
                    r.status().as_u16(),
                    r.headers().get("retry-after").is_some(),
                )
            })
            .collect::<Vec<_>>()
    });
    let mut slowest = Duration::ZERO;
    while !requests.is_finished() {
        let started = Instant::now();
        let r = client.get(s.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answers = requests.await.unwrap();
    assert!(
        answers
            .iter()
            .any(|(status, retry)| *status == 503 && *retry),
        "a request past the decoding limit gets 503 + Retry-After: {answers:?}"
    );
    assert!(
        answers.iter().any(|(status, _)| *status == 400),
        "one decodes (every row refused): {answers:?}"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "/healthz stayed responsive while bodies decoded (slowest {slowest:?})"
    );
    s.stop().await;
}

/// Defect 6: `POST /v1/query` streams and stops at the limit: one row of a ten-billion-row
/// result comes back at once (before, the whole result was collected first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_stops_at_its_limit() {
    let s = Running::start_setup(Setup::default()).await;
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        reqwest::Client::new()
            .post(s.url("/v1/query"))
            .bearer_auth(READER)
            .header("content-type", "application/json")
            .body(
                json!({"sql": "SELECT value FROM generate_series(1, 10000000000)", "limit": 1})
                    .to_string(),
            )
            .send(),
    )
    .await
    .expect("answered within 30 s")
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let out: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(out["rows"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["truncated"], true);
    s.stop().await;
}

/// Work before authentication: a request without a token is answered 401 before its body is
/// read (here the body never comes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_read_before_the_token_is_checked() {
    let s = Running::start_setup(Setup::default()).await;
    for path in ["/v1/query", "/v1/lists/allow", "/v1/events"] {
        let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n{{"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer without the body"))
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
    }
    s.stop().await;
}

/// Defect 13: a client that sends its headers too slowly is cut off, and one address cannot
/// take every connection: another still gets `/healthz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_greedy_clients_are_cut_off() {
    let s = Running::start_setup(Setup {
        http: HttpLimits {
            header_read_timeout: Duration::from_millis(500),
            max_connections_per_ip: 8,
            ..HttpLimits::default()
        },
        ..Setup::default()
    })
    .await;
    // A half-sent head: closed after the timeout.
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"POST /v1/events HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("the server closes a connection whose head does not arrive");
    assert!(matches!(read, Ok(0) | Ok(_) | Err(_)));
    // Another loopback address takes its eight connections and more are closed at once.
    let attacker = |_: usize| async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        socket.connect(s.addr).await.unwrap()
    };
    let mut held = Vec::new();
    for i in 0..8 {
        held.push(attacker(i).await);
    }
    let mut extra = attacker(9).await;
    let n = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
        .await
        .expect("a connection over the per-address limit is closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // The honest client at 127.0.0.1 is still served.
    let r = reqwest::get(s.url("/healthz")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    drop(held);
    s.stop().await;
}

/// Defect 14: every `X-Forwarded-For` line counts, so a client cannot choose its address by
/// sending a line of its own before the proxy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forwarded_for_line_is_read() {
    let s = Running::start_setup(Setup {
        trusted: vec!["127.0.0.1".parse().unwrap()],
        ..Setup::default()
    })
    .await;
    let client = reqwest::Client::new();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.append("x-forwarded-for", "6.6.6.6".parse().unwrap());
    headers.append("x-forwarded-for", "203.0.113.7".parse().unwrap());
    let r = client
        .post(s.url("/v1/events"))
        .bearer_auth(SHOP)
        .header("content-type", "application/x-ndjson")
        .headers(headers)
        .body(format!("{}\n", object(1, &[])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (lake, _dir) = s.stop().await;
    let rows = lake_rows(&lake).await;
    assert_eq!(rows[0].1.as_deref(), Some("203.0.113.7"));
}

/// Defect 12: shutdown ends the event streams and finishes, and the number of subscribers is
/// capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_and_subscribers_are_capped() {
    let s = Running::start_setup(Setup {
        limits: Limits {
            max_stream_subscribers: 2,
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let client = reqwest::Client::new();
    let open = || {
        client
            .get(s.url("/v1/events/stream"))
            .bearer_auth(READER)
            .send()
    };
    let first = open().await.unwrap();
    let second = open().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open().await.unwrap();
    assert_eq!(third.status().as_u16(), 503);
    assert!(third.headers().get("retry-after").is_some());
    let reading = tokio::spawn(async move {
        let mut first = first;
        while let Ok(Some(_)) = first.chunk().await {}
    });
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(8), s.stop())
        .await
        .expect("serve stops within 8 s with streams open");
    assert!(started.elapsed() < Duration::from_secs(8));
    tokio::time::timeout(Duration::from_secs(2), reading)
        .await
        .expect("the stream ended")
        .unwrap();
    drop(second);
}

/// Defect 8: an event stamped far in the future neither closes every window nor makes the
/// events after it late: a burst right after it still opens `user_burst`. The collector's
/// default refuses a time more than 15 minutes ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_future_event_does_not_blind_the_detector() {
    let s = Running::start_setup(Setup {
        limits: Limits {
            max_future: Duration::from_secs(86_400),
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let stamp = |micros: i64| shoplake_events::time::format_rfc3339(micros);
    let now = chrono::Utc::now().timestamp_micros();
    let mut ahead = object(1, &[("event_time", &stamp(now + 23 * 3_600_000_000))]);
    ahead["user_id"] = json!(31);
    let (status, answer, _) = s
        .post(
            Some(SHOP),
            "application/x-ndjson",
            format!("{ahead}\n").into_bytes(),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    until("the detector to read the far-future event", async || {
        let n = s.metric("shoplake_detector_events_total").await?;
        (n >= 1.0).then_some(())
    })
    .await;
    let mut burst = String::new();
    for i in 0..50 {
        let mut o = object(100 + i, &[("event_time", &stamp(now + i * 50_000))]);
        o["user_id"] = json!(4242);
        burst.push_str(&format!("{o}\n"));
    }
    let (status, _, _) = s
        .post(Some(SHOP), "application/x-ndjson", burst.into_bytes(), &[])
        .await;
    assert_eq!(status, 200);
    let client = reqwest::Client::new();
    let mut rules = Vec::new();
    for _ in 0..300 {
        let r = client
            .get(s.url("/v1/alerts?key_type=user_id&key=4242"))
            .bearer_auth(READER)
            .send()
            .await
            .unwrap();
        let found: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        rules = found
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["rule"].as_str().unwrap().to_owned(),
                    i["severity"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if rules.iter().any(|(r, s)| r == "user_burst" && s == "high") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        rules.iter().any(|(r, s)| r == "user_burst" && s == "high"),
        "the burst after a far-future event opens user_burst high: {rules:?}"
    );
    s.stop().await;

    // The default collector refuses an event more than 15 minutes ahead, with the reason.
    let s = Running::start_setup(Setup::default()).await;
    let mut ahead = object(2, &[("event_time", &stamp(now + 3_600_000_000))]);
    ahead["user_id"] = json!(32);
    let (status, answer, _) = s
        .post(
            Some(SHOP),
            "application/x-ndjson",
            format!("{ahead}\n").into_bytes(),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("more than 15m in the future"),
        "{answer}"
    );
    s.stop().await;
}

/// Defect 10: retention never removes what the lake delivery has not committed, and a
/// partition full of undelivered records makes the collector answer 503 + `Retry-After`
/// (backpressure) instead of dropping what it acknowledged. With the lake unwritable while
/// traffic continues, then restored, the lake ends with exactly the acknowledged events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_while_the_lake_is_down() {
    let s = Running::start_setup(Setup {
        segment_bytes: 16 << 10,
        retention_bytes: Some(64 << 10),
        ..Setup::default()
    })
    .await;
    let batch = |from: i64| {
        let mut body = String::new();
        for k in 0..200 {
            let mut o = object(from + k, &[]);
            o["user_id"] = json!(1 + (from + k) % 997);
            body.push_str(&format!("{o}\n"));
        }
        body.into_bytes()
    };
    let mut product = 1_000_000;
    let mut acknowledged = 0u64;
    let (status, answer, _) = s
        .post(Some(SHOP), "application/x-ndjson", batch(product), &[])
        .await;
    assert_eq!(status, 200, "{answer}");
    acknowledged += 200;
    product += 200;
    // Delivered: the table exists.
    for _ in 0..100 {
        if s.lake
            .latest_version(shoplake_lake::TableName::Events)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The lake becomes unwritable: its events table is replaced by a file.
    let table = s.dir().join("lake").join("events");
    let away = s.dir().join("lake").join("events.away");
    assert!(table.is_dir(), "{} is the events table", table.display());
    std::fs::rename(&table, &away).unwrap();
    std::fs::write(&table, b"not a table").unwrap();
    let mut refused = None;
    for _ in 0..500 {
        let (status, answer, headers) = s
            .post(Some(SHOP), "application/x-ndjson", batch(product), &[])
            .await;
        product += 200;
        match status {
            200 => acknowledged += answer["accepted"].as_u64().unwrap(),
            503 => {
                assert!(headers.get("retry-after").is_some());
                refused = Some(answer["error"].as_str().unwrap().to_owned());
                break;
            }
            other => panic!("{other}: {answer}"),
        }
    }
    let refused = refused.expect("the collector pushes back once the log is full");
    assert!(refused.contains("not yet delivered"), "{refused}");
    // Back: delivery catches up, and sending works again.
    std::fs::remove_file(&table).unwrap();
    std::fs::rename(&away, &table).unwrap();
    let mut accepted_again = false;
    for _ in 0..200 {
        let (status, answer, _) = s
            .post(Some(SHOP), "application/x-ndjson", batch(product), &[])
            .await;
        if status == 200 {
            acknowledged += answer["accepted"].as_u64().unwrap();
            accepted_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        accepted_again,
        "the collector accepts again once the lake is back"
    );
    let (lake, _dir) = s.stop().await;
    let rows = lake_rows(&lake).await;
    assert_eq!(
        rows.len() as u64,
        acknowledged,
        "every acknowledged event is in the lake"
    );
}

/// Defect 7: queries and reports share one memory pool and take turns: past the concurrency
/// limit a request waits `query_wait`, then gets 429 + `Retry-After`; the time limit covers
/// the whole request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_take_turns_within_a_time_limit() {
    let s = Running::start_setup(Setup {
        limits: Limits {
            query_concurrency: 1,
            query_wait: Duration::from_millis(100),
            query_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let client = reqwest::Client::new();
    let slow =
        json!({"sql": "SELECT COUNT(*) AS n FROM generate_series(1, 100000000000)"}).to_string();
    let send = |body: String| {
        client
            .post(s.url("/v1/query"))
            .bearer_auth(READER)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let started = Instant::now();
    let first = tokio::spawn(send(slow.clone()));
    until("the first query to take its turn", async || {
        let running = s.metric("shoplake_queries_running").await?;
        (running == 1.0).then_some(())
    })
    .await;
    let second = send(slow).await.unwrap();
    assert_eq!(second.status().as_u16(), 429);
    assert!(second.headers().get("retry-after").is_some());
    let first = first.await.unwrap().unwrap();
    assert_eq!(
        first.status().as_u16(),
        408,
        "the slow query stops at its time limit"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // Its turn is given back: the next query runs.
    let r = send(json!({"sql": "SELECT 1 AS one"}).to_string())
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client
        .get(s.url("/v1/reports/visitors"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    s.stop().await;
}

/// Defect 16: `GET /v1/alerts?status=all` comes in pages (a `Link` header names the next),
/// which together list every incident once; quarantine can be pruned past a retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_come_in_pages_and_quarantine_can_be_pruned() {
    let s = Running::start_setup(Setup::default()).await;
    let mut body = String::new();
    for u in 0..30i64 {
        for i in 0..12i64 {
            let t = 1_569_888_000_000_000 + u * 60_000_000 + i * 500_000;
            let mut o = object(
                10_000 + u * 100 + i,
                &[("event_time", &shoplake_events::time::format_rfc3339(t))],
            );
            o["user_id"] = json!(5_000 + u);
            body.push_str(&format!("{o}\n"));
        }
    }
    body.push_str("{\"event_time\": \"yesterday\"}\n");
    let (status, answer, _) = s
        .post(Some(SHOP), "application/x-ndjson", body.into_bytes(), &[])
        .await;
    assert_eq!(status, 200, "{answer}");
    let client = reqwest::Client::new();
    let get = |url: String| client.get(url).bearer_auth(READER).send();
    let mut all = Vec::new();
    for _ in 0..300 {
        let r = get(s.url("/v1/alerts?status=all&limit=10000"))
            .await
            .unwrap();
        all = serde_json::from_str::<Vec<Value>>(&r.text().await.unwrap()).unwrap();
        if all.len() >= 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(all.len() >= 30, "{} incidents", all.len());
    for order in ["oldest", "newest"] {
        let mut url = s.url(&format!("/v1/alerts?status=all&limit=7&order={order}"));
        let mut paged = Vec::new();
        for _ in 0..100 {
            let r = get(url.clone()).await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let next = r
                .headers()
                .get("link")
                .map(|v| v.to_str().unwrap().to_owned());
            let page: Vec<Value> = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            assert!(page.len() <= 7);
            paged.extend(page);
            match next {
                Some(link) => {
                    let path = link
                        .trim_start_matches('<')
                        .split('>')
                        .next()
                        .unwrap()
                        .to_owned();
                    assert!(link.ends_with("rel=\"next\""), "{link}");
                    url = s.url(&path);
                }
                None => break,
            }
        }
        let ids = |v: &[Value]| {
            v.iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        let mut want = ids(&all);
        if order == "newest" {
            want.reverse();
        }
        assert_eq!(ids(&paged), want, "{order} first");
    }
    let r = get(s.url("/v1/alerts?status=all&cursor=nonsense"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (lake, _dir) = s.stop().await;
    let now = chrono::Utc::now().timestamp_micros();
    assert_eq!(lake.prune_quarantine(now - 3_600_000_000).await.unwrap(), 0);
    assert_eq!(lake.prune_quarantine(now + 3_600_000_000).await.unwrap(), 1);
    let left = lake
        .read_table(shoplake_lake::TableName::Quarantine, &["reason"])
        .await
        .unwrap();
    assert_eq!(left.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
}
