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
need haproxy haproxy

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets -- --test-threads "${TEST_THREADS:-4}"
