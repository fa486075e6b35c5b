#!/usr/bin/env bash
# Installs AWS's Lambda Runtime Interface Clients for the `lambda` integration tests:
#   - npm `aws-lambda-ric@3.3.0` (the line for Node.js 16/18/20) into target/lambda-ric;
#     its launcher is target/lambda-ric/node_modules/.bin/aws-lambda-ric.
#   - PyPI `awslambdaric` into the test venv target/pyvenv (listed in
#     tests/python/requirements.txt, which scripts/test.sh installs; this script installs
#     it too when run alone).
#
# The npm package has no prebuilt binaries: every install compiles libcurl, aws-lambda-cpp
# and a node addon, which needs `cmake make g++ autoconf automake libtool` (plus tar, gzip,
# python3). When one is missing this script installs it with apt-get (as root, or with sudo)
# and says so. Fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_RIC_VERSION=3.3.0
PYTHON_RIC_VERSION=4.2.2 # keep equal to tests/python/requirements.txt
ric_dir=target/lambda-ric
venv=target/pyvenv

apt_install() { # apt_install <package>...
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "lambda-rics.sh: missing build tools; install them: apt-get install $*" >&2
    exit 1
  fi
  local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "lambda-rics.sh: installing Debian packages to build aws-lambda-ric: $*" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "$@" >/dev/null
}

# --- Node.js: aws-lambda-ric ---
installed=""
if [ -f "$ric_dir/node_modules/aws-lambda-ric/package.json" ]; then
  installed=$(node -p "require('./$ric_dir/node_modules/aws-lambda-ric/package.json').version" 2>/dev/null || true)
fi
if [ "$installed" != "$NODE_RIC_VERSION" ] || [ ! -x "$ric_dir/node_modules/.bin/aws-lambda-ric" ]; then
  missing=()
  for pair in cmake:cmake make:make g++:g++ autoconf:autoconf automake:automake \
              libtoolize:libtool tar:tar gzip:gzip python3:python3; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
  echo "== installing aws-lambda-ric@$NODE_RIC_VERSION into $ric_dir (compiles natively; takes a few minutes)"
  mkdir -p "$ric_dir"
  [ -f "$ric_dir/package.json" ] || echo '{"private":true}' > "$ric_dir/package.json"
  npm install --prefix "$ric_dir" --no-audit --no-fund --no-save "aws-lambda-ric@$NODE_RIC_VERSION" \
    || { echo "lambda-rics.sh: npm could not install aws-lambda-ric (the npm registry must be reachable)" >&2; exit 1; }
fi

# --- Python: awslambdaric (manylinux wheels: no compiler needed on glibc) ---
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
have=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("awslambdaric"))' 2>/dev/null || true)
if [ "$have" != "$PYTHON_RIC_VERSION" ]; then
  echo "== installing awslambdaric==$PYTHON_RIC_VERSION into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "awslambdaric==$PYTHON_RIC_VERSION" \
    || { echo "lambda-rics.sh: pip could not install awslambdaric (PyPI must be reachable)" >&2; exit 1; }
fi

echo "lambda-rics.sh: node launcher $PWD/$ric_dir/node_modules/.bin/aws-lambda-ric"
echo "lambda-rics.sh: python        $PWD/$venv/bin/python (-m awslambdaric)"
