"""One-shot classification by analysis by synthesis: the ``bpl`` contender (DESIGN.md §5).

For a query image ``I_T`` and a class image ``I_C`` the score is BPL's two-way score

    log P(I_T | I_C) + log P(I_C | I_T) - log P(I_C),

with ``log P(I_T | I_C) = logsumexp_k [log w_k + max_theta log P(I_T | theta) P(theta | parse_k)]``
over the ``K`` best parses of ``I_C`` (:func:`conceptlearn.inference.fit.parse_image`), ``theta``
the token variables refit to ``I_T`` (:func:`conceptlearn.inference.fit.refit_token`). The
evidence ``log P(I_C)`` is estimated with the same refit, of ``I_C``'s own parses to ``I_C``
(``logsumexp_k [log w_k + refit(parse_k -> I_C)]``), so that the second and third terms form a
calibrated ratio: how much worse ``I_T``'s programs explain ``I_C`` than ``I_C``'s own do.

Stages (every knob in :class:`BPLConfig`):

1. parse every support and query image (proposals -> refinement -> K best);
2. prune: refit each class's best parse to every query with ``prune_steps`` steps (one batched
   call) and keep the ``prune_width`` best classes per query;
3. score the kept pairs both ways with ``refit_steps`` steps (two batched calls).

For ``k > 1`` support images per class, each shot is scored as a class image of its own and the
class score is the log-mean-exp over its shots (a mixture over the shots' parses).

Images that are not 105 x 105 are resized to 105 x 105 (bilinear) and thresholded at 0.25.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from conceptlearn.inference.fit import TRACE_COUNT, FitConfig, Parse, parse_image, refit_token
from conceptlearn.model.render import IMAGE_SIZE


@dataclass(frozen=True)
class BPLConfig(FitConfig):
    """Every knob of the ``bpl`` contender: the fit constants (:class:`FitConfig`) plus these."""

    prune_width: int = 5  # classes per query kept for the two-way refits (>= n_way: no pruning)
    prune_steps: int = 8  # refit steps of the cheap one-way pruning score
    two_way: bool = True  # False: one-way score log P(I_T | I_C) only


FULL = BPLConfig()
QUICK = BPLConfig(
    max_candidates=6,
    max_strokes=5,
    n_points=10,
    n_parses=2,
    parse_steps=10,
    refit_steps=20,
    n_samples=24,
    prune_width=4,
    prune_steps=6,
)


def as_image(image: np.ndarray) -> np.ndarray:
    """Any 2-D image (bool or grey in [0, 1], True/1 = ink) -> ``bool (105, 105)``."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    if image.shape == (IMAGE_SIZE, IMAGE_SIZE):
        return image.astype(bool)
    from skimage.transform import resize

    grey = resize(image.astype(np.float32), (IMAGE_SIZE, IMAGE_SIZE), order=1, anti_aliasing=True)
    return grey > 0.25


def parse_images(images: np.ndarray, cfg: FitConfig, seed: int) -> Parse:
    """Parse ``images bool (n, H, W)`` -> :class:`Parse` with a leading axis ``n``."""
    parses = [parse_image(as_image(im), cfg, seed=seed + i) for i, im in enumerate(images)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *parses)


@functools.partial(jax.jit, static_argnames=("cfg", "n_steps"))
def refit_batch(points, mask, images, cfg: FitConfig, n_steps: int) -> jax.Array:
    """Refit many parses to many images, paired along any common leading shape ``L``:
    ``points f32 (*L, S, P, 2)``, ``mask bool (*L, S, P)``, ``images bool (*L, 105, 105)``
    -> ``f32 (*L,)`` refit scores (one flat vmap inside)."""
    TRACE_COUNT["refit_batch"] += 1
    lead, (n_strokes, n_points) = mask.shape[:-2], mask.shape[-2:]
    flat = jax.vmap(lambda p, m, im: refit_token(p, m, im, cfg, n_steps))(
        points.reshape(-1, n_strokes, n_points, 2),
        mask.reshape(-1, n_strokes, n_points),
        images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE),
    )
    return flat.reshape(lead)


class State(NamedTuple):
    """What ``fit`` learns from the support set: the parses of every support image (leading axes
    ``(n_way, k)``), the images themselves (``bool (n_way, k, 105, 105)``) and their log
    evidence ``f32 (n_way, k)``."""

    parses: Parse
    images: jax.Array
    log_evidence: jax.Array


def log_evidence(parses: Parse, images, cfg: FitConfig) -> jax.Array:
    """``log P(I) ~ logsumexp_k [log w_k + refit(parse_k -> I)]`` for parses with leading axes
    ``(n, K)`` of ``images bool (n, 105, 105)`` -> ``f32 (n,)``."""
    n, K = parses.mask.shape[:2]
    ims = jnp.broadcast_to(images[:, None], (n, K, IMAGE_SIZE, IMAGE_SIZE))
    own = refit_batch(parses.points, parses.mask, ims, cfg, cfg.refit_steps)  # (n, K)
    return logsumexp(parses.log_weight + own, axis=-1)


class BPLContender:
    """The ``bpl`` contender (see the module docstring)."""

    name = "bpl"

    def __init__(self, cfg: BPLConfig, seed: int = 0, library: str | None = None):
        self.cfg = cfg
        self.seed = seed
        self.library = library
        self.config = {**dataclasses.asdict(cfg), "library": library}

    def _seed(self, key) -> int:
        if key is None:
            return self.seed
        return int(jax.random.randint(key, (), 0, 2**30))

    def fit(self, support: np.ndarray, *, key: Any = None) -> State:
        support = np.asarray(support)
        if support.ndim != 4:
            raise ValueError(f"support must be (n_way, k, H, W), got shape {support.shape}")
        n_way, k = support.shape[:2]
        flat = np.stack([as_image(im) for im in support.reshape(n_way * k, *support.shape[2:])])
        parses = parse_images(flat, self.cfg, self._seed(key))
        if self.cfg.two_way:
            evidence = log_evidence(parses, jnp.asarray(flat), self.cfg).reshape(n_way, k)
        else:
            evidence = jnp.zeros((n_way, k))
        parses = jax.tree.map(lambda x: x.reshape(n_way, k, *x.shape[1:]), parses)
        images = jnp.asarray(flat.reshape(n_way, k, IMAGE_SIZE, IMAGE_SIZE))
        return State(parses, images, evidence)

    def scores(self, state: State, queries: np.ndarray, *, key: Any = None) -> np.ndarray:
        queries = np.asarray(queries)
        if queries.ndim != 3:
            raise ValueError(f"queries must be (n_query, H, W), got shape {queries.shape}")
        q_images = jnp.asarray(np.stack([as_image(im) for im in queries]))
        q_parses = parse_images(q_images, self.cfg, self._seed(key))
        return np.asarray(score_queries(state, q_parses, q_images, self.cfg))


def score_queries(state: State, q_parses: Parse, q_images, cfg: BPLConfig) -> jax.Array:
    """Two-way scores ``f32 (n_query, n_way)`` of parsed queries against a fitted support set.

    ``q_parses``: :class:`Parse` with leading axis ``n_query``; ``q_images bool (n_query, 105, 105)``.
    Pruned-away classes get finite scores below every kept class, ordered by the pruning score.
    """
    c = state.parses  # leading (n_way, k, K)
    n_way, k, K = c.log_post.shape
    n_query = q_images.shape[0]
    S, P = c.mask.shape[-2:]
    width = min(cfg.prune_width, n_way)

    # 2. prune: best parse of every shot -> every query, few steps
    best = c.points[:, :, 0], c.mask[:, :, 0]  # (n_way, k, S, P, 2), (n_way, k, S, P)
    pts = jnp.broadcast_to(best[0][None], (n_query, n_way, k, S, P, 2))
    msk = jnp.broadcast_to(best[1][None], (n_query, n_way, k, S, P))
    ims = jnp.broadcast_to(q_images[:, None, None], (n_query, n_way, k, IMAGE_SIZE, IMAGE_SIZE))
    cheap = refit_batch(pts, msk, ims, cfg, cfg.prune_steps)  # (n_query, n_way, k)
    cheap = logsumexp(cheap, axis=-1) - jnp.log(k)
    if width >= n_way and cfg.prune_steps == 0:
        cheap = jnp.zeros_like(cheap)
    kept = jnp.argsort(-cheap, axis=1)[:, :width]  # (n_query, width)

    # 3a. forward: every parse of every shot of each kept class -> its query
    fp = c.points[kept]  # (n_query, width, k, K, S, P, 2)
    fm = c.mask[kept]
    f_ims = jnp.broadcast_to(
        q_images[:, None, None, None], (n_query, width, k, K, IMAGE_SIZE, IMAGE_SIZE)
    )
    fwd = refit_batch(fp, fm, f_ims, cfg, cfg.refit_steps)  # (n_query, width, k, K)
    one_way = logsumexp(c.log_weight[kept] + fwd, axis=-1)  # (n_query, width, k)

    if cfg.two_way:
        # 3b. backward: every parse of the query -> every shot of each kept class
        bp = jnp.broadcast_to(q_parses.points[:, None, None], (n_query, width, k, K, S, P, 2))
        bm = jnp.broadcast_to(q_parses.mask[:, None, None], (n_query, width, k, K, S, P))
        b_ims = jnp.broadcast_to(
            state.images[kept][:, :, :, None], (n_query, width, k, K, IMAGE_SIZE, IMAGE_SIZE)
        )
        bwd = refit_batch(bp, bm, b_ims, cfg, cfg.refit_steps)  # (n_query, width, k, K)
        back = logsumexp(q_parses.log_weight[:, None, None] + bwd, axis=-1)
        per_shot = one_way + back - state.log_evidence[kept]
    else:
        per_shot = one_way
    full = logsumexp(per_shot, axis=-1) - jnp.log(k)  # (n_query, width)

    # pruned classes: below the worst kept score, in the order of the cheap score
    floor = jnp.min(full, axis=1, keepdims=True) - 1.0
    rank_gap = jnp.max(cheap, axis=1, keepdims=True) - cheap
    out = floor - 1e-3 * rank_gap
    return out.at[jnp.arange(n_query)[:, None], kept].set(full)


def make_contender(
    seed: int = 0,
    library: str | None = None,
    quick: bool = False,
    overrides: dict[str, Any] | None = None,
) -> BPLContender:
    """The ``bpl`` contender: ``QUICK`` or ``FULL`` preset, with ``overrides`` (field -> value)."""
    cfg = QUICK if quick else FULL
    if overrides:
        names = {f.name for f in dataclasses.fields(BPLConfig)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown bpl overrides {unknown}; known: {sorted(names)}")
        cfg = dataclasses.replace(cfg, **overrides)
    return BPLContender(cfg, seed=seed, library=library)
