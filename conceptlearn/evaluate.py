"""The harness: put any contender through a run set and write a results JSON as runs finish.

The results file is rewritten atomically after every run; a rerun with the same model, config,
seed and run set skips the finished runs, so an interrupted evaluation resumes and ends in the
same file as an uninterrupted one (apart from timings). Each run's PRNG key depends only on the
seed and the run's position, never on what ran before, so ``--workers N`` (runs spread over N
processes) gives the same predictions as one process.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import multiprocessing
import os
import pickle
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from conceptlearn.contenders import Contender, make_contender
from conceptlearn.datasets.episodes import Run, load_episode, load_runs, run_set_digest
from conceptlearn.datasets.shifts import apply_shift, shift_images

RESULTS_VERSION = 1
_PACKAGES = ("conceptlearn", "jax", "jaxlib", "flax", "optax", "numpyro", "numpy", "scipy")


def bootstrap_ci(
    n_errors: Sequence[int], n_test: Sequence[int], *, n_boot: int = 10_000, seed: int = 0
) -> list[float]:
    """95% percentile interval of the pooled error (%) under resampling runs with replacement."""
    errors = np.asarray(n_errors, dtype=np.float64)
    tests = np.asarray(n_test, dtype=np.float64)
    if len(errors) == 0:
        return [float("nan"), float("nan")]
    idx = np.random.default_rng(seed).integers(0, len(errors), size=(n_boot, len(errors)))
    pct = 100.0 * errors[idx].sum(axis=1) / tests[idx].sum(axis=1)
    lo, hi = np.percentile(pct, [2.5, 97.5])
    return [float(lo), float(hi)]


def device_description() -> str:
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    if device.platform == "cpu":
        return f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    return f"{device.platform} ({kind}) x{jax.device_count()}"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def write_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON to ``path`` through a temporary file, so a reader (or a process
    killed mid-write) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def _summarise(results: dict) -> dict:
    runs = results["runs"]
    n_err = [r["n_errors"] for r in runs]
    n_test = [r["n_test"] for r in runs]
    total = sum(n_test)
    results["mean_error_pct"] = 100.0 * sum(n_err) / total if total else float("nan")
    results["ci95_pct"] = bootstrap_ci(n_err, n_test, seed=results["seed"])
    results["seconds_total"] = float(sum(r["seconds"] for r in runs))
    results["n_runs_done"] = len(runs)
    return results


def _identity(
    contender: Contender,
    runs: Sequence[Run],
    runs_spec: str,
    seed: int,
    shift: str | None,
    shift_support: bool = False,
) -> dict[str, Any]:
    identity = {
        "model": contender.name,
        "config": contender.config,
        "runs_spec": str(runs_spec),
        "run_set_digest": run_set_digest(runs),
        "seed": seed,
        "shift": shift,
    }
    if shift_support:  # only when set, so earlier query-only files keep their identity
        identity["shift_support"] = True
    return identity


def run_keys(seed: int, index: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The fit, score and shift keys of the run at ``index`` of a run set (paired across
    contenders: they depend on the seed and the run's position only)."""
    fit_key, score_key, shift_key = jax.random.split(
        jax.random.fold_in(jax.random.key(seed), index), 3
    )
    return fit_key, score_key, shift_key


def _entry(run: Run, scores: np.ndarray, labels: np.ndarray, seconds: float, name: str) -> dict:
    """One run's results entry from its scores ``(n_query, n_way)``."""
    if scores.shape != (len(run.queries), run.n_way):
        raise ValueError(
            f"{name}: scores have shape {scores.shape}, expected {(len(run.queries), run.n_way)}"
        )
    predictions = scores.argmax(axis=1)
    n_errors = int((predictions != labels).sum())
    return {
        "run": run.name,
        "n_test": len(run.queries),
        "n_errors": n_errors,
        "error_pct": 100.0 * n_errors / len(run.queries),
        "seconds": seconds,
        "predictions": [int(p) for p in predictions],
        "labels": [int(label) for label in labels],
        # how far each query's true class is behind the winner (0 when correct)
        "margins": [
            round(float(s.max() - s[label]), 4) for s, label in zip(scores, labels, strict=True)
        ],
    }


def shifted_support(
    spec: str, support: np.ndarray, key: jax.Array, donors: np.ndarray
) -> np.ndarray:
    """Shift ``support bool (n_way, k, 105, 105)``; shot ``s`` of class ``c`` gets the key
    ``fold_in(fold_in(key, c), s)``, so the first k shots are shifted alike at every k (a k-sweep
    equals separate evaluations). ``clutter`` draws its fragments from ``donors``."""
    n_way, k = support.shape[:2]

    def fold(parent, n):
        return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(parent, jnp.arange(n))

    keys = jax.vmap(lambda class_key: fold(class_key, k))(fold(key, n_way)).reshape(-1)
    flat = support.reshape(n_way * k, *support.shape[2:])
    return shift_images(spec, flat, keys, donors=donors).reshape(support.shape)


def evaluate_run(contender: Contender, run: Run, source, index: int, seed: int, shift) -> dict:
    """Fit and score one run (the ``index``-th of its run set) -> its results entry."""
    return evaluate_run_ks(contender, run, source, index, seed, shift, None)[None]


def first_shots(run: Run, k: int) -> Run:
    """``run`` with the first ``k`` support images of each class (paired run sets: ``dev-kK``
    is ``dev-k10`` with its first K drawers)."""
    return dataclasses.replace(run, support=tuple(shots[:k] for shots in run.support))


def evaluate_run_ks(
    contender: Contender,
    run: Run,
    source,
    index: int,
    seed: int,
    shift,
    ks,
    shift_support: bool = False,
) -> dict[int | None, dict]:
    """Fit and score one run at each ``k`` of ``ks`` (its first k shots per class; None: the
    run as it is) -> ``k -> results entry``. A contender with ``scores_for_ks`` scores every k
    from one fit to all shots (its entries' ``seconds`` is the whole sweep's); others are fitted
    once per k. ``shift`` applies to the queries, and with ``shift_support`` to the support too
    (:func:`shifted_support`; clutter from the run's clean queries)."""
    episode = load_episode(run, source)
    fit_key, score_key, shift_key = run_keys(seed, index)
    if shift is not None:
        queries = apply_shift(shift, episode.queries, shift_key)
        if shift_support:
            support_key = jax.random.fold_in(shift_key, 1)
            episode = episode._replace(
                support=shifted_support(shift, episode.support, support_key, episode.queries)
            )
        episode = episode._replace(queries=queries)
    if ks is None:
        start = time.perf_counter()
        state = contender.fit(episode.support, key=fit_key)
        scores = {None: np.asarray(contender.scores(state, episode.queries, key=score_key))}
        seconds = {None: time.perf_counter() - start}
        runs = {None: run}
    elif hasattr(contender, "scores_for_ks"):
        start = time.perf_counter()
        state = contender.fit(episode.support[:, : max(ks)], key=fit_key)
        scores = contender.scores_for_ks(state, episode.queries, ks, key=score_key)
        seconds = dict.fromkeys(ks, time.perf_counter() - start)
        runs = {k: first_shots(run, k) for k in ks}
    else:
        scores, seconds, runs = {}, {}, {}
        for k in ks:
            start = time.perf_counter()
            state = contender.fit(episode.support[:, :k], key=fit_key)
            scores[k] = np.asarray(contender.scores(state, episode.queries, key=score_key))
            seconds[k] = time.perf_counter() - start
            runs[k] = first_shots(run, k)
    return {
        k: _entry(runs[k], np.asarray(scores[k]), episode.labels, seconds[k], contender.name)
        for k in scores
    }


# A worker process's contenders and image sources, built on first use by each pickled setup.
_WORKER: dict[bytes, tuple[Contender, object]] = {}


def _start_worker(compilation_cache: str | None) -> None:
    if compilation_cache:  # the parent's persistent compilation cache, shared by its workers
        from conceptlearn.cache import enable_compilation_cache

        enable_compilation_cache(compilation_cache)
    parent = os.getppid()

    def exit_with_parent() -> None:  # a killed harness must not leave its workers behind
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()


def make_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` fresh processes for :func:`evaluate_contender`'s ``pool``; one pool can serve
    many evaluations (each worker keeps the contenders it has built, so jitted code compiles once
    per process)."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),  # jax is not fork-safe
        initializer=_start_worker,
        initargs=(jax.config.jax_compilation_cache_dir,),
    )


def release_contenders() -> None:
    """Forget this process's contenders and every program jax compiled for them (the persistent
    compilation cache keeps them on disk), so that a process that serves one config after
    another holds one config's programs at a time."""
    _WORKER.clear()
    jax.clear_caches()
    gc.collect()


def _worker_run(setup: bytes, run: Run, index: int, seed: int, shift, ks, shift_support) -> dict:
    if setup not in _WORKER:
        release_contenders()
        _WORKER[setup] = pickle.loads(setup)()
    contender, source = _WORKER[setup]
    return evaluate_run_ks(contender, run, source, index, seed, shift, ks, shift_support)


def sweep_outputs(out: str | os.PathLike, ks: Sequence[int]) -> dict[int, Path]:
    """The results file of each k of a sweep: ``out`` with ``{k}`` filled in, or with ``_kK``
    before its suffix (``bpl.json`` -> ``bpl_k1.json``, ``bpl_k2.json``, ...)."""
    out = str(out)
    if "{k}" in out:
        return {k: Path(out.replace("{k}", str(k))) for k in ks}
    path = Path(out)
    return {k: path.with_name(f"{path.stem}_k{k}{path.suffix or '.json'}") for k in ks}


def sweep_spec(runs_spec: str, k: int) -> str:
    """The run-set name of the first ``k`` shots of ``runs_spec`` (``dev`` -> ``dev-k2``)."""
    base = str(runs_spec).split("-k")[0] if not Path(str(runs_spec)).is_dir() else None
    return f"{base}-k{k}" if base else f"{runs_spec} (first {k} shots)"


def _resume(out: Path, identity: dict) -> dict[str, dict]:
    """The finished runs in ``out`` if it holds a partial evaluation with ``identity``."""
    if not out.exists():
        return {}
    try:
        previous = json.loads(out.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{out}: existing results file is not valid JSON ({err}); move it away"
        ) from err
    mismatched = [k for k, v in identity.items() if previous.get(k) != v]
    if mismatched:
        raise ValueError(
            f"{out} holds results of a different evaluation (differs in {mismatched}); "
            "choose another --out or delete it"
        )
    return {r["run"]: r for r in previous.get("runs", [])}


def evaluate_contender(
    contender: Contender,
    runs: Sequence[Run],
    source,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    runs_spec: str = "",
    shift: str | None = None,
    progress: bool = True,
    workers: int = 1,
    worker_setup: Callable[[], tuple[Contender, object]] | None = None,
    ks: Sequence[int] | None = None,
    shift_support: bool = False,
    pool: Executor | None = None,
    desc: str | None = None,
) -> dict:
    """Run ``contender`` on every run, writing ``out`` after each; resume from ``out`` if it
    holds a partial evaluation of the same model, config, seed, run set and shift.

    ``shift``: an out-of-distribution shift spec (``conceptlearn.datasets.shifts``, e.g.
    ``"rotate=30"``) applied to every query image; the support images stay as they are unless
    ``shift_support`` (then they are shifted too, see :func:`shifted_support`).

    ``ks``: a k-sweep. ``runs`` must have at least ``max(ks)`` shots per class; each k is
    scored on the first k shots and written to its own file (:func:`sweep_outputs`), the same
    file a separate evaluation of ``sweep_spec(runs_spec, k)`` writes. Returns ``k -> results``.

    ``workers > 1`` spreads the runs over that many fresh processes, each building its own
    contender and image source with ``worker_setup`` (a picklable callable returning
    ``(contender, source)`` equal to the ones given); results are the same as with one.
    ``pool`` (from :func:`make_pool`) does the same in processes that outlive this call.
    ``desc``: the progress bar's label (default: the contender's name).

    Returns the results dict (see the README for its fields).
    """
    if (workers > 1 or pool is not None) and worker_setup is None:
        raise ValueError("workers > 1 needs worker_setup to build the contender in each process")
    if ks is not None:
        ks = sorted(set(int(k) for k in ks))
        shots = min(len(c) for r in runs for c in r.support)
        if not ks or ks[0] < 1 or ks[-1] > shots:
            raise ValueError(f"--ks must lie in 1..{shots} (the run set's shots), got {ks}")
        outs = sweep_outputs(out, ks)
        run_sets = {k: [first_shots(r, k) for r in runs] for k in ks}
        specs = {k: sweep_spec(runs_spec, k) for k in ks}
    else:
        outs, run_sets, specs = {None: Path(out)}, {None: list(runs)}, {None: runs_spec}
    results, finished = {}, {}
    for k, path in outs.items():
        # JSON round trip so that tuples vs lists cannot make identical configs look different.
        identity = json.loads(
            json.dumps(_identity(contender, run_sets[k], specs[k], seed, shift, shift_support))
        )
        finished[k] = _resume(path, identity)
        results[k] = {
            **identity,
            "results_version": RESULTS_VERSION,
            "device": device_description(),
            "versions": versions(),
        }
    done = [r.name for r in runs if all(r.name in f for f in finished.values())]
    bar = tqdm(
        total=len(runs),
        initial=len(done),
        desc=desc or contender.name,
        unit="run",
        disable=not progress,
    )

    def record(entries: dict) -> None:
        for k, entry in entries.items():
            finished[k][entry["run"]] = entry
            partial = _summarise(
                {**results[k], "runs": [finished[k][r.name] for r in runs if r.name in finished[k]]}
            )
            write_atomic(outs[k], partial)
        bar.update(1)
        bar.set_postfix(error_pct=f"{partial['mean_error_pct']:.1f}")

    todo = [(i, run) for i, run in enumerate(runs) if run.name not in done]

    def run_in(executor: Executor) -> None:
        setup = pickle.dumps(worker_setup)
        pending = [
            executor.submit(_worker_run, setup, run, i, seed, shift, ks, shift_support)
            for i, run in todo
        ]
        for done_run in as_completed(pending):
            record(done_run.result())

    if pool is not None and todo:
        run_in(pool)
    elif workers > 1 and todo:
        with make_pool(min(workers, len(todo))) as own_pool:
            run_in(own_pool)
    else:
        for i, run in todo:
            record(evaluate_run_ks(contender, run, source, i, seed, shift, ks, shift_support))
    bar.close()
    final = {}
    for k, path in outs.items():
        final[k] = _summarise({**results[k], "runs": [finished[k][r.name] for r in runs]})
        write_atomic(path, final[k])
    return final if ks is not None else final[None]


def contender_and_source(
    model: str, contender_options: dict[str, Any], runs_spec: str, data: str | None
) -> tuple[Contender, object]:
    """A worker's contender and image source, for ``worker_setup`` (module level, so that a
    ``functools.partial`` of it pickles)."""
    return make_contender(model, **contender_options), load_runs(runs_spec, data)[1]
