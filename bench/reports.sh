#!/usr/bin/env bash
# The four reports over month-scale data, beside DuckDB on the same machine and Parquet files.
#   bench/reports.sh [ROWS]      (default 42,448,764: the October 2019 file's size)
# Generates the CSV and imports it once (both cached under ~/.cache/shoplake/bench; the import
# builds the UTC marts), then times each `shoplake report ... --format json` end to end (process
# start, opening the lake, the queries) from the marts (`--source marts`) and from `events`
# (`--source events`), and DuckDB running the equivalent SQL over the same Parquet files (UTC
# days); prints each time and the ratio DuckDB / shoplake-events.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/month.sh "$@"
month_lake
echo "lake: $rows rows generated, $(nproc) cores"

"$venv/bin/python" - "$bin" "$lake" <<'PY'
import os, statistics, subprocess, sys, time
import duckdb
binary, lake = sys.argv[1], sys.argv[2]

def ours(report, source, runs=1):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([binary, "report", report, "--source", source, "--lake", lake, "--format", "json"],
                       check=True, stdout=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
        times.append(time.perf_counter() - t)
    return statistics.median(times)

con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("SET TimeZone = 'UTC'")
con.execute(f"""CREATE VIEW events AS SELECT * FROM read_parquet('{lake}/events/**/*.parquet',
                hive_partitioning = true)""")
W = 24 * 3600 * 1_000_000
duck_sql = {
  "visitors": ["""
    WITH e AS (SELECT user_id, user_session, CAST(event_time AS DATE) AS day FROM events),
    daily AS (SELECT day, COUNT(DISTINCT user_id) AS visitors, COUNT(DISTINCT user_session) AS sessions,
                     COUNT(*) AS events FROM e GROUP BY day),
    firsts AS (SELECT user_id, MIN(event_time) AS first FROM events GROUP BY user_id),
    fresh AS (SELECT CAST(first AS DATE) AS first_day, COUNT(*) AS new_visitors FROM firsts GROUP BY 1)
    SELECT daily.*, COALESCE(new_visitors, 0) FROM daily LEFT JOIN fresh ON day = first_day ORDER BY 1"""],
  "abandonment": ["""
    WITH s AS (SELECT user_session, MIN(event_time) AS first,
                      MAX(CASE WHEN event_type = 'cart' THEN 1 ELSE 0 END) AS has_cart,
                      MAX(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) AS has_purchase
               FROM events WHERE user_session IS NOT NULL GROUP BY user_session)
    SELECT CAST(first AS DATE) AS day, SUM(has_cart), SUM(CASE WHEN has_cart = 1 AND has_purchase = 0 THEN 1 ELSE 0 END)
    FROM s GROUP BY 1 ORDER BY 1""", f"""
    WITH c AS (SELECT user_id, product_id, MIN(epoch_us(event_time)) AS carted,
                      arg_min(price, event_time) AS price, arg_min(brand, event_time) AS brand,
                      arg_min(category_code, event_time) AS category_code
               FROM events WHERE event_type = 'cart' GROUP BY user_id, product_id),
    p AS (SELECT user_id, product_id, epoch_us(event_time) AS t FROM events WHERE event_type = 'purchase'),
    r AS (SELECT c.user_id, c.product_id FROM c JOIN p ON c.user_id = p.user_id AND c.product_id = p.product_id
          WHERE p.t >= c.carted AND p.t <= c.carted + {W} GROUP BY ALL),
    n AS (SELECT MAX(epoch_us(event_time)) AS newest FROM events)
    SELECT c.*, CASE WHEN r.user_id IS NOT NULL THEN 'recovered' WHEN c.carted + {W} > n.newest THEN 'pending'
                     ELSE 'abandoned' END AS status
    FROM c LEFT JOIN r ON c.user_id = r.user_id AND c.product_id = r.product_id CROSS JOIN n"""],
  "categories": ["""
    SELECT hour(event_time) AS bucket,
           COALESCE(NULLIF(split_part(category_code, '.', 1), ''), '(unknown)') AS category,
           SUM(CASE WHEN event_type = 'view' THEN 1 ELSE 0 END) AS views,
           SUM(CASE WHEN event_type = 'cart' THEN 1 ELSE 0 END) AS carts,
           SUM(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) AS purchases,
           SUM(CASE WHEN event_type = 'purchase' THEN price ELSE 0 END) AS revenue,
           COUNT(DISTINCT user_id) AS visitors
    FROM events GROUP BY ALL"""],
  "brands": ["""
    SELECT brand, COALESCE(NULLIF(split_part(category_code, '.', 1), ''), '(unknown)') AS category, COUNT(*),
           SUM(CASE WHEN event_type = 'view' THEN 1 ELSE 0 END) AS views,
           SUM(CASE WHEN event_type = 'cart' THEN 1 ELSE 0 END) AS carts,
           SUM(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) AS purchases,
           SUM(CASE WHEN event_type = 'purchase' THEN price ELSE 0 END) AS revenue,
           SUM(CASE WHEN event_type = 'view' THEN price ELSE 0 END) AS view_price
    FROM events WHERE brand IS NOT NULL GROUP BY ALL"""],
}
in_marts = {"visitors", "abandonment", "categories", "brands"}
print(f"{'report':<12} {'shoplake marts':>15} {'shoplake events':>16} {'duckdb':>9} {'duckdb/events':>14}")
for report in ["visitors", "abandonment", "categories", "brands"]:
    marts = f"{ours(report, 'marts', 9) * 1000:>12.0f} ms" if report in in_marts else f"{'-':>15}"
    events_s = ours(report, "events")
    t = time.perf_counter()
    for q in duck_sql[report]:
        con.execute(q).fetchall()
    duck_s = time.perf_counter() - t
    print(f"{report:<12} {marts} {events_s:>15.2f}s {duck_s:>8.2f}s {duck_s/events_s:>14.2f}")
PY
