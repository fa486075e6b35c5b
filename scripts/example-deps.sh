#!/usr/bin/env bash
# Installs the npm packages of examples/aws-sam-chat's Node.js handlers (the AWS SDK for
# JavaScript v3) into examples/aws-sam-chat/node/node_modules, from its committed
# package-lock.json: what `sam build` would bundle. tests/aws_sam_app.rs runs those handlers.
# Fast when already installed (the lock file is compared with the one npm last installed).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=examples/aws-sam-chat/node
command -v npm >/dev/null 2>&1 || { echo "example-deps.sh: npm is missing: apt-get install npm" >&2; exit 1; }
if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed" 2>/dev/null; then
  echo "== installing $dir's npm packages (npm ci)"
  npm ci --prefix "$dir" --no-audit --no-fund --silent \
    || { echo "example-deps.sh: npm could not install $dir's packages (the npm registry must be reachable)" >&2; exit 1; }
  cp "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed"
fi
