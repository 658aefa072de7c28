#!/usr/bin/env bash
# Start a Dask scheduler for nirlink. Change PORT / DASHBOARD; add the TLS options for tls://.
set -euo pipefail
PORT="${PORT:-8786}"
DASHBOARD="${DASHBOARD:-:8787}"
exec dask scheduler --host "${HOST:-0.0.0.0}" --port "$PORT" --dashboard-address "$DASHBOARD" "$@"
