#!/bin/sh
# Installs torchyard[operator] (kopf, kubernetes, prometheus-client; no torch) into a new virtual
# environment, with the pinned versions of images/constraints.txt. The RUN step of
# images/operator/Dockerfile; tests/images/test_install.py runs it the same way in a temporary venv.
#   images/operator/install.sh VENV SOURCE_DIR       (PYTHON: the interpreter, default python3)
set -eu
# pip compiles .pyc files; with SOURCE_DATE_EPOCH set they are checked-hash ones (PEP 552), the same bytes
# on every build, so the same inputs give the same image layer
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"
venv="$1"
src="$2"
constraints="$(dirname "$0")/../constraints.txt"
"${PYTHON:-python3}" -I -m venv "$venv"  # -I: a source tree in the working directory would shadow the standard library (operator/)
"$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet \
    --constraint "$constraints" "${src}[operator]"
# the operator never imports torch: make sure it did not come in
if "$venv/bin/python" -I -c "import torch" 2>/dev/null; then  # -I: the source tree is not on sys.path
  echo "install.sh: torch got into the operator environment" >&2
  exit 1
fi
"$venv/bin/torchyard" operator run --help >/dev/null
