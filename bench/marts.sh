#!/usr/bin/env bash
# What keeping the marts fresh costs as history grows (issue 20).
#   bench/marts.sh [DAYS ...]      (default: 1 7 30; MARTS_LONG=1 adds 90)
# For each history of DAYS generated days (about 1.37 M events a day, seed 7, from 2019-10-01;
# generated and imported once with --no-marts, cached under ~/.cache/shoplake/bench), on a copy
# of that lake:
#   full rebuild      `shoplake marts rebuild` from nothing
#   +10 k next day    10,000 events of the day after the history imported, then the refresh;
#                     beside it, the visitors report while the marts are stale
#   +10 k late        10,000 events spread over the history's days, then the refresh
#   +flags            a day's 30,000 events with 100 bursting bots imported and refreshed, then
#                     `detect --flag` over that day (about 100 user-day verdicts), then the refresh
# and prints each refresh's time and peak RSS (the process's own, from wait4). The refresh is
# `shoplake marts refresh` when the binary has it (only what changed), else `marts rebuild`.
set -euo pipefail
cd "$(dirname "$0")/.."
days=("$@")
[ ${#days[@]} -gt 0 ] || days=(1 7 30)
[ "${MARTS_LONG:-0}" = 1 ] && days+=(90)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoplake/target-bench}"
cache="$HOME/.cache/shoplake/bench"
mkdir -p "$cache"
if [ -z "${SHOPLAKE_BIN:-}" ]; then
  cargo build --release --locked -p shoplake >/dev/null
  SHOPLAKE_BIN="$CARGO_TARGET_DIR/release/shoplake"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "shoplake $("$SHOPLAKE_BIN" --version | cut -d' ' -f2), $(nproc) cores"

python3 - "$SHOPLAKE_BIN" "$cache" "$work" "${days[@]}" <<'PY'
import datetime, os, shutil, subprocess, sys, time
binary, cache, work = sys.argv[1], sys.argv[2], sys.argv[3]
histories = [int(d) for d in sys.argv[4:]]
env = {**os.environ, "RUST_LOG": "warn"}
start = datetime.date(2019, 10, 1)
def supports(*args):
    return subprocess.run([binary, *args, "--help"], capture_output=True).returncode == 0
refresh = ["marts", "refresh"] if supports("marts", "refresh") else ["marts", "rebuild"]
# `detect --flag` refreshes the marts itself unless told not to (older binaries always do; the
# refresh timed after it is then a second one).
no_marts = ["--no-marts"] if "--no-marts" in subprocess.run(
    [binary, "detect", "--help"], capture_output=True, text=True).stdout else []

def timed(args):
    """Runs shoplake and measures its own peak RSS (wait4 on this child alone)."""
    t = time.perf_counter()
    p = subprocess.Popen([binary, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t
    if status != 0:
        sys.exit(f"shoplake {' '.join(args)} failed: {p.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024

def generate(out, day, days, events, seed, attacks="none"):
    subprocess.run([binary, "generate", "--start", day.isoformat(), "--days", str(days),
                    "--events", str(events), "--seed", str(seed), "--attacks", attacks,
                    "--out", out], env=env, check=True, stdout=subprocess.DEVNULL)

def load(lake, csv):
    subprocess.run([binary, "import", csv, "--lake", lake, "--no-marts", "--format", "json"],
                   env=env, check=True, stdout=subprocess.DEVNULL)

print(f"refresh command: shoplake {' '.join(refresh)}")
print(f"{'history':>8} {'rows':>11} | {'full rebuild':>17} | {'+10 k next day':>17} {'report (stale)':>14} | "
      f"{'+10 k late':>17} | {'+flags':>17}")
for d in histories:
    base = f"{cache}/marts-lake-{d}d-seed7"
    if not os.path.isdir(f"{base}/events"):
        csv = f"{work}/history.csv"
        print(f"generating and importing {d} day(s) (once) into {base}", flush=True)
        generate(csv, start, d, round(1_369_315 * d), 7)
        load(base, csv)
        os.remove(csv)
    lake = f"{work}/lake"
    shutil.rmtree(lake, ignore_errors=True)
    shutil.copytree(base, lake)
    rows = subprocess.run([binary, "query", "--lake", lake, "--format", "csv",
                           "SELECT COUNT(*) AS n FROM events"], env=env, check=True,
                          capture_output=True, text=True).stdout.split()[-1]
    full = timed(["marts", "rebuild", "--lake", lake])
    # 10 k events of the next day, as a delivery or a small import brings them.
    generate(f"{work}/next.csv", start + datetime.timedelta(days=d), 1, 10_000, 101)
    load(lake, f"{work}/next.csv")
    stale = timed(["report", "visitors", "--lake", lake, "--format", "json"])
    nxt = timed([*refresh, "--lake", lake])
    # 10 k late events over the old days.
    generate(f"{work}/late.csv", start, d, 10_000, 102)
    load(lake, f"{work}/late.csv")
    late = timed([*refresh, "--lake", lake])
    # Bots on a day in the middle, imported and refreshed; then their verdicts.
    day = start + datetime.timedelta(days=d // 2)
    generate(f"{work}/bots.csv", day, 1, 30_000, 103, "burst=100")
    load(lake, f"{work}/bots.csv")
    timed([*refresh, "--lake", lake])
    flagged = subprocess.run([binary, "detect", "--lake", lake, "--from", day.isoformat(),
                              "--to", day.isoformat(), "--flag", *no_marts], env=env, check=True,
                             capture_output=True, text=True)
    note = [l for l in (flagged.stdout + flagged.stderr).splitlines() if "bot_flags:" in l]
    flags = timed([*refresh, "--lake", lake])
    cell = lambda r: f"{r[0]:6.2f} s {r[1]:5.0f} MiB"
    print(f"{d:>6} d {int(rows):>11,} | {cell(full):>17} | {cell(nxt):>17} {stale[0]:12.2f} s | "
          f"{cell(late):>17} | {cell(flags):>17}", flush=True)
    if note:
        print(f"         ({note[-1].strip()})")
    shutil.rmtree(lake)
PY
