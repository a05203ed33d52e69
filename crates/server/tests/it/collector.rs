//! `POST /v1/events` against a real server: every format, stamping, refused rows, the
//! documented refusals, the backlog's high-water mark.

use super::*;

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
