"""Ray start-up for every job: join the cluster the user named, or start an embedded one.

Embedded means embedded: with no address (no flag, no RAY_ADDRESS) Ray is started with
``address="local"``, because a bare ``ray.init()`` joins whatever cluster ``ray start`` recorded
on the machine. Before any work is submitted the cluster is checked against what the pipeline
needs at the least (its smallest actor pool plus one CPU for the CPU stages), so a cluster that
can never run it is refused with one line instead of hanging.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from birefnet_core.runtime import ALLOCATOR_ENV

from .errors import JobError

__all__ = ["STAGE_OPTIONS", "Needs", "ResourceError", "choose_device", "ensure_resources", "start_ray"]

log = logging.getLogger(__name__)

#: Remote options of every task and stage: workers start with the allocator settings (see
#: ALLOCATOR_ENV). Set per task, not in ray.init, because a job submitted with its own
#: runtime_env ignores ray.init's; Ray merges these env_vars into the job's and keeps its
#: working_dir. Every task uses the same options, so they share worker processes.
STAGE_OPTIONS: dict[str, Any] = {"runtime_env": {"env_vars": ALLOCATOR_ENV}}
#: How long a cluster (not an embedded Ray) may take to scale up to the minimum, by default.
CLUSTER_WAIT_S = 600.0
_POLL_S = 2.0


class ResourceError(JobError):
    """The Ray instance cannot run the pipeline at all (it would wait forever)."""


@dataclass(frozen=True)
class Needs:
    """The least a pipeline needs to make progress; ``what`` explains it in the refusal."""

    cpus: float
    gpus: float = 0.0
    memory: float = 0.0
    what: str = ""


def start_ray(
    address: str | None,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    dashboard: bool = False,
) -> bool:
    """Join ``address`` (or RAY_ADDRESS), else start an embedded local Ray; True when started here.

    ``num_cpus``, ``object_store_memory`` and ``dashboard`` shape an embedded Ray only; a cluster
    has its own. Ray Train needs the dashboard: its state API watches the training controller.
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            object_store_memory=object_store_memory,
            include_dashboard=dashboard,
            logging_level=logging.WARNING,
        )
    return True


def _shortfall(needs: Needs) -> list[str]:
    have = ray.cluster_resources()
    short = []
    if have.get("CPU", 0) < needs.cpus:
        short.append(f"{needs.cpus:g} CPUs (it has {have.get('CPU', 0):g})")
    if have.get("GPU", 0) < needs.gpus:
        short.append(f"{needs.gpus:g} GPUs (it has {have.get('GPU', 0):g})")
    if have.get("memory", 0) < needs.memory:
        short.append(
            f"{needs.memory / 2**30:.1f} GiB of task memory (it has {have.get('memory', 0) / 2**30:.1f})"
        )
    return short


def ensure_resources(needs: Needs, embedded: bool, wait_s: float = CLUSTER_WAIT_S) -> None:
    """Return once Ray has what ``needs`` asks for; raise ResourceError when it will not.

    An embedded Ray cannot grow, so it is judged at once. A cluster may autoscale: it is asked
    for the resources (``request_resources``) and given ``wait_s`` to provide them.
    """
    short = _shortfall(needs)
    if short and not embedded:
        log.warning("waiting up to %.0f s for the cluster to provide %s", wait_s, ", ".join(short))
        bundle = {"CPU": needs.cpus, **({"GPU": needs.gpus} if needs.gpus else {})}
        _ask_and_wait(bundle, lambda: not _shortfall(needs), wait_s)
        short = _shortfall(needs)
    if short:
        where = "the embedded Ray" if embedded else "the cluster"
        hint = "raise --num-cpus" if embedded else "add nodes"
        raise ResourceError(
            f"{where} cannot run this job: it needs at least {' and '.join(short)} for {needs.what}; "
            f"{hint} or lower --concurrency"
        )


def choose_device(requested: str, embedded: bool, gpus_per_actor: float | None, wait_s: float) -> str:
    """'cpu' or 'cuda' for ``--device``; 'auto' asks for a GPU instead of judging by what is up now.

    An autoscaling cluster often starts with no GPU node and adds one only when asked, so a
    cluster without GPUs is asked for one (``request_resources``) and given ``wait_s`` to
    provide it before the job settles for CPU. An embedded Ray has what this machine has.
    """
    if requested != "auto":
        return requested
    if gpus_per_actor is not None:
        return "cuda" if gpus_per_actor > 0 else "cpu"
    if _gpus() > 0:
        return "cuda"
    if embedded or wait_s <= 0:
        return "cpu"
    log.warning("--device auto: the cluster has no GPU yet; asked for one, waiting up to %.0f s", wait_s)
    if _ask_and_wait({"GPU": 1}, lambda: _gpus() > 0, wait_s):
        return "cuda"
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[])  # withdraw the request: the job will not use a GPU node now
    log.warning("--device auto: no GPU node joined within %.0f s; running on CPU", wait_s)
    return "cpu"


def _gpus() -> float:
    return ray.cluster_resources().get("GPU", 0)


def _ask_and_wait(bundle: dict[str, float], satisfied: Callable[[], bool], wait_s: float) -> bool:
    """Ask the autoscaler for `bundle` and poll until `satisfied()` or `wait_s` has passed."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[bundle])
    deadline = time.monotonic() + wait_s
    while not satisfied():
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(_POLL_S, wait_s))
    return True
