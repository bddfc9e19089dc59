"""How far the two-way refits are from converged: the mean refit score (forward plus backward,
each the best of the K parses) of every query against its own class, on dev runs with shifted
queries, under config variants. A search that converges further scores higher.

    CONCEPTLEARN_DATA=/work/shared/omniglot python scripts/refit_convergence.py --shift scale=0.7 \\
        --runs 3 --quick --parse-cache results/parse_cache_s15 --variant plain: \\
        --variant "grid:start_scale=0.5,start_scales=5" \\
        --variant "steps40:refit_steps=40,refit_coarse_steps=40" --out results/s17/convergence.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from conceptlearn.datasets.episodes import load_episode, load_runs
from conceptlearn.datasets.shifts import apply_shift
from conceptlearn.evaluate import run_keys
from conceptlearn.inference import classify
from conceptlearn.model.render import IMAGE_SIZE
from conceptlearn.overrides import parse_key_values


def parse_variant(spec: str) -> tuple[str, dict]:
    """``"NAME:k=v,k=v"`` -> ``(NAME, {k: v})`` (values parsed as JSON where they can be)."""
    name, sep, body = spec.partition(":")
    if not sep or not name:
        raise ValueError(f"--variant expects NAME:k=v,..., got {spec!r}")
    return name, parse_key_values([kv for kv in body.split(",") if kv])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shift", default=None, help="query shift NAME=STRENGTH (default none)")
    parser.add_argument("--runs", type=int, default=3, help="the first N dev runs")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parse-cache", default=None)
    parser.add_argument("--variant", action="append", required=True, help="NAME:k=v,...")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant]
    contender = classify.make_contender(quick=args.quick, parse_cache=args.parse_cache)
    runs, source = load_runs("dev")
    episodes = []
    for index in range(args.runs):
        episode = load_episode(runs[index], source)
        queries = episode.queries
        if args.shift:
            queries = np.asarray(apply_shift(args.shift, queries, run_keys(0, index)[2]))
        state = contender.fit(episode.support)
        q_parses, q_images = contender._queries(queries)
        episodes.append((state, q_parses, q_images, np.asarray(episode.labels)))
    results = {}
    for name, overrides in variants:
        cfg = dataclasses.replace(contender.cfg, **overrides)
        start, scores = time.perf_counter(), []
        for state, q_parses, q_images, labels in episodes:
            n_way = state.images.shape[0]
            terms = classify.score_pairs(
                classify._flat(state.parses, n_way), state.images.reshape(n_way, IMAGE_SIZE, IMAGE_SIZE),
                q_parses, q_images, labels, np.arange(len(labels)), cfg,
                n_steps=cfg.refit_steps, n_coarse=cfg.refit_coarse_steps)
            scores.append(np.asarray(terms.forward).max(1) + np.asarray(terms.backward).max(1))
        scores = np.concatenate(scores)
        results[name] = {"overrides": overrides, "mean": float(scores.mean()),
                         "median": float(np.median(scores)), "n_pairs": int(scores.size),
                         "seconds_with_compile": time.perf_counter() - start}
        print(name, json.dumps(results[name]), flush=True)
    with open(args.out, "w") as f:
        json.dump({"shift": args.shift, "runs": args.runs, "quick": args.quick,
                   "variants": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
