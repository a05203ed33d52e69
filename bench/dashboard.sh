#!/usr/bin/env bash
# Page load of the dashboard's report pages over month-scale data (the month of bench/month.sh,
# imported once with its marts, shared with bench/reports.sh), served by `shoplake serve` and
# loaded in Debian's Chromium (playwright-core), each page fresh, 5 times.
#   bench/dashboard.sh [ROWS]      (default 42,448,764: the October 2019 file's size)
# Prints per page (Overview, Visitors, Carts, Categories, Brands) the median and the slowest
# load, first with the default filters (the whole month, UTC, humans only), then for one week;
# then the same on a copy of the lake (hard links) with bot flags: `detect --flag` with
# `user_burst` lowered to 3 / 4 (the generated month has no attacks), which also refreshes the
# marts, as `serve` does after its next delivery.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/month.sh "$@"
month_lake
# Marts written by an older release (another layout) are not read: rebuild them first.
if ! "$bin" report visitors --source marts --lake "$lake" --format json >/dev/null 2>&1; then
  echo "rebuilding the marts (written by another release)"
  RUST_LOG=warn "$bin" marts rebuild --lake "$lake" >/dev/null
fi
command -v chromium >/dev/null || bash scripts/system-deps.sh
(cd crates/server/dashboard && [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --loglevel=error)
flags=$("$bin" query "SELECT COUNT(*) AS n FROM bot_flags" --lake "$lake" --format csv | tail -1)
echo "lake: $rows rows generated, $flags bot flags, $(nproc) cores"
work="$(mktemp -d)"
server=""
trap '[ -n "$server" ] && kill $server 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

pages() {
  local lake="$1" port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$work/serve-$port"
  printf '[delivery]\nmarts_interval = "off"\n' >"$work/serve-$port/shoplake.toml"
  RUST_LOG=warn "$bin" serve --data "$work/serve-$port" --lake "$lake" --listen "127.0.0.1:$port" \
    --config "$work/serve-$port/shoplake.toml" 2>"$work/serve-$port/serve.log" &
  server=$!
  for _ in $(seq 1 200); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.1
  done
  local token
  token=$(cat "$work/serve-$port/admin.token")
  echo "== the whole month, UTC, humans only"
  node crates/server/dashboard/tests/page-load.mjs "http://127.0.0.1:$port" "$token" 5
  echo "== one week (2019-10-07 to 2019-10-13)"
  FILTERS="from=2019-10-07&to=2019-10-13" node crates/server/dashboard/tests/page-load.mjs "http://127.0.0.1:$port" "$token" 5
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
}

pages "$lake"

flagged="$cache/lake-$rows-seed7-flagged"
rm -rf "$flagged"
cp -al "$lake" "$flagged"
printf '[rules.user_burst]\nthreshold = 3\nnotify = 4\n' >"$work/rules.toml"
RUST_LOG=warn "$bin" detect --flag --rules "$work/rules.toml" --lake "$flagged" --format json >/dev/null
echo "with bot flags: $("$bin" query "SELECT COUNT(*) AS n, COUNT(DISTINCT user_id) AS users FROM bot_flags" --lake "$flagged" --format csv | tail -1) (flags, users)"
pages "$flagged"
