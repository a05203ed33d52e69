#!/usr/bin/env bash
# Live detection against history, and what checkpointing costs (issue 18).
#   bench/detect-live.sh [EVENTS] [SEEDS] [DAYS]   (default 1,369,315 events a day ≈ a generated
#   day, seeds "41 42", 1 day for the live run; the detector's rate is measured over 3 days)
# For each seed: a generated day with the default attack mix (`--network-fields --attacks
# default`) goes through `shoplake detect --input` (history) and into a fresh `shoplake serve`
# with `replay --max --connections 8` (live): prints both incident sets (rule, key, first
# window, peak) compared, and the late events. Then the detector alone reads the day from the
# log of three such days (its own state removed), twice with checkpoints every 5 s (the
# default) and twice with `detect.checkpoint_interval = "off"`, alternately: prints
# each run's time and rate, the checkpoints written (count, mean time, last size), and the
# cost of checkpointing (best rate against best rate).
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-1369315}"
seeds="${2:-41 42}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoplake/target-bench}"
cache="$HOME/.cache/shoplake/bench"
mkdir -p "$cache"
if [ -n "${SHOPLAKE_BIN:-}" ]; then
  bin="$SHOPLAKE_BIN"
else
  cargo build --release --locked -p shoplake >/dev/null
  bin="$CARGO_TARGET_DIR/release/shoplake"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "$(nproc) cores; $events events a day; seeds: $seeds"

for seed in $seeds; do
  csv="$cache/live-$events-seed$seed.csv"
  if [ ! -f "$csv" ]; then
    RUST_LOG=warn "$bin" generate --events "$events" --days 1 --seed "$seed" --network-fields \
      --attacks default --out "$csv"
  fi
  csv3="$cache/live-$((events * 3))-3days-seed$seed.csv"
  if [ ! -f "$csv3" ]; then
    RUST_LOG=warn "$bin" generate --events "$((events * 3))" --days 3 --seed "$seed" --network-fields \
      --attacks default --out "$csv3"
  fi
  python3 - "$bin" "$csv" "$work/$seed" "$seed" "$csv3" <<'PY'
import json, os, re, socket, subprocess, sys, time, urllib.request
binary, csv, work, seed, csv3 = sys.argv[1:6]
os.makedirs(work)
env = {**os.environ, "RUST_LOG": "warn"}

def incidents(text):
    return sorted((i["rule"], i["key"], i["opened_at"], i["peak"]) for i in json.loads(text))

history = incidents(subprocess.run([binary, "detect", "--input", csv, "--format", "json"],
                                   env=env, check=True, stdout=subprocess.PIPE).stdout)
total = sum(1 for _ in open(csv)) - 1

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def metrics(port, token):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                 headers={"Authorization": f"Bearer {token}"})
    out = {}
    for line in urllib.request.urlopen(req, timeout=5).read().decode().splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out

def start(data, config):
    port = free_port()
    server = subprocess.Popen([binary, "serve", "--data", data, "--listen", f"127.0.0.1:{port}",
                               "--config", config], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(f"{data}.log", "a"))
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); break
        except OSError:
            time.sleep(0.05)
    return server, port, open(f"{data}/admin.token").read().strip()

def read_all(port, token):
    while True:
        m = metrics(port, token)
        if m.get("shoplake_detector_events_total", 0) >= total:
            return m
        time.sleep(0.02)

# (a) live: the day at full speed into a fresh serve, detection beside it.
data = f"{work}/live"
config = f"{work}/live.toml"
open(config, "w").write('[delivery]\nmarts_interval = "off"\n')
server, port, token = start(data, config)
started = time.perf_counter()
subprocess.run([binary, "replay", csv, "--url", f"http://127.0.0.1:{port}", "--data", data, "--max",
                "--connections", "8", "--format", "json"], env=env, check=True, stdout=subprocess.PIPE)
acked = time.perf_counter() - started
m = read_all(port, token)
took = time.perf_counter() - started
server.send_signal(15); server.wait()
live = incidents(subprocess.run([binary, "alerts", "list", "--status", "all", "--format", "json",
                                 "--data", data], env=env, check=True, stdout=subprocess.PIPE).stdout)
same = "the same as" if live == history else f"DIFFERENT ({len(set(live) ^ set(history))} differ) from"
print(f"seed {seed}: history {len(history)} incidents; live (replay --max, 8 connections, acknowledged "
      f"in {acked:.1f} s, all read by the detector at {took:.1f} s) {len(live)} incidents, {same} "
      f"history's; late {m.get('shoplake_detector_late_events_total', 0):.0f}", flush=True)

# (b) the detector alone reading three days from the log (a data directory they were sent
# into with detection off, copied), with and without checkpoints, alternately.
total = sum(1 for _ in open(csv3)) - 1
data = f"{work}/three-days"
config = f"{work}/three-days.toml"
open(config, "w").write('[delivery]\nmarts_interval = "off"\n[detect]\nenabled = false\n')
server, port, token = start(data, config)
subprocess.run([binary, "replay", csv3, "--url", f"http://127.0.0.1:{port}", "--data", data, "--max",
                "--connections", "8", "--format", "json"], env=env, check=True, stdout=subprocess.PIPE)
server.send_signal(15); server.wait()
rates = {"5s": [], "off": []}
for run in range(2):
    for interval in ["5s", "off"]:
        copy = f"{work}/catchup-{interval}-{run}"
        subprocess.run(["cp", "-r", data, copy], check=True)
        for gone in ["detector", "alerts.db", "alerts.db-wal", "alerts.db-shm", "log/consumers/detector.json"]:
            subprocess.run(["rm", "-rf", f"{copy}/{gone}"], check=True)
        config = f"{copy}.toml"
        open(config, "w").write(f'[delivery]\nmarts_interval = "off"\n[detect]\ncheckpoint_interval = "{interval}"\n')
        started = time.perf_counter()
        server, port, token = start(copy, config)
        m = read_all(port, token)
        took = time.perf_counter() - started
        server.send_signal(15); server.wait()
        n = m.get("shoplake_detector_checkpoints_total", 0)
        mean = m.get("shoplake_detector_checkpoint_seconds_sum", 0) / n * 1000 if n else 0
        size = m.get("shoplake_detector_checkpoint_bytes", 0) / 2**20
        rates[interval].append(total / took)
        print(f"seed {seed}, detector reading {total:,} events of 3 days from the log, checkpoints {interval}: {took:.2f} s "
              f"({total / took:,.0f} events/s, start-up included); checkpoints {n:.0f} "
              f"(copying the state paused it {mean:.0f} ms each; last {size:.1f} MiB)", flush=True)
best = {k: max(v) for k, v in rates.items()}
print(f"seed {seed}: checkpointing every 5 s costs {100 * (1 - best['5s'] / best['off']):.1f} % of the detector's "
      f"rate (best of 2 each)", flush=True)
PY
done
