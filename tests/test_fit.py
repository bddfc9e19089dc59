"""Top-down refinement and token refits (conceptlearn.inference.fit)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from conceptlearn.inference.fit import (
    FitConfig,
    Token,
    fit_token,
    image_log_lik,
    motor_basis,
    parse_image,
    parse_log_prior,
    refine_parses,
    refit_token,
    token_log_prior,
    token_points,
    top_k,
)
from conceptlearn.model.render import render

_refit = jax.jit(refit_token, static_argnames=("cfg", "n_steps"))

CFG = FitConfig(
    max_candidates=3,
    max_strokes=3,
    n_points=8,
    n_parses=2,
    parse_steps=6,
    refit_steps=8,
    n_samples=24,
)


def _image(strokes: list[np.ndarray]) -> np.ndarray:
    """Known strokes ``(8, 2)`` -> bool image via the model's own renderer."""
    pts = np.zeros((3, 8, 2), np.float32)
    mask = np.zeros((3, 8), bool)
    for i, s in enumerate(strokes):
        pts[i], mask[i] = s, True
    return np.asarray(render(jnp.asarray(pts), jnp.asarray(mask))) > 0.5


def _line(a, b):
    return np.linspace(a, b, 8).astype(np.float32)


CROSS = [_line([25, 50], [80, 50]), _line([52, 20], [52, 85])]
BAR = [_line([20, 30], [85, 80])]


def test_refinement_does_not_lower_the_posterior():
    image = jnp.asarray(_image(CROSS))
    pts = np.stack([np.stack(CROSS + [CROSS[0]])] * 3) + np.float32(3.0)  # shifted by 3 px
    mask = np.zeros((3, 3, 8), bool)
    mask[:, :2] = True
    valid = np.array([True, True, False])
    before = refine_parses(
        pts, mask, valid, image, cfg=FitConfig(**{**CFG.__dict__, "parse_steps": 0})
    )
    after = refine_parses(pts, mask, valid, image, cfg=CFG)
    post_b, post_a = before[1] + before[2], after[1] + after[2]
    assert np.all(np.asarray(post_a[:2]) > np.asarray(post_b[:2]))
    assert np.isneginf(post_a[2])


def test_top_k_weights_are_normalised_and_skip_invalid():
    log_post = jnp.array([-5.0, -jnp.inf, -3.0, -4.0])
    pts = jnp.arange(4, dtype=jnp.float32)[:, None, None, None] * jnp.ones((4, 1, 2, 2))
    p = top_k(pts, jnp.ones((4, 1, 2), bool), log_post, 2)
    np.testing.assert_allclose(np.asarray(p.points[:, 0, 0, 0]), [2.0, 3.0])
    np.testing.assert_allclose(float(jnp.sum(jnp.exp(p.log_weight))), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(p.log_weight), np.log([1, np.exp(-1)]) - np.log1p(np.exp(-1)), rtol=1e-5
    )


def test_token_prior_matches_gaussian_log_density_up_to_a_constant():
    rng = np.random.default_rng(0)
    mask = np.zeros((3, 8), bool)
    mask[0] = True
    tok = Token(
        jnp.asarray(rng.normal(size=2), jnp.float32) * 0.1,
        jnp.asarray(rng.normal(size=2), jnp.float32),
        jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
        jnp.asarray(rng.normal(size=(3, 8, 2)), jnp.float32),
        jnp.float32(0.2),
        jnp.float32(0.3),
        jnp.float32(-0.1),
        jnp.zeros(3),
    )
    ref = (
        stats.norm(0, CFG.scale_sigma).logpdf(np.asarray(tok.log_scale)).sum()
        + stats.norm(0, CFG.shift_sigma).logpdf(np.asarray(tok.shift)).sum()
        + stats.norm(0, CFG.stroke_sigma).logpdf(np.asarray(tok.stroke_shift[0])).sum()
        + stats.norm(0, CFG.motor_sigma).logpdf(np.asarray(tok.motor[0])).sum()
        + stats.norm(0, CFG.width_sigma).logpdf(0.2)
        + stats.norm(0, CFG.rotate_sigma).logpdf(0.3)
        + stats.norm(0, CFG.shear_sigma).logpdf(-0.1)
    )
    const = (
        stats.norm(0, CFG.scale_sigma).logpdf(0) * 2
        + stats.norm(0, CFG.shift_sigma).logpdf(0) * 2
        + stats.norm(0, CFG.stroke_sigma).logpdf(0) * 2
        + stats.norm(0, CFG.motor_sigma).logpdf(0) * 16
        + stats.norm(0, CFG.width_sigma).logpdf(0)
        + stats.norm(0, CFG.rotate_sigma).logpdf(0)
        + stats.norm(0, CFG.shear_sigma).logpdf(0)
    )
    np.testing.assert_allclose(
        float(token_log_prior(tok, jnp.asarray(mask), CFG)), ref - const, rtol=1e-4
    )


def test_parse_prior_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    pts = jnp.asarray(rng.normal(size=(3, 8, 2)) * 5 + 50, jnp.float32)
    mask = jnp.asarray(np.arange(8)[None] < np.array([[8], [5], [0]]))
    g = jax.grad(parse_log_prior)(pts, mask, CFG)
    h = 1e-2
    for idx in [(0, 3, 0), (1, 2, 1), (1, 6, 0)]:
        e = jnp.zeros_like(pts).at[idx].set(h)
        fd = (parse_log_prior(pts + e, mask, CFG) - parse_log_prior(pts - e, mask, CFG)) / (2 * h)
        np.testing.assert_allclose(float(g[idx]), float(fd), rtol=2e-2, atol=1e-3)
    assert float(g[1, 6, 0]) == 0.0  # masked point


def test_parse_and_refit_prefer_the_right_shape():
    cross, bar = _image(CROSS), _image(BAR)
    parse = parse_image(cross, CFG)
    assert parse.points.shape == (2, 3, 8, 2)
    np.testing.assert_allclose(float(jnp.sum(jnp.exp(parse.log_weight))), 1.0, rtol=1e-4)
    shifted = np.roll(cross, (2, -3), axis=(0, 1))
    same = _refit(parse.points[0], parse.mask[0], jnp.asarray(shifted), CFG)
    other = _refit(parse.points[0], parse.mask[0], jnp.asarray(bar), CFG)
    assert np.isfinite(float(same)) and float(same) > float(other) + 50


@pytest.mark.parametrize("kind", ["blank", "full", "noise"])
def test_refit_is_finite_on_degenerate_images(kind):
    image = {
        "blank": np.zeros((105, 105), bool),
        "full": np.ones((105, 105), bool),
        "noise": np.random.default_rng(2).random((105, 105)) < 0.5,
    }[kind]
    parse = parse_image(image, CFG)
    assert np.all(np.isfinite(np.asarray(parse.points)))
    score = _refit(parse.points[0], parse.mask[0], jnp.asarray(_image(CROSS)), CFG)
    assert np.isfinite(float(score))


def test_motor_basis_interpolates_linearly_between_knots():
    basis = np.asarray(motor_basis(10, 4))
    np.testing.assert_allclose(basis.sum(1), 1.0, rtol=1e-6)
    ramp = np.linspace(0.0, 9.0, 4)  # a linear offset sampled at the knots
    np.testing.assert_allclose(basis @ ramp, np.arange(10.0), atol=1e-5)
    np.testing.assert_allclose(np.asarray(motor_basis(8, 8)), np.eye(8), atol=1e-6)


def test_knotted_motor_noise_moves_points_smoothly_and_is_scored_on_live_knots():
    cfg = FitConfig(**{**CFG.__dict__, "motor_knots": 3})
    pts = jnp.asarray(np.stack([_line([20, 20], [80, 20]), _line([20, 60], [80, 60])]))
    mask = jnp.asarray(np.array([[True] * 8, [True] + [False] * 7]))  # a stroke and a dot
    motor = np.zeros((2, 3, 2), np.float32)
    motor[0, 1] = [0.0, 4.0]  # bend the middle of stroke 0 down by 4 px
    motor[1] = [[1.0, 0.0], [5.0, 5.0], [5.0, 5.0]]  # only knot 0 touches the dot's point
    zero = jnp.zeros(())
    tok = Token(
        jnp.zeros(2),
        jnp.zeros(2),
        jnp.zeros((2, 2)),
        jnp.asarray(motor),
        zero,
        zero,
        zero,
        jnp.zeros(2),
    )
    moved = np.asarray(token_points(pts, mask, tok)) - np.asarray(pts)
    np.testing.assert_allclose(moved[0, :, 0], 0.0, atol=1e-5)  # identity affine: motor only
    dy = moved[0, :, 1]
    assert dy[0] == pytest.approx(0.0, abs=1e-5) and dy[-1] == pytest.approx(0.0, abs=1e-5)
    assert np.all(np.diff(dy[:4]) >= -1e-5) and np.all(np.diff(dy[4:]) <= 1e-5)
    np.testing.assert_allclose(moved[1, 0], [1.0, 0.0], atol=1e-5)
    live = np.concatenate([motor[0].ravel(), motor[1, 0]])  # 3 knots of the stroke, 1 of the dot
    ref = stats.norm(0, cfg.motor_sigma).logpdf(live).sum()  # every other variable is zero
    ref -= stats.norm(0, cfg.motor_sigma).logpdf(0) * live.size
    got = float(token_log_prior(tok, mask, cfg))
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_second_refit_start_at_the_ink_matched_scale_reaches_a_larger_copy():
    small = [_line([40, 50], [65, 50]), _line([52, 38], [52, 63])]
    parse = parse_image(_image(small), CFG)
    large = jnp.asarray(_image(CROSS))  # the same cross, about 2.2x larger
    one = FitConfig(**{**CFG.__dict__, "refit_steps": 10})
    two = FitConfig(**{**one.__dict__, "refit_starts": 2})
    s1, _, _ = fit_token(parse.points[0], parse.mask[0], large, one)
    s2, _, t2 = fit_token(parse.points[0], parse.mask[0], large, two)
    assert float(s2) > float(s1) + 20
    assert float(jnp.min(t2.log_scale)) > 0.4  # the kept fit is the enlarged one


def test_stroke_scale_grows_each_stroke_about_its_own_centre_and_is_scored_when_on():
    pts = jnp.asarray(np.stack([_line([20, 20], [60, 20]), _line([30, 70], [30, 90])]))
    mask = jnp.ones((2, 8), bool)
    zero = jnp.zeros(())
    log_scale = jnp.asarray([np.log(2.0), 0.0], jnp.float32)
    tok = Token(
        jnp.zeros(2),
        jnp.zeros(2),
        jnp.zeros((2, 2)),
        jnp.zeros((2, 8, 2)),
        zero,
        zero,
        zero,
        log_scale,
    )
    moved = np.asarray(token_points(pts, mask, tok))
    np.testing.assert_allclose(moved[0, [0, -1]], [[0.0, 20.0], [80.0, 20.0]], atol=1e-4)
    np.testing.assert_allclose(moved[1], np.asarray(pts[1]), atol=1e-4)
    off = float(token_log_prior(tok, mask, CFG))  # stroke_scale_sigma = 0: not a variable
    on_cfg = FitConfig(**{**CFG.__dict__, "stroke_scale_sigma": 0.2})
    on = float(token_log_prior(tok, mask, on_cfg))
    ref = stats.norm(0, 0.2).logpdf(np.log(2.0)) - stats.norm(0, 0.2).logpdf(0.0)
    assert off == pytest.approx(0.0, abs=1e-6)
    assert on == pytest.approx(ref, rel=1e-5)


def test_a_long_stroke_scores_as_a_line_not_as_beads_with_a_shared_sample_budget():
    """24 samples per stroke leave gaps along a 150 px spiral (beads of ink ~2.8 px in radius,
    6 px apart), which cost 126 nats against the spiral's own drawing; a drawing-wide budget
    spent by length keeps the line whole (0.2 nats)."""
    t = np.linspace(0.0, 2.2 * np.pi, 16)
    radius = np.linspace(12.0, 32.0, 16)
    spiral = np.stack([52 + radius * np.cos(t), 52 + radius * np.sin(t)], -1)[None]
    pts, mask = jnp.asarray(spiral, jnp.float32), jnp.ones((1, 16), bool)
    image = np.asarray(render(pts, mask, n_samples=512)) > 0.5
    dense = float(image_log_lik(pts, mask, image, 2.0, FitConfig(n_samples=512)))
    per_stroke = float(image_log_lik(pts, mask, image, 2.0, FitConfig(n_samples=24)))
    shared = float(image_log_lik(pts, mask, image, 2.0, FitConfig(total_samples=256)))
    assert per_stroke < dense - 100.0
    assert shared > dense - 10.0


def test_a_wide_second_refit_keeps_the_better_fit_and_reaches_a_larger_copy():
    small = [_line([40, 50], [65, 50]), _line([52, 38], [52, 63])]
    parse = parse_image(_image(small), CFG)
    large = jnp.asarray(_image(CROSS))  # the same cross, about 2.2x larger
    one = FitConfig(**{**CFG.__dict__, "refit_steps": 10})
    wide = FitConfig(**{**one.__dict__, "wide_lr": 1.5, "wide_blur": 12.0})
    own = jnp.asarray(_image(small))
    plain = [float(fit_token(parse.points[0], parse.mask[0], im, one)[0]) for im in (large, own)]
    best = [float(fit_token(parse.points[0], parse.mask[0], im, wide)[0]) for im in (large, own)]
    assert best[0] > plain[0] + 20  # long steps from a wide blur reach the larger copy
    assert best[1] >= plain[1] - 1e-3  # the plain fit is one of those the best is kept from
