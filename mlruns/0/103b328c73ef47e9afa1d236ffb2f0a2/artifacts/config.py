work_dir = '/tmp/pytest-of-root/pytest-56/test_tracked_config_keys_limit0/wd'
model = {'type': 'DigitsCNN', 'channels': 8, 'dropout': 0.2}
train_dataloader = {'batch_size': 32,
 'sampler': {'shuffle': True},
 'dataset': {'type': 'DigitsDataset',
             'split': 'train',
             'pipeline': [{'type': 'RandomShift', 'max_shift': 1}]}}
val_dataloader = {'batch_size': 100, 'dataset': {'type': 'DigitsDataset', 'split': 'val'}}
val_evaluator = {'type': 'Accuracy'}
optim_wrapper = {'optimizer': {'type': 'SGD', 'lr': 0.05, 'momentum': 0.9}}
param_scheduler = [{'type': 'LinearLR', 'start_factor': 0.2, 'by_epoch': False, 'begin': 0, 'end': 10},
 {'type': 'CosineAnnealingLR', 'by_epoch': True, 'begin': 0, 'end': 3}]
train_cfg = {'by_epoch': True, 'max_epochs': 2}
default_hooks = {'logger': {'type': 'LoggerHook', 'interval': 20},
 'checkpoint': {'type': 'CheckpointHook', 'interval': 1, 'save_best': 'auto'}}
randomness = {'seed': 3, 'deterministic': True}
visualizer = {'type': 'Visualizer',
 'vis_backends': [{'type': 'LocalVisBackend'},
                  {'type': 'MLflowVisBackend',
                   'tracked_config_keys': ['model', 'train_cfg.max_epochs'],
                   'save_dir': '/tmp/pytest-of-root/pytest-56/test_tracked_config_keys_limit0/ml'}]}
custom_hooks = [{'type': 'tests.trainer.hooks.test_logger.StopAt', 'at': 5}]
