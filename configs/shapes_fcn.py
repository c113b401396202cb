# Semantic segmentation of generated shapes with a small U-shaped FCN: test mIoU 72.2 (aAcc 96.4) after about
# 40 s on 2 CPUs, against mIoU 21.2 (aAcc 84.8) for predicting background everywhere.
#   torchrun --standalone --nproc-per-node=2 -m torchyard.trainer.train configs/shapes_fcn.py \
#       --launcher pytorch
#   torchyard-test configs/shapes_fcn.py work_dirs/shapes_fcn --show-dir work_dirs/shapes_fcn/vis
_base_ = [
    "_base_/models/shapes_fcn.py",
    "_base_/datasets/shapes.py",
    "_base_/schedules/adamw_cosine_12e.py",
    "_base_/default_runtime.py",
]
default_hooks = dict(checkpoint=dict(type="CheckpointHook", interval=4, max_keep_ckpts=2, save_best="mIoU"))
