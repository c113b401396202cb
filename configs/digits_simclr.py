# SimCLR pretraining on 8x8 digits (labels unused): two augmented views per image, NT-Xent over the batch.
#   torchyard-train configs/digits_simclr.py
# Then probe the frozen backbone with configs/digits_linear_probe.py.
_base_ = [
    "_base_/models/digits_simclr.py",
    "_base_/datasets/digits.py",
    "_base_/default_runtime.py",
]
# The model draws both views itself; NT-Xent wants many negatives, so a large batch.
train_dataloader = dict(batch_size=128, drop_last=True, dataset=dict(pipeline=[]))
# Self-supervised pretraining has no labelled metric to validate on (mmpretrain's configs have none either).
val_dataloader = None
val_evaluator = None
test_dataloader = None
test_evaluator = None
optim_wrapper = dict(optimizer=dict(type="AdamW", lr=3e-3, weight_decay=1e-4))
param_scheduler = [dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=40, eta_min=1e-5)]
train_cfg = dict(by_epoch=True, max_epochs=40)
default_hooks = dict(checkpoint=dict(type="CheckpointHook", interval=10, max_keep_ckpts=1))
