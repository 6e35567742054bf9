"""Job-level errors are told in one line, also when they happen inside a Ray Data stage."""

from __future__ import annotations

import pytest

from connectors.storage import StorageUnavailableError
from jobs.common.errors import JobError, one_line


def _fails(batch):
    raise StorageUnavailableError(
        "S3 at http://s3.test unreachable for 121 s while writing s3://b/x; is the store up?"
    )


def test_a_store_outage_inside_a_stage_keeps_its_message(embedded_ray):
    import ray

    with pytest.raises(Exception) as info:
        ray.data.range(2).map_batches(_fails).take_all()
    assert (
        one_line(info.value)
        == "S3 at http://s3.test unreachable for 121 s while writing s3://b/x; is the store up?"
    )


def _model_fails(batch):
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_a_model_failure_inside_a_stage_is_named_with_its_message(embedded_ray):
    import ray

    with pytest.raises(Exception) as info:
        ray.data.range(2).map_batches(_model_fails).take_all()
    assert one_line(info.value) == "RuntimeError: CUDA error: an illegal memory access was encountered"


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (JobError("the embedded Ray cannot run this job"), "the embedded Ray cannot run this job"),
        (FileNotFoundError(2, "No such file or object", "/in"), "[Errno 2] No such file or object: '/in'"),
        (KeyError("x"), "KeyError: 'x'"),
        (RuntimeError("first line\nsecond line"), "RuntimeError: first line"),
    ],
)
def test_one_line(exc, line):
    assert one_line(exc) == line
