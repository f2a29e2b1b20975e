#!/bin/sh
# A base image for images/Dockerfile.* where no container registry is reachable (so python:3.11-slim
# cannot be pulled): Debian bookworm's minimal root filesystem with its python3 (3.11) and venv,
# made by debootstrap from the Debian archive and committed by buildah as the image named in $1.
# Needs root, debootstrap and buildah (Debian packages of those names).
set -eu
image=${1:?usage: images/debian-base.sh IMAGE}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v debootstrap >/dev/null || {
  echo "images/debian-base.sh: debootstrap not found; install it (apt-get install debootstrap)" >&2
  exit 1
}
echo "images/debian-base.sh: debootstrap bookworm from $mirror (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  echo "images/debian-base.sh: debootstrap failed (log above)" >&2
  exit 1
}
rm -rf "$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/var/lib/apt/lists/*
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/usr/bin/python3"]\n' >"$work/Containerfile"
buildah bud --quiet -f "$work/Containerfile" -t "$image" "$work"
