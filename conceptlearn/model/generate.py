"""New exemplars of a learned concept: token noise around its best parses, rendered.

A concept learned from ``k`` support images holds, per image, its ``K`` best parses with
posterior weights ``w`` (:class:`conceptlearn.inference.fit.Parse`, fields used here: ``points
f32 (k, K, S, P, 2)``, ``mask bool (k, K, S, P)``, ``log_weight f32 (k, K)``). One new exemplar:

1. a support image ``i`` uniformly (the concept is the mixture over its shots, as in its score),
   then a parse ``j`` with probability ``w_ij``;
2. a token of that parse from the token model, :func:`~conceptlearn.model.token.sample_token_noise`
   (motor noise at every point, a shift of each stroke, a global affine map and pen width,
   with the standard deviations of ``noise``: the library's learned token noise,
   :func:`conceptlearn.inference.config.learned_noise`), kept inside the canvas as in
   :mod:`conceptlearn.model.sample` (a fixed number of tries; the least overshoot if none fits);
3. rendered with the token's pen (:func:`~conceptlearn.model.token.token_ink`) and shown as
   ink probabilities with a display blur (:func:`~conceptlearn.model.image.pixel_probs`).

Everything is one jitted, vmapped call with static shapes.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax

from conceptlearn.model.image import pixel_probs
from conceptlearn.model.render import render
from conceptlearn.model.sample import MARGIN, TOKEN_TRIES, first_fitting, overshoot
from conceptlearn.model.token import sample_token_noise, token_ink, token_points


class TokenNoise(NamedTuple):
    """Standard deviations of a parse's token (:func:`~conceptlearn.model.token.token_log_prior`):
    ``motor_sigma`` px at each point, ``stroke_sigma`` px per stroke, ``scale_sigma`` (log
    scale), ``shift_sigma`` px, ``width_sigma`` (log pen width), ``rotate_sigma`` rad,
    ``shear_sigma``. A pytree of float scalars, so jitted code takes it as data."""

    motor_sigma: float
    stroke_sigma: float
    scale_sigma: float
    shift_sigma: float
    width_sigma: float
    rotate_sigma: float
    shear_sigma: float

    @classmethod
    def of(cls, cfg) -> TokenNoise:
        """The noise of ``cfg`` (e.g. a ``FitConfig`` after ``learned_noise``)."""
        return cls(*(float(getattr(cfg, name)) for name in cls._fields))


def choose_parse(log_weight: jax.Array, *, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(shot, parse)`` int32 indices: a shot uniformly, then a parse by its posterior weight.
    ``log_weight f32 (k, K)`` (``-inf`` for invalid parses)."""
    shot_key, parse_key = jax.random.split(key)
    shot = jax.random.randint(shot_key, (), 0, log_weight.shape[0])
    parse = jax.random.categorical(parse_key, log_weight[shot])
    return shot, parse


def token_drawing(points, mask, noise, *, key: jax.Array, tries: int = TOKEN_TRIES):
    """One token of the parse ``points f32 (S, P, 2)``, ``mask bool (S, P)``, kept inside the
    canvas: ``(points f32 (S, P, 2), token)``."""
    tokens = jax.vmap(lambda k: sample_token_noise(noise, mask, key=k))(
        jax.random.split(key, tries)
    )
    moved = jax.vmap(lambda t: token_points(points, mask, t))(tokens)
    over = jax.vmap(lambda p: overshoot(p, mask, MARGIN))(moved)
    return first_fitting((moved, tokens), over)


@partial(jax.jit, static_argnames=("n",))
def sample_exemplars(
    points, mask, log_weight, noise, *, key: jax.Array, n: int, blur_sigma: float = 0.5
) -> jax.Array:
    """``n`` new exemplars of one concept: ink probabilities ``f32 (n, 105, 105)``.

    ``points f32 (k, K, S, P, 2)``, ``mask bool (k, K, S, P)``, ``log_weight f32 (k, K)``: the
    parses of the concept's ``k`` support images; ``noise``: :class:`TokenNoise`;
    ``blur_sigma``: display blur (px).
    """

    def one(k):
        choice_key, token_key = jax.random.split(k)
        shot, parse = choose_parse(log_weight, key=choice_key)
        p, m = points[shot, parse], mask[shot, parse]
        moved, token = token_drawing(p, m, noise, key=token_key)
        return pixel_probs(render(moved, m, token_ink(token)), blur_sigma, 0.0)

    return jax.vmap(one)(jax.random.split(key, n))
