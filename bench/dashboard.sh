#!/usr/bin/env bash
# Page load of the dashboard's report pages over month-scale data (the month of bench/month.sh,
# imported once with its marts, shared with bench/reports.sh), served by `shoplake serve` and
# loaded in Debian's Chromium (playwright-core), each page fresh, 5 times.
#   bench/dashboard.sh [ROWS]      (default 42,448,764: the October 2019 file's size)
# Prints per page (Overview, Visitors, Carts, Categories, Brands) the median and the slowest
# load, first with the default filters (the whole month, UTC, humans only), then for one week.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/month.sh "$@"
lake="$cache/lake-$rows-seed7"
if [ ! -d "$lake/events" ]; then
  echo "importing (once) into $lake"
  RUST_LOG=warn "$bin" import "$csv" --lake "$lake" >/dev/null
fi
command -v chromium >/dev/null || bash scripts/system-deps.sh
(cd crates/server/dashboard && [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --loglevel=error)
flags=$("$bin" query "SELECT COUNT(*) AS n FROM bot_flags" --lake "$lake" --format csv | tail -1)
echo "lake: $rows rows generated, $flags bot flags, $(nproc) cores"
work="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '[delivery]\nmarts_interval = "off"\n' >"$work/shoplake.toml"
RUST_LOG=warn "$bin" serve --data "$work" --lake "$lake" --listen "127.0.0.1:$port" --config "$work/shoplake.toml" 2>"$work/serve.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 200); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  sleep 0.1
done
token=$(cat "$work/admin.token")
echo "== the whole month, UTC, humans only"
node crates/server/dashboard/tests/page-load.mjs "http://127.0.0.1:$port" "$token" 5
echo "== one week (2019-10-07 to 2019-10-13)"
FILTERS="from=2019-10-07&to=2019-10-13" node crates/server/dashboard/tests/page-load.mjs "http://127.0.0.1:$port" "$token" 5
