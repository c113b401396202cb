# A variational autoencoder generating 8x8 digits, evaluated with FID and Inception Score (keys as in mmagic).
#   torchyard-train configs/digits_vae.py
#   torchyard-test configs/digits_vae.py work_dirs/digits_vae --show-dir work_dirs/digits_vae/samples
# One digit is generated per val image (360), and the val images are FID's real reference. The extractor is
# the digits feature network shipped with torchyard; for numbers comparable with papers set both metrics'
# extractor=dict(type="<your Inception-v3 wrapper>", checkpoint="<its weights>") (see tasks/feature_net.py).
_base_ = [
    "_base_/models/digits_vae.py",
    "_base_/datasets/digits.py",
    "_base_/default_runtime.py",
]
# Shifted copies would teach the VAE blurred digits; it learns the data as it is.
train_dataloader = dict(batch_size=32, dataset=dict(pipeline=[]))
extractor = dict(type="DigitsFeatureNet", checkpoint="torchyard://digits_feature_net.pth")
val_evaluator = [
    dict(type="FrechetInceptionDistance", prefix="FID-Full", extractor=extractor,
         real_stats_cache="work_dirs/fid_stats/digits-val-digits_feature_net.pth"),
    dict(type="InceptionScore", prefix="IS", extractor=extractor, splits=10),
]
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(type="Adam", lr=2e-3))
param_scheduler = [dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=60, eta_min=1e-5)]
train_cfg = dict(by_epoch=True, max_epochs=60, val_interval=10)
default_hooks = dict(
    checkpoint=dict(type="CheckpointHook", interval=10, max_keep_ckpts=2, save_best="FID-Full/fid"),
)
