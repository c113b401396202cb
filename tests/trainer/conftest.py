import pytest

from .runner_helpers import FAULT_HOOKS


@pytest.fixture
def fault_hooks(tmp_path) -> str:
    """FAULT_HOOKS as a module beside the configs: `write_config(..., fault_hooks)` imports it."""
    (tmp_path / "fault_hooks.py").write_text(FAULT_HOOKS)
    return "fault_hooks"
