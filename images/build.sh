#!/bin/sh
# `make image`: builds kpa-emulator/kpa:TAG (images/Dockerfile.kpa) and kpa-emulator/predictor:TAG
# (images/Dockerfile.predictor) with buildah, from the repository root.
#
# BASE_IMAGE (default python:3.11-slim) is the base; when it cannot be pulled (no registry
# reachable) a Debian bookworm base is debootstrapped instead (images/debian-base.sh).
# This machine's pip sources go into the build: PIP_CERT (a CA bundle), PIP_FIND_LINKS (wheel
# directories) and PIP_INDEX_URL are forwarded when set, their files mounted read-only for the build
# only (nothing of them stays in the images); TORCH_INDEX_URL overrides the CPU index torch comes from.
# BUILDAH_ISOLATION defaults to chroot, which works inside a container.
set -eu
tag=${1:?usage: images/build.sh TAG}
base=${BASE_IMAGE:-python:3.11-slim}
fallback=localhost/kpa-base:bookworm
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"

command -v buildah >/dev/null || {
  echo "make image: buildah not found; install it (Debian: apt-get install buildah) and rerun" >&2
  exit 1
}
if ! buildah inspect --type image "$base" >/dev/null 2>&1 && ! buildah pull --quiet "$base" >/dev/null 2>&1; then
  echo "make image: cannot pull $base (no registry reachable?); using $fallback (Debian bookworm's python3)"
  base=$fallback
  buildah inspect --type image "$base" >/dev/null 2>&1 || sh images/debian-base.sh "$base"
fi

set -- --build-arg "BASE=$base"
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  set -- "$@" --volume "$PIP_CERT:$PIP_CERT:ro" --build-arg "PIP_CERT=$PIP_CERT"
fi
links=""
for dir in ${PIP_FIND_LINKS:-}; do
  [ -d "$dir" ] || continue
  set -- "$@" --volume "$dir:$dir:ro"
  links="$links $dir"
done
[ -z "$links" ] || set -- "$@" --build-arg "PIP_FIND_LINKS=${links# }"
[ -z "${PIP_INDEX_URL:-}" ] || set -- "$@" --build-arg "PIP_INDEX_URL=$PIP_INDEX_URL"

buildah bud --layers "$@" -f images/Dockerfile.kpa -t "kpa-emulator/kpa:$tag" .
[ -z "${TORCH_INDEX_URL:-}" ] || set -- "$@" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"
buildah bud --layers "$@" -f images/Dockerfile.predictor -t "kpa-emulator/predictor:$tag" .
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep "kpa-emulator/.*:$tag"
