#!/usr/bin/env bash
# Monitor benchmark (issue: monitors). Two parts, each against the release binary:
#   A. live: `kubetrail serve` taking the sustained webhook load of bench/serve.sh (8 clients,
#      400-event EventLists, as fast as acknowledgements come), the input replayed as live
#      traffic (`send --now`), once without monitors and once with 100 monitors evaluated every
#      10 s over 30 s windows (bench/monitors/live.yaml: the pack and variants); then the
#      notification latency: for each monitor's first notification (a JSON-lines file channel,
#      timestamped as lines arrive), the time from when the watermark passed the window's end
#      (the window's end plus the 2 s delay) until it was written.
#      Targets: with monitors ≥ 100,000 events/s and ≥ 0.9 of the run without; latency ≤ 2 s.
#   B. history: `kubetrail monitor test` of 20 monitors (bench/monitors/history.yaml) over
#      MONITOR_EVENTS (10,000,000) stored events spanning 7 days. Target: under 10 s. Peer: the
#      same 20 aggregates as plain `kubetrail query … | stats` over the same range, one scan
#      each (what any evaluation has to read at least).
#
# usage: bench/monitors.sh [EVENTS]   (webhook input size, default 100000; needs gen-audit-log)
# env:   BENCH_DIR (bench/out), SUSTAIN_SECONDS (40), MONITOR_EVENTS (10000000),
#        PARTS ("A B"), SETTLE_SECONDS (20)
source "$(dirname "$0")/common.sh"
events=${1:-100000}
sustain=${SUSTAIN_SECONDS:-40}
parts=${PARTS:-A B}
history_events=${MONITOR_EVENTS:-10000000}
command -v curl >/dev/null || { echo "bench: curl is not installed" >&2; exit 1; }

PORT=${PORT:-17421}
server_prefix=monitors
source "$(dirname "$0")/server.sh"
field() { jq -r "$2" <<< "$1"; }
settle() { sync; sleep "${SETTLE_SECONDS:-20}"; }
verdict() { awk -v v="$1" -v t="$2" -v dir="$3" 'BEGIN{ ok = (dir == "min") ? v >= t : v <= t; print ok ? "met" : "NOT met" }'; }

if [[ " $parts " == *" A "* ]]; then
  send_input="$dir/audit-$events-live.log"
  # A second of log time per 100,000 events: replayed with --now, about live time. No injected
  # incidents: they last minutes and would put events far ahead of the wall clock.
  generate_log "$send_input" --rate 100000
  cat "$send_input" > /dev/null
  live_send() {
    "$bin" send --url "$url/audit" --token "$token" --json --now --duration "${sustain}s" \
      --concurrency 8 "$send_input" 2> "$dir/send.err"
  }

  echo "A. sustained ingest for ${sustain}s without monitors…" >&2
  printf 'listen: 127.0.0.1:%s\n' "$port" > "$dir/monitors-none.yaml"
  start_server none --config "$dir/monitors-none.yaml"
  without=$(live_send)
  stop_server
  settle

  echo "A. the same with 100 monitors…" >&2
  alerts="$dir/monitors-alerts.jsonl"
  rm -f "$alerts"
  touch "$alerts"
  sed -e "s|ALERTS_FILE|$alerts|" -e "s|PORT|$port|" bench/monitors/live.yaml > "$dir/monitors-live.yaml"
  # Timestamps each notification as it arrives.
  (tail -n +1 -F "$alerts" 2> /dev/null | while IFS= read -r line; do
    printf '%s %s\n' "$(date +%s.%N)" "$(jq -r '[.monitor, .at] | @tsv' <<< "$line" | tr '\t' ' ')"
  done) > "$dir/monitors-arrivals.txt" &
  tail_pid=$!
  start_server live --config "$dir/monitors-live.yaml"
  with=$(live_send)
  sleep 15
  monitors_status=$(curl -fs -H "Authorization: Bearer $(cat "$dir/monitors-live/api-token")" "$url/api/v1/monitors")
  stop_server
  kill "$tail_pid" 2> /dev/null || true
  pkill -f "tail -n +1 -F $alerts" 2> /dev/null || true

  rate_without=$(field "$without" .acknowledged_per_second | cut -d. -f1)
  rate_with=$(field "$with" .acknowledged_per_second | cut -d. -f1)
  ratio=$(awk -v a="$rate_with" -v b="$rate_without" 'BEGIN{ printf "%.3f", a / b }')
  # Latency of each monitor's first notification after the watermark passed its window.
  latencies=$(awk '!seen[$2]++ {
      cmd = "date -d " $3 " +%s.%N"; cmd | getline end; close(cmd)
      printf "%.3f\n", $1 - (end + 2) }' "$dir/monitors-arrivals.txt" | sort -n)
  notified=$(grep -c . <<< "$latencies" || true)
  p50=$(awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print "-" }' <<< "$latencies")
  p99=$(awk '{ a[NR] = $1 } END { if (NR) print a[int(NR * 0.99 + 0.999)]; else print "-" }' <<< "$latencies")
  worst=$(tail -1 <<< "$latencies")
  errors=$(jq '[.monitors[] | select(.health == "error")] | length' <<< "$monitors_status")
  printf '\nA. kubetrail serve with monitors, %s cores, input %s replayed with --now\n\n' "$(nproc)" "$send_input"
  printf '%-62s %14s %14s  %s\n' measure value target verdict
  printf '%-62s %14s\n' "ack rate without monitors, events/s (peer, same run)" "$rate_without"
  printf '%-62s %14s %14s  %s\n' "ack rate with 100 monitors, events/s" "$rate_with" ">= 100000" "$(verdict "$rate_with" 100000 min)"
  printf '%-62s %14s %14s  %s\n' "with / without" "${ratio}x" ">= 0.9" "$(verdict "$ratio" 0.9 min)"
  printf '%-62s %14s\n' "monitors that notified / in error" "$notified / $errors"
  printf '%-62s %14s %14s  %s\n' "notification latency after the watermark, worst (s)" "${worst:--}" "<= 2" "$(verdict "${worst:-999}" 2 max)"
  printf '%-62s %14s\n' "   p50 / p99 (s)" "$p50 / $p99"
fi

if [[ " $parts " == *" B "* ]]; then
  [[ " $parts " == *" A "* ]] && settle
  history_log="$dir/audit-$history_events-7d.log"
  # 10M events over 7 days: 16.5 events per second of log time.
  events=$history_events generate_log "$history_log" --inject all \
    --rate "$(awk -v n="$history_events" 'BEGIN{ printf "%.3f", n / 604800 }')"
  store="$dir/monitors-history"
  if [ ! -s "$store/.imported" ]; then
    rm -rf "$store"
    echo "B. importing $history_log…" >&2
    "$bin" import --data "$store" "$history_log" > /dev/null
    touch "$store/.imported"
  fi
  echo "B. monitor test of 20 monitors over the stored week…" >&2
  test_start=$(date +%s.%N)
  "$bin" monitor test --data "$store" bench/monitors/history.yaml -o json > "$dir/monitors-history.jsonl" 2> "$dir/monitors-history.err"
  test_seconds=$(awk -v s="$test_start" -v e="$(date +%s.%N)" 'BEGIN{ printf "%.2f", e - s }')
  transitions=$(wc -l < "$dir/monitors-history.jsonl")
  # The peer: each monitor's aggregate once over the whole range.
  peer_start=$(date +%s.%N)
  grep -E "^ *query: " bench/monitors/history.yaml | sed -E "s/^ *query: '(.*)'$/\1/" | while IFS= read -r q; do
    case "$q" in
      *"| stats"*) "$bin" query --data "$store" "$q" -o json > /dev/null ;;
      *) "$bin" query --data "$store" "$q | stats count()" -o json > /dev/null ;;
    esac
  done
  peer_seconds=$(awk -v s="$peer_start" -v e="$(date +%s.%N)" 'BEGIN{ printf "%.2f", e - s }')
  stored=$("$bin" sql --data "$store" -o json "SELECT COUNT(*) AS n FROM events" | jq -r .n)
  printf '\nB. monitor test over history, %s cores, %s stored events over 7 days\n\n' "$(nproc)" "$stored"
  printf '%-62s %14s %14s  %s\n' measure value target verdict
  printf '%-62s %14s %14s  %s\n' "monitor test, 20 monitors (s)" "$test_seconds" "< 10" "$(verdict "$test_seconds" 10 max)"
  printf '%-62s %14s\n' "   transitions printed" "$transitions"
  printf '%-62s %14s\n' "peer: the 20 aggregates as plain queries, one scan each (s)" "$peer_seconds"
  printf '%-62s %14s\n' "monitor test / peer" "$(awk -v a="$test_seconds" -v b="$peer_seconds" 'BEGIN{ printf "%.2fx", a / b }')"
fi
