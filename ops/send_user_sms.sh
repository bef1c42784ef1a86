#!/usr/bin/env bash
# User SMS dispatcher: management script, a drop-in for the old send_user_sms.sh.
#
#   ops/send_user_sms.sh start | stop | restart | status | balance <enterprise_number> [--all|--json|...]
#
# `start` runs `node dist/src/run.mjs dist/src/main.js all` in the background: migrations, the API on
# HOST:PORT (127.0.0.1:8014), WORKER_PROCESSES supervised worker processes and one background process
# (delivery look-ups, callbacks), all under one PID that leads its own process group. Output goes to the log file; the PID to the PID file. dist/ is
# the service compiled to JavaScript (`npm run build`); `start` builds it first when it is missing
# or older than the sources.
#
# Settings (environment, or the env file, which is read first when it exists):
#   USER_SMS_ENV_FILE      env file of KEY=value lines (default: <project>/.env); same format as
#                          systemd's EnvironmentFile: quote values with spaces
#   USER_SMS_PID_FILE      default: <project>/send_user_sms.pid   (the old script's names)
#   USER_SMS_LOG_FILE      default: <project>/send_user_sms.log
#   USER_SMS_STOP_TIMEOUT  seconds to wait for a graceful stop before SIGKILL of the whole process
#                          group (default 60: above the service's own drain limit, WebSMS call
#                          budget + 15 s = 45 s by default)
#   USER_SMS_START_TIMEOUT seconds to wait for the API to answer after start (default 60)
#   NODE_BIN               the Node.js binary (default: node_modules/.bin/node, else `node` on PATH;
#                          it must be Node 24 or newer)
#   and every service variable (PORT, HOST, DATABASE_URL, REDIS_URL, WORKER_PROCESSES, ...).
#
# Exit codes (LSB): status → 0 running, 1 dead but the PID file remains, 3 not running, 4 unknown;
# start/stop/restart → 0 success (also: already running / already stopped), 1 failure;
# 2 wrong usage. balance → the balance command's own code.

set -uo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
APP_DIR=${USER_SMS_HOME:-$(cd -- "$SCRIPT_DIR/.." && pwd)}
ENV_FILE=${USER_SMS_ENV_FILE:-$APP_DIR/.env}

if [ -f "$ENV_FILE" ]; then
  if [ ! -r "$ENV_FILE" ]; then
    echo "❌ Cannot read the env file $ENV_FILE" >&2
    exit 4
  fi
  set -a
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  set +a
fi

PID_FILE=${USER_SMS_PID_FILE:-$APP_DIR/send_user_sms.pid}
LOG_FILE=${USER_SMS_LOG_FILE:-$APP_DIR/send_user_sms.log}
STOP_TIMEOUT=${USER_SMS_STOP_TIMEOUT:-60}
START_TIMEOUT=${USER_SMS_START_TIMEOUT:-60}
# --max-semi-space-size=2: V8's young generation kept small (README, Performance: less memory and less CPU).
SERVICE_ARGS=(--max-semi-space-size=2 dist/src/run.mjs dist/src/main.js all)
# What the service's command line contains: a PID whose process does not show it is not ours.
SERVICE_SIGNATURE='dist/src/run.mjs dist/src/main.js all'

say() { printf '%s\n' "$*"; }
fail() { printf '%s\n' "$*" >&2; }

for setting in STOP_TIMEOUT START_TIMEOUT; do
  if ! [[ ${!setting} =~ ^[0-9]+$ ]]; then
    fail "USER_SMS_$setting must be a whole number of seconds, got \"${!setting}\""
    exit 2
  fi
done

# --- Node ------------------------------------------------------------------------------------
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null; }

find_node() {
  local candidate major
  for candidate in ${NODE_BIN:+"$NODE_BIN"} "$APP_DIR/node_modules/.bin/node" "$(command -v node 2>/dev/null)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    major=$(node_major "$candidate")
    if [ -n "$major" ] && [ "$major" -ge 24 ]; then
      NODE=$candidate
      return 0
    fi
    [ -n "${NODE_BIN:-}" ] && [ "$candidate" = "$NODE_BIN" ] && fail "⚠️  NODE_BIN=$NODE_BIN is Node ${major:-?}; Node 24 or newer is needed"
  done
  fail "❌ Node.js 24 or newer not found: run \`npm ci\` in $APP_DIR (it installs Node 24 into node_modules/.bin) or set NODE_BIN"
  return 1
}

# --- PID file ----------------------------------------------------------------------------------
read_pid() {
  local pid
  [ -f "$PID_FILE" ] || return 1
  pid=$(tr -dc '0-9' <"$PID_FILE" 2>/dev/null)
  [ -n "$pid" ] || return 1
  printf '%s' "$pid"
}

# Alive and ours: a recycled PID that now belongs to another program is not ours.
is_ours() {
  local pid=$1 args
  kill -0 "$pid" 2>/dev/null || [ -d "/proc/$pid" ] || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  else
    args=$(ps -ww -o args= -p "$pid" 2>/dev/null) || return 1
  fi
  [[ "$args" == *"$SERVICE_SIGNATURE"* ]]
}

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

# 0 running (PID printed), 1 stale PID file, 3 not running.
service_state() {
  local pid
  if ! pid=$(read_pid); then
    [ -f "$PID_FILE" ] && return 1
    return 3
  fi
  if is_ours "$pid"; then
    printf '%s' "$pid"
    return 0
  fi
  return 1
}

# --- HTTP probe (Node's fetch: no curl needed) -------------------------------------------------
probe_host() {
  local host=${HOST:-127.0.0.1}
  case "$host" in
    0.0.0.0 | '') host=127.0.0.1 ;;
    :: | '[::]') host='[::1]' ;;
    *:*) host="[$host]" ;;
  esac
  printf '%s' "$host"
}

# Prints the body of GET <path> and succeeds on any HTTP answer; fails when nothing answers.
http_get() {
  "$NODE" -e '
    fetch(process.argv[1], { signal: AbortSignal.timeout(3000) })
      .then(async (r) => { process.stdout.write(await r.text()); process.exit(0); })
      .catch(() => process.exit(1));
  ' "http://$(probe_host):${PORT:-8014}$1" 2>/dev/null
}

# --- commands --------------------------------------------------------------------------------
start() {
  local pid state
  pid=$(service_state)
  state=$?
  if [ "$state" -eq 0 ]; then
    say "✅ User SMS service is already running (PID $pid)"
    return 0
  fi
  if [ "$state" -eq 1 ]; then
    say "⚠️  Removing a stale PID file ($PID_FILE: no such process of this service)"
    rm -f "$PID_FILE"
  fi
  find_node || return 1
  # Another program on the port (the old Python service?) would answer our readiness check.
  if http_get / >/dev/null; then
    fail "❌ Port ${PORT:-8014} is already in use on $(probe_host): stop the service listening there first"
    return 1
  fi
  mkdir -p -- "$(dirname -- "$PID_FILE")" "$(dirname -- "$LOG_FILE")" || return 1
  : >>"$LOG_FILE" || {
    fail "❌ Cannot write the log file $LOG_FILE"
    return 1
  }
  build || return 1

  say "🚀 Starting User SMS service (port ${PORT:-8014}, ${WORKER_PROCESSES:-one per CPU} worker process(es)); log: $LOG_FILE"
  # setsid: the service leads its own session and process group (PGID = PID), detached from this
  # terminal, so `stop` can signal the whole group. The shell writes its own PID, then becomes
  # the service (exec keeps the PID). The log is opened for appending: logrotate's copytruncate
  # then leaves no hole at the start of the file.
  (
    cd "$APP_DIR" || exit 1
    exec setsid "$BASH" -c 'echo $$ >"$1"; shift; exec "$@" </dev/null >>"$0" 2>&1' "$LOG_FILE" "$PID_FILE" "$NODE" "${SERVICE_ARGS[@]}"
  ) &
  local deadline=$((SECONDS + START_TIMEOUT))
  pid=''
  while [ -z "$pid" ] && [ "$SECONDS" -lt "$deadline" ]; do
    pid=$(read_pid) || sleep 0.1
  done
  if [ -z "$pid" ]; then
    fail "❌ The service did not start (no PID file $PID_FILE); see $LOG_FILE"
    return 1
  fi

  # Up when the API answers; down for good when the process is gone.
  while [ "$SECONDS" -lt "$deadline" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      fail "❌ The service exited during start-up; last lines of $LOG_FILE:"
      tail -n 20 "$LOG_FILE" >&2
      return 1
    fi
    if http_get / >/dev/null; then
      say "✅ User SMS service started (PID $pid) on http://$(probe_host):${PORT:-8014}"
      return 0
    fi
    sleep 0.5
  done
  fail "❌ The service (PID $pid) did not answer on port ${PORT:-8014} within ${START_TIMEOUT} s; it is still running: see $LOG_FILE, or stop it"
  return 1
}

# The compiled service (ops/build.mjs, as `npm run build`), built again when any source is newer
# than it. It needs the TypeScript compiler, a dev dependency that `npm ci` installs (like Node 24).
build() {
  local built="$APP_DIR/dist/src/main.js"
  if [ -f "$built" ] && [ -z "$(find "$APP_DIR/src" "$APP_DIR/workers" "$APP_DIR/migrations" -newer "$built" -print -quit 2>/dev/null)" ]; then
    return 0
  fi
  say "🔧 Building the service (ops/build.mjs)"
  if ! "$NODE" "$APP_DIR/ops/build.mjs" >>"$LOG_FILE" 2>&1; then
    fail "❌ The build failed; last lines of $LOG_FILE:"
    tail -n 20 "$LOG_FILE" >&2
    return 1
  fi
}

stop() {
  local pid state
  pid=$(service_state)
  state=$?
  if [ "$state" -ne 0 ]; then
    if [ "$state" -eq 1 ]; then
      say "⚠️  Removing a stale PID file ($PID_FILE: no such process of this service)"
      rm -f "$PID_FILE"
    fi
    say "ℹ️  User SMS service is not running"
    return 0
  fi

  # Only a group this service leads is ours to kill as a whole.
  local pgid
  pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')
  [ "$pgid" = "$pid" ] || pgid=''

  say "🛑 Stopping User SMS service (PID $pid): finishing messages in progress (up to ${STOP_TIMEOUT} s)..."
  # SIGTERM to the main process only: it drains the API and stops its worker processes itself.
  kill -TERM "$pid" 2>/dev/null
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done

  local forced=''
  if kill -0 "$pid" 2>/dev/null || { [ -n "$pgid" ] && group_alive "$pgid"; }; then
    # A drain that cannot finish, or a worker left behind: the whole group goes.
    forced=1
    fail "⚠️  Still running after ${STOP_TIMEOUT} s: SIGKILL to process group ${pgid:-$pid}"
    if [ -n "$pgid" ]; then kill -KILL -- "-$pgid" 2>/dev/null; else kill -KILL "$pid" 2>/dev/null; fi
    deadline=$((SECONDS + 10))
    while { kill -0 "$pid" 2>/dev/null || { [ -n "$pgid" ] && group_alive "$pgid"; }; } && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  fi
  if kill -0 "$pid" 2>/dev/null || { [ -n "$pgid" ] && group_alive "$pgid"; }; then
    fail "❌ Could not stop the service (PID $pid)"
    return 1
  fi
  rm -f "$PID_FILE"
  if [ -n "$forced" ]; then say "✅ User SMS service stopped (forced)"; else say "✅ User SMS service stopped"; fi
  return 0
}

status() {
  local pid state
  pid=$(service_state)
  state=$?
  case "$state" in
    0)
      local workers background
      workers=$(ps -o args= --ppid "$pid" 2>/dev/null | grep -c ' worker$')
      background=$(ps -o args= --ppid "$pid" 2>/dev/null | grep -c ' background$')
      say "✅ User SMS service is running (PID $pid, $workers worker process(es), $background background process), port ${PORT:-8014}"
      if find_node 2>/dev/null; then
        local health
        if health=$(http_get /health); then say "   health: $health"; else say "   health: no answer on port ${PORT:-8014}"; fi
      fi
      return 0
      ;;
    1)
      say "❌ User SMS service is dead, but its PID file remains ($PID_FILE)"
      return 1
      ;;
    *)
      say "⭕ User SMS service is not running"
      return 3
      ;;
  esac
}

balance() {
  if [ "$#" -eq 0 ]; then
    fail "usage: $0 balance <enterprise_number> [--json]   |   $0 balance --all [--json] [--below <amount>]"
    return 2
  fi
  find_node || return 1
  cd "$APP_DIR" || return 1
  "$NODE" src/run.mjs src/cli/balance.ts "$@"
}

usage() {
  fail "usage: $0 {start|stop|restart|status|balance <enterprise_number>}"
}

command=${1:-}
[ "$#" -gt 0 ] && shift
case "$command" in
  start) start ;;
  stop) stop ;;
  restart) stop && start ;;
  status) status ;;
  balance) balance "$@" ;;
  *)
    usage
    exit 2
    ;;
esac
