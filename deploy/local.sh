#!/usr/bin/env bash
# Local Kafka and PostgreSQL for development, under .local/ (no Docker needed).
#
#   local.sh up      fetch the Kafka jars, start the broker, create the topics, install and
#                    start PostgreSQL; prints the two export lines of `env`
#   local.sh down    stop both (data stays in .local/)
#   local.sh env     print: export LOYALTY_KAFKA_BOOTSTRAP=... / export LOYALTY_DATABASE_URL=...
#   local.sh status  say what runs
#
# Typical use:  bash deploy/local.sh up && eval "$(bash deploy/local.sh env)"
# Ports: KAFKA_PORT (default 9092, controller on +1), PG_PORT (default 55432).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
KAFKA=$HERE/kafka/kafka.sh
PG=$HERE/postgres/pg.sh

kafka_port() { cat "${KAFKA_HOME:-$ROOT/.local/kafka}/kafka.port" 2>/dev/null || echo "${KAFKA_PORT:-9092}"; }

cmd_env() {
  echo "export LOYALTY_KAFKA_BOOTSTRAP=127.0.0.1:$(kafka_port)"
  echo "export LOYALTY_DATABASE_URL=$(bash "$PG" url)"
}

cmd_up() {
  local t0=$SECONDS kport=${KAFKA_PORT:-9092} kafka_was_up=0 pg_was_up=0
  # A failed `up` stops only what it started, not a broker or server that already ran.
  bash "$KAFKA" status "$kport" >/dev/null 2>&1 && kafka_was_up=1
  bash "$PG" status >/dev/null 2>&1 && pg_was_up=1
  if ! {
    bash "$KAFKA" fetch &&
      bash "$KAFKA" start "$kport" >&2 &&
      bash "$KAFKA" topics "$kport" &&
      bash "$PG" install &&
      bash "$PG" start "${PG_PORT:-55432}" >&2
  }; then
    echo "local.sh: set-up failed; stopping what it started" >&2
    ((kafka_was_up)) || bash "$KAFKA" stop || true
    ((pg_was_up)) || bash "$PG" stop || true
    exit 1
  fi
  echo "local.sh: Kafka and PostgreSQL up in $((SECONDS - t0)) s; logs in .local/logs" >&2
  cmd_env
}

cmd_down() {
  local rc=0
  bash "$KAFKA" stop || rc=1
  bash "$PG" stop || rc=1
  return $rc
}

cmd_status() {
  local rc=0
  bash "$KAFKA" status || rc=1
  bash "$PG" status || rc=1
  return $rc
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  *) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
