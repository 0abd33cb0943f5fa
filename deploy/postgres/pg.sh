#!/usr/bin/env bash
# A private PostgreSQL server under .local/pg, with no Docker and no system service.
#
#   pg.sh install              install Debian's postgresql when no initdb can be found
#   pg.sh start [PORT]         initdb once, start, create database `loyalty`; prints its URL last
#   pg.sh createdb NAME [PORT] create database NAME if missing; prints its URL
#   pg.sh stop                 stop the server (fast shutdown)
#   pg.sh status               exit 0 when the server runs; prints its URL
#   pg.sh url [PORT]           print the URL of database `loyalty`
#   pg.sh destroy              stop the server and delete its data, wherever it lives
#
# Environment: PG_PORT (default 55432), PG_HOME (this instance's state: data, socket, default
# .local/pg), PG_BIN (a PostgreSQL bin folder; default: found on PATH, then the highest
# /usr/lib/postgresql/*/bin). The superuser is `loyalty`, trusted on 127.0.0.1 only.
# PostgreSQL refuses to run as root: as root, the server runs as the system user `loyalty-pg`,
# and when that user cannot reach PG_HOME (a clone inside a private folder), the server's
# data, socket and log live in /var/tmp/loyalty-pg/<hash of PG_HOME> instead (PG_HOME/elsewhere
# names it; the log stays reachable as .local/logs/<name>.log).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCAL=$ROOT/.local
LOGS=$LOCAL/logs
PG_HOME=${PG_HOME:-$LOCAL/pg}
mkdir -p "$PG_HOME" "$LOGS"
PG_HOME=$(cd "$PG_HOME" && pwd)
NAME=$(basename "$PG_HOME")   # .local/pg -> pg.log, .local/pg-test -> pg-test.log
[[ $NAME == pg* ]] || NAME=pg-$NAME
LOGFILE=$LOGS/$NAME.log
DB_USER=loyalty
RUN_AS=loyalty-pg
# Outside any home folder, so RUN_AS can own it; /var/tmp survives reboots, unlike /tmp.
ELSEWHERE=/var/tmp/loyalty-pg
POINTER=$PG_HOME/elsewhere

say() { echo "pg.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# STATE holds data/ and run/; SERVER_LOG is the file the server itself (as RUN_AS) appends to.
use_state() {
  STATE=$1
  DATA=$STATE/data
  RUN=$STATE/run
  SERVER_LOG=$LOGFILE
  [[ $STATE == "$PG_HOME" ]] || SERVER_LOG=$STATE/server.log
}
use_state "$PG_HOME"
if [[ -f $POINTER ]]; then
  use_state "$(cat "$POINTER")"
  # destroy deletes STATE: it must be one of ours, whatever the file says.
  [[ ${STATE%/*} == "$ELSEWHERE" && ${STATE##*/} =~ ^[0-9a-f]{16}$ ]] ||
    die "$POINTER names $STATE, which is not a folder under $ELSEWHERE"
fi

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
  local bin
  # Not inside [[ ]]: a PG_HOME whose PG_BIN lacks initdb must fail, not install a PostgreSQL.
  bin=$(find_bindir)
  [[ -z $bin ]] || return 0
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

# Moves this PG_HOME's server state to a folder RUN_AS owns, outside the clone: a parent
# folder of the clone (a mode-700 home) is the user's, and not ours to open up.
relocate() {
  local base=$ELSEWHERE key
  mkdir -p "$base"
  # /var/tmp is world-writable: anybody may have made this name first.
  [[ -d $base && ! -L $base && $(stat -c %u "$base") == 0 ]] ||
    die "$base is not a folder owned by root; remove it and retry"
  chmod 0711 "$base"
  key=$(printf '%s' "$(cd "$PG_HOME" && pwd -P)" | sha256sum | cut -c1-16)
  use_state "$base/$key"
  if [[ -e $STATE ]]; then
    # Left by an earlier PG_HOME at this same path, deleted without `pg.sh destroy`.
    say "removing the state of a former $PG_HOME in $STATE"
    if [[ -f $DATA/postmaster.pid ]]; then cmd_stop >/dev/null 2>&1 || true; fi
    rm -rf "$STATE"
  fi
  mkdir -m 0700 "$STATE"
  chown "$RUN_AS:" "$STATE"
  echo "$STATE" >"$POINTER"
  say "user $RUN_AS cannot reach $PG_HOME; the server's data, socket and log live in $STATE"
}

prepare_dirs() {
  if [[ $(id -u) -eq 0 ]]; then
    if ! getent passwd "$RUN_AS" >/dev/null; then
      useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$RUN_AS" ||
        die "could not create the system user $RUN_AS"
    fi
    if [[ $STATE == "$PG_HOME" ]]; then
      chmod o+x "$LOCAL" "$PG_HOME"
      runuser -u "$RUN_AS" -- test -x "$PG_HOME" -a -x "$LOGS" || relocate
    fi
  fi
  mkdir -p "$DATA" "$RUN"
  touch "$SERVER_LOG"
  if [[ $SERVER_LOG != "$LOGFILE" ]]; then
    # The usual place keeps working (tail on failure, a look at .local/logs); an earlier
    # log of this PG_HOME goes along rather than being replaced.
    if [[ -f $LOGFILE && ! -L $LOGFILE ]]; then cat "$LOGFILE" >>"$SERVER_LOG"; fi
    ln -sfn "$SERVER_LOG" "$LOGFILE"
  fi
  if [[ $(id -u) -eq 0 ]]; then
    chmod 0700 "$DATA"
    chown -R "$RUN_AS:" "$DATA" "$RUN"
    chown "$RUN_AS:" "$SERVER_LOG"
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
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$SERVER_LOG" -w -t 60 -o \
      "-p $port -k $RUN -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=128MB" \
      start >/dev/null || {
      tail -n 20 "$LOGFILE" >&2
      # pg_ctl stops waiting after 60 s, while the server may still be coming up.
      cmd_stop >/dev/null 2>&1 || true
      die "PostgreSQL did not start; see $LOGFILE"
    }
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

cmd_destroy() {
  cmd_stop
  if [[ $STATE != "$PG_HOME" ]]; then
    if [[ -L $LOGFILE ]]; then
      # The log outlives the data, as it does when the server runs in PG_HOME.
      rm -f "$LOGFILE"
      cp "$SERVER_LOG" "$LOGFILE" 2>/dev/null || true
    fi
    rm -rf "$STATE"
    rm -f "$POINTER"
  fi
  rm -rf "$PG_HOME/data" "$PG_HOME/run"
  rmdir "$PG_HOME" 2>/dev/null || true
  say "deleted the server's data ($STATE)"
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

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start "${2:-}" ;;
  createdb) cmd_createdb "${2:-}" "${3:-}" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) cmd_url "${2:-}" ;;
  destroy) cmd_destroy ;;
  *) usage ;;
esac
