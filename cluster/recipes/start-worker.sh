#!/usr/bin/env bash
# Start nirlink workers on this host: one process per core, one thread each.
# Usage: start-worker.sh tcp://SCHEDULER:8786 [extra dask worker options]
set -euo pipefail
SCHEDULER="$1"; shift
NWORKERS="${NWORKERS:-$(nproc)}"
MEMORY_LIMIT="${MEMORY_LIMIT:-auto}"
LOCAL_DIRECTORY="${LOCAL_DIRECTORY:-/tmp/dask-nirlink}"
exec dask worker "$SCHEDULER" --nworkers "$NWORKERS" --nthreads 1 --memory-limit "$MEMORY_LIMIT" \
    --local-directory "$LOCAL_DIRECTORY" "$@"
