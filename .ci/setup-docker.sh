#!/usr/bin/env bash
# CI setup for the sandbox tests: installs docker.io, bubblewrap and debootstrap when missing, starts dockerd
# in the background when it is not answering (log: $DOCKERD_LOG), then builds the task image offline.
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/synthscale-dockerd.log}"
DOCKERD_WAIT_S="${DOCKERD_WAIT_S:-60}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-docker: installing ${missing[*]}"
  sudo_if_needed apt-get update -q
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if ! docker info >/dev/null 2>&1; then
  echo "setup-docker: starting dockerd (log: $DOCKERD_LOG)"
  sudo_if_needed mkdir -p "$(dirname "$DOCKERD_LOG")"
  # setsid: dockerd must outlive this script and not share its process group; the redirect runs as root too
  sudo_if_needed sh -c 'setsid dockerd >>"$1" 2>&1 < /dev/null &' start-dockerd "$DOCKERD_LOG"
  waited=0
  until docker info >/dev/null 2>&1; do
    if [ "$waited" -ge "$DOCKERD_WAIT_S" ]; then
      echo "setup-docker: dockerd did not answer within ${DOCKERD_WAIT_S}s; last lines of $DOCKERD_LOG:" >&2
      tail -n 30 "$DOCKERD_LOG" >&2 || true
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "setup-docker: dockerd is up after ${waited}s"
fi

bash "$repo/cluster/images/build-offline.sh"
