"""The image likelihood, numpyro-style: log-density vs scipy, gradients vs finite differences,
samples vs log-density; plus the blur and the no-retrace check."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage, stats
from scipy.special import logsumexp

from conceptlearn.model.image import (
    blur,
    image_dist,
    image_log_likelihood,
    log_likelihood,
    occluded_log_likelihood,
    pixel_probs,
)
from conceptlearn.model.render import IMAGE_SIZE, render

SIZE = (IMAGE_SIZE, IMAGE_SIZE)


def _stroke():
    points = np.zeros((2, 4, 2), np.float32)
    points[0] = [[20.0, 30.0], [50.0, 35.0], [70.0, 70.0], [40.0, 85.0]]
    mask = np.zeros((2, 4), bool)
    mask[0] = True
    return points, mask


def test_log_likelihood_matches_scipy_bernoulli():
    rng = np.random.default_rng(0)
    probs = rng.uniform(1e-4, 1 - 1e-4, SIZE).astype(np.float32)
    image = rng.uniform(size=SIZE) < 0.3
    expected = stats.bernoulli.logpmf(image, probs.astype(np.float64)).sum()
    np.testing.assert_allclose(float(log_likelihood(probs, image)), expected, rtol=1e-5)


def test_pixel_probs_follow_the_formula_and_stay_inside_zero_one():
    ink = np.zeros(SIZE, np.float32)
    ink[40:60, 30:80] = 1.0
    sigma, eps = 2.0, 0.1
    p = np.asarray(pixel_probs(ink, sigma, eps))
    np.testing.assert_allclose(p, (1 - eps) * np.asarray(blur(ink, sigma)) + eps / 2, atol=1e-6)
    np.testing.assert_allclose(p[50, 55], 1 - eps / 2, atol=1e-5)  # deep inside: full ink
    np.testing.assert_allclose(p[5, 5], eps / 2, atol=1e-6)  # far away: noise only
    for sigma, eps in itertools.product([0.5, 16.0], [1e-4, 0.5]):
        p = np.asarray(pixel_probs(ink, sigma, eps))
        assert p.min() > 0.0 and p.max() < 1.0


@pytest.mark.parametrize("sigma", [0.5, 2.0, 6.0])
def test_blur_matches_scipy_gaussian_filter(sigma):
    ink = np.zeros(SIZE, np.float32)
    ink[30:34, 20:90] = 1.0
    ink[20:80, 60] = 0.7
    expected = ndimage.gaussian_filter(ink.astype(np.float64), sigma, mode="constant", truncate=8)
    np.testing.assert_allclose(np.asarray(blur(ink, sigma)), expected, atol=2e-3)


def test_gradients_match_finite_differences():
    points, mask = _stroke()
    image = np.asarray(render(points + np.float32(1.0), mask) > 0.5)
    args = (points, mask, image, np.float32(1.5), np.float32(0.05))
    f = jax.jit(image_log_likelihood)
    grads = jax.jit(jax.grad(image_log_likelihood, argnums=(0, 3, 4)))(*args)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    rng = np.random.default_rng(1)
    v = (rng.normal(size=points.shape) * mask[..., None]).astype(np.float32)
    h = np.float32(1e-2)
    fd = (float(f(points + h * v, *args[1:])) - float(f(points - h * v, *args[1:]))) / (2 * h)
    np.testing.assert_allclose(np.vdot(np.asarray(grads[0]), v), fd, rtol=2e-2)
    for i, index in ((1, 3), (2, 4)):
        x = float(args[index])
        step = 1e-3 * x
        hi, lo = list(args), list(args)
        hi[index], lo[index] = np.float32(x + step), np.float32(x - step)
        fd = (float(f(*hi)) - float(f(*lo))) / (2 * step)
        np.testing.assert_allclose(float(grads[i]), fd, rtol=2e-2)


def test_gradient_wrt_probs_matches_the_analytic_form():
    rng = np.random.default_rng(2)
    probs = rng.uniform(0.05, 0.95, SIZE).astype(np.float32)
    image = rng.uniform(size=SIZE) < 0.5
    grad = np.asarray(jax.grad(log_likelihood)(probs, image))
    np.testing.assert_allclose(grad, np.where(image, 1 / probs, -1 / (1 - probs)), rtol=1e-4)


def test_samples_agree_with_the_log_density():
    """Goodness of fit on a 2 x 2 image: all 16 outcomes, chi-square of counts vs exp(log_prob)."""
    probs = jnp.asarray([[0.1, 0.6], [0.85, 0.3]])
    d = image_dist(probs)
    n = 20_000
    keys = jax.random.split(jax.random.key(0), n)
    samples = np.asarray(jax.vmap(lambda k: d.sample(k))(keys)).astype(bool)
    codes = samples.reshape(n, 4) @ (1 << np.arange(4))
    counts = np.bincount(codes, minlength=16)
    outcomes = np.array([[(c >> b) & 1 for b in range(4)] for c in range(16)], bool)
    expected = n * np.exp([float(log_likelihood(probs, o.reshape(2, 2))) for o in outcomes])
    np.testing.assert_allclose(expected.sum(), n, rtol=1e-5)
    assert stats.chisquare(counts, expected * n / expected.sum()).pvalue > 1e-3


def test_no_retrace_for_new_values_of_the_same_shapes():
    points, mask = _stroke()
    image = np.zeros(SIZE, bool)
    image_log_likelihood(points, mask, image, 1.0, 0.01).block_until_ready()
    before = (image_log_likelihood._cache_size(), log_likelihood._cache_size())
    for k in range(3):
        image[10 * k : 10 * k + 5, 20:40] = True
        image_log_likelihood(points + np.float32(k), mask, image, 0.5 + k, 0.1 / (k + 1))
    assert (image_log_likelihood._cache_size(), log_likelihood._cache_size()) == before


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="differ"):
        log_likelihood(jnp.full((4, 4), 0.5), jnp.zeros((4, 5), bool))


def _occluded_reference(probs, image, side, log_prior, blank):
    """``log P(image)`` under the occluder mixture by enumerating every square, in float64."""
    probs, image = np.asarray(probs, np.float64), np.asarray(image, bool)
    n = probs.shape[0]
    clear = stats.bernoulli.logpmf(image, probs)
    terms = []
    for r, c in itertools.product(range(n - side + 1), repeat=2):
        covered = clear.copy()
        covered[r : r + side, c : c + side] = stats.bernoulli.logpmf(
            image[r : r + side, c : c + side], blank
        )
        terms.append(covered.sum())
    rho = np.exp(log_prior)
    return np.logaddexp(np.log1p(-rho) + clear.sum(),
                        np.log(rho) - np.log(len(terms)) + logsumexp(terms))


def test_occluded_log_likelihood_matches_enumerating_the_squares():
    rng = np.random.default_rng(3)
    probs = rng.uniform(0.02, 0.98, (12, 12)).astype(np.float32)
    image = rng.uniform(size=(12, 12)) < 0.4
    image[2:7, 5:10] = False  # a blank patch for the occluder to explain
    for log_prior in (-0.5, -3.0, -20.0):
        got = occluded_log_likelihood(probs, image.astype(np.float32), 1, 5, log_prior, 0.01)
        np.testing.assert_allclose(float(got), _occluded_reference(probs, image, 5, log_prior, 0.01),
                                   rtol=1e-5)


def test_occluded_likelihood_is_a_normalised_density_over_images():
    probs = np.array([[0.1, 0.7, 0.4], [0.9, 0.2, 0.6], [0.3, 0.8, 0.5]], np.float32)
    images = [np.array(bits, np.float32).reshape(3, 3) for bits in itertools.product([0, 1], repeat=9)]
    log_p = [float(occluded_log_likelihood(probs, im, 1, 2, -1.0, 0.05)) for im in images]
    np.testing.assert_allclose(np.exp(logsumexp(log_p)), 1.0, atol=1e-5)


def test_occluder_explains_a_blanked_square_and_vanishes_with_its_prior():
    points, mask = _stroke()
    probs = pixel_probs(render(points, mask), 1.5, 0.02)
    image = np.asarray(render(points, mask) > 0.5)
    hidden = image.copy()
    hidden[30:55, 40:65] = False
    clear_ll = float(log_likelihood(probs, hidden))
    occluded = float(occluded_log_likelihood(probs, hidden.astype(np.float32), 1, 25, -20.0, 0.01))
    assert occluded > clear_ll + 100.0  # the square's missing ink is explained, minus ~29 nats
    unlikely = float(occluded_log_likelihood(probs, hidden.astype(np.float32), 1, 25, -5000.0, 0.01))
    np.testing.assert_allclose(unlikely, clear_ll, rtol=1e-6)


def test_occluded_likelihood_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    probs = rng.uniform(0.05, 0.95, (20, 20)).astype(np.float32)
    image = (rng.uniform(size=(20, 20)) < 0.3).astype(np.float32)
    image[4:12, 4:12] = 0.0

    def f(p):
        return occluded_log_likelihood(p, image, 2, 8, -2.0, 0.01)

    grad = np.asarray(jax.grad(f)(probs))
    v = rng.normal(size=probs.shape).astype(np.float32)
    h = np.float32(1e-3)
    fd = (float(f(probs + h * v)) - float(f(probs - h * v))) / (2 * h)
    np.testing.assert_allclose(np.vdot(grad, v), fd, rtol=2e-2)
