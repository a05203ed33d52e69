#!/usr/bin/env bash
# How often an event falls in the cell (user, local hour in UTC, category code) of its
# session's event before: the share the rebuild's scan counts in the open session instead of
# its cells map (see crates/query/src/marts/whole.rs, `OpenSession::count`).
#   bench/session-cells.sh [DAY]    (default 2019-10-05 of the cached 30-day bench lake)
# Needs the lake bench/marts.sh caches and the Python venv scripts/test.sh installs.
set -euo pipefail
day="${1:-2019-10-05}"
lake="$HOME/.cache/shoplake/bench/marts-lake-30d-seed7"
venv="$HOME/.cache/shoplake/venv"
[ -d "$lake/events" ] || { echo "no $lake: run bench/marts.sh 30 first" >&2; exit 1; }
[ -x "$venv/bin/python" ] || { echo "no $venv: run scripts/test.sh first" >&2; exit 1; }
"$venv/bin/python" - "$lake/events/event_date=$day" <<'PY'
import glob, sys
import polars as pl
files = glob.glob(sys.argv[1] + "/*.parquet")
df = pl.read_parquet(files, columns=["event_time", "user_id", "user_session", "category_code"])
df = df.sort("event_time").with_columns(pl.col("event_time").dt.hour().alias("h"))
prev = [pl.col(c).shift(1).over("user_session").alias("p_" + c)
        for c in ["h", "category_code", "user_id"]]
s = df.with_columns(prev).filter(pl.col("user_session").is_not_null())
same = s.filter((pl.col("p_h") == pl.col("h"))
                & pl.col("p_category_code").eq_missing(pl.col("category_code"))
                & (pl.col("p_user_id") == pl.col("user_id")))
print(f"{sys.argv[1]}: {len(df)} events, {len(s)} with a session, "
      f"{len(same)} in their session's cell before ({len(same) / len(s):.1%})")
PY
