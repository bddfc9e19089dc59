"""The renderer: determinism, geometry, gradients, no retracing, fit to real Omniglot drawings."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conceptlearn.model.render import (
    DEFAULT_INK,
    IMAGE_SIZE,
    InkParams,
    _gaussian_rows,
    _windowed_gaussian_rows,
    block_ink,
    half_width,
    pad_strokes,
    render,
    resample_polyline,
)
from conceptlearn.model.splines import resample_stroke

SOFT_INK = InkParams(spread=1.0, gain=20.0)


def _drawing():
    """Two strokes (an L and a dot) padded with garbage: points (3, 6, 2), mask (3, 6)."""
    points = np.full((3, 6, 2), 77.0, np.float32)
    points[0, :4] = [[20.0, 20.0], [60.0, 22.0], [62.0, 70.0], [30.0, 80.0]]
    points[1, 0] = [80.0, 40.0]
    mask = np.zeros((3, 6), bool)
    mask[0, :4] = True
    mask[1, 0] = True
    return jnp.asarray(points), jnp.asarray(mask)


def test_shape_range_and_determinism():
    points, mask = _drawing()
    a = render(points, mask)
    b = render(points, mask)
    c = jax.jit(jax.vmap(render))(points[None], mask[None])[0]
    assert a.shape == (IMAGE_SIZE, IMAGE_SIZE) and a.dtype == jnp.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-6)


def test_padding_and_masked_points_do_not_change_the_image():
    points, mask = _drawing()
    points, mask = np.asarray(points), np.asarray(mask)
    base = np.asarray(render(points, mask))
    moved = points.copy()
    moved[2], moved[0, 4:] = 5.0, -40.0  # only masked entries change
    np.testing.assert_array_equal(np.asarray(render(moved, mask)), base)
    # An interior masked vertex is skipped: the polyline joins its neighbours.
    detour, detour_mask = points.copy(), mask.copy()
    detour[0, 1:], detour[0, 1], detour_mask[0, :5] = points[0, :-1], [100.0, 0.0], True
    skipped = detour_mask.copy()
    skipped[0, 1] = False
    np.testing.assert_allclose(np.asarray(render(detour, skipped)), base, atol=1e-5)
    assert np.abs(np.asarray(render(detour, detour_mask)) - base).max() > 0.5


def test_polyline_segments_are_inked_whatever_the_vertex_spacing():
    two = jnp.asarray([[[15.0, 50.0], [90.0, 50.0]]])
    many = jnp.asarray(np.linspace([15.0, 50.0], [90.0, 50.0], 40)[None], jnp.float32)
    img_two = render(two, jnp.ones((1, 2), bool), SOFT_INK)
    img_many = render(many, jnp.ones((1, 40), bool), SOFT_INK)
    np.testing.assert_allclose(np.asarray(img_two), np.asarray(img_many), atol=1e-4)
    row = np.asarray(img_two[50])
    assert row[20:86].min() > 0.9  # the whole segment is inked, not just its vertices
    assert row[:8].max() < 0.05 and row[98:].max() < 0.05


def test_half_resolution_approximates_the_mean_ink_of_every_2x2_block():
    """Level 2 inks 53 x 53 blocks with the block-averaged pen (same half-width, edges ramped
    over a block): close to the 2 x 2 means of the full-resolution image."""
    points, mask = map(np.asarray, _drawing())
    for pen in (DEFAULT_INK, InkParams(spread=0.9, gain=3000.0)):
        fine = np.asarray(render(points, mask, pen))
        coarse = np.asarray(render(points, mask, pen, level=2))
        assert coarse.shape == (53, 53)
        means = np.pad(fine, ((0, 1), (0, 1))).reshape(53, 2, 53, 2).mean((1, 3))
        error = np.abs(coarse - means).mean()
        assert error < 0.15 * means.mean()
        assert abs(coarse.sum() - means.sum()) < 0.05 * means.sum()
        # closer (in squared error) than sampling the sharp pen at the block centres
        sampled = np.asarray(render(points - 0.5, mask, pen))[::2, ::2]
        assert ((coarse - means) ** 2).mean() < 0.8 * ((sampled - means) ** 2).mean()
    np.testing.assert_allclose(float(half_width(DEFAULT_INK)), 2.55, atol=0.01)


@pytest.mark.parametrize("width, tolerance", [(0.5, 1e-6), (1.0, 1e-6), (2.5, 1e-3)])
def test_windowed_half_resolution_splat_equals_the_dense_one(width, tolerance):
    """Below full resolution each sample's Gaussian is evaluated on a window of pixels only:
    the rows and their gradients equal the dense ones (to float rounding for the default pen,
    to 1e-3 of the peak for one 2.5 times as wide), for samples inside, at and beyond the
    border."""
    spread = block_ink(InkParams(DEFAULT_INK.spread * width, DEFAULT_INK.gain * width), 2).spread
    coords = jnp.asarray(np.random.default_rng(0).uniform(-12.0, 118.0, 300), jnp.float32)
    coords = jnp.concatenate([coords, jnp.asarray([0.0, 0.5, 1.0, 103.9, 104.0, 105.0])])
    dense = _gaussian_rows(coords, spread, 2)
    windowed = _windowed_gaussian_rows(coords, spread, 2)
    np.testing.assert_allclose(windowed, dense, atol=tolerance * float(dense.max()))
    weights = jnp.asarray(np.random.default_rng(1).normal(size=dense.shape), jnp.float32)
    grads = [jax.grad(lambda c, f=f: jnp.sum(f(c, spread, 2) * weights))(coords)
             for f in (_gaussian_rows, _windowed_gaussian_rows)]
    np.testing.assert_allclose(grads[1], grads[0], atol=2 * tolerance * float(jnp.abs(grads[0]).max()))


def test_coordinates_are_col_row_at_pixel_centres():
    """A dot at (col, row) = (30, 70) peaks at image[70, 30], symmetric about the centre."""
    img = np.asarray(render(jnp.asarray([[[30.0, 70.0]]]), jnp.ones((1, 1), bool), SOFT_INK))
    assert np.unravel_index(img.argmax(), img.shape) == (70, 30)
    np.testing.assert_allclose(img[70, 29], img[70, 31], rtol=1e-5)
    np.testing.assert_allclose(img[69, 30], img[71, 30], rtol=1e-5)
    empty = render(jnp.zeros((2, 3, 2)), jnp.zeros((2, 3), bool))
    assert np.abs(np.asarray(empty)).max() == 0.0


def test_resample_polyline_is_uniform_in_arc_length():
    points = np.asarray([[0.0, 0.0], [3.0, 0.0], [3.0, 0.0], [3.0, 4.0], [9.0, 9.0]], np.float32)
    mask = np.asarray([True, True, True, True, False])
    samples, length = jax.jit(resample_polyline, static_argnums=2)(points, mask, 8)
    samples = np.asarray(samples)
    np.testing.assert_allclose(float(length), 7.0, rtol=1e-6)
    steps = np.linalg.norm(np.diff(samples, axis=0), axis=1)
    np.testing.assert_allclose(steps[[0, 1, 2, 4, 5, 6]], 1.0, rtol=1e-5)  # not across the corner
    np.testing.assert_allclose(np.asarray(samples[[0, -1]]), [[0.0, 0.0], [3.0, 4.0]], atol=1e-6)


@functools.partial(jax.jit, static_argnames="level")
def _weighted_ink(points, mask, ink, weights, level=1):
    return jnp.sum(render(points, mask, ink, level=level) * weights[: 105 // level + 1, : 105 // level + 1])


_weighted_ink_grad = jax.jit(jax.grad(_weighted_ink), static_argnames="level")


@pytest.mark.parametrize("ink, total", [(SOFT_INK, 1), (DEFAULT_INK, 1), (DEFAULT_INK, 2)], ids=str)
def test_gradients_are_finite_and_match_finite_differences(ink, total):
    points, mask = map(np.asarray, _drawing())
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    grad = np.asarray(_weighted_ink_grad(points, mask, ink, weights, level=total))
    assert np.all(np.isfinite(grad))
    assert np.abs(grad[~mask]).max() == 0.0  # masked points get no gradient
    assert np.abs(grad[mask]).max() > 0.0
    h = np.float32(5e-3)
    for _ in range(3):
        v = (rng.normal(size=points.shape) * mask[..., None]).astype(np.float32)
        up = _weighted_ink(points + h * v, mask, ink, weights, level=total)
        down = _weighted_ink(points - h * v, mask, ink, weights, level=total)
        fd = (float(up) - float(down)) / (2 * h)
        np.testing.assert_allclose(np.vdot(grad, v), fd, rtol=3e-2, atol=1e-2)


def test_gradient_of_a_single_point_dot_is_finite():
    points, mask = np.zeros((3, 6, 2), np.float32), np.zeros((3, 6), bool)
    points[0, 0], mask[0, 0] = [40.0, 41.0], True  # same shapes as _drawing: no new compile
    target = np.asarray(render(points + 1.5, mask) > 0.5, np.float32)
    grad = np.asarray(_weighted_ink_grad(points, mask, DEFAULT_INK, target, level=1))
    assert np.all(np.isfinite(grad))
    assert grad[0, 0, 0] > 0 and grad[0, 0, 1] > 0  # pulled toward the ink


def test_render_does_not_retrace_for_new_values_of_the_same_shapes():
    points, mask = map(np.array, _drawing())
    render(points, mask, SOFT_INK).block_until_ready()
    before = render._cache_size()
    for k in range(4):
        mask[0, 4] = k % 2 == 0
        ink = InkParams(spread=0.8 + 0.1 * k, gain=5.0 + k)
        render(points + np.float32(k), mask, ink).block_until_ready()
    assert render._cache_size() == before
    render(points[:2], mask[:2], SOFT_INK).block_until_ready()  # new shapes do retrace
    assert render._cache_size() == before + 1


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="n_strokes, n_points"):
        render(jnp.zeros((3, 2)), jnp.ones((3,), bool))
    with pytest.raises(ValueError, match="do not fit"):
        pad_strokes([np.zeros((5, 2))], n_strokes=1, n_points=4)


@pytest.mark.data
def test_rendered_real_strokes_overlap_the_real_image(small1_images, small1_strokes):
    alphabet = small1_images.alphabets[0]
    keys = [
        k
        for c in small1_images.characters(alphabet)[:3]
        for k in small1_images.keys(alphabet, c)[:2]
    ]
    drawn = [[resample_stroke(s) for s in small1_strokes.strokes(k)] for k in keys]
    n_strokes = max(map(len, drawn))
    n_points = 128 * -(-max(len(s) for d in drawn for s in d) // 128)  # one shape: one compile
    packed = [pad_strokes(d, n_strokes, n_points) for d in drawn]
    points, mask = np.stack([p for p, _ in packed]), np.stack([m for _, m in packed])
    batch_render = jax.jit(jax.vmap(lambda p, m: render(p, m, n_samples=256)))
    rendered, real = np.asarray(batch_render(points, mask)) > 0.5, small1_images.images(keys)
    ious = (rendered & real).sum(axis=(1, 2)) / (rendered | real).sum(axis=(1, 2))
    assert ious.mean() > 0.85, ious
