"""torchyard control plane: the TrainJob/TestJob API, renderers, operator and Slurm bridge.

Never imports torch.
"""

__all__ = ["Client", "SlurmJobs"]


def __getattr__(name: str):
    # the Client needs the kubernetes package (torchyard[operator]); only code that asks for it imports it
    if name == "Client":
        from torchyard.operator.client import Client

        return Client
    if name == "SlurmJobs":
        from torchyard.operator.slurm.jobs import SlurmJobs

        return SlurmJobs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
