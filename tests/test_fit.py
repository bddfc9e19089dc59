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
    parse_image,
    parse_log_prior,
    refine_parses,
    refit_token,
    start_grid,
    start_log_scale,
    token_log_prior,
    top_k,
)
from conceptlearn.model.render import render

_refit = jax.jit(refit_token, static_argnames=("cfg", "n_steps"))
_fit = jax.jit(fit_token, static_argnames=("cfg", "n_steps", "n_coarse", "score_level"))

CFG = FitConfig(
    max_candidates=3,
    max_strokes=3,
    n_points=8,
    n_parses=2,
    parse_steps=6,
    refit_steps=8,
    n_samples=24,
    wide_lr=0.0,
    parse_coarse_steps=3,
    refit_coarse_steps=4,
    occluder_side=0,  # the refit without the occluder; its tests set it
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


def test_a_wide_second_refit_keeps_the_better_fit_and_reaches_a_larger_copy():
    small = [_line([40, 50], [65, 50]), _line([52, 38], [52, 63])]
    parse = parse_image(_image(small), CFG)
    large = jnp.asarray(_image(CROSS))  # the same cross, about 2.2x larger
    one = FitConfig(**{**CFG.__dict__, "refit_steps": 10})
    wide = FitConfig(**{**one.__dict__, "wide_lr": 1.5, "wide_blur": 12.0})
    own = jnp.asarray(_image(small))
    plain = [float(_fit(parse.points[0], parse.mask[0], im, one)[0]) for im in (large, own)]
    best = [float(_fit(parse.points[0], parse.mask[0], im, wide)[0]) for im in (large, own)]
    assert best[0] > plain[0] + 20  # long steps from a wide blur reach the larger copy
    assert best[1] >= plain[1] - 1e-3  # the plain fit is one of those the best is kept from


def test_start_scale_matches_ink_spreads_and_reaches_a_smaller_copy():
    """The moment-matched start: log of the ratio of the ink spreads (0 for the same image,
    antisymmetric), and from it a short refit reaches a copy 0.6 times the size that the
    refit from the prior's mean size does not."""
    centre = np.asarray([52.0, 52.0], np.float32)
    small_cross = [centre + 0.6 * (s - centre) for s in CROSS]
    large, small = (jnp.asarray(_image(s)) for s in (CROSS, small_cross))
    ratio = float(start_log_scale(large, small))
    assert abs(ratio - np.log(0.6)) < 0.15
    assert float(start_log_scale(small, large)) == pytest.approx(-ratio, abs=1e-5)
    assert float(start_log_scale(large, large)) == 0.0
    parse = parse_image(np.asarray(large), CFG)
    short = FitConfig(**{**CFG.__dict__, "refit_steps": 10, "wide_lr": 0.0})
    scores = [float(fit_token(parse.points[0], parse.mask[0], small, short, log_scale0=s)[0])
              for s in (0.0, ratio)]
    assert scores[1] > scores[0] + 20


def test_start_grid_reaches_a_smaller_and_a_rotated_copy():
    """The far-reaching refit started from the best of a grid of scales and rotations reaches
    a copy 0.6 times the size, and one turned 0.6 rad, that the refit from the prior's mean
    does not; on the parse's own image it loses nothing (the grid's first start is the
    plain one)."""
    assert start_grid(CFG).shape == (1, 2) and not start_grid(CFG).any()
    grid_cfg = FitConfig(**{**CFG.__dict__, "refit_steps": 10, "start_scale": 0.6,
                            "start_scales": 5, "start_rotation": 0.6})
    grid = start_grid(grid_cfg)
    assert grid.shape == (15, 2) and not grid[0].any()
    np.testing.assert_allclose(np.unique(grid[:, 0]), [-0.6, -0.3, 0.0, 0.3, 0.6], atol=1e-6)
    np.testing.assert_allclose(np.unique(grid[:, 1]), [-0.6, 0.0, 0.6], atol=1e-6)
    with pytest.raises(ValueError, match="start_scales must be odd"):
        start_grid(FitConfig(**{**grid_cfg.__dict__, "start_scales": 4}))
    centre = np.asarray([52.0, 52.0], np.float32)
    turn = np.asarray([[np.cos(0.6), -np.sin(0.6)], [np.sin(0.6), np.cos(0.6)]], np.float32)
    copies = {
        "small": [centre + 0.6 * (s - centre) for s in CROSS + BAR],
        "turned": [centre + (s - centre) @ turn.T for s in CROSS + BAR],
        "own": CROSS + BAR,
    }
    parse = parse_image(_image(CROSS + BAR), CFG)
    plain_cfg = FitConfig(**{**grid_cfg.__dict__, "start_scale": 0.0, "start_rotation": 0.0})
    for name, strokes in copies.items():
        image = jnp.asarray(_image(strokes))
        plain, with_grid = (float(_fit(parse.points[0], parse.mask[0], image, c)[0])
                            for c in (plain_cfg, grid_cfg))
        if name == "own":
            assert with_grid >= plain - 1e-3
        else:
            assert with_grid > plain + 20, name


def _shrunk_cross_refit(cfg):
    """The cross's parse refit to a copy at 0.75 times the size, moved by 4 px: ``(score,
    log P(image | token), log P(token))`` at the refit token (likelihood at full resolution,
    the score's blur)."""
    from conceptlearn.inference.fit import level_log_lik
    from conceptlearn.model.token import token_ink, token_parents

    centre = np.asarray([52.0, 52.0], np.float32)
    parse = parse_image(_image(CROSS), CFG)
    target = jnp.asarray(_image([centre + 0.75 * (s - centre) + 4.0 for s in CROSS]))
    points, mask = parse.points[0], parse.mask[0]
    score, refit, token = _fit(points, mask, target, cfg)
    ll = level_log_lik(refit, mask, target.astype(jnp.float32), cfg.blur_sigma, 1, cfg,
                       token_ink(token))
    prior = token_log_prior(token, mask, cfg, token_parents(points, mask, cfg))
    return float(score), float(ll), float(prior)


def test_a_tempered_likelihood_scores_the_weighted_sum_and_keeps_the_token_nearer_its_prior():
    """With ``likelihood_weight`` w the score is w log P(image | token) + log P(token) at the
    refit token, and a smaller w leaves the token more probable under its prior."""
    priors = {}
    for weight in (1.0, 0.2):
        cfg = FitConfig(**{**CFG.__dict__, "refit_steps": 10, "likelihood_weight": weight})
        score, ll, priors[weight] = _shrunk_cross_refit(cfg)
        assert score == pytest.approx(weight * ll + priors[weight], abs=0.05)
    assert priors[0.2] > priors[1.0] + 1.0


def test_a_score_only_weight_keeps_the_refit_and_reweighs_its_score():
    """``score_likelihood_weight`` w: the token is the one the unweighted steps find (the same
    likelihood and prior), and the score is w log P(image | token) + log P(token) at it."""
    plain = FitConfig(**{**CFG.__dict__, "refit_steps": 10})
    weighted = FitConfig(**{**plain.__dict__, "score_likelihood_weight": 0.3})
    plain_score, plain_ll, plain_prior = _shrunk_cross_refit(plain)
    score, ll, prior = _shrunk_cross_refit(weighted)
    assert ll == pytest.approx(plain_ll, abs=0.05) and prior == pytest.approx(plain_prior, abs=0.05)
    assert plain_score == pytest.approx(plain_ll + plain_prior, abs=0.05)
    assert score == pytest.approx(0.3 * ll + prior, abs=0.05)


def test_coarse_steps_reach_the_fit_of_full_resolution_steps():
    """Half-resolution steps (scored at full resolution) fit a larger copy about as well as
    full-resolution steps."""
    parse = parse_image(_image(CROSS), CFG)
    larger = jnp.asarray(_image([_line([15, 50], [90, 50]), _line([52, 12], [52, 92])]))
    start = float(_fit(parse.points[0], parse.mask[0], larger, CFG, 0, 0)[0])
    fine = float(_fit(parse.points[0], parse.mask[0], larger, CFG, 20, 0)[0])
    coarse = float(_fit(parse.points[0], parse.mask[0], larger, CFG, 20, 20)[0])
    assert fine > start + 200
    assert coarse - start > 0.85 * (fine - start)


def test_the_occluder_explains_ink_the_program_lacks():
    """With ``occluder_side``, the parse of a cross whose third stroke, a short bar, was hidden,
    refit to the whole drawing, scores far better than without: the square takes the bar's ink,
    which the parse cannot draw. On the whole drawing's own parse, whose misfit is spread thin,
    it changes little."""
    bar = _line([88, 15], [88, 35])
    whole = _image([*CROSS, bar])
    occluder = FitConfig(**{**CFG.__dict__, "occluder_side": 24, "occluder_log_prior": -50.0,
                            "occluder_ink": 0.15, "occluder_steps": False})
    scores = {}
    for name, source in (("hidden", _image(CROSS)), ("whole", whole)):
        parse = parse_image(source, CFG)
        scores[name] = [float(_refit(parse.points[0], parse.mask[0], jnp.asarray(whole), cfg))
                        for cfg in (CFG, occluder)]
    assert scores["hidden"][1] > scores["hidden"][0] + 20
    assert abs(scores["whole"][1] - scores["whole"][0]) < 5


def test_merge_rounds_only_add_candidates_so_the_best_parse_never_gets_worse():
    """Merge moves join the strokes of each image's best parse; they are ranked with what was
    refined before, so the best log posterior can only rise. Here the only proposal of a bar
    drawn in one movement splits it in the middle, and the merged stroke wins."""
    import dataclasses

    from conceptlearn.inference.fit import merge_batch, refine_proposals

    arm_a, arm_b = _line([20, 30], [52, 55]), _line([53, 56], [85, 80])
    image = _image(BAR)
    points = np.zeros((1, 1, 3, 8, 2), np.float32)
    mask = np.zeros((1, 1, 3, 8), bool)
    points[0, 0, :2], mask[0, 0, :2] = [arm_a, arm_b], True
    proposals = [points, mask, np.ones((1, 1), bool)]
    cfg = dataclasses.replace(CFG, merge_moves=2)
    plain = refine_proposals(proposals, image[None], cfg)
    assert merge_batch(plain, cfg, np.ones(1, bool))[2].any()
    assert not merge_batch(plain, cfg, np.zeros(1, bool))[2].any()  # moves already refined
    merged = refine_proposals(proposals, image[None], dataclasses.replace(cfg, merge_rounds=1))
    assert float(merged.log_post[0, 0]) > float(plain.log_post[0, 0])
    assert int(np.asarray(merged.mask[0, 0]).any(-1).sum()) == 1


def test_refinement_scores_the_type_on_cut_slots_as_on_all_slots():
    """refine_valid scores log P(type) of each refined proposal in its chunk, with the stroke
    slots cut to those the chunk uses: the same as parse_type_log_probs on every slot."""
    from conceptlearn.inference.fit import propose_batch, refine_valid, round_slots, strokes_used
    from conceptlearn.model.type_prior import parse_type_log_probs
    from conceptlearn.shipped import resolve_library

    library = resolve_library()
    images = np.stack([_image(CROSS), _image(BAR)])
    proposals = propose_batch(images, CFG)
    refined, log_lik, log_prior = refine_valid(proposals, images, CFG, library)
    valid = np.isfinite(log_lik)
    slots = round_slots(strokes_used(proposals[1][valid]), proposals[1].shape[2])
    assert valid.sum() >= 2 and slots.min() < proposals[1].shape[2]  # some chunks are cut
    whole = np.asarray(parse_type_log_probs(library, refined[valid], proposals[1][valid],
                                            CFG.type_max_pieces))
    np.testing.assert_allclose(log_prior[valid], whole, rtol=1e-5, atol=1e-3)


# compiles the type prior's gradient inside the optimiser: 55 s beside an evaluation; the
# option is off in both presets
@pytest.mark.slow
def test_type_refinement_raises_the_posterior_keeps_invalid_parses_and_takes_dots():
    """Refining the K best parses as types (image likelihood + log P(type)) never lowers a
    parse's log posterior, raises it for a wobbly bar (the primitives' splines straighten it),
    keeps invalid parses invalid with normalised weights, and a dot (one valid point, no
    defined type gradient) stays finite."""
    import dataclasses

    from conceptlearn.inference.fit import Parse, image_log_lik, type_refine
    from conceptlearn.model.library import toy_library
    from conceptlearn.model.type_prior import parse_type_log_probs

    library = toy_library(n_primitives=6, seed=3)
    cfg = dataclasses.replace(CFG, type_steps=6, type_max_pieces=2)
    dot = np.array([60.0, 20.0], np.float32)
    image = _image(BAR) | (np.hypot(*np.mgrid[:105, :105][::-1] - dot[:, None, None]) < 2.5)
    wobble = np.where(np.arange(8)[:, None] % 2 == 0, 1.5, -1.5).astype(np.float32)
    points = np.zeros((1, 3, 3, 8, 2), np.float32)
    mask = np.zeros((1, 3, 3, 8), bool)
    points[0, :, 0], mask[0, :, 0] = BAR[0] + wobble, True
    points[0, :, 1], mask[0, :, 1, 0] = dot, True  # a dot: one valid point
    points[0, 1, 0] = BAR[0]  # a straight bar
    log_lik = np.array([
        float(image_log_lik(jnp.asarray(p), jnp.asarray(m), jnp.asarray(image), cfg.blur_sigma, cfg))
        for p, m in zip(points[0], mask[0], strict=True)
    ])
    log_prior = np.asarray(parse_type_log_probs(library, points[0], mask[0], cfg.type_max_pieces))
    before = log_lik + log_prior
    before[2] = -np.inf  # the third parse is not a parse
    parse = Parse(jnp.asarray(points), jnp.asarray(mask), jnp.zeros((1, 3)), jnp.asarray(before[None]))
    after = type_refine(parse, image[None], cfg, library)
    assert np.all(np.isfinite(np.asarray(after.points)))
    post = np.asarray(after.log_post[0])
    assert np.isneginf(post[2]) and np.isneginf(np.asarray(after.log_weight[0, 2]))
    np.testing.assert_allclose(float(jnp.sum(jnp.exp(after.log_weight[0]))), 1.0, rtol=1e-4)
    np.testing.assert_array_less(np.sort(before[:2]) - 1e-3, np.sort(post[:2]))
    assert post[:2].min() > before[:2].min() + 1.0  # the wobbly bar straightened
    np.testing.assert_allclose(np.asarray(after.points[0, :2, 1, 0]), [dot, dot], atol=3.0)


# two 30-step refit programs with the occluder: 38 s beside an evaluation; the option is off
# in both presets
@pytest.mark.slow
def test_a_blank_occluder_in_the_steps_fits_the_visible_ink_better():
    """A cross with a blank 21-px square over one arm: refit with a blank occluder in its steps
    (``occluder_steps``, ``occluder_ink`` at epsilon / 2), the cross's own parse scores better
    than when the steps fit the gap and only the score sums the square out."""
    import dataclasses

    image = _image(CROSS)
    image[40:61, 65:86] = False  # the right arm's outer half
    points = np.stack([*CROSS, CROSS[0]])
    mask = np.zeros((3, 8), bool)
    mask[:2] = True
    blank = dataclasses.replace(CFG, occluder_side=21, occluder_log_prior=-10.0, refit_steps=30,
                                occluder_ink=CFG.epsilon / 2)
    scores = [float(_fit(jnp.asarray(points), jnp.asarray(mask), jnp.asarray(image),
                         dataclasses.replace(blank, occluder_steps=steps))[0])
              for steps in (False, True)]
    assert scores[1] > scores[0] + 5
