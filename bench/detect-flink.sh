#!/usr/bin/env bash
# The reference design's rule (a 10-second tumbling count per user, flagged above 5) over the
# same generated file, in PyFlink (Flink SQL, event time with a 5 s watermark, parallelism 1)
# and in shoplake (`shoplake detect --input` with only `user_burst`, the same window). Both
# read the CSV and count the windows above 5; each prints its rate on the same events.
#   bench/detect-flink.sh [EVENTS]   (default 2,000,000; one generated day with attacks)
# Prints per engine: wall time of the whole run (start-up, reading, detecting), the events per
# second that gives, flagged (user, window) pairs, and the ratio. shoplake's own line also
# splits decoding from detection. Flink runs in its own virtual environment (apache-flink from
# PyPI bundles Flink; it needs a Java 11+ runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-2000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoplake/target-bench}"
cache="$HOME/.cache/shoplake/bench"
venv="$HOME/.cache/shoplake/flink-venv"
mkdir -p "$cache"
command -v java >/dev/null || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless
}
cargo build --release --locked -p shoplake >/dev/null
bin="$CARGO_TARGET_DIR/release/shoplake"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet 'apache-flink==2.3.*' >/dev/null
csv="$cache/detect-$events-seed11.csv"
if [ ! -f "$csv" ]; then
  echo "generating $events events (once) into $csv"
  RUST_LOG=warn "$bin" generate --events "$events" --days 1 --seed 11 --attacks default --out "$csv"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "input: $events events, $(nproc) cores"

# shoplake: user_burst alone (the other six rules off), its second level out of reach, so
# "windows fired" counts the (user, window) pairs above 5 as Flink's query does.
rules="$work/rules.toml"
printf '[rules.user_burst]\nnotify = 1000000000\n' >"$rules"
for r in user_sustained scraper session_flood ip_flood traffic_spike robotic_timing; do
  printf '[rules.%s]\nenabled = false\n' "$r" >>"$rules"
done
start=$(date +%s.%N)
RUST_LOG=warn "$bin" detect --input "$csv" --rules "$rules" --format json >"$work/incidents.json" 2>"$work/shoplake.err"
end=$(date +%s.%N)
cat "$work/shoplake.err"
shoplake_s=$(python3 -c "print($end - $start)")
fired=$(grep -o '[0-9]* windows fired' "$work/shoplake.err" | grep -o '^[0-9]*')

# Flink: the same count in Flink SQL; flagged windows counted by a second aggregation.
cat >"$work/flink.py" <<'PY'
import os, sys, time
from pyflink.table import EnvironmentSettings, TableEnvironment
path = sys.argv[1]
t0 = time.time()
env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
conf = env.get_config()
conf.set("parallelism.default", "1")
conf.set("rest.bind-address", "127.0.0.1")
conf.set("rest.address", "127.0.0.1")
conf.set("jobmanager.bind-host", "127.0.0.1")
conf.set("taskmanager.bind-host", "127.0.0.1")
conf.set("taskmanager.host", "127.0.0.1")
env.execute_sql(f"""
CREATE TABLE events (
  event_time STRING, event_type STRING, product_id BIGINT, category_id BIGINT,
  category_code STRING, brand STRING, price DOUBLE, user_id BIGINT, user_session STRING,
  ts AS TO_TIMESTAMP(SUBSTRING(event_time FROM 1 FOR 19)),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv',
        'csv.ignore-parse-errors' = 'true', 'csv.allow-comments' = 'true')
""")
t1 = time.time()
result = env.execute_sql("""
SELECT COUNT(*) AS flagged FROM (
  SELECT user_id, window_start, COUNT(*) AS n
  FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
  GROUP BY user_id, window_start, window_end
  HAVING COUNT(*) > 5)
""")
flagged = 0
with result.collect() as rows:
    for r in rows:
        flagged = r[0]
t2 = time.time()
print(f"flink: flagged {flagged} (user, window) pairs; setup {t1 - t0:.1f} s, job {t2 - t1:.1f} s")
PY
# The CSV header would be a parse error: Flink reads a copy without it.
tail -n +2 "$csv" >"$work/events.csv"
start=$(date +%s.%N)
_python_worker_execution_mode=process "$venv/bin/python" "$work/flink.py" "$work/events.csv" 2>"$work/flink.err" | tail -1 | tee "$work/flink.out" || {
  echo "flink failed:"; tail -30 "$work/flink.err"; exit 1; }
end=$(date +%s.%N)
flink_s=$(python3 -c "print($end - $start)")
job_s=$(grep -o 'job [0-9.]*' "$work/flink.out" | grep -o '[0-9.]*$')
python3 - "$events" "$shoplake_s" "$flink_s" "$job_s" "$fired" <<'PY'
import sys
n, s, f, job, fired = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
print(f"shoplake: {s:.2f} s wall, {n / s:,.0f} events/s ({fired} (user, window) pairs above 5)")
print(f"flink:    {f:.2f} s wall, {n / f:,.0f} events/s; the job alone {job:.2f} s, {n / job:,.0f} events/s")
print(f"ratio (shoplake / flink, events/s): {f / s:.1f}x wall, {job / s:.1f}x against the job alone")
print("(the pair counts differ by the file's exact duplicates: shoplake drops them before counting, "
      "the Flink query counts them)")
PY
