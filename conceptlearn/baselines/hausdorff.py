"""Modified Hausdorff Distance (Dubuisson & Jain, 1994) between the ink of two images.

As in the Omniglot repository's demo: the ink pixels' ``(row, col)`` coordinates, centred on
their mean, compared by ``MHD(A, B) = max(mean_a min_b |a - b|, mean_b min_a |a - b|)``; a query
goes to the class with the smallest distance. Point sets are padded to a fixed size with masks,
and every query x support pair of an episode is one jitted, batched call.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Point sets are padded to a multiple of this, so episodes re-use a handful of compiled shapes.
PAD_MULTIPLE = 512
# Distance reported when either image has no ink (larger than any distance in a 105 x 105 image).
EMPTY_DISTANCE = 1.0e3


class PointSet(NamedTuple):
    """Centred ink coordinates ``f32 (max_points, 2)`` and their validity mask ``bool (max_points,)``."""

    points: jax.Array
    mask: jax.Array


def padded_size(images: np.ndarray) -> int:
    """The padded point count for a batch of images ``bool (..., H, W)``."""
    most = int(
        np.asarray(images).reshape(-1, *np.shape(images)[-2:]).sum(axis=(1, 2)).max(initial=1)
    )
    return max(PAD_MULTIPLE, -(-most // PAD_MULTIPLE) * PAD_MULTIPLE)


@partial(jax.jit, static_argnames="max_points")
def ink_points(image: jax.Array, max_points: int) -> PointSet:
    """``bool (H, W)`` image -> its centred ink coordinates, padded to ``max_points``."""
    rows, cols = jnp.nonzero(image, size=max_points, fill_value=0)
    mask = jnp.arange(max_points) < jnp.count_nonzero(image)
    points = jnp.stack([rows, cols], axis=-1).astype(jnp.float32)
    count = jnp.maximum(mask.sum(), 1)
    mean = jnp.where(mask[:, None], points, 0.0).sum(axis=0) / count
    return PointSet(jnp.where(mask[:, None], points - mean[None, :], 0.0), mask)


def modified_hausdorff(a: PointSet, b: PointSet) -> jax.Array:
    """MHD between two padded point sets (scalar); ``EMPTY_DISTANCE`` if either is empty."""
    # Per-coordinate differences fuse into one pass (no (n, m, 2) intermediate).
    sq_dist = (a.points[:, None, 0] - b.points[None, :, 0]) ** 2 + (
        a.points[:, None, 1] - b.points[None, :, 1]
    ) ** 2
    sq_dist = jnp.where(a.mask[:, None] & b.mask[None, :], sq_dist, jnp.inf)
    # sqrt is monotone: take it after the minimum, on n points instead of n**2 pairs.
    nearest_a = jnp.sqrt(jnp.where(a.mask, sq_dist.min(axis=1), 0.0))
    nearest_b = jnp.sqrt(jnp.where(b.mask, sq_dist.min(axis=0), 0.0))
    mean_a = nearest_a.sum() / jnp.maximum(a.mask.sum(), 1)
    mean_b = nearest_b.sum() / jnp.maximum(b.mask.sum(), 1)
    empty = ~(a.mask.any() & b.mask.any())
    return jnp.where(empty, EMPTY_DISTANCE, jnp.maximum(mean_a, mean_b))


@partial(jax.jit, static_argnames="max_points")
def pairwise_mhd(queries: jax.Array, support: jax.Array, max_points: int) -> jax.Array:
    """MHD of every query to every support image.

    ``queries``: ``bool (n_query, H, W)``; ``support``: ``bool (n_support, H, W)``.
    Returns ``f32 (n_query, n_support)``.
    """
    to_points = jax.vmap(partial(ink_points, max_points=max_points))
    query_points, support_points = to_points(queries), to_points(support)
    one_query = lambda q: jax.vmap(modified_hausdorff, in_axes=(None, 0))(q, support_points)  # noqa: E731
    # lax.map over queries bounds memory at n_support * max_points**2 floats.
    return jax.lax.map(one_query, query_points)


class MHDContender:
    """Nearest neighbour under MHD; with k shots a class scores its closest support image."""

    name = "mhd"

    def __init__(self) -> None:
        self.config: dict[str, Any] = {
            "pad_multiple": PAD_MULTIPLE,
            "k_shot_rule": "min over shots",
        }

    def fit(self, support: np.ndarray, *, key: Any = None) -> np.ndarray:
        """``support``: ``bool (n_way, k, H, W)``; the state is the support images themselves."""
        return np.asarray(support, dtype=bool)

    def scores(self, state: np.ndarray, queries: np.ndarray, *, key: Any = None) -> np.ndarray:
        """``queries``: ``bool (n_query, H, W)`` -> ``-MHD`` to the nearest shot, ``(n_query, n_way)``."""
        n_way, k_shot = state.shape[:2]
        flat_support = state.reshape(n_way * k_shot, *state.shape[2:])
        queries = np.asarray(queries, dtype=bool)
        max_points = max(padded_size(flat_support), padded_size(queries))
        dist = pairwise_mhd(jnp.asarray(queries), jnp.asarray(flat_support), max_points)
        return -np.asarray(dist).reshape(len(queries), n_way, k_shot).min(axis=2)


def make_contender(*, seed: int = 0) -> MHDContender:
    """MHD has no parameters and no randomness; ``seed`` is accepted for the common interface."""
    del seed
    return MHDContender()
