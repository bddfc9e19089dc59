"""The comparison (DESIGN.md section 7): every contender on the same paired runs and seeds, in three
experiments built on the harness, written to one folder.

- **sample efficiency**: k = 1, 2, 3, 5, 10 shots per class, one k-sweep per contender on the
  largest-k runs (runs at smaller k are their first k drawers);
- **out of distribution**: every shift family of :mod:`conceptlearn.datasets.shifts` at its
  severities, at k = 1, applied to the queries (and to the support with ``shift_support``);
- **anytime**: bpl's error against search effort (proposals x refit steps) and wall seconds
  per episode, from a cheap setting up to the full preset; the ViT's error against its
  fine-tuning steps; MHD and vit-proto as points.

Every harness evaluation (a :class:`Job`) writes its own resumable results file under
``DIR/cells/``, named by a hash of everything that changes its numbers (contender config, the
library or checkpoint file contents, run set, seed, shift), so a rerun resumes where it stopped
and a changed config never reuses a stale file. ``DIR/results.json`` is rebuilt from those files
after every job; ``DIR/summary.md`` and the plots are written at the end
(:func:`run_compare`). bpl's parses are shared between jobs through ``DIR/parse_cache``
(content-addressed), except in the anytime jobs, whose wall seconds must include parsing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from conceptlearn.contenders import REGISTRY, Contender, make_contender
from conceptlearn.datasets.episodes import Run, load_episode, load_runs, run_set_digest
from conceptlearn.datasets.omniglot import data_root
from conceptlearn.datasets.shifts import SEVERITIES, SHIFTS, parse_shift
from conceptlearn.evaluate import (
    device_description,
    evaluate_contender,
    first_shots,
    make_pool,
    release_contenders,
    sweep_outputs,
    sweep_spec,
    versions,
    write_atomic,
)
from conceptlearn.experiments.plots import plot_all
from conceptlearn.experiments.report import summarise, summary_markdown
from conceptlearn.shipped import default_checkpoint_path

RESULTS_VERSION = 1
VIT_MODELS = ("vit", "vit-proto", "vit-scratch")  # contenders that start from a checkpoint
MAKE_CHECKPOINT = (
    "make one with `conceptlearn pretrain-vit --background small1 --out checkpoints/vit_small1` "
    "and pass --checkpoint checkpoints/vit_small1"
)

# bpl's anytime ladder: overrides on top of the base config, cheapest first; {} is the base.
BPL_LADDER: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "cheap",
        {
            "max_candidates": 2,
            "n_parses": 1,
            "parse_steps": 4,
            "parse_coarse_steps": 3,
            "refit_steps": 4,
            "refit_coarse_steps": 3,
            "wide_lr": 0.0,
        },
    ),
    ("low", {"max_candidates": 4, "refit_steps": 8, "refit_coarse_steps": 6, "wide_lr": 0.0}),
    ("no-wide", {"wide_lr": 0.0}),
    ("full", {}),
)
# The smoke preset's bpl: small enough that compilation dominates (tests use it).
SMOKE_BPL = {
    "max_candidates": 3,
    "max_strokes": 4,
    "n_points": 8,
    "n_parses": 2,
    "parse_steps": 4,
    "parse_coarse_steps": 2,
    "refit_steps": 4,
    "refit_coarse_steps": 3,
    "wide_lr": 0.0,
    "prune_steps": 2,
    "prune_width": 4,
    "n_samples": 16,
}
ALL_SHIFTS = tuple(f"{name}={s:g}" for name, strengths in SEVERITIES.items() for s in strengths)

# The default preset must finish in 30 minutes on a 2-core CPU box (README's main job). CPU
# seconds of bpl's full preset per 20-way episode (one worker): ~33 for the k = 1..10 sweep,
# ~4.5 at k = 1, plus ~60 of compiling per config and worker; so ~10 x 33 (sweep) + 27 shift
# cells x 6 x 4.5 + 4 x 10 x 5 (anytime ladder) + compiling, about 1,800 CPU seconds: ~15
# minutes on two cores (measured: docs/benchmarks.md). Tune these two numbers to the budget.
STANDARD_RUNS = 10  # dev runs of sample efficiency and anytime
STANDARD_SHIFT_RUNS = 6  # the first runs of those that every shift cell uses


@dataclasses.dataclass(frozen=True)
class Preset:
    """What a compare run covers. ``n_runs`` / ``shift_runs``: the first N runs (None: all);
    ``bpl``: overrides of bpl's base config; ``anytime``: bpl's ladder (name, overrides on top
    of the base); ``vit_steps``: the ViT's fine-tuning steps for its anytime curve;
    ``workers``: the default number of worker processes (None: one per CPU core)."""

    n_runs: int | None
    ks: tuple[int, ...]
    shifts: tuple[str, ...]
    shift_runs: int | None
    anytime: tuple[tuple[str, dict[str, Any]], ...]
    vit_steps: tuple[int, ...]
    bpl: dict[str, Any] = dataclasses.field(default_factory=dict)
    workers: int | None = None


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        n_runs=2,
        ks=(1, 2),
        shifts=("clutter=20",),
        shift_runs=2,
        anytime=(
            (
                "cheap",
                {"max_candidates": 2, "n_parses": 1, "refit_steps": 2, "refit_coarse_steps": 2},
            ),
            ("base", {}),
        ),
        vit_steps=(5, 20),
        bpl=SMOKE_BPL,
        workers=1,  # compiling dominates: a second process would compile everything again
    ),
    "standard": Preset(
        n_runs=STANDARD_RUNS,
        ks=(1, 2, 3, 5, 10),
        shifts=ALL_SHIFTS,
        shift_runs=STANDARD_SHIFT_RUNS,
        anytime=BPL_LADDER,
        vit_steps=(10, 25, 50, 100),
    ),
    "full": Preset(
        n_runs=None,
        ks=(1, 2, 3, 5, 10),
        shifts=ALL_SHIFTS,
        shift_runs=None,
        anytime=BPL_LADDER,
        vit_steps=(10, 25, 50, 100, 200),
    ),
}
DEFAULT_MODELS = ("bpl", "vit", "vit-proto", "mhd")


class BadArgument(ValueError):
    """A compare argument that cannot work; the message names the argument."""


@dataclasses.dataclass(frozen=True)
class Job:
    """One harness evaluation: ``model`` with ``options`` (factory keywords) on the first
    ``n_runs`` runs, as a k-sweep over ``ks`` or at k = 1 (``ks`` None), under ``shift``."""

    experiment: str  # "sample_efficiency" | "shift" | "anytime"
    model: str
    point: str  # "default", or the anytime point's name
    options: tuple[tuple[str, Any], ...]
    ks: tuple[int, ...] | None
    shift: str | None
    n_runs: int

    @property
    def kwargs(self) -> dict[str, Any]:
        return {k: json.loads(v) if k == "overrides" else v for k, v in self.options}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a compare run does: the jobs, on which runs, and the contenders left out."""

    preset: str
    runs_spec: str
    data: str | None
    seed: int
    shift_support: bool
    ks: tuple[int, ...]
    shifts: tuple[str, ...]
    models: tuple[str, ...]
    jobs: tuple[Job, ...]
    runs: tuple[Run, ...]  # the largest-k runs (n_runs of them)
    notes: tuple[str, ...]


# --------------------------------------------------------------------------- planning


def _options(model: str, *, library, checkpoint, overrides: dict | None, parse_cache) -> tuple:
    """The factory options of ``model`` (overrides as a JSON string, so a Job is hashable)."""
    options: dict[str, Any] = {}
    if model == "bpl":
        options["library"] = library
        options["parse_cache"] = parse_cache
    if model in VIT_MODELS:
        options["checkpoint"] = checkpoint
    if overrides:
        options["overrides"] = json.dumps(overrides, sort_keys=True)
    return tuple(sorted((k, v) for k, v in options.items() if v is not None))


def _shift_list(shifts: Sequence[str]) -> tuple[str, ...]:
    """Family names (each at its severities) or NAME=STRENGTH specs -> specs."""
    specs: list[str] = []
    for item in shifts:
        if "=" in item:
            try:
                parse_shift(item)
            except ValueError as err:
                raise BadArgument(f"argument --shifts: {err}".replace("--shift ", "")) from None
            specs.append(item)
        elif item in SHIFTS:
            specs += [f"{item}={s:g}" for s in SEVERITIES[item]]
        else:
            raise BadArgument(
                f"argument --shifts: unknown shift {item!r}; choose from {sorted(SHIFTS)} "
                "(or NAME=STRENGTH)"
            )
    return tuple(dict.fromkeys(specs))


def _load_run_set(runs_spec: str, max_k: int, data) -> tuple[list[Run], object, int]:
    """The runs with ``max_k`` shots (fewer when a run folder has fewer), their source, shots."""
    folder = Path(str(runs_spec))
    if folder.exists() and not folder.is_dir():
        raise BadArgument(f"argument --runs: {folder} is not a folder")
    if not folder.exists() and not data_root(data).is_dir():
        raise BadArgument(
            f"argument --data: the Omniglot folder {data_root(data)} does not exist "
            "(pass --data DIR, set CONCEPTLEARN_DATA, or run `conceptlearn download`)"
        )
    try:
        runs, source = load_runs(runs_spec, data)  # names a bad spec as given
    except (FileNotFoundError, ValueError, OSError) as err:
        raise BadArgument(f"argument --runs: {str(err).removeprefix('--runs ')}") from None
    if not folder.exists():
        try:
            runs, source = load_runs(f"{str(runs_spec).split('-k')[0]}-k{max_k}", data)
        except ValueError as err:
            raise BadArgument(f"argument --ks: {err}") from None
    shots = min(len(c) for r in runs for c in r.support)
    try:
        load_episode(runs[0], source)  # the images can be read before any work starts
    except (FileNotFoundError, ValueError, OSError, KeyError) as err:
        raise BadArgument(f"argument --data (or $CONCEPTLEARN_DATA): {err}") from None
    return runs, source, shots


def make_plan(
    *,
    out: str | os.PathLike,
    preset: str = "standard",
    models: Sequence[str] | None = None,
    runs_spec: str = "dev",
    data=None,
    seed: int = 0,
    limit: int | None = None,
    ks: Sequence[int] | None = None,
    shifts: Sequence[str] | None = None,
    shift_support: bool = False,
    library: str | None = None,
    checkpoint: str | None = None,
    bpl_overrides: dict[str, Any] | None = None,
) -> Plan:
    """Check the arguments (raising :class:`BadArgument` naming the first bad one) and list the
    jobs. ``models`` None: the default set. The ViT contenders start from ``checkpoint``, by
    default the shipped small1 checkpoint; bpl uses ``library``, by default the shipped one."""
    if preset not in PRESETS:
        raise BadArgument(
            f"argument --preset: unknown preset {preset!r}; choose from {sorted(PRESETS)}"
        )
    p = PRESETS[preset]
    if limit is not None and limit < 1:
        raise BadArgument(f"argument --limit: must be >= 1, got {limit}")
    ks = tuple(sorted(set(int(k) for k in (ks or p.ks))))
    if ks[0] < 1:
        raise BadArgument(f"argument --ks: shots per class must be >= 1, got {list(ks)}")
    shift_specs = _shift_list(p.shifts if shifts is None else shifts)
    models = tuple(dict.fromkeys(models or DEFAULT_MODELS))
    unknown = [m for m in models if m not in REGISTRY]
    if unknown:
        raise BadArgument(
            f"argument --models: unknown model {unknown[0]!r}; choose from {sorted(REGISTRY)}"
        )
    if checkpoint is None and any(m in VIT_MODELS for m in models):
        checkpoint = str(default_checkpoint_path())  # the shipped small1 ViT
    if checkpoint is not None and not (Path(checkpoint) / "config.json").is_file():
        raise BadArgument(
            f"argument --checkpoint: {checkpoint} is not a checkpoint folder "
            f"(no config.json); {MAKE_CHECKPOINT}"
        )
    if library is not None and library != "standin" and not Path(library).is_file():
        raise BadArgument(
            f"argument --library: {library} does not exist (a library .npz from "
            "`conceptlearn learn`, or 'standin' for the stand-in prior)"
        )
    if not models:
        raise BadArgument("argument --models: nothing left to compare")

    runs, _, shots = _load_run_set(runs_spec, max(ks), data)
    notes = []
    if shots < max(ks):
        notes.append(
            f"{runs_spec} has {shots} shot(s) per class: sample efficiency at k <= {shots}"
        )
        ks = tuple(k for k in ks if k <= shots) or (1,)
    n_runs = min(len(runs), limit or p.n_runs or len(runs))
    shift_runs = min(n_runs, p.shift_runs or n_runs)
    runs = runs[:n_runs]

    base_bpl = {**p.bpl, **(bpl_overrides or {})}
    cache = str(Path(out) / "parse_cache")
    common = dict(library=library, checkpoint=checkpoint)

    def options(model, overrides=None, parse_cache=cache):
        extra = base_bpl if model == "bpl" else {}
        return _options(
            model,
            overrides={**extra, **(overrides or {})} or None,
            parse_cache=parse_cache,
            **common,
        )

    # Model by model, each config's jobs together: a process drops what it compiled for one
    # contender config when it meets the next (evaluate.release_contenders), so it holds one
    # config's programs at a time and compiles each config once.
    jobs: list[Job] = []
    for m in models:
        jobs.append(Job("sample_efficiency", m, "default", options(m), ks, None, n_runs))
        for spec in shift_specs:
            jobs.append(Job("shift", m, "default", options(m), None, spec, shift_runs))
        if m == "bpl":
            ladder = [(name, options(m, o, parse_cache=None)) for name, o in p.anytime]
        elif m == "vit":
            ladder = [(f"{s} steps", options(m, {"steps": s})) for s in p.vit_steps]
        else:
            ladder = [("default", options(m))]
        jobs += [Job("anytime", m, name, o, None, None, n_runs) for name, o in ladder]
    for job in jobs:  # every option a factory rejects fails here, before any work
        try:
            contender_for(job.model, job.options)
        except (ValueError, TypeError, FileNotFoundError, OSError) as err:
            flag = {"bpl": "--library / --bpl-set", "mhd": "--models"}.get(
                job.model, "--checkpoint"
            )
            raise BadArgument(f"argument {flag}: {job.model}: {err}") from None
    return Plan(
        preset=preset,
        runs_spec=str(runs_spec),
        data=None if data is None else str(data),
        seed=seed,
        shift_support=shift_support,
        ks=ks,
        shifts=shift_specs,
        models=models,
        jobs=tuple(jobs),
        runs=tuple(runs),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- running


@functools.lru_cache(maxsize=64)
def contender_for(model: str, options: tuple) -> Contender:
    """One contender per (model, options) in this process."""
    return make_contender(model, **Job("", model, "", options, None, None, 0).kwargs)


@functools.lru_cache(maxsize=4)
def image_source(runs_spec: str, data) -> object:
    """The image source of a run set (the same for every k)."""
    folder = Path(runs_spec)
    return load_runs(folder if folder.is_dir() else f"{runs_spec.split('-k')[0]}-k1", data)[1]


def _setup(model: str, options: tuple, runs_spec: str, data) -> tuple[Contender, object]:
    """A worker's contender and image source (module level, so that it pickles); the worker
    has just released its previous config (:func:`conceptlearn.evaluate.release_contenders`)."""
    contender_for.cache_clear()
    return contender_for(model, options), image_source(runs_spec, data)


_CURRENT_CONFIG: list[tuple[str, tuple]] = []  # the (model, options) this process runs now


def use_config(model: str, options: tuple) -> None:
    """Before a job of ``(model, options)``: a new config releases the previous one's
    contenders and compiled programs in this process (jobs of one config come together)."""
    if _CURRENT_CONFIG and _CURRENT_CONFIG[0] != (model, options):
        contender_for.cache_clear()
        release_contenders()
    _CURRENT_CONFIG[:] = [(model, options)]


@functools.lru_cache(maxsize=256)
def _file_digest(path: Path) -> str:
    """SHA-256 of a file (once per process: files are not expected to change during a run)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _artifact_digests(contender: Contender) -> dict[str, str]:
    """Contents of the files a contender's numbers depend on (library, checkpoint), so that a
    file changed under the same path gives new job files."""
    found = {}
    for key in ("library", "checkpoint"):
        value = contender.config.get(key)
        if not value:
            continue
        path = Path(value)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        found[key] = hashlib.sha256(
            "".join(_file_digest(f) for f in files if f.exists()).encode()
        ).hexdigest()
    return found


def job_runs(plan: Plan, job: Job) -> tuple[list[Run], str]:
    """The runs a job evaluates and the run-set name the harness records."""
    runs = list(plan.runs[: job.n_runs])
    if job.ks is not None:
        return [first_shots(r, max(job.ks)) for r in runs], plan.runs_spec
    return [first_shots(r, 1) for r in runs], sweep_spec(plan.runs_spec, 1)


def job_key(plan: Plan, job: Job) -> str:
    """A hash of everything that changes a job's numbers."""
    contender = contender_for(job.model, job.options)
    runs, spec = job_runs(plan, job)
    payload = {
        "model": job.model,
        "config": contender.config,
        "artifacts": _artifact_digests(contender),
        "runs_spec": spec,
        "run_set_digest": run_set_digest(runs),
        "seed": plan.seed,
        "shift": job.shift,
        "shift_support": plan.shift_support and job.shift is not None,
        "ks": job.ks,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def job_target(out: Path, plan: Plan, job: Job) -> Path:
    """The results file of a job under ``out/cells/`` (for a k-sweep, with ``{k}`` in it)."""
    label = re.sub(r"[^A-Za-z0-9.]+", "", job.shift or job.point)
    stem = f"{job.experiment}-{job.model}-{label}-{job_key(plan, job)}"
    return out / "cells" / (f"{stem}.json" if job.ks is None else f"{stem}-k{{k}}.json")


def job_files(out: Path, plan: Plan, job: Job) -> dict[int, Path]:
    """``k -> results file`` of a job."""
    target = job_target(out, plan, job)
    return {1: target} if job.ks is None else sweep_outputs(target, job.ks)


def job_label(job: Job) -> str:
    if job.experiment == "sample_efficiency":
        return f"{job.model} k={','.join(map(str, job.ks or (1,)))}"
    return f"{job.model} {job.shift or job.point}"


def _effort(model: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The anytime x axis of a contender's config: bpl's proposals x refit steps (x2 with the
    wide second refit), the ViT's fine-tuning steps."""
    if model == "bpl":
        refits = 2 if config.get("wide_lr", 0) > 0 else 1
        return {
            "proposals": config["max_candidates"],
            "refit_steps": config["refit_steps"],
            "proposals_x_refit_steps": config["max_candidates"] * config["refit_steps"] * refits,
        }
    if model in VIT_MODELS:
        return {"finetune_steps": config.get("finetune", {}).get("steps")}
    return None


def _cells(out: Path, plan: Plan, job: Job) -> list[dict]:
    cells = []
    for k, path in job_files(out, plan, job).items():
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        family, _, severity = (job.shift or "").partition("=")
        seconds = [r["seconds"] for r in res["runs"]]
        cells.append(
            {
                "experiment": job.experiment,
                "contender": job.model,
                "point": job.point,
                "k": k,
                "shift": job.shift,
                "family": family or None,
                "severity": float(severity) if severity else None,
                "shift_support": bool(res.get("shift_support", False)),
                "effort": _effort(job.model, res["config"]),
                "file": str(path.relative_to(out)),
                "complete": len(res["runs"]) == job.n_runs,
                "seconds_per_episode_median": float(np.median(seconds)) if seconds else None,
                **{
                    key: res[key]
                    for key in (
                        "config",
                        "runs_spec",
                        "run_set_digest",
                        "seed",
                        "mean_error_pct",
                        "ci95_pct",
                        "seconds_total",
                        "n_runs_done",
                        "runs",
                    )
                },
            }
        )
    return cells


def collect(out: Path, plan: Plan, *, command: str = "", complete: bool = False) -> dict:
    """``results.json``'s contents: the plan and every cell written so far."""
    cells = [c for job in plan.jobs for c in _cells(out, plan, job)]
    results = {
        "results_version": RESULTS_VERSION,
        "complete": complete,
        "command": command,
        "preset": plan.preset,
        "plan": {
            "runs": plan.runs_spec,
            "n_runs": len(plan.runs),
            "seed": plan.seed,
            "models": list(plan.models),
            "ks": list(plan.ks),
            "shifts": list(plan.shifts),
            "shift_support": plan.shift_support,
            "anytime": [[j.model, j.point] for j in plan.jobs if j.experiment == "anytime"],
        },
        "notes": list(plan.notes),
        "device": device_description(),
        "versions": versions(),
        "cells": cells,
    }
    results["summary"] = summarise(results)
    return results


def evaluate_job(
    plan: Plan,
    job: Job,
    out: Path,
    *,
    progress: bool = True,
    pool: Executor | None = None,
    source=None,
) -> None:
    """Evaluate one job into its results file(s) under ``out/cells`` (:func:`job_files`),
    resuming the runs already there. ``pool``: processes for its runs (:func:`make_pool`);
    ``source``: the run set's images (default: :func:`image_source`)."""
    runs, spec = job_runs(plan, job)
    use_config(job.model, job.options)
    evaluate_contender(
        contender_for(job.model, job.options),
        runs,
        image_source(plan.runs_spec, plan.data) if source is None else source,
        job_target(out, plan, job),
        seed=plan.seed,
        runs_spec=spec,
        shift=job.shift,
        shift_support=plan.shift_support and job.shift is not None,
        ks=job.ks,
        progress=progress,
        desc=f"  {job_label(job)}",
        pool=pool,
        worker_setup=functools.partial(_setup, job.model, job.options, plan.runs_spec, plan.data),
    )


def run_compare(
    plan: Plan,
    out: str | os.PathLike,
    *,
    workers: int = 1,
    progress: bool = True,
    command: str = "",
    on_ray: bool = False,
) -> dict:
    """Run every job of ``plan`` (resuming any finished runs under ``out/cells``), rewriting
    ``out/results.json`` after each, then write ``summary.md`` and the three plots. Returns the
    results dict. ``workers > 1``: runs of each job spread over that many processes, which live
    for the whole comparison (same results as one process). ``on_ray``: each job is a task on
    the Ray instance this process is connected to
    (:func:`conceptlearn.experiments.ray_cells.run_jobs_on_ray`); the same files as locally."""
    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def write_results() -> None:
        write_atomic(out / "results.json", collect(out, plan, command=command))

    if on_ray:
        from conceptlearn.experiments.ray_cells import run_jobs_on_ray

        run_jobs_on_ray(plan, out, job_done=write_results, progress=progress)
    else:
        source = image_source(plan.runs_spec, plan.data)
        pool = make_pool(workers) if workers > 1 else None
        try:
            bar = tqdm(plan.jobs, desc="compare", unit="cell", disable=not progress)
            for job in bar:
                bar.set_postfix_str(f"{job.experiment}: {job_label(job)}")
                evaluate_job(plan, job, out, progress=progress, pool=pool, source=source)
                write_results()
            bar.close()
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    results = collect(out, plan, command=command, complete=True)
    write_atomic(out / "results.json", results)
    (out / "summary.md").write_text(summary_markdown(results, time.perf_counter() - start))
    plot_all(results, out)
    return results
