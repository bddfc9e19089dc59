"""Fit the softmax temperature of ``Concepts.predict_proba`` for one contender on dev runs.

Learns every run's support with ``cl.learn`` (the contender as ``cl.learn`` builds it), scores
its queries (``Concepts.score``: all ``n_way`` scores, which the results JSON of ``conceptlearn
evaluate`` does not keep), and picks the one temperature ``T`` that minimises the mean negative
log-likelihood of the true classes under ``softmax(score / T)``. Writes the fit (and the score
matrices, so that a refit needs no rerun: ``--from-scores``) to JSON; ``--write-package`` also
records ``T`` in ``conceptlearn/data/temperatures.json``, where ``predict_proba`` reads it.

    CONCEPTLEARN_DATA=/work/shared/omniglot python scripts/fit_temperature.py --model mhd \\
        --n-runs 40 --out results/temperature_mhd.json --write-package
    CONCEPTLEARN_DATA=/work/shared/omniglot python scripts/fit_temperature.py --model bpl \\
        --quick --n-runs 3 --out results/temperature_bpl.json --write-package
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

PACKAGE_FILE = Path(__file__).resolve().parents[1] / "conceptlearn" / "data" / "temperatures.json"


def nll(scores: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean ``-log softmax(scores / T)[label]`` over queries: ``scores (n, n_way)``."""
    logits = scores / temperature
    return float(np.mean(logsumexp(logits, axis=1) - logits[np.arange(len(labels)), labels]))


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The ``T`` in ``[1e-4, 1e6]`` minimising :func:`nll` (bounded search over ``log T``)."""
    result = minimize_scalar(
        lambda log_t: nll(scores, labels, float(np.exp(log_t))),
        bounds=(np.log(1e-4), np.log(1e6)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def calibration_error(scores: np.ndarray, labels: np.ndarray, t: float, bins: int = 10) -> float:
    """Expected calibration error of the top class (``bins`` equal-width confidence bins)."""
    logits = scores / t
    p = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    confidence, correct = p.max(1), p.argmax(1) == labels
    edges = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(correct[edges == b].mean() - confidence[edges == b].mean()) * np.mean(edges == b)
            for b in range(bins)
            if np.any(edges == b)
        )
    )


def score_runs(model: str, runs_spec: str, n_runs: int, options: dict, seed: int, root=None):
    """Scores ``f32 (n_runs * n_query, n_way)`` and labels of the first ``n_runs`` runs."""
    import conceptlearn as cl
    from conceptlearn.datasets.episodes import load_episode, load_runs

    runs, source = load_runs(runs_spec, root)
    all_scores, all_labels = [], []
    for run in runs[:n_runs]:
        episode = load_episode(run, source)
        concepts = cl.learn(episode.support, model=model, seed=seed, **options)
        all_scores.append(concepts.score(episode.queries))
        all_labels.append(episode.labels)
        print(f"{run.name}: {len(all_labels)}/{n_runs}", file=sys.stderr, flush=True)
    return np.concatenate(all_scores), np.concatenate(all_labels)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bpl")
    parser.add_argument("--runs", default="dev", help="run set (default: the dev runs)")
    parser.add_argument("--n-runs", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="bpl: the QUICK preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="Omniglot folder (default $CONCEPTLEARN_DATA)")
    parser.add_argument("--from-scores", default=None, help="refit from an earlier --out JSON")
    parser.add_argument("--out", required=True, help="results JSON")
    parser.add_argument("--write-package", action="store_true", help="record T in the package")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    options = {"quick": True} if args.quick else {}
    if args.from_scores:
        earlier = json.loads(Path(args.from_scores).read_text())
        scores = np.asarray(earlier["scores"], np.float64)
        labels = np.asarray(earlier["labels"])
        n_runs = earlier["n_runs"]
    else:
        scores, labels = score_runs(
            args.model, args.runs, args.n_runs, options, args.seed, args.data
        )
        n_runs = args.n_runs
    scores = scores.astype(np.float64)
    t = fit_temperature(scores, labels)
    fit = {
        "model": args.model,
        "options": options,
        "runs": args.runs,
        "n_runs": n_runs,
        "n_queries": int(len(labels)),
        "temperature": round(t, 6),
        "nll": round(nll(scores, labels, t), 4),
        "nll_at_1": round(nll(scores, labels, 1.0), 4),
        "ece": round(calibration_error(scores, labels, t), 4),
        "ece_at_1": round(calibration_error(scores, labels, 1.0), 4),
        "accuracy": round(float(np.mean(scores.argmax(1) == labels)), 4),
        "command": "python scripts/fit_temperature.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(fit))
    out = {**fit, "scores": np.round(scores, 4).tolist(), "labels": labels.tolist()}
    Path(args.out).write_text(json.dumps(out) + "\n")
    if args.write_package:
        table = json.loads(PACKAGE_FILE.read_text()) if PACKAGE_FILE.exists() else {}
        table[args.model] = {k: v for k, v in fit.items() if k not in ("seconds",)}
        PACKAGE_FILE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
