default_hooks = dict(
    logger=dict(type="LoggerHook", interval=10),
    checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=3, save_best="auto"),
)
randomness = dict(seed=0, deterministic=False)
log_level = "INFO"
load_from = None
resume = False
