#!/usr/bin/env bash
# End-to-end detection latency: from the collector's acknowledgement of an attack to its
# incident in the alert store, under steady background traffic.
#   bench/detect-latency.sh [RATE] [PROBES]   (default 20,000 events/s, 300 probes)
# `shoplake serve` (its defaults: embedded log, detection on, SQLite alert store) takes a
# generated day replayed at RATE events/s with event times restamped to now (`replay --rate
# --restamp`, 8 connections). Meanwhile a probe client sends, five times a second, one request
# of 12 events of a fresh user within the same second (a `user_burst`), notes when the
# collector acknowledged it, then asks `GET /v1/alerts?key_type=user_id&key=USER` every 2 ms
# until the incident is there. Prints the background rate achieved and the latency p50, p90,
# p99 and max (the 2 ms polling is part of it).
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-20000}"
probes="${2:-300}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoplake/target-bench}"
cache="$HOME/.cache/shoplake/bench"
mkdir -p "$cache"
if [ -n "${SHOPLAKE_BIN:-}" ]; then
  bin="$SHOPLAKE_BIN"
else
  cargo build --release --locked -p shoplake >/dev/null
  bin="$CARGO_TARGET_DIR/release/shoplake"
fi
events=$(( rate * (probes / 5 + 30) ))
csv="$cache/latency-$events-seed13.csv"
if [ ! -f "$csv" ]; then
  echo "generating $events events (once) into $csv"
  RUST_LOG=warn "$bin" generate --events "$events" --days 1 --seed 13 --network-fields --out "$csv"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "background: $rate events/s offered; $probes probes; $(nproc) cores (server, replay and probes share them)"

python3 - "$bin" "$csv" "$rate" "$probes" "$work" <<'PY'
import http.client, json, os, signal, socket, subprocess, sys, threading, time
binary, csv, rate, probes, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
env = {**os.environ, "RUST_LOG": "warn"}

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

port = free_port()
data = f"{work}/data"
server = subprocess.Popen([binary, "serve", "--data", data, "--listen", f"127.0.0.1:{port}"],
                          env={**env, "RUST_LOG": "info"}, stdout=subprocess.DEVNULL,
                          stderr=open(f"{work}/serve.log", "w"))
for _ in range(600):
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close(); break
    except OSError:
        time.sleep(0.05)
token = open(f"{data}/admin.token").read().strip()
replay = subprocess.Popen([binary, "replay", csv, "--url", f"http://127.0.0.1:{port}", "--data", data,
                           "--rate", str(rate), "--restamp", "--connections", "8", "--format", "json",
                           "--limit", str(rate * (probes // 5 + 10))],
                          env=env, stdout=subprocess.PIPE)
time.sleep(5)  # the background settles

conn = http.client.HTTPConnection("127.0.0.1", port)
headers = {"authorization": f"Bearer {token}"}
latencies = []
base = 990_000_000
for i in range(probes):
    user = base + i
    now = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    body = "".join(json.dumps({"event_time": now, "event_type": "view", "product_id": 5_000_000 + k,
                               "category_id": 1, "category_code": "", "brand": "", "price": 1.0,
                               "user_id": user, "user_session": f"probe-{user}"}) + "\n"
                   for k in range(12))
    conn.request("POST", "/v1/events", body, {**headers, "content-type": "application/x-ndjson"})
    r = conn.getresponse(); r.read()
    acked = time.perf_counter()
    if r.status != 200:
        raise SystemExit(f"probe {i}: status {r.status}")
    while True:
        conn.request("GET", f"/v1/alerts?status=all&key_type=user_id&key={user}", headers=headers)
        r = conn.getresponse(); found = json.loads(r.read())
        if found:
            latencies.append((time.perf_counter() - acked) * 1000)
            break
        if time.perf_counter() - acked > 30:
            raise SystemExit(f"probe {i}: no incident after 30 s")
        time.sleep(0.002)
    time.sleep(max(0.0, 0.2 - (time.perf_counter() - acked)))
out, _ = replay.communicate()
server.send_signal(signal.SIGTERM); server.wait()
try:
    bg = json.loads(out)
    achieved = f"{bg['events_per_second']:,.0f} events/s ({bg['acknowledged']:,} in {bg['seconds']:.1f} s)"
except Exception:
    achieved = "(replay printed no summary)"
latencies.sort()
q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
print(f"background achieved: {achieved}")
print(f"ack -> stored incident over {len(latencies)} probes: p50 {q(0.5):.1f} ms, p90 {q(0.9):.1f} ms, "
      f"p99 {q(0.99):.1f} ms, max {latencies[-1]:.1f} ms")
PY
