"""torchyard control plane: the TrainJob/TestJob API, renderers, operator and Slurm bridge.

Never imports torch.
"""
