import json

import pytest

from torchyard.trainer.config import Config, ConfigError
from torchyard.trainer.hooks.profiler import ProfilerHook
from torchyard.trainer.runner import Runner

from ..runner_helpers import make_cfg


def train_with(tmp_path, **profiler_args) -> Runner:
    cfg = make_cfg(tmp_path, custom_hooks=[dict(type="ProfilerHook", **profiler_args)],
                   train_cfg=dict(by_epoch=True, max_epochs=1))
    runner = Runner(Config(cfg))
    runner.train()
    return runner


def test_the_first_iterations_are_traced_to_the_work_dir(tmp_path):
    train_with(tmp_path, by_epoch=False, profile_times=3, record_shapes=True)

    trace = json.loads((tmp_path / "profiler_trace.json").read_text())
    names = {event.get("name") for event in trace["traceEvents"]}
    assert any(name.startswith("aten::") for name in names if name), sorted(names)[:20]
    assert "ProfilerHook: 3 iterations profiled" in (tmp_path / "train.log").read_text()


def test_log_trace_logs_the_table_of_operators(tmp_path):
    train_with(tmp_path, by_epoch=False, profile_times=2, schedule=dict(wait=0, warmup=1, active=1),
               on_trace_ready=dict(type="log_trace", row_limit=5))

    log = (tmp_path / "train.log").read_text()
    assert "ProfilerHook:" in log and "Self CPU" in log
    assert not (tmp_path / "profiler_trace.json").exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(profile_times=0), "profile_times must be >= 1"),
    (dict(on_trace_ready=dict(type="wandb")), "on_trace_ready: 'wandb' is not supported"),
    (dict(activity_with_cpu=False), "profiles nothing"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ProfilerHook(**kwargs)
