#!/usr/bin/env bash
# Store benchmark (issue: embedded store). Imports a log made by gen-audit-log (1M events with
# every incident injected) into kubetrail and into DuckDB (PyPI `duckdb`, the same run), then
# times the same questions as whole commands: `kubetrail query` against the `duckdb` CLI (PyPI
# `duckdb-cli`) on its database file, best of 3, and `jq` over the raw file once. Prints times,
# sizes, peak memory and ratios.
#
# usage: bench/store.sh [EVENTS]   (default 1000000; needs ../shared/tools/gen-audit-log)
# env:   BENCH_DIR (default bench/out), RUNS (best of, default 3), SKIP_JQ=1
source "$(dirname "$0")/common.sh"
log="$dir/audit-$events-all.log"
truth="$dir/audit-$events-all.truth.json"
generate_log "$log" --inject all --truth "$truth"
venv="$dir/venv"
# The CLI and the Python package must share one storage format: pin both.
duckdb_version=1.5.6
if [ "$("$venv/bin/duckdb" --version 2>/dev/null | cut -d' ' -f1)" != "v$duckdb_version" ] ||
   [ "$("$venv/bin/python" -c 'import duckdb; print(duckdb.__version__)' 2>/dev/null)" != "$duckdb_version" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "duckdb==$duckdb_version" "duckdb-cli==$duckdb_version"
fi
cat "$log" > /dev/null

# Wall seconds and peak RSS (KiB) of one run.
timed() {
  /usr/bin/time -f "%e %M" -o "$dir/time.out" "$@" > "$dir/last.out" 2> "$dir/last.err" || {
    cat "$dir/last.err" >&2; return 1; }
  cat "$dir/time.out"
}
best() {
  local best=""
  for _ in $(seq "$runs"); do
    read -r t _ < <(timed "$@")
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
  done
  echo "$best"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "-" }'; }
size() { du -sb "$1" | cut -f1; }

kt_data="$dir/kubetrail-data"
duck_db="$dir/duck.db"
rm -rf "$kt_data" "$duck_db" "$duck_db.wal"
read -r kt_import kt_rss < <(timed "$bin" import --data "$kt_data" "$log")
read -r duck_import duck_rss < <(timed "$venv/bin/python" -c "
import duckdb, sys
con = duckdb.connect(sys.argv[1])
con.execute(\"CREATE TABLE events AS SELECT * FROM read_json(?, format = 'newline_delimited', sample_size = -1)\", [sys.argv[2]])
con.close()" "$duck_db" "$log")
kt_size=$(size "$kt_data")
duck_size=$(size "$duck_db")
log_size=$(stat -L -c %s "$log")

printf '\nfile: %s (%s bytes, %s events)\n\n' "$log" "$log_size" "$(wc -l < "$log")"
printf '%-28s %12s %12s %10s\n' import kubetrail duckdb ratio
printf '%-28s %12s %12s %10s\n' "time (s)" "$kt_import" "$duck_import" "$(ratio "$duck_import" "$kt_import")x faster"
printf '%-28s %12s %12s %10s\n' "bytes on disk" "$kt_size" "$duck_size" "$(ratio "$kt_size" "$duck_size") of duckdb"
printf '%-28s %12s %12s\n' "peak RSS (MiB)" "$((kt_rss / 1024))" "$((duck_rss / 1024))"

user=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['incidents']['forbidden-spike']['user'])" "$truth")
ns=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['incidents']['pod-eviction']['namespace'])" "$truth")
pod=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['incidents']['pod-eviction']['pod'])" "$truth")

names=("count by verb and code" "p99 latency by verb, resource" "403s per minute by user" "history of one object" "free text in request bodies")
kt_queries=(
  "| stats count() by verb, code"
  "| stats p99(latency) by verb, resource"
  "code:403 | timechart 1m count() by user"
  "ns:$ns name:$pod | fields time, verb, subresource, user, code | sort time | limit 1000"
  "requestObject:debug-tools | stats count()"
)
duck_queries=(
  "SELECT verb, responseStatus.code, count(*) FROM events GROUP BY ALL"
  "SELECT verb, objectRef.resource, quantile_cont(epoch_us(stageTimestamp::TIMESTAMP) - epoch_us(requestReceivedTimestamp::TIMESTAMP), 0.99) FROM events GROUP BY ALL"
  "SELECT time_bucket(INTERVAL 1 minute, requestReceivedTimestamp::TIMESTAMP) AS m, \"user\".username, count(*) FROM events WHERE responseStatus.code = 403 GROUP BY ALL ORDER BY m"
  "SELECT requestReceivedTimestamp, verb, objectRef.subresource, \"user\".username, responseStatus.code FROM events WHERE objectRef.namespace = '$ns' AND objectRef.name = '$pod' ORDER BY 1"
  "SELECT count(*) FROM events WHERE CAST(requestObject AS VARCHAR) ILIKE '%debug-tools%'"
)
jq_filters=(
  "[.verb, .responseStatus.code]"
  "[.verb, .objectRef.resource, .requestReceivedTimestamp, .stageTimestamp]"
  "select(.responseStatus.code == 403) | [.requestReceivedTimestamp[0:16], .user.username]"
  "select(.objectRef.namespace == \"$ns\" and .objectRef.name == \"$pod\")"
  "select((.requestObject // \"\" | tostring | ascii_downcase) | contains(\"debug-tools\"))"
)
printf '\n%-32s %10s %10s %10s %12s %10s\n' question kubetrail duckdb "kt/duck" jq "jq/kt"
for i in "${!names[@]}"; do
  kt=$(best "$bin" query --data "$kt_data" -o json --limit 0 "${kt_queries[$i]}")
  duck=$(best "$venv/bin/duckdb" -readonly "$duck_db" -c "${duck_queries[$i]}")
  jqt="-"
  if [ "${SKIP_JQ:-0}" != 1 ]; then read -r jqt _ < <(timed jq -c "${jq_filters[$i]}" "$log"); fi
  printf '%-32s %10s %10s %10s %12s %10s\n' "${names[$i]}" "$kt" "$duck" "$(ratio "$kt" "$duck")" "$jqt" "$(ratio "$jqt" "$kt")"
done
printf '\ntargets: import >= 2x faster than duckdb; bytes <= duckdb; queries <= 1.5x duckdb; >= 100x faster than jq\n'
