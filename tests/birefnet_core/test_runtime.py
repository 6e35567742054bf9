"""Per-process thread caps for CPU workers."""

from __future__ import annotations

import cv2
import pytest
import torch

from birefnet_core.runtime import set_cpu_threads


@pytest.fixture
def restore_threads():
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(torch_threads)
    cv2.setNumThreads(cv2_threads)


@pytest.mark.parametrize("count", [1, 2])
def test_caps_torch_and_opencv(restore_threads, count):
    set_cpu_threads(count)
    assert torch.get_num_threads() == count
    assert cv2.getNumThreads() == count
