#!/usr/bin/env bash
# Quick start: run the pulsehub hub with its dashboard and live demo data.
# Ensures the build tools and PostgreSQL (installing/starting them if needed), builds the
# release binaries, starts `pulsehub serve --demo` (extra arguments are passed
# to `serve`), waits for /ready, then feeds it with `pulsehub-simulate`.
# `--kafka` (first argument): the events go through Kafka instead: a local
# Kafka-API broker (tansu, `scripts/services.sh kafka`) on 127.0.0.1:9092,
# the simulator producing to topic `pulsehub.events` and the hub consuming it.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

kafka=''
if [[ ${1:-} == --kafka ]]; then
    kafka="127.0.0.1:${KAFKA_PORT:-9092}"
    shift
fi

scripts/services.sh build postgres
if [[ -n $kafka ]]; then
    scripts/services.sh kafka
fi

# serve's own default is this URL; follow PGHOST/PGPORT when they are set.
if [[ -z ${DATABASE_URL:-} ]]; then
    export DATABASE_URL="postgres://postgres@${PGHOST:-127.0.0.1}:${PGPORT:-5432}/pulsehub"
fi

cargo build --release -p pulsehub -p pulsehub-simulate

# Where serve listens: PULSEHUB_BIND, or --bind among the extra arguments.
bind=${PULSEHUB_BIND:-127.0.0.1:8080}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
        --bind=*) bind=${args[i]#--bind=} ;;
        --bind) bind=${args[i + 1]:-$bind} ;;
    esac
done
port=${bind##*:}
host=${bind%:*}
case $host in
    0.0.0.0|'['*|'') host=127.0.0.1 ;;   # wildcard/IPv6 binds: use loopback
esac
base_url="http://$host:$port"

serve_pid=''
sim_pid=''
# shellcheck disable=SC2317 # invoked from the traps below
stop_all() {
    trap - INT TERM EXIT
    local pid
    for pid in $sim_pid $serve_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $sim_pid $serve_pid; do
        wait "$pid" 2>/dev/null || true
    done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

simulate=(target/release/pulsehub-simulate --url "$base_url" --scopes demo)
if [[ -n $kafka ]]; then
    # The simulator creates the topic the hub then finds (and waits for it
    # in /ready); the hub reads what was produced before it joined.
    simulate+=(--kafka "$kafka" --topic pulsehub.events)
    "${simulate[@]}" &
    sim_pid=$!
    export PULSEHUB_KAFKA_BROKERS=$kafka PULSEHUB_KAFKA_TOPICS=pulsehub.events
    export PULSEHUB_KAFKA_PROPERTIES=${PULSEHUB_KAFKA_PROPERTIES:-auto.offset.reset=earliest}
fi

target/release/pulsehub serve --demo "$@" &
serve_pid=$!

# GET /ready -> HTTP status code ("000" when nothing answers).
ready_status() {
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null -m 2 -w '%{http_code}' "$base_url/ready" || true
    else
        # shellcheck disable=SC2016 # expanded by the inner bash
        timeout 3 bash -c '
            exec 3<>"/dev/tcp/$1/$2" || exit 1
            printf "GET /ready HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" "$1" >&3
            IFS=" " read -r _ code _ <&3 && printf "%s" "$code"' _ "$host" "$port" 2>/dev/null || true
    fi
}

echo "waiting for $base_url/ready ..."
for ((i = 0; i < 120; i++)); do
    if ! kill -0 "$serve_pid" 2>/dev/null; then
        wait "$serve_pid" || true
        echo "demo.sh: pulsehub serve exited before becoming ready" >&2
        exit 1
    fi
    [[ $(ready_status) == 200 ]] && break
    sleep 0.5
done
if [[ $(ready_status) != 200 ]]; then
    echo "demo.sh: $base_url/ready did not return 200 within 60s" >&2
    exit 1
fi

if [[ -z $kafka ]]; then
    "${simulate[@]}" &
    sim_pid=$!
fi

echo
echo "pulsehub is running: open $base_url/ in a browser (demo data is flowing${kafka:+ through Kafka at $kafka})."
echo "Press Ctrl-C to stop the hub and the simulator."
echo

# Run until the hub exits (or Ctrl-C); the EXIT trap stops the simulator.
status=0
wait "$serve_pid" || status=$?
serve_pid=''
exit "$status"
