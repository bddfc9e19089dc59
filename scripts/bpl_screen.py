"""Screen a ``bpl`` setting on chosen dev runs, exactly as the harness would score them.

Tuning aid: the harness only takes the first N runs, while the errors concentrate in a few
(dev runs 11, 21, 23, 24 and 25 hold a third of them). The contender's parses depend only on
each image and the seed, so each run's errors match ``conceptlearn evaluate --runs dev``'s for
that setting. ``--parse-cache`` shares parses between screens of settings that only change the
scoring (and with the harness's cache).

    python scripts/bpl_screen.py --library results/small1.npz --runs 11 21 23 24 25 \
        --out results/screen.json [--set KEY=VALUE ...] [--parse-cache DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from conceptlearn.contenders import make_contender
from conceptlearn.datasets.episodes import load_episode, load_runs
from conceptlearn.overrides import parse_key_values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True, help="learned library .npz")
    parser.add_argument("--runs", type=int, nargs="+", required=True, help="dev run numbers (1-40)")
    parser.add_argument("--out", required=True, help="output JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--parse-cache", default=None, metavar="DIR", help="parse cache folder")
    args = parser.parse_args(argv)
    runs, source = load_runs("dev")
    bad = [r for r in args.runs if not 1 <= r <= len(runs)]
    if bad:
        parser.error(f"--runs: {bad} outside 1-{len(runs)}")
    overrides = parse_key_values(args.set) or None
    bpl = make_contender(
        "bpl", seed=args.seed, library=args.library, overrides=overrides,
        parse_cache=args.parse_cache,
    )
    errors: dict[str, int] = {}
    n_queries = 0
    for number in args.runs:
        i = number - 1
        episode = load_episode(runs[i], source)
        start = time.perf_counter()
        state = bpl.fit(episode.support)
        scores = np.asarray(bpl.scores(state, episode.queries))
        errors[runs[i].name] = int((scores.argmax(1) != episode.labels).sum())
        n_queries += len(episode.labels)
        print(
            runs[i].name, errors[runs[i].name], f"{time.perf_counter() - start:.0f} s", flush=True
        )
    total = sum(errors.values())
    summary = {
        "set": args.set,
        "errors": errors,
        "total_errors": total,
        "n_queries": n_queries,
    }
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(f"{total} errors in {n_queries} queries", args.set)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
