"""The termination message: what the trainer writes is what every reader (pods, `torchyard run`, the sbatch
script's grep) understands, within the 4 KiB Kubernetes keeps."""

from __future__ import annotations

import json

from torchyard.contract import exitcodes
from torchyard.contract.termination import (
    MAX_BYTES,
    Termination,
    encode,
    make_summary,
    retryable,
)


def test_a_config_error_reads_back_as_not_retryable():
    text = encode(make_summary("failed", exitcodes.CONFIG_ERROR, "ConfigError", "bad lr", retryable=False))
    message = Termination.parse(text)
    assert (message.status, message.exit_code, message.reason) == ("failed", 3, "ConfigError")
    assert not retryable(message, exitcodes.FAILURE)


def test_details_travel_beside_the_header():
    done = make_summary("succeeded", 0, "Completed", "", False, epoch=5, lastCheckpoint="/w/epoch_5.pth")
    text = encode(done)
    assert Termination.parse(text).details == {"epoch": 5, "lastCheckpoint": "/w/epoch_5.pth"}
    # rank 0 succeeded, so a peer that failed after it is worth a retry (the script's bash: test_restarts)
    assert retryable(Termination.parse(text), exitcodes.FAILURE)


def test_without_a_message_only_usage_and_config_exit_codes_are_final():
    assert retryable(None, exitcodes.FAILURE) and retryable(None, 137) and retryable(None, None)
    assert not retryable(None, exitcodes.CONFIG_ERROR) and not retryable(None, exitcodes.USAGE_ERROR)
    assert retryable(Termination.parse("Killed"), exitcodes.FAILURE)  # a log tail is no word on retrying


def test_a_long_message_is_cut_to_fit_and_metrics_go_first():
    metrics = {f"class_{i}": 0.5 for i in range(500)}
    text = encode(make_summary("failed", 1, "RuntimeError", "x" * 10_000, True, metrics=metrics))
    data = json.loads(text)
    assert len(text.encode()) <= MAX_BYTES
    assert data["metrics"] == {} and data["metricsTruncated"] and data["message"].endswith("...")
