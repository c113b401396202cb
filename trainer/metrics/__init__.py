"""Metrics, one module per task family; importing this package registers them all in METRICS."""

from torchyard.trainer.metrics import classification, generation, restoration, segmentation  # noqa: F401
