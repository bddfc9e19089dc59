"""Splines: basis, least-squares fit round trip, normalisation, pause segmentation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conceptlearn.model.splines import (
    MIN_SCALE,
    bspline_basis,
    eval_spline,
    fit_spline,
    normalize_spline,
    preprocess_stroke,
    split_points,
    split_stroke,
)


def test_basis_partition_of_unity_and_clamped_ends():
    t = np.linspace(0.0, 1.0, 41)
    basis = bspline_basis(t, xp=np)
    np.testing.assert_allclose(basis.sum(1), 1.0, atol=1e-12)
    assert np.all(basis >= 0)
    np.testing.assert_allclose(basis[0], [1, 0, 0, 0, 0])
    np.testing.assert_allclose(basis[-1], [0, 0, 0, 0, 1])
    np.testing.assert_allclose(np.asarray(bspline_basis(jnp.asarray(t))), basis, atol=1e-6)


def test_basis_matches_scipy():
    from scipy.interpolate import BSpline

    t = np.linspace(0.0, 0.999, 30)
    knots = np.array([0, 0, 0, 0, 0.5, 1, 1, 1, 1.0])
    ref = np.stack([BSpline(knots, np.eye(5)[i], 3)(t) for i in range(5)], axis=1)
    np.testing.assert_allclose(bspline_basis(t, xp=np), ref, atol=1e-12)


def test_eval_spline_jit_vmap_grad():
    control = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, 2)), jnp.float32)
    t = jnp.linspace(0.0, 1.0, 7)
    out = jax.jit(jax.vmap(eval_spline, in_axes=(0, None)))(control, t)
    assert out.shape == (3, 7, 2)
    np.testing.assert_allclose(out[:, 0], control[:, 0], atol=1e-6)
    grad = jax.grad(lambda c: eval_spline(c, t).sum())(control[0])
    # d(sum of points)/d(control) = column sums of the basis, for both coordinates
    expected = np.repeat(np.asarray(bspline_basis(t)).sum(0)[:, None], 2, axis=1)
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_fit_round_trip_recovers_control_points():
    rng = np.random.default_rng(1)
    for _ in range(5):
        control = 30 + np.cumsum(rng.normal(0, 8, (5, 2)), axis=0)  # a gentle curve
        dense = bspline_basis(np.linspace(0, 1, 400), xp=np) @ control
        # resample uniformly in arclength, as the preprocessing does
        arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
        s = np.linspace(0, arc[-1], int(arc[-1]) + 1)
        points = np.stack([np.interp(s, arc, dense[:, d]) for d in range(2)], 1)
        fitted, residual = fit_spline(points)
        assert residual < 0.8
        # the curve, not the parameterisation, is what must come back
        curve = bspline_basis(np.linspace(0, 1, 200), xp=np) @ fitted
        gap = np.linalg.norm(curve[:, None] - dense[None], axis=-1).min(1)
        assert gap.max() < 1.0
        np.testing.assert_allclose(fitted[0], control[0], atol=1e-9)
        np.testing.assert_allclose(fitted[-1], control[-1], atol=1e-9)


def test_fit_straight_line_is_exact_and_dot_is_constant():
    points = np.stack([np.linspace(10, 40, 31), np.full(31, 20.0)], 1)
    control, residual = fit_spline(points)
    assert residual < 0.05
    np.testing.assert_allclose(control[:, 1], 20.0, atol=1e-9)
    dot, residual = fit_spline(np.array([[5.0, 6.0]]))
    assert residual == 0.0 and np.all(dot == [5.0, 6.0])


def test_normalize_is_position_and_scale_free():
    rng = np.random.default_rng(2)
    control = rng.normal(size=(4, 5, 2)) * 7 + 30
    shape, scale = normalize_spline(control)
    np.testing.assert_allclose(shape.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sqrt((shape**2).sum(-1).mean(-1)), 1.0)
    np.testing.assert_allclose(
        shape * scale[:, None, None] + control.mean(1, keepdims=True), control
    )
    shape2, scale2 = normalize_spline(control * 3 + 5)
    np.testing.assert_allclose(shape2, shape, atol=1e-12)
    np.testing.assert_allclose(scale2, 3 * scale)
    _, tiny = normalize_spline(np.zeros((5, 2)))
    assert tiny == MIN_SCALE


def _timed(points, times):
    return np.concatenate([points, np.asarray(times)[:, None]], axis=1)


def test_split_at_pen_pause_only():
    # an L drawn at constant speed, with a 300 ms stop at the corner
    down = np.stack([np.full(30, 20.0), np.linspace(20, 49, 30)], 1)
    right = np.stack([np.linspace(21, 50, 30), np.full(30, 49.0)], 1)
    corner = np.repeat(down[-1:], 10, axis=0)
    points = np.concatenate([down, corner, right])
    times = np.concatenate(
        [np.arange(30) * 20, 580 + np.arange(1, 11) * 30, 880 + np.arange(1, 31) * 20]
    )
    cuts = split_points(_timed(points, times))
    assert len(cuts) == 1 and abs(cuts[0] - 29) < 3
    pieces = split_stroke(_timed(points, times))
    assert len(pieces) == 2
    np.testing.assert_allclose(pieces[0][-1], pieces[1][0])  # pieces share the joint
    steady = np.concatenate([np.arange(30) * 20, 600 + np.arange(30) * 20])
    assert len(split_stroke(_timed(np.concatenate([down, right]), steady))) == 1
    controls, residuals = preprocess_stroke(_timed(points, times))
    assert controls.shape == (2, 5, 2) and np.all(residuals < 0.5)


@pytest.mark.data
def test_mean_fit_residual_on_real_strokes(small1_strokes):
    alphabet = small1_strokes.alphabets[0]
    residuals = []
    for character in small1_strokes.characters(alphabet)[:3]:
        for key in small1_strokes.keys(alphabet, character)[:5]:
            for stroke in small1_strokes.strokes(key):
                residuals.extend(preprocess_stroke(stroke)[1])
    assert 0 < np.mean(residuals) < 1.0


def test_poor_fit_is_cut_at_the_sharpest_turn():
    # a zig-zag with three sharp corners, drawn without pauses: one spline cannot follow it
    corners = np.array([[10, 10], [40, 40], [70, 10], [100, 40.0]])
    points = np.concatenate(
        [np.linspace(a, b, 43)[:-1] for a, b in zip(corners[:-1], corners[1:], strict=True)]
        + [corners[-1:]]
    )
    times = np.arange(len(points)) * 20.0
    controls, residuals = preprocess_stroke(_timed(points, times))
    assert len(controls) >= 2 and np.all(residuals <= 2.0)
    controls, residuals = preprocess_stroke(_timed(points, times), max_residual=0.5)
    assert len(controls) == 3
    np.testing.assert_allclose(controls[0, -1], corners[1], atol=1.5)
    np.testing.assert_allclose(controls[1, -1], corners[2], atol=1.5)
    assert np.all(residuals < 0.5)
