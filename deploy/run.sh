#!/usr/bin/env bash
# `make run`: starts Kafka, PostgreSQL, the worker, the projector and the API, publishes a
# generated demo stream and prints what the API serves. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .local/logs
PY=.venv/bin/python

pids=()
# Runs however far the script got: a failed or interrupted `local.sh up` may have left Kafka
# running alone, and `down` is a no-op for what is not running.
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping worker, projector, api, Kafka and PostgreSQL..."
  for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" 2>/dev/null || true; done
  bash deploy/local.sh down || echo "run.sh: stopping Kafka or PostgreSQL failed (see above)" >&2
}
trap stop EXIT
# exit, not stop: after a trapped signal bash would carry on with the next command.
trap 'exit 130' INT
trap 'exit 143' TERM

bash deploy/local.sh up
eval "$(bash deploy/local.sh env)"
export LOYALTY_API_PORT=${LOYALTY_API_PORT:-8080}
# The demo stream spans the past 400 days; a wall-clock sweep must not run ahead of it.
export LOYALTY_DAILY_SWEEP=${LOYALTY_DAILY_SWEEP:-off}
# The demo runs the seasonal program: its campaigns, badges and 14-day return window show
# in the summary. LOYALTY_PROGRAM= (empty) runs the default program instead.
export LOYALTY_PROGRAM=${LOYALTY_PROGRAM-services/programs/seasonal.toml}

for role in worker projector api; do
  $PY -m services.cli "$role" > ".local/logs/$role.log" 2>&1 &
  pids+=($!)
done

$PY -m services.cli demo .local/demo.jsonl --members 300
$PY -m services.cli publish .local/demo.jsonl
$PY -m services.demo_summary --wait 180
echo
echo "Try: curl http://127.0.0.1:${LOYALTY_API_PORT}/members/shopper-00001"
echo "     curl http://127.0.0.1:${LOYALTY_API_PORT}/status"
echo "Logs in .local/logs. Ctrl-C stops everything."
wait
