"""Task families beyond digits classification; importing this package registers their datasets, models and
metrics (segmentation, restoration, generation, self-supervised)."""

from torchyard.trainer.tasks import feature_net, generation, selfsup  # noqa: F401
