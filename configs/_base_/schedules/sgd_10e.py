optim_wrapper = dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=10, eta_min=1e-4),
]
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=1, val_begin=1)
# The lr above was tuned for 2 processes x 32 images; --auto-scale-lr rescales it for other layouts.
auto_scale_lr = dict(enable=False, base_batch_size=64)
