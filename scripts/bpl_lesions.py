"""Lesions and pruning cost of the bpl contender on the first N dev runs (k = 1, all 20 queries).
Usage: python lesions.py N OUT.json. Scores every (query, class) pair without pruning, then
derives each variant's predictions from the same fits."""

import dataclasses
import json
import sys
import time

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from conceptlearn.datasets.episodes import load_episode, load_runs
from conceptlearn.inference.classify import QUICK, parse_images, refit_batch

n_runs, out = int(sys.argv[1]), sys.argv[2]
runs, src = load_runs("dev")
cfg = QUICK
errors, t0 = {}, time.time()


def pairs(parses, targets, steps, best_only=False):
    """refit scores (n_target, n_parse_images, K) of every parse to every target image."""
    pts, msk = parses.points, parses.mask
    if best_only:
        pts, msk = pts[:, :1], msk[:, :1]
    m, (n, K) = targets.shape[0], msk.shape[:2]

    def b(x):
        return jnp.broadcast_to(x[None], (m,) + x.shape).reshape((-1,) + x.shape[2:])

    ims = jnp.broadcast_to(jnp.asarray(targets)[:, None, None], (m, n, K, 105, 105)).reshape(
        -1, 105, 105
    )
    return np.asarray(refit_batch(b(pts), b(msk), ims, cfg, steps)).reshape(m, n, K)


def err(scores, labels):
    return int((np.asarray(scores).argmax(1) != labels).sum())


for ri in range(n_runs):
    ep = load_episode(runs[ri], src)
    sup, qry, lab = ep.support[:, 0], ep.queries, ep.labels
    for name, pc in [("refined", cfg), ("unrefined", dataclasses.replace(cfg, parse_steps=0))]:
        sp, qp = parse_images(sup, pc, 0), parse_images(qry, pc, 1000)
        fwd = pairs(sp, qry, cfg.refit_steps)  # (q, c, K)
        bwd = pairs(qp, sup, cfg.refit_steps).transpose(1, 0, 2)  # (q, c, K)
        own = np.stack([pairs(sp, sup[i : i + 1], cfg.refit_steps)[0, i] for i in range(len(sup))])
        w_c, w_q = np.asarray(sp.log_weight), np.asarray(qp.log_weight)
        ev = logsumexp(w_c + own, -1)
        one = logsumexp(w_c[None] + fwd, -1)
        two = one + logsumexp(w_q[:, None] + bwd, -1) - ev[None]
        two_k1 = fwd[..., 0] + bwd[..., 0] - own[None, :, 0]
        res = {f"{name} two-way K=2": two}
        if name == "refined":
            cheap = pairs(sp, qry, cfg.prune_steps, best_only=True)[..., 0]
            res.update(
                {
                    "refined one-way K=2": one,
                    "refined two-way K=1": two_k1,
                    "cheap prune score alone": cheap,
                }
            )
            for width in (1, 2, 4, 8):
                kept = np.argsort(-cheap, 1)[:, :width]
                pruned = np.full_like(two, -np.inf)
                np.put_along_axis(pruned, kept, np.take_along_axis(two, kept, 1), 1)
                res[f"refined two-way K=2, prune width {width}"] = pruned
        for k, v in res.items():
            errors[k] = errors.get(k, 0) + err(v, lab)
    print(ri, errors, f"{time.time() - t0:.0f}s", flush=True)
json.dump(
    {
        "n_runs": n_runs,
        "n_queries": 20 * n_runs,
        "errors": errors,
        "config": dataclasses.asdict(cfg),
        "seconds": time.time() - t0,
    },
    open(out, "w"),
    indent=1,
)
