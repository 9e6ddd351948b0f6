#!/usr/bin/env bash
# `make images`: builds tickwire's agent and operator images with podman on this machine, with no
# registry: the Debian base comes from mmdebstrap and this machine's apt sources, and pip in the
# build reaches packages exactly the way pip on this host does.
#
# Cached between runs on the same machine, outside the checkout (TICKWIRE_CACHE, default
# /var/cache/tickwire): the base tarball, keyed by the apt sources it was made from; and each
# image, labelled with a hash of everything it is built from (Dockerfile, the files it copies, the
# base image): an image whose label matches is not built again. A fresh machine builds all.
#
# Usage: scripts/build-images.sh           (root; run scripts/podman-host.sh first, `make images` does)
#        scripts/build-images.sh --check   builds nothing; fails if an image is missing or was not
#                                          built from this tree (the podman tests ask this)
# Prints the image names, one a line, on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${TICKWIRE_CACHE:-/var/cache/tickwire}
BASE_IMAGE=localhost/debian:bookworm
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
INPUTS_LABEL=dev.tickwire.inputs
log() { echo "build-images: $*" >&2; }
check_only=0
if [ "${1:-}" = "--check" ]; then check_only=1; fi

# -- the base: a minbase Debian 12 made from this machine's own apt sources ---------------------
sources=""
for candidate in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
  if [ -s "$candidate" ] && grep -Eq '^\s*(deb|Types:)' "$candidate"; then sources=$candidate; break; fi
done
[ -n "$sources" ] || { log "no apt sources file (debian.sources or sources.list) on this machine"; exit 1; }

base_key=$(cat "$sources" <(echo "mmdebstrap --format=tar --variant=minbase bookworm") | sha256sum | cut -c1-16)
base_tar="$CACHE/base/debian-bookworm-minbase-$base_key.tar"
if [ ! -s "$base_tar" ] && [ "$check_only" = 0 ]; then
  mkdir -p "$CACHE/base"
  log "making the base rootfs from $sources (about a minute)"
  mmdebstrap --quiet --format=tar --variant=minbase bookworm "$base_tar.partial" "$sources"
  mv "$base_tar.partial" "$base_tar"
  find "$CACHE/base" -name 'debian-bookworm-minbase-*.tar' ! -name "$(basename "$base_tar")" -delete
fi

remove_if_replaced() {  # NAME OLD_ID: the image NAME pointed to before keeps no name now: remove it
  if [ -n "$2" ] && [ "$2" != "$(podman image inspect --format '{{.Id}}' "$1")" ]; then
    podman rmi "$2" >/dev/null 2>&1 || true   # not --force: an image still in use stays
  fi
}

image_label() {  # the inputs hash an image was built from, or nothing
  podman image inspect --format "{{ index .Labels \"$INPUTS_LABEL\" }}" "$1" 2>/dev/null || true
}

# A tarball has no image config: give it what Debian's own images have, or PATH is empty in every
# RUN and container (dpkg then fails: ldconfig "not found in PATH").
import_changes=(--change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                --change 'CMD ["bash"]')
import_key=$(echo "$base_key ${import_changes[*]}" | sha256sum | cut -c1-16)
if [ "$(image_label "$BASE_IMAGE")" != "$import_key" ] && [ "$check_only" = 0 ]; then
  log "importing $base_tar as $BASE_IMAGE"
  previous=$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
  podman import --quiet "${import_changes[@]}" --change "LABEL $INPUTS_LABEL=$import_key" \
    "$base_tar" "$BASE_IMAGE" >/dev/null
  remove_if_replaced "$BASE_IMAGE" "$previous"
fi
base_id=$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null) || {
  log "there is no $BASE_IMAGE (make images)"; exit 1; }

# -- pip inside the build: the host's own pip configuration -------------------------------------
# The host's effective settings (files and PIP_* variables, as `pip config list` shows them) go
# into a pip.conf for the build, and every local path they name (CA bundle, find-links
# directories, file:// indexes, constraint files) is bind-mounted read-only (scripts/pip_build_conf.py).
# buildah leaves the mount points behind, empty: /etc/pip.conf (0 bytes) and /run/host-pip/.
build_dir=$(mktemp -d)
trap 'rm -rf "$build_dir"' EXIT
touch "$build_dir/mounts"
[ "$check_only" = 1 ] || python3 scripts/pip_build_conf.py "$build_dir/pip.conf" > "$build_dir/mounts"
volumes=(-v "$build_dir/pip.conf:/etc/pip.conf:ro")
while IFS= read -r mount; do
  [ -n "$mount" ] && volumes+=(-v "$mount:ro")
done < "$build_dir/mounts"

# -- the images ---------------------------------------------------------------------------------
inputs_hash() {  # the Dockerfile, every file its COPY lines name (minus build junk), the base
  local dockerfile=$1
  local sources
  sources=$(awk 'toupper($1) == "COPY" && $2 !~ /^--from/ { for (i = 2; i < NF; i++) print $i }' "$dockerfile")
  {
    echo "$base_id"
    sha256sum "$dockerfile"
    # shellcheck disable=SC2086
    find $sources -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -name '*.so' ! -name '*.o' \
      ! -path 'native/fuzz/out/*' ! -path 'native/fuzz/corpus-run/*' ! -path 'native/build-cffi/*' \
      -print0 | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

stale=0
for name in agent operator; do
  dockerfile=docker/$name.Dockerfile
  image=localhost/tickwire/$name:$VERSION
  key=$(inputs_hash "$dockerfile")
  if [ "$(image_label "$image")" = "$key" ]; then
    log "$image is up to date ($INPUTS_LABEL=$key)"
  elif [ "$check_only" = 1 ]; then
    log "$image is missing or was not built from this tree (make images)"
    stale=1
  else
    build_log="$CACHE/logs/$name.log"
    log "building $image from $dockerfile (a few minutes; log $build_log)"
    mkdir -p "$CACHE/logs"
    previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    # --no-cache: buildah 1.28 (podman 4.3) may reuse a stale stage for RUN --mount=from=build.
    if ! podman build --no-cache --pull=never --layers=false \
        --build-arg "DEBIAN_IMAGE=$BASE_IMAGE" --label "$INPUTS_LABEL=$key" \
        "${volumes[@]}" -f "$dockerfile" -t "$image" . >"$build_log" 2>&1; then
      tail -n 40 "$build_log" >&2
      log "building $image failed; the whole log: $build_log"
      exit 1
    fi
    remove_if_replaced "$image" "$previous"
  fi
  echo "$image"
done
exit $stale
