# A two-layer perceptron on 8x8 digits: the quickest real job, used by examples/trainjob.yaml.
_base_ = [
    "_base_/models/digits_mlp.py",
    "_base_/datasets/digits.py",
    "_base_/schedules/sgd_10e.py",
    "_base_/default_runtime.py",
]
train_cfg = dict(max_epochs=5)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=5, eta_min=1e-4),
]
