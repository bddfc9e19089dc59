"""Refit scores of chosen errors under several refit settings: is the error the search's or the
model's?

For each case (dev run, query, true class, winning class) the best parse of each of the two class
images and of the query are refit (full preset, parses fixed) under every setting given, and the
two-way terms are printed: ``fwd`` (class parse -> query), ``back - own`` (query parse -> class
image, minus the class parse refit to its own image) and the margin of the true class over the
winner (positive: the error is fixed).

    python scripts/bpl_refit_cases.py --library results/small1.npz \
        --cases 12,15,8,11 33,6,15,12 --set '{}' --set '{"wide_lr": 1.5, "wide_blur": 12.0}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from conceptlearn.datasets.episodes import load_episode, load_runs
from conceptlearn.inference.classify import FULL, parse_images
from conceptlearn.inference.fit import fit_token
from conceptlearn.model.library import load_library

_fit = jax.jit(fit_token, static_argnames=("cfg", "n_steps"))


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
        classes = episode.support[[true, winner], 0]
        q_image = jnp.asarray(episode.queries[query])
        c_parses = parse_images(classes, FULL, 0, library)
        q_parse = parse_images(np.asarray(q_image)[None], FULL, 1, library)
        for overrides in settings:
            cfg = dataclasses.replace(FULL, **overrides)
            terms = []
            for i in range(2):
                image = jnp.asarray(classes[i])
                points, mask = c_parses.points[i, 0], c_parses.mask[i, 0]
                fwd = _fit(points, mask, q_image, cfg)[0]
                back = _fit(q_parse.points[0, 0], q_parse.mask[0, 0], image, cfg)[0]
                own = _fit(points, mask, image, cfg)[0]
                terms.append((float(fwd), float(back - own)))
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
