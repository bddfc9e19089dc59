"""Top-down refinement: fit trajectories to an image under prior x likelihood.

Two fits share one optimiser loop (:func:`_optimise`: optax Adam inside ``lax.scan``, with a
coarse-to-fine blur schedule so that far-off ink still pulls):

- :func:`refine_parses` fits every proposal of one image (``vmap`` over candidates, one jitted
  call) by moving the trajectory points freely under the image likelihood plus a parse prior;
- :func:`refit_token` refits one parse to another image through token variables only: a global
  affine (scale, rotation, shear and translation about the parse centre), per-stroke shifts and
  small per-point motor noise (optionally per-stroke scales). This is the inner
  ``max_theta P(I | theta) P(theta | type)`` of BPL's one-shot score (DESIGN.md §5); the max
  may be taken over several optimiser runs (:func:`fit_token`).

:func:`parse_image` chains proposals -> refinement -> the ``K`` best parses with normalised
posterior weights.

The prior here is a stand-in for the learned type prior: a smoothness term on the trajectories
and a cost per stroke (:class:`FitConfig` holds every constant).
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conceptlearn.inference.proposals import propose
from conceptlearn.model.image import log_likelihood, pixel_probs
from conceptlearn.model.render import InkParams, render

# Python-side count of how often each jitted function body was traced (tests check no retrace).
TRACE_COUNT: collections.Counter[str] = collections.Counter()


@dataclass(frozen=True)
class FitConfig:
    """Every constant of the fits (hashable: it is a static argument of the jitted calls)."""

    max_candidates: int = 8  # proposals per image
    max_strokes: int = 6  # strokes per parse (longest kept)
    n_points: int = 12  # trajectory points per stroke
    n_parses: int = 3  # K best parses kept per image
    parse_steps: int = 20  # Adam steps when refining a proposal
    parse_lr: float = 0.3  # px per step
    refit_steps: int = 30  # Adam steps when refitting a parse's token to another image
    refit_lr: float = 0.6
    blur_start: float = 6.0  # blur sigma (px) at the first step; geometric down to blur_sigma
    blur_sigma: float = 2.0  # blur sigma (px) of the score
    epsilon: float = 0.02  # pixel-flip probability of the score
    n_samples: int = 48  # renderer arc-length samples per stroke
    total_samples: int = 0  # > 0: one sample budget per drawing, shared by stroke length
    smooth_sigma: float = 2.0  # px: std of a trajectory's second differences (parse prior)
    stroke_cost: float = 20.0  # nats per stroke (parse prior)
    motor_sigma: float = 0.7  # px: std of the motor noise at each knot (token prior)
    motor_knots: int = 0  # motor-noise knots per stroke, linearly interpolated (0: every point)
    stroke_sigma: float = 5.0  # px: std of each stroke's shift (token prior)
    stroke_scale_sigma: float = 0.0  # std of each stroke's log scale about its centre (0: off)
    width_sigma: float = 0.3  # std of the log pen width (token prior)
    scale_sigma: float = 0.15  # std of log scale (token prior)
    rotate_sigma: float = 0.15  # rad: std of the rotation (token prior)
    shear_sigma: float = 0.15  # std of the shear (token prior)
    shift_sigma: float = 8.0  # px: std of the translation (token prior)
    refit_starts: int = 1  # 2: also refit from the ink-matched scale, keep the better fit
    wide_lr: float = 0.0  # > 0: also refit with this step size from blur wide_blur, keep the best
    wide_blur: float = 12.0
    ink_spread: float | None = None  # renderer InkParams overrides (None: DEFAULT_INK)
    ink_gain: float | None = None


class Parse(NamedTuple):
    """The ``K`` best parses of one image.

    ``points`` ``f32 (K, S, P, 2)``, ``mask`` ``bool (K, S, P)``, ``log_weight`` ``f32 (K,)``
    (normalised over valid parses, ``-inf`` where invalid), ``log_post`` ``f32 (K,)``
    (unnormalised ``log P(I, parse)``, ``-inf`` where invalid).
    """

    points: jax.Array
    mask: jax.Array
    log_weight: jax.Array
    log_post: jax.Array


def _ink(cfg: FitConfig) -> InkParams | None:
    if cfg.ink_spread is None and cfg.ink_gain is None:
        return None
    from conceptlearn.model.render import DEFAULT_INK

    return InkParams(
        spread=DEFAULT_INK.spread if cfg.ink_spread is None else cfg.ink_spread,
        gain=DEFAULT_INK.gain if cfg.ink_gain is None else cfg.ink_gain,
    )


def image_log_lik(points, mask, image, blur_sigma, cfg: FitConfig) -> jax.Array:
    """``log P(image | points)`` at blur ``blur_sigma``: ``points f32 (S, P, 2)``,
    ``mask bool (S, P)``, ``image bool (105, 105)`` -> ``f32 ()``."""
    ink = render(points, mask, _ink(cfg), cfg.n_samples, cfg.total_samples or None)
    return log_likelihood(pixel_probs(ink, blur_sigma, cfg.epsilon), image)


def parse_log_prior(points, mask, cfg: FitConfig) -> jax.Array:
    """Stand-in parse prior: smooth trajectories, few strokes. ``(S, P, 2), (S, P) -> f32 ()``."""
    d2 = points[:, 2:] - 2.0 * points[:, 1:-1] + points[:, :-2]
    m2 = mask[:, 2:] & mask[:, 1:-1] & mask[:, :-2]
    smooth = -0.5 * jnp.sum(jnp.where(m2, jnp.sum(d2 * d2, -1), 0.0)) / cfg.smooth_sigma**2
    return smooth - cfg.stroke_cost * jnp.sum(jnp.any(mask, -1))


def _optimise(loss_fn, params, n_steps: int, lr: float, blur_start: float, cfg: FitConfig):
    """Minimise ``loss_fn(params, blur_sigma)`` with Adam for ``n_steps`` in ``lax.scan``; blur
    goes geometrically from ``blur_start`` to ``cfg.blur_sigma``. Returns final params."""
    opt = optax.adam(lr)
    frac = jnp.linspace(0.0, 1.0, max(n_steps, 1))
    sigmas = blur_start * (cfg.blur_sigma / blur_start) ** frac

    def step(carry, sigma):
        params, state = carry
        grads = jax.grad(loss_fn)(params, sigma)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), sigmas[:n_steps])
    return params


def refine_parse(points, mask, image, cfg: FitConfig):
    """Refine one proposal ``points f32 (S, P, 2)``, ``mask bool (S, P)`` against
    ``image bool (105, 105)``. Returns ``(points, log_lik f32 (), log_prior f32 ())``."""

    def loss(p, sigma):
        return -(image_log_lik(p, mask, image, sigma, cfg) + parse_log_prior(p, mask, cfg))

    points = _optimise(loss, points, cfg.parse_steps, cfg.parse_lr, cfg.blur_start, cfg)
    return (
        points,
        image_log_lik(points, mask, image, cfg.blur_sigma, cfg),
        parse_log_prior(points, mask, cfg),
    )


@functools.partial(jax.jit, static_argnames=("cfg",))
def refine_parses(points, mask, valid, image, cfg: FitConfig):
    """All proposals of one image in one call: ``points f32 (C, S, P, 2)``, ``mask (C, S, P)``,
    ``valid bool (C,)``, ``image bool (105, 105)`` -> ``(points, log_lik (C,), log_prior (C,))``
    with ``-inf`` log-likelihoods where not valid."""
    TRACE_COUNT["refine_parses"] += 1
    pts, ll, lp = jax.vmap(refine_parse, in_axes=(0, 0, None, None))(points, mask, image, cfg)
    return pts, jnp.where(valid, ll, -jnp.inf), lp


def top_k(points, mask, log_post, k: int) -> Parse:
    """Keep the ``k`` largest ``log_post f32 (C,)`` (``-inf`` = invalid) with normalised weights."""
    order = jnp.argsort(-log_post)[:k]
    lp = log_post[order]
    log_weight = lp - jax.scipy.special.logsumexp(lp)
    return Parse(points[order], mask[order], log_weight, lp)


def parse_image(image: np.ndarray, cfg: FitConfig, *, seed: int = 0, library=None) -> Parse:
    """Proposals -> refinement -> the ``cfg.n_parses`` best parses of ``image bool (105, 105)``,
    ranked and weighted by ``log P(image | parse) + log P(type)`` under ``library`` (a learned
    :class:`~conceptlearn.model.library.Library`; see :mod:`conceptlearn.inference.parse_type`),
    or under the stand-in parse prior when ``library`` is None."""
    prop = propose(
        image,
        max_candidates=cfg.max_candidates,
        max_strokes=cfg.max_strokes,
        n_points=cfg.n_points,
        seed=seed,
    )
    pts, ll, lp = refine_parses(prop.points, prop.mask, prop.valid, jnp.asarray(image, bool), cfg)
    mask = jnp.asarray(prop.mask)
    if library is not None:
        from conceptlearn.inference.parse_type import parse_type_log_probs

        lp = parse_type_log_probs(library, pts, mask)
    return top_k(pts, mask, ll + lp, cfg.n_parses)


class Token(NamedTuple):
    """Token variables of a refit: ``log_scale f32 (2,)``, ``shift f32 (2,)`` px,
    ``stroke_shift f32 (S, 2)`` px per stroke (relation jitter), ``motor f32 (S, M, 2)`` px
    motor noise at ``M`` knots per stroke (:func:`motor_basis`; ``M = P``: every point),
    ``log_width f32 ()`` pen width relative to the default ink, ``rotation f32 ()`` rad,
    ``shear f32 ()`` and ``stroke_log_scale f32 (S,)``, each stroke's log scale about its own
    centre (sub-stroke scale noise, held at zero when ``cfg.stroke_scale_sigma`` is 0)."""

    log_scale: jax.Array
    shift: jax.Array
    stroke_shift: jax.Array
    motor: jax.Array
    log_width: jax.Array
    rotation: jax.Array
    shear: jax.Array
    stroke_log_scale: jax.Array


def token_affine(token: Token) -> jax.Array:
    """The token's linear map ``f32 (2, 2)`` on (col, row) offsets: rotation @ shear @ scale."""
    cos, sin = jnp.cos(token.rotation), jnp.sin(token.rotation)
    rotation = jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])
    shear = jnp.eye(2) + token.shear * jnp.asarray([[0.0, 1.0], [0.0, 0.0]])
    return rotation @ shear @ jnp.diag(jnp.exp(token.log_scale))


def motor_basis(n_points: int, n_knots: int) -> jax.Array:
    """``f32 (P, M)`` piecewise-linear interpolation from ``M`` knots spread evenly along a
    stroke's ``P`` points to the points (the identity when ``M = P``)."""
    knots = jnp.linspace(0.0, n_points - 1.0, n_knots)
    spacing = (n_points - 1.0) / max(n_knots - 1, 1)
    dist = jnp.abs(jnp.arange(n_points, dtype=jnp.float32)[:, None] - knots[None])
    return jnp.clip(1.0 - dist / spacing, 0.0, 1.0)


def motor_offsets(motor, n_points: int) -> jax.Array:
    """Per-point motor noise ``f32 (S, P, 2)`` from the knots' ``motor f32 (S, M, 2)``."""
    if motor.shape[1] == n_points:  # a knot per point (static shapes: no data branch)
        return motor
    return jnp.einsum("pm,smd->spd", motor_basis(n_points, motor.shape[1]), motor)


def token_points(points, mask, token: Token) -> jax.Array:
    """Apply ``token`` to a parse's ``points f32 (S, P, 2)``: motor noise (:func:`motor_basis`),
    each stroke scaled about its own centre and shifted, then the affine map
    (:func:`token_affine`) about the parse's centre of mass, then shift."""
    w = mask[..., None].astype(points.dtype)
    centre = jnp.sum(points * w, (0, 1)) / jnp.maximum(jnp.sum(w), 1.0)
    stroke_centre = jnp.sum(points * w, 1, keepdims=True) / jnp.maximum(
        jnp.sum(w, 1, keepdims=True), 1.0
    )
    scale = jnp.exp(token.stroke_log_scale)[:, None, None]
    own = points + motor_offsets(token.motor, points.shape[1]) - stroke_centre
    moved = stroke_centre + scale * own + token.stroke_shift[:, None]
    return (moved - centre[None, None]) @ token_affine(token).T + (centre + token.shift)[None, None]


def token_ink(token: Token, cfg: FitConfig) -> InkParams:
    """The pen of ``token``: default ink with spread and gain both scaled by ``exp(log_width)``,
    which scales the line profile's width and keeps its peak."""
    from conceptlearn.model.render import DEFAULT_INK

    base = _ink(cfg) or DEFAULT_INK
    w = jnp.exp(token.log_width)
    return InkParams(spread=base.spread * w, gain=base.gain * w)


def token_log_prior(token: Token, mask, cfg: FitConfig) -> jax.Array:
    """Gaussian token prior (without normalising constants): ``f32 ()``."""
    if token.motor.shape[1] == mask.shape[1]:
        live = mask  # (S, P): a knot per point
    else:  # (S, M): knots that move a valid point
        live = (mask.astype(jnp.float32) @ motor_basis(mask.shape[1], token.motor.shape[1])) > 0
    motor = jnp.sum(jnp.where(live[..., None], token.motor**2, 0.0)) / cfg.motor_sigma**2
    used = jnp.any(mask, -1)[:, None]
    jitter = jnp.sum(jnp.where(used, token.stroke_shift**2, 0.0)) / cfg.stroke_sigma**2
    if cfg.stroke_scale_sigma > 0:  # static config; when off the variable is held at zero
        sizes = jnp.where(used[:, 0], token.stroke_log_scale**2, 0.0)
        jitter = jitter + jnp.sum(sizes) / cfg.stroke_scale_sigma**2
    scale = jnp.sum(token.log_scale**2) / cfg.scale_sigma**2
    shift = jnp.sum(token.shift**2) / cfg.shift_sigma**2
    width = token.log_width**2 / cfg.width_sigma**2
    affine = token.rotation**2 / cfg.rotate_sigma**2 + token.shear**2 / cfg.shear_sigma**2
    return -0.5 * (motor + jitter + scale + shift + width + affine)


# Preconditioning: the optimiser sees log-scale, rotation, shear and log-width in px at these
# radii, so one learning rate (px per step) fits every variable.
_SCALE_PX = 30.0
_WIDTH_PX = 3.0
_STROKE_SCALE_PX = 15.0  # about a stroke's radius


def refit_token(points, mask, image, cfg: FitConfig, n_steps: int | None = None) -> jax.Array:
    """``max_token log P(image | token(points)) + log P(token)`` for one parse
    ``points f32 (S, P, 2)``, ``mask bool (S, P)`` and ``image bool (105, 105)`` -> ``f32 ()``."""
    return fit_token(points, mask, image, cfg, n_steps)[0]


def fit_token(points, mask, image, cfg: FitConfig, n_steps: int | None = None):
    """Refit one parse's token to ``image`` (see :func:`refit_token`); returns the score
    ``f32 ()``, the refit trajectories ``f32 (S, P, 2)`` and the :class:`Token`. The initial
    shift aligns the parse's centre of mass with the image's ink centre. Further fits of the
    same objective, the best of all kept: with ``cfg.wide_lr > 0`` one with step size
    ``wide_lr`` from blur ``wide_blur`` (it reaches strokes and scales the plain fit's short
    steps cannot, docs/results/bpl.md); with ``cfg.refit_starts = 2`` one started from the scale
    that matches the parse's spread to the ink's (per axis, within a factor of 2)."""
    img = image.astype(jnp.float32)
    rows = jnp.arange(img.shape[0], dtype=jnp.float32)
    cols = jnp.arange(img.shape[1], dtype=jnp.float32)
    mass = jnp.maximum(jnp.sum(img), 1.0)
    ink_centre = jnp.stack([jnp.sum(img.sum(0) * cols), jnp.sum(img.sum(1) * rows)]) / mass
    w = mask[..., None].astype(points.dtype)
    centre = jnp.sum(points * w, (0, 1)) / jnp.maximum(jnp.sum(w), 1.0)
    shift0 = jnp.where(jnp.sum(img) > 0, ink_centre - centre, 0.0)
    n_strokes, n_points = points.shape[:2]
    motor0 = jnp.zeros((n_strokes, cfg.motor_knots or n_points, 2))
    zero = jnp.zeros(())
    u0 = Token(
        jnp.zeros(2),
        shift0,
        jnp.zeros((n_strokes, 2)),
        motor0,
        zero,
        zero,
        zero,
        jnp.zeros(n_strokes),
    )
    stroke_scale_on = float(cfg.stroke_scale_sigma > 0)

    def unpack(u: Token) -> Token:
        return u._replace(
            log_scale=u.log_scale / _SCALE_PX,
            log_width=u.log_width / _WIDTH_PX,
            rotation=u.rotation / _SCALE_PX,
            shear=u.shear / _SCALE_PX,
            stroke_log_scale=stroke_scale_on * u.stroke_log_scale / _STROKE_SCALE_PX,
        )

    def objective(u: Token, sigma):
        tok = unpack(u)
        pts = token_points(points, mask, tok)
        ink = render(pts, mask, token_ink(tok, cfg), cfg.n_samples, cfg.total_samples or None)
        ll = log_likelihood(pixel_probs(ink, sigma, cfg.epsilon), image)
        return ll + token_log_prior(tok, mask, cfg)

    steps = cfg.refit_steps if n_steps is None else n_steps

    def fit_from(log_scale, lr=cfg.refit_lr, blur_start=cfg.blur_start):
        u = _optimise(
            lambda u, s: -objective(u, s),
            u0._replace(log_scale=log_scale),
            steps,
            lr,
            blur_start,
            cfg,
        )
        return objective(u, cfg.blur_sigma), u

    fits = [fit_from(jnp.zeros(2))]  # static config: the hot path fits once, from scale 1
    if cfg.wide_lr > 0:  # a far-reaching search as well: long steps from a wide blur
        fits.append(fit_from(jnp.zeros(2), cfg.wide_lr, cfg.wide_blur))
    if cfg.refit_starts == 2:
        ink_sd = jnp.sqrt(
            jnp.stack(
                [
                    jnp.sum(img.sum(0) * (cols - ink_centre[0]) ** 2),  # (col, row) like points
                    jnp.sum(img.sum(1) * (rows - ink_centre[1]) ** 2),
                ]
            )
            / mass
        )
        parse_sd = jnp.sqrt(
            jnp.sum(w * (points - centre[None, None]) ** 2, (0, 1)) / jnp.maximum(jnp.sum(w), 1.0)
        )
        matched = jnp.clip(jnp.log((ink_sd + 1.0) / (parse_sd + 1.0)), -0.7, 0.7)
        fits.append(fit_from(matched * _SCALE_PX))  # preconditioned
    if len(fits) == 1:
        score, u = fits[0]
    else:  # the best fit: every fit maximises the same objective
        scores = jnp.stack([s for s, _ in fits])
        best = jnp.argmax(scores)
        score = scores[best]
        u = jax.tree.map(lambda *xs: jnp.stack(xs)[best], *[u for _, u in fits])
    tok = unpack(u)
    return score, token_points(points, mask, tok), tok
