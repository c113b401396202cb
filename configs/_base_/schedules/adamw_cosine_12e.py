# AdamW with a cosine decay: small dense-prediction models converge in a few epochs on CPU.
optim_wrapper = dict(optimizer=dict(type="AdamW", lr=5e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=12, eta_min=1e-5),
]
train_cfg = dict(by_epoch=True, max_epochs=12, val_interval=4, val_begin=1)
# The lr above was tuned for 2 processes x 8 images; --auto-scale-lr rescales it for other layouts.
auto_scale_lr = dict(enable=False, base_batch_size=16)
