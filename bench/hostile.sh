#!/usr/bin/env bash
# Hostile-input benchmark (issue #24). Two measurements on a store of EVENTS generated events
# served by the release `kubetrail serve`:
#   1. value lists: `user:(v1 OR v2 OR …) | stats count()` through the HTTP API with 10, 1,000
#      and 100,000 values (5 of them real users, the rest absent), best of RUNS; the 10-value
#      list is the peer the others are compared with, and every answer is checked against it;
#   2. queries cannot starve ingest: the sustained webhook ack rate (`kubetrail send`, 8
#      clients, SEND_SECONDS) with no queries, then while QUERY_LOOPS clients run the heaviest
#      queries the API accepts in a loop, then with no queries again (the machine's pace drifts:
#      the ratio is taken against the mean of the two idle runs). Target: >= 80%.
#
# usage: bench/hostile.sh [EVENTS]   (default 1000000; needs ../shared/tools/gen-audit-log)
# env:   BENCH_DIR (default bench/out), RUNS (3), SEND_SECONDS (30), QUERY_LOOPS (4),
#        SETTLE_SECONDS (20)
source "$(dirname "$0")/common.sh"
command -v curl >/dev/null || { echo "bench: curl is not installed" >&2; exit 1; }
send_seconds=${SEND_SECONDS:-30}
loops=${QUERY_LOOPS:-4}
log="$dir/audit-$events.log"
generate_log "$log"
send_input="$dir/audit-100000-send.log"
events=100000 generate_log "$send_input"

port=${PORT:-17421}
token=bench-token-0123456789
api_token=bench-api-token-0123456789
url="http://127.0.0.1:$port"
server_pid=""
loop_pids=()
cleanup() {
  for pid in "${loop_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null
  true
}
trap cleanup EXIT
settle() { sync; sleep "${SETTLE_SECONDS:-20}"; }

data="$dir/hostile-data"
if [ ! -d "$data/events" ]; then
  echo "importing $log…" >&2
  "$bin" import --data "$data" "$log" > /dev/null 2>&1
fi
"$bin" serve --data "$data" --listen "127.0.0.1:$port" --webhook-token "bench=$token" \
  --api-token "$api_token" > "$dir/hostile-serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -fs "$url/readyz" > /dev/null 2>&1 && break; sleep 0.1; done

# query FILE: POSTs the JSON body in FILE to /api/v1/query; prints "seconds http_status".
query() {
  curl -s -o "$dir/answer.json" -w '%{time_total} %{http_code}\n' -X POST \
    -H "Authorization: Bearer $api_token" -H 'Content-Type: application/json' \
    --data-binary "@$1" "$url/api/v1/query"
}

users=$(curl -fs -H "Authorization: Bearer $api_token" \
  "$url/api/v1/query?q=%7C%20top%205%20user" | jq -r '.rows[].user')
mapfile -t real < <(echo "$users")
declare -A seconds counts
for size in 10 1000 100000; do
  python3 - "$size" "$dir/list-$size.json" "${real[@]}" <<'EOF'
import json, sys
size, out, real = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
values = [f"nobody-{i:06d}" for i in range(size - len(real))] + real
json.dump({"q": "user:(" + " OR ".join(values) + ") | stats count() as n"}, open(out, "w"))
EOF
  best=""
  for _ in $(seq "$runs"); do
    read -r t code < <(query "$dir/list-$size.json")
    [ "$code" = 200 ] || { echo "bench: the $size-value list answered $code: $(cat "$dir/answer.json")" >&2; exit 1; }
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
  done
  seconds[$size]=$best
  counts[$size]=$(jq -r '.rows[0].n' "$dir/answer.json")
done

ingest_rate() {
  "$bin" send --url "$url/audit" --token "$token" --json --duration "${send_seconds}s" \
    --concurrency 8 "$send_input" 2> "$dir/send.err" | jq -r '.acknowledged_per_second | floor'
}
settle
echo "ingest without queries for ${send_seconds}s…" >&2
idle=$(ingest_rate)

# The heaviest queries the API accepts: scans of every event's text, bodies parsed at a path,
# high-cardinality groups (refused at query.maxRows only after the work), many time series.
heavy=(
  '{"q": "\"no-such-text-anywhere\" | stats count()"}'
  '{"q": "requestObject.spec.containers.image:*nginx* | stats count()"}'
  '{"q": "| stats count() by id"}'
  '{"q": "| timechart 1m p99(latency), dc(id) by user"}'
)
for i in "${!heavy[@]}"; do echo "${heavy[$i]}" > "$dir/heavy-$i.json"; done
for n in $(seq "$loops"); do
  (
    i=$((n % ${#heavy[@]}))
    while :; do
      query "$dir/heavy-$i.json" >> "$dir/heavy.out"
      i=$(((i + 1) % ${#heavy[@]}))
    done
  ) &
  loop_pids+=($!)
done
sleep 2
echo "ingest while $loops clients run heavy queries for ${send_seconds}s…" >&2
busy=$(ingest_rate)
for pid in "${loop_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
loop_pids=()
sleep 5
echo "ingest without queries again for ${send_seconds}s…" >&2
idle_after=$(ingest_rate)
idle_mean=$(( (idle + idle_after) / 2 ))
answered=$(wc -l < "$dir/heavy.out")
statuses=$(awk '{print $2}' "$dir/heavy.out" | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')
version=$("$bin" --version)

printf '\n%s, %s cores, %s events in the store\n\n' "$version" "$(nproc)" "$events"
printf '%-44s %10s %10s %12s\n' "value list (| stats count())" seconds count "vs 10 values"
for size in 10 1000 100000; do
  printf '%-44s %10s %10s %12s\n' "user:(… $size values …)" "${seconds[$size]}" "${counts[$size]}" \
    "$(awk -v a="${seconds[$size]}" -v b="${seconds[10]}" 'BEGIN{ printf "%.2fx", a / b }')"
done
[ "${counts[10]}" = "${counts[1000]}" ] && [ "${counts[10]}" = "${counts[100000]}" ] ||
  echo "WRONG: the answers differ" >&2
printf '\n%-44s %10s\n' "webhook ack rate without queries, events/s" "$idle (then $idle_after)"
printf '%-44s %10s\n' "… with $loops heavy query loops, events/s" "$busy"
printf '%-44s %10s  (target >= 0.80: %s)\n' "ratio to the idle mean" \
  "$(awk -v a="$busy" -v b="$idle_mean" 'BEGIN{ printf "%.2f", a / b }')" \
  "$(awk -v a="$busy" -v b="$idle_mean" 'BEGIN{ print (a / b >= 0.8) ? "met" : "NOT met" }')"
printf '%-44s %10s  %s\n' "heavy queries answered meanwhile" "$answered" "$statuses"
