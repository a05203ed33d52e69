#!/usr/bin/env bash
# System packages the build needs, installed with apt when missing (CI and the test command
# run this; on another system install cmake and the libcurl headers by hand).
# rdkafka builds librdkafka with cmake; librdkafka 2.12 includes curl/curl.h even without
# curl support. Debian's libcurl4-openssl-dev can lag the installed libcurl4 by a security
# update: then the matching libcurl4 is installed alongside it.
set -euo pipefail
if ! command -v cmake >/dev/null || { [ ! -e /usr/include/x86_64-linux-gnu/curl/curl.h ] && [ ! -e /usr/include/curl/curl.h ]; }; then
  echo "== apt: cmake libcurl4-openssl-dev"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  if ! apt-get install -y -qq --no-install-recommends cmake libcurl4-openssl-dev; then
    want=$(apt-cache policy libcurl4-openssl-dev | awk '/Candidate:/ {print $2}')
    apt-get install -y -qq --no-install-recommends --allow-downgrades \
      cmake "libcurl4=$want" "libcurl4-openssl-dev=$want"
  fi
fi

# PostgreSQL (the alert store's second backend; its tests start a server of their own).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "== apt: postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  apt-get install -y -qq --no-install-recommends postgresql
fi

# Node.js and npm: the build installs the dashboard's charting library with npm (build.rs),
# and the browser test runs under node.
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "== apt: nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  apt-get install -y -qq --no-install-recommends nodejs npm
fi

# Chromium for the dashboard's browser test (driven by playwright-core from npm; never a
# downloaded browser).
if ! command -v chromium >/dev/null; then
  echo "== apt: chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  apt-get install -y -qq --no-install-recommends chromium
fi
