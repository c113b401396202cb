#!/usr/bin/env bash
# Builds the operator and trainer images with docker, or buildah when there is no usable docker.
#   images/build.sh [REGISTRY/]       (make images; TAG defaults to the package version)
# Exits non-zero, saying why, when neither can build here (e.g. a docker client without a daemon).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${1:-torchyard/}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
tag="${TAG:-$version}"

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  build=(docker build)
elif command -v buildah >/dev/null 2>&1; then
  build=(buildah build --layers)
else
  if command -v docker >/dev/null 2>&1; then
    echo "images: docker is installed but its daemon is not reachable (docker info failed) and buildah" \
         "is not installed; start the daemon or install buildah" >&2
  else
    echo "images: neither docker nor buildah is installed; install one of them to build the images" >&2
  fi
  exit 2
fi
for image in operator trainer; do
  echo "images: ${build[*]} -t ${prefix}${image}:${tag}"
  "${build[@]}" -f "images/${image}/Dockerfile" -t "${prefix}${image}:${tag}" .
done
