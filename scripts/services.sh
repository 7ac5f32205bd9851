#!/usr/bin/env bash
# Local service stack for promo, without Docker: PostgreSQL, Redis, etcd and a
# Kafka-protocol broker (Tansu) answering on loopback.
#
#   scripts/services.sh up      reuse what already answers, install/start the rest
#   scripts/services.sh down    stop only what this script started (pid files)
#   scripts/services.sh stop S  stop one of them (postgres|redis|etcd|kafka);
#                               `up` starts it again (fault injection)
#   scripts/services.sh status  one line per service; exit 1 if any is down
#   scripts/services.sh deps    build tools the Rust workspace needs (protoc, cmake)
#   scripts/services.sh env     print `export PROMO_TEST_...=` lines for the tests
#   scripts/services.sh topics  print the Kafka topics `up` creates, one a line
#
# Everything the script starts keeps its data, logs and pid files under
# .services/ at the repo root (git-ignored), so `down` never touches a service
# that was already running (the machine's own PostgreSQL/Redis, say).
# Ports and paths can be overridden with the PROMO_* variables below, which
# also lets the script be exercised on spare ports next to a running stack.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SVC_DIR="${PROMO_SERVICES_DIR:-$ROOT/.services}"
DATA_DIR="$SVC_DIR/data"
LOG_DIR="$SVC_DIR/logs"
RUN_DIR="$SVC_DIR/run"
CACHE_DIR="${PROMO_CACHE_DIR:-$HOME/.cache/promo}"
# Pinned: the script drives Tansu's CLI (`topic list|create`), which may
# change between releases. A new version builds into a root of its own.
TANSU_VERSION="${PROMO_TANSU_VERSION:-0.6.0}"
TANSU_ROOT="$CACHE_DIR/tansu-$TANSU_VERSION"

HOST=127.0.0.1
PG_PORT="${PROMO_PG_PORT:-5432}"
REDIS_PORT="${PROMO_REDIS_PORT:-6379}"
ETCD_PORT="${PROMO_ETCD_PORT:-2379}"
ETCD_PEER_PORT="${PROMO_ETCD_PEER_PORT:-2380}"
KAFKA_PORT="${PROMO_KAFKA_PORT:-9092}"
# Seconds to wait for a started service to answer.
TIMEOUT="${PROMO_SERVICES_TIMEOUT:-60}"
# Seconds to wait for a tansu `cargo install` (ours or one already running).
TANSU_BUILD_TIMEOUT="${PROMO_TANSU_BUILD_TIMEOUT:-3600}"

# Tansu does not auto-create topics, so `up` creates the missing ones of every
# topic the services publish to. The list is promo-store/topics.txt (one per
# line), the same file the Rust code includes: add new topics there.
TOPICS_FILE="${PROMO_TOPICS_FILE:-$ROOT/promo-store/topics.txt}"
KAFKA_TOPICS=$(<"$TOPICS_FILE")
KAFKA_PARTITIONS="${PROMO_KAFKA_PARTITIONS:-3}"
DATABASES="coupon_db point_db timesale_db gateway_db"

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers ---

# Run a command as root (apt, pg_ctlcluster); sudo only when we are not root.
as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo -n "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

# PostgreSQL refuses to run as root, so server commands run as `postgres`
# when we are root, and as ourselves otherwise.
as_pg() {
  if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

APT_UPDATED=0
apt_update() {
  [[ $APT_UPDATED -eq 1 ]] && return 0
  log "apt-get update"
  mkdir -p "$LOG_DIR"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$LOG_DIR/apt.log" 2>&1 \
    || die "apt-get update failed (see $LOG_DIR/apt.log)"
  APT_UPDATED=1
}

# Install Debian packages that are missing. Run `apt-get update` first when the
# package lists are empty (fresh images), and once more if the install fails
# (stale lists after a point release).
apt_install() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then apt_update; fi
  log "installing Debian packages: ${missing[*]} (log: $LOG_DIR/apt.log)"
  mkdir -p "$LOG_DIR"
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}")
  if ! as_root "${install[@]}" >>"$LOG_DIR/apt.log" 2>&1; then
    apt_update
    as_root "${install[@]}" >>"$LOG_DIR/apt.log" 2>&1 || die "apt-get install ${missing[*]} failed (see $LOG_DIR/apt.log)"
  fi
}

# Is a process from our pid file alive and still the program we started?
# (Guards against a recycled pid after a reboot.)
pid_of() {
  local name=$1 expect=$2 f="$RUN_DIR/$1.pid" pid
  [[ -s $f ]] || return 1
  pid=$(head -n1 "$f")
  if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" \
     && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$expect"; then
    echo "$pid"; return 0
  fi
  rm -f "$f"   # stale
  return 1
}

tcp_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# Start something only when nothing listens on its port and no process of ours
# is on the way up; otherwise just wait for it (a server still starting, or a
# foreign one that never answers, fails with a clear line rather than a second
# instance fighting over the port).
need_start() { ! "$1" && ! tcp_open "$HOST" "$2" && ! pid_of "$3" "$4" >/dev/null; }

# wait_for NAME CHECK-FUNCTION LOGFILE: poll until CHECK succeeds or TIMEOUT.
wait_for() {
  local name=$1 check=$2 logf=${3:-} deadline=$((SECONDS + TIMEOUT))
  until "$check"; do
    if (( SECONDS >= deadline )); then
      die "$name did not come up within ${TIMEOUT}s${logf:+ (see $logf)}"
    fi
    sleep 0.3
  done
}

# Alive and not a zombie waiting for its (re)parent to reap it.
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

stop_pid() {
  local name=$1 pid=$2 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "$name (pid $pid) ignored SIGTERM for 20s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

# Start a long-running foreground program in the background, detached from our
# session (setsid) so it outlives the calling shell/CI step, and record its pid.
spawn() {
  local name=$1; shift
  ( cd "$SVC_DIR" && exec setsid nohup "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null 8>&- ) &
  echo $! >"$RUN_DIR/$name.pid"
}

prepare_dirs() { mkdir -p "$DATA_DIR" "$LOG_DIR" "$RUN_DIR"; }

# One up/down at a time per .services/, so two concurrent callers (a dev
# shell and a test run) don't both start the same daemon. Daemons are started
# with `8>&-`: one that inherited fd 8 would hold the lock for its lifetime.
lock_services() {
  prepare_dirs
  exec 8>"$RUN_DIR/lock"
  flock -w 600 8 || die "another services.sh up/down is still running (lock $RUN_DIR/lock)"
}

# ------------------------------------------------------------------- deps ---

cmd_deps() {
  # protoc: tonic/prost build scripts; cmake + a C++ compiler: rdkafka's
  # bundled librdkafka (feature cmake-build). Checked by file to stay fast.
  local need=()
  command -v protoc >/dev/null || need+=(protobuf-compiler)
  command -v cmake >/dev/null || need+=(cmake)
  command -v g++ >/dev/null || need+=(g++)
  command -v make >/dev/null || need+=(make)
  command -v pkg-config >/dev/null || need+=(pkg-config)
  # librdkafka's cmake build links libcurl, zlib and OpenSSL.
  [[ -e /usr/include/curl/curl.h || -e /usr/include/x86_64-linux-gnu/curl/curl.h ]] || need+=(libcurl4-openssl-dev)
  [[ -e /usr/include/zlib.h ]] || need+=(zlib1g-dev)
  [[ -e /usr/include/openssl/ssl.h ]] || need+=(libssl-dev)
  # The tests: tmux drives the dashboard, bc serves perf/bench.sh (pgbench
  # comes with the PostgreSQL server package),
  # curl waits for readiness in scripts/consistency.sh.
  command -v tmux >/dev/null || need+=(tmux)
  command -v curl >/dev/null || need+=(curl)
  command -v bc >/dev/null || need+=(bc)
  [[ ${#need[@]} -eq 0 ]] || apt_install "${need[@]}"
}

# ------------------------------------------------------------- PostgreSQL ---

pg_up() {
  if command -v pg_isready >/dev/null; then pg_isready -q -h "$HOST" -p "$PG_PORT" -t 1
  else tcp_open "$HOST" "$PG_PORT"; fi
}

# psql as a given role over TCP (trust auth expected; PGPASSWORD is honoured).
pg_psql() {
  local user=$1; shift
  psql -h "$HOST" -p "$PG_PORT" -U "$user" -d postgres -X -q -v ON_ERROR_STOP=1 -tA "$@"
}

# The superuser that can log in: $PGUSER if set, else postgres, else root.
PG_SUPERUSER=""
pg_superuser() {
  [[ -n $PG_SUPERUSER ]] && { echo "$PG_SUPERUSER"; return 0; }
  local u
  for u in ${PGUSER:-} postgres root; do
    if [[ $(pg_psql "$u" -c 'select rolsuper from pg_roles where rolname = current_user' 2>/dev/null) == t ]]; then
      PG_SUPERUSER=$u; echo "$u"; return 0
    fi
  done
  return 1
}

PG_DEBIAN_HBA_MARK="# added by promo scripts/services.sh: trust loopback TCP for local development"

pg_start_debian_cluster() {
  local ver=$1 name=$2 conf hba datadir
  log "postgres: starting Debian cluster $ver/$name with pg_ctlcluster"
  as_root mkdir -p /var/run/postgresql
  as_root chown postgres:postgres /var/run/postgresql
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start 8>&-
  echo "debian $ver $name" >"$RUN_DIR/postgres.mode"
  wait_for "postgres (cluster $ver/$name on $HOST:$PG_PORT)" pg_up "/var/log/postgresql/postgresql-$ver-$name.log"
  datadir=$(pg_lsclusters -h "$ver" "$name" | awk '{print $6}')
  as_root head -n1 "$datadir/postmaster.pid" >"$RUN_DIR/postgres.pid"
  # A cluster fresh from `apt-get install postgresql` asks for passwords over
  # TCP; the tests connect as postgres@127.0.0.1 without one. Only a cluster
  # this script started is changed, and the lines are marked.
  if ! pg_superuser >/dev/null; then
    conf=/etc/postgresql/$ver/$name
    hba=$conf/pg_hba.conf
    if ! as_root grep -qF "$PG_DEBIAN_HBA_MARK" "$hba"; then
      log "postgres: enabling trust auth for 127.0.0.1/::1 in $hba"
      as_root sh -c "{ printf '%s\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' '$PG_DEBIAN_HBA_MARK'; cat '$hba'; } >'$hba.promo' && cat '$hba.promo' >'$hba' && rm -f '$hba.promo'"
      as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload
      sleep 0.5
    fi
  fi
}

pg_start_local() {
  local bindir pgdata="$DATA_DIR/pg" logf="$LOG_DIR/postgres.log"
  bindir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  [[ -x $bindir/initdb ]] || die "postgres: no server binaries under /usr/lib/postgresql"
  if [[ $EUID -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "postgres: no 'postgres' user to run the server as"
  fi
  touch "$logf"
  mkdir -p "$pgdata"
  if [[ $EUID -eq 0 ]]; then chown postgres:postgres "$pgdata" "$logf"; fi
  chmod 700 "$pgdata"
  if [[ ! -s $pgdata/PG_VERSION ]]; then
    log "postgres: initdb in $pgdata (trust auth, superuser postgres)"
    as_pg "$bindir/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 --locale=C >>"$logf" 2>&1 \
      || die "postgres: initdb failed (see $logf)"
    # TCP on loopback only; no unix socket, so nothing clashes with a
    # system cluster's /var/run/postgresql (and long repo paths don't matter).
    printf "\n# promo scripts/services.sh\nlisten_addresses = '%s'\nunix_socket_directories = ''\n" "$HOST" \
      | as_pg tee -a "$pgdata/postgresql.conf" >/dev/null
  fi
  log "postgres: starting $bindir/postgres on $HOST:$PG_PORT (data $pgdata)"
  echo "local $bindir" >"$RUN_DIR/postgres.mode"
  as_pg "$bindir/pg_ctl" -D "$pgdata" -l "$logf" -o "-p $PG_PORT" -w -t "$TIMEOUT" start >/dev/null 8>&- \
    || die "postgres did not come up on $HOST:$PG_PORT within ${TIMEOUT}s (see $logf)"
  head -n1 "$pgdata/postmaster.pid" >"$RUN_DIR/postgres.pid"
  wait_for "postgres ($HOST:$PG_PORT)" pg_up "$logf"
}

ensure_postgres() {
  if need_start pg_up "$PG_PORT" postgres postgres; then
    # Checked by file, not package name: the machine may carry postgresql-15
    # without the `postgresql` metapackage.
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || apt_install postgresql
    command -v psql >/dev/null || apt_install postgresql-client
    # The package install may have started one already.
    if ! pg_up && ! tcp_open "$HOST" "$PG_PORT"; then
      # Prefer the machine's own Debian cluster when it is set up on our port.
      local cluster=()
      if [[ -z ${PROMO_PG_NO_DEBIAN_CLUSTER:-} ]] && command -v pg_lsclusters >/dev/null; then
        read -r -a cluster < <(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p {print $1, $2; exit}') || true
      fi
      if [[ ${#cluster[@]} -eq 2 ]]; then pg_start_debian_cluster "${cluster[@]}"
      else pg_start_local; fi
    fi
  fi
  wait_for "postgres ($HOST:$PG_PORT)" pg_up "$LOG_DIR/postgres.log"
  command -v psql >/dev/null || apt_install postgresql-client
  local su
  su=$(pg_superuser) || die "postgres: answers on $HOST:$PG_PORT but neither postgres nor root can log in without a password (set PGUSER/PGPASSWORD, or allow trust for 127.0.0.1)"
  local have db out
  have=$(pg_psql "$su" -c 'select datname from pg_database')
  for db in $DATABASES; do
    if ! grep -qx "$db" <<<"$have"; then
      log "postgres: creating database $db"
      # Tolerate a concurrent `up` creating it first.
      out=$(pg_psql "$su" -c "create database \"$db\"" 2>&1) \
        || grep -q 'already exists' <<<"$out" || die "postgres: create database $db failed: $out"
    fi
  done
  # The outbox's published rows and the pruner's deletes leave dead tuples
  # that only vacuum reclaims; without autovacuum a long run slows down
  # steadily (perf/README.md, "A sustained peak"). Not changed here: the
  # server is the machine's.
  if [[ $(pg_psql "$su" -c 'show autovacuum') == off ]]; then
    log "postgres: WARNING autovacuum is off; long runs will degrade (ALTER SYSTEM SET autovacuum = on; SELECT pg_reload_conf())"
  fi
}

stop_postgres() {
  local pid mode
  pid=$(pid_of postgres postgres) || { rm -f "$RUN_DIR/postgres.mode"; return 0; }
  read -r -a mode <"$RUN_DIR/postgres.mode"
  log "postgres: stopping (pid $pid)"
  case ${mode[0]} in
    debian) as_root pg_ctlcluster --skip-systemctl-redirect "${mode[1]}" "${mode[2]}" stop -m fast ;;
    local) as_pg "${mode[1]}/pg_ctl" -D "$DATA_DIR/pg" -m fast -w stop >/dev/null ;;
    *) stop_pid postgres "$pid" ;;
  esac
  rm -f "$RUN_DIR/postgres.pid" "$RUN_DIR/postgres.mode"
}

# ------------------------------------------------------------------ Redis ---

redis_up() {
  if command -v redis-cli >/dev/null; then
    [[ $(timeout 2 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
  else
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$REDIS_PORT; printf 'PING\r\n' >&3; read -r r <&3; [[ \$r == +PONG* ]]" 2>/dev/null
  fi
}

ensure_redis() {
  if need_start redis_up "$REDIS_PORT" redis redis-server; then
    command -v redis-server >/dev/null || apt_install redis-server
    # The package install may have started one already.
    if ! redis_up && ! tcp_open "$HOST" "$REDIS_PORT"; then
      log "redis: starting redis-server on $HOST:$REDIS_PORT (no persistence)"
      mkdir -p "$DATA_DIR/redis"
      redis-server --daemonize yes --bind "$HOST" --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$DATA_DIR/redis" --logfile "$LOG_DIR/redis.log" --pidfile "$RUN_DIR/redis.pid" >/dev/null 8>&-
    fi
  fi
  wait_for "redis ($HOST:$REDIS_PORT)" redis_up "$LOG_DIR/redis.log"
}

stop_redis() {
  local pid
  pid=$(pid_of redis redis-server) || return 0
  log "redis: stopping (pid $pid)"
  stop_pid redis "$pid"
  rm -f "$RUN_DIR/redis.pid"
}

# ------------------------------------------------------------------- etcd ---

etcd_up() {
  if command -v curl >/dev/null; then
    curl -fsS --max-time 1 "http://$HOST:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'
  else
    ETCDCTL_API=3 etcdctl --endpoints="http://$HOST:$ETCD_PORT" --command-timeout=1s endpoint health >/dev/null 2>&1
  fi
}

ensure_etcd() {
  if need_start etcd_up "$ETCD_PORT" etcd etcd; then
    command -v etcd >/dev/null || apt_install etcd-server
    command -v etcdctl >/dev/null || apt_install etcd-client
    # The package install may have started one already.
    if ! etcd_up && ! tcp_open "$HOST" "$ETCD_PORT"; then
      log "etcd: starting on $HOST:$ETCD_PORT (peer $ETCD_PEER_PORT, data $DATA_DIR/etcd)"
      # Debian's etcd 3.4 refuses non-amd64 architectures unless told.
      case $(uname -m) in aarch64 | arm64) export ETCD_UNSUPPORTED_ARCH=arm64 ;; esac
      local peer="http://$HOST:$ETCD_PEER_PORT" client="http://$HOST:$ETCD_PORT"
      spawn etcd etcd --name promo-dev --data-dir "$DATA_DIR/etcd" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "promo-dev=$peer" --initial-cluster-token promo-dev \
        --initial-cluster-state new
    fi
  fi
  wait_for "etcd ($HOST:$ETCD_PORT)" etcd_up "$LOG_DIR/etcd.log"
}

stop_etcd() {
  local pid
  pid=$(pid_of etcd etcd) || return 0
  log "etcd: stopping (pid $pid)"
  stop_pid etcd "$pid"
  rm -f "$RUN_DIR/etcd.pid"
}

# ------------------------------------------------------------------ Tansu ---

kafka_up() { tcp_open "$HOST" "$KAFKA_PORT"; }

# Path of a usable tansu binary, or nothing.
tansu_bin() {
  if command -v tansu >/dev/null; then command -v tansu
  elif [[ -x $TANSU_ROOT/bin/tansu ]]; then echo "$TANSU_ROOT/bin/tansu"
  else return 1; fi
}

# Get a tansu binary: reuse, wait for a build already running into the same
# cache, or build it once with cargo (Tansu has no Debian package).
ensure_tansu_bin() {
  tansu_bin && return 0
  local pids deadline=$((SECONDS + TANSU_BUILD_TIMEOUT))
  pids=$(pgrep -f "cargo install tansu.*--root $TANSU_ROOT( |$)" || true)
  if [[ -n $pids ]]; then
    log "tansu: a 'cargo install tansu' into $TANSU_ROOT is already running (pid ${pids//$'\n'/ }); waiting for it"
    while pgrep -f "cargo install tansu.*--root $TANSU_ROOT( |$)" >/dev/null; do
      (( SECONDS < deadline )) || die "tansu: build still running after ${TANSU_BUILD_TIMEOUT}s"
      sleep 5
    done
    tansu_bin && return 0
  fi
  command -v cargo >/dev/null || die "tansu: not installed and no cargo to build it"
  mkdir -p "$CACHE_DIR"
  local buildlog="$CACHE_DIR/tansu-install.log"
  (
    # flock: two concurrent `up`s must not build twice into the same root.
    exec 9>"$CACHE_DIR/tansu.lock"
    flock -w "$TANSU_BUILD_TIMEOUT" 9 || die "tansu: timed out waiting for the build lock"
    [[ -x $TANSU_ROOT/bin/tansu ]] && exit 0
    log "tansu: building with 'cargo install tansu@$TANSU_VERSION' into $TANSU_ROOT; this takes ~10 min, once (log: $buildlog)"
    if ! cargo install tansu --version "=$TANSU_VERSION" --locked --features dynostore,postgres \
        --root "$TANSU_ROOT" >"$buildlog" 2>&1; then
      tail -n 30 "$buildlog" >&2
      die "tansu: cargo install failed (see $buildlog)"
    fi
  )
  tansu_bin
}

# Create the missing topics. Tansu (memory storage) forgets them on restart
# and has no auto-creation, so this runs on every `up`; a single `topic list`
# keeps the no-op case fast.
ensure_topics() {
  local bin=$1 quiet=${2:-} broker="tcp://$HOST:$KAFKA_PORT" existing t out missing=()
  existing=$("$bin" topic list --broker "$broker" 2>/dev/null) || existing=""
  for t in $KAFKA_TOPICS; do
    grep -qF "\"name\":\"$t\"" <<<"$existing" || missing+=("$t")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  local pflag=()
  if "$bin" topic create --help 2>/dev/null | grep -q -- '--partitions'; then
    pflag=(--partitions "$KAFKA_PARTITIONS")
  fi
  log "kafka: creating topics: ${missing[*]}"
  for t in "${missing[@]}"; do
    if ! out=$("$bin" topic create "$t" --broker "$broker" "${pflag[@]}" 2>&1); then
      grep -qi 'already exists' <<<"$out" || { [[ -n $quiet ]] || printf '%s\n' "$out" >&2; return 1; }
    fi
  done
}

ensure_kafka() {
  local bin=""
  if need_start kafka_up "$KAFKA_PORT" tansu tansu; then
    bin=$(ensure_tansu_bin) || die "tansu: no binary at $TANSU_ROOT/bin/tansu"
    log "kafka: starting tansu broker on $HOST:$KAFKA_PORT (memory storage)"
    spawn tansu "$bin" broker \
      --listener-url "tcp://$HOST:$KAFKA_PORT" \
      --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
      --storage-engine memory://tansu/
  fi
  wait_for "kafka/tansu ($HOST:$KAFKA_PORT)" kafka_up "$LOG_DIR/tansu.log"
  # A broker that answers but was not started here (e.g. a real Kafka with
  # auto-creation) still gets the topics if a tansu CLI is at hand.
  if [[ -z $bin ]]; then
    bin=$(tansu_bin) || { log "kafka: no tansu CLI available; not checking topics"; return 0; }
  fi
  local deadline=$((SECONDS + TIMEOUT))
  # The port opens a moment before metadata requests succeed; retry briefly.
  until ensure_topics "$bin" quiet; do
    if (( SECONDS >= deadline )); then
      ensure_topics "$bin" || die "kafka: could not create topics on $HOST:$KAFKA_PORT"
      break
    fi
    sleep 0.5
  done
}

stop_kafka() {
  local pid
  pid=$(pid_of tansu tansu) || return 0
  log "kafka: stopping tansu (pid $pid)"
  stop_pid tansu "$pid"
  rm -f "$RUN_DIR/tansu.pid"
}

# --------------------------------------------------------------- commands ---

cmd_up() {
  lock_services
  cmd_deps
  ensure_postgres
  ensure_redis
  ensure_etcd
  ensure_kafka
  log "up: postgres $HOST:$PG_PORT, redis $HOST:$REDIS_PORT, etcd $HOST:$ETCD_PORT, kafka $HOST:$KAFKA_PORT"
}

cmd_down() {
  [[ -d $RUN_DIR ]] || { log "down: nothing was started by this script"; return 0; }
  lock_services
  stop_kafka
  stop_etcd
  stop_redis
  stop_postgres
  log "down: stopped what this script had started (pre-existing services left running)"
}

cmd_stop() {
  lock_services
  case "${1:-}" in
    postgres) stop_postgres ;;
    redis) stop_redis ;;
    etcd) stop_etcd ;;
    kafka) stop_kafka ;;
    *) die "stop: expected postgres|redis|etcd|kafka, got '${1:-}'" ;;
  esac
}

cmd_status() {
  local rc=0 name port check expect pid state owner
  while read -r name port check expect; do
    if "$check" </dev/null; then state=up; else state=down; rc=1; fi
    if pid=$(pid_of "$name" "$expect"); then owner="managed by services.sh (pid $pid)"
    elif [[ $state == up ]]; then owner="external (not started by services.sh)"
    else owner="-"; fi
    printf '%-9s %-5s %s:%-5s %s\n' "$name" "$state" "$HOST" "$port" "$owner"
  done <<EOF
postgres $PG_PORT pg_up postgres
redis $REDIS_PORT redis_up redis-server
etcd $ETCD_PORT etcd_up etcd
tansu $KAFKA_PORT kafka_up tansu
EOF
  return $rc
}

# Connection settings for the integration tests, as shell exports.
cmd_env() {
  local su
  su=$(pg_superuser 2>/dev/null) || su=postgres
  cat <<EOF
export PROMO_TEST_DATABASE_URL=postgres://$su@$HOST:$PG_PORT
export PROMO_TEST_REDIS=redis://$HOST:$REDIS_PORT
export PROMO_TEST_ETCD=http://$HOST:$ETCD_PORT
export PROMO_TEST_KAFKA=$HOST:$KAFKA_PORT
export PROMO_TEST_TANSU=$TANSU_ROOT/bin/tansu
EOF
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  stop) cmd_stop "${2:-}" ;;
  status) cmd_status ;;
  deps) cmd_deps ;;
  env) cmd_env ;;
  topics) printf '%s\n' $KAFKA_TOPICS ;;
  *) echo "usage: $0 up|down|stop SERVICE|status|deps|env|topics" >&2; exit 2 ;;
esac
