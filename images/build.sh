#!/usr/bin/env bash
# Builds the operator and trainer images: with docker where its daemon answers, else with buildah (no daemon).
#   images/build.sh [REGISTRY/]       (make images; TAG defaults to the package version)
# BASE_IMAGE: the base of both images. Default: the pinned public python:3.11.11-slim-bookworm where Docker
#   Hub answers; otherwise the project's own Debian base (images/base/build.sh, mmdebstrap).
# TORCH_INDEX_URL: the index torch comes from. Default: PyTorch's CPU index where it answers; otherwise PyPI,
#   whose Linux torch brings its CUDA libraries (an image several GB larger; said when it happens).
# With buildah, the host's pip configuration (/etc/pip.conf) and CA bundle are mounted into the RUN steps,
# not into the images, so a build behind a TLS-inspecting proxy installs as the host's pip does.
# Exits non-zero, saying why, when neither docker nor buildah can build here.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${1:-torchyard/}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
tag="${TAG:-$version}"
say() { echo "images: $*" >&2; }
answers() { curl -sS --max-time 10 -o /dev/null "$1" 2>/dev/null; }  # any HTTP answer, even 401

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  build=(docker build)
elif command -v buildah >/dev/null 2>&1; then
  build=(buildah build --layers --network host --timestamp 0)
  [[ -f /etc/pip.conf ]] && build+=(--volume /etc/pip.conf:/etc/pip.conf:ro)
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] &&
    build+=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
else
  if command -v docker >/dev/null 2>&1; then
    say "docker is installed but its daemon is not reachable (docker info failed) and buildah is not" \
        "installed; start the daemon or install buildah (apt-get install buildah)"
  else
    say "neither docker nor buildah is installed; install one of them to build the images"
  fi
  exit 2
fi

if [[ -z ${BASE_IMAGE:-} ]]; then
  if answers https://registry-1.docker.io/v2/; then
    BASE_IMAGE=python:3.11.11-slim-bookworm
  elif [[ ${build[0]} == buildah ]]; then
    say "Docker Hub does not answer: the base is built from Debian packages (images/base/build.sh)"
    BASE_IMAGE=$(images/base/build.sh)
  else
    say "Docker Hub does not answer; set BASE_IMAGE to a Python 3.11 image your docker can use"
    exit 2
  fi
fi
if [[ -z ${TORCH_INDEX_URL+set} ]]; then
  TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
  if ! answers "$TORCH_INDEX_URL/"; then
    say "$TORCH_INDEX_URL does not answer: torch comes from PyPI, with its CUDA libraries (~4 GB more)"
    TORCH_INDEX_URL=
  fi
fi

for image in operator trainer; do
  say "${build[0]} build -f images/$image/Dockerfile -t ${prefix}${image}:${tag} (base $BASE_IMAGE)"
  args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
  [[ $image == trainer ]] && args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
  "${build[@]}" "${args[@]}" -f "images/${image}/Dockerfile" -t "${prefix}${image}:${tag}" .
done
if [[ ${build[0]} == buildah ]]; then
  sizes=$(buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}')
else
  sizes=$(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}')
fi
grep -E "/(operator|trainer):${tag} " <<< "$sizes" | sed 's/^/images: built /' >&2 || true
