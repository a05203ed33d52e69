#!/usr/bin/env bash
# Page load of the dashboard's report pages over month-scale data (the month of bench/month.sh,
# imported once with its marts, shared with bench/reports.sh), served by `shoplake serve` and
# loaded in Debian's Chromium (playwright-core), each page fresh, 5 times.
#   bench/dashboard.sh [ROWS]      (default 42,448,764: the October 2019 file's size)
# Prints per page (Overview, Visitors, Carts, Categories, Brands) the median and the slowest
# load, first with the default filters (the whole month, UTC, humans only), then for one week;
# then the same on a copy of the lake (hard links) with bot flags: `detect --flag` with
# `user_burst` lowered to 3 / 4 (the generated month has no attacks), which also refreshes the
# marts, as `serve` does after its next delivery. Last, on another copy, the same pages loaded
# over and over during a live replay (`replay --rate 2000 --restamp` of a generated day into
# `serve`, which delivers every 10 s and then refreshes the marts): each load's time, and how
# long each delivery's events waited for the marts to take them in (from the serve log).
#   DASHBOARD_LIVE_SECONDS (default 180) bounds the replay; DASHBOARD_ONLY=live runs only it.
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

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

live() {
  local lake="$1" seconds="${DASHBOARD_LIVE_SECONDS:-180}" port data replayer
  port=$(free_port)
  data="$work/live"
  mkdir -p "$data"
  local day="$cache/live-1369315-seed42.csv"
  # The day bench/detect-live.sh replays (with its attacks).
  [ -s "$day" ] || RUST_LOG=warn "$bin" generate --events 1369315 --days 1 --seed 42 \
    --network-fields --attacks default --out "$day"
  # Plain text logs with UTC timestamps (the delivery and refresh lines are parsed below).
  RUST_LOG=warn,shoplake_server::delivery=info NO_COLOR=1 "$bin" serve --data "$data" --lake "$lake" \
    --listen "127.0.0.1:$port" 2>"$data/serve.log" &
  server=$!
  for _ in $(seq 1 200); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.1
  done
  "$bin" replay "$day" --url "http://127.0.0.1:$port" --data "$data" --rate 2000 --restamp \
    --limit $((seconds * 2000)) >"$work/replay.out" 2>&1 &
  replayer=$!
  local token until=$((SECONDS + seconds))
  token=$(cat "$data/admin.token")
  : >"$work/live-loads"
  while [ $SECONDS -lt $until ] && kill -0 $replayer 2>/dev/null; do
    # A page that fails (the server refusing, a timeout) is counted, and the loop goes on.
    node crates/server/dashboard/tests/page-load.mjs "http://127.0.0.1:$port" "$token" 1 \
      >>"$work/live-loads" 2>"$work/live-error" || grep -m1 "^Error" "$work/live-error" >>"$work/live-loads" || true
  done
  kill $replayer 2>/dev/null || true; wait $replayer 2>/dev/null || true
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
  python3 - "$work/live-loads" "$data/serve.log" <<'PY'
import re, sys
from datetime import datetime
loads, log = sys.argv[1], sys.argv[2]
worst = {}
for line in open(loads):
    m = re.match(r"(\w+)\s+median\s+(\d+) ms", line)
    if m:
        worst.setdefault(m.group(1), []).append(int(m.group(2)))
errors = [l.strip() for l in open(loads) if l.startswith("Error")]
print(f"{len(errors)} page loads failed" + (f", the first: {errors[0]}" if errors else ""))
for page, ms in worst.items():
    ms.sort()
    print(f"{page:11} {len(ms):3} loads, median {ms[len(ms)//2]:6} ms, slowest {ms[-1]:6} ms")
def at(line):
    return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
deliveries, refreshes = [], []
for line in open(log):
    if "delivered" in line:
        m = re.search(r"events=(\d+)", line)
        if m and int(m.group(1)) > 0:
            deliveries.append(at(line))
    elif "marts brought up to date" in line:
        m = re.search(r"seconds=([\d.]+)", line)
        refreshes.append((at(line) - float(m.group(1)), at(line)))
waits = []
for d in deliveries:
    done = [end for start, end in refreshes if start >= d - 0.05]
    waits.append(min(done) - d if done else None)
taken = [w for w in waits if w is not None]
print(f"{len(deliveries)} deliveries with events, {len(refreshes)} refreshes; "
      f"a delivery's events waited for the marts: median {sorted(taken)[len(taken)//2] if taken else 0:.2f} s, "
      f"longest {max(taken) if taken else 0:.2f} s; {len(waits) - len(taken)} not taken in by the end")
PY
  tail -2 "$work/replay.out" || true
}

if [ "${DASHBOARD_ONLY:-}" != live ]; then
pages "$lake"

flagged="$cache/lake-$rows-seed7-flagged"
rm -rf "$flagged"
cp -al "$lake" "$flagged"
printf '[rules.user_burst]\nthreshold = 3\nnotify = 4\n' >"$work/rules.toml"
RUST_LOG=warn "$bin" detect --flag --rules "$work/rules.toml" --lake "$flagged" --format json >/dev/null
echo "with bot flags: $("$bin" query "SELECT COUNT(*) AS n, COUNT(DISTINCT user_id) AS users FROM bot_flags" --lake "$flagged" --format csv | tail -1) (flags, users)"
pages "$flagged"
fi

live_lake="$cache/lake-$rows-seed7-live"
rm -rf "$live_lake"
cp -al "$lake" "$live_lake"
echo "== during a live replay at 2,000 events/s for ${DASHBOARD_LIVE_SECONDS:-180} s (the whole month, UTC)"
live "$live_lake"
rm -rf "$live_lake"
