"""torchyard data plane: OpenMMLab-style distributed training and evaluation.

Never imports kopf or kubernetes.
"""
