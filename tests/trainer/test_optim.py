import contextlib
import copy
import inspect

import pytest
import torch
from torch import nn

from torchyard.trainer import optim
from torchyard.trainer.config import ConfigError
from torchyard.trainer.optim import OptimWrapper, build_optim_wrapper
from torchyard.trainer.registry import OPTIMIZERS
from torchyard.trainer.schedulers import build_param_schedulers

CPU = torch.device("cpu")


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
    expected = r"unknown key\(s\) clip_grads, lr; known: accumulative_counts, clip_grad, constructor"
    with pytest.raises(ConfigError, match=expected):
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
    build_param_schedulers({"type": "LinearLR", "start_factor": 1.0, "end": 2}, wrapper.optimizer, 2, 20, 10)

    wrapper.scale_lr(4)

    assert wrapper.get_lr() == pytest.approx(0.4)
    assert wrapper.optimizer.param_groups[0]["initial_lr"] == pytest.approx(0.4)


def test_clip_grad_by_value_bounds_every_gradient() -> None:
    model = linear_model()
    wrapper = build_optim_wrapper({"optimizer": {"type": "SGD", "lr": 1.0},
                                   "clip_grad": {"type": "value", "clip_value": 0.01}}, model, amp=False,
                                  device=CPU)
    before = [p.detach().clone() for p in model.parameters()]
    inputs, targets = batch(8)
    wrapper.update(100 * mse(model, inputs, targets))

    steps = [(b - p.detach()).abs().max().item() for b, p in zip(before, model.parameters(), strict=True)]
    assert max(steps) == pytest.approx(0.01)
    assert wrapper.last_grad_norm is None


@pytest.mark.parametrize(("clip_grad", "message"), [
    ({"type": "value"}, r"clip_grad: .*clip_value"),
    ({"max_norm": 1.0, "norm": 2}, r"clip_grad: .*'norm'.*\(by norm: max_norm, norm_type\)"),
    ({"type": "agc", "clip_factor": 0.01}, r"clip_grad.type: 'agc' is not 'norm' or 'value'"),
])
def test_bad_clip_grad_is_named(clip_grad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_optim_wrapper({"optimizer": {"type": "SGD", "lr": 0.1}, "clip_grad": clip_grad}, linear_model(),
                            amp=False, device=CPU)


@pytest.mark.parametrize(("loss_scale", "scale", "static"), [
    ("dynamic", 65536.0, None), (512.0, 512.0, 512.0),
    ({"init_scale": 256.0, "growth_interval": 10}, 256.0, None),
])
def test_amp_optim_wrapper_loss_scale(loss_scale, scale: float, static: float | None) -> None:
    wrapper = build_optim_wrapper({"type": "AmpOptimWrapper", "dtype": "float16", "loss_scale": loss_scale,
                                   "optimizer": {"type": "SGD", "lr": 0.1}}, linear_model(), amp=False,
                                  device=CPU)

    assert wrapper.scaler.get_scale() == scale and wrapper._static_scale == static


@pytest.mark.parametrize("loss_scale", ["static", -1.0, {"init": 2.0}])
def test_bad_loss_scale_is_named(loss_scale) -> None:
    with pytest.raises(ConfigError, match=r"optim_wrapper\.loss_scale: "):
        build_optim_wrapper({"type": "AmpOptimWrapper", "dtype": "float16", "loss_scale": loss_scale,
                             "optimizer": {"type": "SGD", "lr": 0.1}}, linear_model(), amp=False, device=CPU)


@pytest.mark.parametrize(("cfg", "message"), [
    ({"type": "ApexOptimWrapper"}, r"optim_wrapper.type: 'ApexOptimWrapper' is not supported"),
    ({"constructor": "LayerDecayOptimWrapperConstructor"}, r"optim_wrapper.constructor: .* is not supported"),
])
def test_wrapper_types_and_constructors_torchyard_lacks_are_refused(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_optim_wrapper({"optimizer": {"type": "SGD", "lr": 0.1}, **cfg}, linear_model(), amp=False,
                            device=CPU)

