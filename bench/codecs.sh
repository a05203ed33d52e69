#!/usr/bin/env bash
# End-to-end codec and generator throughput, with peers on the same machine and file.
#   bench/codecs.sh [ROWS]        (default 2,000,000)
# Prints one figure per line: shoplake generate events/s, shoplake check (decode+validate,
# one core) rows/s, and DuckDB and Polars (one thread each) loading the same CSV with types,
# with the ratio of shoplake to each.
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-2000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoplake/target-bench}"
venv="$HOME/.cache/shoplake/venv"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release --locked -p shoplake >/dev/null
bin="$CARGO_TARGET_DIR/release/shoplake"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet 'duckdb==1.5.5' 'polars>=1.0' >/dev/null

now() { date +%s.%N; }
rate() { python3 -c "print(f'{$1/($3-$2):,.0f}')"; }

csv="$work/events.csv"
t0=$(now); RUST_LOG=warn "$bin" generate --events "$rows" --seed 7 --out "$csv"; t1=$(now)
echo "shoplake generate: $(rate "$rows" "$t0" "$t1") events/s ($rows events, CSV written to disk)"
bytes=$(stat -c %s "$csv")

t0=$(now); RUST_LOG=warn "$bin" check "$csv" >/dev/null; t1=$(now)
ours=$(python3 -c "print($rows/($t1-$t0))")
echo "shoplake check (decode+validate, 1 core): $(rate "$rows" "$t0" "$t1") rows/s, $(python3 -c "print(f'{$bytes/($t1-$t0)/1e6:.0f}')") MB/s"

"$venv/bin/python" - "$csv" "$rows" "$ours" <<'PY'
import sys, time
path, rows, ours = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
import duckdb
con = duckdb.connect()
con.execute("SET threads = 1")
t = time.perf_counter()
con.execute(f"""CREATE TABLE e AS SELECT * FROM read_csv('{path}', header = true,
  timestampformat = '%Y-%m-%d %H:%M:%S UTC',
  columns = {{'event_time': 'TIMESTAMP', 'event_type': 'VARCHAR', 'product_id': 'BIGINT',
  'category_id': 'BIGINT', 'category_code': 'VARCHAR', 'brand': 'VARCHAR',
  'price': 'DECIMAL(12,2)', 'user_id': 'BIGINT', 'user_session': 'VARCHAR'}})""")
n = con.execute("SELECT count(*) FROM e").fetchone()[0]
d = time.perf_counter() - t
assert n == rows, (n, rows)
print(f"duckdb {duckdb.__version__} read_csv typed (1 thread): {rows/d:,.0f} rows/s; shoplake/duckdb = {ours/(rows/d):.2f}")

import os
os.environ["POLARS_MAX_THREADS"] = "1"
import polars as pl
t = time.perf_counter()
df = pl.read_csv(path, schema={
    "event_time": pl.Utf8, "event_type": pl.Utf8, "product_id": pl.Int64, "category_id": pl.Int64,
    "category_code": pl.Utf8, "brand": pl.Utf8, "price": pl.Decimal(12, 2), "user_id": pl.Int64,
    "user_session": pl.Utf8}).with_columns(
    pl.col("event_time").str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S UTC"))
d = time.perf_counter() - t
assert df.height == rows
print(f"polars {pl.__version__} read_csv typed (1 thread): {rows/d:,.0f} rows/s; shoplake/polars = {ours/(rows/d):.2f}")
PY
