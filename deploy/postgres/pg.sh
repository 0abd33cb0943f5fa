#!/usr/bin/env bash
# A private PostgreSQL server under .local/pg, with no Docker and no system service.
#
#   pg.sh install              install Debian's postgresql when no initdb can be found
#   pg.sh start [PORT]         initdb once, start, create database `loyalty`; prints its URL last
#   pg.sh createdb NAME [PORT] create database NAME if missing; prints its URL
#   pg.sh stop                 stop the server (fast shutdown)
#   pg.sh status               exit 0 when the server runs; prints its URL
#   pg.sh url [PORT]           print the URL of database `loyalty`
#
# Environment: PG_PORT (default 55432), PG_HOME (this instance's state: data, socket, default
# .local/pg), PG_BIN (a PostgreSQL bin folder; default: found on PATH, then the highest
# /usr/lib/postgresql/*/bin). The superuser is `loyalty`, trusted on 127.0.0.1 only.
# PostgreSQL refuses to run as root: as root, the server runs as the system user `loyalty-pg`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCAL=$ROOT/.local
LOGS=$LOCAL/logs
PG_HOME=${PG_HOME:-$LOCAL/pg}
mkdir -p "$PG_HOME" "$LOGS"
PG_HOME=$(cd "$PG_HOME" && pwd)
DATA=$PG_HOME/data
RUN=$PG_HOME/run
NAME=$(basename "$PG_HOME")   # .local/pg -> pg.log, .local/pg-test -> pg-test.log
[[ $NAME == pg* ]] || NAME=pg-$NAME
LOGFILE=$LOGS/$NAME.log
DB_USER=loyalty
RUN_AS=loyalty-pg

say() { echo "pg.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# The folder holding initdb and pg_ctl, or nothing.
find_bindir() {
  local d
  if [[ -n ${PG_BIN:-} ]]; then
    [[ -x $PG_BIN/initdb ]] && { echo "$PG_BIN"; return 0; }
    die "PG_BIN=$PG_BIN has no initdb"
  fi
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    d=$(dirname "$(readlink -f "$(command -v initdb)")")
    [[ -x $d/pg_ctl && -x $d/postgres ]] && { echo "$d"; return 0; }
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [[ -x $d/initdb && -x $d/pg_ctl ]] && { echo "$d"; return 0; }
  done
  return 0
}

cmd_install() {
  if [[ -n $(find_bindir) ]]; then
    return 0
  fi
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "PostgreSQL is not installed and this user cannot install it: run as root 'apt-get install -y postgresql'"
    sudo=(sudo -n)
  fi
  command -v apt-get >/dev/null || die "PostgreSQL is not installed and there is no apt-get: install PostgreSQL 15+ and set PG_BIN"
  say "installing PostgreSQL from the Debian packages..."
  "${sudo[@]}" apt-get update -qq >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    postgresql >&2
  # Debian's package starts a cluster of its own on 5432; this project does not use it.
  [[ -n $(find_bindir) ]] || die "installed postgresql, yet no initdb was found"
}

BIN=
need_bin() {
  BIN=$(find_bindir)
  [[ -n $BIN ]] || die "no PostgreSQL found (initdb, pg_ctl): run 'pg.sh install' or set PG_BIN"
}

# as_pg CMD...: run a server command as the owner of the data (postgres refuses root).
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    (cd / && runuser -u "$RUN_AS" -- "$@")
  else
    "$@"
  fi
}

prepare_dirs() {
  mkdir -p "$DATA" "$RUN"
  touch "$LOGFILE"
  if [[ $(id -u) -eq 0 ]]; then
    if ! getent passwd "$RUN_AS" >/dev/null; then
      useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$RUN_AS" ||
        die "could not create the system user $RUN_AS"
    fi
    chmod o+x "$LOCAL" "$PG_HOME"
    chmod 0700 "$DATA"
    chown -R "$RUN_AS:" "$DATA" "$RUN" "$LOGFILE"
    runuser -u "$RUN_AS" -- test -x "$PG_HOME" ||
      die "user $RUN_AS cannot reach $PG_HOME: make its parent folders traversable (chmod o+x) or set PG_HOME elsewhere"
  fi
}

# The port the running server listens on (line 4 of postmaster.pid), or nothing.
running_port() {
  [[ -f $DATA/postmaster.pid ]] || return 0
  as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1 || return 0
  sed -n 4p "$DATA/postmaster.pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

psql_() { local port=$1; shift; "$BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U "$DB_USER" -v ON_ERROR_STOP=1 "$@"; }

url() { echo "postgresql://$DB_USER@127.0.0.1:$1/$2"; }

ensure_db() {
  local port=$1 db=$2
  [[ $db =~ ^[A-Za-z0-9_.-]{1,63}$ ]] || die "bad database name: $db"
  if [[ -z $(psql_ "$port" -d postgres -tAc "select 1 from pg_database where datname = '$db'") ]]; then
    psql_ "$port" -d postgres -c "create database \"$db\"" >/dev/null 2>&1 ||
      # a concurrent createdb may have won the race
      [[ -n $(psql_ "$port" -d postgres -tAc "select 1 from pg_database where datname = '$db'") ]] ||
      die "could not create database $db"
  fi
}

cmd_start() {
  local port=${1:-${PG_PORT:-55432}}
  [[ $port =~ ^[0-9]+$ ]] || die "bad port: $port"
  need_bin
  local current
  current=$(running_port)
  if [[ $current != "$port" ]]; then
    port_open "$port" && die "port $port is taken by another process (not the server in $PG_HOME); choose another: pg.sh start PORT"
    if [[ -n $current ]]; then
      say "the server in $PG_HOME runs on port $current; restarting it on $port"
      cmd_stop
    fi
    prepare_dirs
    if [[ ! -f $DATA/PG_VERSION ]]; then
      local locale=(--no-locale)
      locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$' && locale=(--locale=C.UTF-8)
      as_pg "$BIN/initdb" -D "$DATA" -U "$DB_USER" --auth=trust -E UTF8 "${locale[@]}" >>"$LOGFILE" 2>&1 ||
        { tail -n 20 "$LOGFILE" >&2; die "initdb failed; see $LOGFILE"; }
    fi
    local t0=$SECONDS
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOGFILE" -w -t 60 -o \
      "-p $port -k $RUN -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=128MB" \
      start >/dev/null ||
      { tail -n 20 "$LOGFILE" >&2; die "PostgreSQL did not start; see $LOGFILE"; }
    say "started on 127.0.0.1:$port in $((SECONDS - t0)) s (log: $LOGFILE)"
  fi
  ensure_db "$port" loyalty
  url "$port" loyalty
}

cmd_createdb() {
  local db=${1:-}
  [[ -n $db ]] || die "usage: pg.sh createdb NAME [PORT]"
  need_bin
  local port=${2:-$(running_port)}
  port=${port:-${PG_PORT:-55432}}
  ensure_db "$port" "$db"
  url "$port" "$db"
}

cmd_stop() {
  if [[ ! -f $DATA/postmaster.pid ]]; then
    say "not running ($PG_HOME)"
    return 0
  fi
  need_bin
  if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    say "not running ($PG_HOME)"
    return 0
  fi
  as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
  say "stopped ($PG_HOME)"
}

cmd_status() {
  need_bin
  local port
  port=$(running_port)
  [[ -n $port ]] || { say "not running ($PG_HOME)"; return 1; }
  url "$port" loyalty
}

cmd_url() { url "${1:-$(
  need_bin
  p=$(running_port)
  echo "${p:-${PG_PORT:-55432}}"
)}" loyalty; }

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start "${2:-}" ;;
  createdb) cmd_createdb "${2:-}" "${3:-}" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) cmd_url "${2:-}" ;;
  *) usage ;;
esac
