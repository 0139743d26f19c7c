#!/usr/bin/env bash
# MariaDB for local runs and tests: `mariadb.sh up` installs the Debian package
# when mariadbd is missing, starts a server on 127.0.0.1:3306 with its data under
# .local/mariadb (unless one already answers there), and creates the application
# user, the `aimtp` database, the test databases, and the `aimtp_bench` and
# `aimtp_chaos` databases of `make bench` and `make chaos`. `mariadb.sh down` stops the server this script started. Both are
# idempotent.
source "$(dirname "$0")/common.sh"

PORT=3306
DATA="$STATE/mariadb"
SOCKET="$STATE/mariadb.sock"
PIDFILE="$STATE/mariadb.pid"
TEST_DATABASES=${AIMTP_TEST_DATABASES:-4}

install() {
  command -v mariadbd >/dev/null && return 0
  log "installing MariaDB from Debian packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client >/dev/null
}

start() {
  if port_open 127.0.0.1 "$PORT"; then
    return 0
  fi
  if [[ ! -d $DATA/mysql ]]; then
    log "initialising MariaDB data directory"
    mariadb-install-db --user=root --datadir="$DATA" --auth-root-authentication-method=socket \
      --skip-test-db >"$LOGS/mariadb-install.log" 2>&1
  fi
  log "starting MariaDB on 127.0.0.1:$PORT"
  # READ-COMMITTED keeps the relay's claim from gap-locking the API's inserts.
  nohup mariadbd --user=root --datadir="$DATA" --socket="$SOCKET" --pid-file="$PIDFILE" \
    --bind-address=127.0.0.1 --port="$PORT" --skip-name-resolve \
    --transaction-isolation=READ-COMMITTED --max-connections=1000 \
    --innodb-buffer-pool-size=512M --innodb-log-file-size=256M \
    --innodb-flush-log-at-trx-commit=1 --log-error="$LOGS/mariadb.err" \
    >"$LOGS/mariadb.out" 2>&1 &
  wait_for 60 "MariaDB to accept connections" mariadb-admin --socket="$SOCKET" ping
}

# True when the application user already reaches every database this script creates
# (for example on a server another checkout of the project started).
provisioned() {
  local use="USE aimtp; USE aimtp_bench; USE aimtp_chaos;"
  for i in $(seq 0 $((TEST_DATABASES - 1))); do use+=" USE aimtp_test_$i;"; done
  mariadb --protocol=tcp -h 127.0.0.1 -P "$PORT" -uaimtp -paimtp -e "$use" >/dev/null 2>&1
}

provision() {
  provisioned && return 0
  local sql="CREATE USER IF NOT EXISTS 'aimtp'@'127.0.0.1' IDENTIFIED BY 'aimtp';
CREATE USER IF NOT EXISTS 'aimtp'@'localhost' IDENTIFIED BY 'aimtp';
CREATE DATABASE IF NOT EXISTS aimtp;
GRANT ALL ON aimtp.* TO 'aimtp'@'127.0.0.1';
GRANT ALL ON aimtp.* TO 'aimtp'@'localhost';
GRANT ALL ON \`aimtp\\_test%\`.* TO 'aimtp'@'127.0.0.1';
GRANT ALL ON \`aimtp\\_test%\`.* TO 'aimtp'@'localhost';
CREATE DATABASE IF NOT EXISTS aimtp_bench;
GRANT ALL ON aimtp_bench.* TO 'aimtp'@'127.0.0.1';
GRANT ALL ON aimtp_bench.* TO 'aimtp'@'localhost';
CREATE DATABASE IF NOT EXISTS aimtp_chaos;
GRANT ALL ON aimtp_chaos.* TO 'aimtp'@'127.0.0.1';
GRANT ALL ON aimtp_chaos.* TO 'aimtp'@'localhost';"
  for i in $(seq 0 $((TEST_DATABASES - 1))); do
    sql+="CREATE DATABASE IF NOT EXISTS aimtp_test_$i;"
  done
  mariadb_root -e "$sql"
}

# A server this script started is reached over its socket; one started by the
# system answers on the default socket.
mariadb_root() {
  if [[ -S $SOCKET ]]; then mariadb --socket="$SOCKET" -uroot "$@"; else mariadb -uroot "$@"; fi
}

case "${1:-up}" in
  up) install; start; provision; log "MariaDB ready on 127.0.0.1:$PORT" ;;
  down) stop_pidfile "$PIDFILE" ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
