"""Stroke preprocessing and cubic B-splines.

Coordinates are image coordinates ``(col, row)`` in pixels of the 105 x 105 image.

A sub-stroke is a clamped cubic B-spline with ``N_CONTROL = 5`` control points (knots
``0,0,0,0,1/2,1,1,1,1``), so the curve starts at its first control point and ends at its last.
Preprocessing of one raw stroke (numpy, runs once per data set):

1. ``split_stroke``: find pen pauses (minima of the smoothed pen speed) and cut there;
2. ``resample_stroke``: resample each piece uniformly in space;
3. ``fit_spline``: least-squares control points ``(5, 2)`` per piece;
4. ``normalize_spline``: control points -> position-free, scale-free ``shape (5, 2)`` + ``scale``.

Evaluation (``eval_spline``) is plain jax: jit-, vmap- and grad-able.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

N_CONTROL = 5
KNOTS = (0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0)
DEGREE = 3
MIN_SCALE = 0.5  # pixels: floor of a sub-stroke's scale (dots and tiny hooks)
FIT_MIN_POINTS = 12  # a piece is resampled to at least this many points before fitting


def bspline_basis(t: Any, xp: Any = jnp) -> Any:
    """Clamped cubic B-spline basis at parameters ``t``.

    ``t``: ``float (...)`` in ``[0, 1]`` (clipped). Returns ``float (..., 5)``; rows sum to one.
    ``xp`` is ``jax.numpy`` (default; jit/grad-able) or ``numpy`` (fast preprocessing).
    """
    t = xp.clip(xp.asarray(t), 0.0, 1.0)[..., None]
    lead = (1,) * (t.ndim - 1)  # knot vectors broadcast explicitly (rank promotion may raise)

    def row(a):
        return np.asarray(a, dtype=np.float64).reshape(lead + (-1,))

    knots = np.asarray(KNOTS)
    n_intervals = len(knots) - 1
    lo, hi = knots[:-1], knots[1:]
    last = n_intervals - 1 - np.argmax((hi > lo)[::-1])  # last non-empty interval
    is_last = row(np.arange(n_intervals) == last) > 0
    inside = (t >= row(lo)) & ((t < row(hi)) | (is_last & (t <= row(hi))))
    basis = inside.astype(t.dtype)
    for degree in range(1, DEGREE + 1):
        n = n_intervals - degree
        left_den = knots[degree : degree + n] - knots[:n]
        right_den = knots[degree + 1 : degree + 1 + n] - knots[1 : 1 + n]
        left = np.where(left_den > 0, 1.0 / np.where(left_den > 0, left_den, 1.0), 0.0)
        right = np.where(right_den > 0, 1.0 / np.where(right_den > 0, right_den, 1.0), 0.0)
        basis = (t - row(knots[:n])) * row(left) * basis[..., :n] + (
            row(knots[degree + 1 : degree + 1 + n]) - t
        ) * row(right) * basis[..., 1 : 1 + n]
    return basis


def eval_spline(control: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """Points of the spline with control points ``control (5, 2)`` at ``t (n,)`` -> ``(n, 2)``."""
    return bspline_basis(t) @ control


def resample_stroke(stroke: np.ndarray, spacing: float = 1.0) -> np.ndarray:
    """Resample one raw stroke uniformly in space.

    ``stroke``: ``float (n, 2 or 3)``; only the first two columns ``(col, row)`` are used.
    Repeated points are dropped first; a stroke with a single distinct point stays one point.
    Returns ``float (m, 2)`` points ``spacing`` pixels apart along the polyline (the last point
    is the stroke's end).
    """
    xy = np.asarray(stroke, dtype=np.float64)[:, :2]
    keep = np.concatenate([[True], np.any(np.diff(xy, axis=0) != 0, axis=1)])
    xy = xy[keep]
    if len(xy) == 1:
        return xy.copy()
    arclength = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    n_out = max(int(np.ceil(arclength[-1] / spacing)), 1) + 1
    targets = np.linspace(0.0, arclength[-1], n_out)
    return np.stack([np.interp(targets, arclength, xy[:, d]) for d in range(2)], axis=1)


def pen_speed(stroke: np.ndarray, dt_ms: float = 10.0, smooth_ms: float = 30.0):
    """Smoothed pen speed of a raw stroke on a uniform time grid.

    ``stroke``: ``float (n, 3)`` ``(col, row, t_ms)``. Returns ``(arclength (m,), speed (m,))``:
    the arclength (pixels) reached at each grid time and the Gaussian-smoothed speed (px/ms).
    """
    xy = np.asarray(stroke, dtype=np.float64)[:, :2]
    t = np.asarray(stroke, dtype=np.float64)[:, 2]
    t = np.maximum.accumulate(t)
    step = np.concatenate([[0.0], np.linalg.norm(np.diff(xy, axis=0), axis=1)])
    arc = np.cumsum(step)
    # collapse equal times (keep the furthest point reached at that time)
    t_unique, last = np.unique(t[::-1], return_index=True)
    arc_unique = arc[::-1][last]
    if len(t_unique) < 2:
        return arc_unique, np.zeros_like(arc_unique)
    grid = np.arange(t_unique[0], t_unique[-1] + dt_ms / 2, dt_ms)
    arc_grid = np.interp(grid, t_unique, arc_unique)
    speed = np.gradient(arc_grid, dt_ms) if len(grid) > 1 else np.zeros_like(grid)
    width = smooth_ms / dt_ms
    half = int(np.ceil(3 * width))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / width) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(speed, half, mode="edge")
    return arc_grid, np.convolve(padded, kernel, mode="valid")


def split_points(
    stroke: np.ndarray, pause_fraction: float = 0.25, min_length: float = 6.0
) -> np.ndarray:
    """Arclengths (pixels) at which to cut a raw stroke into sub-strokes: pen pauses.

    A pause is a run of grid times where the smoothed speed is below ``pause_fraction`` times
    the stroke's mean moving speed; the cut is at the slowest point of the run. Cuts closer than
    ``min_length`` pixels to the ends or to each other are dropped. Returns ``float (n_cuts,)``.
    """
    arc, speed = pen_speed(stroke)
    total = arc[-1] if len(arc) else 0.0
    if total < 2 * min_length or len(speed) < 3:
        return np.zeros((0,))
    moving = speed[speed > 0]
    threshold = pause_fraction * moving.mean() if len(moving) else 0.0
    slow = speed < threshold
    cuts: list[float] = []
    i = 0
    while i < len(slow):
        if not slow[i]:
            i += 1
            continue
        j = i
        while j < len(slow) and slow[j]:
            j += 1
        k = i + int(np.argmin(speed[i:j]))
        cut = arc[k]
        if min_length <= cut <= total - min_length and (not cuts or cut - cuts[-1] >= min_length):
            cuts.append(cut)
        i = j
    return np.asarray(cuts)


def split_stroke(stroke: np.ndarray, spacing: float = 1.0, **kwargs) -> list[np.ndarray]:
    """Cut one raw stroke ``(n, 3)`` at pen pauses; returns pieces ``float (m_i, 2)`` resampled
    ``spacing`` pixels apart. Consecutive pieces share their joining point."""
    points = resample_stroke(stroke, spacing)
    cuts = split_points(stroke, **kwargs)
    if len(points) == 1 or len(cuts) == 0:
        return [points]
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    index = np.unique(np.clip(np.searchsorted(arc, cuts), 1, len(points) - 2))
    bounds = [0, *index.tolist(), len(points) - 1]
    return [points[a : b + 1] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def fit_spline(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Clamped cubic B-spline through ``points (m, 2)``, parameterised by arclength: the end
    control points are the first and last point, the inner three fit by least squares.

    Returns ``(control float (5, 2), residual)``: the mean distance in pixels between each point
    and the curve at its parameter.
    """
    points = np.asarray(points, dtype=np.float64)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    if arc[-1] <= 0:
        return np.repeat(points[:1], N_CONTROL, axis=0), 0.0
    t = arc / arc[-1]
    # dense uniform resampling so that short pieces still determine all 5 control points
    n = max(len(points), FIT_MIN_POINTS)
    t_fit = np.linspace(0.0, 1.0, n)
    target = np.stack([np.interp(t_fit, t, points[:, d]) for d in range(2)], axis=1)
    basis = bspline_basis(t_fit, xp=np)
    # the ends are pinned to the piece's ends (sub-strokes chain end to start); the 3 inner
    # control points are the least-squares solution
    ends = np.outer(basis[:, 0], points[0]) + np.outer(basis[:, -1], points[-1])
    inner, *_ = np.linalg.lstsq(basis[:, 1:-1], target - ends, rcond=None)
    control = np.concatenate([points[:1], inner, points[-1:]])
    residual = np.linalg.norm(bspline_basis(t, xp=np) @ control - points, axis=1).mean()
    return control, float(residual)


def normalize_spline(control: Any, xp: Any = np) -> tuple[Any, Any]:
    """Control points ``(..., 5, 2)`` -> ``(shape (..., 5, 2), scale (...))``.

    ``shape`` has zero mean and unit root-mean-square radius; ``scale`` is that radius in pixels
    (at least ``MIN_SCALE``), so ``control = shape * scale + mean``.
    """
    centered = control - control.mean(axis=-2, keepdims=True)
    scale = xp.sqrt((centered**2).sum(axis=-1).mean(axis=-1))
    scale = xp.maximum(scale, MIN_SCALE)
    return centered / scale[..., None, None], scale


def corner_index(points: np.ndarray, margin: int, window: int = 3) -> int:
    """Index of the sharpest turn of ``points (m, 2)`` (spaced about 1 px) at least ``margin``
    points from either end: the largest angle between the chords ``window`` points back and
    ahead."""
    i = np.arange(max(margin, window), len(points) - max(margin, window))
    back = points[i] - points[i - window]
    ahead = points[i + window] - points[i]
    cos = (back * ahead).sum(1) / np.maximum(
        np.linalg.norm(back, axis=1) * np.linalg.norm(ahead, axis=1), 1e-9
    )
    return int(i[np.argmin(cos)])


def fit_pieces(
    points: np.ndarray, max_residual: float = 2.0, min_length: float = 6.0
) -> list[tuple[np.ndarray, float]]:
    """Fit ``points (m, 2)`` with one spline, or, while the mean residual exceeds
    ``max_residual`` pixels, cut at the sharpest turn and fit the halves (pieces stay at least
    ``min_length`` points long). Returns ``[(control (5, 2), residual)]`` in drawing order."""
    control, residual = fit_spline(points)
    margin = int(np.ceil(min_length))
    if residual <= max_residual or len(points) <= 2 * margin + 6:
        return [(control, residual)]
    k = corner_index(points, margin)
    return fit_pieces(points[: k + 1], max_residual, min_length) + fit_pieces(
        points[k:], max_residual, min_length
    )


def preprocess_stroke(
    stroke: np.ndarray, max_residual: float = 2.0, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Raw stroke ``(n, 3)`` -> sub-stroke control points ``(n_sub, 5, 2)`` in image coordinates
    and fit residuals ``(n_sub,)``: cut at pen pauses (``split_stroke``), then at sharp turns
    where one spline fits worse than ``max_residual`` pixels (``fit_pieces``)."""
    fits = [f for piece in split_stroke(stroke, **kwargs) for f in fit_pieces(piece, max_residual)]
    return np.stack([c for c, _ in fits]), np.asarray([r for _, r in fits])
