"""A Parsl configuration as a center might give it: here, one HighThroughputExecutor on
this machine. Swap the provider for SlurmProvider(partition=..., ...) on a cluster."""

from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider


def config() -> Config:
    """A function, so each run gets fresh executors (Parsl's are good for one run)."""
    return Config(
        executors=[HighThroughputExecutor(
            label="local_htex", address="127.0.0.1", max_workers_per_node=2,
            encrypted=True, provider=LocalProvider(init_blocks=1, max_blocks=1))],
        usage_tracking=0)
