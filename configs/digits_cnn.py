# A small CNN on 8x8 handwritten digits: reaches >= 95% validation accuracy in about a minute on 2 CPUs.
#   torchrun --standalone --nproc-per-node=2 -m torchyard.trainer.train configs/digits_cnn.py \
#       --launcher pytorch
_base_ = [
    "_base_/models/digits_cnn.py",
    "_base_/datasets/digits.py",
    "_base_/schedules/sgd_10e.py",
    "_base_/default_runtime.py",
]
