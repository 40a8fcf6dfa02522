#!/usr/bin/env bash
# `make lab`: start the embedded Tiledesk sandbox, then JupyterLab on notebooks/; one Ctrl-C stops both.
# Usage: tools/lab.sh <venv bin dir> <sandbox host> <sandbox port> <lab port>
# TILEDESK_LAB_COMMAND replaces the JupyterLab command (e.g. "jupyter notebook");
# TILEDESK_SANDBOX_DATA moves the sandbox's data folder (default: .sandbox in the repository).
set -euo pipefail
BIN=${1:-.venv/bin}
HOST=${2:-127.0.0.1}
PORT=${3:-3000}
LAB_PORT=${4:-8888}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

# Job control puts each background job in its own process group, so Ctrl-C in the terminal reaches
# this script (and make) only. Left to itself, JupyterLab answers SIGINT with "Shut down this Jupyter
# server (y/[n])?" and carries on after 5 s, while the sandbox stops at once: new kernels then start a
# sandbox of their own, with another data folder. Instead, this script stops both, in order.
set -m

sandbox_pid=""
lab_pid=""
stopping=""

say() {  # the terminal may be gone (its window closed): stopping must go on regardless
  echo "$@" 2>/dev/null || true
}

stop_process() {  # stop_process <pid> <name>: SIGTERM, then SIGKILL after 15 s
  local pid=$1 name=$2
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "  $name did not stop within 15 s: killing it." >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  [ -n "$stopping" ] && return
  stopping=1
  trap '' INT TERM HUP  # a second Ctrl-C while stopping changes nothing: stopping is already under way
  if [ -n "$lab_pid" ] && kill -0 "$lab_pid" 2>/dev/null; then
    say
    say "Stopping JupyterLab (and its kernels)..."
    stop_process "$lab_pid" JupyterLab
  fi
  if [ -n "$sandbox_pid" ] && kill -0 "$sandbox_pid" 2>/dev/null; then
    say "Stopping the sandbox (its data stays in ${TILEDESK_SANDBOX_DATA:-$ROOT/.sandbox})..."
    stop_process "$sandbox_pid" "The sandbox"
  fi
  [ -n "$lab_pid$sandbox_pid" ] && say "Stopped."
  return 0
}
on_signal() {
  cleanup
  exit 0
}
trap cleanup EXIT
trap on_signal INT TERM HUP

answers_as_sandbox() {
  "$BIN/python" - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/", timeout=2) as response:
        sys.exit(0 if response.read().startswith(b"Hello from Tiledesk server") else 1)
except Exception:
    sys.exit(1)
PY
}

answers_http() {  # answers_http <url>: any HTTP answer at all
  "$BIN/python" - "$1" <<'PY' 2>/dev/null
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=1).close()
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)
PY
}

url="http://$HOST:$PORT"
if [ "$PORT" != "0" ] && answers_as_sandbox "$url"; then
  echo "A sandbox is already running at $url: using it (this script will not stop it)."
else
  out=$(mktemp)
  "$BIN/python" -m tiledesk_tutorial.sandbox --host "$HOST" --port "$PORT" --data "${TILEDESK_SANDBOX_DATA:-$ROOT/.sandbox}" \
    >"$out" 2>"$out.err" &
  sandbox_pid=$!
  for _ in $(seq 1 100); do
    if [ -s "$out" ] || ! kill -0 "$sandbox_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  url=$(head -n 1 "$out")
  if [ -z "$url" ]; then
    echo "The sandbox did not start:" >&2
    cat "$out.err" >&2
    rm -f "$out" "$out.err"
    exit 1
  fi
  rm -f "$out" "$out.err"
fi

export TILEDESK_SANDBOX_URL="$url"

banner() {
  echo
  echo "  Tiledesk sandbox:  $url"
  echo "  Agent console:     $url/console"
  if [ -n "${1:-}" ]; then
    echo "  JupyterLab:        $1"
  fi
  if [ -n "${TILEDESK_API_URL:-}" ]; then
    echo "  TILEDESK_API_URL is set: the notebooks will use $TILEDESK_API_URL instead of the sandbox."
  fi
  echo "  Press Ctrl-C once to stop JupyterLab and the sandbox."
  echo
}

if [ -n "${TILEDESK_LAB_COMMAND:-}" ]; then
  banner
  bash -c "$TILEDESK_LAB_COMMAND" &
  lab_pid=$!
  wait "$lab_pid" || true
  lab_pid=""
  exit 0
fi

extra=()
if [ "$(id -u)" = "0" ]; then extra+=(--allow-root); fi
banner
# port_retries=0: the URL printed below is the one JupyterLab really listens on, or it says why not.
"$BIN/jupyter" lab --notebook-dir="$ROOT/notebooks" --port "$LAB_PORT" \
  --ServerApp.port_retries=0 "${extra[@]}" &
lab_pid=$!
# JupyterLab's own log scrolls the addresses above out of sight: print them again once it answers.
for _ in $(seq 1 600); do
  kill -0 "$lab_pid" 2>/dev/null || break
  if answers_http "http://127.0.0.1:$LAB_PORT/api"; then
    banner "http://127.0.0.1:$LAB_PORT/lab (the link with its token is in JupyterLab's log above)"
    break
  fi
  sleep 0.2
done
status=0
wait "$lab_pid" || status=$?
lab_pid=""
if [ "$status" != 0 ] && [ -z "$stopping" ]; then
  echo "JupyterLab stopped with status $status (see its log above)." >&2
fi
exit "$status"
