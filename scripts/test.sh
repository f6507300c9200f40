#!/usr/bin/env bash
# Quick start: run the whole pulsehub test suite.
# Ensures the build tools (cmake, OpenSSL headers: librdkafka is built from
# source), PostgreSQL and Redis answering on loopback (installing/starting them
# if needed), tansu (the Kafka-API broker the Kafka tests start; installed
# once with cargo, ~13 min) and nginx, then runs
# `cargo test --workspace --all-targets`, then the browser
# end-to-end tests (tests/e2e: headless Debian chromium driven by
# playwright-core against the real hub; chromium and Node.js/npm are
# installed with apt-get when missing, the npm packages with `npm ci`).
# DATABASE_URL defaults to the local server's `postgres` database; the tests
# create their own databases from it. Exits non-zero when either part fails.
# PULSEHUB_E2E=0 skips the browser tests, PULSEHUB_CLIENTS=0 the JS client tests
# (clients/js, node --test against the hub) and the React ones (clients/react,
# examples/react-live-dashboard). Used by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
. scripts/services.sh   # for _svc_apt_install

# Debian's chromium (and fonts, so pages render as for a person: the page's
# own icons are an SVG sprite, but the emoji that events carry, e.g. in
# reactions, need the emoji font), Node.js and npm when missing, then the e2e
# tests' npm packages exactly as package-lock.json pins them. playwright-core
# never downloads a browser: the tests drive /usr/bin/chromium.
ensure_browser() {
    local want=()
    [[ -x /usr/bin/chromium ]] || want+=(chromium fonts-liberation fonts-noto-color-emoji)
    command -v node >/dev/null 2>&1 || want+=(nodejs)
    command -v npm >/dev/null 2>&1 || want+=(npm)
    if ((${#want[@]} > 0)); then
        _svc_apt_install "${want[@]}"
    fi
    local lock=tests/e2e/package-lock.json installed=tests/e2e/node_modules/.package-lock.json
    if [[ ! -f $installed || $lock -nt $installed ]]; then
        echo "test.sh: npm ci in tests/e2e ..."
        (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

# nginx for the load-balancer tests (tests/api/cluster.rs runs its own nginx
# from deploy/nginx.conf.tmpl). Installing Debian's package must not start the
# system's nginx on port 80: policy-rc.d forbids service starts meanwhile.
ensure_nginx() {
    if command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; then
        return 0
    fi
    local policy=/usr/sbin/policy-rc.d created='' rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
    fi
    _svc_apt_install nginx-light || rc=$?
    [[ -z $created ]] || rm -f "$policy"
    return "$rc"
}

# The browser tests, one file at a time (each starts its own hubs).
run_e2e() {
    ensure_browser || return
    cargo build -p pulsehub -p pulsehub-simulate || return
    local file rc=0
    for file in tests/e2e/*.test.mjs; do
        echo "test.sh: e2e ${file#tests/e2e/}"
        (cd tests/e2e && node --test "${file#tests/e2e/}") || rc=$?
    done
    return "$rc"
}

# The JS client's tests (clients/js: node --test against the debug hub),
# after `npm ci` when its lock changed. PULSEHUB_CLIENTS=0 skips them.
run_clients() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        _svc_apt_install nodejs npm || return
    fi
    local lock=clients/js/package-lock.json installed=clients/js/node_modules/.package-lock.json
    if [[ ! -f $installed || $lock -nt $installed ]]; then
        echo "test.sh: npm ci in clients/js ..."
        (cd clients/js && npm ci --no-audit --no-fund --loglevel=error) || return
    fi
    cargo build -p pulsehub --bin pulsehub || return
    echo "test.sh: clients/js"
    (cd clients/js && npm test) # the hub: PULSEHUB_BIN, default target/debug/pulsehub
}

# `npm ci` in a package directory when its package-lock.json changed since
# the last install there.
npm_ci_when_changed() {
    local dir=$1
    local lock=$dir/package-lock.json installed=$dir/node_modules/.package-lock.json
    if [[ ! -f $installed || $lock -nt $installed ]]; then
        echo "test.sh: npm ci in $dir ..."
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || return
    fi
}

# The React hooks (clients/react: @testing-library/react in jsdom against the
# debug hub) and the example app (examples/react-live-dashboard: vite build,
# served, in Debian's chromium against the hub). Both reuse the hub helper of
# clients/js's tests, so clients/js is installed too. PULSEHUB_CLIENTS=0
# skips them.
run_react() {
    local dir rc=0
    if [[ ! -x ${CHROMIUM_PATH:-/usr/bin/chromium} ]]; then
        _svc_apt_install chromium fonts-liberation fonts-noto-color-emoji || return
    fi
    for dir in clients/js clients/react examples/react-live-dashboard; do
        npm_ci_when_changed "$dir" || return
    done
    cargo build -p pulsehub --bin pulsehub || return
    echo "test.sh: clients/react"
    (cd clients/react && npm test) || rc=$?
    echo "test.sh: examples/react-live-dashboard"
    (cd examples/react-live-dashboard && npm test) || rc=$?
    return "$rc"
}

start=$SECONDS

scripts/services.sh build postgres redis tansu
ensure_nginx

if [[ -z ${DATABASE_URL:-} ]]; then
    export DATABASE_URL="postgres://postgres@${PGHOST:-127.0.0.1}:${PGPORT:-5432}/postgres"
fi

status=0
cargo test --workspace --all-targets "$@" || status=$?

if [[ ${PULSEHUB_E2E:-1} != 0 ]]; then
    e2e=0
    run_e2e || e2e=$?
    if ((e2e != 0)); then
        echo "test.sh: browser end-to-end tests FAILED (exit code $e2e)" >&2
        ((status != 0)) || status=$e2e
    fi
fi

if [[ ${PULSEHUB_CLIENTS:-1} != 0 ]]; then
    clients=0
    run_clients || clients=$?
    if ((clients != 0)); then
        echo "test.sh: client tests (clients/js) FAILED (exit code $clients)" >&2
        ((status != 0)) || status=$clients
    fi
    react=0
    run_react || react=$?
    if ((react != 0)); then
        echo "test.sh: React tests (clients/react, examples/react-live-dashboard) FAILED (exit code $react)" >&2
        ((status != 0)) || status=$react
    fi
fi

elapsed=$((SECONDS - start))
printf 'test.sh: %s in %dm%02ds (exit code %d)\n' \
    "$([[ $status -eq 0 ]] && echo passed || echo FAILED)" \
    $((elapsed / 60)) $((elapsed % 60)) "$status"
exit "$status"
