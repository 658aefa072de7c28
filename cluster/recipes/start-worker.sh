#!/usr/bin/env bash
# Start nirlink workers on this host: one process per core, one thread each.
# Usage: start-worker.sh tcp://SCHEDULER:8786 [extra dask worker options]
# TLS: TLS_DIR=DIR start-worker.sh tls://SCHEDULER:8786 (DIR holds ca.pem, worker.pem, worker-key.pem).
# A job submitted with `nirlink submit` runs its driver in one of these workers; over TLS that
# driver connects to the scheduler with the worker's certificate: nothing more to set up.
set -euo pipefail
SCHEDULER="$1"; shift
NWORKERS="${NWORKERS:-$(nproc)}"
MEMORY_LIMIT="${MEMORY_LIMIT:-auto}"
LOCAL_DIRECTORY="${LOCAL_DIRECTORY:-/tmp/dask-nirlink}"
TLS=()
if [[ -n "${TLS_DIR:-}" ]]; then
    TLS=(--tls-ca-file "$TLS_DIR/ca.pem" --tls-cert "$TLS_DIR/worker.pem" --tls-key "$TLS_DIR/worker-key.pem")
fi
exec dask worker "$SCHEDULER" --nworkers "$NWORKERS" --nthreads 1 --memory-limit "$MEMORY_LIMIT" \
    --local-directory "$LOCAL_DIRECTORY" ${TLS[@]+"${TLS[@]}"} "$@"
