"""Stroke preprocessing and cubic B-splines.

Coordinates are image coordinates ``(col, row)`` in pixels of the 105 x 105 image.
"""

from __future__ import annotations

import numpy as np


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
