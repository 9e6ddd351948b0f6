#!/usr/bin/env bash
# Makes this Debian 12 machine able to build tickwire's images and run its Pods with podman, with
# no registry: installs podman and what it needs, and sets the three containers.conf settings this
# kind of machine needs. Idempotent; other settings in containers.conf are kept.
#
#   runtime = "runc"             crun 1.8 (podman's default) refuses the hybrid cgroup v1/v2 layout
#   cgroup_manager = "cgroupfs"  no systemd as PID 1 to delegate cgroups to
#   default_ulimits              podman's default nofile=1048576 is above root's hard limit, and
#                                root lacks CAP_SYS_RESOURCE to raise it: every container fails
#                                ("error setting rlimit type 7"). nproc: podman lowers its own
#                                RLIMIT_NPROC to kernel.pid_max when it starts, so a container may
#                                have at most min(ulimit -Hu, pid_max) ("rlimit type 6" otherwise).
#
# The Pod infra ("pause") container: with no infra_image configured, podman 4.3 builds
# localhost/podman-pause:<version>-<build time> itself from the catatonit binary (FROM scratch,
# COPY catatonit) the first time a Pod is made, and never pulls; it only pulls when infra_image
# names a registry image. So: install catatonit, and make sure infra_image stays unset.
set -euo pipefail
cd "$(dirname "$0")/.."

CONF=${CONTAINERS_CONF:-/etc/containers/containers.conf}
APT_PACKAGES=(podman runc catatonit containernetworking-plugins mmdebstrap uidmap)

if [ "$(id -u)" -ne 0 ]; then
  echo "podman-host: run as root (podman builds and runs the agent Pod as root)" >&2
  exit 1
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "podman-host: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The hard limits of this shell are what a container may have at most.
hard_limit() {
  local value
  value=$(ulimit -H "$1")
  if [ "$value" = unlimited ]; then echo 1048576; else echo "$value"; fi
}
nofile=$(hard_limit -n)
nproc=$(hard_limit -u)
pid_max=$(cat /proc/sys/kernel/pid_max)
[ "$nproc" -le "$pid_max" ] || nproc=$pid_max

if grep -Eq '^\s*infra_image\s*=\s*"[^"]' "$CONF" 2>/dev/null; then
  echo "podman-host: $CONF sets infra_image; Pods would pull it from a registry:" >&2
  grep -E '^\s*infra_image' "$CONF" >&2
  exit 1
fi

python3 scripts/containers_conf.py "$CONF" \
  'engine.runtime="runc"' \
  'engine.cgroup_manager="cgroupfs"' \
  "containers.default_ulimits=[\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
