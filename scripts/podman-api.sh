#!/usr/bin/env bash
# podman's Docker-compatible API on a unix socket, for testcontainers (the test fixtures start
# Kafka and Redis as containers when a Docker API answers: tests/support/containers.py).
#
#   scripts/podman-api.sh start   start `podman system service` in the background, wait until it
#                                 answers /_ping, print the DOCKER_HOST to export
#   scripts/podman-api.sh stop    stop it (the containers it started stay; the fixtures remove theirs)
#
# Environment (optional):
#   PODMAN_API_DIR   default <repo>/.local/podman-api (socket, pid, log)
#   CONTAINERS_CONF  podman's configuration; default: scripts/container-engine.sh's (runc, cgroupfs,
#                    no default ulimits — what runs in sandboxes and CI), else the same written here
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${PODMAN_API_DIR:-$REPO/.local/podman-api}"
SOCK="$DIR/podman.sock"
PIDFILE="$DIR/podman.pid"
LOG="$DIR/podman.log"

die() { echo "podman-api.sh: $*" >&2; exit 1; }

configure() {
  if [[ -n "${CONTAINERS_CONF:-}" ]]; then return 0; fi
  if [[ -f "$REPO/scripts/container-engine.sh" ]]; then
    # shellcheck source=/dev/null
    source "$REPO/scripts/container-engine.sh"
    CONTAINER_ENGINE=podman container_engine_setup "$REPO"
  else
    mkdir -p "$DIR"
    {
      printf '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\n'
      if command -v runc >/dev/null 2>&1; then printf 'runtime = "runc"\n'; fi
    } >"$DIR/containers.conf"
    export CONTAINERS_CONF="$DIR/containers.conf"
  fi
}

running() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

answers() { # GET /_ping answers 200 (python3: curl is not everywhere)
  python3 - "$SOCK" <<'PY' 2>/dev/null
import socket, sys
with socket.socket(socket.AF_UNIX) as s:
    s.settimeout(2)
    s.connect(sys.argv[1])
    s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
    sys.exit(0 if s.recv(64).split(b" ")[1:2] == [b"200"] else 1)
PY
}

cmd_start() {
  command -v podman >/dev/null || die "podman is missing (apt-get install podman runc; make install does)"
  (( ${#SOCK} < 100 )) || die "socket path $SOCK is too long for a unix socket (108 bytes): set PODMAN_API_DIR"
  mkdir -p "$DIR"
  if running && answers; then
    echo "export DOCKER_HOST=unix://$SOCK"
    return 0
  fi
  configure
  rm -f "$SOCK"
  podman system service --time=0 "unix://$SOCK" >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local i
  for i in $(seq 1 100); do   # 100 x 0.1 s
    answers && { echo "export DOCKER_HOST=unix://$SOCK"; return 0; }
    running || break
    sleep 0.1
  done
  tail -n 20 "$LOG" >&2 || true
  cmd_stop >/dev/null 2>&1 || true
  die "podman's API did not answer on $SOCK (log: $LOG)"
}

cmd_stop() {
  if running; then
    local pid i
    pid="$(cat "$PIDFILE")"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE" "$SOCK"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) echo "usage: $0 {start|stop}" >&2; exit 2 ;;
esac
