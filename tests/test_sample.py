"""Sampling new characters: kept inside the canvas, reproducible, and the grid on disk."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conceptlearn.model.library import toy_library
from conceptlearn.model.sample import (
    MARGIN,
    border_ink_share,
    first_fitting,
    inside_canvas,
    overshoot,
    sample_images,
    save_grid,
)


def test_overshoot_measures_how_far_points_leave_the_canvas():
    points = jnp.asarray([[[10.0, 50.0], [90.0, 60.0], [200.0, -3.0]]])  # (1, 3, 2)
    inside = jnp.asarray([[True, True, False]])
    assert float(overshoot(points, inside)) == 0.0 and bool(inside_canvas(points, inside))
    everything = jnp.ones_like(inside)
    expected = (200.0 - (104.0 - MARGIN)) + (MARGIN + 3.0)
    np.testing.assert_allclose(float(overshoot(points, everything)), expected)
    assert not bool(inside_canvas(points, everything))


def test_first_fitting_takes_the_first_inside_else_the_least_outside():
    cands = {"id": jnp.arange(4)}
    assert int(first_fitting(cands, jnp.asarray([3.0, 0.0, 0.0, 1.0]))["id"]) == 1
    assert int(first_fitting(cands, jnp.asarray([3.0, 2.0, 0.5, 1.0]))["id"]) == 2


def test_border_ink_share_counts_images_touching_the_ring():
    images = np.zeros((4, 105, 105), np.float32)
    images[0, 1, 50] = 1.0  # in the ring
    images[1, 2, 50] = 1.0  # just inside it
    images[2, 60, 104] = 0.4  # below the threshold
    assert border_ink_share(images) == 0.25


@pytest.mark.slow  # compiles the batched type and token samplers (about a minute on 2 cores)
def test_samples_stay_inside_the_canvas_and_repeat_with_the_seed(tmp_path):
    library = toy_library(n_primitives=6, n_centers=9, seed=1)
    library = library._replace(log_scale_mean=library.log_scale_mean + 1.0)  # big: many leave
    key = jax.random.key(5)
    kept = np.asarray(sample_images(library, key, 6, 4))
    assert kept.shape == (6, 5, 105, 105) and ((kept >= 0) & (kept <= 1)).all()
    np.testing.assert_array_equal(kept, np.asarray(sample_images(library, key, 6, 4)))
    free = np.asarray(sample_images(library, key, 6, 4, in_canvas=False))
    assert border_ink_share(kept) < border_ink_share(free)
    assert border_ink_share(kept) == 0.0
    save_grid(kept, tmp_path / "grid.png")
    assert Image.open(tmp_path / "grid.png").size == (5 * 108 + 3, 6 * 108 + 3)
