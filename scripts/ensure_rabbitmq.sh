#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers AMQP on 127.0.0.1:5672 (the local development and
# test broker; the tests log in as guest/guest from loopback, which only a local broker
# allows; docker-compose.yml never uses that account).
#
#   answering            -> nothing to do (silent, exit 0); a GitHub service container or
#                           the compose broker published on 5672 counts too
#   installed, stopped   -> enable the management plugin (offline), `rabbitmq-server -detached`,
#                           wait until it answers
#   not installed        -> apt-get install rabbitmq-server, then as above
#
# Idempotent. Needs root (or password-less sudo) only to install or start the broker.
# Environment: RABBITMQ_HOST (127.0.0.1), RABBITMQ_PORT (5672), RABBITMQ_WAIT_S (60).
set -euo pipefail

HOST="${RABBITMQ_HOST:-127.0.0.1}"
PORT="${RABBITMQ_PORT:-5672}"
WAIT_S="${RABBITMQ_WAIT_S:-60}"

log() { echo "ensure_rabbitmq: $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# True when an AMQP 0-9-1 broker answers: send the protocol header and expect the first
# byte of the server's reply to be frame type 1 (the connection.start method frame). A
# plain TCP connect would also accept some other program squatting on the port.
amqp_answers() {
    # shellcheck disable=SC2016  # $0/$1 are expanded by the inner bash, on purpose
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "AMQP\x00\x00\x09\x01" >&3
        first=$(head -c 1 <&3 | od -An -tu1 | tr -d " \n")
        exec 3<&- 3>&-
        [ "$first" = "1" ]
    ' "$HOST" "$PORT" 2>/dev/null
}

# Poll for up to $1 seconds.
wait_for_broker() {
    local limit="$1" waited=0
    while ((waited < limit)); do
        if amqp_answers; then
            log "RabbitMQ answers on $HOST:$PORT (after ${waited}s)"
            return 0
        fi
        sleep 1
        waited=$((waited + 1))
    done
    return 1
}

# Run a command as root: directly, or through password-less sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "need root to run '$*' (run this script as root, or start RabbitMQ yourself on $HOST:$PORT)"
    fi
}

# Path of a RabbitMQ tool; the Debian package puts them in /usr/sbin, which a non-root PATH
# often lacks.
find_tool() {
    local name="$1" dir
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    for dir in /usr/sbin /usr/local/sbin /usr/lib/rabbitmq/bin /opt/rabbitmq/sbin; do
        if [ -x "$dir/$name" ]; then
            echo "$dir/$name"
            return 0
        fi
    done
    return 1
}

# Is a RabbitMQ node already running (booting, or up but not yet listening)? Asked with
# `rabbitmq-diagnostics ping`, which knows the node name and cookie of the local install.
node_running() {
    local diag
    diag="$(find_tool rabbitmq-diagnostics)" || return 1
    if [ "$(id -u)" -eq 0 ]; then
        timeout 20 "$diag" -q ping >/dev/null 2>&1
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        timeout 20 sudo -n "$diag" -q ping >/dev/null 2>&1
    else
        timeout 20 "$diag" -q ping >/dev/null 2>&1
    fi
}

if amqp_answers; then
    exit 0
fi

case "$HOST" in
127.* | localhost | ::1) ;;
*) die "no AMQP broker answers on $HOST:$PORT, and it is not on this machine, so it cannot be started from here" ;;
esac

server="$(find_tool rabbitmq-server || true)"
if [ -z "$server" ]; then
    command -v apt-get >/dev/null 2>&1 ||
        die "RabbitMQ is not installed and apt-get is not available: install RabbitMQ and start it on $HOST:$PORT"
    log "RabbitMQ is not installed: installing the Debian package rabbitmq-server"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
        die "apt-get update failed (no network to the package mirror?)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null ||
        die "apt-get install rabbitmq-server failed"
    server="$(find_tool rabbitmq-server)" || die "rabbitmq-server was installed but cannot be found"
    # the package may have started the broker itself (on machines with an init system)
    if wait_for_broker 5; then
        exit 0
    fi
fi

plugins="$(find_tool rabbitmq-plugins || true)"
if node_running; then
    log "a RabbitMQ node is running but does not answer on $HOST:$PORT yet: waiting up to ${WAIT_S}s"
else
    if [ -n "$plugins" ]; then
        # Offline mode edits the enabled-plugins file, so it works with the node stopped; an
        # already-enabled plugin is a no-op. A failure here is not fatal: AMQP works without it.
        as_root "$plugins" enable --offline rabbitmq_management >/dev/null 2>&1 ||
            log "warning: could not enable rabbitmq_management (continuing without the management UI)"
    fi
    log "starting RabbitMQ ($server -detached)"
    as_root "$server" -detached >/dev/null 2>&1 ||
        log "warning: '$server -detached' returned an error (a node may already be starting); waiting anyway"
fi

if wait_for_broker "$WAIT_S"; then
    exit 0
fi
die "RabbitMQ did not answer on $HOST:$PORT within ${WAIT_S}s; see /var/log/rabbitmq/ for the node's log"
