#!/usr/bin/env bash
# Batch import, end to end, beside DuckDB on the same machine and file.
#   bench/import.sh [ROWS]      (default 42,448,764: the October 2019 file's size)
# Generates the CSV once (cached), then times (the marts refresh that follows an import is
# timed apart, as DuckDB builds none):
#   shoplake import FILE        (validate, clean, dedupe, write Delta partitioned by date)
#   DuckDB (2 threads)          (read the CSV with types, drop exact duplicates, write Parquet
#                                partitioned by date)
# and prints rows/s for each, the ratio, and shoplake's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/month.sh "$@"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
size=$(stat -c %s "$csv")
echo "input: $rows rows, $((size / 1000000)) MB, $(nproc) cores"

"$venv/bin/python" - "$bin" "$csv" "$rows" "$work" <<'PY'
import os, resource, subprocess, sys, time
binary, csv, rows, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

t = time.perf_counter()
subprocess.run([binary, "import", csv, "--lake", f"{work}/lake", "--format", "json", "--no-marts"],
               check=True, stdout=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
ours = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"shoplake import: {rows/ours:,.0f} rows/s ({ours:.1f} s), peak RSS {rss:,.0f} MiB")
t = time.perf_counter()
subprocess.run([binary, "marts", "rebuild", "--lake", f"{work}/lake"], check=True,
               stdout=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
marts = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"then the marts (UTC), which `shoplake import` builds unless --no-marts: {marts:.1f} s, "
      f"peak RSS of import and marts {rss:,.0f} MiB")

import duckdb
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("SET preserve_insertion_order = false")
t = time.perf_counter()
con.execute(f"""COPY (SELECT DISTINCT *, CAST(event_time AS DATE) AS event_date FROM read_csv('{csv}', header = true,
  timestampformat = '%Y-%m-%d %H:%M:%S UTC',
  columns = {{'event_time': 'TIMESTAMP', 'event_type': 'VARCHAR', 'product_id': 'BIGINT',
  'category_id': 'BIGINT', 'category_code': 'VARCHAR', 'brand': 'VARCHAR',
  'price': 'DECIMAL(12,2)', 'user_id': 'BIGINT', 'user_session': 'VARCHAR'}}))
  TO '{work}/duck' (FORMAT parquet, PARTITION_BY (event_date))""")
duck = time.perf_counter() - t
print(f"duckdb {duckdb.__version__} (2 threads) CSV -> dedupe -> partitioned Parquet: {rows/duck:,.0f} rows/s ({duck:.1f} s)")
print(f"shoplake/duckdb = {duck/ours:.2f}")
PY
