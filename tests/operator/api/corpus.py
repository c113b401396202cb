"""The corpus of malformed specs (malformed_specs.yaml): each case breaks one field of a valid job and
names the field path its error must mention. tests/faults feeds the same cases to the CLI and the operator.
"""

from __future__ import annotations

from pathlib import Path

import yaml

CORPUS = yaml.safe_load((Path(__file__).parent / "malformed_specs.yaml").read_text())


def walk(data: dict, parts: list[str]) -> dict:
    for part in parts:
        data = data.setdefault(part, {})
    return data
