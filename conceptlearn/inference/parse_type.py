"""A parse as a character type: ``log P(type)`` of refined trajectories under the learned library.

The numpy path of the generative-model issue (``fit_pieces`` -> ``type_from_splines`` ->
``type_marginal_log_prob``) costs ~0.1 s of Python per parse; this is its jit/vmap-able
counterpart with fixed shapes, used to weigh the parses of every image.

For one parse ``points f32 (S, P, 2)``, ``mask bool (S, P)`` (valid points form a prefix of each
stroke; strokes in drawing order):

- **sub-strokes:** each stroke is cut into ``n = 1 .. max_pieces`` pieces at its sharpest turns;
  each piece is resampled by arclength and fitted with a clamped cubic B-spline (ends pinned, the
  three inner control points by least squares: one fixed matrix), then normalised into shape and
  scale. The stroke scores ``log P(n_sub = n | n_strokes) + log sum_ids P(ids, shapes, scales)``
  (primitive ids summed out, :func:`~conceptlearn.model.type_prior.stroke_marginal_log_prob`)
  plus a Gaussian fit residual (sd ``residual_sigma`` px per trajectory point, so a coarse cut
  cannot hide shape); the best ``n`` is kept (MAP segmentation);
- **relations:** each stroke after the first is independent (start position from the learned
  density), start-of or end-of an earlier stroke, or along it; the relation with the highest
  ``log P(relation) + log P(parent) + log P(where on the parent) + log N(start - anchor; 0,
  position_noise_sd)`` is kept;
- plus ``log P(n_strokes)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from conceptlearn.model.library import ALONG, END_OF, MAX_SUBSTROKES, START_OF, Library
from conceptlearn.model.splines import N_CONTROL, bspline_basis, normalize_spline
from conceptlearn.model.type_prior import position_dist, stroke_marginal_log_prob

FIT_POINTS = 16  # arclength samples per piece for the spline fit
_T = np.linspace(0.0, 1.0, FIT_POINTS)
_BASIS = bspline_basis(_T, xp=np)  # (FIT_POINTS, 5)
_INNER_PINV = np.linalg.pinv(_BASIS[:, 1:-1])  # (3, FIT_POINTS)


def _gauss2(offset: jax.Array, sd: jax.Array) -> jax.Array:
    """``log N(offset (..., 2); 0, sd^2 I)``."""
    return -0.5 * jnp.sum(offset**2, -1) / sd**2 - jnp.log(2 * jnp.pi * sd**2)


def _arclength(points: jax.Array, mask: jax.Array) -> jax.Array:
    """Cumulative arclength ``f32 (P,)`` of a stroke's valid prefix, made strictly increasing
    (``1e-4`` px per point) so that it can be interpolated; the length is at the last valid
    point."""
    step = jnp.linalg.norm(jnp.diff(points, axis=0), axis=-1) * mask[1:]
    return jnp.concatenate([jnp.zeros(1), jnp.cumsum(step)]) + 1e-4 * jnp.arange(points.shape[0])


def _fit_piece(points, arc, start, end):
    """Spline through the polyline between arclengths ``start`` and ``end``: control points
    ``f32 (5, 2)`` and the resampled targets ``f32 (FIT_POINTS, 2)``."""
    s = start + (end - start) * _T
    target = jnp.stack([jnp.interp(s, arc, points[:, d]) for d in range(2)], -1)
    first, last = target[0], target[-1]
    ends = jnp.asarray(_BASIS[:, :1]) * first[None] + jnp.asarray(_BASIS[:, -1:]) * last[None]
    inner = jnp.asarray(_INNER_PINV) @ (target - ends)
    return jnp.concatenate([first[None], inner, last[None]]), target


def _cut_arclengths(points, mask, arc, n_pieces: int) -> jax.Array:
    """Arclengths ``f32 (n_pieces + 1,)`` of the cuts of a stroke into ``n_pieces`` pieces at its
    sharpest interior turns (in drawing order; ends included)."""
    P = points.shape[0]
    back = points[1:-1] - points[:-2]
    ahead = points[2:] - points[1:-1]
    cos = jnp.sum(back * ahead, -1) / jnp.maximum(
        jnp.linalg.norm(back, axis=-1) * jnp.linalg.norm(ahead, axis=-1), 1e-6
    )
    interior = mask[2:] & mask[1:-1] & mask[:-2]
    sharp = jnp.where(interior, -cos, -jnp.inf)  # (P - 2,)
    idx = jnp.sort(jax.lax.top_k(sharp, max(n_pieces - 1, 1))[1][: n_pieces - 1]) + 1
    total = arc[jnp.maximum(jnp.sum(mask) - 1, 0)]
    cuts = arc[jnp.clip(idx, 0, P - 1)]
    return jnp.concatenate([jnp.zeros(1), cuts, total[None]])


def stroke_log_prob(
    library: Library, points, mask, n_strokes, residual_sigma: float, max_pieces: int
):
    """Best segmentation of one stroke: ``points f32 (P, 2)``, ``mask bool (P,)`` -> ``f32 ()``
    (``-inf``-free: an empty stroke scores 0 and is masked by the caller)."""
    arc = _arclength(points, mask)
    n_valid = jnp.sum(mask)
    scores = []
    for n in range(1, max_pieces + 1):
        cuts = _cut_arclengths(points, mask, arc, n)
        controls, targets = jax.vmap(lambda a, b: _fit_piece(points, arc, a, b))(
            cuts[:-1], cuts[1:]
        )
        fitted = jnp.einsum("tc,ncd->ntd", jnp.asarray(_BASIS), controls)
        sq = jnp.sum((fitted - targets) ** 2) * n_valid / (n * FIT_POINTS)  # per trajectory point
        shapes, scales = normalize_spline(controls, xp=jnp)
        pad = MAX_SUBSTROKES - n
        shapes = jnp.concatenate([shapes, jnp.zeros((pad, N_CONTROL, 2))])
        scales = jnp.concatenate([scales, jnp.ones(pad)])
        prims = stroke_marginal_log_prob(library, shapes, scales, jnp.asarray(n))
        n_sub = jnp.log(library.n_sub_probs[n_strokes - 1, n - 1])
        # a piece shorter than a pixel per cut is not a sub-stroke
        ok = (n == 1) | ((n_valid > n) & (cuts[-1] > 2.0 * n))
        scores.append(jnp.where(ok, n_sub + prims - 0.5 * sq / residual_sigma**2, -jnp.inf))
    return jnp.max(jnp.stack(scores))


def _segment_distance(point, a, b):
    """Distance ``f32 (...)`` from ``point (2,)`` to the segments ``a, b (..., 2)``."""
    point = jnp.broadcast_to(point, a.shape)
    ab = b - a
    t = jnp.clip(jnp.sum((point - a) * ab, -1) / jnp.maximum(jnp.sum(ab * ab, -1), 1e-9), 0.0, 1.0)
    return jnp.linalg.norm(a + t[..., None] * ab - point, axis=-1)


def relation_log_prob(library: Library, points, mask, i: jax.Array) -> jax.Array:
    """Best relation of stroke ``i`` (``int ()``, > 0) to the strokes before it: ``f32 ()``."""
    S = points.shape[0]
    used = jnp.any(mask, -1)
    n_valid = jnp.sum(mask, -1)
    start = points[i, 0]
    firsts = points[:, 0]
    lasts = points[jnp.arange(S), jnp.maximum(n_valid - 1, 0)]
    earlier = used & (jnp.arange(S) < i)
    log_parent = -jnp.log(jnp.maximum(i, 1).astype(jnp.float32))
    noise = library.position_noise_sd
    log_rel = jnp.log(library.relation_probs)

    independent = log_rel[0] + position_dist(library).log_prob(start)
    at_start = log_rel[START_OF] + log_parent + _gauss2(start[None] - firsts, noise)
    at_end = log_rel[END_OF] + log_parent + _gauss2(start[None] - lasts, noise)
    seg_ok = mask[:, 1:] & mask[:, :-1]
    d = _segment_distance(start, points[:, :-1], points[:, 1:])  # (S, P - 1)
    d = jnp.min(jnp.where(seg_ok, d, jnp.inf), -1)
    # along: uniform over the parent's sub-strokes and its position on them; the number of
    # sub-strokes of the parent is not known here, so its log (<= log 3) is taken as log 2
    along = (
        log_rel[ALONG]
        + log_parent
        - jnp.log(2.0)
        - 0.5 * d**2 / noise**2
        - jnp.log(2 * jnp.pi * noise**2)
    )
    dependent = jnp.where(earlier, jnp.maximum(jnp.maximum(at_start, at_end), along), -jnp.inf)
    return jnp.maximum(independent, jnp.max(dependent))


@functools.partial(jax.jit, static_argnames=("residual_sigma", "max_pieces"))
def parse_type_log_prob(
    library: Library, points, mask, residual_sigma: float = 1.5, max_pieces: int = 3
) -> jax.Array:
    """``log P(type)`` of one parse ``points f32 (S, P, 2)``, ``mask bool (S, P)`` -> ``f32 ()``
    (see the module docstring). vmap over parses for many."""
    S = points.shape[0]
    used = jnp.any(mask, -1)
    n_strokes = jnp.clip(jnp.sum(used), 1, library.n_strokes_probs.shape[0])
    per_stroke = jax.vmap(
        lambda p, m: stroke_log_prob(library, p, m, n_strokes, residual_sigma, max_pieces)
    )(points, mask)
    relations = jax.vmap(lambda i: relation_log_prob(library, points, mask, i))(jnp.arange(1, S))
    first = position_dist(library).log_prob(points[0, 0])
    return (
        jnp.log(library.n_strokes_probs[n_strokes - 1])
        + jnp.sum(jnp.where(used, per_stroke, 0.0))
        + jnp.sum(jnp.where(used[1:], relations, 0.0))
        + first
    )


@jax.jit
def parse_type_log_probs(library: Library, points, mask) -> jax.Array:
    """:func:`parse_type_log_prob` of many parses: ``points f32 (C, S, P, 2)``,
    ``mask bool (C, S, P)`` -> ``f32 (C,)``."""
    return jax.vmap(parse_type_log_prob, (None, 0, 0))(library, points, mask)


def uniform_primitives(library: Library) -> Library:
    """The "uniform primitives" lesion: every primitive equally likely to start a stroke and to
    follow any other (the learned shapes, scales and everything else kept)."""
    K = library.start_probs.shape[0]
    return library._replace(
        start_probs=jnp.full((K,), 1.0 / K, library.start_probs.dtype),
        trans_probs=jnp.full((K, K), 1.0 / K, library.trans_probs.dtype),
    )
