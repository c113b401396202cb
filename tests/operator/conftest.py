"""Shared fixtures for the operator tests.

Golden files live in tests/operator/golden/. After an intended change to a renderer, regenerate them with
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/operator
and review the diff (git diff tests/operator/golden) before committing.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from torchyard.operator.api.spec import load_job

from .jobs import TEST, TRAIN, make

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"

@pytest.fixture
def train_job():
    return lambda **spec: load_job(make(TRAIN, **spec))


@pytest.fixture
def test_job():
    return lambda **spec: load_job(make(TEST, **spec))


@pytest.fixture
def golden():
    """golden(name, text): compare with tests/operator/golden/<name>, or rewrite it under UPDATE_GOLDEN=1."""

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if os.environ.get("UPDATE_GOLDEN") == "1":
            path.write_text(text)
            return
        assert path.exists(), f"no golden file {path}; create it with UPDATE_GOLDEN=1 and review it"
        assert text == path.read_text(), f"{name} changed; if intended, rerun with UPDATE_GOLDEN=1 and review"

    return check


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def base_train() -> dict:
    return copy.deepcopy(TRAIN)


@pytest.fixture
def base_test() -> dict:
    return copy.deepcopy(TEST)
