"""The renderer: stroke trajectories -> ink image, differentiable in the trajectory points.

Coordinates are image coordinates ``(col, row)`` in pixels: the centre of pixel ``image[r, c]``
is the point ``(c, r)``, the convention of ``conceptlearn.datasets.omniglot.OmniglotStrokes``.

The ink model (BPL's "ink per point, full ink within a distance, then blur", in closed form):
each stroke's polyline is resampled uniformly along its arc length into ``n_samples`` points
(so any vertex spacing works), every sample deposits a normalised 2-D Gaussian of width
``InkParams.spread`` weighted by its share of the arc length, and the ink density saturates as
``ink = 1 - exp(-gain * density)``. Far from the ends, a line's density is the 1-D Gaussian
profile ``exp(-d^2 / (2 spread^2)) / (sqrt(2 pi) spread)`` of the distance ``d`` to the line, so
``spread`` sets the softness of the edge and ``gain`` the line's width. Because a Gaussian is
separable, the splat is one ``(105, K) @ (K, 105)`` matrix product (``K`` samples in all):
fast under ``vmap`` and cheap to differentiate. The image is smooth in the points except for
kinks where a sample passes a vertex. Strokes of one valid point are dots of
``DOT_LENGTH`` pixels' worth of ink.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from conceptlearn.datasets.omniglot import IMAGE_SIZE

N_SAMPLES = 128  # arc samples per stroke; at DEFAULT_INK edges ripple < 0.1 px up to ~250 px
DOT_LENGTH = 1.0  # a stroke shorter than this (a dot) gets this much line's worth of ink
_TINY = 1e-12


class InkParams(NamedTuple):
    """Fitted constants of the ink model (a pytree of float32 scalars).

    ``spread``: width (px) of each sample's Gaussian splat, i.e. the softness of a line's edge.
    ``gain``: ink per unit of line density; with ``spread`` it sets where ``ink = 1/2``, the
    half-width of a binarised line: ``spread * sqrt(2 ln(gain / (ln 2 sqrt(2 pi) spread)))``.
    """

    spread: jax.Array | float
    gain: jax.Array | float


# Fitted on small1 by scripts/render_iou.py (mean IoU 0.939 on small1, 0.907 held out): lines
# binarise to a half-width of 2.55 px with sharp edges; softness is the likelihood's blur_sigma.
DEFAULT_INK = InkParams(spread=0.7, gain=926.075)


def half_width(ink: InkParams) -> jax.Array:
    """Half-width (px) of a binarised line of ``ink``: where a long line's ink is 1/2."""
    spread = jnp.asarray(ink.spread, jnp.float32)
    peak = ink.gain / (jnp.log(2.0) * jnp.sqrt(2.0 * jnp.pi) * spread)
    return spread * jnp.sqrt(2.0 * jnp.log(jnp.maximum(peak, 1.0 + 1e-6)))


def block_ink(ink: InkParams, level: int) -> InkParams:
    """The pen that, sampled at the centres of ``level x level`` blocks, approximates the mean
    of ``ink`` over each block: across a line, the same half-width, and an edge that ramps
    from 1 to 0 over one block (the share of a block an edge covers) instead of a sharp one.
    The saturating profile ``1 - exp(-G exp(-d^2 / 2 s^2))`` has that half-width ``h`` and edge
    slope ``1 / level`` for ``s^2 = level h ln 2 / 2`` and ``G = ln 2 exp(h^2 / 2 s^2)``."""
    if level == 1:
        return ink
    h = half_width(ink)
    spread = jnp.sqrt(level * h * jnp.log(2.0) / 2.0)
    gain = jnp.log(2.0) * jnp.exp(h**2 / (2.0 * spread**2)) * jnp.sqrt(2.0 * jnp.pi) * spread
    return InkParams(spread=spread, gain=gain)


def _safe_norm(v: jax.Array) -> jax.Array:
    """Euclidean norm over the last axis with a finite gradient at zero."""
    sq = jnp.sum(v * v, axis=-1)
    nonzero = sq > _TINY
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def _polyline_arcs(points: jax.Array, mask: jax.Array):
    """Forward-fill masked vertices of one polyline with the last valid one (leading ones with
    the first valid), so the polyline joins consecutive valid vertices.

    ``points f32 (P, 2)``, ``mask bool (P,)`` -> ``filled f32 (P, 2)``, segment lengths
    ``f32 (P - 1,)``, cumulative arc length ``f32 (P,)`` (0 at the first vertex).
    """
    idx = jnp.arange(points.shape[0])
    last_valid = jax.lax.cummax(jnp.where(mask, idx, -1), axis=0)
    filled = points[jnp.where(last_valid < 0, jnp.argmax(mask), last_valid)]
    seg_len = _safe_norm(jnp.diff(filled, axis=0))
    cum = jnp.concatenate([jnp.zeros(1, points.dtype), jnp.cumsum(seg_len)])
    return filled, seg_len, cum


def _point_at_arc(filled, seg_len, cum, t):
    """Points at arc lengths ``t f32 (T,)`` along one filled polyline -> ``f32 (T, 2)``."""
    n_points = filled.shape[0]
    if n_points == 1:
        return jnp.broadcast_to(filled, (t.shape[0], 2))
    # The last vertex at or before t (zero-length segments are skipped); no gradient needed.
    below = jax.lax.stop_gradient(cum)[None, :] <= t[:, None]
    seg = jnp.clip(jnp.sum(below, axis=1) - 1, 0, n_points - 2)
    denom = seg_len[seg]
    ok = denom > _TINY
    frac = jnp.where(ok, (t - cum[seg]) / jnp.where(ok, denom, 1.0), 0.0)
    frac = jnp.clip(frac, 0.0, 1.0)[:, None]
    return filled[seg] * (1.0 - frac) + filled[seg + 1] * frac


def resample_polyline(
    points: jax.Array, mask: jax.Array, n_samples: int = N_SAMPLES
) -> tuple[jax.Array, jax.Array]:
    """Resample one masked polyline uniformly along its arc length.

    ``points``: ``f32 (n_points, 2)``; ``mask``: ``bool (n_points,)``, masked vertices are
    skipped (the polyline joins consecutive valid vertices). Returns the samples
    ``f32 (n_samples, 2)`` (the first and last are the end vertices) and the arc length ``f32 ()``.
    """
    filled, seg_len, cum = _polyline_arcs(points, mask)
    t = jnp.linspace(0.0, 1.0, n_samples, dtype=points.dtype) * cum[-1]
    return _point_at_arc(filled, seg_len, cum, t), cum[-1]


def grid_size(level: int = 1) -> int:
    """Pixels per side of the image at resolution ``level`` (1: 105, 2: 53)."""
    return -(-IMAGE_SIZE // level)


def pixel_centres(level: int = 1) -> jax.Array:
    """``f32 (grid_size(level),)``: the centres, in full-resolution pixels, of the pixels at
    resolution ``level`` (each covers ``level x level`` full-resolution pixels)."""
    return jnp.arange(grid_size(level), dtype=jnp.float32) * level + 0.5 * (level - 1)


def _gaussian_rows(coord: jax.Array, spread: jax.Array, level: int = 1) -> jax.Array:
    """``coord f32 (K,)`` -> ``f32 (K, grid_size(level))``: 1-D normalised Gaussians evaluated
    at the pixel centres of resolution ``level``."""
    grid = pixel_centres(level).astype(coord.dtype)
    z = (grid[None, :] - coord[:, None]) / spread
    return jnp.exp(-0.5 * z * z) / (jnp.sqrt(2.0 * jnp.pi) * spread)


COARSE_WINDOW = 8  # pixels per axis of each sample's splat below full resolution (see below)


def _windowed_gaussian_rows(coord: jax.Array, spread: jax.Array, level: int) -> jax.Array:
    """:func:`_gaussian_rows` with each row's Gaussian evaluated only on the ``COARSE_WINDOW``
    pixels around its sample and zero elsewhere (scattered into the row): the same rows to
    float rounding while the window reaches past about 4 spreads (at level 2: 8 px each side,
    6 spreads of the default pen's block spread, 3.8 of a pen 2.5 times as wide), for
    a sixth of the exponentials. -> ``f32 (K, grid_size(level))``."""
    n, w = grid_size(level), COARSE_WINDOW
    pixel = (coord - 0.5 * (level - 1)) / level
    # first pixel of each window; windows past the border land in w pixels of padding
    start = jnp.clip(jnp.floor(pixel).astype(jnp.int32) - (w // 2 - 1), -w, n)
    index = jax.lax.stop_gradient(start)[:, None] + jnp.arange(w)[None, :]  # (K, w)
    z = (index.astype(coord.dtype) * level + 0.5 * (level - 1) - coord[:, None]) / spread
    values = jnp.exp(-0.5 * z * z) / (jnp.sqrt(2.0 * jnp.pi) * spread)
    sample = jnp.broadcast_to(jnp.arange(coord.shape[0])[:, None], index.shape)
    padded = jnp.zeros((coord.shape[0], n + 2 * w), coord.dtype).at[sample, index + w].add(values)
    return padded[:, w : w + n]


def ink_density(
    points: jax.Array,
    mask: jax.Array,
    spread: jax.Array | float,
    n_samples: int = N_SAMPLES,
    level: int = 1,
) -> jax.Array:
    """Unsaturated line density ``f32 (n, n)`` of the masked polylines (see the module doc) at
    the pixel centres of resolution ``level`` (``n = grid_size(level)``: 105 or 53).

    ``points``: ``f32 (n_strokes, n_points, 2)``; ``mask``: ``bool (n_strokes, n_points)``;
    ``n_samples`` arc samples per stroke.
    """
    samples, length = jax.vmap(resample_polyline, in_axes=(0, 0, None))(points, mask, n_samples)
    # Trapezoid weights along each stroke; a dot (or a fully masked stroke) as in the doc.
    length = jnp.where(jnp.any(mask, axis=1), jnp.maximum(length, DOT_LENGTH), 0.0)
    ends = jnp.ones(n_samples, points.dtype).at[0].set(0.5).at[-1].set(0.5)
    weights = length[:, None] * ends[None, :] / max(n_samples - 1, 1)  # (S, n_samples)
    samples, weights = samples.reshape(-1, 2), weights.reshape(-1)
    spread = jnp.asarray(spread, points.dtype)
    rows = _gaussian_rows if level == 1 else _windowed_gaussian_rows
    gx = rows(samples[:, 0], spread, level)  # (K, n) over columns
    gy = rows(samples[:, 1], spread, level)  # (K, n) over rows
    return (gy * weights[:, None]).T @ gx  # (rows, cols)


@functools.partial(jax.jit, static_argnames=("n_samples", "level"))
def render(
    points: jax.Array,
    mask: jax.Array,
    ink: InkParams | None = None,
    n_samples: int = N_SAMPLES,
    level: int = 1,
) -> jax.Array:
    """Ink the masked polylines into an image.

    ``points``: ``f32 (n_strokes, n_points, 2)`` consecutive polyline vertices ``(col, row)``;
    ``mask``: ``bool (n_strokes, n_points)``; ``ink``: ``InkParams`` (default ``DEFAULT_INK``);
    ``n_samples`` arc samples per stroke. ``level`` 2 renders at half resolution: the ink at the
    centre of every 2 x 2 block (``f32 (53, 53)``), about a fifth of the work.
    Returns ``f32 (n, n)`` ink intensity in ``[0, 1]``, indexed ``[row, col]`` (``n = 105``, or
    53 at level 2).
    """
    if points.ndim != 3 or points.shape[-1] != 2 or mask.shape != points.shape[:2]:
        raise ValueError(
            f"render: points must be (n_strokes, n_points, 2) and mask (n_strokes, n_points); "
            f"got {points.shape} and {mask.shape}"
        )
    ink = block_ink(DEFAULT_INK if ink is None else ink, level)
    points = jnp.asarray(points, jnp.float32)
    density = ink_density(points, mask.astype(bool), ink.spread, n_samples, level)
    return -jnp.expm1(-jnp.asarray(ink.gain, jnp.float32) * density)


def pad_strokes(
    strokes: list[np.ndarray], n_strokes: int | None = None, n_points: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pack one drawing's strokes into the renderer's padded layout (host-side, numpy).

    ``strokes``: list of ``float (m_i, >=2)`` arrays whose first two columns are ``(col, row)``.
    Returns ``points f32 (n_strokes, n_points, 2)`` and ``mask bool (n_strokes, n_points)``;
    the sizes default to the tightest fit and must not be smaller than it.
    """
    n_strokes = len(strokes) if n_strokes is None else n_strokes
    n_points = max((len(s) for s in strokes), default=1) if n_points is None else n_points
    if len(strokes) > n_strokes or any(len(s) > n_points for s in strokes):
        raise ValueError(
            f"pad_strokes: {len(strokes)} strokes of up to "
            f"{max((len(s) for s in strokes), default=0)} points do not fit "
            f"({n_strokes}, {n_points})"
        )
    points = np.zeros((n_strokes, n_points, 2), np.float32)
    mask = np.zeros((n_strokes, n_points), bool)
    for i, s in enumerate(strokes):
        points[i, : len(s)] = np.asarray(s)[:, :2]
        mask[i, : len(s)] = True
    return points, mask
