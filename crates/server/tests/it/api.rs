//! The HTTP API against a real server: health, metrics and the OpenAPI document, the lake
//! API (reports, SQL, catalog, live stream), and incidents from detection to the alerts API.

use super::*;

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

/// While the marts are behind (events delivered, their refresh not run yet), a humans-only
/// report answers from the snapshot the marts reflect and says so: the `events` version in
/// `Shoplake-Events-Version`, how far behind in `Shoplake-Lag-Seconds`; `source=events` reads
/// the latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_while_the_marts_are_behind_names_the_version_it_reflects() {
    let s = Running::start(Limits::default(), Vec::new()).await;
    let lake = Lake::open(LakeOptions {
        root: s.dir().join("lake").to_string_lossy().into_owned(),
        storage_options: Default::default(),
    })
    .unwrap();
    let client = reqwest::Client::new();
    let visitors = async |source: &str| {
        let r = client
            .get(s.url(&format!("/v1/reports/visitors?source={source}")))
            .bearer_auth(READER)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let header = |name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (version, lag) = (
            header("shoplake-events-version"),
            header("shoplake-lag-seconds"),
        );
        let days: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let total: u64 = days
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["events"].as_u64().unwrap())
            .sum();
        (total, version, lag)
    };
    let (first, second) = (events(1_000, 51), events(1_000, 52));
    let n1 = ids(&first).len() as u64;
    let both = ids(&first).union(&ids(&second)).count() as u64;
    assert!(both > n1);
    let (status, _, _) = s
        .post(Some(SHOP), "application/x-ndjson", ndjson(&first), &[])
        .await;
    assert_eq!(status, 200);
    until("the first delivery", async || {
        (visitors("events").await.0 == n1).then_some(())
    })
    .await;
    shoplake_query::marts::refresh(&lake, &[]).await.unwrap();
    let reflected = lake
        .latest_version(TableName::Events)
        .await
        .unwrap()
        .unwrap();
    let up_to_date = visitors("auto").await;
    assert_eq!(up_to_date, (n1, Some(reflected.to_string()), None));

    let (status, _, _) = s
        .post(Some(SHOP), "application/x-ndjson", ndjson(&second), &[])
        .await;
    assert_eq!(status, 200);
    let latest = until("the second delivery", async || {
        let (total, version, lag) = visitors("events").await;
        (total == both).then_some((version, lag))
    })
    .await;
    assert_eq!(latest.1, None);
    let latest: i64 = latest.0.unwrap().parse().unwrap();
    assert!(latest > reflected);
    let (total, version, lag) = visitors("auto").await;
    assert_eq!((total, version), (n1, Some(reflected.to_string())));
    let lag: f64 = lag.expect("a lag is named").parse().unwrap();
    assert!((0.0..60.0).contains(&lag), "{lag}");
    // Every report the marts answer does so (the activity heatmap scanned `events` for
    // seconds on a month while a refresh ran).
    for kind in ["activity", "abandonment", "categories", "brands"] {
        let r = client
            .get(s.url(&format!("/v1/reports/{kind}")))
            .bearer_auth(READER)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{kind}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            header("shoplake-events-version"),
            Some(reflected.to_string()),
            "{kind} answers from the marts' snapshot"
        );
        assert!(header("shoplake-lag-seconds").is_some(), "{kind}");
    }
    s.stop().await;
}
