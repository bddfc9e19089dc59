"""The harness: put any contender through a run set and write a results JSON as runs finish.

The results file is rewritten atomically after every run; a rerun with the same model, config,
seed and run set skips the finished runs, so an interrupted evaluation resumes and ends in the
same file as an uninterrupted one (apart from timings). Each run's PRNG key depends only on the
seed and the run's position, never on what ran before.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from conceptlearn.cli import parse_key_values
from conceptlearn.contenders import Contender, make_contender
from conceptlearn.datasets.episodes import Run, load_episode, load_runs, run_set_digest
from conceptlearn.experiments.shifts import apply_shift, parse_shift

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


def _write_atomic(path: Path, payload: dict) -> None:
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
    contender: Contender, runs: Sequence[Run], runs_spec: str, seed: int, shift: str | None
) -> dict[str, Any]:
    return {
        "model": contender.name,
        "config": contender.config,
        "runs_spec": str(runs_spec),
        "run_set_digest": run_set_digest(runs),
        "seed": seed,
        "shift": shift,
    }


def run_keys(seed: int, index: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The fit, score and shift keys of the run at ``index`` of a run set (paired across
    contenders: they depend on the seed and the run's position only)."""
    fit_key, score_key, shift_key = jax.random.split(
        jax.random.fold_in(jax.random.key(seed), index), 3
    )
    return fit_key, score_key, shift_key


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
) -> dict:
    """Run ``contender`` on every run, writing ``out`` after each; resume from ``out`` if it
    holds a partial evaluation of the same model, config, seed, run set and shift.

    ``shift``: an out-of-distribution shift spec (``conceptlearn.experiments.shifts``, e.g.
    ``"rotate=30"``) applied to every query image; the support images stay as they are.

    Returns the results dict (see the README for its fields).
    """
    out = Path(out)
    identity = _identity(contender, runs, runs_spec, seed, shift)
    # JSON round trip so that tuples vs lists cannot make identical configs look different.
    identity = json.loads(json.dumps(identity))
    done: dict[str, dict] = {}
    if out.exists():
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
        done = {r["run"]: r for r in previous.get("runs", [])}

    results = {
        **identity,
        "results_version": RESULTS_VERSION,
        "device": device_description(),
        "versions": versions(),
    }
    finished = dict(done)
    bar = tqdm(
        total=len(runs), initial=len(done), desc=contender.name, unit="run", disable=not progress
    )
    for i, run in enumerate(runs):
        if run.name in finished:
            continue
        episode = load_episode(run, source)
        fit_key, score_key, shift_key = run_keys(seed, i)
        if shift is not None:
            episode = episode._replace(queries=apply_shift(shift, episode.queries, shift_key))
        start = time.perf_counter()
        state = contender.fit(episode.support, key=fit_key)
        scores = np.asarray(contender.scores(state, episode.queries, key=score_key))
        seconds = time.perf_counter() - start
        if scores.shape != (len(run.queries), run.n_way):
            raise ValueError(
                f"{contender.name}: scores have shape {scores.shape}, expected {(len(run.queries), run.n_way)}"
            )
        predictions = scores.argmax(axis=1)
        n_errors = int((predictions != episode.labels).sum())
        finished[run.name] = {
            "run": run.name,
            "n_test": len(run.queries),
            "n_errors": n_errors,
            "error_pct": 100.0 * n_errors / len(run.queries),
            "seconds": seconds,
            "predictions": [int(p) for p in predictions],
            "labels": [int(label) for label in episode.labels],
            # how far each query's true class is behind the winner (0 when correct)
            "margins": [
                round(float(s.max() - s[label]), 4)
                for s, label in zip(scores, episode.labels, strict=True)
            ],
        }
        partial = _summarise(
            {**results, "runs": [finished[r.name] for r in runs if r.name in finished]}
        )
        _write_atomic(out, partial)
        bar.update(1)
        bar.set_postfix(error_pct=f"{partial['mean_error_pct']:.1f}")
    bar.close()
    final = _summarise({**results, "runs": [finished[r.name] for r in runs]})
    _write_atomic(out, final)
    return final


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="contender name (see conceptlearn.contenders.REGISTRY)"
    )
    parser.add_argument(
        "--runs", default="dev", help="run set name (dev, dev-k5, ...) or run folder(s)"
    )
    parser.add_argument(
        "--out", required=True, help="results JSON (written as runs finish; resumed)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first N runs (for quick checks)"
    )
    parser.add_argument("--checkpoint", default=None, help="pretrained ViT checkpoint folder")
    parser.add_argument("--library", default=None, help="generative-model library .npz")
    parser.add_argument(
        "--quick", action="store_true", default=None, help="the contender's quick preset"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="override a contender hyperparameter (VALUE parsed as JSON when it can be); repeatable",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="Omniglot folder (default: $CONCEPTLEARN_DATA or ./data/omniglot)",
    )
    parser.add_argument(
        "--shift",
        default=None,
        metavar="NAME=STRENGTH",
        help="out-of-distribution shift applied to the queries, e.g. rotate=30, scale=0.7, thicken=2",
    )
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.shift is not None:
        parse_shift(args.shift)  # fail before any work on a bad spec
    runs, source = load_runs(args.runs, args.data)
    if args.limit is not None:
        runs = runs[: args.limit]
    contender = make_contender(
        args.model,
        seed=args.seed,
        checkpoint=args.checkpoint,
        library=args.library,
        quick=args.quick,
        overrides=parse_key_values(args.overrides) or None,
    )
    results = evaluate_contender(
        contender,
        runs,
        source,
        args.out,
        seed=args.seed,
        runs_spec=args.runs,
        shift=args.shift,
        progress=not args.no_progress,
    )
    lo, hi = results["ci95_pct"]
    shifted = f" (queries shifted: {args.shift})" if args.shift else ""
    print(
        f"{results['model']} on {args.runs}{shifted}: {results['mean_error_pct']:.2f}% error "
        f"(95% CI {lo:.2f}-{hi:.2f}) over {len(results['runs'])} runs, {results['seconds_total']:.1f} s"
    )
    return 0
