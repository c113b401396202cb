import pytest

import torchyard.trainer.runner  # noqa: F401 - registers the built-in hooks, as a run does
from torchyard.trainer.config import ConfigError
from torchyard.trainer.hooks import build_hooks


def test_priority_by_name_or_number_orders_hooks_and_ties_keep_the_configured_order() -> None:
    hooks = build_hooks(dict(logger=dict(type="LoggerHook"), checkpoint=dict(type="CheckpointHook")), [
        dict(type="EmptyCacheHook", priority="VERY_LOW"),
        dict(type="SyncBuffersHook", priority=5),
        dict(type="IterTimerHook", priority="normal"),
        dict(type="DistSamplerSeedHook"),
    ])

    assert [(type(hook).__name__, hook.priority) for hook in hooks] == [
        ("SyncBuffersHook", 5), ("LoggerHook", 10), ("IterTimerHook", 50), ("DistSamplerSeedHook", 50),
        ("CheckpointHook", 70), ("EmptyCacheHook", 90)]


@pytest.mark.parametrize("priority", ["SOMETIMES", 101, -1, 2.5])
def test_a_bad_priority_names_the_hook(priority) -> None:
    expected = r"custom_hooks\[0\].priority: .* is not a priority; use 0 \(first\)"
    with pytest.raises(ConfigError, match=expected):
        build_hooks(None, [dict(type="EmptyCacheHook", priority=priority)])
