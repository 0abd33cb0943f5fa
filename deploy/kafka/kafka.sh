#!/usr/bin/env bash
# A one-node Apache Kafka 4.1 (KRaft) broker from Maven Central jars, with no Docker.
#
#   kafka.sh fetch          copy the broker's jars into .local/kafka/jars (skipped when current)
#   kafka.sh start [PORT]   format storage once, start the broker, wait until it serves metadata
#   kafka.sh topics [PORT]  create the loyalty topics that are missing (`loyalty topics`)
#   kafka.sh stop           stop the broker (waits for the process, not the port)
#   kafka.sh reset          stop and delete the broker's data
#   kafka.sh status [PORT]  exit 0 when the broker answers
#
# Environment: KAFKA_PORT (default 9092), KAFKA_CONTROLLER_PORT (default PORT+1, or any free
# port when PORT+1 is taken), KAFKA_HOME (this instance's state: config, data, pid; default
# .local/kafka; the jars are shared), KAFKA_HEAP (default "-Xms256m -Xmx512m"),
# LOYALTY_TOPIC_* (topic names, see `topics`).
# More listeners (e.g. TLS and SASL) beside the PLAINTEXT one, which the controller, the
# other brokers and `status` keep using: KAFKA_EXTRA_LISTENERS (e.g.
# "SASL_SSL://127.0.0.1:9094", advertised as given), KAFKA_EXTRA_PROTOCOL_MAP (e.g.
# "SASL_SSL:SASL_SSL"), KAFKA_EXTRA_CONFIG (lines appended to server.properties: keystores,
# sasl.enabled.mechanisms, listener.name.*.sasl.jaas.config), KAFKA_SCRAM_USERS (one
# "SCRAM-SHA-512=[name=alice,password=secret]" a line; added when the storage is formatted,
# i.e. at the first start only, as SCRAM users live in the cluster's metadata).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/deploy/kafka
LOCAL=$ROOT/.local
JARS=$LOCAL/kafka/jars
M2=$LOCAL/m2
LOGS=$LOCAL/logs
KAFKA_HOME=${KAFKA_HOME:-$LOCAL/kafka}
mkdir -p "$KAFKA_HOME" "$LOGS"
KAFKA_HOME=$(cd "$KAFKA_HOME" && pwd)
DATA=$KAFKA_HOME/data
CONF=$KAFKA_HOME/server.properties
PIDFILE=$KAFKA_HOME/kafka.pid
PORTFILE=$KAFKA_HOME/kafka.port
NAME=$(basename "$KAFKA_HOME")   # .local/kafka -> kafka.log, .local/kafka-test -> kafka-test.log
[[ $NAME == kafka* ]] || NAME=kafka-$NAME
LOGFILE=$LOGS/$NAME.log   # the broker's log4j output (INFO)
OUTFILE=$LOGS/$NAME.out   # its stdout/stderr (WARN and above, JVM errors)
LOG4J=$HERE/log4j2.yaml
STAMP=$JARS/.pom.sha256

say() { echo "kafka.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# A fresh Debian machine may lack Java or Maven: install Debian's, as pg.sh does PostgreSQL.
apt_install() {
  local sudo=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || return 1
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null || return 1
  say "installing $* from the Debian packages..."
  "${sudo[@]}" apt-get update -qq >&2 &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "$@" >&2
}

need_java() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless ||
    die "java not found (Kafka 4.1 needs Java 17+)"
}

# Runs a Kafka tool class from the jars; its warnings go to .local/logs/kafka-tools.log.
kafka_tool() {
  java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$JARS/*" \
    -Dlog4j2.configurationFile="$LOG4J" -Dkafka.log.file="$LOGS/kafka-tools.log" \
    -Dkafka.log.level=WARN "$@"
}

cmd_fetch() {
  local sum
  sum=$(sha256sum "$HERE/pom.xml" | cut -d' ' -f1)
  if [[ -f $STAMP && $(cat "$STAMP") == "$sum" ]] && compgen -G "$JARS/kafka_2.13-*.jar" >/dev/null; then
    return 0
  fi
  need_java
  command -v mvn >/dev/null || apt_install maven ||
    die "mvn not found: install Maven 3 (apt-get install -y maven)"
  say "fetching Kafka jars with Maven (first run: about a minute)..."
  local tmp=$LOCAL/kafka/jars.tmp
  rm -rf "$tmp" && mkdir -p "$tmp"
  # outputDirectory must be absolute: Maven resolves a relative one against the pom's folder.
  mvn -q -B -f "$HERE/pom.xml" -Dmaven.repo.local="$M2" \
    dependency:copy-dependencies -DoutputDirectory="$tmp" >"$LOGS/kafka-fetch.log" 2>&1 ||
    { tail -n 30 "$LOGS/kafka-fetch.log" >&2; die "mvn failed (full log: $LOGS/kafka-fetch.log)"; }
  echo "$sum" >"$tmp/.pom.sha256"
  rm -rf "$JARS" && mv "$tmp" "$JARS"   # whole swap: no stale jar versions on the classpath
  say "$(find "$JARS" -name '*.jar' | wc -l) jars in $JARS"
}

# The pid of this instance's broker when it is running, else nothing (and a stale file goes).
running_pid() {
  [[ -f $PIDFILE ]] || return 0
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $CONF"; then
    echo "$pid"
  else
    rm -f "$PIDFILE"
  fi
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# broker_ready PORT: a Metadata request (v4) answered with at least one live (unfenced) broker.
broker_ready() {
  python3 - "$1" <<'PY' 2>/dev/null
import socket, struct, sys
port = int(sys.argv[1])
client = b"kafka.sh"
body = struct.pack(">hhih", 3, 4, 1, len(client)) + client + struct.pack(">ib", -1, 0)
with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
    s.settimeout(3)
    s.sendall(struct.pack(">i", len(body)) + body)
    buf = b""
    while len(buf) < 16:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit(1)
        buf += chunk
_size, correlation, _throttle, brokers = struct.unpack(">iiii", buf[:16])
sys.exit(0 if correlation == 1 and brokers > 0 else 1)
PY
}

write_config() {
  local port=$1 cport=$2 extra=${KAFKA_EXTRA_LISTENERS:+,$KAFKA_EXTRA_LISTENERS}
  cat >"$CONF.tmp" <<EOF
# Written by deploy/kafka/kafka.sh start: a one-node KRaft broker for development and tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport$extra
advertised.listeners=PLAINTEXT://127.0.0.1:$port$extra
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT${KAFKA_EXTRA_PROTOCOL_MAP:+,$KAFKA_EXTRA_PROTOCOL_MAP}
log.dirs=$DATA
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
  if [[ -n ${KAFKA_EXTRA_CONFIG:-} ]]; then
    printf '# KAFKA_EXTRA_CONFIG\n%s\n' "$KAFKA_EXTRA_CONFIG" >>"$CONF.tmp"
    # It may hold passwords (SASL JAAS lines).
    chmod 600 "$CONF.tmp"
  fi
  mv "$CONF.tmp" "$CONF"
}

cmd_start() {
  local port=${1:-${KAFKA_PORT:-9092}}
  [[ $port =~ ^[0-9]+$ ]] || die "bad port: $port"
  local cport=${KAFKA_CONTROLLER_PORT:-$((port + 1))} pid
  pid=$(running_pid)
  local current=
  [[ -n $pid ]] && current=$(cat "$PORTFILE" 2>/dev/null || echo '?')
  if [[ -n $pid && $current == "$port" ]]; then
    echo "kafka: 127.0.0.1:$port"
    return 0
  fi
  port_open "$port" && die "port $port is taken by another process (not the broker in $KAFKA_HOME); choose another: kafka.sh start PORT"
  if port_open "$cport"; then
    # The quorum is static (controller.quorum.voters), so the controller may move freely.
    [[ -n ${KAFKA_CONTROLLER_PORT:-} ]] && die "controller port $cport is taken by another process"
    cport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    say "port $((port + 1)) is taken; the controller listens on $cport instead"
  fi
  if [[ -n $pid ]]; then
    say "the broker in $KAFKA_HOME runs on port $current; restarting it on $port"
    cmd_stop
  fi
  cmd_fetch
  need_java
  mkdir -p "$DATA"
  write_config "$port" "$cport"
  if [[ ! -f $DATA/meta.properties ]]; then
    local cluster
    if [[ -s $KAFKA_HOME/cluster.id ]]; then
      cluster=$(cat "$KAFKA_HOME/cluster.id")
    else
      cluster=$(kafka_tool kafka.tools.StorageTool random-uuid)
      echo "$cluster" >"$KAFKA_HOME/cluster.id"
    fi
    local scram=() entry
    while IFS= read -r entry; do
      [[ -z $entry ]] || scram+=(--add-scram "$entry")
    done <<<"${KAFKA_SCRAM_USERS:-}"
    # A static quorum (controller.quorum.voters), so the port may change between runs.
    kafka_tool kafka.tools.StorageTool format --ignore-formatted -t "$cluster" -c "$CONF" \
      "${scram[@]}" >>"$OUTFILE" 2>&1 ||
      { tail -n 20 "$OUTFILE" >&2; die "storage format failed"; }
  fi
  local t0=$SECONDS
  echo "=== $(date -Is) start on 127.0.0.1:$port" >>"$OUTFILE"
  # setsid: the broker outlives the shell that started it and ignores its terminal's Ctrl-C.
  # shellcheck disable=SC2086
  setsid java ${KAFKA_HEAP:--Xms256m -Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$LOG4J" -Dkafka.log.file="$LOGFILE" \
    -cp "$JARS/*" kafka.Kafka "$CONF" </dev/null >>"$OUTFILE" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  echo "$port" >"$PORTFILE"
  local deadline=$((SECONDS + 90))
  until port_open "$port" && broker_ready "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PIDFILE"
      tail -n 30 "$OUTFILE" >&2
      die "the broker exited while starting; see $OUTFILE and $LOGFILE"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$LOGFILE" >&2 || true
      cmd_stop
      die "the broker did not answer on 127.0.0.1:$port within 90 s; see $LOGFILE"
    fi
    sleep 0.5
  done
  say "broker pid $pid ready in $((SECONDS - t0)) s (log: $LOGFILE)"
  echo "kafka: 127.0.0.1:$port"
}

cmd_stop() {
  local pid
  pid=$(running_pid)
  if [[ -z $pid ]]; then
    say "not running ($KAFKA_HOME)"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      say "broker $pid still alive after 30 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  rm -f "$PIDFILE"
  say "stopped broker $pid"
}

cmd_reset() {
  cmd_stop
  rm -rf "$DATA" "$KAFKA_HOME/cluster.id" "$CONF" "$PORTFILE"
  say "deleted $DATA"
}

cmd_status() {
  local port=${1:-$(cat "$PORTFILE" 2>/dev/null || echo "${KAFKA_PORT:-9092}")}
  if broker_ready "$port"; then echo "kafka: 127.0.0.1:$port"; else say "no broker answers on 127.0.0.1:$port"; return 1; fi
}

cmd_topics() {
  local port=${1:-$(cat "$PORTFILE" 2>/dev/null || echo "${KAFKA_PORT:-9092}")}
  broker_ready "$port" || die "no broker answers on 127.0.0.1:$port (run: kafka.sh start $port)"
  # The topics and their settings are the package's to say (`loyalty topics`): one list,
  # the same one the worker checks at start-up.
  local py=$ROOT/.venv/bin/python
  [[ -x $py ]] || die "no virtualenv in $ROOT/.venv: run 'make venv' first"
  (cd "$ROOT" && LOYALTY_KAFKA_BOOTSTRAP=127.0.0.1:$port "$py" -m services.cli topics) >&2 ||
    die "creating topics failed"
}

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

case "${1:-}" in
  fetch) cmd_fetch ;;
  start) cmd_start "${2:-}" ;;
  topics) cmd_topics "${2:-}" ;;
  stop) cmd_stop ;;
  reset) cmd_reset ;;
  status) cmd_status "${2:-}" ;;
  *) usage ;;
esac
