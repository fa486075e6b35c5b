#!/usr/bin/env bash
# Runs Autobahn|Testsuite's fuzzing client (wstest -m fuzzingclient) against Switchboard's
# echo route and prints a summary of its report. Not part of CI (see docs/conformance.md).
#
# Autobahn|Testsuite is Python 2.7 only (PyPI `autobahntestsuite`), so this needs a
# python2.7 interpreter: set PYTHON2, or have `python2.7` on PATH, or a pyenv 2.7.x.
# Usage: scripts/autobahn.sh [path/to/switchboard]    (default: builds target/release)
set -euo pipefail
cd "$(dirname "$0")/.."

works() { [ -n "${1:-}" ] && "$1" -c 'import sys; assert sys.version_info[0] == 2' >/dev/null 2>&1; }
if ! works "${PYTHON2:-}"; then
  PYTHON2="$(command -v python2.7 || true)"
  if ! works "$PYTHON2" && command -v pyenv >/dev/null; then
    v="$(pyenv versions --bare | grep -E '^2\.7' | tail -1 || true)"
    PYTHON2="$(pyenv root)/versions/$v/bin/python2.7"
  fi
fi
works "${PYTHON2:-}" || { echo "autobahn.sh: needs python2.7 (set PYTHON2)" >&2; exit 1; }

WORK="${AUTOBAHN_DIR:-target/autobahn}"
mkdir -p "$WORK"
if [ ! -d "$WORK/site/autobahntestsuite" ]; then
  "$PYTHON2" -m pip install -q --target "$WORK/site" autobahntestsuite
fi

BIN="${1:-}"
if [ -z "$BIN" ]; then
  cargo build --release -q
  BIN=target/release/switchboard
fi

cat > "$WORK/switchboard.toml" <<TOML
[client]
listen = "127.0.0.1:9001"
[management]
listen = "127.0.0.1:9002"
auth = "bearer"
bearer_tokens = ["autobahn-token-0123456789"]
[log]
level = "warn"
[routes."\$default"]
integration = "echo"
two_way = true
[integrations.echo]
type = "mock"
template = "\$input.body"
TOML

cat > "$WORK/fuzzingclient.json" <<JSON
{
  "outdir": "$WORK/reports",
  "servers": [{"agent": "switchboard", "url": "ws://127.0.0.1:9001/prod"}],
  "cases": ["*"],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
JSON

"$BIN" serve --config "$WORK/switchboard.toml" > "$WORK/gateway.log" 2>&1 &
GATEWAY=$!
trap 'kill $GATEWAY 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/9001) 2>/dev/null && break
  sleep 0.1
done

"$PYTHON2" -c "
import site, sys
site.addsitedir('$WORK/site')
sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', '$WORK/fuzzingclient.json']
from autobahntestsuite import wstest
wstest.run()
" > "$WORK/wstest.log" 2>&1

python3 - "$WORK/reports/index.json" <<'PY'
import collections, json, sys
report = json.load(open(sys.argv[1]))["switchboard"]
by = collections.Counter(r["behavior"] for r in report.values())
print("Autobahn|Testsuite fuzzingclient, %d cases (12.* and 13.* permessage-deflate excluded)" % len(report))
for behavior, n in sorted(by.items()):
    print("  %-14s %d" % (behavior, n))
def key(case):
    return [int(p) for p in case.split(".")]
for behavior in ("FAILED", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "WRONG CODE"):
    cases = sorted((c for c, r in report.items() if r["behavior"] == behavior), key=key)
    if cases:
        print("%s: %s" % (behavior, " ".join(cases)))
PY
