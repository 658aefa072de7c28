#!/usr/bin/env bash
# Start a Dask scheduler for nirlink. Change PORT / DASHBOARD; extra options go to `dask scheduler`.
# TLS: TLS_DIR=DIR (made by `nirlink cluster certs DIR`, or your PKI's files under these names:
# ca.pem, scheduler.pem, scheduler-key.pem) listens on tls://HOST:PORT.
set -euo pipefail
PORT="${PORT:-8786}"
DASHBOARD="${DASHBOARD:-:8787}"
TLS=()
if [[ -n "${TLS_DIR:-}" ]]; then
    TLS=(--protocol tls --tls-ca-file "$TLS_DIR/ca.pem" --tls-cert "$TLS_DIR/scheduler.pem"
         --tls-key "$TLS_DIR/scheduler-key.pem")
fi
exec dask scheduler --host "${HOST:-0.0.0.0}" --port "$PORT" --dashboard-address "$DASHBOARD" ${TLS[@]+"${TLS[@]}"} "$@"
