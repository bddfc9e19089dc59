"""Refit scores of chosen errors under several refit settings: is the error the search's or the
model's?

For each case (dev run, query, true class, winning class) the best parse of each of the two class
images and of the query are refit (full preset, parses fixed) under every setting given, by the
contender's pair function (:func:`conceptlearn.inference.classify.score_pairs`), and the
two-way terms are printed: ``fwd`` (class parse -> query), ``back - own`` (query parse -> class
image, minus the class parse refit to its own image) and the margin of the true class over the
winner (positive: the error is fixed).

    python scripts/bpl_refit_cases.py --library results/small1.npz \
        --cases 12,15,8,11 33,6,15,12 --set '{}' --set '{"wide_lr": 1.5, "wide_blur": 12.0}'
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

from conceptlearn.datasets.episodes import load_episode, load_runs
from conceptlearn.inference.classify import FULL, score_pairs, self_scores
from conceptlearn.inference.config import preset
from conceptlearn.inference.fit import parse_images
from conceptlearn.model.library import load_library


def best(parses):
    """The best parse of each image: leading axes ``(n, 1)``."""
    return jax.tree.map(lambda x: x[:, :1], parses)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True, help="learned library .npz")
    parser.add_argument(
        "--cases", nargs="+", required=True, help="RUN,QUERY,TRUE,WINNER (dev run from 1)"
    )
    parser.add_argument("--set", action="append", default=[], help="JSON dict of overrides")
    args = parser.parse_args(argv)
    library = load_library(args.library)
    runs, source = load_runs("dev")
    settings = [json.loads(s) for s in args.set] or [{}]
    for case in args.cases:
        run, query, true, winner = (int(x) for x in case.split(","))
        episode = load_episode(runs[run - 1], source)
        classes = episode.support[[true, winner], 0]  # (2, 105, 105)
        c_parses = best(parse_images(classes, FULL, 0, library))
        q_image = episode.queries[query][None]  # (1, 105, 105)
        q_parse = best(parse_images(q_image, FULL, 0, library))
        for overrides in settings:
            cfg = preset(overrides=overrides)
            steps = dict(n_steps=cfg.refit_steps, n_coarse=cfg.refit_coarse_steps)
            pair = score_pairs(c_parses, classes, q_parse, q_image, np.arange(2),
                               np.zeros(2, int), cfg, **steps)  # (2, 1) each way
            own = self_scores(c_parses, classes, cfg, **steps)
            terms = [(float(pair.forward[i, 0]), float(pair.backward[i, 0] - own[i, 0]))
                     for i in range(2)]
            margin = sum(terms[0]) - sum(terms[1])
            print(
                f"run {run} query {query} {overrides}: true fwd {terms[0][0]:.0f} "
                f"back-own {terms[0][1]:.0f} | winner fwd {terms[1][0]:.0f} "
                f"back-own {terms[1][1]:.0f} | margin {margin:.0f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
