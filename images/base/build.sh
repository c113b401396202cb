#!/usr/bin/env bash
# Makes the images' base from Debian packages, for machines that reach Debian's mirror but no container
# registry: an mmdebstrap root filesystem of bookworm with Python 3.11 and venv, imported into buildah's
# storage as localhost/torchyard/python:3.11-bookworm. The Dockerfiles take it as BASE_IMAGE.
# Reproducible as far as the mirror is: file times are clamped to SOURCE_DATE_EPOCH (0) and the image is
# committed with timestamp 0, so the same packages give the same layer digest.
#   images/base/build.sh         prints the image name (a second call finds it and returns at once)
set -euo pipefail
image=localhost/torchyard/python:3.11-bookworm
if buildah inspect --type image "$image" >/dev/null 2>&1; then echo "$image"; exit 0; fi
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "base: mmdebstrap bookworm (python3.11, python3.11-venv, ca-certificates) from $mirror" >&2
# the package lists, apt's caches, logs and docs are of no use in an image ($1: the root, in the hook's shell)
# shellcheck disable=SC2016
SOURCE_DATE_EPOCH=0 mmdebstrap --quiet --variant=minbase --include=python3.11,python3.11-venv,ca-certificates \
    --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/* "$1"/var/log/* "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    bookworm "$work/rootfs.tar" "$mirror"
ctr=$(buildah from scratch)
buildah add --quiet "$ctr" "$work/rootfs.tar" / >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label org.opencontainers.image.description="Debian bookworm + Python 3.11 (mmdebstrap)" "$ctr"
buildah commit --quiet --rm --timestamp 0 "$ctr" "$image" >/dev/null
echo "$image"
