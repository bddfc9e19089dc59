"""How close a parse is to the pen trajectories that drew the image (issue 13).

A drawing's best parse is *good* when it has the true number of strokes and its strokes, matched
one-to-one to the true ones, lie within ``max_distance`` px of them on average:

- every stroke, true or parsed, is resampled to ``n_points`` points evenly spaced in arc length
  (a stroke of one point or of zero length is a dot: ``n_points`` copies of its point);
- the cost of a (true, parse) pair is the mean distance of corresponding points, the better of
  the parse stroke and its reverse (the direction a stroke was drawn in does not count);
- the Hungarian algorithm matches parse strokes to true strokes at the least total cost; the
  distance of the drawing is the mean over the matched pairs' points (strokes left unmatched
  when the counts differ are not in it, but then the count is wrong).

Coordinates are ``(col, row)`` in the image's pixel frame, for the true strokes
(:class:`~conceptlearn.datasets.omniglot.OmniglotStrokes`) and the parse's points alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

N_POINTS = 16  # points per stroke after resampling
MAX_DISTANCE = 3.0  # px: the largest mean distance of a good parse


class ParseQuality(NamedTuple):
    """One drawing's parse against its true strokes. ``mean_distance`` (px) is None when no
    stroke could be matched (the parse or the drawing has none)."""

    true_strokes: int
    parse_strokes: int
    count_ok: bool
    mean_distance: float | None
    good: bool


def resample_even(stroke: np.ndarray, n_points: int = N_POINTS) -> np.ndarray:
    """``stroke float (m, >= 2)`` (only columns ``(col, row)`` are used, ``m >= 1``) ->
    ``float (n_points, 2)`` evenly spaced in arc length, from its first point to its last."""
    xy = np.asarray(stroke, np.float64)[:, :2]
    if len(xy) == 0:
        raise ValueError("a stroke needs at least one point")
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    if arc[-1] <= 0.0:  # a dot
        return np.repeat(xy[:1], n_points, axis=0)
    at = np.linspace(0.0, arc[-1], n_points)
    return np.stack([np.interp(at, arc, xy[:, d]) for d in range(2)], axis=1)


def parse_trajectories(points: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """The strokes of one parse: ``points f32 (S, P, 2)``, ``mask bool (S, P)`` -> the valid
    points ``float (m_s, 2)`` of every stroke slot with any valid point."""
    points, mask = np.asarray(points), np.asarray(mask, bool)
    if points.shape[:-1] != mask.shape or points.shape[-1] != 2:
        raise ValueError(f"points {points.shape} and mask {mask.shape} are not (S, P, 2), (S, P)")
    return [points[s][mask[s]] for s in range(mask.shape[0]) if mask[s].any()]


def stroke_costs(true: np.ndarray, parsed: np.ndarray) -> np.ndarray:
    """Mean point distance of every pair, the better of each parse stroke and its reverse:
    ``true float (T, N, 2)``, ``parsed float (Q, N, 2)`` -> ``float (T, Q)`` px."""
    forward = np.linalg.norm(true[:, None] - parsed[None], axis=-1).mean(-1)
    backward = np.linalg.norm(true[:, None] - parsed[None, :, ::-1], axis=-1).mean(-1)
    return np.minimum(forward, backward)


def parse_quality(
    true_strokes: Sequence[np.ndarray],
    points: np.ndarray,
    mask: np.ndarray,
    *,
    n_points: int = N_POINTS,
    max_distance: float = MAX_DISTANCE,
) -> ParseQuality:
    """Score one parse, ``points f32 (S, P, 2)`` and ``mask bool (S, P)``, against the true
    strokes ``[float (m, 2 or 3)]`` (``(col, row[, t])``; see the module docstring)."""
    true = [resample_even(s, n_points) for s in true_strokes]
    parsed = [resample_even(s, n_points) for s in parse_trajectories(points, mask)]
    count_ok = len(true) == len(parsed)
    distance = None
    if true and parsed:
        costs = stroke_costs(np.stack(true), np.stack(parsed))
        rows, cols = linear_sum_assignment(costs)
        distance = float(costs[rows, cols].mean())  # every pair has n_points points
    good = count_ok and distance is not None and distance <= max_distance
    return ParseQuality(len(true), len(parsed), count_ok, distance, good)
