"""Process-level runtime settings for workers that share a machine."""

from __future__ import annotations

__all__ = ["ALLOCATOR_ENV", "set_cpu_threads"]

#: Environment for worker processes, applied at their start (it has no effect once PyTorch has
#: allocated). PyTorch then backs its CPU allocations of 2 MB and more with transparent huge
#: pages: every image freshly allocates several megabytes, and on virtual machines faulting them
#: in 4 KB pages costs about 0.5 ms per megabyte (a 1024x1024 float batch: 6.5 ms against 2 ms).
ALLOCATOR_ENV = {"THP_MEM_ALLOC_ENABLE": "1"}


def set_cpu_threads(count: int) -> None:
    """Cap PyTorch's and OpenCV's intra-op threads in this process.

    CPU pipeline workers each own one core: letting every worker's resize also spawn a thread
    per core oversubscribes the machine and burns CPU in spinning OpenMP threads. Imported here
    so that reading ALLOCATOR_ENV does not load torch (light tasks such as listing use it).
    """
    import cv2
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    if cv2.getNumThreads() != count:
        cv2.setNumThreads(count)
