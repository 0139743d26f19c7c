#!/usr/bin/env bash
# Apache Kafka for local runs and tests, single node in KRaft mode on the
# machine's JDK: `kafka.sh up` fetches the pinned broker artifacts from Maven
# Central (infra/kafka/pom.xml) into infra/kafka/lib once, formats storage under
# .local/kafka once, starts the broker on 127.0.0.1:9092 unless one answers
# there, and waits for a real produce/consume round trip. `kafka.sh down` stops it.
source "$(dirname "$0")/common.sh"

KAFKA="$ROOT/infra/kafka"
DATA="$STATE/kafka"
PIDFILE="$STATE/kafka.pid"
PORT=9092

fetch() {
  [[ -f $KAFKA/lib/.complete ]] && return 0
  log "fetching Apache Kafka from Maven Central"
  command -v mvn >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null; }
  rm -rf "$KAFKA/lib"
  mvn -q -B -f "$KAFKA/pom.xml" dependency:copy-dependencies >"$LOGS/kafka-fetch.log" 2>&1 \
    || { cat "$LOGS/kafka-fetch.log" >&2; return 1; }
  touch "$KAFKA/lib/.complete"
}

config() {
  sed "s|^#\? *log.dirs=.*||" "$KAFKA/server.properties" >"$STATE/kafka-server.properties"
  echo "log.dirs=$DATA" >>"$STATE/kafka-server.properties"
}

JAVA=(java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$KAFKA/log4j2.properties" -cp "$KAFKA/lib/*")

format() {
  [[ -f $DATA/meta.properties ]] && return 0
  log "formatting KRaft storage"
  local cluster_id
  cluster_id=$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
  "${JAVA[@]}" kafka.tools.StorageTool format --ignore-formatted -t "$cluster_id" \
    -c "$STATE/kafka-server.properties" >"$LOGS/kafka-format.log" 2>&1 \
    || { cat "$LOGS/kafka-format.log" >&2; return 1; }
}

start() {
  if ! port_open 127.0.0.1 "$PORT"; then
    log "starting Apache Kafka on 127.0.0.1:$PORT"
    nohup "${JAVA[@]}" kafka.Kafka "$STATE/kafka-server.properties" >>"$LOGS/kafka.log" 2>&1 &
    echo $! >"$PIDFILE"
    wait_for 90 "Kafka to listen on $PORT" port_open 127.0.0.1 "$PORT"
  fi
  # Listening is not ready: prove a produce/consume round trip works.
  local python=python3
  [[ -x $ROOT/.venv/bin/python ]] && python=$ROOT/.venv/bin/python
  wait_for 90 "a Kafka produce/consume round trip" "$python" "$ROOT/infra/local/kafka_roundtrip.py" "127.0.0.1:$PORT"
}

case "${1:-up}" in
  up) fetch; config; format; start; log "Kafka ready on 127.0.0.1:$PORT" ;;
  down) stop_pidfile "$PIDFILE" ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
