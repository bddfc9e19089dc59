"""A floor for the ViT: nearest class mean (cosine) on the 28 px clean views the ViT sees.

python scripts/vit_pixel_floor.py dev dev-k5 [--limit 10]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from conceptlearn.baselines import vit
from conceptlearn.baselines.vit.finetune import _embed_views
from conceptlearn.datasets.episodes import load_episode, load_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--limit", type=int, default=10)
    args = parser.parse_args()
    views = jax.jit(lambda ims: _embed_views(vit.ViTConfig(), ims))
    for spec in args.runs:
        runs, source = load_runs(spec)
        errors = []
        for run in runs[: args.limit]:
            ep = load_episode(run, source)
            n, k = ep.support.shape[:2]
            flat = ep.support.reshape(n * k, 105, 105)
            means = np.asarray(views(jnp.asarray(flat))).reshape(n, k, -1).mean(1)
            queries = np.asarray(views(jnp.asarray(ep.queries))).reshape(len(ep.queries), -1)
            means = means / np.linalg.norm(means, axis=1, keepdims=True)
            queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
            errors.append(np.mean((queries @ means.T).argmax(1) != ep.labels))
        print(
            f"{spec}: pixel nearest class mean, runs 1-{len(errors)}: {100 * np.mean(errors):.1f}% error"
        )


if __name__ == "__main__":
    main()
