"""Time per stage of the bpl contender (quick preset) on dev run N (after one warm-up run)."""

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from conceptlearn.datasets.episodes import load_episode, load_runs
from conceptlearn.inference import classify as C
from conceptlearn.inference.fit import refine_parses, top_k
from conceptlearn.inference.proposals import propose

cfg = C.QUICK
runs, src = load_runs("dev")


def timed(ri):
    ep = load_episode(runs[ri], src)
    t = {}
    imgs = np.concatenate([ep.support[:, 0], ep.queries])
    s = time.perf_counter()
    props = [
        propose(
            im,
            max_candidates=cfg.max_candidates,
            max_strokes=cfg.max_strokes,
            n_points=cfg.n_points,
            seed=i,
        )
        for i, im in enumerate(imgs)
    ]
    t["proposals (40 images)"] = time.perf_counter() - s
    s = time.perf_counter()
    parses = []
    for p, im in zip(props, imgs, strict=True):
        pts, ll, lp = refine_parses(p.points, p.mask, p.valid, jnp.asarray(im), cfg)
        parses.append(top_k(pts, jnp.asarray(p.mask), ll + lp, cfg.n_parses))
    jax.block_until_ready(parses)
    t["refinement (40 images)"] = time.perf_counter() - s

    def stack(ps):
        return jax.tree.map(lambda *x: jnp.stack(x), *ps)

    sp, qp = stack(parses[:20]), stack(parses[20:])
    s = time.perf_counter()
    ev = C.log_evidence(sp, jnp.asarray(ep.support[:, 0]), cfg).block_until_ready()
    t["evidence self-refits (20 x K)"] = time.perf_counter() - s
    sp = jax.tree.map(lambda x: x[:, None], sp)
    state = C.State(sp, jnp.asarray(ep.support), ev[:, None])
    s = time.perf_counter()
    sc = np.asarray(C.score_queries(state, qp, jnp.asarray(ep.queries), cfg))
    t["pruning + two-way refits"] = time.perf_counter() - s
    t["errors"] = int((sc.argmax(1) != ep.labels).sum())
    return t


timed(0)
print(json.dumps(timed(int(sys.argv[1])), indent=1))
