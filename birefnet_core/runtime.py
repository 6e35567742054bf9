"""Process-level runtime settings for workers that share a machine."""

from __future__ import annotations

import torch

__all__ = ["set_cpu_threads"]


def set_cpu_threads(count: int) -> None:
    """Cap PyTorch's intra-op threads in this process.

    CPU pipeline workers each own one core: letting every worker's resize also spawn a thread
    per core oversubscribes the machine and burns CPU in spinning OpenMP threads.
    """
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
