#!/usr/bin/env bash
# Report benchmark (issue: investigations). Fills a store with gen-audit-log traffic (10M events
# with every incident injected, piped straight into `kubetrail import`: no 9 GB file on disk),
# then times every report and the RBAC advice as whole commands (process start, store open,
# every query, JSON output), best of 3, with peak memory. The target is absolute: each under 2 s.
# The reference printed beside each time is one plain scan of the store in the same run
# (`SELECT count(*) … GROUP BY user`), so the ratio says how many scans' worth a report costs.
#
# usage: bench/report.sh [EVENTS]   (default 10000000; needs ../shared/tools/gen-audit-log)
# env:   BENCH_DIR (default bench/out), RUNS (best of, default 3), BENCH_NO_BUILD=1
source "$(dirname "$0")/common.sh" "${1:-10000000}"
store="$dir/report-$events"
truth="$dir/report-$events.truth.json"
if [ ! -s "$truth" ] || [ ! -d "$store/events" ]; then
  gen=../shared/tools/gen-audit-log
  [ -x "$gen" ] || { echo "bench: $gen not found (it lives in ../shared/tools)" >&2; exit 1; }
  rm -rf "$store"
  echo "generating and importing $events events into $store…" >&2
  "$gen" --events "$events" --inject all --truth "$truth" --out /dev/stdout |
    /usr/bin/time -f "import: %e s, peak RSS %M KiB" "$bin" import --data "$store" - > /dev/null
fi
"$bin" store stats --data "$store" | jq -c '{events, bytes_on_disk, segments}'

timed() {
  /usr/bin/time -f "%e %M" -o "$dir/time.out" "$@" > "$dir/last.out" 2> "$dir/last.err" || {
    cat "$dir/last.err" >&2; return 1; }
  cat "$dir/time.out"
}
# best CMD…: "SECONDS PEAK_KIB" of the fastest of $runs runs.
best() {
  local best="" mem=""
  for _ in $(seq "$runs"); do
    read -r t m < <(timed "$@")
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; mem=$m; fi
  done
  echo "$best $mem"
}

pod=$(jq -r '.incidents["pod-eviction"] | "pods/\(.namespace)/\(.pod)"' "$truth")
deployment=$(jq -r '.incidents["deployment-rollout"] | "deployments/\(.namespace)/\(.deployment)"' "$truth")
read -r scan _ < <(best "$bin" sql --data "$store" -o json \
  "SELECT \"user\", count(*) FROM events GROUP BY 1")
printf '%-34s %8s %10s %8s %s\n' "command" "seconds" "peak MiB" "scans" "under 2 s"
printf '%-34s %8s %10s %8s\n' "(one scan: count by user)" "$scan" "-" "1.00"
failed=0
while read -r label args; do
  # shellcheck disable=SC2086 # the arguments are words on purpose
  read -r t m < <(best "$bin" $args --data "$store" -o json)
  ok=$(awk -v t="$t" 'BEGIN{print (t < 2.0) ? "yes" : "NO"}')
  [ "$ok" = yes ] || failed=1
  printf '%-34s %8s %10d %8s %s\n' "$label" "$t" $((m / 1024)) \
    "$(awk -v a="$t" -v b="$scan" 'BEGIN{printf "%.2f", a / b}')" "$ok"
done <<EOF
report-auth-failures report auth-failures
report-anonymous report anonymous
report-latency report latency
report-changes report changes
report-object report object $pod
report-rollout report rollout $deployment
report-top-talkers report top-talkers
rbac-suggest rbac suggest --serviceaccount ci:deployer
rbac-denied rbac denied
EOF
exit $failed
