"""P(token | type): one drawing of a character type.

A token perturbs the type's shapes and scales with motor noise, places each stroke at its
relation's anchor plus jitter, then warps the whole drawing with an affine transform (scale about
the centre of mass, then shift); the ink parameters (blur sigma, pixel-flip epsilon) belong to
the token too. Written once as the numpyro model ``token_model``; ``sample_token`` runs it and
``token_log_prob`` scores a given token. ``token_trajectories`` turns a token into the polylines
that ``render`` inks.

The token of a *parse* (free trajectories found by inference, not spline sub-strokes) is the
:class:`TrajectoryToken`: ``token_log_prior`` scores it in every refit, ``sample_token_noise``
draws it, ``token_points`` applies it; its noise comes from the same library.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.handlers import seed, trace
from numpyro.infer.util import log_density

from conceptlearn.model.library import (
    ALONG,
    END_OF,
    INDEPENDENT,
    MAX_STROKES,
    MAX_SUBSTROKES,
    POINTS_PER_SUBSTROKE,
    START_OF,
    Library,
)
from conceptlearn.model.render import DEFAULT_INK, InkParams
from conceptlearn.model.splines import bspline_basis
from conceptlearn.model.type_prior import Type, masks, stroke_control_points


class Token(NamedTuple):
    """One drawing (``S = MAX_STROKES``, ``J = MAX_SUBSTROKES``).

    - ``n_strokes`` int32 ``()``, ``n_sub`` int32 ``(S,)``: copied from the type (for masks);
    - ``shapes (S, J, 5, 2)``, ``scales (S, J)``: the type's after motor noise;
    - ``positions (S, 2)``: start of each stroke before the affine warp (pixels);
    - ``affine (4,)``: ``(scale_col, scale_row, shift_col, shift_row)``;
    - ``blur ()``, ``epsilon ()``: ink parameters for ``image.pixel_probs``.
    """

    n_strokes: jnp.ndarray
    n_sub: jnp.ndarray
    shapes: jnp.ndarray
    scales: jnp.ndarray
    positions: jnp.ndarray
    affine: jnp.ndarray
    blur: jnp.ndarray
    epsilon: jnp.ndarray


def anchors(
    type_: Type, shapes: jnp.ndarray, scales: jnp.ndarray, positions: jnp.ndarray
) -> jnp.ndarray:
    """Where each stroke's relation puts its start, given the strokes' ``positions (S, 2)`` and
    token ``shapes``/``scales``: the type's position (independent), the parent's start, its end,
    or a point along one of its sub-strokes. Returns ``(S, 2)``."""
    control = stroke_control_points(shapes, scales)  # (S, J, 5, 2), relative to stroke start
    parent = jnp.clip(type_.parent, 0, MAX_STROKES - 1)
    last = jnp.clip(type_.n_sub - 1, 0, MAX_SUBSTROKES - 1)
    end = control[jnp.arange(MAX_STROKES), last, -1]  # (S, 2)
    sub = jnp.clip(type_.parent_sub, 0, MAX_SUBSTROKES - 1)
    along = jnp.einsum("sc,scd->sd", bspline_basis(type_.along_t), control[parent, sub])
    kind = type_.relation[:, None]
    offset = jnp.select(
        [kind == START_OF, kind == END_OF, kind == ALONG],
        [jnp.zeros_like(end), end[parent], along],
        jnp.zeros_like(end),
    )
    independent = (type_.relation == INDEPENDENT)[:, None]
    return jnp.where(independent, type_.position, positions[parent] + offset)


def resolve_positions(
    type_: Type, shapes: jnp.ndarray, scales: jnp.ndarray, noise: jnp.ndarray
) -> jnp.ndarray:
    """Stroke starts ``(S, 2)`` solving ``positions = anchors(positions) + noise`` (strokes
    depend only on earlier ones, so ``S`` sweeps settle it)."""

    def sweep(_, positions):
        return anchors(type_, shapes, scales, positions) + noise

    return jax.lax.fori_loop(0, MAX_STROKES, sweep, jnp.zeros_like(noise))


def token_model(library: Library, type_: Type) -> None:
    """numpyro model of P(token | type). Sites: ``shapes``, ``scales``, ``position_noise``,
    ``affine``, ``blur``, ``epsilon``; deterministic ``positions``."""
    stroke_mask, sub_mask = masks(type_.n_strokes, type_.n_sub)
    shapes = numpyro.sample(
        "shapes", dist.Normal(type_.shapes, library.shape_noise_sd).to_event(2).mask(sub_mask)
    )
    scales = numpyro.sample(
        "scales", dist.LogNormal(jnp.log(type_.scales), library.log_scale_noise_sd).mask(sub_mask)
    )
    noise_d = dist.Normal(jnp.zeros((MAX_STROKES, 2)), library.position_noise_sd).to_event(1)
    noise = numpyro.sample("position_noise", noise_d.mask(stroke_mask))
    numpyro.deterministic("positions", resolve_positions(type_, shapes, scales, noise))
    numpyro.sample("affine", dist.Normal(library.affine_mean, library.affine_sd).to_event(1))
    numpyro.sample("blur", dist.Uniform(library.blur_range[0], library.blur_range[1]))
    numpyro.sample("epsilon", dist.Uniform(library.epsilon_range[0], library.epsilon_range[1]))


@jax.jit
def sample_token(library: Library, type_: Type, *, key: jax.Array) -> Token:
    """Draw one token of ``type_``. jit/vmap-able."""
    tr = trace(seed(token_model, key)).get_trace(library, type_)
    return Token(
        n_strokes=type_.n_strokes,
        n_sub=type_.n_sub,
        shapes=tr["shapes"]["value"],
        scales=tr["scales"]["value"],
        positions=tr["positions"]["value"],
        affine=tr["affine"]["value"],
        blur=tr["blur"]["value"],
        epsilon=tr["epsilon"]["value"],
    )


@jax.jit
def token_log_prob(library: Library, token: Token, type_: Type) -> jnp.ndarray:
    """``log P(token | type)`` (float scalar); jit/vmap/grad-able in the token's float fields.

    The position jitter is recovered as ``positions - anchors(positions)`` (a triangular map with
    unit Jacobian, so this is the density of ``positions``). Ink parameters outside their ranges
    are not flagged; keep them inside (e.g. by a sigmoid) when optimising.
    """
    noise = token.positions - anchors(type_, token.shapes, token.scales, token.positions)
    params = {
        "shapes": token.shapes,
        "scales": token.scales,
        "position_noise": noise,
        "affine": token.affine,
        "blur": token.blur,
        "epsilon": token.epsilon,
    }
    logp, _ = log_density(token_model, (library, type_), {}, params)
    return logp


@jax.jit
def token_from_type(
    library: Library, type_: Type, blur: float = 1.0, epsilon: float = 1e-3
) -> Token:
    """The noise-free token of ``type_``: the type's shapes and scales, zero jitter, mean affine.
    For a type built by ``type_from_splines`` this redraws the parse where it was drawn."""
    positions = resolve_positions(type_, type_.shapes, type_.scales, jnp.zeros((MAX_STROKES, 2)))
    return Token(
        n_strokes=type_.n_strokes,
        n_sub=type_.n_sub,
        shapes=type_.shapes,
        scales=type_.scales,
        positions=positions,
        affine=library.affine_mean,
        blur=jnp.asarray(blur, jnp.float32),
        epsilon=jnp.asarray(epsilon, jnp.float32),
    )


@jax.jit
def token_trajectories(token: Token) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Polylines of a token for ``render``: ``points f32 (S, J * P, 2)`` and ``mask bool
    (S, J * P)`` with ``P = POINTS_PER_SUBSTROKE``; valid points of a stroke come first."""
    S, J, P = MAX_STROKES, MAX_SUBSTROKES, POINTS_PER_SUBSTROKE
    _, sub_mask = masks(token.n_strokes, token.n_sub)
    control = stroke_control_points(token.shapes, token.scales)  # (S, J, 5, 2)
    basis = bspline_basis(jnp.linspace(0.0, 1.0, P))  # (P, 5)
    points = jnp.einsum("pc,sjcd->sjpd", basis, control) + token.positions[:, None, None, :]
    points = points.reshape(S, J * P, 2)
    mask = jnp.repeat(sub_mask, P, axis=1)
    weight = mask.astype(points.dtype)[..., None]
    com = jnp.sum(points * weight, axis=(0, 1)) / jnp.maximum(jnp.sum(weight), 1.0)
    scale, shift, com = token.affine[None, None, :2], token.affine[None, None, 2:], com[None, None]
    warped = (points - com) * scale + com + shift
    return warped, mask


# ------------------------------------------------ a token of a parse (free trajectories)
# The token of a parse found by refinement: the parse's trajectories moved by motor noise at
# every point, a shift of each stroke (relation jitter) and a global affine map and pen width.
# Inference refits it to other images (conceptlearn.inference.fit.fit_token); generation
# samples it (sample_token_noise). The standard deviations are the library's learned token
# noise where the model has the variable (conceptlearn.inference.config.learned_noise).

class TrajectoryToken(NamedTuple):
    """Token variables of a refit: ``log_scale f32 (2,)``, ``shift f32 (2,)`` px,
    ``stroke_shift f32 (S, 2)`` px per stroke (relation jitter), ``motor f32 (S, P, 2)`` px
    motor noise at every point, ``log_width f32 ()`` pen width relative to the default ink,
    ``rotation f32 ()`` rad and ``shear f32 ()``."""

    log_scale: jax.Array
    shift: jax.Array
    stroke_shift: jax.Array
    motor: jax.Array
    log_width: jax.Array
    rotation: jax.Array
    shear: jax.Array


def token_affine(token: TrajectoryToken) -> jax.Array:
    """The token's linear map ``f32 (2, 2)`` on (col, row) offsets: rotation @ shear @ scale."""
    cos, sin = jnp.cos(token.rotation), jnp.sin(token.rotation)
    rotation = jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])
    shear = jnp.eye(2) + token.shear * jnp.asarray([[0.0, 1.0], [0.0, 0.0]])
    return rotation @ shear @ jnp.diag(jnp.exp(token.log_scale))


def centre_of_mass(points, mask) -> jax.Array:
    """Centre of mass ``f32 (2,)`` of the valid points of ``points f32 (S, P, 2)``."""
    w = mask[..., None].astype(points.dtype)
    return jnp.sum(points * w, (0, 1)) / jnp.maximum(jnp.sum(w), 1.0)


def token_points(points, mask, token: TrajectoryToken) -> jax.Array:
    """Apply ``token`` to a parse's ``points f32 (S, P, 2)``: motor noise and each stroke's
    shift, then the affine map (:func:`token_affine`) about the parse's centre of mass, then
    the global shift."""
    centre = centre_of_mass(points, mask)
    moved = points + token.motor + token.stroke_shift[:, None]
    return (moved - centre[None, None]) @ token_affine(token).T + (centre + token.shift)[None, None]


def pen_ink(log_width) -> InkParams:
    """A pen ``log_width`` (``f32 ()``) wider than the default ink: spread and gain both scaled
    by ``exp(log_width)``, which scales the line profile's width and keeps its peak."""
    w = jnp.exp(log_width)
    return InkParams(spread=DEFAULT_INK.spread * w, gain=DEFAULT_INK.gain * w)


def token_ink(token: TrajectoryToken) -> InkParams:
    """The pen of ``token``: :func:`pen_ink` of its ``log_width``."""
    return pen_ink(token.log_width)


MOTOR_JITTER = 1e-3  # added to the motor correlation's diagonal (a smooth kernel is near singular)
ATTACH_RADIUS = 3.0  # px: a stroke starting this close to an earlier stroke's ink is attached


def stroke_parents(points, mask, radius: float = ATTACH_RADIUS) -> jax.Array:
    """``int32 (S,)``: for each stroke of ``points f32 (S, P, 2)``, ``mask bool (S, P)``, the
    earlier stroke whose trajectory passes nearest its first point, if within ``radius`` px
    (the stroke is attached to it, as BPL's relations attach a stroke to its parent), else -1.
    Distances are to the parent's segments, not only its points."""
    S = mask.shape[0]
    first = points[jnp.arange(S), jnp.argmax(mask, -1)]  # (S, 2)
    a, b = points[:, :-1], points[:, 1:]  # segments (S, P - 1, 2)
    seg_ok = mask[:, :-1] & mask[:, 1:]
    ab = b - a
    t = jnp.einsum("tpd,stpd->stp", ab, first[:, None, None] - a[None])
    t = jnp.clip(t / jnp.maximum(jnp.sum(ab**2, -1), 1e-9)[None], 0.0, 1.0)
    nearest = a[None] + t[..., None] * ab[None]  # (S, S, P - 1, 2)
    dist = jnp.linalg.norm(first[:, None, None] - nearest, axis=-1)
    alone = mask & ~(jnp.pad(mask[:, 1:], ((0, 0), (0, 1))) | jnp.pad(mask[:, :-1], ((0, 0), (1, 0))))
    dot = jnp.linalg.norm(first[:, None, None] - points[None], axis=-1)  # one-point strokes
    dist = jnp.minimum(
        jnp.where(seg_ok[None], dist, jnp.inf).min(-1), jnp.where(alone[None], dot, jnp.inf).min(-1)
    )
    earlier = jnp.arange(S)[None, :] < jnp.arange(S)[:, None]
    dist = jnp.where(earlier, dist, jnp.inf)  # (S, S): stroke s's start to stroke t's ink
    used = jnp.any(mask, -1)
    return jnp.where(used & (dist.min(-1) <= radius), jnp.argmin(dist, -1), -1).astype(jnp.int32)


def _stroke_sigmas(parents, noise) -> jax.Array:
    """``f32 (S,)``: the sd of each stroke's own shift: ``attach_sigma`` if attached, else
    ``stroke_sigma``."""
    return jnp.where(parents >= 0, noise.attach_sigma, noise.stroke_sigma)


def own_shifts(stroke_shift, parents) -> jax.Array:
    """Each stroke's shift less its parent's ``f32 (S, 2)`` (an independent stroke: its shift)."""
    parent = stroke_shift[jnp.maximum(parents, 0)]
    return stroke_shift - jnp.where(parents[:, None] >= 0, parent, 0.0)


def resolve_shifts(own, parents) -> jax.Array:
    """The inverse of :func:`own_shifts`: ``f32 (S, 2)`` stroke shifts, each its own plus its
    parent's (parents come first, so one pass in stroke order settles it)."""

    def one(s, shift):
        p = parents[s]
        return shift.at[s].add(jnp.where(p >= 0, shift[jnp.maximum(p, 0)], 0.0))

    return jax.lax.fori_loop(0, own.shape[0], one, own)


def token_parents(points, mask, noise) -> jax.Array:
    """The attachments ``int32 (S,)`` that ``noise`` uses: :func:`stroke_parents` where its
    ``attach_sigma`` is set (> 0; it may be traced), else every stroke independent (-1)."""
    sigma = noise.attach_sigma
    if isinstance(sigma, int | float):  # a static config: decided while tracing
        return stroke_parents(points, mask) if sigma > 0 else jnp.full(mask.shape[0], -1, jnp.int32)
    return jnp.where(sigma > 0, stroke_parents(points, mask), -1)


def motor_factor(noise, n_points: int):
    """The motor noise's correlation along a stroke, as a lower Cholesky factor ``f32 (P, P)``
    with unit diagonal scale: with ``noise.motor_length`` ``l > 0`` (trajectory points) the
    noise of a stroke's points is a Gaussian process, ``cov(i, j) = motor_sigma**2 exp(-(i -
    j)**2 / (2 l**2))``, so strokes bend smoothly instead of wobbling point by point. Returns
    None when ``l`` is a static 0 (independent points, the default). A static ``l`` gives a
    constant (computed once on the host, not in every refit step). A stroke's valid points
    come first, so the factor's leading block is the factor of their marginal covariance."""
    length = getattr(noise, "motor_length", 0.0)
    static = isinstance(length, int | float)
    if static and length <= 0:
        return None
    xp = np if static else jnp
    lag = xp.arange(n_points, dtype=xp.float32)
    safe = xp.maximum(xp.asarray(length, xp.float32), 1e-3)
    corr = xp.exp(-0.5 * ((lag[:, None] - lag[None, :]) / safe) ** 2)
    corr = corr + MOTOR_JITTER * xp.eye(n_points)
    factor = xp.linalg.cholesky(corr) / xp.sqrt(1.0 + MOTOR_JITTER)
    if static:
        return jnp.asarray(factor, jnp.float32)
    return jnp.where(length > 0, factor, jnp.eye(n_points))


def smooth_along_strokes(white, noise) -> jax.Array:
    """``white f32 (S, P, 2)`` correlated along each stroke by :func:`motor_factor` (unchanged
    when the points are independent)."""
    factor = motor_factor(noise, white.shape[-2])
    return white if factor is None else jnp.einsum("pq,sqd->spd", factor, white)


def correlate_motor(white, mask, noise) -> jax.Array:
    """Motor noise ``f32 (S, P, 2)`` px from white noise ``white f32 (S, P, 2)`` (unit sd):
    ``motor_sigma`` times :func:`motor_factor`'s correlation, zero at masked points."""
    return jnp.where(mask[..., None], noise.motor_sigma * smooth_along_strokes(white, noise), 0.0)


def whiten_motor(motor, mask, noise) -> jax.Array:
    """The inverse of :func:`correlate_motor` on valid points: ``f32 (S, P, 2)``, zero where
    masked."""
    factor = motor_factor(noise, mask.shape[-1])
    white = jnp.where(mask[..., None], motor / noise.motor_sigma, 0.0)
    if factor is None:
        return white
    solve = jax.vmap(lambda m: jax.scipy.linalg.solve_triangular(factor, m, lower=True))
    return jnp.where(mask[..., None], solve(white), 0.0)  # rows past the valid prefix: not noise


def token_log_prior(token: TrajectoryToken, mask, noise, parents=None) -> jax.Array:
    """``log P(token)`` without its normalising constants, ``f32 ()``: independent zero-mean
    Gaussians with the standard deviations of ``noise`` (any object with the ``*_sigma``
    fields of :class:`conceptlearn.inference.config.FitConfig`), except that the motor noise is
    correlated along a stroke when ``noise.motor_length > 0`` (:func:`motor_factor`). A stroke
    attached to an earlier one (``parents int32 (S,)``, :func:`token_parents`; None: none attached) shifts
    with it: its own shift, less its parent's, has sd ``attach_sigma``.
    :func:`sample_token_noise` draws from the same density."""
    parents = jnp.full(mask.shape[0], -1, jnp.int32) if parents is None else parents
    motor = jnp.sum(whiten_motor(token.motor, mask, noise) ** 2)
    used = jnp.any(mask, -1)[:, None]
    own = own_shifts(token.stroke_shift, parents) / _stroke_sigmas(parents, noise)[:, None]
    jitter = jnp.sum(jnp.where(used, own**2, 0.0))
    scale = jnp.sum(token.log_scale**2) / noise.scale_sigma**2
    shift = jnp.sum(token.shift**2) / noise.shift_sigma**2
    width = token.log_width**2 / noise.width_sigma**2
    affine = token.rotation**2 / noise.rotate_sigma**2 + token.shear**2 / noise.shear_sigma**2
    return -0.5 * (motor + jitter + scale + shift + width + affine)


def sample_token_noise(noise, mask, *, key: jax.Array, parents=None) -> TrajectoryToken:
    """Draw a :class:`TrajectoryToken` for a parse with ``mask bool (S, P)`` (and stroke
    attachments ``parents``, as in :func:`token_log_prior`) from the density that
    :func:`token_log_prior` scores (masked points and strokes get zeros)."""
    S, P = mask.shape
    parents = jnp.full(S, -1, jnp.int32) if parents is None else parents
    keys = jax.random.split(key, 7)
    used = jnp.any(mask, -1)
    own = _stroke_sigmas(parents, noise)[:, None] * jax.random.normal(keys[2], (S, 2))
    return TrajectoryToken(
        log_scale=noise.scale_sigma * jax.random.normal(keys[0], (2,)),
        shift=noise.shift_sigma * jax.random.normal(keys[1], (2,)),
        stroke_shift=jnp.where(used[:, None], resolve_shifts(jnp.where(used[:, None], own, 0.0), parents), 0.0),
        motor=correlate_motor(jax.random.normal(keys[3], (S, P, 2)), mask, noise),
        log_width=noise.width_sigma * jax.random.normal(keys[4], ()),
        rotation=noise.rotate_sigma * jax.random.normal(keys[5], ()),
        shear=noise.shear_sigma * jax.random.normal(keys[6], ()),
    )
