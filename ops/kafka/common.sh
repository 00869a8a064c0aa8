# shellcheck shell=bash
# Sourced (never executed) by ops/stack.sh and ops/bin/kafka-*: where the Kafka jars live and how to
# run a class from them. Paths derive from this file's location so any checkout works.

OPS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_ROOT=$(dirname "$OPS_DIR")
LOCAL_DIR=$REPO_ROOT/.local
KAFKA_STATE=$LOCAL_DIR/kafka
KAFKA_LIBS=$KAFKA_STATE/libs
KAFKA_POM=$OPS_DIR/kafka/pom.xml

# The marker holds the POM's hash: editing the POM (a version bump) re-resolves, anything else reuses.
kafka_ensure_jars() {
    local marker=$KAFKA_LIBS/.pom-sha256 want
    want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
    [[ -f $marker && $(<"$marker") == "$want" ]] && return 0
    command -v java >/dev/null || { echo "java not found: install a JDK/JRE 17+ (Debian: openjdk-17-jre-headless)" >&2; return 1; }
    command -v mvn >/dev/null || { echo "mvn not found: install Maven (Debian: maven) to fetch the Kafka jars" >&2; return 1; }
    mkdir -p "$KAFKA_STATE"
    # The lock keeps a wrapper and stack.sh started together from swapping libs/ under each other;
    # resolving into a temp dir and renaming means libs/ is either complete or absent.
    (
        flock 9
        [[ -f $marker && $(<"$marker") == "$want" ]] && exit 0
        tmp=$(mktemp -d "$KAFKA_STATE/libs.tmp.XXXXXX") && chmod 755 "$tmp"
        trap 'rm -rf "$tmp"' EXIT
        echo "resolving Kafka jars with Maven into ${KAFKA_LIBS#"$REPO_ROOT"/} (first run only)..." >&2
        # Maven's output goes to a log, shown only on failure: the tools' stdout is data, and
        # Debian's Maven 3.8.7 prints stray ANSI resets even with -q.
        if ! mvn -B -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$tmp" >"$KAFKA_STATE/mvn.log" 2>&1; then
            tail -n 40 "$KAFKA_STATE/mvn.log" >&2
            echo "Maven could not resolve the Kafka jars (full log: $KAFKA_STATE/mvn.log)" >&2
            exit 1
        fi
        echo "$want" >"$tmp/.pom-sha256" || exit 1
        rm -rf "$KAFKA_LIBS"
        mv "$tmp" "$KAFKA_LIBS"
        trap - EXIT
    ) 9>"$KAFKA_STATE/libs.lock"
}

# Console tools are short-lived: small heap, quick JIT. Their log config sends WARN+ to stderr (log4j2's
# fallback without one shows only ERROR), keeping stdout for the data.
kafka_tool_exec() {
    local main=$1
    shift
    kafka_ensure_jars
    # shellcheck disable=SC2086 # KAFKA_TOOLS_JAVA_OPTS is a list of flags on purpose
    exec java ${KAFKA_TOOLS_JAVA_OPTS:--Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1} \
        -Dlog4j2.configurationFile="$OPS_DIR/kafka/tools-log4j2.properties" \
        -cp "$KAFKA_LIBS/*" "$main" "$@"
}
