"""The Dask cluster an archive runs on: a ``LocalCluster`` sized to this machine, or a client of
an existing scheduler (dask-jobqueue on HPC, dask-kubernetes, ``dask scheduler`` by hand).

Sizing rule (:func:`plan_local`): workers × onnxruntime threads = usable cores, one Dask thread
per worker (one scene at a time each). Scenes are independent, so whole scenes in parallel
processes scale better than more onnxruntime threads on one scene (its row reading,
preprocessing, post-processing and merge run on one core; measured in
``scripts/bench_archive.py``). Workers are capped by memory at :data:`MEMORY_PER_WORKER` each;
the threads then grow so the cores stay busy.

On an existing cluster each task's onnxruntime threads default to its host's usable cores over
the Dask threads of all workers on that host, learnt from the workers before submitting
(:func:`threads_by_host`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sarvessel.archive.errors import ArchiveError
from sarvessel.archive.task import usable_cores, worker_probe

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

#: Memory a worker is given room for when sizing a LocalCluster (bytes): a scene streams in a
#: band of rows, 660 MB peak for a 20,000 px wide scene (docs/results.md, "Scene runtime");
#: xView3 scenes reach ~29,400 px, and the Dask worker itself needs ~150 MB more.
MEMORY_PER_WORKER = 2 * 2**30
#: How long to wait for an existing scheduler to answer (s).
CONNECT_TIMEOUT_S = 20


@dataclass(frozen=True)
class LocalPlan:
    """How a LocalCluster is sized: ``workers`` processes × ``threads`` onnxruntime threads."""

    workers: int
    threads: int
    cores: int
    memory_bytes: int


@dataclass(frozen=True)
class ClusterInfo:
    """What the run needs to know of the cluster it got."""

    scheduler: str
    dashboard: str | None
    workers: int
    #: Dask threads over all workers (scenes that run at once).
    dask_threads: int
    #: onnxruntime threads per task by worker host (existing clusters; empty for local ones).
    threads_by_host: Mapping[str, int]
    local: LocalPlan | None = None


def plan_local(*, cores: int, memory_bytes: int, workers: int | None = None,
               threads: int | None = None) -> LocalPlan:
    """Size a LocalCluster for ``cores`` usable cores and ``memory_bytes`` of RAM.

    With neither ``workers`` nor ``threads``: as many workers as cores (fewer if memory allows
    fewer, :data:`MEMORY_PER_WORKER` each), threads = cores // workers. With one of them, the
    other fills the cores. With both, as given (a warning if they over- or under-fill the cores).

    >>> p = plan_local(cores=8, memory_bytes=64 * 2**30); p.workers, p.threads
    (8, 1)
    >>> p = plan_local(cores=8, memory_bytes=5 * 2**30); p.workers, p.threads  # memory: 2
    (2, 4)
    >>> p = plan_local(cores=8, memory_bytes=64 * 2**30, threads=2); p.workers, p.threads
    (4, 2)
    """
    if cores < 1:
        raise ArchiveError(f"cores must be >= 1, got {cores}")
    for name, val in (("--workers", workers), ("--threads", threads)):
        if val is not None and val < 1:
            raise ArchiveError(f"{name} must be >= 1, got {val}")
    if workers is None and threads is None:
        workers = max(1, min(cores, int(memory_bytes // MEMORY_PER_WORKER)))
        threads = max(1, cores // workers)
    elif workers is None:
        workers = max(1, cores // threads)
    elif threads is None:
        threads = max(1, cores // workers)
    elif workers * threads != cores:
        log.warning("%d workers x %d threads = %d, on %d usable cores", workers, threads,
                    workers * threads, cores)
    return LocalPlan(workers, threads, cores, int(memory_bytes))


def machine() -> tuple[int, int]:
    """(usable cores, total memory in bytes) of this machine."""
    import psutil  # a dependency of distributed

    return usable_cores(), int(psutil.virtual_memory().total)


@contextmanager
def open_cluster(*, scheduler: str | None = None, plan: LocalPlan | None = None,
                 dashboard_address: str | None = ":8787"
                 ) -> Iterator[tuple[Client, ClusterInfo]]:
    """A client of ``scheduler`` (``tcp://host:port``), or of a new LocalCluster sized by
    ``plan`` (processes, one Dask thread per worker) that is closed on exit.

    ``dashboard_address``: where a LocalCluster serves its dashboard (":0" any free port, None
    none). The default is ":8787" (Dask's own default; a taken port falls back to a free one).
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ArchiveError("detect-many needs dask.distributed: pip install "
                           "'sarvessel[archive]'") from exc
    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError) as exc:
            raise ArchiveError(f"--scheduler {scheduler}: cannot connect ({exc})") from exc
        with client:
            yield client, describe(client, local=None)
        return
    if plan is None:
        raise ArchiveError("a LocalCluster needs a plan (plan_local)")
    with LocalCluster(n_workers=plan.workers, threads_per_worker=1, processes=True,
                      dashboard_address=dashboard_address) as cluster, Client(cluster) as client:
        yield client, describe(client, local=plan)


def describe(client: Client, *, local: LocalPlan | None) -> ClusterInfo:
    """Ask the scheduler and every worker what the run needs (also proves that the workers
    can import sarvessel; raises :class:`ArchiveError` if they cannot)."""
    info = client.scheduler_info()
    workers = info.get("workers", {})
    try:
        probes = client.run(worker_probe) if workers else {}
    except Exception as exc:  # e.g. ModuleNotFoundError raised on the workers
        raise ArchiveError(f"the workers of {info.get('address')} cannot run sarvessel tasks "
                           f"({type(exc).__name__}: {exc}); install sarvessel[archive] in "
                           "every worker's environment") from exc
    from sarvessel import __version__

    other = {p["sarvessel"] for p in probes.values()} - {__version__}
    if other:
        log.warning("workers run sarvessel %s, this client %s", ", ".join(sorted(other)),
                    __version__)
    if not workers:
        log.warning("the scheduler has no workers yet; tasks wait until some join")
    dashboard = client.dashboard_link if "dashboard" in info.get("services", {}) else None
    return ClusterInfo(
        scheduler=str(info.get("address")), dashboard=dashboard, workers=len(workers),
        dask_threads=sum(int(w.get("nthreads", 1)) for w in workers.values()),
        threads_by_host={} if local else threads_by_host(workers, probes), local=local)


def threads_by_host(workers: Mapping[str, Mapping[str, Any]],
                    probes: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """onnxruntime threads per task on each host: its usable cores over the Dask threads of
    all the workers on it (several worker processes may share one host).

    >>> threads_by_host({"a": {"nthreads": 2}, "b": {"nthreads": 2}, "c": {"nthreads": 1}},
    ...                 {"a": {"host": "n1", "cores": 16}, "b": {"host": "n1", "cores": 16},
    ...                  "c": {"host": "n2", "cores": 4}})
    {'n1': 4, 'n2': 4}
    """
    dask_threads: dict[str, int] = defaultdict(int)
    cores: dict[str, int] = {}
    for addr, probe in probes.items():
        host = probe["host"]
        dask_threads[host] += int(workers.get(addr, {}).get("nthreads", 1))
        cores[host] = int(probe["cores"])
    return {h: max(1, cores[h] // max(1, n)) for h, n in dask_threads.items()}


def dashboard_needs_bokeh() -> bool:
    """True when this environment lacks bokeh, without which the dashboard shows no plots."""
    return importlib.util.find_spec("bokeh") is None
