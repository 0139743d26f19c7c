#!/usr/bin/env bash
# Prometheus and promtool from Debian's packages, for the observability tests (they
# start their own Prometheus on a free port). `prometheus.sh install` is idempotent.
source "$(dirname "$0")/common.sh"

case "${1:-install}" in
  install)
    if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
      log "installing Prometheus from Debian packages"
      apt-get update -qq
      # The package's own service is not wanted: the tests run Prometheus themselves.
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    fi
    ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
