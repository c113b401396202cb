"""torchyard control plane: the TrainJob/TestJob API, renderers, operator and Slurm bridge.

Never imports torch.
"""

__all__ = ["Client"]


def __getattr__(name: str):
    # the Client needs the kubernetes package (torchyard[operator]); only code that asks for it imports it
    if name == "Client":
        from torchyard.operator.client import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
