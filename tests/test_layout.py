"""The architecture as the code must keep it, computed from the packages (no hand-kept module lists):

- the control plane (torchyard.operator, torchyard.contract) never imports torch, and the data plane
  (torchyard.trainer) never imports kopf or a Kubernetes client;
- the two backends (operator/kube, operator/slurm) never import each other, and trainer and operator share
  formats only through torchyard.contract (the operator may use the trainer's torch-free config parser);
- no folder of the control plane holds more than MAX_MODULES modules.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import torchyard.contract
import torchyard.operator
import torchyard.trainer

REPO = Path(__file__).resolve().parents[1]
MAX_MODULES = 12
OPERATOR_MAY_IMPORT_FROM_TRAINER = {
    "torchyard.trainer.config",  # the torch-free config language: the API validates cfgOptions with it
    "torchyard.trainer.tools.cli",  # `torchyard tools` hands over to the trainer's tools when called
}


def modules(package) -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + "."))


def imports(module: str) -> set[str]:
    """The torchyard modules `module` imports anywhere in its source (also inside functions)."""
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torchyard"):
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("torchyard")}
    return found


def _importing_all(names: list[str], forbidden: tuple[str, ...]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {forbidden!r} if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_control_plane_never_imports_torch():
    names = modules(torchyard.operator) + modules(torchyard.contract)
    assert len(names) > 30  # the walk found the packages, not an empty path
    assert _importing_all(names, ("torch",)) == []


def test_the_data_plane_never_imports_kopf_or_kubernetes():
    names = [name for name in modules(torchyard.trainer) if not name.endswith("__main__")]
    assert _importing_all(names, ("kopf", "kubernetes", "kubernetes_asyncio", "aiohttp")) == []


@pytest.mark.parametrize(("one", "other"), [("kube", "slurm"), ("slurm", "kube")])
def test_the_backends_do_not_import_each_other(one, other):
    prefix = f"torchyard.operator.{one}."
    offenders = {
        name: sorted(i for i in imports(name) if i.startswith(f"torchyard.operator.{other}"))
        for name in modules(torchyard.operator)
        if name.startswith(prefix)
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_trainer_and_operator_share_formats_only_through_the_contract():
    trainer_to_operator = {
        name: sorted(i for i in imports(name) if i.startswith("torchyard.operator"))
        for name in modules(torchyard.trainer)
    }
    assert {name: found for name, found in trainer_to_operator.items() if found} == {}
    operator_to_trainer = {
        name: sorted(
            i
            for i in imports(name)
            if i.startswith("torchyard.trainer")
            and not any(i.startswith(allowed) for allowed in OPERATOR_MAY_IMPORT_FROM_TRAINER)
        )
        for name in modules(torchyard.operator)
    }
    assert {name: found for name, found in operator_to_trainer.items() if found} == {}


def test_no_control_plane_folder_has_more_than_a_dozen_modules():
    crowded = {}
    for root in ("contract", "operator"):
        for folder in [REPO / root, *(p for p in (REPO / root).rglob("*") if p.is_dir())]:
            count = len([p for p in folder.glob("*.py") if p.name != "__init__.py"])
            if count > MAX_MODULES:
                crowded[str(folder.relative_to(REPO))] = count
    assert crowded == {}


@pytest.mark.parametrize("name", ["torchyard.operator.api", "torchyard.operator.errors"])
def test_the_public_api_is_declared_and_documented(name):
    module = importlib.import_module(name)
    assert (module.__doc__ or "").strip() and module.__all__
    for public in module.__all__:
        value = getattr(module, public)  # AttributeError: __all__ names something that is not there
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{public} has no docstring"
