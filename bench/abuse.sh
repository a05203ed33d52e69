#!/usr/bin/env bash
# The collector under attack: each attack runs for a fixed time against a fresh `shoplake
# serve` (release build, its defaults plus three tokens) while an honest producer (`shoplake
# replay --rate`, from 127.0.0.1) sends at a steady rate, and `/healthz` is polled every 50 ms.
# Attackers connect from other loopback addresses (127.0.0.2 and up), as a client on another
# machine would. Every loop is bounded in count and time; all traffic stays on loopback.
#   bench/abuse.sh [SECONDS] [RATE]      (default 12 s per attack, 2,000 events/s honest)
# ABUSE_ONLY="query,stream" runs the baseline and the attacks whose names start with one of
# those words; ABUSE_HEALTH_LOG=FILE appends every /healthz sample (CLOCK_MONOTONIC seconds,
# the attack, milliseconds) to FILE, to line slow ones up with `perf sched record`.
# Prints one line per attack: /healthz p50/p99, the honest producer's acknowledged rate (and
# its share of the rate without an attack) and p99 latency, serve's peak RSS (VmHWM), and the
# events acknowledged against those stored in the lake after shutdown.
# Targets (issue 17): /healthz p99 <= 100 ms, honest >= 80 %, peak RSS <= 1.5 GiB, acknowledged
# = stored, under every attack.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-12}"
rate="${2:-2000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoplake/target-bench}"
cache="$HOME/.cache/shoplake/bench"
mkdir -p "$cache"
if [ -n "${SHOPLAKE_BIN:-}" ]; then
  bin="$SHOPLAKE_BIN"
else
  cargo build --release --locked -p shoplake >/dev/null
  bin="$CARGO_TARGET_DIR/release/shoplake"
fi
events=$((seconds * rate * 2))
csv="$cache/abuse-$events-seed11.csv"
if [ ! -f "$csv" ]; then
  echo "generating $events events (once) into $csv, exact duplicates removed"
  RUST_LOG=warn "$bin" generate --events "$events" --days 1 --seed 11 --out "$csv.tmp"
  # The honest producer's events are distinct, so acknowledged must equal stored exactly.
  awk '!seen[$0]++' "$csv.tmp" >"$csv"
  rm -f "$csv.tmp"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "$(nproc) cores; each attack ${seconds} s; honest producer ${rate} events/s in batches of 100"

python3 - "$bin" "$csv" "$work" "$seconds" "$rate" <<'PY'
import gzip, http.client, json, os, signal, socket, statistics, subprocess, sys, threading, time

binary, csv, work, seconds, rate = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
env = {**os.environ, "RUST_LOG": "warn"}
INGEST, READ, ADMIN = "abuse-ingest-0123456789", "abuse-read-0123456789", "abuse-admin-0123456789"
CONFIG = f'''[server]
[[server.tokens]]
name = "shop"
token = "{INGEST}"
scopes = ["ingest"]
[[server.tokens]]
name = "analyst"
token = "{READ}"
scopes = ["read"]
[[server.tokens]]
name = "admin"
token = "{ADMIN}"
scopes = ["admin"]
forward = true
[delivery]
marts_interval = "off"
'''

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port):
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")

def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")

def lake_rows(data):
    out = subprocess.run([binary, "query", "SELECT COUNT(*) AS n FROM events", "--lake", f"{data}/lake",
                          "--format", "json"], env=env, check=True, stdout=subprocess.PIPE).stdout
    return json.loads(out)[0]["n"]

def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]

class Attack:
    """Runs `step(n)` in `threads` threads until stopped, each from its own loopback address."""
    def __init__(self, port, threads, step):
        self.port, self.stop, self.accepted = port, threading.Event(), 0
        self.lock = threading.Lock()
        self.workers = [threading.Thread(target=self.loop, args=(i, step), daemon=True) for i in range(threads)]
    def source(self, i):
        return (f"127.0.0.{2 + i % 250}", 0)
    def loop(self, i, step):
        while not self.stop.is_set():
            try:
                step(self, i)
            except OSError:
                time.sleep(0.01)
    def request(self, i, method, path, body=b"", headers=None, timeout=30):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout, source_address=self.source(i))
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            if r.status == 200 and path == "/v1/events":
                n = json.loads(data).get("accepted", 0)
                with self.lock:
                    self.accepted += n
            return r.status
        finally:
            c.close()
    def start(self):
        for w in self.workers:
            w.start()
    def finish(self):
        self.stop.set()
        for w in self.workers:
            w.join(timeout=35)

def ndjson_event(product, user, extra=""):
    return (f'{{"event_time":"2019-10-01 10:00:00 UTC","event_type":"view","product_id":{product},'
            f'"category_id":7,"brand":"acme","price":9.99,"user_id":{user},"user_session":"a-{user}"{extra}}}\n')

counter = iter(range(10**12))
counter_lock = threading.Lock()
def next_id():
    with counter_lock:
        return next(counter)

# ---- the attacks ----
def none(port):
    return None

def slowloris(port):
    """Thousands of connections that send half a request head and then nothing."""
    held = []
    def step(a, i):
        if len([s for s in held if s is not None]) > 4000:
            time.sleep(0.05); return
        s = socket.socket()
        s.settimeout(2)
        s.bind(a.source(i))
        s.connect(("127.0.0.1", port))
        s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n")
        held.append(s)
        if len(held) > 6000:
            old = held.pop(0)
            old.close()
    return Attack(port, 16, step)

def big_user_agent(port):
    """2 MB bodies of valid events with a 60 KB User-Agent (cut to 1 KiB, one copy a request)."""
    agent = "A" * 60_000
    def step(a, i):
        base = next_id() * 20_000
        body = "".join(ndjson_event(900_000_000 + base + k, 1 + (base + k) % 50_000) for k in range(10_000)).encode()
        a.request(i, "POST", "/v1/events", body, {"Authorization": f"Bearer {INGEST}",
                  "Content-Type": "application/x-ndjson", "User-Agent": agent})
    return Attack(port, 4, step)

def ndjson_newlines(port):
    """`{` and a million newlines: a value the parser must scan once."""
    body = b"{" + b"\n" * 1_100_000
    def step(a, i):
        a.request(i, "POST", "/v1/events", body, {"Authorization": f"Bearer {INGEST}",
                  "Content-Type": "application/x-ndjson"})
    return Attack(port, 4, step)

def gzip_array(port):
    """A small gzipped JSON array of seven million elements: refused at the row limit."""
    body = gzip.compress(b"[1" + b",1" * 7_000_000 + b"]", 9)
    def step(a, i):
        a.request(i, "POST", "/v1/events", body, {"Authorization": f"Bearer {INGEST}",
                  "Content-Type": "application/json", "Content-Encoding": "gzip"})
    return Attack(port, 4, step)

def gzip_refused_rows(port):
    """14 MB of refused rows, gzipped: decoding work on the bounded pool."""
    line = b'{"event_time":"nope","event_type":"view","product_id":1}\n'
    body = gzip.compress(line * ((14 << 20) // len(line)), 6)
    def step(a, i):
        a.request(i, "POST", "/v1/events", body, {"Authorization": f"Bearer {INGEST}",
                  "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
    return Attack(port, 6, step)

def query_flood(port):
    """Huge queries with a read token: a shared pool, turns, and time limits."""
    body = json.dumps({"sql": "SELECT value % 1000 AS k, COUNT(*) FROM generate_series(1, 2000000000) GROUP BY 1", "limit": 1}).encode()
    def step(a, i):
        a.request(i, "POST", "/v1/query", body, {"Authorization": f"Bearer {READ}",
                  "Content-Type": "application/json"}, timeout=90)
    return Attack(port, 6, step)

def stream_flood(port):
    """Event-stream subscribers opened and held, past the cap."""
    held = []
    def step(a, i):
        if len(held) >= 400:
            time.sleep(0.05); return
        s = socket.socket(); s.settimeout(2); s.bind(a.source(i)); s.connect(("127.0.0.1", port))
        s.sendall(f"GET /v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READ}\r\n\r\n".encode())
        held.append(s)
    return Attack(port, 4, step)

def no_token_flood(port):
    """Requests without a token as fast as they go (each refused before its body is read)."""
    def step(a, i):
        a.request(i, "POST", "/v1/query", b'{"sql": "SELECT 1"}', {"Content-Type": "application/json"})
    return Attack(port, 8, step)

ATTACKS = [
    ("none (baseline)", none),
    ("slowloris: 4,000+ half-sent heads", slowloris),
    ("2 MB bodies, 60 KB User-Agent", big_user_agent),
    ("NDJSON { + 1.1 M newlines", ndjson_newlines),
    ("gzip JSON array, 7 M elements", gzip_array),
    ("gzip, 14 MB of refused rows", gzip_refused_rows),
    ("query flood (read token)", query_flood),
    ("event-stream flood", stream_flood),
    ("requests without a token", no_token_flood),
]

def run(name, make):
    data = f"{work}/{len(os.listdir(work))}"
    os.makedirs(data)
    with open(f"{data}.toml", "w") as f:
        f.write(CONFIG)
    port = free_port()
    p = subprocess.Popen([binary, "serve", "--data", data, "--listen", f"127.0.0.1:{port}",
                          "--config", f"{data}.toml"], env=env,
                         stdout=subprocess.DEVNULL, stderr=open(f"{data}.log", "w"))
    wait_port(port)
    attack = make(port)
    if attack:
        attack.start()
        # The attack runs for a fixed time, whether or not the honest producer is done.
        threading.Timer(seconds + 1, attack.stop.set).start()
        time.sleep(1)
    health, samples, stop_health = [], [], threading.Event()
    def poll():
        while not stop_health.is_set():
            started, t = time.monotonic(), time.perf_counter()
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/healthz"); c.getresponse().read(); c.close()
                health.append((time.perf_counter() - t) * 1000)
            except OSError:
                health.append(5000.0)
            samples.append((started, health[-1]))
            time.sleep(0.05)
    poller = threading.Thread(target=poll, daemon=True); poller.start()
    limit = int(seconds * rate)
    try:
        honest = json.loads(subprocess.run(
            [binary, "replay", csv, "--url", f"http://127.0.0.1:{port}", "--token", ADMIN, "--rate", str(rate),
             "--batch", "100", "--connections", "2", "--limit", str(limit), "--format", "json"],
            env=env, check=False, stdout=subprocess.PIPE, timeout=seconds * 20).stdout or b"{}")
    except subprocess.TimeoutExpired:
        honest = {}
    stop_health.set(); poller.join()
    if health_log:
        with open(health_log, "a") as f:
            f.writelines(f"{t:.6f}\t{name}\t{ms:.1f}\n" for t, ms in samples)
    if attack:
        attack.finish()
    rss = peak_rss_mib(p.pid)
    p.send_signal(signal.SIGTERM)
    code = p.wait(timeout=120)
    stored = lake_rows(data)
    acked = honest.get("acknowledged", 0) + (attack.accepted if attack else 0)
    return {
        "name": name, "health_p50": pct(health, 50), "health_p99": pct(health, 99),
        "rate": honest.get("events_per_second", 0.0), "p99": honest.get("latency_ms_p99", float("nan")),
        "rss": rss, "acked": acked, "stored": stored, "clean": code == 0,
    }

only = [w.strip() for w in os.environ.get("ABUSE_ONLY", "").split(",") if w.strip()]
if only:
    ATTACKS = [a for a in ATTACKS if a[1] is none or any(a[0].startswith(w) for w in only)]
health_log = os.environ.get("ABUSE_HEALTH_LOG")

rows = []
for name, make in ATTACKS:
    r = run(name, make)
    rows.append(r)
    base = rows[0]["rate"] or 1
    ok = (r["health_p99"] <= 100 and r["rate"] >= 0.8 * base and r["rss"] <= 1536 and r["acked"] == r["stored"] and r["clean"])
    print(f"{r['name']:<36} healthz p50 {r['health_p50']:6.1f} ms p99 {r['health_p99']:7.1f} ms | honest "
          f"{r['rate']:7,.0f} ev/s ({100 * r['rate'] / base:5.1f} %) p99 {r['p99']:7.1f} ms | peak RSS "
          f"{r['rss']:6.0f} MiB | acknowledged {r['acked']:,} stored {r['stored']:,} | "
          f"{'meets the targets' if ok else 'MISSES a target'}", flush=True)
PY
