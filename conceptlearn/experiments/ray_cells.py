"""The comparison's jobs as Ray tasks (``conceptlearn compare --ray [ADDRESS]``).

Each job (one cell, or one k-sweep) is one task. The task evaluates the job with the local
code path (:func:`~conceptlearn.experiments.compare.evaluate_job`) in a temporary folder,
resuming from the partial results the driver hands it, and returns the finished results; the
driver writes them to the job's files under ``DIR/cells`` (the names a local run uses) and
rebuilds ``DIR/results.json``. So a Ray run ends in the same files as a local one (timings
apart), a rerun skips the finished cells, and an interrupted Ray run resumes locally or on Ray.

Tasks read the run set, the library and the checkpoint at the paths the plan names, so on a
cluster those paths (and ``--data``) must exist on every node, e.g. on a shared filesystem; each
task takes one GPU when the cluster has any, else one CPU. Ray is imported only here.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from conceptlearn.cache import enable_compilation_cache
from conceptlearn.datasets.omniglot import data_root
from conceptlearn.evaluate import write_atomic
from conceptlearn.experiments.compare import (
    BadArgument,
    Job,
    Plan,
    evaluate_job,
    job_files,
    job_label,
)

INSTALL = 'pip install -e ".[ray]"'


def import_ray():
    """The ``ray`` module; :class:`BadArgument` naming ``--ray`` when it is not installed."""
    try:
        import ray
    except ImportError:
        raise BadArgument(f"argument --ray: Ray is not installed ({INSTALL})") from None
    return ray


def start_ray(address: str | None = None) -> bool:
    """Connect to the Ray cluster at ``address``, or start a local Ray instance (None), unless
    this process is connected already. Returns whether it connected (then the caller shuts Ray
    down). A cluster that cannot be reached raises :class:`BadArgument` naming ``--ray``."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address or None)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        message = " ".join(str(err).split())
        raise BadArgument(f"argument --ray: cannot connect to {where}: {message}") from None
    return True


def _finished(results: dict[int, dict], job: Job) -> bool:
    return len(results) == len(job.ks or (1,)) and all(
        len(r["runs"]) == job.n_runs for r in results.values()
    )


def evaluate_job_as_task(plan: Plan, job: Job, partial: dict[int, dict]) -> dict[int, dict]:
    """One Ray task: evaluate ``job`` in a temporary folder seeded with ``partial`` (``k ->``
    the results its files hold so far) and return ``k ->`` its finished results."""
    enable_compilation_cache()
    with tempfile.TemporaryDirectory(prefix="conceptlearn-cell-") as folder:
        files = job_files(Path(folder), plan, job)
        for k, results in partial.items():
            write_atomic(files[k], results)
        evaluate_job(plan, job, Path(folder), progress=False)
        return {k: json.loads(path.read_text()) for k, path in files.items()}


def run_jobs_on_ray(
    plan: Plan, out: Path, *, job_done: Callable[[], None], progress: bool = True
) -> None:
    """Every unfinished job of ``plan`` as a task on the connected Ray instance; each result is
    written to its files under ``out/cells`` as it arrives, then ``job_done()`` is called."""
    ray = import_ray()
    if not ray.is_initialized():
        start_ray()
    gpu = ray.cluster_resources().get("GPU", 0) >= 1
    task = ray.remote(num_gpus=1 if gpu else 0)(evaluate_job_as_task)
    # The driver's Omniglot folder, as an absolute path (nothing recorded depends on it).
    shipped = ray.put(dataclasses.replace(plan, data=str(data_root(plan.data).resolve())))
    bar = tqdm(total=len(plan.jobs), desc="compare (ray)", unit="cell", disable=not progress)
    pending = {}
    for job in plan.jobs:
        files = job_files(out, plan, job)
        partial = {k: json.loads(path.read_text()) for k, path in files.items() if path.exists()}
        if _finished(partial, job):
            bar.update(1)
            continue
        pending[task.remote(shipped, job, partial)] = job
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ref)
            files = job_files(out, plan, job)
            for k, results in ray.get(ref).items():
                write_atomic(files[k], results)
            job_done()
            bar.set_postfix_str(f"{job.experiment}: {job_label(job)}")
            bar.update(1)
    finally:
        for ref in pending:
            ray.cancel(ref)
        bar.close()
