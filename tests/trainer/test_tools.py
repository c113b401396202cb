"""The analysis tools (count-params, publish-model, plot-logs, tsne) on a tiny trained digits work dir."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from torchyard.contract import exitcodes
from torchyard.trainer.checkpoint import resolve_checkpoint
from torchyard.trainer.config import Config, ConfigError
from torchyard.trainer.models import DigitsCNN, DigitsMLP
from torchyard.trainer.runner import Runner
from torchyard.trainer.tools.cli import main
from torchyard.trainer.tools.plot_logs import read_curves

REPO = Path(__file__).resolve().parents[2]


def digits_cfg(work_dir: Path, **overrides) -> dict:
    cfg = dict(
        work_dir=str(work_dir),
        model=dict(type="DigitsMLP", hidden=16),
        train_dataloader=dict(batch_size=32, dataset=dict(type="DigitsDataset", split="train")),
        val_dataloader=dict(batch_size=128, dataset=dict(type="DigitsDataset", split="val")),
        test_dataloader=dict(batch_size=128, dataset=dict(type="DigitsDataset", split="val")),
        val_evaluator=dict(type="Accuracy"),
        test_evaluator=dict(type="Accuracy"),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=5)),
        randomness=dict(seed=0),
    )
    cfg.update(overrides)
    return cfg


def train(cfg: dict) -> dict:
    runner = Runner(Config(cfg))
    try:
        return runner.train()
    finally:
        runner.close()


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    """A digits MLP trained for 3 epochs: checkpoints, scalars.jsonl and its config.py."""
    work_dir = tmp_path_factory.mktemp("digits")
    train(digits_cfg(work_dir))
    return work_dir


def run_tool(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- count-params ------------------------------------------------------------------------------------------

def test_count_params_prints_the_total_and_each_module(capsys, work_dir):
    code, out, _ = run_tool(capsys, "count-params", work_dir / "config.py", "--depth", "2")
    assert code == exitcodes.SUCCESS
    total = 64 * 16 + 16 + 16 * 10 + 10
    assert re.search(rf"^\(total\)\s+DigitsMLP\s+{total:,}\s+{total:,}$", out, re.MULTILINE), out
    assert re.search(r"^net\.1\s+Linear\s+1,040\s+1,040$", out, re.MULTILINE), out
    assert re.search(r"^net\.3\s+Linear\s+170\s+170$", out, re.MULTILINE), out


def test_count_params_of_the_segmentation_config_sums_every_parameter(capsys):
    from torchyard.trainer.tasks.segmentation import ShapesFCN

    code, out, _ = run_tool(capsys, "count-params", REPO / "configs" / "shapes_fcn.py")
    assert code == exitcodes.SUCCESS
    total = sum(p.numel() for p in ShapesFCN(channels=12).parameters())
    assert re.search(rf"^\(total\)\s+ShapesFCN\s+{total:,}\s", out, re.MULTILINE), out
    modules = [line.split()[0] for line in out.splitlines()[2:]]
    assert modules == ["enc1", "enc2", "enc3", "dec2", "dec1", "head"]


# ---- publish-model -----------------------------------------------------------------------------------------

def test_publish_model_keeps_weights_and_meta_and_names_the_file_by_its_hash(capsys, work_dir, tmp_path):
    code, out, _ = run_tool(capsys, "publish-model", work_dir, tmp_path / "released" / "digits_mlp.pth")
    assert code == exitcodes.SUCCESS
    published = Path(out.strip())
    assert re.fullmatch(r"digits_mlp-[0-9a-f]{8}\.pth", published.name)
    assert published.name[-12:-4] == hashlib.sha256(published.read_bytes()).hexdigest()[:8]
    left = sorted(path.name for path in published.parent.iterdir())
    assert left == [published.name, f"{published.name}.sha256"]
    state = torch.load(published, weights_only=True)
    assert set(state) == {"state_dict", "meta"}
    assert all(t.device.type == "cpu" for t in state["state_dict"].values())
    original = torch.load(resolve_checkpoint(work_dir), weights_only=True)
    assert original.keys() > {"optim_wrapper", "rng"}
    for name, tensor in original["state_dict"].items():
        assert torch.equal(tensor, state["state_dict"][name])
    assert published.stat().st_size < resolve_checkpoint(work_dir).stat().st_size


def test_a_published_model_tests_like_the_original_and_loads_with_load_from(capsys, work_dir, tmp_path):
    _, out, _ = run_tool(capsys, "publish-model", work_dir, tmp_path / "digits_mlp.pth")
    published = out.strip()
    metrics = {}
    for name, checkpoint in (("original", resolve_checkpoint(work_dir)), ("published", published)):
        runner = Runner(Config(digits_cfg(tmp_path / name)), log_name="test.log")
        try:
            metrics[name] = runner.test(checkpoint)
        finally:
            runner.close()
    assert metrics["published"] == metrics["original"]
    train(digits_cfg(tmp_path / "finetune", load_from=published, train_cfg=dict(by_epoch=False, max_iters=1)))
    assert f"loaded weights from {published}" in capsys.readouterr().out


def test_publish_model_of_a_missing_checkpoint_is_a_clear_error(capsys, tmp_path):
    code, _, err = run_tool(capsys, "publish-model", tmp_path / "nothing.pth", tmp_path / "out.pth")
    assert code == exitcodes.CONFIG_ERROR
    assert err.startswith("error: no checkpoint at") and "Traceback" not in err


# ---- plot-logs ---------------------------------------------------------------------------------------------

def test_plot_logs_draws_a_panel_per_key_and_a_line_per_work_dir(capsys, work_dir, tmp_path):
    other = tmp_path / "other"
    train(digits_cfg(other, optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.02))))
    capsys.readouterr()
    out = tmp_path / "curves.png"
    code, printed, _ = run_tool(capsys, "plot-logs", work_dir, other, "--keys", "loss", "accuracy/top1",
                                "--out", out, "--title", "lr 0.1 vs 0.02")
    assert code == exitcodes.SUCCESS and printed.strip() == str(out)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (700, 520)  # 7 x 2.6 inches per key at 100 dpi


def test_plot_logs_reads_train_and_val_scalars_and_keeps_the_last_value_of_a_repeated_iteration(tmp_path):
    (tmp_path / "scalars.jsonl").write_text(
        '{"mode": "train", "iter": 10, "loss": 2.0}\n{"mode": "train", "iter": 20, "loss": 1.5}\n'
        '{"mode": "val", "iter": 20, "accuracy/top1": 50.0}\n'
        '{"mode": "train", "iter": 20, "loss": 1.4}\n')  # resumed from iteration 10: 20 logged again
    curves = read_curves(tmp_path, ["loss", "accuracy/top1"])
    assert curves == {"loss": ([10, 20], [2.0, 1.4]), "accuracy/top1": ([20], [50.0])}


def test_plot_logs_names_an_unknown_key_and_lists_the_known_ones(capsys, work_dir, tmp_path):
    code, _, err = run_tool(capsys, "plot-logs", work_dir, "--keys", "acc", "--out", tmp_path / "c.png")
    assert code == exitcodes.CONFIG_ERROR
    assert "key 'acc' is not in" in err and "accuracy/top1" in err and "loss" in err and "lr" in err
    assert not (tmp_path / "c.png").exists()


def test_plot_logs_without_scalars_says_what_to_pass(capsys, tmp_path):
    code, _, err = run_tool(capsys, "plot-logs", tmp_path, "--out", tmp_path / "c.png")
    assert code == exitcodes.CONFIG_ERROR
    assert f"no scalars.jsonl in {tmp_path}" in err and "training work dir" in err


# ---- tsne --------------------------------------------------------------------------------------------------

def test_extract_feat_returns_what_enters_the_last_linear_layer():
    torch.manual_seed(0)
    inputs = torch.rand(5, 1, 8, 8)
    mlp = DigitsMLP(hidden=16).eval()
    assert torch.equal(mlp.extract_feat(inputs), mlp.net[:-1](inputs))
    cnn = DigitsCNN(channels=4).eval()
    assert torch.equal(cnn.extract_feat(inputs), cnn.head[:-1](cnn.features(inputs)))


def test_tsne_plots_the_test_set_features(capsys, work_dir, tmp_path):
    out = tmp_path / "tsne.png"
    code, printed, _ = run_tool(capsys, "tsne", work_dir / "config.py", work_dir, "--out", out,
                                "--max-samples", 300)
    assert code == exitcodes.SUCCESS and printed.strip() == str(out)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (700, 600)


def test_tsne_with_a_checkpoint_of_another_model_says_so(capsys, work_dir, tmp_path):
    config = Config(digits_cfg(tmp_path, model=dict(type="DigitsCNN", channels=4))).dump(tmp_path / "cnn.py")
    code, _, err = run_tool(capsys, "tsne", config, work_dir, "--out", tmp_path / "t.png")
    assert code == exitcodes.CONFIG_ERROR
    assert "does not fit DigitsCNN" in err and "another config" in err


def test_tsne_needs_a_model_with_features_and_class_labels(capsys, work_dir, tmp_path):
    config = REPO / "configs" / "shapes_fcn.py"
    code, _, err = run_tool(capsys, "tsne", config, work_dir, "--out", tmp_path / "t.png")
    assert code == exitcodes.CONFIG_ERROR
    assert "ShapesFCN has no extract_feat(inputs) method" in err


def test_an_unknown_tool_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["count-parms"])
    assert exit_.value.code == exitcodes.USAGE_ERROR
    assert "invalid choice: 'count-parms'" in capsys.readouterr().err


def test_config_errors_name_the_config(capsys, tmp_path):
    code, _, err = run_tool(capsys, "count-params", tmp_path / "missing.py")
    assert code == exitcodes.CONFIG_ERROR and "missing.py" in err
    assert isinstance(ConfigError("x"), ValueError)
