#!/bin/sh
# Installs torchyard[trainer] (torch 2.13.0 and friends) into a new virtual environment, with the pinned
# versions of images/constraints.txt. The RUN steps of images/trainer/Dockerfile;
# tests/images/test_install.py runs it the same way in a temporary venv.
#   images/trainer/install.sh VENV SOURCE_DIR       (PYTHON: the interpreter, default python3)
#   images/trainer/install.sh VENV                  torch alone: the Dockerfile's first step, a layer of GBs
#                                                   that a change of the sources does not rebuild
# TORCH_INDEX_URL: the index torch comes from, e.g. https://download.pytorch.org/whl/cpu (the image's
# default: CPU wheels, no CUDA libraries) or https://download.pytorch.org/whl/cu126; empty: pip's own
# configuration. torch is always pinned: a bare `torch` pulls gigabytes of CUDA wheels.
set -eu
# pip compiles .pyc files; with SOURCE_DATE_EPOCH set they are checked-hash ones (PEP 552), the same bytes
# on every build, so the same inputs give the same image layer
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"
venv="$1"
src="${2:-}"
constraints="$(dirname "$0")/../constraints.txt"
pip_install() {
  "$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet --constraint "$constraints" "$@"
}
# -I: a source tree in the working directory would shadow the standard library (operator/)
[ -x "$venv/bin/pip" ] || "${PYTHON:-python3}" -I -m venv "$venv"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  pip_install --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
else
  pip_install "torch==2.13.0"
fi
[ -n "$src" ] || exit 0
pip_install "${src}[trainer]"
"$venv/bin/torchyard-train" --help >/dev/null
