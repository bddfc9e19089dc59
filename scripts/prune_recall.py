"""How often bpl's cheap pruning score keeps the true class, for several pruning settings.

    python scripts/prune_recall.py --library results/small1.npz --runs 40 \
        --variant old prune_lr=0.6 prune_blur=6 --variant new \
        --variant steps4 prune_steps=4 --out results/prune_recall.json

For each dev run (k = 1) it parses the episode (through ``--parse-cache``), then ranks the
classes of every query by :func:`conceptlearn.inference.classify.prune_scores` under each
``--variant NAME [KEY=VALUE ...]`` (overrides of the full preset) and counts the queries whose
true class falls outside the top W, for W = 1..8, with the seconds per episode of the pruning.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from conceptlearn.datasets.episodes import load_episode, load_runs
from conceptlearn.inference import classify as C
from conceptlearn.inference.config import preset
from conceptlearn.overrides import parse_key_values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True)
    parser.add_argument("--runs", type=int, default=40, help="the first N dev runs")
    parser.add_argument("--variant", nargs="+", action="append", required=True,
                        metavar="NAME [KEY=VALUE]")
    parser.add_argument("--parse-cache", default="results/parse_cache")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    runs, source = load_runs("dev")
    contender = C.BPLContender(preset(False), library=args.library,
                               parse_cache=args.parse_cache)
    variants = {v[0]: dataclasses.replace(contender.cfg, **parse_key_values(v[1:]))
                for v in args.variant}
    ranks = {name: [] for name in variants}
    seconds = dict.fromkeys(variants, 0.0)
    for index, run in enumerate(runs[: args.runs]):
        episode = load_episode(run, source)
        state = contender.fit(episode.support)
        q_parses, q_images = contender._queries(episode.queries)
        for name, cfg in variants.items():
            start = time.perf_counter()
            cheap = C.prune_scores(state, q_parses, q_images, cfg)[..., 0]
            if index:  # the first episode compiles
                seconds[name] += time.perf_counter() - start
            order = np.argsort(-cheap, axis=1, kind="stable")
            ranks[name] += [int(np.nonzero(o == label)[0][0])
                            for o, label in zip(order, episode.labels, strict=True)]
    report = {
        name: {
            "queries": len(r),
            "true_class_outside_top": {w: int((np.asarray(r) >= w).sum()) for w in range(1, 9)},
            "seconds_per_episode": seconds[name] / max(args.runs - 1, 1),
            "config": {k: getattr(variants[name], k) for k in
                       ("prune_steps", "prune_lr", "prune_blur", "prune_level",
                        "two_way")},
        }
        for name, r in ranks.items()
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
