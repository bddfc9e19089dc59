"""New exemplars of a concept: parse choice by posterior weight, token noise, kept in the canvas."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions.gof import multinomial_goodness_of_fit

from conceptlearn.model.generate import TokenNoise, choose_parse, sample_exemplars, token_drawing
from conceptlearn.model.sample import MARGIN, border_ink_share, inside_canvas
from conceptlearn.model.token import token_log_prior

NOISE = TokenNoise(
    motor_sigma=0.7,
    stroke_sigma=5.0,
    scale_sigma=0.15,
    shift_sigma=8.0,
    width_sigma=0.3,
    rotate_sigma=0.15,
    shear_sigma=0.15,
)


def _parses():
    """Two shots of a concept, two parses each: ``points (2, 2, 2, 8, 2)``: a vertical bar
    (one stroke) and an L (two strokes); the second shot's second parse is invalid."""
    t = jnp.linspace(0.0, 1.0, 8)
    vertical = jnp.stack([jnp.full(8, 52.0), 25.0 + 55.0 * t], -1)
    horizontal = jnp.stack([30.0 + 45.0 * t, jnp.full(8, 80.0)], -1)
    one = jnp.stack([vertical, vertical])  # (S=2, P=8, 2)
    two = jnp.stack([vertical, horizontal])
    points = jnp.stack([jnp.stack([one, two]), jnp.stack([two, one])])  # (k=2, K=2, S, P, 2)
    mask_one = jnp.stack([jnp.ones(8, bool), jnp.zeros(8, bool)])
    mask_two = jnp.ones((2, 8), bool)
    mask = jnp.stack([jnp.stack([mask_one, mask_two]), jnp.stack([mask_two, mask_one])])
    log_weight = jnp.log(jnp.asarray([[0.7, 0.3], [1.0, 0.0]]))
    return points, mask, log_weight


def test_parses_are_chosen_by_shot_then_posterior_weight():
    _, _, log_weight = _parses()
    keys = jax.random.split(jax.random.key(0), 4000)
    shot, parse = jax.vmap(lambda k: choose_parse(log_weight, key=k))(keys)
    counts = np.bincount(np.asarray(shot) * 2 + np.asarray(parse), minlength=4)
    probs = np.asarray([0.35, 0.15, 0.5, 0.0])
    assert counts[3] == 0  # an invalid parse (weight 0) is never drawn
    assert multinomial_goodness_of_fit(probs[:3], counts[:3]) > 2e-4


def test_drawn_tokens_follow_the_token_prior_and_stay_inside():
    """Without the canvas limit binding, a token's scaled noise is N(0, 1): its log prior
    (token_log_prior, the refit's density) averages -d/2 over the d free dimensions."""
    points, mask, _ = _parses()
    p, m = points[0, 1], mask[0, 1]
    keys = jax.random.split(jax.random.key(1), 500)
    moved, tokens = jax.vmap(lambda k: token_drawing(p, m, NOISE, key=k))(keys)
    assert bool(jax.vmap(lambda q: inside_canvas(q, m, MARGIN))(moved).all())
    logp = np.asarray(jax.vmap(lambda t: token_log_prior(t, m, NOISE))(tokens))
    dims = (
        16 * 2 + 2 * 2 + 2 + 2 + 1 + 1 + 1
    )  # motor, stroke shifts, scale, shift, width, rot, shear
    assert abs(logp.mean() + dims / 2) < 0.1 * dims  # the canvas limit trims the tails a little
    z = np.asarray(tokens.motor)[:, 0, :, 0].ravel() / NOISE.motor_sigma
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1.0) < 0.1


def test_exemplars_are_reproducible_images_inside_the_canvas():
    points, mask, log_weight = _parses()
    draw = lambda key: np.asarray(  # noqa: E731
        sample_exemplars(points, mask, log_weight, NOISE, key=key, n=6)
    )
    images = draw(jax.random.key(2))
    assert images.shape == (6, 105, 105) and ((images >= 0) & (images <= 1)).all()
    np.testing.assert_array_equal(images, draw(jax.random.key(2)))
    assert not np.array_equal(images, draw(jax.random.key(3)))
    assert border_ink_share(images) == 0.0
    assert (images > 0.5).any(axis=(1, 2)).all()
