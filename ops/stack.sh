#!/usr/bin/env bash
# Local API Hub stack without Docker: Kafka (KRaft, from Maven jars), Redis, sandbox, gateway, workers.
# Loopback only, non-default ports, all state under .local/<component>/ (pid file, logs, data).
#
#   ops/stack.sh up [kafka redis sandbox gateway history verification recovery] [prometheus]
#                                                   start (default: all but the optional prometheus),
#                                                   skipping what is already up
#   ops/stack.sh down [components...]               stop, in reverse order (default: all, prometheus too)
#   ops/stack.sh status                             one line per component
#   ops/stack.sh env                                print .local/stack.env (written by `up`)
#
# Ports: APIHUB_KAFKA_PORT (19092), APIHUB_KAFKA_CONTROLLER_PORT (19093), APIHUB_REDIS_PORT (16379),
# APIHUB_SANDBOX_PORT (18080), APIHUB_GATEWAY_METRICS_PORT (18081), the workers' health ports
# APIHUB_HISTORY_PORT (18091), APIHUB_VERIFICATION_PORT (18092), APIHUB_RECOVERY_PORT (18093), and the
# optional Prometheus APIHUB_PROMETHEUS_PORT (19090; Debian's package, installed when missing; scrapes the
# gateway and the workers with ops/prometheus/prometheus-local.yml and its alert rules).
#
# Kafka nodes: KAFKA_NODES (or APIHUB_KAFKA_NODES) = 1 (the default: one combined broker+controller in
# .local/kafka/) or 3 (`make up KAFKA_NODES=3`): components kafka-1, kafka-2, kafka-3, each a combined
# broker+controller of a three-voter KRaft quorum with its own config, data, logs and pid in .local/kafka-N/;
# node N listens on APIHUB_KAFKA_PORT + 2(N-1) and its controller on APIHUB_KAFKA_CONTROLLER_PORT + 2(N-1)
# (19092/19094/19096 and 19093/19095/19097 by default); replication factor 3 and min.insync.replicas=2 for
# the internal topics and as the cluster's default. `up kafka` starts every node not running (so after a
# SIGKILL it restarts the one missing), `up kafka-2` / `down kafka-2` one node; a plain `down` (or `down
# kafka` while the cluster is the stack's Kafka) stops every node; stack.env then lists all three brokers in
# KAFKA_BOOTSTRAP_SERVERS. Without KAFKA_NODES the stack keeps the Kafka it has: the cluster while a node of
# it on these ports was started and not stopped by `down` (its pid file in .local/kafka-N/) and the single
# node is not running (`up kafka` then restarts the missing nodes), else the single node.
# APIHUB_STACK_ENV moves stack.env (the Kafka chaos scenarios run their cluster beside the session's single
# node and leave its stack.env alone).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=kafka/common.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/kafka/common.sh"

HOST=127.0.0.1
KAFKA_PORT=${APIHUB_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${APIHUB_KAFKA_CONTROLLER_PORT:-19093}
REDIS_PORT=${APIHUB_REDIS_PORT:-16379}
SANDBOX_PORT=${APIHUB_SANDBOX_PORT:-18080}
GATEWAY_METRICS_PORT=${APIHUB_GATEWAY_METRICS_PORT:-18081}
HISTORY_PORT=${APIHUB_HISTORY_PORT:-18091}
VERIFICATION_PORT=${APIHUB_VERIFICATION_PORT:-18092}
RECOVERY_PORT=${APIHUB_RECOVERY_PORT:-18093}
PROMETHEUS_PORT=${APIHUB_PROMETHEUS_PORT:-19090}
KAFKA_HEAP_OPTS=${APIHUB_KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}
PYTHON=${APIHUB_PYTHON:-$REPO_ROOT/.venv/bin/python}
APIHUB=${APIHUB_BIN:-$REPO_ROOT/.venv/bin/apihub}
STACK_ENV=${APIHUB_STACK_ENV:-$LOCAL_DIR/stack.env} # tests that run a stack beside the usual one move it
# Empty when not given: resolve_kafka_nodes then picks the Kafka the stack already has.
KAFKA_NODES=${APIHUB_KAFKA_NODES:-${KAFKA_NODES:-}}
[[ -z $KAFKA_NODES || $KAFKA_NODES == 1 || $KAFKA_NODES == 3 ]] || {
    echo "stack: error: KAFKA_NODES must be 1 or 3, not '$KAFKA_NODES'" >&2
    exit 2
}
KAFKA_CLUSTER_NODES=(kafka-1 kafka-2 kafka-3)
KAFKA_CLUSTER_ID_FILE=$LOCAL_DIR/kafka-cluster-id
# Three JVMs share the machine with everything else: a smaller heap each.
KAFKA_NODE_HEAP_OPTS=${APIHUB_KAFKA_NODE_HEAP_OPTS:--Xmx384m -Xms128m}

COMPONENTS=(kafka redis sandbox gateway history verification recovery)
OPTIONAL_COMPONENTS=(prometheus) # started only when named; stopped by a plain `down`
KAFKA_READY_TIMEOUT=90
OTHER_READY_TIMEOUT=30
STOP_TIMEOUT=30

say() { echo "stack: $*"; }
die() {
    echo "stack: error: $*" >&2
    exit 1
}

# --- per-component facts -----------------------------------------------------------------------

is_kafka_node() { [[ $1 =~ ^kafka-[123]$ ]]; }
node_index() { echo "${1#kafka-}"; }
node_port() { echo $((KAFKA_PORT + 2 * ($(node_index "$1") - 1))); }
node_controller_port() { echo $((KAFKA_CONTROLLER_PORT + 2 * ($(node_index "$1") - 1))); }
node_state() { echo "$LOCAL_DIR/$1"; }

# Whether the node's config (rewritten on every start) has it listen on this stack's ports: the Kafka
# chaos scenarios run their cluster from the same .local/kafka-N/ on ports of their own.
node_on_our_ports() {
    grep -qxF "listeners=PLAINTEXT://$HOST:$(node_port "$1"),CONTROLLER://$HOST:$(node_controller_port "$1")" \
        "$(node_state "$1")/server.properties" 2>/dev/null
}

# Whether this script set up the three-node cluster on these ports and has not stopped it: a node on our
# ports has its pid file (`down` deletes it; a node that crashed or was killed keeps it). One stopped by
# `down kafka-2` still belongs to the cluster as long as another node has its pid file.
cluster_present() {
    local n
    for n in "${KAFKA_CLUSTER_NODES[@]}"; do
        [[ -e $(pid_file "$n") ]] && node_on_our_ports "$n" && return 0
    done
    return 1
}

# KAFKA_NODES when not given: the cluster while it is present and the single node does not run (so `up`,
# `up kafka`, `up sandbox gateway`, `down kafka` and `status` keep the Kafka `make up KAFKA_NODES=3`
# started), else the single node.
resolve_kafka_nodes() {
    [[ -n $KAFKA_NODES ]] && return 0
    if ! running_pid kafka >/dev/null && cluster_present; then KAFKA_NODES=3; else KAFKA_NODES=1; fi
}

# The brokers a client bootstraps from: the cluster's three when KAFKA_NODES=3 (given or resolved).
kafka_bootstrap() {
    if [[ $KAFKA_NODES == 3 ]]; then
        local n out=()
        for n in "${KAFKA_CLUSTER_NODES[@]}"; do out+=("$HOST:$(node_port "$n")"); done
        (
            IFS=,
            echo "${out[*]}"
        )
    else
        echo "$HOST:$KAFKA_PORT"
    fi
}

port_of() {
    case $1 in
    kafka) echo "$KAFKA_PORT" ;; redis) echo "$REDIS_PORT" ;;
    sandbox) echo "$SANDBOX_PORT" ;; gateway) echo "$GATEWAY_METRICS_PORT" ;;
    history) echo "$HISTORY_PORT" ;; verification) echo "$VERIFICATION_PORT" ;;
    recovery) echo "$RECOVERY_PORT" ;; prometheus) echo "$PROMETHEUS_PORT" ;;
    kafka-[123]) node_port "$1" ;;
    esac
}

# The worker (apihub worker NAME) behind a worker component.
worker_of() {
    case $1 in
    history) echo "history-collector" ;; verification) echo "verification-worker" ;;
    recovery) echo "recovery-worker" ;;
    esac
}

# Text that must appear in the process's command line: a pid file whose pid was reused by an
# unrelated process after a reboot or crash must not count as "running" (or get killed by `down`).
signature_of() {
    case $1 in
    kafka) echo "kafka.Kafka" ;; redis) echo "redis-server" ;;
    sandbox) echo "apihub sandbox" ;; gateway) echo "apihub gateway" ;;
    history | verification | recovery) echo "apihub worker $(worker_of "$1")" ;;
    prometheus) echo "prometheus --config.file=$LOCAL_DIR/prometheus/" ;;
    kafka-[123]) echo "kafka.Kafka $(node_state "$1")/server.properties" ;;
    esac
}

pid_file() { echo "$LOCAL_DIR/$1/$1.pid"; }
log_file() { echo "$LOCAL_DIR/$1/$1.log"; }

# Prints the pid when the component's recorded process is alive and really is that component.
running_pid() {
    local file pid
    file=$(pid_file "$1")
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    ps -ww -o args= -p "$pid" 2>/dev/null | grep -qF -- "$(signature_of "$1")" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# curl is not on every fresh image; the venv's Python always is when the app components run.
http_ok() {
    if command -v curl >/dev/null; then
        curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
    else
        "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null
    fi
}

# The stack's own brokers listen in plaintext: their probe ignores any APIHUB_KAFKA__SECURITY_* the shell
# exports for another cluster.
local_kafka_probe() {
    APIHUB_KAFKA__SECURITY_PROTOCOL=PLAINTEXT "$PYTHON" "$OPS_DIR/wait_kafka.py" "$@"
}

is_ready() {
    case $1 in
    kafka) local_kafka_probe --bootstrap "$HOST:$KAFKA_PORT" --timeout 3 --quiet 2>/dev/null ;;
    redis) [[ $(timeout 2 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] ;;
    sandbox) http_ok "http://$HOST:$SANDBOX_PORT/healthz" ;;
    gateway) http_ok "http://$HOST:$GATEWAY_METRICS_PORT/healthz" ;;
    history | verification | recovery) http_ok "http://$HOST:$(port_of "$1")/readyz" ;;
    prometheus) http_ok "http://$HOST:$PROMETHEUS_PORT/-/ready" ;;
    kafka-[123]) local_kafka_probe --bootstrap "$HOST:$(node_port "$1")" --timeout 3 --quiet \
        2>/dev/null ;;
    esac
}

# --- process handling --------------------------------------------------------------------------

# Runs a command detached in its own session (so Ctrl-C in the calling terminal and the caller's exit
# don't reach it, and `down` can signal its whole process group). The child records its own pid
# before exec'ing, which stays correct whether or not setsid has to fork.
spawn() {
    local name=$1 pidf logf i
    shift
    pidf=$(pid_file "$name")
    logf=$(log_file "$name")
    mkdir -p "$LOCAL_DIR/$name"
    rm -f "$pidf"
    # A start line in the services' own JSON log format (docs/LOGGING.md), so the file stays one object a line.
    local command
    command=$(printf ' %q' "$@")
    command=${command# }
    command=${command//\\/\\\\}
    command=${command//\"/\\\"}
    printf '{"ts":"%s","level":"info","logger":"ops.stack","event":"stack.start","component":"%s","command":"%s"}\n' \
        "$(date -u '+%Y-%m-%dT%H:%M:%S.000Z')" "$name" "$command" >>"$logf"
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
    setsid bash -c 'echo $$ >"$0" && exec "$@"' "$pidf" "$@" </dev/null >>"$logf" 2>&1 8>&- &
    for ((i = 0; i < 50; i++)); do
        [[ -s $pidf ]] && return 0
        sleep 0.1
    done
    die "$name: process did not start (no pid file after 5s)"
}

show_log_tail() {
    local file=$1
    [[ -f $file ]] || return 0
    echo "--- last 40 lines of ${file#"$REPO_ROOT"/} ---" >&2
    tail -n 40 "$file" >&2
}

start_failed() {
    local name=$1
    shift
    echo "stack: error: $name: $*" >&2
    show_log_tail "$(log_file "$name")"
    # The broker's own log only helps if this attempt wrote to it (a JVM that dies early doesn't).
    if [[ $name == kafka && $KAFKA_STATE/logs/server.log -nt $(pid_file kafka) ]]; then
        show_log_tail "$KAFKA_STATE/logs/server.log"
    elif is_kafka_node "$name" && [[ $(node_state "$name")/logs/server.log -nt $(pid_file "$name") ]]; then
        show_log_tail "$(node_state "$name")/logs/server.log"
    fi
    stop_component "$name" >/dev/null
    exit 1
}

# Polls is_ready, bounded by both a count and a deadline; stops early if the process died.
wait_ready() {
    local name=$1 timeout=$2 deadline i
    if [[ $name == kafka ]] || is_kafka_node "$name"; then
        # One client polling for the whole window, instead of a Python start per attempt.
        local pid
        pid=$(running_pid "$name") || start_failed "$name" "process exited during startup"
        local_kafka_probe --bootstrap "$HOST:$(port_of "$name")" --timeout "$timeout" \
            --pid "$pid" --quiet ||
            start_failed "$name" "not ready (see above)"
        return 0
    fi
    deadline=$((SECONDS + timeout))
    for ((i = 0; i < timeout * 4 && SECONDS < deadline; i++)); do
        is_ready "$name" && return 0
        running_pid "$name" >/dev/null || start_failed "$name" "process exited during startup"
        sleep 0.25
    done
    start_failed "$name" "not ready after ${timeout}s"
}

# Decides whether a start is needed. Returns 1 (skip) when a healthy instance is already running;
# refuses to start over a port that some other process holds.
need_start() {
    local name=$1 pid port
    if pid=$(running_pid "$name"); then
        if is_ready "$name"; then
            say "$name: already running (pid $pid)"
            return 1
        fi
        say "$name: running (pid $pid) but not ready yet; waiting"
        local timeout=$OTHER_READY_TIMEOUT
        [[ $name == kafka ]] || is_kafka_node "$name" && timeout=$KAFKA_READY_TIMEOUT
        wait_ready "$name" "$timeout"
        say "$name: ready"
        return 1
    fi
    rm -f "$(pid_file "$name")"
    local ports=("$(port_of "$name")")
    [[ $name == kafka ]] && ports+=("$KAFKA_CONTROLLER_PORT")
    is_kafka_node "$name" && ports+=("$(node_controller_port "$name")")
    local holder
    for port in "${ports[@]}"; do
        port_open "$port" || continue
        if holder=$(kafka_port_holder "$port"); then
            # The single node and the cluster's kafka-1 share their ports: one Kafka at a time.
            if [[ $holder == kafka\ * ]]; then
                die "$name: port $port on $HOST is held by the single Kafka node (kafka, pid ${holder#* })" \
                    "this script started; stop it first (ops/stack.sh down kafka) to run the three-node cluster"
            fi
            die "$name: port $port on $HOST is held by ${holder% *} (pid ${holder#* }) of the three-node cluster" \
                "this script started; leave KAFKA_NODES unset (or 3) to keep using it, or stop it first" \
                "(ops/stack.sh down kafka-1 kafka-2 kafka-3)"
        fi
        die "$name: port $port on $HOST is taken by a process this script did not start" \
            "(set APIHUB_*_PORT to move the stack, or stop that process)"
    done
    return 0
}

# Prints "NAME PID" of the stack's own Kafka process (the single node, or a cluster node on our ports) that
# holds PORT; fails when none does.
kafka_port_holder() {
    local c pid
    for c in kafka "${KAFKA_CLUSTER_NODES[@]}"; do
        pid=$(running_pid "$c") || continue
        if [[ $c == kafka ]]; then
            [[ $1 == "$KAFKA_PORT" || $1 == "$KAFKA_CONTROLLER_PORT" ]] || continue
        else
            [[ $1 == "$(node_port "$c")" || $1 == "$(node_controller_port "$c")" ]] || continue
            node_on_our_ports "$c" || continue
        fi
        echo "$c $pid"
        return 0
    done
    return 1
}

# A process that exited but whose parent (init, after the spawning shell left) has not reaped it yet
# still answers kill -0; count such zombies as gone.
alive() {
    local stat
    stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $stat != Z* ]]
}

stop_component() {
    local name=$1 pid i
    if ! pid=$(running_pid "$name"); then
        rm -f "$(pid_file "$name")"
        say "$name: not running"
        return 0
    fi
    # Signal the process group (spawn made the process a session leader) so helpers it forked go too.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        say "$name: still running after ${STOP_TIMEOUT}s, sending SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
    fi
    kill -KILL -- "-$pid" 2>/dev/null || true # stragglers left in the group
    rm -f "$(pid_file "$name")"
    say "$name: stopped (pid $pid)"
}

# --- components --------------------------------------------------------------------------------

# write_kafka_config STATE_DIR NODE_ID PORT CONTROLLER_PORT VOTERS REPLICAS MIN_ISR
write_kafka_config() {
    local state=$1 id=$2 port=$3 cport=$4 voters=$5 rf=$6 isr=$7
    # A static voter set (controller.quorum.voters) rather than a dynamic one (format --standalone):
    # the controller endpoint then comes from this file on every start, so changing the ports later
    # does not strand an already formatted data dir.
    cat >"$state/server.properties" <<EOF
# Generated by ops/stack.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$cport
advertised.listeners=PLAINTEXT://$HOST:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$state/data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
auto.create.topics.enable=false
unclean.leader.election.enable=false
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
EOF
}

# The broker and StorageTool share one JVM command line; an array so spawn can exec it.
# kafka_java_cmd [STATE_DIR [HEAP_OPTS]]
kafka_java_cmd() {
    local state=${1:-$KAFKA_STATE} heap=${2:-$KAFKA_HEAP_OPTS}
    # shellcheck disable=SC2206 # heap options are a list of flags on purpose
    KAFKA_JAVA=(java $heap -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
        -Dkafka.logs.dir="$state/logs"
        -Dlog4j2.configurationFile="$OPS_DIR/kafka/log4j2.properties"
        -cp "$KAFKA_LIBS/*")
}

# Kafka's Uuid: 16 random bytes, base64url without padding; Kafka itself avoids a leading '-' because the
# id would then look like a command-line flag. Written once to the file $1.
kafka_cluster_id() {
    if [[ ! -s $1 ]]; then
        "$PYTHON" -c 'import base64, uuid
while (i := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()).startswith("-"): pass
print(i)' >"$1"
    fi
    cat "$1"
}

start_kafka() {
    [[ -x $PYTHON ]] || die "kafka: $PYTHON not found; the readiness check needs the project venv (aiokafka)"
    kafka_ensure_jars
    mkdir -p "$KAFKA_STATE/logs" "$KAFKA_STATE/data"
    write_kafka_config "$KAFKA_STATE" 1 "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "1@$HOST:$KAFKA_CONTROLLER_PORT" 1 1
    kafka_java_cmd
    local id_file=$KAFKA_STATE/cluster-id
    kafka_cluster_id "$id_file" >/dev/null
    # Formatting costs a JVM start, so only when the data dir is new; --ignore-formatted covers a
    # half-written one.
    if [[ ! -f $KAFKA_STATE/data/meta.properties ]]; then
        say "kafka: formatting storage (cluster id $(<"$id_file"))"
        "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format --ignore-formatted -t "$(<"$id_file")" \
            -c "$KAFKA_STATE/server.properties" >>"$(log_file kafka)" 2>&1 ||
            start_failed kafka "storage format failed"
    fi
    local t0=${EPOCHREALTIME//[!0-9]/} us
    spawn kafka "${KAFKA_JAVA[@]}" kafka.Kafka "$KAFKA_STATE/server.properties"
    wait_ready kafka "$KAFKA_READY_TIMEOUT"
    us=$((${EPOCHREALTIME//[!0-9]/} - t0))
    say "kafka: ready on $HOST:$KAFKA_PORT, $((us / 1000000)).$((us / 100000 % 10))s after launch (pid $(running_pid kafka))"
}

# Formats (when new) and launches one node of the three-node cluster, without waiting: a node is ready
# only once a quorum of voters runs.
launch_kafka_node() {
    local name=$1 state id voters="" n cluster_id
    state=$(node_state "$name")
    id=$(node_index "$name")
    for n in "${KAFKA_CLUSTER_NODES[@]}"; do
        voters+="${voters:+,}$(node_index "$n")@$HOST:$(node_controller_port "$n")"
    done
    mkdir -p "$state/logs" "$state/data"
    write_kafka_config "$state" "$id" "$(node_port "$name")" "$(node_controller_port "$name")" "$voters" 3 2
    kafka_java_cmd "$state" "$KAFKA_NODE_HEAP_OPTS"
    cluster_id=$(kafka_cluster_id "$KAFKA_CLUSTER_ID_FILE")
    if [[ ! -f $state/data/meta.properties ]]; then
        say "$name: formatting storage (cluster id $cluster_id)"
        "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format --ignore-formatted -t "$cluster_id" \
            -c "$state/server.properties" >>"$(log_file "$name")" 2>&1 ||
            start_failed "$name" "storage format failed"
    fi
    spawn "$name" "${KAFKA_JAVA[@]}" kafka.Kafka "$state/server.properties"
}

# Starts the named nodes of the three-node cluster that are not running, then waits for each.
start_kafka_nodes() {
    [[ -x $PYTHON ]] || die "kafka: $PYTHON not found; the readiness check needs the project venv (aiokafka)"
    kafka_ensure_jars
    local name pid launched=()
    for name in "$@"; do
        if pid=$(running_pid "$name"); then
            if is_ready "$name"; then
                say "$name: already running (pid $pid)"
            else
                launched+=("$name") # running, not ready yet: wait for it below
            fi
            continue
        fi
        need_start "$name" || continue
        say "$name: starting (port $(node_port "$name"), controller $(node_controller_port "$name"))"
        launch_kafka_node "$name"
        launched+=("$name")
    done
    for name in "${launched[@]}"; do
        wait_ready "$name" "$KAFKA_READY_TIMEOUT"
        say "$name: ready on $HOST:$(node_port "$name") (pid $(running_pid "$name"))"
    done
}

ensure_redis_installed() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "redis: redis-server not found, installing the Debian package"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server
        command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
    fi
    die "redis: redis-server/redis-cli not found. Install them (Debian/Ubuntu: sudo apt-get install redis-server;" \
        "macOS: brew install redis) and run this again."
}

start_redis() {
    ensure_redis_installed
    # Everything on the command line and no config file: the distro's /etc/redis/redis.conf and its
    # service on 6379 play no part. No persistence: this is a cache for tests and demos.
    spawn redis redis-server --bind "$HOST" --port "$REDIS_PORT" --daemonize no --protected-mode yes \
        --dir "$LOCAL_DIR/redis" --save '' --appendonly no
    wait_ready redis "$OTHER_READY_TIMEOUT"
    say "redis: ready on $HOST:$REDIS_PORT (pid $(running_pid redis))"
}

require_apihub() {
    [[ -x $APIHUB ]] || die "$1: $APIHUB not found; install the project into .venv first (pip install -e '.[dev]')"
}

start_sandbox() {
    require_apihub sandbox
    spawn sandbox "$APIHUB" sandbox --host "$HOST" --port "$SANDBOX_PORT"
    wait_ready sandbox "$OTHER_READY_TIMEOUT"
    say "sandbox: ready on http://$HOST:$SANDBOX_PORT (pid $(running_pid sandbox))"
}

# Exports the variables of an env file as Compose and pydantic-settings read it, never through bash's
# `source`: a JSON credential pool keeps its quotes and a secret holding $, a backtick or a space is not
# expanded or run. An empty value (a line kept from .env.example) is skipped, so it cannot hide the stack's
# address set before it.
export_env_file() {
    local pairs pair
    mapfile -d '' pairs < <("$PYTHON" -m services.config_check "$1")
    wait $! || die "gateway: ${1#"$REPO_ROOT"/} cannot be read (see above; apihub config check $1)"
    for pair in "${pairs[@]}"; do export "$pair"; done
}

start_gateway() {
    require_apihub gateway
    write_stack_env
    # The gateway reads its settings from the environment: stack.env plus its metrics port. Its
    # upstreams default to the sandbox on 18080; follow APIHUB_SANDBOX_PORT unless already pointed
    # elsewhere (e.g. at a broker's real mock server).
    (
        set -a
        # shellcheck source=/dev/null
        source "$STACK_ENV"
        set +a
        # Real settings (credentials, base URLs) may come from .env; otherwise the sandbox's demo keys.
        if [[ -f $REPO_ROOT/.env ]]; then
            export_env_file "$REPO_ROOT/.env"
        fi
        export_sandbox_keys "$(sandbox_credentials)"
        export APIHUB_METRICS_PORT=$GATEWAY_METRICS_PORT
        export APIHUB_KIS__BASE_URL=${APIHUB_KIS__BASE_URL:-http://$HOST:$SANDBOX_PORT/kis/real}
        export APIHUB_KIWOOM__BASE_URL=${APIHUB_KIWOOM__BASE_URL:-http://$HOST:$SANDBOX_PORT/kiwoom/real}
        spawn gateway "$APIHUB" gateway
    )
    wait_ready gateway "$OTHER_READY_TIMEOUT"
    say "gateway: ready, metrics on http://$HOST:$GATEWAY_METRICS_PORT (pid $(running_pid gateway))"
}

# Exports the sandbox's made-up keys of the file $1 (APIHUB_<PROVIDER>__<NAME>=value lines) that the
# environment does not set, except a provider's when a credential pool is named for it
# (APIHUB_<PROVIDER>__CREDENTIALS or __CREDENTIALS_FILE): the pool stands in for the provider's own key, as
# `apihub config check` counts it, and a made-up key would join the pool as its member `default`.
export_sandbox_keys() {
    local key value pool
    while IFS='=' read -r key value; do
        [[ -n ${!key:-} ]] && continue
        pool=${key%%__*}__CREDENTIALS
        [[ -n ${!pool:-} ]] && continue
        pool+=_FILE
        [[ -n ${!pool:-} ]] && continue
        export "$key=$value"
    done <"$1"
}

# A worker talks to Kafka only (the hub's topics and its own); it needs no credentials.
start_worker() {
    local name=$1
    require_apihub "$name"
    (
        set -a
        # shellcheck source=/dev/null
        source "$STACK_ENV"
        set +a
        export APIHUB_HEALTH_PORT
        APIHUB_HEALTH_PORT=$(port_of "$name")
        spawn "$name" "$APIHUB" worker "$(worker_of "$name")"
    )
    wait_ready "$name" "$OTHER_READY_TIMEOUT"
    say "$name: ready, health on http://$HOST:$(port_of "$name") (pid $(running_pid "$name"))"
}
start_history() { start_worker history; }
start_verification() { start_worker verification; }
start_recovery() { start_worker recovery; }

ensure_prometheus_installed() {
    command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "prometheus: not found, installing the Debian package"
        apt-get update -q
        # Without recommends: node-exporter is not ours to run.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
        command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
    fi
    die "prometheus: prometheus/promtool not found. Install them (Debian/Ubuntu: sudo apt-get install prometheus;" \
        "macOS: brew install prometheus) and run this again."
}

# ops/prometheus/prometheus-local.yml with the stack's ports in place of its defaults (one substitution per
# line, so moved ports never collide) and the rules' absolute path.
write_prometheus_config() {
    local out=$LOCAL_DIR/prometheus/prometheus.yml
    mkdir -p "$LOCAL_DIR/prometheus/data"
    {
        echo "# Generated by ops/stack.sh from ops/prometheus/prometheus-local.yml on every start; edit that."
        sed -e "s#\"127.0.0.1:18081\"#\"$HOST:$GATEWAY_METRICS_PORT\"#;t" \
            -e "s#\"127.0.0.1:18091\"#\"$HOST:$HISTORY_PORT\"#;t" \
            -e "s#\"127.0.0.1:18092\"#\"$HOST:$VERIFICATION_PORT\"#;t" \
            -e "s#\"127.0.0.1:18093\"#\"$HOST:$RECOVERY_PORT\"#;t" \
            -e "s#^\( *- \)rules/\*\.yml\$#\1$OPS_DIR/prometheus/rules/*.yml#" \
            "$OPS_DIR/prometheus/prometheus-local.yml"
    } >"$out.tmp"
    promtool check config "$out.tmp" >>"$(log_file prometheus)" 2>&1 ||
        die "prometheus: the rendered config is invalid (promtool check config; see $(log_file prometheus))"
    mv "$out.tmp" "$out"
}

start_prometheus() {
    ensure_prometheus_installed
    write_prometheus_config
    spawn prometheus prometheus --config.file="$LOCAL_DIR/prometheus/prometheus.yml" \
        --storage.tsdb.path="$LOCAL_DIR/prometheus/data" --storage.tsdb.retention.time=2d \
        --web.listen-address="$HOST:$PROMETHEUS_PORT" --web.enable-lifecycle
    wait_ready prometheus "$OTHER_READY_TIMEOUT"
    say "prometheus: ready on http://$HOST:$PROMETHEUS_PORT (pid $(running_pid prometheus)), scraping the gateway" \
        "and the workers; alerts at /alerts"
}

# Fake keys of the brokers' shapes (36-char appkey, 180-char secret) for the sandbox, made once and
# kept under .local so restarts reuse the same tokens. Never used for a real broker.
sandbox_credentials() {
    local file=$LOCAL_DIR/sandbox-credentials.env
    if [[ ! -s $file ]]; then
        mkdir -p "$LOCAL_DIR"
        "$PYTHON" - >"$file.tmp" <<'PY'
import secrets
for provider, secret_name in (("KIS", "APPSECRET"), ("KIWOOM", "SECRETKEY")):
    print(f"APIHUB_{provider}__APPKEY=PS{secrets.token_hex(17)}")
    print(f"APIHUB_{provider}__{secret_name}={secrets.token_urlsafe(135)[:180]}")
PY
        chmod 600 "$file.tmp" && mv "$file.tmp" "$file"
    fi
    echo "$file"
}

write_stack_env() {
    mkdir -p "$LOCAL_DIR"
    # Plain KEY=value lines: valid for `source` (with set -a), python-dotenv and docker --env-file.
    cat >"$STACK_ENV.tmp" <<EOF
# Written by ops/stack.sh up. Load with: set -a; . .local/stack.env; set +a
KAFKA_BOOTSTRAP_SERVERS=$(kafka_bootstrap)
REDIS_URL=redis://$HOST:$REDIS_PORT/0
SANDBOX_URL=http://$HOST:$SANDBOX_PORT
GATEWAY_METRICS_URL=http://$HOST:$GATEWAY_METRICS_PORT
APIHUB_KAFKA__BOOTSTRAP_SERVERS=$(kafka_bootstrap)
APIHUB_REDIS__URL=redis://$HOST:$REDIS_PORT/0
APIHUB_GATEWAY_METRICS_URL=http://$HOST:$GATEWAY_METRICS_PORT
APIHUB_WORKER_URLS__HISTORY_COLLECTOR=http://$HOST:$HISTORY_PORT
APIHUB_WORKER_URLS__VERIFICATION_WORKER=http://$HOST:$VERIFICATION_PORT
APIHUB_WORKER_URLS__RECOVERY_WORKER=http://$HOST:$RECOVERY_PORT
EOF
    mv "$STACK_ENV.tmp" "$STACK_ENV"
}

# --- commands ----------------------------------------------------------------------------------

# Echoes the requested components in dependency order (reversed with "reverse"), rejecting unknowns.
# Without names: every component, the optional ones only when stopping (reverse).
select_components() {
    local order=$1 c want all=(kafka "${KAFKA_CLUSTER_NODES[@]}" "${COMPONENTS[@]:1}" "${OPTIONAL_COMPONENTS[@]}")
    shift
    for want in "$@"; do
        [[ " ${all[*]} " == *" $want "* ]] || die "unknown component '$want' (known: ${all[*]})"
    done
    local picked=()
    for c in "${all[@]}"; do
        if [[ $# -eq 0 ]]; then
            [[ $order == reverse || " ${COMPONENTS[*]} " == *" $c "* ]] && picked+=("$c")
        elif [[ " $* " == *" $c "* ]]; then
            picked+=("$c")
        fi
    done
    if [[ $order == reverse ]]; then
        for ((c = ${#picked[@]} - 1; c >= 0; c--)); do echo "${picked[c]}"; done
    else
        printf '%s\n' "${picked[@]}"
    fi
}

cmd_up() {
    local c picked
    picked=$(select_components forward "$@") # a separate assignment, so an unknown name stops here
    for c in $picked; do
        if [[ $c == kafka && $KAFKA_NODES == 3 ]]; then
            start_kafka_nodes "${KAFKA_CLUSTER_NODES[@]}"
            continue
        elif is_kafka_node "$c"; then
            start_kafka_nodes "$c"
            continue
        fi
        need_start "$c" || continue
        say "$c: starting"
        "start_$c"
    done
    write_stack_env
    say "wrote ${STACK_ENV#"$REPO_ROOT"/}"
}

cmd_down() {
    local c picked nodes=()
    picked=$(select_components reverse "$@") # a separate assignment, so an unknown name stops here
    # The cluster's nodes named (a plain `down` lists every one; `down kafka` means them all when the
    # cluster is the stack's Kafka) stop together, where the first of them comes in the order.
    for c in $picked; do
        is_kafka_node "$c" && nodes+=("$c")
        [[ $c == kafka && $KAFKA_NODES == 3 ]] && nodes=("${KAFKA_CLUSTER_NODES[@]}")
    done
    for c in $picked; do
        if [[ $c == kafka && $KAFKA_NODES == 3 ]] || is_kafka_node "$c"; then
            ((${#nodes[@]})) && stop_kafka_nodes "${nodes[@]}"
            nodes=()
            [[ $c == kafka ]] || continue
        fi
        stop_component "$c"
    done
}

# Stops the named cluster nodes that have a pid file, all at once. A node's controlled shutdown needs a
# controller quorum; when the whole cluster stops, the last node has none left and would wait for it, so
# it gets 15 s before SIGKILL (every write was on two brokers' logs before it was acknowledged; the next
# start recovers the log).
stop_kafka_nodes() {
    local n
    for n in "$@"; do
        [[ -e $(pid_file "$n") ]] && (STOP_TIMEOUT=15 stop_component "$n") &
    done
    wait
}

# One line per component of the stack's Kafka: the single node, or every node of the cluster (one stopped
# by `down kafka-2` as stopped). The single node is left out while the cluster is the stack's Kafka (it
# serves the same port) unless it runs; the nodes show beside it when the cluster is present anyway.
cmd_status() {
    local c pid state ready
    local kafkas=()
    if [[ $KAFKA_NODES == 1 ]] || running_pid kafka >/dev/null; then kafkas+=(kafka); fi
    if [[ $KAFKA_NODES == 3 ]] || cluster_present; then
        kafkas+=("${KAFKA_CLUSTER_NODES[@]}")
    fi
    for c in "${kafkas[@]}" "${COMPONENTS[@]:1}" "${OPTIONAL_COMPONENTS[@]}"; do
        if pid=$(running_pid "$c"); then
            state=running
            if is_ready "$c"; then ready=ready; else ready=not-ready; fi
        else
            state=stopped pid=- ready=-
        fi
        printf '%-12s %-8s pid=%-8s port=%-6s %s\n' "$c" "$state" "$pid" "$(port_of "$c")" "$ready"
    done
}

cmd_env() {
    [[ -f $STACK_ENV ]] || die "${STACK_ENV#"$REPO_ROOT"/} does not exist yet; run: ops/stack.sh up"
    cat "$STACK_ENV"
}

# Two `up`s at once (parallel test sessions, make -j) would both see "not running" and race for the
# ports; they take turns instead. spawn closes fd 8 so the services never hold the lock.
lock_stack() {
    mkdir -p "$LOCAL_DIR"
    exec 8>"$LOCAL_DIR/stack.lock"
    flock -w 300 8 || die "another ops/stack.sh up/down has held .local/stack.lock for 5 minutes"
}

case ${1:-} in
up) shift && lock_stack && resolve_kafka_nodes && cmd_up "$@" ;;
down) shift && lock_stack && resolve_kafka_nodes && cmd_down "$@" ;;
status) resolve_kafka_nodes && cmd_status ;;
env) cmd_env ;;
*)
    sed -n '2,31s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
