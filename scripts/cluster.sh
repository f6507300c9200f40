#!/usr/bin/env bash
# A load-balanced pulsehub on loopback: PostgreSQL and Redis (started or
# installed by scripts/services.sh), N replicas (default 2) sharing them, and
# nginx in front on 127.0.0.1:8080 (deploy/nginx.conf.tmpl). Demo secrets.
# Ctrl-C stops everything.
#
#   scripts/cluster.sh                 # 2 replicas behind http://127.0.0.1:8080
#   REPLICAS=3 scripts/cluster.sh      # 3 replicas
#   SIMULATE=1 scripts/cluster.sh      # and feed scope "demo" with simulated events
#   REDIS_CLUSTER=1 scripts/cluster.sh # on a local Redis Cluster (scripts/redis-cluster.sh:
#                                      # 3 masters + 3 replicas on 7000-7005), sharded pub/sub
#
# Replicas listen on 127.0.0.1:8081, 8082, ...; their logs are in $RUN_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

replicas=${REPLICAS:-2}
listen=${LISTEN:-127.0.0.1:8080}
run_dir=${RUN_DIR:-/var/tmp/pulsehub-cluster}

if [[ -n ${REDIS_CLUSTER:-} ]]; then
    scripts/services.sh postgres
else
    scripts/services.sh postgres redis
fi
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    echo "installing nginx from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release -p pulsehub -p pulsehub-simulate
mkdir -p "$run_dir"

export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/pulsehub}
export PULSEHUB_DEMO=${PULSEHUB_DEMO:-true}
# nginx runs here: its X-Forwarded-For names the clients (per-address limit).
export PULSEHUB_TRUSTED_PROXIES=${PULSEHUB_TRUSTED_PROXIES:-127.0.0.1}

pids=()
stop_all() {
    trap - INT TERM EXIT
    echo "stopping..."
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -n ${REDIS_CLUSTER:-} ]]; then scripts/redis-cluster.sh stop; fi
}
trap stop_all INT TERM EXIT

if [[ -n ${REDIS_CLUSTER:-} ]]; then
    unset REDIS_URL
    nodes=$(scripts/redis-cluster.sh start | tail -1)
    export "${nodes?}"
else
    export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
fi

upstreams=""
for i in $(seq 1 "$replicas"); do
    port=$((8080 + i))
    PULSEHUB_BIND=127.0.0.1:$port PULSEHUB_INSTANCE_ID=hub-$i \
        target/release/pulsehub serve >"$run_dir/hub-$i.log" 2>&1 &
    pids+=($!)
    upstreams+="server 127.0.0.1:$port; "
done
for i in $(seq 1 "$replicas"); do
    port=$((8080 + i))
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
        sleep 0.2
    done
    curl -fs "http://127.0.0.1:$port/ready" >/dev/null || { echo "hub-$i is not ready; see $run_dir/hub-$i.log"; exit 1; }
done

sed -e "s|@LISTEN@|$listen|" -e "s|@PREFIX@|$run_dir|g" -e "s|@UPSTREAMS@|$upstreams|" \
    deploy/nginx.conf.tmpl >"$run_dir/nginx.conf"
"$nginx_bin" -p "$run_dir" -c "$run_dir/nginx.conf" &
pids+=($!)

if [[ -n ${SIMULATE:-} ]]; then
    target/release/pulsehub-simulate --url "http://$listen" --scopes demo >"$run_dir/simulate.log" 2>&1 &
    pids+=($!)
fi

echo "pulsehub cluster: $replicas replicas behind http://$listen/ (logs in $run_dir). Ctrl-C stops it."
wait
