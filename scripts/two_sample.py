"""Two-sample test of generated exemplars: can a classifier tell them from real drawings?

For ``--concepts`` one-shot concepts of the dev alphabets (characters of the dev runs taken
round-robin over the runs, each shown by one drawing of a randomly drawn drawer), each generator
makes 9 new exemplars. The 9 real drawings of the same character by other drawers are the
reference. A discriminator is L2 logistic regression (C = 1, on standardised features) on the
pretrained ViT's pooled embedding (the shipped small1 checkpoint). It is cross-validated by
concept, with 5 folds grouped by support drawer: no concept, and no drawer's hand, is in both a
training and a test fold. The script reports its held-out accuracy, with a 95% bootstrap
interval over concepts. 50% means the generated and real drawings cannot be told apart.

Before session 18 the concepts were the training classes of dev runs 1-3, whose support images
come from one drawer per run (``--support runs``). The discriminator then learned those three
drawers' hands (small, low writing) from the other folds' generated drawings: a confound shared
by every generator conditioned on the support image.

Generators:

- ``bpl``: ``conceptlearn.concept.generate`` (token noise around the parses), binarised at 1/2;
- ``affine``: the support image under a random affine map (rotation, scale, shear, shift with the
  trajectory token's standard deviations) and a random pen change (thicken or thin by 1 px, or
  neither).

    CONCEPTLEARN_DATA=/work/shared/omniglot python scripts/two_sample.py --concepts 50 \\
        --out results/two_sample.json --grids docs/img
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import zip_longest
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize

N_EXEMPLARS = 9


def dev_concepts(n: int, root=None, support: str = "drawers", seed: int = 0):
    """Support images ``bool (n, 105, 105)``, the real drawings of each character by 9 other
    drawers ``bool (n, 9, 105, 105)``, and each support image's drawer ``list[str]``
    (``"Alphabet/NN"``; drawers are people, and each alphabet has its own).

    ``support="runs"``: the training classes of dev runs 1, 2, ... in order, with their run's
    support drawer (one drawer per run, so 50 concepts share 3 drawers). ``support="drawers"``:
    the characters of the dev runs taken round-robin over the runs (each run's first class, then
    each run's second, ...), each with a support drawer drawn at random (``seed``), so that no
    one drawer's hand runs through the generated class."""
    from conceptlearn.datasets.episodes import load_runs
    from conceptlearn.datasets.omniglot import parse_key

    if support not in ("runs", "drawers"):
        raise ValueError(f"support: expected 'runs' or 'drawers', got {support!r}")
    runs, source = load_runs("dev", root)
    if support == "runs":
        chosen = [shots[0] for run in runs for shots in run.support][:n]
    else:
        rng = np.random.default_rng(seed)
        classes = (shots for rank in zip_longest(*(run.support for run in runs)) for shots in rank)
        characters = dict.fromkeys(tuple(s[0].split("/")[:2]) for s in classes if s is not None)
        chosen = []
        for character in list(characters)[:n]:
            keys = source.keys(*character)
            chosen.append(keys[rng.integers(len(keys))])
    support_images, real, drawers = [], [], []
    for key in chosen:
        alphabet, character = key.split("/")[:2]
        others = [k for k in source.keys(alphabet, character) if k != key][:N_EXEMPLARS]
        support_images.append(source.image(key))
        real.append(source.images(others))
        drawers.append(f"{alphabet}/{parse_key(key)['drawer']:02d}")
    return np.stack(support_images), np.stack(real), drawers


def affine_jitter(images: np.ndarray, key: jax.Array) -> np.ndarray:
    """``N_EXEMPLARS`` jittered copies of each of ``images bool (n, 105, 105)``."""
    from conceptlearn.datasets.shifts import _dilate, _warp
    from conceptlearn.inference.config import FULL, learned_noise
    from conceptlearn.shipped import resolve_library

    cfg = learned_noise(FULL, resolve_library(None))

    def one(image, k):
        ks = jax.random.split(k, 6)
        theta = cfg.rotate_sigma * jax.random.normal(ks[0])
        c, s = jnp.cos(theta), jnp.sin(theta)
        rotation = jnp.array([[c, -s], [s, c]])
        shear = jnp.array([[1.0, 0.0], [cfg.shear_sigma * jax.random.normal(ks[1]), 1.0]])
        scale = jnp.diag(jnp.exp(cfg.scale_sigma * jax.random.normal(ks[2], (2,))))
        shift = cfg.shift_sigma * jax.random.normal(ks[3], (2,))
        warped = _warp(image, jnp.linalg.inv(rotation @ shear @ scale), -shift)
        thick = _dilate(warped, 1)
        thin = ~_dilate(~warped, 1)
        thin = jnp.where(thin.any(), thin, warped)
        pen = jax.random.randint(ks[4], (), 0, 3)
        return jnp.select([pen == 0, pen == 1], [warped, thick], thin)

    keys = jax.random.split(key, images.shape[0] * N_EXEMPLARS).reshape(
        images.shape[0], N_EXEMPLARS
    )
    draw = jax.jit(jax.vmap(jax.vmap(one, (None, 0)), (0, 0)))
    return np.asarray(draw(jnp.asarray(images), keys))


def embed(images: np.ndarray) -> np.ndarray:
    """The pretrained ViT's pooled features ``f32 (n, d)`` of ``images bool (n, 105, 105)``."""
    from flax import nnx

    from conceptlearn.baselines.vit.finetune import _embed_views, _prefix, _pretrained
    from conceptlearn.baselines.vit.model import init_classifier

    cfg, backbone, _, _ = _pretrained(None, "vit")
    graphdef, params = init_classifier(cfg, 2)
    params["backbone"] = backbone
    model = nnx.merge(graphdef, params)
    out = [
        np.asarray(_prefix(model, _embed_views(cfg, jnp.asarray(chunk)), cfg.depth + 1))
        for chunk in np.array_split(images, max(1, len(images) // 256))
    ]
    return np.concatenate(out)


def logistic_fit(x: np.ndarray, y: np.ndarray, c: float = 1.0) -> np.ndarray:
    """L2 logistic regression weights ``(d + 1,)`` (bias last) by L-BFGS."""
    xb = np.hstack([x, np.ones((len(x), 1))])

    def loss(w):
        z = xb @ w
        nll = np.sum(np.logaddexp(0.0, z) - y * z)
        grad = xb.T @ (1.0 / (1.0 + np.exp(-z)) - y)
        reg = 0.5 * np.sum(w[:-1] ** 2) / c
        return nll + reg, grad + np.append(w[:-1] / c, 0.0)

    return minimize(loss, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B").x


def two_sample_accuracy(
    real: np.ndarray, fake: np.ndarray, folds: int = 5, seed: int = 0, groups=None
):
    """Held-out accuracy of telling ``fake`` from ``real`` features ``(n_concepts, m, d)``,
    cross-validated by concept: ``(accuracy, (low, high) 95% bootstrap over concepts,
    per-concept accuracies)``. ``groups`` (one label per concept, e.g. its support drawer): the
    concepts of a group share a fold, so no group is in both a training and a test fold."""
    n, m, d = real.shape
    x = np.concatenate([real, fake], axis=1)  # (n, 2m, d)
    y = np.concatenate([np.zeros(m), np.ones(m)])
    labels, group = np.unique(np.arange(n) if groups is None else np.asarray(groups),
                              return_inverse=True)
    if len(labels) < folds:
        raise ValueError(f"groups: {len(labels)} groups cannot fill {folds} folds")
    fold = (np.random.default_rng(seed).permutation(len(labels)) % folds)[group]
    per_concept = np.zeros(n)
    for f in range(folds):
        train, test = fold != f, fold == f
        xt = x[train].reshape(-1, d)
        mean, sd = xt.mean(0), xt.std(0) + 1e-6
        w = logistic_fit((xt - mean) / sd, np.tile(y, train.sum()))
        z = ((x[test] - mean) / sd) @ w[:-1] + w[-1]  # (n_test, 2m)
        per_concept[test] = np.mean((z > 0) == y[None].astype(bool), axis=1)
    rng = np.random.default_rng(seed + 1)
    boot = [per_concept[rng.integers(0, n, n)].mean() for _ in range(2000)]
    return float(per_concept.mean()), tuple(np.percentile(boot, [2.5, 97.5]).tolist()), per_concept


def diversity(real: np.ndarray, fake: np.ndarray) -> float:
    """How varied a generator's exemplars are, against the real drawings: the mean pairwise
    distance between the exemplars of a concept over that between its real drawings, averaged
    over concepts, in features ``(n_concepts, m, d)`` standardised over both sets. 1: as varied
    as different drawers; near 0: copies. A generator can look real by copying its support
    image, so the two-sample accuracy is read with this beside it."""
    x = np.concatenate([real, fake], axis=1)
    flat = x.reshape(-1, x.shape[-1])
    z = (x - flat.mean(0)) / (flat.std(0) + 1e-6)
    m = real.shape[1]

    def spread(a):  # (n, m, d) -> (n,) mean pairwise distance
        d = np.linalg.norm(a[:, :, None] - a[:, None], axis=-1)
        return d.sum((1, 2)) / (m * (m - 1))

    return float(np.mean(spread(z[:, m:]) / spread(z[:, :m])))


def paired_difference(per_a: np.ndarray, per_b: np.ndarray, seed: int = 0):
    """Mean of ``per_a - per_b`` (per-concept accuracies of two generators on the same
    concepts) with a 95% bootstrap interval over concepts: ``(difference, (low, high))``."""
    diff = np.asarray(per_a) - np.asarray(per_b)
    rng = np.random.default_rng(seed + 2)
    boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
    return float(diff.mean()), tuple(np.percentile(boot, [2.5, 97.5]).tolist())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", required=True, help="results JSON")
    parser.add_argument("--grids", default=None, help="folder for the grids of both generators")
    parser.add_argument(
        "--support",
        choices=("drawers", "runs"),
        default="drawers",
        help="drawers (default): round-robin characters of the dev runs, each from a random "
        "drawer; runs: the first runs' training classes, one drawer per run (before session 18)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="also a bpl generator with these token-noise overrides (a diagnostic)",
    )
    args = parser.parse_args(argv)

    from conceptlearn.concept import generate
    from conceptlearn.model.sample import save_grid

    start = time.perf_counter()
    support, real, drawers = dev_concepts(args.concepts, args.data, args.support, args.seed)
    n = len(support)
    fakes = {
        "bpl": generate(support[:, None], N_EXEMPLARS, seed=args.seed) > 0.5,
        "affine": affine_jitter(support, jax.random.key(args.seed)),
    }
    for variant in args.variant:
        name, _, sets = variant.partition(":")
        overrides = {k: float(v) for k, v in (kv.split("=") for kv in sets.split(","))}
        new = generate(support[:, None], N_EXEMPLARS, seed=args.seed, overrides=overrides)
        fakes[name] = new > 0.5
    shape = (n, N_EXEMPLARS, -1)
    real_features = embed(real.reshape(-1, 105, 105)).reshape(shape)
    out = {
        "concepts": n,
        "exemplars": N_EXEMPLARS,
        "seed": args.seed,
        "support": args.support,
        "support_drawers": len(set(drawers)),
        "discriminator": "L2 logistic regression (C=1) on the shipped ViT's pooled embedding, "
        "5-fold cross-validated by concept"
        + (", folds grouped by support drawer" if args.support == "drawers" else ""),
    }
    per_concept = {}
    for name, fake in fakes.items():
        fake_features = embed(fake.reshape(-1, 105, 105)).reshape(shape)
        acc, interval, per_concept[name] = two_sample_accuracy(
            real_features,
            fake_features,
            seed=args.seed,
            groups=drawers if args.support == "drawers" else None,
        )
        out[name] = {
            "accuracy": round(acc, 4),
            "ci95": [round(v, 4) for v in interval],
            "diversity": round(diversity(real_features, fake_features), 4),
        }
        if args.grids:
            rows = np.concatenate([support[:10, None], fake[:10]], axis=1).astype(np.float32)
            save_grid(rows, str(Path(args.grids) / f"two_sample_{name}.png"))
    for name in fakes:
        if name != "affine":  # paired over concepts: tighter than the two intervals
            diff, (low, high) = paired_difference(per_concept[name], per_concept["affine"])
            out[name]["minus_affine"] = round(diff, 4)
            out[name]["minus_affine_ci95"] = [round(low, 4), round(high, 4)]
    if args.grids:
        rows = np.concatenate([support[:10, None], real[:10]], axis=1).astype(np.float32)
        save_grid(rows, str(Path(args.grids) / "two_sample_real.png"))
    out["seconds"] = round(time.perf_counter() - start, 1)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
