# Shared setup of the benchmark scripts (sourced, not run): settings from the environment,
# the generated input, the tools every benchmark needs, and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-1000000}
runs=${RUNS:-3}
dir=${BENCH_DIR:-bench/out}
mkdir -p "$dir"

# generate_log FILE [gen-audit-log options…]: makes FILE with $events events unless it exists.
generate_log() {
  local file="$1" gen=../shared/tools/gen-audit-log
  shift
  [ -s "$file" ] && return
  [ -x "$gen" ] || { echo "bench: $gen not found (it lives in ../shared/tools)" >&2; exit 1; }
  echo "generating $file ($events events $*)…" >&2
  "$gen" --events "$events" "$@" --out "$file"
}

command -v jq >/dev/null || { echo "bench: jq is not installed (apt-get install jq)" >&2; exit 1; }
# BENCH_NO_BUILD=1 measures the release binary already built (e.g. while editing other code).
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --locked -q -p kubetrail
bin=${CARGO_TARGET_DIR:-target}/release/kubetrail
