#!/usr/bin/env bash
# Quick start: run the whole pulsehub test suite.
# Ensures PostgreSQL and Redis answer on loopback (installing/starting them if
# needed), then runs `cargo test --workspace --all-targets`. DATABASE_URL
# defaults to the local server's `postgres` database; the tests create their
# own databases from it. Exits with cargo's exit code. Used by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS

scripts/services.sh postgres redis

if [[ -z ${DATABASE_URL:-} ]]; then
    export DATABASE_URL="postgres://postgres@${PGHOST:-127.0.0.1}:${PGPORT:-5432}/postgres"
fi

status=0
cargo test --workspace --all-targets "$@" || status=$?

elapsed=$((SECONDS - start))
printf 'test.sh: %s in %dm%02ds (exit code %d)\n' \
    "$([[ $status -eq 0 ]] && echo passed || echo FAILED)" \
    $((elapsed / 60)) $((elapsed % 60)) "$status"
exit "$status"
