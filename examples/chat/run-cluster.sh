#!/usr/bin/env bash
# The chat example on three Switchboard nodes without Docker: redis-server, three nodes
# (deploy/switchboard.toml, the compose configuration), haproxy in front on :8080, and the
# chat backend on :3000. Open http://127.0.0.1:3000/ in two browser tabs. Ctrl-C stops all.
# Needs: a release build (cargo build --release), redis-server, haproxy, python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/release/switchboard
[ -x "$bin" ] || { echo "run 'cargo build --release' first" >&2; exit 1; }
for tool in redis-server haproxy python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install ${tool/python3/python3})" >&2; exit 1; }
done
export SWITCHBOARD_TOKEN=${SWITCHBOARD_TOKEN:-dev-token-change-me}
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
pids+=($!)
servers=""
for i in 1 2 3; do
  SWITCHBOARD__CLUSTER__REDIS_URL=redis://127.0.0.1:6390 \
  SWITCHBOARD__CLIENT__LISTEN=127.0.0.1:808$i \
  SWITCHBOARD__MANAGEMENT__LISTEN=127.0.0.1:818$i \
  SWITCHBOARD__MANAGEMENT__BEARER_TOKENS=$SWITCHBOARD_TOKEN \
  SWITCHBOARD__INTEGRATIONS__CHAT__URL=http://127.0.0.1:3000/events \
  SWITCHBOARD__LOG__FORMAT=text \
    "$bin" serve --config deploy/switchboard.toml >"$dir/node$i.log" 2>&1 &
  pids+=($!)
  servers+="    server node$i 127.0.0.1:808$i check port 818$i
"
done
cat >"$dir/haproxy.cfg" <<CFG
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
frontend websocket
    bind 127.0.0.1:8080
    default_backend gateways
backend gateways
    balance roundrobin
    option httpchk GET /readyz
    http-check expect ! string draining
    option redispatch
    retries 2
$servers
CFG
haproxy -f "$dir/haproxy.cfg" -db >"$dir/haproxy.log" 2>&1 &
pids+=($!)
SWITCHBOARD_MANAGEMENT_URL=http://127.0.0.1:8181,http://127.0.0.1:8182,http://127.0.0.1:8183 \
SWITCHBOARD_PUBLIC_URL=ws://127.0.0.1:8080/prod HOST=127.0.0.1 PORT=3000 \
  python3 examples/chat/server.py &
pids+=($!)
echo "chat on three nodes: open http://127.0.0.1:3000/ (logs in $dir); Ctrl-C stops everything"
wait
