import contextlib
import copy
import inspect
import math

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from torchyard.trainer import optim
from torchyard.trainer.config import ConfigError
from torchyard.trainer.optim import OptimWrapper, build_optim_wrapper, build_param_schedulers
from torchyard.trainer.registry import OPTIMIZERS, PARAM_SCHEDULERS

CPU = torch.device("cpu")
# Schedulers are stepped here without a real training step in between; torch warns about that order.
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")


def linear_model(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(6, 3)


def batch(size: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 6, generator=generator), torch.randn(size, 3, generator=generator)


def mse(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((model(inputs) - targets) ** 2).mean()


def sgd_wrapper(model: nn.Module, **kwargs) -> OptimWrapper:
    return build_optim_wrapper({"optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9}, **kwargs}, model,
                               amp=False, device=CPU)


# ---- registration ------------------------------------------------------------------------------------


def test_every_torch_optimizer_is_registered() -> None:
    torch_optimizers = {name for name, cls in vars(torch.optim).items()
                        if name in torch.optim.__all__ and name != "Optimizer"
                        and inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)}

    assert {"SGD", "Adam", "AdamW", "LBFGS"} <= torch_optimizers
    assert torch_optimizers <= set(OPTIMIZERS.names())  # other modules may register their own as well
    assert "Optimizer" not in OPTIMIZERS
    assert all(OPTIMIZERS.get(name) is getattr(torch.optim, name) for name in torch_optimizers)


def test_every_torch_lr_scheduler_is_registered() -> None:
    torch_schedulers = {name for name in lr_scheduler.__all__
                        if inspect.isclass(getattr(lr_scheduler, name)) and name != "LRScheduler"}

    unbuildable = {"ReduceLROnPlateau", "SequentialLR", "ChainedScheduler"}
    assert {"LinearLR", "CosineAnnealingLR", "OneCycleLR"} | unbuildable <= torch_schedulers
    assert torch_schedulers - unbuildable <= set(PARAM_SCHEDULERS.names())
    assert not ({"LRScheduler", "_LRScheduler"} | unbuildable) & set(PARAM_SCHEDULERS.names())
    assert all(PARAM_SCHEDULERS.get(name) is getattr(lr_scheduler, name)
               for name in torch_schedulers - unbuildable)


# ---- build_optim_wrapper -----------------------------------------------------------------------------


def test_build_optim_wrapper_builds_the_configured_optimizer_over_trainable_parameters() -> None:
    model = linear_model()
    model.bias.requires_grad_(False)

    wrapper = build_optim_wrapper({"type": "OptimWrapper", "optimizer": {"type": "AdamW", "lr": 0.01},
                                   "accumulative_counts": 2}, model, amp=False, device=CPU)

    assert isinstance(wrapper.optimizer, torch.optim.AdamW)
    assert wrapper.get_lr() == 0.01 and wrapper.accumulative_counts == 2
    assert [p for g in wrapper.optimizer.param_groups for p in g["params"]] == [model.weight]
    assert wrapper.amp_dtype is None and wrapper.scaler is None


def test_build_optim_wrapper_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) clip_grads, lr; known: optimizer, clip_grad"):
        build_optim_wrapper({"optimizer": {"type": "SGD", "lr": 0.1}, "lr": 0.1, "clip_grads": {}},
                            linear_model(), amp=False, device=CPU)


def test_build_optim_wrapper_needs_an_optimizer() -> None:
    with pytest.raises(ConfigError, match="optim_wrapper: needs an 'optimizer'"):
        build_optim_wrapper({"clip_grad": None}, linear_model(), amp=False, device=CPU)


def test_build_optim_wrapper_wrong_optimizer_argument_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"optim_wrapper\.optimizer: wrong arguments for SGD"):
        build_optim_wrapper({"optimizer": {"type": "SGD", "lr": 0.1, "momentun": 0.9}}, linear_model(),
                            amp=False, device=CPU)


def test_accumulative_counts_below_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="accumulative_counts must be >= 1, got 0"):
        sgd_wrapper(linear_model(), accumulative_counts=0)


# ---- accumulation, clipping, flush -------------------------------------------------------------------


def test_accumulating_four_micro_batches_equals_one_step_on_the_whole_batch() -> None:
    inputs, targets = batch(4 * 5)
    big, accumulated = linear_model(), linear_model()
    big_wrapper = sgd_wrapper(big)
    accumulated_wrapper = sgd_wrapper(accumulated, accumulative_counts=4)

    for _ in range(2):  # two windows, so momentum is involved too
        assert big_wrapper.update(mse(big, inputs, targets))
        stepped = [accumulated_wrapper.update(mse(accumulated, x, y))
                   for x, y in zip(inputs.split(5), targets.split(5), strict=True)]
        assert stepped == [False, False, False, True]

    assert not torch.equal(big.weight, linear_model().weight)  # it did train
    for a, b in zip(big.parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_gradients_are_cleared_after_each_step() -> None:
    model = linear_model()
    wrapper = sgd_wrapper(model, accumulative_counts=2)
    inputs, targets = batch(4)

    wrapper.update(mse(model, inputs, targets))
    assert model.weight.grad is not None and not wrapper.at_boundary
    wrapper.update(mse(model, inputs, targets))

    assert model.weight.grad is None and wrapper.at_boundary


def test_clip_grad_limits_the_gradient_norm() -> None:
    model = linear_model()
    before = [p.detach().clone() for p in model.parameters()]
    wrapper = build_optim_wrapper({"optimizer": {"type": "SGD", "lr": 1.0}, "clip_grad": {"max_norm": 0.5}},
                                  model, amp=False, device=CPU)
    inputs, targets = batch(8)

    wrapper.update(1000 * mse(model, inputs, targets))

    assert wrapper.last_grad_norm > 100  # reported before clipping
    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters(), strict=True)])
    assert step.norm().item() == pytest.approx(0.5, rel=1e-4)  # lr=1: the step is the clipped gradient


def test_without_clip_grad_the_norm_is_not_limited() -> None:
    model = linear_model()
    before = [p.detach().clone() for p in model.parameters()]
    wrapper = build_optim_wrapper({"optimizer": {"type": "SGD", "lr": 1.0}}, model, amp=False, device=CPU)

    wrapper.update(1000 * mse(model, *batch(8)))

    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters(), strict=True)])
    assert step.norm().item() > 100 and wrapper.last_grad_norm is None


def test_flush_applies_a_partial_window_like_a_step_on_the_batches_seen() -> None:
    inputs, targets = batch(2 * 5)
    big, accumulated = linear_model(), linear_model()
    big_wrapper = sgd_wrapper(big)
    accumulated_wrapper = sgd_wrapper(accumulated, accumulative_counts=4)

    big_wrapper.update(mse(big, inputs, targets))
    for x, y in zip(inputs.split(5), targets.split(5), strict=True):
        assert not accumulated_wrapper.update(mse(accumulated, x, y))
    accumulated_wrapper.flush()

    assert accumulated_wrapper.at_boundary and accumulated.weight.grad is None
    for a, b in zip(big.parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_flush_on_an_empty_window_does_nothing() -> None:
    model = linear_model()
    wrapper = sgd_wrapper(model, accumulative_counts=4)
    wrapper.update(mse(model, *batch(4)))
    wrapper.flush()
    after_first = [p.detach().clone() for p in model.parameters()]
    state = wrapper.optimizer.state_dict()

    wrapper.flush()

    assert all(torch.equal(a, p) for a, p in zip(after_first, model.parameters(), strict=True))
    assert wrapper.optimizer.state_dict()["state"].keys() == state["state"].keys()


class FakeDDP(nn.Module):
    """Just enough of DistributedDataParallel: a module with ``no_sync`` that records its use."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.no_sync_calls = 0

    @contextlib.contextmanager
    def no_sync(self):
        self.no_sync_calls += 1
        yield

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def test_sync_context_skips_the_all_reduce_except_on_the_stepping_micro_batch() -> None:
    ddp = FakeDDP(linear_model())
    wrapper = sgd_wrapper(ddp.module, accumulative_counts=3)
    inputs, targets = batch(4)

    for _ in range(3):
        before = ddp.no_sync_calls
        with wrapper.sync_context(ddp):
            loss = mse(ddp, inputs, targets)
        stepped = wrapper.update(loss)
        assert (ddp.no_sync_calls - before == 1) != stepped
    assert ddp.no_sync_calls == 2


def test_flush_all_reduces_gradients_that_no_sync_left_local(monkeypatch: pytest.MonkeyPatch) -> None:
    # A partial window ran entirely under no_sync; flush must average over the ranks before stepping.
    reduced = []

    def fake_all_reduce(tensor: torch.Tensor) -> None:
        reduced.append(tensor)
        tensor.mul_(2)  # the sum over two ranks holding the same gradient

    monkeypatch.setattr(optim.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(optim.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(optim.dist, "all_reduce", fake_all_reduce)
    inputs, targets = batch(2 * 5)
    reference, ddp = linear_model(), FakeDDP(linear_model())
    sgd_wrapper(reference).update(mse(reference, inputs, targets))
    wrapper = sgd_wrapper(ddp.module, accumulative_counts=4)
    for x, y in zip(inputs.split(5), targets.split(5), strict=True):
        with wrapper.sync_context(ddp):
            loss = mse(ddp, x, y)
        wrapper.update(loss)

    wrapper.flush()

    assert len(reduced) == 2  # weight and bias
    for a, b in zip(reference.parameters(), ddp.module.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_flush_does_not_all_reduce_a_window_that_never_used_no_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optim.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(optim.dist, "all_reduce", lambda tensor: pytest.fail("all_reduce called"))
    model = linear_model()
    wrapper = sgd_wrapper(model, accumulative_counts=4)

    wrapper.update(mse(model, *batch(4)))
    wrapper.flush()

    assert wrapper.at_boundary


# ---- AMP ---------------------------------------------------------------------------------------------


def test_bf16_autocast_on_cpu_runs_without_a_grad_scaler() -> None:
    model = linear_model()
    before = model.weight.detach().clone()
    wrapper = build_optim_wrapper({"optimizer": {"type": "SGD", "lr": 0.1}}, model, amp=True, device=CPU)
    inputs, targets = batch(8)

    with wrapper.autocast():
        outputs = model(inputs)
    wrapper.update(((outputs.float() - targets) ** 2).mean())

    assert wrapper.amp_dtype == torch.bfloat16 and wrapper.scaler is None
    assert outputs.dtype == torch.bfloat16
    assert model.weight.dtype == torch.float32 and not torch.equal(model.weight, before)
    assert "scaler" not in wrapper.state_dict()


def test_amp_optim_wrapper_type_turns_amp_on() -> None:
    wrapper = build_optim_wrapper({"type": "AmpOptimWrapper", "optimizer": {"type": "SGD", "lr": 0.1}},
                                  linear_model(), amp=False, device=CPU)

    assert wrapper.amp_dtype == torch.bfloat16


def test_without_amp_autocast_is_a_no_op() -> None:
    model = linear_model()
    wrapper = sgd_wrapper(model)

    with wrapper.autocast():
        assert model(batch(2)[0]).dtype == torch.float32


# ---- state_dict --------------------------------------------------------------------------------------


def test_optim_wrapper_state_dict_round_trip_continues_identically() -> None:
    inputs, targets = batch(8)
    model = linear_model()
    wrapper = build_optim_wrapper({"optimizer": {"type": "Adam", "lr": 0.01}}, model, amp=False, device=CPU)
    for _ in range(3):
        wrapper.update(mse(model, inputs, targets))
    resumed_model = linear_model()
    resumed_model.load_state_dict(model.state_dict())
    resumed = build_optim_wrapper({"optimizer": {"type": "Adam", "lr": 0.5}}, resumed_model, amp=False,
                                  device=CPU)

    resumed.load_state_dict(copy.deepcopy(wrapper.state_dict()))  # a copy, as after saving and loading

    assert resumed.get_lr() == 0.01
    wrapper.update(mse(model, inputs, targets))
    resumed.update(mse(resumed_model, inputs, targets))
    for a, b in zip(model.parameters(), resumed_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_scale_lr_scales_lr_and_initial_lr() -> None:
    model = linear_model()
    wrapper = sgd_wrapper(model)
    build_param_schedulers({"type": "LinearLR", "start_factor": 1.0, "end": 2}, wrapper.optimizer, 2, 20)

    wrapper.scale_lr(4)

    assert wrapper.get_lr() == pytest.approx(0.4)
    assert wrapper.optimizer.param_groups[0]["initial_lr"] == pytest.approx(0.4)


# ---- param schedulers --------------------------------------------------------------------------------


def run_schedule(cfgs: list[dict], max_epochs: int, iters_per_epoch: int, lr: float = 1.0) -> list[list]:
    """The lr each iteration trains with, per epoch, stepping schedulers the way loops.run_train_loop does."""
    optimizer = torch.optim.SGD(linear_model().parameters(), lr=lr)
    schedulers = build_param_schedulers(cfgs, optimizer, max_epochs, max_epochs * iters_per_epoch)
    lrs, it = [], 0
    for epoch in range(max_epochs):
        lrs.append([])
        for _ in range(iters_per_epoch):
            lrs[-1].append(optimizer.param_groups[0]["lr"])
            it += 1
            for s in schedulers:
                if not s.by_epoch:
                    s.step(it - 1)
        for s in schedulers:
            if s.by_epoch:
                s.step(epoch)
    return lrs


def test_linear_warmup_by_iter_then_cosine_by_epoch_matches_the_closed_form() -> None:
    max_epochs, iters_per_epoch, start = 4, 3, 0.1
    lrs = run_schedule([
        {"type": "LinearLR", "start_factor": start, "by_epoch": False, "begin": 0, "end": 5},
        {"type": "CosineAnnealingLR", "by_epoch": True},
    ], max_epochs, iters_per_epoch, lr=0.2)

    def expected(epoch: int, inner: int) -> float:
        it = epoch * iters_per_epoch + inner
        warmup = start + (1 - start) * min(it, 5) / 5
        cosine = (1 + math.cos(math.pi * epoch / max_epochs)) / 2
        return 0.2 * warmup * cosine

    assert lrs[0] == pytest.approx([0.02, 0.056, 0.092])
    assert lrs == [[pytest.approx(expected(e, i), rel=1e-9) for i in range(iters_per_epoch)]
                   for e in range(max_epochs)]


def test_scheduler_with_begin_acts_only_from_begin() -> None:
    lrs = run_schedule([{"type": "LinearLR", "start_factor": 0.1, "begin": 2, "end": 4},
                        {"type": "StepLR", "step_size": 2, "gamma": 0.5, "begin": 1}], max_epochs=8,
                       iters_per_epoch=1)

    # LinearLR: 1, 1, then 0.1, 0.55, then 1; StepLR halves every 2 epochs counted from epoch 1.
    assert [lr for (lr,) in lrs] == pytest.approx([1.0, 1.0, 0.1, 0.275, 0.5, 0.25, 0.25, 0.125])


@pytest.mark.parametrize("cfg", [
    {"type": "LinearLR", "start_factor": 0.2},
    {"type": "ConstantLR", "factor": 0.5},
    {"type": "ExponentialLR", "gamma": 0.9},
    {"type": "CosineAnnealingLR"},
    {"type": "PolynomialLR", "power": 2.0},
    {"type": "MultiStepLR", "milestones": [1, 3]},
    {"type": "OneCycleLR", "max_lr": 2.0, "total_steps": 20},
], ids=lambda cfg: cfg["type"])
def test_scheduler_with_begin_is_the_same_schedule_delayed(cfg: dict) -> None:
    from_zero = run_schedule([{**cfg, "begin": 0, "end": 8}], max_epochs=12, iters_per_epoch=1)
    from_three = run_schedule([{**cfg, "begin": 3, "end": 11}], max_epochs=12, iters_per_epoch=1)

    assert from_three[:3] == [[1.0]] * 3
    assert [lr for (lr,) in from_three[3:]] == pytest.approx([lr for (lr,) in from_zero[:9]])


def test_scheduler_stops_at_end() -> None:
    lrs = run_schedule([{"type": "ExponentialLR", "gamma": 0.5, "end": 3}], max_epochs=6, iters_per_epoch=1)

    assert [lr for (lr,) in lrs] == pytest.approx([1.0, 0.5, 0.25, 0.125, 0.125, 0.125])


def test_length_defaults_come_from_begin_and_end() -> None:
    optimizer = torch.optim.SGD(linear_model().parameters(), lr=1.0)

    cosine, linear = build_param_schedulers(
        [{"type": "CosineAnnealingLR", "begin": 2}, {"type": "LinearLR", "by_epoch": False, "end": 7}],
        optimizer, max_epochs=10, max_iters=100)

    assert cosine.scheduler.T_max == 8 and (cosine.begin, cosine.end) == (2, 10)
    assert linear.scheduler.total_iters == 7 and not linear.by_epoch


def test_explicit_length_wins_over_begin_and_end() -> None:
    optimizer = torch.optim.SGD(linear_model().parameters(), lr=1.0)

    (cosine,) = build_param_schedulers({"type": "CosineAnnealingLR", "T_max": 3, "eta_min": 0.01}, optimizer,
                                       max_epochs=10, max_iters=100)

    assert cosine.scheduler.T_max == 3 and cosine.scheduler.eta_min == 0.01


@pytest.mark.parametrize(("begin", "end"), [(5, 5), (6, 5), (-1, 3)])
def test_scheduler_needs_begin_before_end(begin: int, end: int) -> None:
    optimizer = torch.optim.SGD(linear_model().parameters(), lr=1.0)

    expected = rf"param_scheduler\[1\]: needs 0 <= begin < end, got begin={begin}, end={end}"
    with pytest.raises(ConfigError, match=expected):
        build_param_schedulers([{"type": "ConstantLR"}, {"type": "LinearLR", "begin": begin, "end": end}],
                               optimizer, 10, 100)


def test_unknown_scheduler_names_the_list_entry() -> None:
    optimizer = torch.optim.SGD(linear_model().parameters(), lr=1.0)

    expected = r"param_scheduler\[0\]\.type: 'CosineAnnealing' .*Did you mean 'CosineAnnealingLR'\?"
    with pytest.raises(ConfigError, match=expected):
        build_param_schedulers([{"type": "CosineAnnealing"}], optimizer, 10, 100)


def test_no_param_scheduler_gives_none() -> None:
    assert build_param_schedulers(None, torch.optim.SGD(linear_model().parameters(), lr=1.0), 1, 1) == []


def test_param_scheduler_state_dict_round_trip() -> None:
    cfg = [{"type": "LinearLR", "start_factor": 0.1, "by_epoch": False, "end": 10}]
    optimizer = torch.optim.SGD(linear_model().parameters(), lr=1.0)
    (scheduler,) = build_param_schedulers(cfg, optimizer, 2, 20)
    for t in range(4):
        scheduler.step(t)
    resumed_optimizer = torch.optim.SGD(linear_model().parameters(), lr=1.0)
    (resumed,) = build_param_schedulers(cfg, resumed_optimizer, 2, 20)

    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    scheduler.step(4)
    resumed.step(4)

    assert resumed.scheduler.last_epoch == 5
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])
