#!/usr/bin/env bash
# `make lab`: start the embedded Tiledesk sandbox, then JupyterLab on notebooks/.
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

sandbox_pid=""
cleanup() {
  if [ -n "$sandbox_pid" ] && kill -0 "$sandbox_pid" 2>/dev/null; then
    kill -TERM "$sandbox_pid" 2>/dev/null || true
    wait "$sandbox_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

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

url="http://$HOST:$PORT"
if [ "$PORT" != "0" ] && answers_as_sandbox "$url"; then
  echo "A sandbox is already running at $url: using it."
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
    exit 1
  fi
  rm -f "$out"
fi

export TILEDESK_SANDBOX_URL="$url"
echo
echo "  Tiledesk sandbox:  $url"
echo "  Agent console:     $url/console"
if [ -n "${TILEDESK_API_URL:-}" ]; then
  echo "  TILEDESK_API_URL is set: the notebooks will use $TILEDESK_API_URL instead of the sandbox."
fi
echo

if [ -n "${TILEDESK_LAB_COMMAND:-}" ]; then
  bash -c "$TILEDESK_LAB_COMMAND"
else
  extra=()
  if [ "$(id -u)" = "0" ]; then extra+=(--allow-root); fi
  "$BIN/jupyter" lab --notebook-dir="$ROOT/notebooks" --port "$LAB_PORT" "${extra[@]}"
fi
