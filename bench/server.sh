# The server of the HTTP benchmarks (sourced after common.sh, not run): one `kubetrail serve` at a
# time on PORT with the webhook token `bench`, killed when the script exits.
#   start_server NAME [serve options…]  fresh data directory $dir/$server_prefix-NAME, log beside
#                                        it, SERVE_ARGS added (experiments); waits until ready
#   stop_server                         SIGTERM and wait (a clean shutdown stores everything)
port=${PORT:-17420}
token=bench-token-0123456789
url="http://127.0.0.1:$port"
server_prefix=${server_prefix:-serve}
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null; true; }
trap cleanup EXIT

start_server() {
  local name="$1"
  shift
  rm -rf "${dir:?}/$server_prefix-$name"
  # shellcheck disable=SC2086 # SERVE_ARGS is a list of options on purpose
  "$bin" serve --data "$dir/$server_prefix-$name" --listen "127.0.0.1:$port" \
    --webhook-token "bench=$token" ${SERVE_ARGS:-} "$@" > "$dir/$server_prefix-$name.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    curl -fs "$url/readyz" > /dev/null 2>&1 && return
    sleep 0.1
  done
  echo "bench: the server did not become ready; see $dir/$server_prefix-$name.log" >&2
  exit 1
}

stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=""
}
