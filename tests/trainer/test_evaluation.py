import pytest
import torch
from sklearn.metrics import accuracy_score, top_k_accuracy_score

from torchyard.trainer import evaluation
from torchyard.trainer.config import ConfigError
from torchyard.trainer.dist import DistEnv
from torchyard.trainer.evaluation import BaseMetric, Evaluator
from torchyard.trainer.metrics.classification import Accuracy
from torchyard.trainer.registry import METRICS

ONE_PROCESS = DistEnv()


def random_batches(n: int = 50, classes: int = 10, batch_size: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator)
    targets = torch.randint(classes, (n,), generator=generator)
    batches = [({"index": torch.arange(start, min(start + batch_size, n)),
                 "targets": targets[start:start + batch_size]}, logits[start:start + batch_size])
               for start in range(0, n, batch_size)]
    return logits, targets, batches


def evaluate(metric: BaseMetric, batches) -> dict[str, float]:
    evaluator = Evaluator([metric])
    for batch, outputs in batches:
        evaluator.process(batch, outputs)
    return evaluator.evaluate(ONE_PROCESS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_matches_sklearn(seed: int) -> None:
    logits, targets, batches = random_batches(seed=seed)

    results = evaluate(Accuracy(topk=(1, 3)), batches)

    assert results.keys() == {"accuracy/top1", "accuracy/top3"}
    assert results["accuracy/top1"] == pytest.approx(100 * accuracy_score(targets, logits.argmax(dim=1)))
    assert results["accuracy/top3"] == pytest.approx(
        100 * top_k_accuracy_score(targets, logits.numpy(), k=3, labels=list(range(10))))
    assert results["accuracy/top3"] >= results["accuracy/top1"]


def test_accuracy_of_perfect_and_wrong_predictions() -> None:
    targets = torch.tensor([0, 1, 2, 1])
    batch = {"index": torch.arange(4), "targets": targets}
    perfect = torch.nn.functional.one_hot(targets, 3).float()

    assert evaluate(Accuracy(), [(batch, perfect)]) == {"accuracy/top1": 100.0}
    assert evaluate(Accuracy(topk=1), [(batch, -perfect)]) == {"accuracy/top1": 0.0}


def test_accuracy_topk_larger_than_the_number_of_classes_counts_every_class() -> None:
    batch = {"index": torch.arange(3), "targets": torch.tensor([0, 1, 1])}

    results = evaluate(Accuracy(topk=(1, 5)), [(batch, torch.tensor([[2.0, 1.0], [2.0, 1.0], [0.0, 1.0]]))])

    assert results == {"accuracy/top1": pytest.approx(200 / 3), "accuracy/top5": 100.0}


def test_records_with_duplicate_indices_count_once() -> None:
    # A padded shard repeats index 0; it must not count twice (here: a wrong prediction for sample 0).
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    batches = [({"index": torch.tensor([0, 1]), "targets": torch.tensor([0, 0])}, logits[:2]),
               ({"index": torch.tensor([2, 0]), "targets": torch.tensor([0, 0])}, logits[[2, 0]])]

    assert evaluate(Accuracy(), batches) == {"accuracy/top1": pytest.approx(200 / 3)}


def test_records_are_cleared_after_evaluate() -> None:
    _, _, batches = random_batches(seed=3)
    metric = Accuracy()
    evaluator = Evaluator([metric])
    for batch, outputs in batches:
        evaluator.process(batch, outputs)
    evaluator.evaluate(ONE_PROCESS)

    assert metric.records == []
    evaluator.process(*batches[0])
    assert evaluator.evaluate(ONE_PROCESS) == evaluate(Accuracy(), batches[:1])


def test_two_padded_shards_give_the_one_process_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    # 5 samples on 2 ranks, DistributedSampler-style: rank 1 gets sample 0 again as padding.
    _, _, batches = random_batches(n=5, classes=4, batch_size=5, seed=4)
    ((batch, outputs),) = batches
    shards = {0: [0, 2, 4], 1: [1, 3, 0]}
    per_rank = []
    for rank in (0, 1):
        metric = Accuracy(topk=(1, 2))
        index = torch.tensor(shards[rank])
        metric.process({"index": index, "targets": batch["targets"][index]}, outputs[index])
        per_rank.append(metric)

    def fake_all_gather_object(out: list, records: list) -> None:
        out[:] = [metric.records for metric in per_rank]

    monkeypatch.setattr(evaluation.dist, "all_gather_object", fake_all_gather_object)
    results = Evaluator([per_rank[0]]).evaluate(DistEnv(rank=0, world_size=2))

    assert results == evaluate(Accuracy(topk=(1, 2)), batches)


@pytest.mark.parametrize(("prefix", "key"), [
    (None, "accuracy/top1"),
    ("FID-Full-50k", "FID-Full-50k/top1"),
    ("val/acc", "val/acc/top1"),
    ("", "top1"),
])
def test_prefix_is_kept_verbatim(prefix: str | None, key: str) -> None:
    _, _, batches = random_batches()

    assert list(evaluate(Accuracy(prefix=prefix), batches)) == [key]


def test_evaluator_combines_the_keys_of_several_metrics() -> None:
    _, _, batches = random_batches()
    cfgs = [{"type": "Accuracy", "topk": (1, 5)}, {"type": "Accuracy", "prefix": "again"}]
    evaluator = Evaluator.build(cfgs, where="val_evaluator")
    for batch, outputs in batches:
        evaluator.process(batch, outputs)

    results = evaluator.evaluate(ONE_PROCESS)

    assert list(results) == ["accuracy/top1", "accuracy/top5", "again/top1"]
    assert results["again/top1"] == results["accuracy/top1"]


def test_evaluator_builds_a_single_metric_config() -> None:
    evaluator = Evaluator.build({"type": "Accuracy", "topk": 3}, where="test_evaluator")

    assert [type(m) for m in evaluator.metrics] == [Accuracy] and evaluator.metrics[0].topk == (3,)
    assert METRICS.get("Accuracy") is Accuracy


def test_evaluator_without_metrics_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="evaluator: needs at least one metric"):
        Evaluator([])
    with pytest.raises(ConfigError, match="needs at least one metric"):
        Evaluator.build([], where="val_evaluator")


def test_evaluator_unknown_metric_names_the_list_entry() -> None:
    with pytest.raises(ConfigError, match=r"^val_evaluator\[1\]\.type: 'Acuracy' .*Did you mean 'Accuracy'"):
        Evaluator.build([{"type": "Accuracy"}, {"type": "Acuracy"}], where="val_evaluator")
