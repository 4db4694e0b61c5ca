"""Executors of the grid: in this process, in worker processes side by side (the default
on a machine with several cores), or on Ray (a local instance or a cluster) — the same
jobs, the same files, the same results.

Jobs of one fold share what the encoder store holds (stage-1 encoders, the GLM; see
:func:`medweave.experiment._jobs.shared_artifacts`). Run side by side, the first job that
needs such a thing makes it and the fold's others start only once it is there, so nothing
is trained twice; other jobs fill the wait.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medweave.errors import InputError
from medweave.experiment._jobs import FoldJob, run_job

__all__ = ["MAX_AUTO_WORKERS", "execute", "job_order", "usable_cores"]

log = logging.getLogger(__name__)

#: ``workers: null`` runs one job per core, but no more than this many side by side (each
#: worker holds the cohort in memory).
MAX_AUTO_WORKERS = 8


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _progress(*, quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        disable=quiet,
        transient=False,
    )


def _describe(job: FoldJob) -> str:
    return f"{job.model.name} ({'all patients' if job.fold < 0 else f'fold {job.fold}'})"


def execute(
    jobs: Sequence[FoldJob],
    *,
    executor: str,
    address: str | None = None,
    workers: int | None = None,
    quiet: bool = False,
) -> None:
    """Run ``jobs`` (each writes its own result file)."""
    if not jobs:
        return
    if executor == "local":
        n = _local_workers(jobs, workers)
        if n == 1:
            _in_process(jobs, quiet=quiet)
        else:
            _side_by_side(jobs, workers=n, quiet=quiet)
    elif executor == "ray":
        _ray(jobs, address=address, quiet=quiet)
    else:
        raise InputError(f"executor: {executor!r} is not one of local, ray")


def _local_workers(jobs: Sequence[FoldJob], workers: int | None) -> int:
    """Worker processes for the local executor: one per core by default, but one (in this
    process) for models placed on an accelerator or spread over several devices."""
    on_cpu = all(
        j.estimator.get("accelerator", "cpu") == "cpu" and j.estimator.get("devices", 1) == 1
        for j in jobs
    )
    if not on_cpu:
        return 1
    n = workers if workers is not None else min(usable_cores(), MAX_AUTO_WORKERS)
    return max(1, min(n, len(jobs)))


def job_order(jobs: Sequence[FoldJob]) -> list[set[int]]:
    """For each job, the jobs it waits for: the first job (in order) that shares each of
    its artifacts makes it; the later ones start after that job has finished."""
    maker: dict[str, int] = {}
    for i, job in enumerate(jobs):
        for thing in job.shares:
            maker.setdefault(thing, i)
    return [{maker[t] for t in job.shares} - {i} for i, job in enumerate(jobs)]


def _schedule(
    jobs: Sequence[FoldJob],
    *,
    slots: int,
    submit: Callable[[FoldJob], Hashable],
    wait_any: Callable[[list[Hashable]], list[tuple[Hashable, dict[str, Any]]]],
    bar: Progress,
) -> None:
    """Keep ``slots`` jobs running, the earliest ready ones first (see :func:`job_order`)."""
    after = job_order(jobs)
    task = bar.add_task(f"training ({slots} side by side)", total=len(jobs), last="")
    waiting, done = list(range(len(jobs))), set[int]()
    running: dict[Hashable, int] = {}
    while waiting or running:
        for i in [i for i in waiting if after[i] <= done][: slots - len(running)]:
            waiting.remove(i)
            running[submit(jobs[i])] = i
        if not running:  # pragma: no cover - job_order only points backwards
            raise RuntimeError("no job can start: the grid's dependencies form a cycle")
        for handle, res in wait_any(list(running)):
            i = running.pop(handle)
            done.add(i)
            log.info("done %s in %.1f s", _describe(jobs[i]), res["seconds"])
            bar.update(task, advance=1, last=_describe(jobs[i]))


def _in_process(jobs: Sequence[FoldJob], *, quiet: bool) -> None:
    with _progress(quiet=quiet) as bar:
        task = bar.add_task("training", total=len(jobs), last="")
        for job in jobs:
            bar.update(task, last=_describe(job))
            res = run_job(job)
            log.info("done %s in %.1f s", _describe(job), res["seconds"])
            bar.advance(task)


def _worker_init(records: Any, level: int, parent: int) -> None:
    """A worker's log records go to the parent, which writes them to the run's log; the
    worker ends if the parent does (a killed run leaves no job running behind it)."""
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(level)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


class _Replay(logging.Handler):
    """Hands a worker's record to the parent's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


def _side_by_side(jobs: Sequence[FoldJob], *, workers: int, quiet: bool) -> None:
    """``workers`` processes (spawned: no state copied from this one), each job on
    ``cores // workers`` threads."""
    threads = max(1, usable_cores() // workers)
    ctx = multiprocessing.get_context("spawn")
    records = ctx.Queue()
    listener = logging.handlers.QueueListener(records, _Replay())
    level = logging.getLogger("medweave").getEffectiveLevel()
    listener.start()
    pool = ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_worker_init, initargs=(records, level, os.getpid())
    )
    try:

        def submit(job: FoldJob) -> Future[dict[str, Any]]:
            return pool.submit(run_job, replace(job, threads=threads))

        def wait_any(handles: list[Any]) -> list[tuple[Any, dict[str, Any]]]:
            finished, _ = wait(handles, return_when=FIRST_COMPLETED)
            return [(f, f.result()) for f in finished]  # a job's error is raised here

        with _progress(quiet=quiet) as bar:
            _schedule(jobs, slots=workers, submit=submit, wait_any=wait_any, bar=bar)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        listener.stop()


def _ray(jobs: Sequence[FoldJob], *, address: str | None, quiet: bool) -> None:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        raise InputError("executor: ray is not installed (pip install 'ray>=2.9')") from None
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = usable_cores()
        ray.init(**kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(run_job)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))

        def submit(job: FoldJob) -> Any:
            return remote.remote(replace(job, threads=1))

        def wait_any(handles: list[Any]) -> list[tuple[Any, dict[str, Any]]]:
            finished, _ = ray.wait(handles, num_returns=1)
            return [(ref, ray.get(ref)) for ref in finished]

        with _progress(quiet=quiet) as bar:
            _schedule(jobs, slots=slots, submit=submit, wait_any=wait_any, bar=bar)
    finally:
        if started:
            ray.shutdown()
