"""Task families beyond digits classification; importing this package registers their datasets, models and
metrics (segmentation, restoration, generation, self-supervised)."""

from torchyard.trainer.tasks import feature_net, generation, restoration, segmentation, selfsup  # noqa: F401
