from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from torchyard.trainer.hooks.runtime import EmptyCacheHook, SyncBuffersHook


def _sync_on_rank(rank: int, store_path: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    try:
        model = nn.BatchNorm1d(3)
        model.running_mean.fill_(float(rank))
        model.num_batches_tracked.fill_(10 + rank)
        runner = SimpleNamespace(env=SimpleNamespace(distributed=True, world_size=2), unwrapped_model=model)
        SyncBuffersHook().after_train_epoch(runner)
        results[rank] = (model.running_mean.tolist(), int(model.num_batches_tracked))
    finally:
        dist.destroy_process_group()


def test_sync_buffers_averages_floating_buffers_over_the_ranks(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        # fork: a spawned child could not import this test module
        mp.start_processes(_sync_on_rank, args=(str(tmp_path / "store"), results), nprocs=2,
                           start_method="fork")
        assert dict(results) == {0: ([0.5] * 3, 10), 1: ([0.5] * 3, 11)}  # counters are left alone


def test_sync_buffers_does_nothing_in_one_process():
    model = nn.BatchNorm1d(2)
    model.running_mean.fill_(3.0)
    runner = SimpleNamespace(env=SimpleNamespace(distributed=False), unwrapped_model=model)
    SyncBuffersHook().before_val(runner)
    assert model.running_mean.tolist() == [3.0, 3.0]


def test_empty_cache_runs_where_configured_without_cuda():
    hook = EmptyCacheHook(before_epoch=True, after_iter=True)
    runner = SimpleNamespace()
    hook.before_train_epoch(runner)
    hook.after_train_iter(runner, {})
    hook.after_train_epoch(runner)
    assert not torch.cuda.is_initialized()
