"""Executors of the grid: in this process (default), or on Ray (a local instance or a
cluster) — the same jobs, the same files, the same results."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medweave.errors import InputError
from medweave.experiment._jobs import FoldJob, run_job

__all__ = ["execute"]

log = logging.getLogger(__name__)


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
    jobs: Sequence[FoldJob], *, executor: str, address: str | None = None, quiet: bool = False
) -> None:
    """Run ``jobs`` (each writes its own result file)."""
    if not jobs:
        return
    if executor == "local":
        _local(jobs, quiet=quiet)
    elif executor == "ray":
        _ray(jobs, address=address, quiet=quiet)
    else:
        raise InputError(f"executor: {executor!r} is not one of local, ray")


def _local(jobs: Sequence[FoldJob], *, quiet: bool) -> None:
    with _progress(quiet=quiet) as bar:
        task = bar.add_task("training", total=len(jobs), last="")
        for job in jobs:
            bar.update(task, last=_describe(job))
            res = run_job(job)
            log.info("done %s in %.1f s", _describe(job), res["seconds"])
            bar.advance(task)


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
            kwargs["num_cpus"] = os.cpu_count() or 1
        ray.init(**kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(run_job)
        # Jobs of one fold that train the same stage-1 encoder run in order (singles first)
        # when they share a worker; across workers the encoder store is written atomically.
        refs = {remote.remote(_one_thread(job)): job for job in jobs}
        with _progress(quiet=quiet) as bar:
            task = bar.add_task("training (ray)", total=len(jobs), last="")
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    res = ray.get(ref)
                    log.info("done %s in %.1f s", _describe(refs[ref]), res["seconds"])
                    bar.update(task, advance=1, last=_describe(refs[ref]))
    finally:
        if started:
            ray.shutdown()


def _one_thread(job: FoldJob) -> FoldJob:
    from dataclasses import replace

    return replace(job, threads=1)
