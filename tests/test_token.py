"""P(token | type): reference density, gradients, samples; trajectories for the renderer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from conceptlearn.model.library import (
    END_OF,
    MAX_STROKES,
    MAX_SUBSTROKES,
    POINTS_PER_SUBSTROKE,
    toy_library,
)
from conceptlearn.model.token import (
    Token,
    anchors,
    sample_token,
    token_from_type,
    token_log_prob,
    token_trajectories,
)
from conceptlearn.model.type_prior import masks, sample_type, type_from_splines

N_SAMPLES = 2000


@pytest.fixture(scope="module")
def library():
    return toy_library(n_primitives=3, seed=1)


@pytest.fixture(scope="module")
def type_(library):
    """A sampled type with several strokes and at least one dependent stroke."""
    for i in range(200):
        t = sample_type(library, key=jax.random.key(i))
        if int(t.n_strokes) >= 3 and np.any(np.asarray(t.relation)[1 : int(t.n_strokes)] > 0):
            return t
    raise AssertionError("no suitable type sampled")


@pytest.fixture(scope="module")
def tokens(library, type_):
    keys = jax.random.split(jax.random.key(7), N_SAMPLES)
    return jax.jit(jax.vmap(lambda k: sample_token(library, type_, key=k)))(keys)


def _one(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def reference_log_prob(library, token: Token, type_) -> float:
    lib = {k: np.asarray(v, np.float64) for k, v in library._asdict().items()}
    _, sub_mask = masks(type_.n_strokes, type_.n_sub)
    sub_mask = np.asarray(sub_mask)
    n = int(type_.n_strokes)
    lp = (
        stats.norm(np.asarray(type_.shapes)[sub_mask], lib["shape_noise_sd"])
        .logpdf(np.asarray(token.shapes)[sub_mask])
        .sum()
    )
    lp += (
        stats.lognorm(s=lib["log_scale_noise_sd"], scale=np.asarray(type_.scales)[sub_mask])
        .logpdf(np.asarray(token.scales)[sub_mask])
        .sum()
    )
    noise = np.asarray(
        token.positions - anchors(type_, token.shapes, token.scales, token.positions)
    )[:n]
    lp += stats.norm(0, lib["position_noise_sd"]).logpdf(noise).sum()
    lp += stats.norm(lib["affine_mean"], lib["affine_sd"]).logpdf(np.asarray(token.affine)).sum()
    lp += stats.uniform(lib["blur_range"][0], np.diff(lib["blur_range"])[0]).logpdf(token.blur)
    lp += stats.uniform(lib["epsilon_range"][0], np.diff(lib["epsilon_range"])[0]).logpdf(
        token.epsilon
    )
    return float(lp)


def test_log_prob_matches_reference(library, type_, tokens):
    batch = np.asarray(jax.vmap(token_log_prob, in_axes=(None, 0, None))(library, tokens, type_))
    for i in range(5):
        np.testing.assert_allclose(
            batch[i], reference_log_prob(library, _one(tokens, i), type_), rtol=1e-4, atol=1e-2
        )


def test_sampled_positions_follow_relations(library, type_, tokens):
    """The sampler solves positions = anchors(positions) + jitter; the jitter it recovers is the
    Gaussian the model samples (the goodness-of-fit check of the position site)."""
    n = int(type_.n_strokes)
    noise = jax.vmap(lambda t: t.positions - anchors(type_, t.shapes, t.scales, t.positions))(
        tokens
    )
    z = np.asarray(noise)[:, :n] / float(library.position_noise_sd)
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3


def test_samples_fit_log_prob(library, type_, tokens):
    _, sub_mask = masks(type_.n_strokes, type_.n_sub)
    sub_mask = np.asarray(sub_mask)
    z = (np.asarray(tokens.shapes) - np.asarray(type_.shapes)) / float(library.shape_noise_sd)
    assert stats.kstest(z[:, sub_mask].ravel()[:20000], "norm").pvalue > 1e-3
    zs = np.log(np.asarray(tokens.scales) / np.asarray(type_.scales)) / float(
        library.log_scale_noise_sd
    )
    assert stats.kstest(zs[:, sub_mask].ravel(), "norm").pvalue > 1e-3
    za = (np.asarray(tokens.affine) - np.asarray(library.affine_mean)) / np.asarray(
        library.affine_sd
    )
    assert stats.kstest(za.ravel(), "norm").pvalue > 1e-3
    lo, hi = np.asarray(library.blur_range)
    assert stats.kstest(np.asarray(tokens.blur), stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3


def test_gradient_matches_finite_differences(library, type_, tokens):
    token = _one(tokens, 0)
    _, sub_mask = masks(type_.n_strokes, type_.n_sub)
    stroke_mask = jnp.arange(MAX_STROKES) < type_.n_strokes

    def f(shapes, scales, positions, affine):
        t = token._replace(shapes=shapes, scales=scales, positions=positions, affine=affine)
        return token_log_prob(library, t, type_)

    args = (token.shapes, token.scales, token.positions, token.affine)
    valid = (sub_mask[..., None, None], sub_mask, stroke_mask[:, None], jnp.ones(4, bool))
    grads = jax.grad(f, argnums=(0, 1, 2, 3))(*args)
    rng = np.random.default_rng(0)
    for a, g in enumerate(grads):
        direction = jnp.where(
            valid[a], jnp.asarray(rng.normal(size=args[a].shape), jnp.float32), 0.0
        )
        h = 1e-2
        plus, minus = list(args), list(args)
        plus[a] = args[a] + h * direction
        minus[a] = args[a] - h * direction
        fd = (f(*plus) - f(*minus)) / (2 * h)
        np.testing.assert_allclose(jnp.vdot(g, direction), fd, rtol=2e-2, atol=5e-2)


def _line(a, b):
    return np.linspace(a, b, 5)[None]


def test_trajectories_of_a_parse_redraw_it(library):
    controls = [
        np.concatenate([_line([20, 20], [20, 50]), _line([20, 50], [40, 70])]),
        _line([40.5, 70], [80, 70]),  # end-of stroke 0
    ]
    t = type_from_splines(library, controls)
    assert int(t.relation[1]) == END_OF
    token = token_from_type(library, t)
    points, mask = token_trajectories(token)
    P = POINTS_PER_SUBSTROKE
    assert points.shape == (MAX_STROKES, MAX_SUBSTROKES * P, 2) and mask.shape == points.shape[:2]
    assert np.asarray(mask.sum(1))[:3].tolist() == [2 * P, P, 0]
    np.testing.assert_allclose(points[0, 0], [20, 20], atol=1e-3)
    np.testing.assert_allclose(points[0, P - 1], points[0, P], atol=1e-3)  # sub-strokes chain
    np.testing.assert_allclose(points[0, 2 * P - 1], [40, 70], atol=1e-3)
    # the dependent stroke is placed by its relation (at stroke 0's end), not where it was drawn
    np.testing.assert_allclose(points[1, 0], [40, 70], atol=1e-3)
    np.testing.assert_allclose(points[1, P - 1], [79.5, 70], atol=1e-3)
    # the affine scales about the centre of mass and shifts
    warped, _ = token_trajectories(token._replace(affine=jnp.asarray([2.0, 2.0, 1.0, -1.0])))
    com = np.asarray(points)[np.asarray(mask)].mean(0)
    expected = (np.asarray(points[0, 0]) - com) * 2 + com + np.array([1.0, -1.0])
    np.testing.assert_allclose(warped[0, 0], expected, atol=1e-3)


def test_tokens_render(library, type_, tokens):
    from conceptlearn.model.render import render

    points, mask = token_trajectories(_one(tokens, 0))
    ink = render(points, mask)
    assert ink.shape == (105, 105) and float(ink.max()) > 0.5
    grad = jax.grad(
        lambda s: render(*token_trajectories(_one(tokens, 0)._replace(shapes=s))).sum()
    )(tokens.shapes[0])
    assert np.all(np.isfinite(np.asarray(grad)))


def test_trajectory_token_samples_match_the_log_prior():
    """-2 log P(token) of samples is chi-square with one degree per live variable: its mean and
    variance are the number of live variables and twice it (the sampler and the score agree)."""
    from conceptlearn.inference.config import FULL
    from conceptlearn.model.token import sample_token_noise, token_log_prior

    mask = np.zeros((4, 6), bool)
    mask[0], mask[1, :3] = True, True  # 9 live points, 2 live strokes, 1 stroke empty
    live = 2 * 9 + 2 * 2 + 2 + 2 + 3  # motor, stroke shifts, scale, shift, width/rotation/shear
    keys = jax.random.split(jax.random.key(0), 4000)
    draw = jax.jit(jax.vmap(lambda k: sample_token_noise(FULL, jnp.asarray(mask), key=k)))
    tokens = draw(keys)
    stat = -2 * np.asarray(jax.vmap(lambda t: token_log_prior(t, jnp.asarray(mask), FULL))(tokens))
    assert abs(stat.mean() - live) < 4 * np.sqrt(2 * live / len(keys))
    assert abs(stat.var() / (2 * live) - 1) < 0.15
    assert float(jnp.abs(tokens.motor[:, 1, 3:]).max()) == 0.0  # masked points stay put
    assert float(jnp.abs(tokens.stroke_shift[:, 3]).max()) == 0.0


def _polyline(start, end, n=8):
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) * np.asarray(start, float) + t * np.asarray(end, float)


def test_stroke_parents_attach_a_start_that_touches_earlier_ink():
    """A stroke is attached to the earlier stroke whose segments pass within the radius of its
    first point (not only its sampled points); later strokes and far strokes do not count."""
    from conceptlearn.model.token import stroke_parents

    points = np.zeros((5, 8, 2), np.float32)
    mask = np.ones((5, 8), bool)
    points[0] = _polyline([20, 20], [20, 90])  # a long bar: its points are 10 px apart
    points[1] = _polyline([22, 55], [60, 55])  # starts 2 px off the bar, between its points
    points[2] = _polyline([80, 20], [80, 60])  # far from everything before it
    points[3] = _polyline([61, 56], [61, 90])  # starts on stroke 1's end
    mask[4, 1:] = False  # a dot ...
    points[4, 0] = [80.5, 62]  # ... just below stroke 2's end
    parents = stroke_parents(jnp.asarray(points), jnp.asarray(mask))
    np.testing.assert_array_equal(np.asarray(parents), [-1, 0, -1, 1, 2])
    points[1, 0] = [26, 55]  # 6 px off the bar: independent
    parents = stroke_parents(jnp.asarray(points), jnp.asarray(mask))
    assert int(parents[1]) == -1


def test_attached_token_prior_matches_gaussian_density_and_its_sampler():
    """With attachments the prior scores each stroke's own shift (less its parent's) under
    N(0, attach_sigma), an independent one under N(0, stroke_sigma); samples agree with it."""
    import dataclasses

    from conceptlearn.inference.config import FULL
    from conceptlearn.model.token import (
        TrajectoryToken,
        sample_token_noise,
        token_log_prior,
    )

    noise = dataclasses.replace(FULL, attach_sigma=0.8)
    mask = np.ones((3, 4), bool)
    parents = jnp.asarray([-1, 0, 1], jnp.int32)  # a chain: 2 hangs on 1, 1 on 0
    rng = np.random.default_rng(0)
    shifts = rng.normal(size=(3, 2)).astype(np.float32) * 3
    zeros = jnp.zeros(())
    tok = TrajectoryToken(
        jnp.zeros(2), jnp.zeros(2), jnp.asarray(shifts), jnp.zeros((3, 4, 2)), zeros, zeros, zeros
    )
    own = np.stack([shifts[0], shifts[1] - shifts[0], shifts[2] - shifts[1]])
    ref = (
        stats.norm(0, noise.stroke_sigma).logpdf(own[0]).sum()
        - 2 * stats.norm(0, noise.stroke_sigma).logpdf(0)
        + stats.norm(0, 0.8).logpdf(own[1:]).sum()
        - 4 * stats.norm(0, 0.8).logpdf(0)
    )
    got = float(token_log_prior(tok, jnp.asarray(mask), noise, parents))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    draw = jax.jit(
        jax.vmap(lambda k: sample_token_noise(noise, jnp.asarray(mask), key=k, parents=parents))
    )
    tokens = draw(jax.random.split(jax.random.key(0), 4000))
    stat = -2 * np.asarray(
        jax.vmap(lambda t: token_log_prior(t, jnp.asarray(mask), noise, parents))(tokens)
    )
    live = 2 * 12 + 2 * 3 + 2 + 2 + 3
    assert abs(stat.mean() - live) < 4 * np.sqrt(2 * live / 4000)
    assert abs(stat.var() / (2 * live) - 1) < 0.15
    chain = np.asarray(tokens.stroke_shift[:, 2] - tokens.stroke_shift[:, 1])
    assert abs(chain.std() / 0.8 - 1.0) < 0.1


def test_smooth_motor_prior_is_the_gaussian_process_density_and_its_sampler_agrees():
    """With ``motor_length > 0`` a stroke's motor noise is a Gaussian process along its points:
    the prior's motor term equals scipy's multivariate normal log-density of the valid points
    (up to its constant) under ``sigma**2 exp(-d**2 / (2 l**2))``; samples have that covariance;
    masked points stay put; and the gradient matches finite differences."""
    import dataclasses

    from conceptlearn.inference.config import FULL
    from conceptlearn.model.token import MOTOR_JITTER, sample_token_noise, token_log_prior

    cfg = dataclasses.replace(FULL, motor_length=3.0, motor_sigma=0.9)
    mask = np.zeros((2, 8), bool)
    mask[0], mask[1, :5] = True, True  # a full stroke and one with 5 valid points
    keys = jax.random.split(jax.random.key(1), 6000)
    tokens = jax.jit(jax.vmap(lambda k: sample_token_noise(cfg, jnp.asarray(mask), key=k)))(keys)
    lag = np.arange(8)
    cov = 0.9**2 * (np.exp(-0.5 * ((lag[:, None] - lag[None]) / 3.0) ** 2) + MOTOR_JITTER * np.eye(8))
    cov /= 1.0 + MOTOR_JITTER
    motor = np.asarray(tokens.motor, np.float64)
    np.testing.assert_allclose(np.cov(motor[:, 0, :, 0].T), cov, atol=0.06)
    np.testing.assert_allclose(np.cov(motor[:, 1, :5, 1].T), cov[:5, :5], atol=0.06)
    assert float(np.abs(motor[:, 1, 5:]).max()) == 0.0

    def motor_only(token):  # the prior with every other variable at zero
        zero = jax.tree.map(jnp.zeros_like, token)
        return token_log_prior(zero._replace(motor=token.motor), jnp.asarray(mask), cfg)

    def reference(m):
        full = stats.multivariate_normal(np.zeros(8), cov)
        part = stats.multivariate_normal(np.zeros(5), cov[:5, :5])
        return sum(full.logpdf(m[0, :, d]) + part.logpdf(m[1, :5, d]) for d in range(2))

    one = jax.tree.map(lambda x: x[0], tokens)
    two = jax.tree.map(lambda x: x[1], tokens)
    np.testing.assert_allclose(
        float(motor_only(one) - motor_only(two)),
        reference(motor[0]) - reference(motor[1]),
        rtol=1e-3,
        atol=1e-3,
    )
    grad = np.asarray(jax.grad(lambda m: motor_only(one._replace(motor=m)))(one.motor))
    step, where = 1e-2, (0, 3, 1)
    bump = np.zeros(motor.shape[1:], np.float32)
    bump[where] = step
    numeric = (
        float(motor_only(one._replace(motor=one.motor + bump)))
        - float(motor_only(one._replace(motor=one.motor - bump)))
    ) / (2 * step)
    np.testing.assert_allclose(grad[where], numeric, rtol=2e-2)
