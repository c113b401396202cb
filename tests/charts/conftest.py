"""Fixtures for the chart tests: `helm` (the binary, fetched when missing) and `render(values)` -> the
manifests `helm template` produces.

    render({"watch": {"mode": "namespaces", "namespaces": ["a", "b"]}})   # [manifest dict, ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .chart_helpers import CHART, NAMESPACE, RELEASE, ensure_tools, run_helm, values_file


@pytest.fixture(scope="session")
def helm() -> Path:
    return ensure_tools()


@pytest.fixture
def render(helm: Path, tmp_path: Path):
    """render(values, *extra helm args) -> the manifests of `helm template` (CRDs too)."""

    def render(values: dict[str, Any] | None = None, *args: str, chart: Path = CHART) -> list[dict]:
        out = run_helm(
            helm,
            "template",
            RELEASE,
            str(chart),
            "--namespace",
            NAMESPACE,
            "--include-crds",
            "--values",
            str(values_file(tmp_path, values or {})),
            *args,
        ).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    return render
