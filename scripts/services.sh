#!/usr/bin/env bash
# Make sure the services pulsehub needs answer on loopback, installing (Debian
# packages via apt-get) and starting whatever is missing. Never stops or
# reconfigures a service that already answers.
#
#   scripts/services.sh postgres redis      # execute
#   . scripts/services.sh; ensure_services postgres   # or source, then call
#
# postgres: wants 127.0.0.1:5432 to accept user `postgres` without a password.
#   If nothing answers there, a private trust-auth cluster is created in
#   $PULSEHUB_PG_DIR (default /var/tmp/pulsehub-pg-<port>) and started as the
#   `postgres` user (as the current user when not root).
# redis: wants 127.0.0.1:6379 to answer PING; otherwise starts a throwaway
#   `redis-server` (no persistence) bound to loopback.
#
# build: what `cargo build` needs beyond Rust: a C/C++ compiler, make,
#   cmake and pkg-config (librdkafka is built from source by the rdkafka
#   crate), OpenSSL's headers (Kafka over TLS). Installed when missing.
# tansu: the `tansu` binary, a Kafka-API broker (the Kafka tests start
#   their own); `cargo install`ed into ~/.cargo/bin when missing (about
#   13 minutes of building, once).
# kafka: tansu as above, and a broker answering on 127.0.0.1:$KAFKA_PORT
#   (9092): started in the background when nothing listens there, storage
#   (SQLite) in /var/tmp/pulsehub-tansu-<port>, log beside it.
#
# Environment: PGHOST (127.0.0.1), PGPORT (5432), PULSEHUB_PG_DIR,
#              REDIS_HOST (127.0.0.1), REDIS_PORT (6379), KAFKA_PORT (9092),
#              PULSEHUB_TANSU_BIN (the tansu binary, if not ~/.cargo/bin's).

_svc_log() { printf '%s\n' "$*"; }
_svc_die() { printf 'services.sh: error: %s\n' "$*" >&2; exit 1; }

_svc_is_loopback() {
    case "$1" in
        127.*|localhost|::1) return 0 ;;
        *) return 1 ;;
    esac
}

# Is a TCP port open? (bash /dev/tcp, bounded by timeout)
_svc_tcp_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# Run a command as root (directly, or via passwordless sudo).
_svc_as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        _svc_die "need root to run: $* (run as root or set up passwordless sudo)"
    fi
}

_svc_join() { local IFS='|'; local s="$*"; printf '%s\n' "${s//|/; }"; }

# apt-get install, preceded by one `apt-get update` unless the package lists
# were refreshed in the last hour (e.g. by an earlier install in this run).
_svc_apt_install() {
    command -v apt-get >/dev/null 2>&1 \
        || _svc_die "cannot install $*: apt-get not found (install them yourself)"
    local log=/var/tmp/pulsehub-apt.log
    _svc_log "installing $* with apt-get (log: $log) ..."
    if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null | head -n 1) ]]; then
        _svc_as_root env DEBIAN_FRONTEND=noninteractive apt-get update >"$log" 2>&1 \
            || { tail -n 20 "$log" >&2; _svc_die "apt-get update failed"; }
    fi
    _svc_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y \
        --no-install-recommends "$@" >>"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; _svc_die "apt-get install $* failed"; }
}

# ---------------------------------------------------------------- postgres --

# Prints: ok | open | starting | rejected | other | down
#   ok       - accepts user postgres without a password
#   open     - the port is open but psql is not installed to check the login
#   starting - a server is there but not accepting connections yet
#   rejected - a server answers but refuses passwordless login as postgres
#   other    - the port is open but no PostgreSQL answers there
_svc_pg_state() {
    local host=$1 port=$2 rc=0
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$host" -p "$port" -t 3 || rc=$?
        case $rc in
            0) ;;
            1) echo starting; return ;;
            *) if _svc_tcp_open "$host" "$port"; then echo other; else echo down; fi
               return ;;
        esac
    elif ! _svc_tcp_open "$host" "$port"; then
        echo down; return
    fi
    if command -v psql >/dev/null 2>&1; then
        if env -u PGPASSWORD PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=5 \
            psql -X -w -q -t -A -h "$host" -p "$port" -U postgres -d postgres \
            -c 'select 1' >/dev/null 2>&1; then
            echo ok
        else
            echo rejected
        fi
    else
        echo open
    fi
}

_svc_pg_wait() {
    local host=$1 port=$2 secs=${3:-30} state i
    for ((i = 0; i < secs * 2; i++)); do
        state=$(_svc_pg_state "$host" "$port")
        [[ $state == ok || $state == open ]] && return 0
        sleep 0.5
    done
    return 1
}

# Newest PostgreSQL bin directory (Debian layout), or that of $1 (a major).
_svc_pg_bindir() {
    local want=${1:-} d
    if [[ -n $want && -x /usr/lib/postgresql/$want/bin/initdb ]]; then
        echo "/usr/lib/postgresql/$want/bin"; return 0
    fi
    d=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' \
            2>/dev/null | sort -V | tail -n 1)
    if [[ -n $d ]]; then
        dirname "$d"; return 0
    fi
    d=$(command -v initdb 2>/dev/null) && { dirname "$d"; return 0; }
    return 1
}

# Install the server without letting Debian create (and, under systemd,
# start) its own `main` cluster on 5432 with password auth, which would take
# the port our trust-auth cluster needs. The setting is restored afterwards.
_svc_pg_install() {
    local conf=/etc/postgresql-common/createcluster.conf toggled=''
    if [[ ! -f $conf ]]; then
        _svc_apt_install postgresql-common
    fi
    if [[ -f $conf ]] && ! grep -Eq '^[[:space:]]*create_main_cluster' "$conf"; then
        _svc_as_root sh -c "printf '%s\n' 'create_main_cluster = false # pulsehub-services-tmp' >> '$conf'"
        toggled=1
    fi
    local rc=0
    ( _svc_apt_install postgresql postgresql-client ) || rc=$?
    if [[ -n $toggled ]]; then
        _svc_as_root sed -i '/# pulsehub-services-tmp$/d' "$conf"
    fi
    [[ $rc -eq 0 ]] || exit "$rc"
}

ensure_postgres() (
    set -euo pipefail
    local host=${PGHOST:-127.0.0.1} port=${PGPORT:-5432}
    local where="$host:$port" state
    state=$(_svc_pg_state "$host" "$port")
    if [[ $state == starting ]]; then
        _svc_pg_wait "$host" "$port" 30 || true
        state=$(_svc_pg_state "$host" "$port")
    fi
    case $state in
        ok) _svc_log "postgres: already answering on $where, nothing to do"; return 0 ;;
        open) _svc_log "postgres: $where is open (psql not installed, login not checked), nothing to do"; return 0 ;;
        rejected) _svc_die "postgres: a server on $where refuses passwordless login as user postgres; leaving it alone. Use another port (e.g. PGPORT=55432) for a private cluster, or set DATABASE_URL." ;;
        other) _svc_die "postgres: something that is not PostgreSQL listens on $where; leaving it alone. Set PGPORT to use another port." ;;
        starting) _svc_die "postgres: the server on $where never finished starting up" ;;
    esac
    _svc_is_loopback "$host" \
        || _svc_die "postgres: nothing answers on $where and it is not a loopback address, so it cannot be started here"
    if [[ $host == localhost || $host == ::1 ]]; then host=127.0.0.1; fi

    local base=${PULSEHUB_PG_DIR:-/var/tmp/pulsehub-pg-$port}
    local data=$base/data logf=$base/log

    # Who runs the cluster: postgres when we are root, else ourselves.
    local owner runas=()
    if [[ $EUID -eq 0 ]]; then
        owner=postgres
    else
        owner=$(id -un)
    fi

    # Binaries (install when no initdb exists at all).
    local bindir='' existing=''
    [[ -f $data/PG_VERSION ]] && existing=$(<"$data/PG_VERSION")
    local installed=''
    if ! bindir=$(_svc_pg_bindir "$existing"); then
        _svc_pg_install
        installed=1
        bindir=$(_svc_pg_bindir "$existing") \
            || _svc_die "postgres: installed postgresql but found no initdb under /usr/lib/postgresql/*/bin"
        # The client tools just got installed: look again before starting one.
        state=$(_svc_pg_state "$host" "$port")
        if [[ $state == ok ]]; then
            _svc_log "postgres: installed postgresql; a server now answers on $where"
            return 0
        fi
    fi
    if [[ -n $existing ]]; then
        local have
        have=$("$bindir/pg_ctl" --version | awk '{print $3}' | cut -d. -f1)
        [[ $have == "$existing" ]] \
            || _svc_die "postgres: $data was made by PostgreSQL $existing but $bindir is PostgreSQL $have; remove $base and retry"
    fi

    if [[ $EUID -eq 0 ]]; then
        id -u postgres >/dev/null 2>&1 || _svc_die "postgres: there is no 'postgres' user to run the server as"
        if command -v runuser >/dev/null 2>&1; then
            runas=(runuser -u postgres --)
        else
            runas=(_svc_su_postgres)
        fi
    fi

    # Private directory: refuse anything we did not create ourselves.
    if [[ -L $base ]]; then
        _svc_die "postgres: $base is a symlink; refusing to use it"
    fi
    if [[ ! -d $base ]]; then
        mkdir -p "$base"
        if [[ $EUID -eq 0 ]]; then chown postgres: "$base"; fi
        chmod 700 "$base"
    fi
    [[ $(stat -c %U "$base") == "$owner" ]] \
        || _svc_die "postgres: $base is owned by $(stat -c %U "$base"), not $owner; remove it or set PULSEHUB_PG_DIR"

    local did=()
    [[ -n $installed ]] && did+=("installed postgresql")
    if [[ ! -f $data/PG_VERSION ]]; then
        if [[ -d $data ]] && [[ -n $(ls -A "$data") ]]; then
            _svc_die "postgres: $data exists but is not a cluster; remove $base and retry"
        fi
        (cd / && "${runas[@]}" "$bindir/initdb" -D "$data" --auth=trust -U postgres \
            --encoding=UTF8 --locale=C.UTF-8 >"$base/initdb.log" 2>&1) \
            || { tail -n 20 "$base/initdb.log" >&2; _svc_die "postgres: initdb failed (see $base/initdb.log)"; }
        did+=("created private cluster $data")
    fi

    if (cd / && "${runas[@]}" "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1); then
        did+=("$data was already running")
    else
        (cd / && "${runas[@]}" "$bindir/pg_ctl" -D "$data" -w -t 60 -l "$logf" \
            -o "-c listen_addresses=$host -p $port -c unix_socket_directories=$base" \
            start >/dev/null 2>&1) \
            || { tail -n 20 "$logf" >&2 2>/dev/null; _svc_die "postgres: could not start the cluster in $data (log: $logf)"; }
        did+=("started $data on $where as $owner (log: $logf)")
    fi
    _svc_pg_wait "$host" "$port" 30 \
        || _svc_die "postgres: private cluster in $data does not answer on $where (log: $logf)"
    _svc_log "postgres: $(_svc_join "${did[@]}")"
)

# su fallback when runuser is missing (root only).
_svc_su_postgres() {
    su postgres -s /bin/bash -c "$(printf '%q ' "$@")"
}

# ------------------------------------------------------------------- redis --

# Prints: ok | other | down
_svc_redis_state() {
    local host=$1 port=$2 reply
    if command -v redis-cli >/dev/null 2>&1; then
        reply=$(timeout 5 redis-cli -h "$host" -p "$port" ping 2>/dev/null || true)
        [[ $reply == PONG ]] && { echo ok; return; }
    else
        # shellcheck disable=SC2016 # expanded by the inner bash
        reply=$(timeout 5 bash -c '
            exec 3<>"/dev/tcp/$1/$2" || exit 1
            printf "PING\r\n" >&3
            IFS= read -r -t 3 line <&3 || true
            printf "%s" "$line"' _ "$host" "$port" 2>/dev/null || true)
        [[ $reply == +PONG* ]] && { echo ok; return; }
    fi
    if _svc_tcp_open "$host" "$port"; then echo other; else echo down; fi
}

ensure_redis() (
    set -euo pipefail
    local host=${REDIS_HOST:-127.0.0.1} port=${REDIS_PORT:-6379}
    local where="$host:$port" state
    state=$(_svc_redis_state "$host" "$port")
    case $state in
        ok) _svc_log "redis: already answering on $where, nothing to do"; return 0 ;;
        other) _svc_die "redis: something on $where accepts connections but does not answer PING (password? another program?); leaving it alone. Set REDIS_PORT to use another port." ;;
    esac
    _svc_is_loopback "$host" \
        || _svc_die "redis: nothing answers on $where and it is not a loopback address, so it cannot be started here"
    if [[ $host == localhost || $host == ::1 ]]; then host=127.0.0.1; fi

    local did=()
    if ! command -v redis-server >/dev/null 2>&1; then
        _svc_apt_install redis-server
        did+=("installed redis-server")
        # Debian's package starts its own server under systemd.
        if [[ $(_svc_redis_state "$host" "$port") == ok ]]; then
            _svc_log "redis: installed redis-server; it now answers on $where"
            return 0
        fi
        command -v redis-server >/dev/null 2>&1 || _svc_die "redis: installed redis-server but it is not on PATH"
    fi
    local logf=/var/tmp/pulsehub-redis-$port.log
    (cd /var/tmp && redis-server --daemonize yes --bind "$host" --port "$port" \
        --save "" --appendonly no --dir /var/tmp \
        --pidfile "/var/tmp/pulsehub-redis-$port.pid" --logfile "$logf" >/dev/null) \
        || _svc_die "redis: redis-server failed to start (log: $logf)"
    local i
    for ((i = 0; i < 30; i++)); do
        if [[ $(_svc_redis_state "$host" "$port") == ok ]]; then
            did+=("started redis-server on $where (log: $logf)")
            _svc_log "redis: $(_svc_join "${did[@]}")"
            return 0
        fi
        sleep 0.5
    done
    tail -n 20 "$logf" >&2 2>/dev/null || true
    _svc_die "redis: started redis-server but $where does not answer PING (log: $logf)"
)

# ------------------------------------------------------------ build tools --

ensure_build() {
    local want=()
    command -v cc >/dev/null 2>&1 || want+=(gcc)
    command -v c++ >/dev/null 2>&1 || want+=(g++)
    command -v make >/dev/null 2>&1 || want+=(make)
    command -v cmake >/dev/null 2>&1 || want+=(cmake)
    command -v pkg-config >/dev/null 2>&1 || want+=(pkg-config)
    [[ -f /usr/include/openssl/ssl.h ]] || want+=(libssl-dev)
    if ((${#want[@]} > 0)); then
        _svc_apt_install "${want[@]}"
    fi
}

# ------------------------------------------------------------------ kafka --

# The tansu binary: $PULSEHUB_TANSU_BIN, ~/.cargo/bin/tansu or on PATH.
_svc_tansu_bin() {
    if [[ -n ${PULSEHUB_TANSU_BIN:-} ]]; then
        echo "$PULSEHUB_TANSU_BIN"
    elif [[ -x $HOME/.cargo/bin/tansu ]]; then
        echo "$HOME/.cargo/bin/tansu"
    else
        command -v tansu 2>/dev/null || true
    fi
}

ensure_tansu() {
    local bin
    bin=$(_svc_tansu_bin)
    if [[ -n $bin && -x $bin ]]; then
        return 0
    fi
    ensure_build
    local log=/var/tmp/pulsehub-tansu-install.log
    _svc_log "tansu: not installed; cargo install tansu 0.6.0 (SQLite and memory storage; about 13 minutes; log: $log) ..."
    # --locked: the versions tansu was released and tested with.
    cargo install --locked tansu@0.6.0 --features dynostore,libsql >"$log" 2>&1 \
        || { tail -n 30 "$log" >&2; _svc_die "tansu: cargo install failed (log: $log)"; }
    _svc_log "tansu: installed $(_svc_tansu_bin)"
}

ensure_kafka() (
    set -euo pipefail
    local port=${KAFKA_PORT:-9092}
    if _svc_tcp_open 127.0.0.1 "$port"; then
        _svc_log "kafka: something listens on 127.0.0.1:$port, taken as the broker"
        return 0
    fi
    ensure_tansu
    local dir=/var/tmp/pulsehub-tansu-$port url="tcp://127.0.0.1:$port"
    mkdir -p "$dir"
    (cd "$dir" && setsid nohup "$(_svc_tansu_bin)" broker --listener-url "$url" \
        --advertised-listener-url "$url" --storage-engine sqlite://tansu.db \
        >"$dir/tansu.log" 2>&1 </dev/null &)
    local i
    for ((i = 0; i < 60; i++)); do
        if _svc_tcp_open 127.0.0.1 "$port"; then
            _svc_log "kafka: started tansu on 127.0.0.1:$port (storage and log: $dir)"
            return 0
        fi
        sleep 0.5
    done
    tail -n 20 "$dir/tansu.log" >&2 || true
    _svc_die "kafka: tansu did not start listening on $port (log: $dir/tansu.log)"
)

# ---------------------------------------------------------------------------

ensure_services() {
    local svc
    [[ $# -gt 0 ]] || { echo "usage: services.sh postgres|redis|build|tansu|kafka ..." >&2; return 2; }
    for svc in "$@"; do
        case $svc in
            postgres|postgresql|pg) ensure_postgres || return ;;
            redis) ensure_redis || return ;;
            build) ensure_build || return ;;
            tansu) ensure_tansu || return ;;
            kafka) ensure_kafka || return ;;
            *) echo "services.sh: unknown service '$svc' (known: postgres, redis, build, tansu, kafka)" >&2; return 2 ;;
        esac
    done
}

# Executed (not sourced): strict mode, repo root, do it.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    cd "$(dirname "$0")/.."
    ensure_services "$@"
fi
