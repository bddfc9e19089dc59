"""One-shot classification by analysis by synthesis: the ``bpl`` contender (DESIGN.md §5).

For a query image ``I_T`` and a class image ``I_C`` the score is BPL's two-way score

    log P(I_T | I_C) + log P(I_C | I_T) - log P(I_C),

with ``log P(I_T | I_C) = logsumexp_k [log w_k + max_theta log P(I_T | theta) P(theta | parse_k)]``
over the ``K`` best parses of ``I_C`` (:func:`conceptlearn.inference.fit.parse_image`), ``theta``
the token variables refit to ``I_T`` (:func:`conceptlearn.inference.fit.refit_token`). The
evidence ``log P(I_C)`` is estimated with the same refit, of ``I_C``'s own parses to ``I_C``
(``logsumexp_k [log w_k + refit(parse_k -> I_C)]``), so that the second and third terms form a
calibrated ratio: how much worse ``I_T``'s programs explain ``I_C`` than ``I_C``'s own do.

Ink balance (``BPLConfig.ink_balance``, off in both presets: neutral on the dev runs): the two directions count different
pixels. The forward term scores the ink of ``I_T``, the backward ratio the ink of ``I_C``, and
both grow in magnitude with the ink they explain, so a class image with less ink than the query
casts a smaller backward penalty and sparse classes are favoured (on the 40 dev runs, 71% of the
errors picked a class with less ink than the true one's). The backward ratio is therefore
rescaled to the query's ink, ``ink(I_T) / ink(I_C)`` (ink = pixels on), so that both directions
weigh the same number of ink pixels; for one shot this ranks classes as the sum of the two
log-ratios per ink pixel of the image each explains.

Stages (every knob in :class:`BPLConfig`):

1. parse every support and query image (proposals -> refinement -> K best);
2. prune: refit each class's best parse to every query, and each query's best parse to every
   class image, with ``prune_steps`` steps (two batched calls), and keep the ``prune_width``
   classes per query with the best cheap two-way score;
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

    prune_width: int = 1000  # classes per query kept for the two-way refits (>= n_way: all)
    prune_steps: int = 8  # refit steps of the cheap pruning score
    prune_two_way: bool = True  # prune on the two-way score of the best parses (else one-way)
    two_way: bool = True  # False: one-way score log P(I_T | I_C) only
    type_prior: bool = True  # weigh parses by log P(type) under --library (else stand-in prior)
    ink_balance: bool = False  # rescale the backward ratio by ink(I_T) / ink(I_C) (docstring)


# FULL scores every class both ways; QUICK prunes to 4 classes per query first (dev runs:
# docs/results/bpl.md). Both use the same fit constants.
FULL = BPLConfig(
    max_candidates=10,
    max_strokes=6,
    n_points=16,  # 10 cut long strokes into chords across the character (docs/results/bpl.md)
    n_parses=2,
    parse_steps=10,
    refit_steps=20,
    n_samples=24,
    wide_lr=1.5,  # a second, far-reaching refit of every pair; the better fit is kept
    wide_blur=12.0,
    prune_width=1000,
    prune_steps=6,
)
QUICK = dataclasses.replace(FULL, prune_width=4)


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


def parse_images(images: np.ndarray, cfg: FitConfig, seed: int, library=None) -> Parse:
    """Parse ``images bool (n, H, W)`` -> :class:`Parse` with a leading axis ``n`` (parses
    weighted by the type prior of ``library``, or the stand-in prior when None)."""
    parses = [
        parse_image(as_image(im), cfg, seed=seed + i, library=library)
        for i, im in enumerate(images)
    ]
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
        self._library = None
        if library is not None and cfg.type_prior:
            from conceptlearn.model.library import load_library

            self._library = load_library(library)

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
        parses = parse_images(flat, self.cfg, self._seed(key), self._library)
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
        q_parses = parse_images(q_images, self.cfg, self._seed(key), self._library)
        return np.asarray(score_queries(state, q_parses, q_images, self.cfg))


def ink(images) -> jax.Array:
    """Pixels on (at least 1) of ``images bool (*L, H, W)`` -> ``f32 (*L,)``."""
    return jnp.maximum(jnp.sum(images, (-2, -1)), 1).astype(jnp.float32)


def prune_scores(state: State, q_parses: Parse, q_images, cfg: BPLConfig) -> jax.Array:
    """The cheap score ``f32 (n_query, n_way)``: the best parse of every shot refit to every
    query with ``cfg.prune_steps`` steps, plus (``prune_two_way``) the best parse of every query
    refit to every shot minus the shot's evidence (ink-balanced when ``cfg.ink_balance``);
    log-mean-exp over shots."""
    c = state.parses
    n_way, k = c.log_post.shape[:2]
    n_query = q_images.shape[0]
    S, P = c.mask.shape[-2:]
    lead = (n_query, n_way, k)
    pts = jnp.broadcast_to(c.points[None, :, :, 0], (*lead, S, P, 2))
    msk = jnp.broadcast_to(c.mask[None, :, :, 0], (*lead, S, P))
    ims = jnp.broadcast_to(q_images[:, None, None], (*lead, IMAGE_SIZE, IMAGE_SIZE))
    cheap = refit_batch(pts, msk, ims, cfg, cfg.prune_steps)  # (n_query, n_way, k)
    if cfg.prune_two_way and cfg.two_way:
        qp = jnp.broadcast_to(q_parses.points[:, None, None, 0], (*lead, S, P, 2))
        qm = jnp.broadcast_to(q_parses.mask[:, None, None, 0], (*lead, S, P))
        c_ims = jnp.broadcast_to(state.images[None], (*lead, IMAGE_SIZE, IMAGE_SIZE))
        back = refit_batch(qp, qm, c_ims, cfg, cfg.prune_steps) - state.log_evidence[None]
        if cfg.ink_balance:
            back = back * ink(q_images)[:, None, None] / ink(state.images)[None]
        cheap = cheap + back
    return logsumexp(cheap, axis=-1) - jnp.log(k)


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

    # 2. prune (skipped when every class is kept)
    if width < n_way:
        cheap = prune_scores(state, q_parses, q_images, cfg)
    else:
        cheap = jnp.zeros((n_query, n_way))
    kept = jnp.argsort(-cheap, axis=1, stable=True)[:, :width]  # (n_query, width)

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
        back = back - state.log_evidence[kept]  # (n_query, width, k)
        if cfg.ink_balance:
            back = back * ink(q_images)[:, None, None] / ink(state.images)[kept]
        per_shot = one_way + back
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
