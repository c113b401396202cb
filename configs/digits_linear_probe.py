# Linear probe: a linear classifier trained on the frozen backbone of configs/digits_simclr.py.
#   torchyard-train configs/digits_linear_probe.py \
#       --cfg-options load_from=work_dirs/digits_simclr/epoch_40.pth
# Without load_from the backbone keeps its random initialisation: the baseline the pretraining must beat.
_base_ = [
    "_base_/models/digits_linear_probe.py",
    "_base_/datasets/digits.py",
    "_base_/default_runtime.py",
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=[]))
val_evaluator = dict(type="Accuracy", topk=(1,))
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(type="Adam", lr=1e-2))
param_scheduler = [dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=20, eta_min=1e-4)]
train_cfg = dict(by_epoch=True, max_epochs=20, val_interval=5)
default_hooks = dict(checkpoint=dict(type="CheckpointHook", interval=20, save_best="accuracy/top1"))
