#!/usr/bin/env bash
# A local Redis Cluster to run pulsehub on sharded pub/sub: 3 masters and 3
# replicas of Debian's redis-server (installed when missing) on loopback
# ports BASE..BASE+5 (cluster bus: +10000), no persistence, formed with
# `redis-cli --cluster create`. The tests start their own
# (tests/api/helpers/redis_cluster.rs); this one is for trying it by hand and
# for `REDIS_CLUSTER=1 scripts/cluster.sh`.
#
#   scripts/redis-cluster.sh start   # prints PULSEHUB_REDIS_CLUSTER_NODES=...
#   scripts/redis-cluster.sh stop    # stops the nodes it started, removes their files
#
# REDIS_CLUSTER_PORT (default 7000) is BASE; REDIS_CLUSTER_NODE_TIMEOUT
# (default 5000 ms) is each node's cluster-node-timeout (how long before a
# dead master's replica is promoted).
set -euo pipefail
cd "$(dirname "$0")/.."

base=${REDIS_CLUSTER_PORT:-7000}
dir=${REDIS_CLUSTER_DIR:-/var/tmp/pulsehub-redis-cluster-$base}
ports=$(seq "$base" $((base + 5)))

start() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        echo "installing redis-server from Debian's packages"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    fi
    for p in $ports; do
        if redis-cli -p "$p" ping >/dev/null 2>&1; then
            echo "something already answers on 127.0.0.1:$p (scripts/redis-cluster.sh stop, or set REDIS_CLUSTER_PORT)" >&2
            exit 1
        fi
    done
    rm -rf "$dir"
    mkdir -p "$dir"
    for p in $ports; do
        redis-server --daemonize yes --bind 127.0.0.1 --port "$p" \
            --cluster-enabled yes --cluster-config-file "$dir/nodes-$p.conf" \
            --cluster-node-timeout "${REDIS_CLUSTER_NODE_TIMEOUT:-5000}" \
            --save '' --appendonly no --dir "$dir" \
            --logfile "$dir/redis-$p.log" --pidfile "$dir/redis-$p.pid"
    done
    for p in $ports; do
        for _ in $(seq 1 100); do
            redis-cli -p "$p" ping >/dev/null 2>&1 && break
            sleep 0.1
        done
        redis-cli -p "$p" ping >/dev/null || { echo "node $p did not start; see $dir/redis-$p.log" >&2; exit 1; }
    done
    # shellcheck disable=SC2046
    redis-cli --cluster create $(for p in $ports; do printf '127.0.0.1:%s ' "$p"; done) \
        --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
        || { echo "redis-cli --cluster create failed; see $dir/create.log" >&2; exit 1; }
    for p in $ports; do
        for _ in $(seq 1 300); do
            redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && break
            sleep 0.1
        done
        redis-cli -p "$p" cluster info | grep -q '^cluster_state:ok' \
            || { echo "node $p never reported cluster_state:ok" >&2; exit 1; }
    done
    echo "PULSEHUB_REDIS_CLUSTER_NODES=redis://127.0.0.1:$base,redis://127.0.0.1:$((base + 1))"
}

stop() {
    for p in $ports; do
        pidfile="$dir/redis-$p.pid"
        [[ -f $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    for p in $ports; do
        for _ in $(seq 1 50); do
            redis-cli -p "$p" ping >/dev/null 2>&1 || break
            sleep 0.1
        done
    done
    rm -rf "$dir"
}

case ${1:-start} in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
