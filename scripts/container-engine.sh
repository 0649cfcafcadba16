# Sourced by scripts/images.sh, scripts/compose.sh and scripts/kube-play.sh: picks the container
# engine and sets podman up so it runs where Docker does not (CI machines, sandboxes).
#
#   ENGINE        docker when a Docker engine answers (`docker info`), else podman; CONTAINER_ENGINE
#                 forces one (docker or podman).
#   CONTAINERS_CONF  for podman, unless already set: .local/containers/containers.conf with the
#                 runc runtime, the cgroupfs cgroup manager and no default ulimits. crun (Debian's
#                 default) cannot set the default rlimits in unprivileged sandboxes ("setrlimit
#                 RLIMIT_NOFILE: Operation not permitted") nor run under hybrid cgroups; runc can.
#                 The same file serves podman-compose, `podman kube play` and podman's API socket.
# shellcheck shell=bash

container_engine_setup() {
  local repo="$1"
  if [[ -n "${CONTAINER_ENGINE:-}" ]]; then
    ENGINE="$CONTAINER_ENGINE"
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then
    ENGINE=podman
  else
    echo "no container engine: install podman (apt-get install podman runc; make install does) or start Docker" >&2
    return 1
  fi
  if [[ "$ENGINE" == podman && -z "${CONTAINERS_CONF:-}" ]]; then
    local conf="$repo/.local/containers/containers.conf"
    mkdir -p "${conf%/*}"
    {
      printf '# written by scripts/container-engine.sh (see there why)\n'
      printf '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\n'
      if command -v runc >/dev/null 2>&1; then printf 'runtime = "runc"\n'; fi
    } >"$conf.tmp"
    mv -f "$conf.tmp" "$conf"
    export CONTAINERS_CONF="$conf"
  fi
  export ENGINE
}
