"""Process-group helpers shared by the entry points."""
from __future__ import annotations


def close_process_group() -> None:
    """Wait for every rank, then destroy the default process group, if there is one.

    Call it at the end of an entry point. A gloo group left for the interpreter's shutdown to
    tear down can abort a rank ("terminate called without an active exception", SIGABRT)
    after training finished, which turns a good run into a failed launch.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
