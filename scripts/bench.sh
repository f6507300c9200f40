#!/usr/bin/env bash
# Benchmarks: start PostgreSQL (and Redis for a cluster), build the release
# binaries, start the hub with its own binary (`pulsehub serve`), run load
# scenarios against it with `pulsehub-loadtest`, and stop everything.
#
#   scripts/bench.sh                       # the standard set (see below)
#   scripts/bench.sh fanout-1k idle-10k    # chosen presets
#   scripts/bench.sh run -- fanout -c 500 -e 100 -d 10 --check   # any loadtest command
#   BENCH_REPLICAS=2 scripts/bench.sh fanout-1k presence   # 2 replicas via Redis
#   BENCH_REPLICAS=4 BENCH_BIN_DIR=/tmp/rel scripts/bench.sh fanout-1k presence
#                                          # 4 replicas, prebuilt binaries (no cargo)
#
# Presets: smoke connect-1k idle-100 idle-1k idle-10k fanout-100 fanout-1k
#          (200 events/s to 1,000 subscribers) fanout-1k-100 (100 events/s)
#          fanout-10k (4 events/s: one event at a time to 10,000)
#          fanout-10k-busy (20 events/s) scale-100 scale-1k scale-10k (the
#          same 4 events/s to 100, 1,000, 10,000 subscribers: how cost grows)
#          ingest presence reconnect (reconnect kills the hub with
#          SIGKILL under load; the tool restarts it and stops it at the end,
#          and this script starts a fresh one for the presets that follow)
#          bus-1k bus-10k (1,000 subscribers over 100 live events, 1,000 or
#          10,000 messages/s produced to Kafka and consumed by the hubs:
#          produce → delivery; 10 subscribers per message)
#          bus-ceiling (one subscriber, as fast as the producer goes: the
#          consumer's throughput). Bus presets start a local Kafka-API broker
#          (scripts/services.sh kafka) and the hubs consume topic
#          $BENCH_TOPIC (default pulsehub.bench).
# Standard set: smoke connect-1k idle-100 idle-1k idle-10k scale-100
#               scale-1k scale-10k fanout-1k fanout-10k ingest presence
#               reconnect
#
# Every run targets loopback only, is bounded in size and time, and stops by
# itself. Results: a table on stdout and, per preset, JSON and text in
# $BENCH_OUT (default target/bench/<date>-<time>), each next to `uptime`
# (other work on the machine, a compiler!, changes every figure), the
# hubs' CPU time during the run and, per replica, the most WebSocket
# sessions and subscriptions it held (`pulsehub_sessions`,
# `pulsehub_subscriptions` from its /metrics, sampled every second).
#
# Environment:
#   BENCH_REPLICAS   number of hubs N >= 1 (default 1); from 2 on they share
#                    PostgreSQL and Redis (REDIS_HOST/REDIS_PORT, default
#                    127.0.0.1:6379), are named bench-a, bench-b, … and listen
#                    on BENCH_PORT+0 … BENCH_PORT+N-1; the load generator gets
#                    all N URLs and spreads connections round robin
#                    (connection i on replica i mod N; the publisher's
#                    requests too). `reconnect` kills replica 0.
#   BENCH_PORT       first hub port (default 18080)
#   BENCH_BIN_DIR    a directory holding pulsehub, pulsehub-loadtest and
#                    pulsehub-simulate (e.g. a copy of another checkout's
#                    target/release): no `cargo build`, those binaries run
#                    (BENCH_HUB_BIN still overrides the hub)
#   BENCH_OUT        where results go
#   BENCH_DB         database name (default pulsehub_bench)
#   BENCH_REDIS_PREFIX  Redis key prefix of the bench cluster (default
#                    pulsehub-bench, apart from any other hub on that Redis)
#   BENCH_PERF       set to 1: `perf record` the hub during each preset
#                    (needs linux-perf; perf.data files land in $BENCH_OUT)
#   BENCH_HUB_ARGS   extra arguments for `pulsehub serve`
#   BENCH_HUB_BIN    the hub binary to run instead of this checkout's release
#                    build (A/B runs: the same loadtest against two builds)
#   BENCH_HUB_CPUS, BENCH_LT_CPUS  CPU lists (taskset -c) for the hubs and for
#                    the load generator, e.g. 0 and 1: keeps the generator's
#                    own CPU out of the hubs' latency (default: unpinned)
#   RUST_LOG         the hub's log filter (default warn: logging every
#                    connection would be measured too)
set -euo pipefail
cd "$(dirname "$0")/.."

replicas=${BENCH_REPLICAS:-1}
port=${BENCH_PORT:-18080}
out=${BENCH_OUT:-target/bench/$(date +%Y%m%d-%H%M%S)}
db=${BENCH_DB:-pulsehub_bench}
[[ $replicas =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: BENCH_REPLICAS must be a whole number >= 1, not '$replicas'" >&2; exit 2; }
bin_dir=${BENCH_BIN_DIR:-}
if [[ -n $bin_dir ]]; then
    for b in pulsehub pulsehub-loadtest pulsehub-simulate; do
        [[ -x $bin_dir/$b ]] || { echo "bench.sh: BENCH_BIN_DIR=$bin_dir has no executable $b" >&2; exit 2; }
    done
fi

presets=("$@")
raw=()
if [[ ${1:-} == run ]]; then
    shift
    [[ ${1:-} == -- ]] && shift
    raw=("$@")
    presets=(run)
elif [[ ${#presets[@]} -eq 0 ]]; then
    presets=(smoke connect-1k idle-100 idle-1k idle-10k scale-100 scale-1k scale-10k
             fanout-1k fanout-10k ingest presence reconnect)
fi

kafka=''
for p in "${presets[@]}"; do
    if [[ $p == bus-* ]]; then kafka=127.0.0.1:${KAFKA_PORT:-9092}; fi
done
topic=${BENCH_TOPIC:-pulsehub.bench}

services=(postgres)
# Prebuilt binaries need no toolchain.
if [[ -z $bin_dir ]]; then services=(build postgres); fi
if ((replicas > 1)); then services+=(redis); fi
if [[ -n $kafka ]]; then services+=(kafka); fi
scripts/services.sh "${services[@]}"
pg_host=${PGHOST:-127.0.0.1}
pg_port=${PGPORT:-5432}
export DATABASE_URL="postgres://postgres@$pg_host:$pg_port/$db"
export RUST_LOG=${RUST_LOG:-warn}

if [[ -n $bin_dir ]]; then
    rel=$bin_dir
else
    cargo build --release -p pulsehub -p pulsehub-loadtest -p pulsehub-simulate
    rel=target/release
fi
hub_bin=${BENCH_HUB_BIN:-$rel/pulsehub}
lt_bin=$rel/pulsehub-loadtest
sim_bin=$rel/pulsehub-simulate
hub_pin=${BENCH_HUB_CPUS:+taskset -c $BENCH_HUB_CPUS}
lt_pin=()
if [[ -n ${BENCH_LT_CPUS:-} ]]; then lt_pin=(taskset -c "$BENCH_LT_CPUS"); fi
mkdir -p "$out"
if [[ -n $kafka ]]; then
    # The topic must exist before the hubs are ready: the simulator creates
    # it (3 partitions) with its first event.
    "$sim_bin" --kafka "$kafka" --topic "$topic" --count 1 >/dev/null
fi

urls=()
ports=()
for ((r = 0; r < replicas; r++)); do
    ports+=($((port + r)))
    urls+=("http://127.0.0.1:$((port + r))")
done
url_list=$(IFS=,; echo "${urls[*]}")

# Replica $1's instance id: bench-a … bench-z, then bench-26, bench-27, …
replica_name() {
    local letters=abcdefghijklmnopqrstuvwxyz
    if (($1 < 26)); then printf 'bench-%s' "${letters:$1:1}"; else printf 'bench-%d' "$1"; fi
}

# The command that starts replica $1 (also handed to `reconnect` as the
# restart command, so it must stand alone).
hub_cmd() {
    local r=$1
    local cmd="exec env DATABASE_URL='$DATABASE_URL' RUST_LOG='$RUST_LOG' PULSEHUB_INSTANCE_ID=$(replica_name "$r")"
    if ((replicas > 1)); then
        cmd+=" REDIS_URL=redis://${REDIS_HOST:-127.0.0.1}:${REDIS_PORT:-6379}"
        cmd+=" PULSEHUB_REDIS_PREFIX=${BENCH_REDIS_PREFIX:-pulsehub-bench}"
    fi
    if [[ -n $kafka ]]; then
        # earliest: what is produced before the group's first assignment
        # is read too (later runs go on from the committed offsets).
        cmd+=" PULSEHUB_KAFKA_BROKERS=$kafka PULSEHUB_KAFKA_TOPICS=$topic"
        cmd+=" PULSEHUB_KAFKA_PROPERTIES=auto.offset.reset=earliest"
    fi
    cmd+=" ${hub_pin:-} $hub_bin serve --demo --bind 127.0.0.1:${ports[r]} ${BENCH_HUB_ARGS:-}"
    printf '%s' "$cmd"
}

hub_pids=()
perf_pid=''
sampler_pid=''
# shellcheck disable=SC2317 # invoked from the traps below
stop_hubs() {
    local pid
    for pid in "${hub_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${hub_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    hub_pids=()
}
# shellcheck disable=SC2317
cleanup() {
    trap - INT TERM EXIT
    if [[ -n $perf_pid ]]; then kill -INT "$perf_pid" 2>/dev/null || true; wait "$perf_pid" 2>/dev/null || true; fi
    if [[ -n $sampler_pid ]]; then kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true; fi
    stop_hubs
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

start_hubs() {
    local r i code
    for ((r = 0; r < replicas; r++)); do
        bash -c "$(hub_cmd "$r")" >>"$out/hub-$r.log" 2>&1 &
        hub_pids+=($!)
    done
    for ((r = 0; r < replicas; r++)); do
        for ((i = 0; i < 120; i++)); do
            kill -0 "${hub_pids[r]}" 2>/dev/null \
                || { echo "bench.sh: hub $r exited (see $out/hub-$r.log)" >&2; tail -n 20 "$out/hub-$r.log" >&2; exit 1; }
            code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "${urls[r]}/ready" || true)
            [[ $code == 200 ]] && break
            sleep 0.5
        done
        [[ $code == 200 ]] || { echo "bench.sh: ${urls[r]}/ready never answered 200" >&2; exit 1; }
    done
    echo "hubs ready: ${urls[*]} (pids ${hub_pids[*]})"
}

hubs_alive() {
    local pid
    [[ ${#hub_pids[@]} -eq $replicas ]] || return 1
    for pid in "${hub_pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || return 1
    done
}

pid_list() { local IFS=,; echo "${hub_pids[*]}"; }

# CPU time (user+system, in clock ticks) used so far by the hubs.
hub_ticks() {
    local pid t=0
    for pid in "${hub_pids[@]}"; do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

# Appends every replica's open sessions and subscriptions (its /metrics
# gauges) to file $1 once a second, as lines `replica sessions
# subscriptions`, until killed.
sample_sessions() {
    local file=$1 r
    while :; do
        for ((r = 0; r < replicas; r++)); do
            curl -s -m 1 "${urls[r]}/metrics" 2>/dev/null \
                | awk -v r="$r" '$1 == "pulsehub_sessions" { s = $2 } $1 == "pulsehub_subscriptions" { u = $2 }
                                 END { if (s != "") print r, s, u }' >>"$file" || true
        done
        sleep 1
    done
}

# The peak of each replica's samples in file $1, as one line.
peak_sessions() {
    local r line=''
    for ((r = 0; r < replicas; r++)); do
        line+=" $(replica_name "$r") $(awk -v r="$r" '$1 == r { if ($2 > s) s = $2; if ($3 > u) u = $3 }
                                     END { printf "%d sessions / %d subscriptions;", s, u }' "$1")"
    done
    printf '%s\n' "${line%;}"
}

# Runs one loadtest command, saving JSON and the table.
lt() {
    local name=$1
    shift
    local log="$out/$name.txt"
    {
        echo "# $(date -u +%FT%TZ) $name: pulsehub-loadtest $*"
        echo "# uptime before: $(uptime)"
    } | tee "$log"
    if [[ ${BENCH_PERF:-} == 1 ]]; then
        perf record -F 999 -g -o "$out/$name.perf.data" -p "$(pid_list)" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    local status=0 t0 samples="$out/$name.sessions"
    : >"$samples"
    sample_sessions "$samples" &
    sampler_pid=$!
    t0=$(hub_ticks)
    "${lt_pin[@]}" "$lt_bin" --url "$url_list" --json "$out/$name.json" --no-progress "$@" | tee -a "$log" || status=${PIPESTATUS[0]}
    kill "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=''
    echo "# peak per replica:$(peak_sessions "$samples")" | tee -a "$log"
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        perf_pid=''
    fi
    if hubs_alive; then
        echo "# hub CPU: $(( ($(hub_ticks) - t0) * 1000 / $(getconf CLK_TCK) )) ms (user+system, all replicas)" | tee -a "$log"
    fi
    echo "# uptime after: $(uptime)" | tee -a "$log"
    echo
    return "$status"
}

failed=()
for preset in "${presets[@]}"; do
    # Memory per connection is measured on fresh hubs: a hub that served
    # earlier presets reuses the memory they left and looks cheaper.
    if [[ $preset == idle-* ]]; then stop_hubs; fi
    hubs_alive || { stop_hubs; start_hubs; }
    status=0
    case $preset in
        run)        lt run "${raw[@]}" || status=$? ;;
        smoke)      lt smoke fanout --hub-pid "$(pid_list)" -c 100 -e 100 -d 5 --check || status=$? ;;
        connect-1k) lt connect-1k connect -c 1000 --concurrency 50 || status=$? ;;
        idle-100)   lt idle-100 idle -c 100 --hub-pid "$(pid_list)" --hold 5 || status=$? ;;
        idle-1k)    lt idle-1k idle -c 1000 --hub-pid "$(pid_list)" --hold 5 || status=$? ;;
        idle-10k)   lt idle-10k idle -c 10000 --hub-pid "$(pid_list)" --hold 10 --concurrency 200 || status=$? ;;
        fanout-100) lt fanout-100 fanout --hub-pid "$(pid_list)" -c 100 -e 200 -d 20 --check || status=$? ;;
        fanout-1k)  lt fanout-1k fanout --hub-pid "$(pid_list)" -c 1000 -e 200 -d 20 --check || status=$? ;;
        fanout-1k-100) lt fanout-1k-100 fanout --hub-pid "$(pid_list)" -c 1000 -e 100 -d 20 --check || status=$? ;;
        fanout-10k) lt fanout-10k fanout --hub-pid "$(pid_list)" -c 10000 -e 4 -d 30 --check || status=$? ;;
        fanout-10k-busy) lt fanout-10k-busy fanout --hub-pid "$(pid_list)" -c 10000 -e 20 -d 20 --check || status=$? ;;
        scale-100)  lt scale-100 fanout --hub-pid "$(pid_list)" -c 100 -e 4 -d 20 --check || status=$? ;;
        scale-1k)   lt scale-1k fanout --hub-pid "$(pid_list)" -c 1000 -e 4 -d 20 --check || status=$? ;;
        scale-10k)  lt scale-10k fanout --hub-pid "$(pid_list)" -c 10000 -e 4 -d 20 --check || status=$? ;;
        ingest)     lt ingest ingest --parallel 8 --batch 1000 --events 300000 -d 60 || status=$? ;;
        bus-1k)     lt bus-1k bus --kafka "$kafka" --topic "$topic" --hub-pid "$(pid_list)" -c 1000 --scopes 100 -e 1000 -d 20 --check || status=$? ;;
        bus-10k)    lt bus-10k bus --kafka "$kafka" --topic "$topic" --hub-pid "$(pid_list)" -c 1000 --scopes 100 -e 10000 -d 20 --check || status=$? ;;
        bus-ceiling) lt bus-ceiling bus --kafka "$kafka" --topic "$topic" --hub-pid "$(pid_list)" -c 1 -e 100000 -d 10 --inflight 64 --drain 60 --check || status=$? ;;
        presence)   lt presence presence --clients 100 --rounds 5 --rate 200 || status=$? ;;
        reconnect)
            # Kill replica 0 under load; the tool restarts it and stops the
            # restarted one at the end (the next preset gets a fresh hub).
            lt reconnect reconnect -c 1000 -e 200 -d 20 --disrupt-after 5 \
                --kill-pid "${hub_pids[0]}" --signal KILL \
                --restart-cmd "$(hub_cmd 0)" --check || status=$?
            stop_hubs ;;
        *) echo "bench.sh: unknown preset '$preset'" >&2; status=2 ;;
    esac
    [[ $status -eq 0 ]] || failed+=("$preset (exit $status)")
done

echo "results in $out"
if [[ ${#failed[@]} -gt 0 ]]; then
    printf 'bench.sh: failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
