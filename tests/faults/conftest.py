"""Fault injection and the bad-input corpus: real processes, real signals, real full disks.

The helpers of tests/trainer/test_runner.py (configs, fault hooks, state comparison) and of
tests/operator (the dev-cluster processes, the in-process operator harness) are reused, not copied.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for folder in ("faults", "trainer", "operator"):
    if str(TESTS / folder) not in sys.path:
        sys.path.insert(0, str(TESTS / folder))
