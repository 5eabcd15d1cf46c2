#!/usr/bin/env bash
# Parser benchmark (issue: foundation). Parses a ~1 GB log made by gen-audit-log and prints
# throughput per core for `kubetrail cat --stats` (parse + normalize + derived fields + the
# default redaction; also without redaction) and
# `kubetrail cat` (plus writing normalized JSON), next to `wc -l` (the I/O ceiling) and `jq -c .`
# (what users reach for today), measured in the same run on the same file.
#
# usage: bench/parse.sh [EVENTS]   (default 1000000; needs ../shared/tools/gen-audit-log)
# env:   BENCH_DIR (default bench/out), RUNS (best of, default 3), SKIP_JQ=1 to skip jq
source "$(dirname "$0")/common.sh"
file="$dir/audit-$events.log"
generate_log "$file"
bytes=$(stat -L -c %s "$file")
lines=$(wc -l < "$file")
cat "$file" > /dev/null # warm the page cache so every tool reads from memory

# Prints "<wall seconds> <cpu seconds>" of the best (lowest CPU) of $runs runs of a command.
measure() {
  local best_wall="" best_cpu="" n="$1"; shift
  for _ in $(seq "$n"); do
    local out
    /usr/bin/time -f "%e %U %S" -o "$dir/time.out" "$@" > /dev/null 2>&1 || true
    out=$(tail -1 "$dir/time.out")
    local wall cpu
    wall=$(echo "$out" | awk '{print $1}')
    cpu=$(echo "$out" | awk '{printf "%.3f", $2 + $3}')
    if [ -z "$best_cpu" ] || awk "BEGIN{exit !($cpu < $best_cpu)}"; then best_cpu=$cpu; best_wall=$wall; fi
  done
  echo "$best_wall $best_cpu"
}

printf '\nfile: %s (%d bytes, %d events), best of %d\n\n' "$file" "$bytes" "$lines" "$runs"
printf '%-36s %9s %9s %14s %16s %9s\n' tool wall_s cpu_s MB/s/core events/s/core vs_jq
declare -A cpu wall
run() {
  local name="$1" n="$2"; shift 2
  read -r w c < <(measure "$n" "$@")
  wall[$name]=$w; cpu[$name]=$c
}
run "wc -l" "$runs" wc -l "$file"
run "kubetrail cat --stats" "$runs" "$bin" cat --stats "$file"
run "kubetrail cat --stats --no-redact" "$runs" "$bin" cat --stats --no-redact "$file"
run "kubetrail cat (json to null)" "$runs" "$bin" cat "$file"
if [ "${SKIP_JQ:-0}" != 1 ]; then run "jq -c ." 1 jq -c . "$file"; fi
for name in "wc -l" "kubetrail cat --stats" "kubetrail cat --stats --no-redact" "kubetrail cat (json to null)" "jq -c ."; do
  [ -n "${cpu[$name]:-}" ] || continue
  c=${cpu[$name]}
  ratio="-"
  if [ -n "${cpu[jq -c .]:-}" ]; then ratio=$(awk "BEGIN{printf \"%.1fx\", ${cpu[jq -c .]} / $c}"); fi
  awk -v n="$name" -v w="${wall[$name]}" -v c="$c" -v b="$bytes" -v e="$lines" -v r="$ratio" \
    'BEGIN{printf "%-36s %9.2f %9.2f %14.0f %16.0f %9s\n", n, w, c, b/1e6/c, e/c, r}'
done
target=400
got=$(awk -v b="$bytes" -v c="${cpu[kubetrail cat --stats]}" 'BEGIN{printf "%.0f", b/1e6/c}')
printf '\ntarget: >= %d MB/s per core for kubetrail cat --stats: %s (%s MB/s)\n' "$target" \
  "$([ "$got" -ge "$target" ] && echo met || echo MISSED)" "$got"
