#!/usr/bin/env bash
# Detection benchmark and acceptance (issue: detections). Parts, against the release binary:
#   A. acceptance: `kubetrail rules run -o json` over EVENTS (1,000,000) generated background
#      events with every incident injected (gen-audit-log --inject all): the privileged-pod, exec
#      and cluster-admin-binding incidents must be found with the truth file's user, and the
#      background (anything but an incident's user or source IP) must produce no finding above
#      `low`. Prints the findings per rule and severity, and the run's rate.
#   B. the pack on its own: `cargo bench -p kubetrail-rules --bench pack` over the same log
#      (decoded in memory first). Target: ≥ 300,000 events/s per core.
#   C. live: `kubetrail serve` taking the sustained webhook load of bench/serve.sh (8 clients,
#      400-event EventLists, replayed with --now), once with detections off (--no-detections,
#      the peer of the same run) and once with the whole pack. Targets: ≥ 100,000 events/s and
#      within 15% of the run without rules.
#   D. history: `kubetrail rules run --data STORE --since …` over HISTORY_EVENTS (10,000,000)
#      stored events spanning 7 days. Target: under 30 s. Peer: one `kubetrail query` counting
#      the same range (what any hunt has to read at least).
#
# usage: bench/detections.sh [EVENTS]   (default 1000000; needs ../shared/tools/gen-audit-log)
# env:   BENCH_DIR (bench/out), PARTS ("A B C D"), SUSTAIN_SECONDS (40), LIVE_EVENTS (1000000),
#        HISTORY_EVENTS (10000000), SETTLE_SECONDS (20)
source "$(dirname "$0")/common.sh"
parts=${PARTS:-A B C D}
sustain=${SUSTAIN_SECONDS:-40}
live_events=${LIVE_EVENTS:-1000000}
history_events=${HISTORY_EVENTS:-10000000}
command -v curl >/dev/null || { echo "bench: curl is not installed" >&2; exit 1; }
PORT=${PORT:-17422}
server_prefix=detections
source "$(dirname "$0")/server.sh"
field() { jq -r "$2" <<< "$1"; }
settle() { sync; sleep "${SETTLE_SECONDS:-20}"; }
verdict() { awk -v v="$1" -v t="$2" -v dir="$3" 'BEGIN{ ok = (dir == "min") ? v >= t : v <= t; print ok ? "met" : "NOT met" }'; }
seconds_since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN{ printf "%.2f", e - s }'; }

accept_log="$dir/audit-$events-all.log"
truth="$dir/audit-$events-all.truth.json"
if [ ! -s "$truth" ]; then rm -f "$accept_log"; fi
generate_log "$accept_log" --inject all --truth "$truth"
failed=0

if [[ " $parts " == *" A "* ]]; then
  echo "A. rules run over $accept_log…" >&2
  cat "$accept_log" > /dev/null
  start=$(date +%s.%N)
  "$bin" rules run -o json "$accept_log" > "$dir/detections-findings.jsonl" 2> "$dir/detections-run.err"
  run_seconds=$(seconds_since "$start")
  lines=$(wc -l < "$accept_log")
  printf '\nA. acceptance: the pack over %s (%s events, background + every incident)\n\n' "$accept_log" "$lines"
  printf 'rules run: %s s, %.0f events/s (decode + evaluate, one core)\n\n' "$run_seconds" \
    "$(awk -v n="$lines" -v s="$run_seconds" 'BEGIN{ print n / s }')"
  jq -r '[.rule, .severity] | @tsv' "$dir/detections-findings.jsonl" | sort | uniq -c | sort -rn |
    awk '{ printf "  %7d  %-9s %s\n", $1, $3, $2 }'
  echo
  for pair in privileged-pod:privileged-container exec:exec-into-pod cluster-admin-binding:cluster-admin-binding; do
    incident=${pair%%:*} rule=${pair#*:}
    user=$(jq -r --arg i "$incident" '.incidents[$i].user' "$truth")
    found=$(jq -r --arg r "$rule" --arg u "$user" 'select(.rule == $r and .user == $u) | .auditID' \
      "$dir/detections-findings.jsonl" | head -1)
    if [ -n "$found" ]; then verdict_text=met; else verdict_text="NOT met"; failed=1; fi
    printf '%-28s %-24s user %-24s %s\n' "$incident" "$rule" "$user" "$verdict_text"
  done
  # Incident users and source IPs from the truth file; everything else is background.
  known=$(jq -c '[.incidents[] | (.user // empty), (.sourceIP // empty), (.sourceIPs // [] | .[])] | unique' "$truth")
  loud=$(jq -c --argjson known "$known" \
    'select((.severity | IN("medium", "high", "critical")) and ((.user | IN($known[])) or ((.source_ip // "") | IN($known[]))) == false)' \
    "$dir/detections-findings.jsonl")
  loud_count=$(grep -c . <<< "$loud" || true)
  if [ "$loud_count" -eq 0 ]; then verdict_text=met; else verdict_text="NOT met"; failed=1; fi
  printf '%-53s %-24s %s\n' "background findings above low" "$loud_count (target 0)" "$verdict_text"
  [ "$loud_count" -eq 0 ] || head -5 <<< "$loud"
fi

if [[ " $parts " == *" B "* ]]; then
  echo "B. the pack on its own…" >&2
  printf '\nB. '
  cargo bench --locked -q -p kubetrail-rules --bench pack -- "$PWD/$accept_log" 2> "$dir/detections-pack.err" |
    tee "$dir/detections-pack.txt"
  grep -q 'NOT met' "$dir/detections-pack.txt" && failed=1
fi

if [[ " $parts " == *" C "* ]]; then
  send_input="$dir/audit-$live_events-live.log"
  events=$live_events generate_log "$send_input" --rate 100000
  cat "$send_input" > /dev/null
  live_send() {
    "$bin" send --url "$url/audit" --token "$token" --json --now --duration "${sustain}s" \
      --concurrency 8 "$send_input" 2> "$dir/send.err"
  }
  echo "C. sustained ingest for ${sustain}s without detections…" >&2
  start_server none --no-detections
  without=$(live_send)
  stop_server
  settle
  echo "C. the same with the pack…" >&2
  start_server pack
  with=$(live_send)
  sleep 5
  findings=$(curl -fs "$url/metrics" | awk '/^kubetrail_detection_findings_total/ { n += $2 } END { print n + 0 }')
  dropped=$(curl -fs "$url/metrics" | awk '/^kubetrail_detection_findings_dropped_total/ { print $2 }')
  stop_server
  rate_without=$(field "$without" .acknowledged_per_second | cut -d. -f1)
  rate_with=$(field "$with" .acknowledged_per_second | cut -d. -f1)
  ratio=$(awk -v a="$rate_with" -v b="$rate_without" 'BEGIN{ printf "%.3f", a / b }')
  printf '\nC. kubetrail serve with the rule pack, %s cores, input %s replayed with --now\n\n' "$(nproc)" "$send_input"
  printf '%-62s %14s %14s  %s\n' measure value target verdict
  printf '%-62s %14s\n' "ack rate without detections, events/s (peer, same run)" "$rate_without"
  printf '%-62s %14s %14s  %s\n' "ack rate with the pack, events/s" "$rate_with" ">= 100000" "$(verdict "$rate_with" 100000 min)"
  printf '%-62s %14s %14s  %s\n' "with / without" "${ratio}x" ">= 0.85" "$(verdict "$ratio" 0.85 min)"
  printf '%-62s %14s\n' "findings / dropped" "$findings / ${dropped:-0}"
  [ "$(verdict "$ratio" 0.85 min)" = met ] && [ "$(verdict "$rate_with" 100000 min)" = met ] || failed=1
fi

if [[ " $parts " == *" D "* ]]; then
  history_log="$dir/audit-$history_events-7d.log"
  # 10M events over 7 days (the log bench/monitors.sh part B uses too).
  events=$history_events generate_log "$history_log" --inject all \
    --rate "$(awk -v n="$history_events" 'BEGIN{ printf "%.3f", n / 604800 }')"
  store="$dir/monitors-history"
  if [ ! -s "$store/.imported" ]; then
    rm -rf "$store"
    echo "D. importing $history_log…" >&2
    "$bin" import --data "$store" "$history_log" > /dev/null
    touch "$store/.imported"
  fi
  # The stored week, whatever today is: from its first event on.
  first=$(head -c 4096 "$history_log" | head -1 | jq -r .requestReceivedTimestamp)
  echo "D. rules run over the stored week…" >&2
  start=$(date +%s.%N)
  "$bin" rules run --data "$store" --from "$first" -o json > "$dir/detections-history.jsonl" 2> "$dir/detections-history.err"
  hunt_seconds=$(seconds_since "$start")
  start=$(date +%s.%N)
  "$bin" query --data "$store" --from "$first" '| stats count()' > /dev/null
  peer_seconds=$(seconds_since "$start")
  printf '\nD. rules run over %s stored events (7 days)\n\n' "$history_events"
  printf '%-62s %14s %14s  %s\n' measure value target verdict
  printf '%-62s %14s\n' "one count over the range, s (peer, same run)" "$peer_seconds"
  printf '%-62s %14s %14s  %s\n' "rules run, s" "$hunt_seconds" "< 30" "$(verdict "$hunt_seconds" 30 max)"
  printf '%-62s %14s\n' "findings" "$(wc -l < "$dir/detections-history.jsonl")"
  [ "$(verdict "$hunt_seconds" 30 max)" = met ] || failed=1
fi
exit "$failed"
