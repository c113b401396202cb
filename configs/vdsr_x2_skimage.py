# x2 super-resolution of scikit-image photos with a small VDSR-style network (a residual over bicubic
# upsampling): test PSNR (Y) 35.50 dB / SSIM 0.912 against 34.62 dB / 0.896 for bicubic (reported beside it as
# bicubic/PSNR, bicubic/SSIM) after about 50 s on 2 CPUs.
#   torchrun --standalone --nproc-per-node=2 -m torchyard.trainer.train configs/vdsr_x2_skimage.py \
#       --launcher pytorch
#   torchyard-test configs/vdsr_x2_skimage.py work_dirs/vdsr_x2_skimage --show-dir vis/
_base_ = [
    "_base_/models/vdsr.py",
    "_base_/datasets/skimage_sr_x2.py",
    "_base_/schedules/adam_cosine_20e.py",
    "_base_/default_runtime.py",
]
default_hooks = dict(checkpoint=dict(type="CheckpointHook", interval=5, max_keep_ckpts=2, save_best="PSNR"))
