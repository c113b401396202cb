# Adam with a cosine decay, for small restoration networks trained with an L1 loss.
optim_wrapper = dict(optimizer=dict(type="Adam", lr=1e-3))
param_scheduler = [dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=20, eta_min=1e-5)]
train_cfg = dict(by_epoch=True, max_epochs=20, val_interval=5, val_begin=1)
# The lr above was tuned for 2 processes x 16 patches; --auto-scale-lr rescales it for other layouts.
auto_scale_lr = dict(enable=False, base_batch_size=32)
