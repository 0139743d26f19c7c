#!/usr/bin/env bash
# The AIMTP processes on this machine, with the settings of infra/local/dev.env.
#   stack.sh up    start them in the background and wait until each is healthy
#   stack.sh down  stop them
#   stack.sh run   `up`, follow their logs, and stop everything on Ctrl-C
# MariaDB and Kafka are started by mariadb.sh / kafka.sh (the Makefile runs them first).
source "$(dirname "$0")/common.sh"

RUN="$STATE/run"
mkdir -p "$RUN"
set -a
# shellcheck source=dev.env
source "$ROOT/infra/local/dev.env"
set +a
AIMTP="$ROOT/.venv/bin/aimtp"

# name -> command line; each process logs JSON lines to .local/logs/NAME.log.
declare -A PROCESSES=(
  [server]="$AIMTP server"
  [controller-sim]="$AIMTP controller-sim --port ${AIMTP_CONTROLLER_PORT} --token ${AIMTP_CONTROLLER_TOKEN} --callback-token ${AIMTP_CONTROLLER_CALLBACK_TOKEN}"
  [relay]="$AIMTP relay"
  [trigger]="$AIMTP trigger"
  [watcher]="$AIMTP watcher"
)
# name -> URL answering 200 when the process is ready.
declare -A HEALTH=(
  [server]="http://127.0.0.1:${AIMTP_HTTP_PORT}/healthz"
  [controller-sim]="http://127.0.0.1:${AIMTP_CONTROLLER_PORT}/healthz"
  [relay]="http://127.0.0.1:${AIMTP_RELAY_METRICS_PORT}/healthz"
  [trigger]="http://127.0.0.1:${AIMTP_TRIGGER_METRICS_PORT}/healthz"
  [watcher]="http://127.0.0.1:${AIMTP_WATCHER_METRICS_PORT}/healthz"
)
ORDER=(server controller-sim relay trigger watcher)

healthy() { "$ROOT/.venv/bin/python" - "$1" <<'PY'
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
}

up() {
  "$AIMTP" db init >/dev/null
  "$AIMTP" kafka init >/dev/null
  for name in "${ORDER[@]}"; do
    local pidfile="$RUN/$name.pid"
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then continue; fi
    log "starting aimtp $name"
    # shellcheck disable=SC2086 # the command line is split on purpose
    nohup ${PROCESSES[$name]} >>"$LOGS/$name.log" 2>&1 &
    echo $! >"$pidfile"
  done
  for name in "${ORDER[@]}"; do
    wait_for 60 "aimtp $name" healthy "${HEALTH[$name]}" || {
      tail -n 20 "$LOGS/$name.log" >&2
      return 1
    }
  done
}

down() {
  for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do stop_pidfile "$RUN/${ORDER[$i]}.pid"; done
}

banner() {
  cat <<TXT

  AIMTP is running.
    API        http://127.0.0.1:${AIMTP_HTTP_PORT}/v1/dags
    API docs   http://127.0.0.1:${AIMTP_HTTP_PORT}/docs
    gRPC       127.0.0.1:${AIMTP_GRPC_PORT} (aimtp.v1.DagService, reflection on; README "The gRPC API")
    events     http://127.0.0.1:${AIMTP_HTTP_PORT}/docs/asyncapi.json (AsyncAPI)
    Controller http://127.0.0.1:${AIMTP_CONTROLLER_PORT}/v1/workloads (reference, simulated)
    metrics    server :${AIMTP_HTTP_PORT}/metrics  relay :${AIMTP_RELAY_METRICS_PORT}/metrics
               trigger :${AIMTP_TRIGGER_METRICS_PORT}/metrics  watcher :${AIMTP_WATCHER_METRICS_PORT}/metrics
    dev token  ${AIMTP_DEV_TOKEN}
    logs       .local/logs/

  Try:
    curl -H "Authorization: Bearer ${AIMTP_DEV_TOKEN}" -H 'content-type: application/json' \\
         -d @examples/dag.json http://127.0.0.1:${AIMTP_HTTP_PORT}/v1/dags

  Ctrl-C stops everything.
TXT
}

run() {
  trap 'log "stopping"; down; bash "$ROOT/infra/local/kafka.sh" down; bash "$ROOT/infra/local/mariadb.sh" down; exit 0' INT TERM
  up
  banner
  local logs=()
  for name in "${ORDER[@]}"; do logs+=("$LOGS/$name.log"); done
  tail -n 0 -F "${logs[@]}" &
  wait
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  run) run ;;
  *) echo "usage: $0 up|down|run" >&2; exit 2 ;;
esac
