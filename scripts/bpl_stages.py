"""Time per stage of the bpl contender on one dev run (k = 1), after a warm-up run that compiles.

python scripts/bpl_stages.py --library results/small1.npz --run 1 [--full] [--out F.json]
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from conceptlearn.datasets.episodes import load_episode, load_runs
from conceptlearn.inference import classify as C
from conceptlearn.inference.fit import refine_parses, top_k
from conceptlearn.inference.parse_type import parse_type_log_probs
from conceptlearn.inference.proposals import propose
from conceptlearn.model.library import load_library


def timed(episode, cfg, library) -> dict:
    """Seconds per stage of scoring one episode."""
    t = {}
    images = np.concatenate([episode.support[:, 0], episode.queries])
    n = len(images)
    s = time.perf_counter()
    props = [
        propose(
            im,
            max_candidates=cfg.max_candidates,
            max_strokes=cfg.max_strokes,
            n_points=cfg.n_points,
            seed=i,
        )
        for i, im in enumerate(images)
    ]
    t[f"proposals ({n} images)"] = time.perf_counter() - s
    s = time.perf_counter()
    refined = [
        refine_parses(p.points, p.mask, p.valid, jnp.asarray(im), cfg)
        for p, im in zip(props, images, strict=True)
    ]
    jax.block_until_ready(refined)
    t[f"refinement ({n} images x {cfg.max_candidates} proposals)"] = time.perf_counter() - s
    s = time.perf_counter()
    priors = [
        parse_type_log_probs(library, r[0], jnp.asarray(p.mask))
        for r, p in zip(refined, props, strict=True)
    ]
    jax.block_until_ready(priors)
    t["log P(type) of every refined proposal"] = time.perf_counter() - s
    parses = [
        top_k(r[0], jnp.asarray(p.mask), r[1] + lp, cfg.n_parses)
        for r, p, lp in zip(refined, props, priors, strict=True)
    ]

    def stack(ps):
        return jax.tree.map(lambda *x: jnp.stack(x), *ps)

    n_way = episode.support.shape[0]
    sp, qp = stack(parses[:n_way]), stack(parses[n_way:])
    s = time.perf_counter()
    ev = C.log_evidence(sp, jnp.asarray(episode.support[:, 0]), cfg).block_until_ready()
    t[f"evidence self-refits ({n_way} x K)"] = time.perf_counter() - s
    state = C.State(
        jax.tree.map(lambda x: x[:, None], sp), jnp.asarray(episode.support), ev[:, None]
    )
    queries = jnp.asarray(episode.queries)
    pruning = 0.0
    if cfg.prune_width < n_way:
        s = time.perf_counter()
        C.prune_scores(state, qp, queries, cfg).block_until_ready()
        pruning = t["pruning refits (best parses, both directions)"] = time.perf_counter() - s
    s = time.perf_counter()
    scores = np.asarray(C.score_queries(state, qp, queries, cfg))  # prunes again inside
    t["two-way refits of the kept classes"] = time.perf_counter() - s - pruning
    t["total"] = sum(t.values())
    t["errors"] = int((scores.argmax(1) != episode.labels).sum())
    return t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True)
    parser.add_argument("--run", type=int, default=1, help="dev run index (0-based)")
    parser.add_argument("--full", action="store_true", help="FULL preset (default QUICK)")
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    args = parser.parse_args()
    cfg = C.FULL if args.full else C.QUICK
    library = load_library(args.library)
    runs, source = load_runs("dev")
    timed(load_episode(runs[0], source), cfg, library)  # compiles
    table = timed(load_episode(runs[args.run], source), cfg, library)
    table = {"preset": "full" if args.full else "quick", "run": runs[args.run].name, **table}
    print(json.dumps(table, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(table, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
