# Shared by bench/import.sh, bench/reports.sh and bench/dashboard.sh (sourced, not run): builds
# the release binary, installs DuckDB into the cached venv, and generates the month-scale CSV
# once. Sets: rows, cache, venv, bin, csv; `month_lake` sets lake.
rows="${1:-42448764}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoplake/target-bench}"
cache="$HOME/.cache/shoplake/bench"
venv="$HOME/.cache/shoplake/venv"
mkdir -p "$cache"

cargo build --release --locked -p shoplake >/dev/null
bin="$CARGO_TARGET_DIR/release/shoplake"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet 'duckdb==1.5.5' >/dev/null

csv="$cache/events-$rows-seed7.csv"
if [ ! -f "$csv" ]; then
  echo "generating $rows rows (once) into $csv"
  RUST_LOG=warn "$bin" generate --events "$rows" --seed 7 --out "$csv"
fi

# The month imported once (cached; the import builds the UTC marts) into $lake.
month_lake() {
  lake="$cache/lake-$rows-seed7"
  if [ ! -d "$lake/events" ]; then
    echo "importing (once) into $lake"
    RUST_LOG=warn "$bin" import "$csv" --lake "$lake" >/dev/null
  fi
}
