# Sourced by scripts that run the system (scripts/dev, scripts/bench): the processes they start
# and how they stop them.
#
#   launch NAME LOGFILE COMMAND...  starts COMMAND in the background, output to LOGFILE
#   wait_for_url URL HINT           polls URL until it answers 2xx (30 s), else exits with HINT
#   stop_processes                  stops everything launched (see below)
# `pids` and `names` list what was launched, in order (nats-server first).

pids=()
names=()

launch() { # name logfile command...
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  pids+=($!)
  names+=("$name")
}

wait_for_url() { # url hint
  for _ in $(seq 1 300); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "not ready after 30 s: $1 ($2)" >&2
  exit 1
}

# In reverse order of launch: the services first, so they drain and flush their acks while
# what they stand on (NATS, PostgreSQL) is still up; then those.
stop_processes() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
}
