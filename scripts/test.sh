#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (real binary,
# real redis-server and haproxy where a test needs them, real HTTP backends and clients).
# Installs what the suite needs from Debian packages when it is missing, or says what to do.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { # need <command> <debian-package>
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "test.sh: '$1' is missing; installing Debian package '$2'" >&2
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "test.sh: cannot install '$2' (not root, no sudo). Install it: apt-get install $2" >&2
    exit 1
  fi
  local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "$2" >/dev/null; }; then
    echo "test.sh: installing '$2' failed. Install it yourself: apt-get install $2" >&2
    exit 1
  fi
}

need cargo cargo
need redis-server redis-server
need redis-cli redis-tools
# tests/redis_cluster.rs runs a Redis Cluster with sharded pub/sub: Redis 7.0 or later.
redis_major=$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')
if [ "${redis_major:-0}" -lt 7 ]; then
  echo "test.sh: redis-server $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') is too old: the Redis Cluster tests need 7.0 or later (sharded pub/sub). Install Redis 7 (Debian 12: apt-get install redis-server)." >&2
  exit 1
fi
need haproxy haproxy
need chromium chromium
need node nodejs
need npm npm

# playwright-core drives Debian's chromium in the browser test (no browser download).
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "== installing tests/browser's npm packages"
  npm ci --prefix tests/browser --no-audit --no-fund --silent \
    || { echo "test.sh: npm could not install tests/browser (the npm registry must be reachable)" >&2; exit 1; }
fi

# Python tools for the API-compatibility tests (schemathesis, boto3, awslambdaric, moto's
# DynamoDB server), in a venv under target/ (fast when present).
venv=target/pyvenv
if [ ! -x "$venv/bin/python" ]; then
  need python3 python3
  python3 -m venv "$venv" 2>/dev/null || { need python3 python3-venv; python3 -m venv "$venv"; }
fi
if ! cmp -s tests/python/requirements.txt "$venv/.requirements" 2>/dev/null; then
  echo "== installing Python test tools into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt \
    || { echo "test.sh: pip could not install tests/python/requirements.txt (PyPI must be reachable)" >&2; exit 1; }
  cp tests/python/requirements.txt "$venv/.requirements"
fi
export SWITCHBOARD_TEST_VENV="$PWD/$venv"

# AWS's Lambda Runtime Interface Clients for tests/lambda.rs: npm aws-lambda-ric (compiled
# natively; the script installs its build tools with apt-get when missing) into
# target/lambda-ric, and awslambdaric into the venv. Fast when already installed.
scripts/lambda-rics.sh

# The npm packages of examples/aws-sam-chat's Node.js handlers (AWS SDK v3), which
# tests/aws_sam_app.rs runs: npm ci from the example's package-lock.json.
scripts/example-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
# --workspace: also load-tests/ (its smoke test runs every scenario at tiny sizes).
cargo test --locked --workspace --all-targets -- --test-threads "${TEST_THREADS:-4}"
