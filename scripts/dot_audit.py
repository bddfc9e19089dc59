"""Dots on the dev runs (issue 13): how the support images' lone blobs of ink thin, and how
often bpl errs on the queries that have a dot, for several harness results files.

    python scripts/dot_audit.py --results results/s19/base_quick.json \
        results/s19/dot5_quick.json --out results/s19/dot_audit.json

A *blob* is a connected component of ink (8-connected) of at most ``--max-area`` pixels; the
audit counts how the skeleton graph (:func:`conceptlearn.inference.proposals.skeleton_graph`)
turns each into a single pixel (a dot as the walks have always had it) or an edge, and how many
are dots at ``--dot-length``. A query *has a dot* when it or its true class's support image
holds a dot at ``--dot-length``. For each results file (k = 1, the same dev runs) it gives the
errors on those queries and on all of them.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from conceptlearn.datasets.episodes import load_episode, load_runs
from conceptlearn.evaluate import write_atomic
from conceptlearn.inference.classify import as_image
from conceptlearn.inference.proposals import skeleton_graph


def blob_kinds(image: np.ndarray, max_area: int, dot_length: float) -> collections.Counter:
    """How the lone blobs of ``image bool (H, W)`` thin: counts of ``pixel``, ``edge`` and
    ``dot`` (a dot at ``dot_length``), and their total ``area``."""
    labels, n = ndimage.label(image, np.ones((3, 3)))
    kinds: collections.Counter = collections.Counter()
    for c in range(1, n + 1):
        blob = labels == c
        if blob.sum() > max_area:
            continue
        plain = skeleton_graph(blob)
        kinds["pixel" if not plain.edges else "edge"] += 1
        kinds["dot"] += len(skeleton_graph(blob, dot_length=dot_length).dots) > 0
        kinds["area"] += int(blob.sum())
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", nargs="+", required=True, help="harness results (k = 1)")
    parser.add_argument("--dot-length", type=float, default=5.0)
    parser.add_argument("--max-area", type=int, default=60, help="px: the largest blob")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    runs, source = load_runs("dev")
    results = {name: json.loads(Path(name).read_text()) for name in args.results}
    blobs: collections.Counter = collections.Counter()
    errors = {name: collections.Counter() for name in results}
    n_dot_queries = n_queries = n_support = 0
    for i, run in enumerate(runs):
        per_run = {name: r["runs"][i] for name, r in results.items()}
        if any(r["run"] != per_run[args.results[0]]["run"] for r in per_run.values()):
            raise SystemExit(f"dot_audit: the results files differ in their run {i}")
        episode = load_episode(run, source)
        support = [as_image(im) for im in np.asarray(episode.support)[:, 0]]
        n_support += len(support)
        support_dots = []
        for im in support:
            kinds = blob_kinds(im, args.max_area, args.dot_length)
            blobs.update(kinds)
            support_dots.append(kinds["dot"] > 0)
        for j, (query, label) in enumerate(zip(episode.queries, episode.labels, strict=True)):
            dot = support_dots[int(label)] or blob_kinds(
                as_image(np.asarray(query)), args.max_area, args.dot_length)["dot"] > 0
            n_dot_queries += dot
            n_queries += 1
            for name, r in per_run.items():
                wrong = r["predictions"][j] != int(label)
                errors[name]["all"] += wrong
                errors[name]["dot_queries"] += wrong and dot
    payload = {
        "command": "python scripts/dot_audit.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()),
        "support_images": n_support,
        "blobs": dict(blobs),
        "queries": n_queries,
        "dot_queries": n_dot_queries,
        "errors": {name: dict(e) for name, e in errors.items()},
    }
    write_atomic(Path(args.out), payload)
    print(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
