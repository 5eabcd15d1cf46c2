#!/usr/bin/env bash
# Web UI benchmark (issue: web UI), measured in the browser: Debian's Chromium driven by
# playwright-core (tests/ui/setup.sh installs both) against `kubetrail serve` (release) on a
# store of EVENTS generated events (default 10,000,000, imported once and kept in BENCH_DIR).
#   first paint          navigation to the explorer → first contentful paint (median of RUNS)
#   search results       a query submitted → its first page of events shown
#   facets, histogram    the same query → the facet counts / the histogram drawn
#   10,000 rows          rows loaded by scrolling; then the time a key press takes to move the
#                        focus to the next row, and the longest main-thread task meanwhile
# Targets: first paint < 1 s, search < 300 ms, facets and histogram < 1 s, responsive with
# 10,000 rows. No peer runs here (Kibana, Grafana and Datadog need their own stacks and data).
#
# usage: bench/ui.sh [EVENTS]   env: BENCH_DIR (bench/out), RUNS (5), PORT (17422)
source "$(dirname "$0")/common.sh"
events=${1:-10000000}
runs=${RUNS:-5}
port=${PORT:-17422}
[ -d tests/ui/node_modules/playwright-core ] || tests/ui/setup.sh
log="$dir/audit-$events.log"
store="$dir/ui-store-$events"
generate_log "$log"
if [ ! -s "$store/.imported" ]; then
  rm -rf "$store"
  echo "importing $events events into $store…" >&2
  "$bin" import --data "$store" "$log" > /dev/null
  date -u +%FT%TZ > "$store/.imported"
fi
token=bench-ui-token-0123456789abcdef
"$bin" serve --data "$store" --listen "127.0.0.1:$port" --api-token "$token" > "$dir/ui-serve.log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/readyz" > /dev/null 2>&1 && break; sleep 0.1; done
echo "kubetrail $("$bin" --version | awk '{print $2}') · $events events · Chromium $(/usr/bin/chromium --version | awk '{print $2}') · playwright-core $(jq -r .version tests/ui/node_modules/playwright-core/package.json)" >&2
node bench/ui.mjs "http://127.0.0.1:$port" "$token" "$runs"
