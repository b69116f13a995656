#!/usr/bin/env bash
# Builds the task image synthscale-task:latest without Docker Hub: debootstraps a Debian bookworm base that
# carries python3, numpy, pandas and scikit-learn as Debian packages (from the mirror this machine's apt
# uses), imports it as synthscale-base:bookworm, then builds cluster/images/task on top of it.
# Idempotent: exits at once when the image exists. Needs debootstrap, docker, and root or sudo (debootstrap).
set -euo pipefail

IMAGE="${IMAGE:-synthscale-task:latest}"
INCLUDE="python3,python-is-python3,python3-pip,python3-numpy,python3-pandas,python3-sklearn,python3-statsmodels,procps,coreutils,passwd"
# the base's tag names its package list, so a changed list debootstraps a new base
BASE_IMAGE="${BASE_IMAGE:-synthscale-base:bookworm-$(echo "$INCLUDE" | sha256sum | cut -c1-8)}"
SUITE="${SUITE:-bookworm}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# the image carries a hash of its recipe: an edited Dockerfile rebuilds, an unchanged one is reused
recipe="$(cat "$here/task/Dockerfile" "$0" | sha256sum | cut -c1-16)"
have="$(docker image inspect -f '{{ index .Config.Labels "synthscale.recipe" }}' "$IMAGE" 2>/dev/null || true)"
if [ "$have" = "$recipe" ]; then
  echo "build-offline: $IMAGE is up to date (recipe $recipe); nothing to do"
  exit 0
fi

# The first Debian archive URI in apt's sources (one-line *.list or deb822 *.sources), security and
# updates archives excluded; DEBIAN_MIRROR overrides.
find_mirror() {
  local files=()
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ "${#files[@]}" -gt 0 ] || return 0
  {
    grep -hE '^[[:space:]]*deb[[:space:]]' "${files[@]}" 2>/dev/null \
      | sed -E 's/\[[^]]*\]//' | awk '{print $2}' || true
    grep -hE '^[[:space:]]*URIs:' "${files[@]}" 2>/dev/null | sed -E 's/^[[:space:]]*URIs:[[:space:]]*//' \
      | tr ' ' '\n' || true
  } | grep -E '/debian/?$' | head -n 1
}

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  mirror="${DEBIAN_MIRROR:-$(find_mirror)}"
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$(mktemp -d /var/tmp/synthscale-rootfs.XXXXXX)"
  trap 'as_root rm -rf "$rootfs"' EXIT
  echo "build-offline: debootstrap $SUITE from $mirror into $rootfs (a few minutes)"
  as_root debootstrap --variant=minbase \
    --include="$INCLUDE" \
    "$SUITE" "$rootfs" "$mirror"
  as_root sh -c 'rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' clean "$rootfs"
  echo "build-offline: importing $BASE_IMAGE"
  as_root tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE"
  as_root rm -rf "$rootfs"
  trap - EXIT
fi

# pure-Python packages Debian does not ship, as wheels for the image's pip (PyPI is reachable; Docker Hub is not)
wheels="$here/task/wheels"
mkdir -p "$wheels"
python3 -m pip download -q --no-deps --only-binary=:all: --dest "$wheels" \
  "gymnasium==1.4.0" "cloudpickle>=1.2" "typing-extensions>=4.3" "farama-notifications>=0.0.1"
echo "build-offline: building $IMAGE on $BASE_IMAGE"
docker build --pull=false --build-arg BASE="$BASE_IMAGE" --label "synthscale.recipe=$recipe" -t "$IMAGE" "$here/task"
echo "build-offline: $IMAGE ready"
