"""Process-level runtime settings for workers that share a machine."""

from __future__ import annotations

import os
import sys

__all__ = ["ALLOCATOR_ENV", "set_cpu_threads"]

#: Environment for worker processes, applied at their start (it has no effect once PyTorch has
#: allocated). PyTorch then backs its CPU allocations of 2 MB and more with transparent huge
#: pages: every image freshly allocates several megabytes, and on virtual machines faulting them
#: in 4 KB pages costs about 0.5 ms per megabyte (a 1024x1024 float batch: 6.5 ms against 2 ms).
ALLOCATOR_ENV = {"THP_MEM_ALLOC_ENABLE": "1"}


def set_cpu_threads(count: int) -> None:
    """Cap PyTorch's and OpenCV's intra-op threads in this process.

    CPU pipeline workers each own one core: letting every worker's resize also spawn a thread
    per core oversubscribes the machine and burns CPU in spinning OpenMP threads. PyTorch is
    capped only where it is loaded already, and told the count through ``OMP_NUM_THREADS`` in
    case it loads later: importing it here would cost the scene path's workers, which never
    run it, about a gigabyte each.
    """
    import cv2

    torch = sys.modules.get("torch")
    if torch is None:
        os.environ["OMP_NUM_THREADS"] = str(count)
    elif torch.get_num_threads() != count:
        torch.set_num_threads(count)
    if cv2.getNumThreads() != count:
        cv2.setNumThreads(count)
